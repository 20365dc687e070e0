"""kombu's Redis transport, except that a message which is not a kombu envelope is dropped instead of fatal.

Torch-free (kombu only): `make_celery` names it for `redis://` brokers, in the API and the workers alike.

Why: kombu pops a message off the queue (BRPOP) and decodes its JSON envelope inside the worker's event loop.
Anything else on the list, e.g. `redis-cli LPUSH train "not json"`, raised out of that loop, Celery logged
"Unrecoverable error" and exited, and the launcher then stopped every worker it had started. Such a message
has already left the list and was never put in the unacked hash, so dropping it (and saying so in the log) loses
nothing that could ever have run. Bodies that *are* well-wrapped but not JSON (pickle, YAML) never get here:
Celery refuses those itself ("Refusing to deserialize untrusted content").
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

# What decoding a foreign item raises: bad JSON or UTF-8 (ValueError), or JSON that is not an envelope
# (a number, a string, a list, a dict without "properties" / "delivery_info" / "delivery_tag").
MALFORMED = (ValueError, TypeError, KeyError, AttributeError)


class DropsMalformed:
    """A Redis channel mixin whose BRPOP reader drops what it cannot read as a message."""

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]  # a mixin of kombu's Channel, unannotated
        except MALFORMED as exc:
            log.error(
                "dropped a malformed message from the broker (not a kombu envelope; nothing ran): %r",
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return True  # an item was consumed; the event loop goes on reading


class Channel(DropsMalformed, kombu_redis.Channel):
    """kombu's Redis channel that drops malformed messages."""


class SentinelChannel(DropsMalformed, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (MLQ_REDIS_URL=redis+sentinel://...) that drops malformed messages."""


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with `Channel` above."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with `SentinelChannel` above."""

    Channel = SentinelChannel


TRANSPORT = f"{__name__}:Transport"
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"
