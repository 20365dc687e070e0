"""Traffic on aliases and live per-version figures: the alias PUT's policy checks, the predict path's choice of
version, and GET /v1/models/{name}/versions/{v}/live.

An alias change validates every version it names (known, not export-only, one feature schema), then waits until
the inference workers hold them (store/readiness.py), and only then moves traffic: no request is the first to
load a version. A rollout running on the alias owns it: a manual change is a 409 until it ends or is cancelled.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from api.schemas import ModelPath, Problem, VersionPath
from api.services import services, tenant
from store import keys, live_metrics, rollouts
from store.traffic import InvalidTraffic, TrafficPolicy, TrafficStore, move_traffic, parse_policy, problem
from training.errors import MLQError, ResourceNotFound, VersionInUse
from training.manifest import is_export
from training.registry import NAME_RE

bp = APIBlueprint(
    "traffic",
    __name__,
    url_prefix="/v1/models",
    abp_tags=[Tag(name="models")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 503: Problem},
)


class RolloutInProgress(MLQError):
    """Raised when an alias is changed by hand while a rollout owns it."""

    code = "rollout_in_progress"
    status = 409


class LiveQuery(BaseModel):
    window: str = Field("5m", pattern="^(5m|1h)$", description="5m or 1h")


VERSION_HEADER = "X-Model-Version"
ROUTING_HEADER = "X-Routing-Key"


def choose_version(version: int, policy: TrafficPolicy | None, routing_key: str | None) -> tuple[int, int | None]:
    """(the version that serves this request, the shadow that gets a copy of it or None). The header wins over
    the body's routing_key; without either the choice is random."""
    if policy is None:
        return version, None
    key = request.headers.get(ROUTING_HEADER) or routing_key
    chosen = policy.choose(key)
    shadow = policy.shadow_for(key)
    return chosen, (shadow if shadow != chosen else None)


def alias_of(ref: str | int | None) -> str | None:
    """The alias a predict request's `version` names (None names production), or None for a version number."""
    if ref is None:
        return "production"
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
        return None
    return str(ref)


def policy_for(tenant_: str, name: str, ref: str | int | None) -> TrafficPolicy | None:
    alias = alias_of(ref)
    return TrafficStore(services().redis).get(tenant_, name, alias) if alias else None


def schema_of(tenant_: str, name: str, version: int, loc: list[Any], plain: bool = False) -> tuple[Any, Any]:
    """The feature names and dtypes of a version that may take traffic; InvalidTraffic naming `loc` if none."""
    try:
        manifest = services().registry.manifest(tenant_, name, version)
    except ResourceNotFound as exc:
        if plain:  # {"version": N} alone keeps its answer from before policies: an unknown version is a 404
            raise
        raise problem(loc, f"unknown version: {exc.message}") from None
    if is_export(manifest):
        raise problem(loc, f"version {version} is an export (a file to download), it cannot serve; use its parent")
    return feature_schema(manifest)


def feature_schema(manifest: Any) -> tuple[list[str], dict[str, str]]:
    """Feature names in order and their dtypes, from either manifest shape (as api/predict.py checks rows)."""
    names, dtypes = [], dict(manifest.get("feature_dtypes") or {})
    for feature in manifest.get("features") or []:
        if isinstance(feature, dict):
            names.append(feature["name"])
            dtypes.setdefault(feature["name"], feature.get("dtype", ""))
        else:
            names.append(str(feature))
    return names, {n: str(dtypes.get(n, "")) for n in names}


def known_name(name: str) -> str:
    """As api/model_routes.py's: a name that cannot exist is a 404 (that module imports this one)."""
    if not NAME_RE.fullmatch(name):
        raise ResourceNotFound(f"no model named {name!r}; list yours with GET /v1/models")
    return name


def check_policy(tenant_: str, name: str, policy: TrafficPolicy) -> None:
    """Every version of `policy` can serve, and all share the primary's feature schema (rows are checked once)."""
    primary = schema_of(tenant_, name, policy.primary, ["body", "versions", str(policy.primary)], not policy.split)
    others = [(v, ["body", "versions", str(v)]) for v in policy.versions if v != policy.primary]
    if policy.shadow_version is not None:
        others.append((policy.shadow_version, ["body", "shadow", "version"]))
    for version, loc in others:
        if schema_of(tenant_, name, version, loc) != primary:
            raise problem(
                loc,
                f"version {version} has other features than version {policy.primary}; "
                "only versions trained on the same columns can share an alias",
            )


def apply_policy(tenant_: str, name: str, alias: str, policy: TrafficPolicy) -> None:
    """Check, warm up, then store `policy` on `alias` (the registry alias names its primary); refused while a
    rollout holds the alias (the rollout itself moves it with store.traffic.move_traffic)."""
    svc = services()
    check_alias_free(tenant_, name, alias)
    check_policy(tenant_, name, policy)
    move_traffic(svc.redis, svc.registry, tenant_, name, alias, policy, svc.settings.ready_timeout_s)
    # This process sees the change at once; the API's other processes within api/predict.py's MODEL_RECHECK_S.
    current_app.extensions.get("mlq_predict_models", {}).clear()


def rollout_holder(tenant_: str, name: str, alias: str) -> str | None:
    """The rollout job that owns `alias` now; a lock left by a job that already ended (its worker died, it was
    cancelled while queued) is cleared here."""
    svc = services()
    raw: Any = svc.redis.get(keys.rollout_lock(tenant_, name, alias))
    if not raw:
        return None
    holder = str(raw)
    job = svc.jobs.get(holder)
    if job is None or job["status"] in ("succeeded", "failed", "cancelled"):
        rollouts.unlock(svc.redis, tenant_, name, alias, holder)
        return None
    return str(holder)


def check_not_in_traffic(tenant_: str, name: str, version: int) -> None:
    """VersionInUse when a split or a shadow still sends requests to `version` (the registry alias knows only the
    largest share)."""
    users = sorted(a for a, p in TrafficStore(services().redis).all(tenant_, name).items() if version in p.serves)
    if users:
        raise VersionInUse(
            f"version {version} of {name!r} takes traffic on alias(es) {', '.join(users)}; "
            "move that traffic first (PUT the alias without it)"
        )


def check_alias_free(tenant_: str, name: str, alias: str) -> None:
    holder = rollout_holder(tenant_, name, alias)
    if holder:
        raise RolloutInProgress(
            f"rollout {holder} is moving alias {alias!r} of {name!r}; cancel it (POST /v1/jobs/{holder}/cancel) "
            "or wait for it to end",
            errors=[{"loc": ["path", "alias"], "msg": f"owned by rollout {holder}"}],
        )


def alias_policy(body: Any) -> TrafficPolicy:
    return parse_policy(body.version, body.versions, body.shadow)


@bp.get("/<name>/versions/<int:version>/live")
def live(path: VersionPath, query: LiveQuery) -> Response:
    """A version's live figures over the last 5 minutes or hour: requests, errors, latency, the prediction
    distribution, and as a shadow its agreement with the primary."""
    name = known_name(path.name)
    services().registry.manifest(tenant(), name, path.version)  # 404 for an unknown version
    fields = live_metrics.read_window(
        services().redis, tenant(), name, path.version, live_metrics.WINDOWS[query.window]
    )
    return jsonify({"model": name, "version": path.version, "window": query.window, **live_metrics.summary(fields)})


@bp.get("/<name>/traffic")
def traffic(path: ModelPath) -> Response:
    """Every alias of the model as a traffic policy: {alias: {"versions": {version: percent}, "shadow"}}; an alias
    without a split is its one version at 100 (the dashboard shows the versions of each alias side by side)."""
    name = known_name(path.name)
    aliases = services().registry.aliases(tenant(), name)
    policies = traffic_of(tenant(), name)
    out = {a: policies.get(a) or {"versions": {str(v): 100}, "shadow": None} for a, v in sorted(aliases.items())}
    return jsonify({"model": name, "aliases": out})


def traffic_of(tenant_: str, name: str) -> dict[str, Any]:
    """The model's policies by alias, as the API shows them."""
    return {a: p.to_dict() for a, p in TrafficStore(services().redis).all(tenant_, name).items()}


__all__ = ["InvalidTraffic", "RolloutInProgress", "alias_policy", "apply_policy", "policy_for", "traffic_of"]
