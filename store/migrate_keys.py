"""Move the tenant keys of the layout before issue 18 (`mlq:jobs:{tenant}`, `mlq:active:{tenant}`,
`mlq:tenant:{t}:log`, `mlq:idem:{tenant}:…`, `mlq:registry:{tenant}/{model}`) to `mlq:t:{tenant}:…`.

Run it once, with the API and the workers stopped, before starting the new version:
    MLQ_REDIS_URL=redis://… python -m store.migrate_keys
RENAME keeps each key's value, type and TTL. A key whose new name already exists is left where it is and reported
(nothing is overwritten). Rate-limit windows (`mlq:rate:…`) are not moved: they expire within two minutes anyway.
Running it twice moves nothing the second time.
"""

from __future__ import annotations

import sys

import redis

from store import keys
from store.settings import Settings
from training.registry import NAME_RE


def migrate(client: redis.Redis) -> tuple[int, list[str]]:
    """(keys moved, old keys left because their new name exists). Keys of invalid tenant names are skipped."""
    moved, left = 0, []
    patterns = (*keys.LEGACY_TENANT_PATTERNS, keys.LEGACY_REGISTRY_PATTERN)
    for pattern in patterns:
        for raw in client.scan_iter(match=pattern, count=500):
            old = raw.decode() if isinstance(raw, bytes) else str(raw)
            target = keys.from_legacy(old)
            if target is None or not NAME_RE.fullmatch(target[0]):
                continue
            if client.renamenx(old, target[1]):
                moved += 1
            else:
                left.append(old)
    return moved, left


def main() -> None:
    settings = Settings.from_env()
    moved, left = migrate(redis.Redis.from_url(settings.redis_url))
    print(f"moved {moved} tenant keys to the mlq:t:{{tenant}}: namespace")
    for old in left:
        print(f"left {old}: its new name already exists", file=sys.stderr)
    sys.exit(1 if left else 0)


if __name__ == "__main__":
    main()
