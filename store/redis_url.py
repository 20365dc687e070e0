"""`MLQ_REDIS_URL`, in one place: a plain `redis://` URL, or Redis Sentinel as `redis+sentinel://`.

    redis+sentinel://[:password@]host1:26379,host2:26379/mymaster[/db]

names the sentinels (any one that answers is enough), the monitored master's name and the database (default 0).
Every Redis client of mlqueue is made here: the API's pool, its event hub and predict waiter, the workers' clients
(job records, leases, the inference stream) and Celery's broker (kombu's sentinel transport). With Sentinel each
client asks the sentinels for the current primary whenever it (re)connects, so after a failover the next
connection goes to the promoted replica.

Stdlib + redis only (the API imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis
from redis.sentinel import Sentinel

from store import keys
from training.errors import SettingsError

SCHEME = "redis+sentinel://"
FORM = "redis+sentinel://[:password@]host1:26379,host2:26379/mymaster/0"


@dataclass(frozen=True)
class SentinelTarget:
    """Where a Sentinel-managed Redis is: the sentinels, the master's name, the database, the password."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    password: str | None = None


def parse_sentinel(url: str) -> SentinelTarget | None:
    """The SentinelTarget of a `redis+sentinel://` URL; None for any other URL (redis-py parses those)."""
    if not url.startswith(SCHEME):
        return None
    rest = url[len(SCHEME) :]
    auth, at, location = rest.rpartition("@")
    password = unquote(auth.partition(":")[2]) if at else None
    hosts_part, _, path = location.partition("/")
    parts = [p for p in path.split("/") if p != ""]
    if not hosts_part or not parts or len(parts) > 2:
        raise _bad(url, "it needs the sentinels' host:port list, then /master-name, then optionally /db")
    sentinels = []
    for item in hosts_part.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(url, f"{item!r} is not host:port")
        sentinels.append((host, int(port)))
    if len(parts) == 2 and not parts[1].isdigit():
        raise _bad(url, f"the database {parts[1]!r} is not a number")
    return SentinelTarget(tuple(sentinels), unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0, password)


def _bad(url: str, why: str) -> SettingsError:
    shown = url.split("@")[-1]  # never a password in an error
    return SettingsError(f"MLQ_REDIS_URL={shown!r} is not a valid Sentinel URL: {why}; use the form {FORM}")


def check(url: str) -> str:
    """`url` if it is a usable MLQ_REDIS_URL (raises SettingsError naming the setting otherwise)."""
    if parse_sentinel(url) is None:
        try:
            redis.connection.parse_url(url)
        except ValueError as exc:
            raise SettingsError(
                f"MLQ_REDIS_URL is not a Redis URL ({exc}); use redis://host:6379/0 or {FORM}"
            ) from None
    return url


def is_sentinel(url: str) -> bool:
    return url.startswith(SCHEME)


def client(url: str, **kwargs: Any) -> redis.Redis:
    """A Redis client of `url` with redis-py's connection options (`decode_responses`, timeouts, `retry`...)."""
    target = parse_sentinel(url)
    if target is None:
        return redis.Redis.from_url(url, **kwargs)
    master: redis.Redis = _sentinel(target, kwargs).master_for(
        target.master, db=target.db, password=target.password, **kwargs
    )
    return master


def pool_client(url: str, max_connections: int, timeout: float, **kwargs: Any) -> redis.Redis:
    """A client over a bounded pool: a blocking pool (waits `timeout` for a free connection) on plain Redis; on
    Sentinel, the sentinel-managed pool with the same bound (it refuses at once when all connections are busy)."""
    target = parse_sentinel(url)
    if target is None:
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout, **kwargs)
        return redis.Redis(connection_pool=pool)
    return client(url, max_connections=max_connections, **kwargs)


def _sentinel(target: SentinelTarget, kwargs: dict[str, Any]) -> Sentinel:
    # The sentinels themselves are asked with short timeouts: one that is down must not hold a reconnect up.
    timeout = kwargs.get("socket_connect_timeout") or 2.0
    return Sentinel(
        list(target.sentinels),
        sentinel_kwargs={"socket_connect_timeout": timeout, "socket_timeout": timeout},
    )


def kombu_broker(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL for `url` and the transport options it needs (kombu's `sentinel://` transport)."""
    target = parse_sentinel(url)
    if target is None:
        return url, {}
    auth = f":{target.password}@" if target.password else ""
    hosts = ";".join(f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.sentinels)
    return hosts, {"master_name": target.master}


def replicated(client: redis.Redis, timeout_ms: int) -> int:
    """WAIT for one replica to have every write made so far, by any connection; how many replicas confirmed.

    WAIT covers the writes of its own connection, so it follows a write of its own on the same connection (one
    pipeline): replication is one ordered stream, so a replica that has that write has every earlier one too, the
    job record and Celery's message included (written on other connections, before this).
    """
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.REPLICATION_PROBE, "1")
    pipe.execute_command("WAIT", 1, timeout_ms)
    return int(pipe.execute()[1])
