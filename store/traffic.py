"""Traffic policies on aliases: which versions an alias sends requests to, in what shares, and a shadow. Stdlib +
redis only: the API decides every request's version with it.

An alias is still one version in the registry (`aliases.json`: the version with the largest share, so everything
that reads aliases keeps working); a split or a shadow is a policy in one Redis hash per model (field = alias). The
API reads the policy with the model's manifest, at most once a second per process (api/predict.py model_info), and
decides each request's version when it enqueues: a weighted choice costs a microsecond there, and the message then
names a concrete version, so the inference workers group rows per version as before and never resolve aliases.
A routing key makes the choice a hash: the same key lands on the same version for as long as the weights hold.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

import redis

from store import keys
from training.errors import MLQError

SHARES = 100  # weights are whole percents


class InvalidTraffic(MLQError):
    """Raised when a traffic policy is refused: weights not summing to 100, an unknown version, a bad shadow."""

    code = "invalid_traffic"


def problem(loc: list[Any], msg: str) -> InvalidTraffic:
    """A 422 naming the field `loc` of the alias body."""
    return InvalidTraffic(f"{'.'.join(map(str, loc))}: {msg}", errors=[{"loc": loc, "msg": msg}])


@dataclass(frozen=True)
class TrafficPolicy:
    """Shares per version (percent, summing to 100) and an optional shadow (version, percent of requests)."""

    versions: dict[int, int]
    shadow_version: int | None = None
    shadow_percent: int = 0
    # The cumulative bounds of the shares, in version order: a choice is one pass over two or three numbers.
    _bounds: list[tuple[int, int]] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        running, bounds = 0, []
        for version in sorted(self.versions):
            running += self.versions[version]
            bounds.append((running, version))
        object.__setattr__(self, "_bounds", bounds)

    @property
    def primary(self) -> int:
        """The version with the largest share (the lowest number on a tie): what the registry alias names."""
        return min(self.versions, key=lambda v: (-self.versions[v], v))

    @property
    def serves(self) -> set[int]:
        """Every version that gets requests: the shares and the shadow."""
        return {*self.versions, *([self.shadow_version] if self.shadow_version is not None else [])}

    @property
    def split(self) -> bool:
        return len(self.versions) > 1 or self.shadow_version is not None

    def choose(self, routing_key: str | None = None) -> int:
        """The version one request goes to: by the hash of `routing_key` when given, else at random."""
        point = _point(routing_key, "") if routing_key else random.randrange(SHARES)
        for bound, version in self._bounds:
            if point < bound:
                return version
        return self._bounds[-1][1]

    def shadow_for(self, routing_key: str | None = None) -> int | None:
        """The shadow version when this request is copied to it, else None."""
        if self.shadow_version is None or self.shadow_percent <= 0:
            return None
        point = _point(routing_key, "shadow") if routing_key else random.randrange(SHARES)
        return self.shadow_version if point < self.shadow_percent else None

    def to_dict(self) -> dict[str, Any]:
        shadow = None
        if self.shadow_version is not None:
            shadow = {"version": self.shadow_version, "percent": self.shadow_percent}
        return {"versions": {str(v): w for v, w in sorted(self.versions.items())}, "shadow": shadow}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrafficPolicy:
        shadow = data.get("shadow") or {}
        return cls(
            {int(v): int(w) for v, w in data["versions"].items()},
            int(shadow["version"]) if shadow else None,
            int(shadow.get("percent", 0)) if shadow else 0,
        )


def _point(routing_key: str, salt: str) -> int:
    # blake2b, not hash(): Python salts str hashes per process, and every API process must agree.
    digest = hashlib.blake2b(f"{salt}\0{routing_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SHARES


def parse_policy(version: Any, versions: Any, shadow: Any) -> TrafficPolicy:
    """The policy a PUT body asks for, or InvalidTraffic naming the field. Versions are not looked up here."""
    if (version is None) == (versions is None):
        raise problem(["body", "versions"], 'give either "version": N or "versions": {"N": percent, ...}')
    if version is not None:
        shares = {int(version): SHARES}
    else:
        if not isinstance(versions, dict) or not versions:
            raise problem(["body", "versions"], 'must be an object {"3": 90, "4": 10}')
        shares = {}
        for key, weight in versions.items():
            if not (isinstance(key, str) and key.isascii() and key.isdigit() and 0 < int(key) < 2**31):
                raise problem(["body", "versions", key], "keys must be version numbers")
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= SHARES:
                raise problem(["body", "versions", key], "weights must be whole percents from 0 to 100")
            if weight:
                shares[int(key)] = weight
        total = sum(shares.values())
        if total != SHARES:
            raise problem(["body", "versions"], f"weights must sum to 100, they sum to {total}")
    if shadow is None:
        return TrafficPolicy(shares)
    if not isinstance(shadow, dict) or set(shadow) - {"version", "percent"} or "version" not in shadow:
        raise problem(["body", "shadow"], 'must be {"version": N, "percent": 1..100}')
    number, percent = shadow["version"], shadow.get("percent", SHARES)
    if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 2**31:
        raise problem(["body", "shadow", "version"], "must be a version number")
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= SHARES:
        raise problem(["body", "shadow", "percent"], "must be a whole percent from 1 to 100")
    if number in shares:
        raise problem(["body", "shadow", "version"], "already takes live traffic on this alias; shadow another one")
    return TrafficPolicy(shares, number, percent)


class TrafficStore:
    """The policies in Redis (one hash per model)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def get(self, tenant: str, model: str, alias: str) -> TrafficPolicy | None:
        raw: Any = self.redis.hget(keys.traffic(tenant, model), alias)
        return TrafficPolicy.from_dict(json.loads(raw)) if raw else None

    def all(self, tenant: str, model: str) -> dict[str, TrafficPolicy]:
        raw: Any = self.redis.hgetall(keys.traffic(tenant, model))
        return {
            (a.decode() if isinstance(a, bytes) else a): TrafficPolicy.from_dict(json.loads(v)) for a, v in raw.items()
        }

    def put(self, tenant: str, model: str, alias: str, policy: TrafficPolicy) -> None:
        """Store a split or shadow; a plain single version is no policy (the registry alias says it all)."""
        if policy.split:
            self.redis.hset(keys.traffic(tenant, model), alias, json.dumps(policy.to_dict()))
        else:
            self.redis.hdel(keys.traffic(tenant, model), alias)

    def delete(self, tenant: str, model: str, alias: str) -> None:
        self.redis.hdel(keys.traffic(tenant, model), alias)


def move_traffic(
    client: redis.Redis, registry: Any, tenant: str, model: str, alias: str, policy: TrafficPolicy, timeout_s: float
) -> None:
    """Wait until the inference workers hold every version of `policy`, then store it and point the registry alias
    at its primary (the policy first: a reader that sees the new alias also sees its policy)."""
    from store.readiness import wait_ready  # readiness imports the liveness records; only a change needs them

    wanted = sorted({*policy.versions, *([policy.shadow_version] if policy.shadow_version else [])})
    wait_ready(client, tenant, model, wanted, timeout_s)
    TrafficStore(client).put(tenant, model, alias, policy)
    registry.set_alias(tenant, model, alias, policy.primary)
