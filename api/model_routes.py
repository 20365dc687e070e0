"""Models in the registry: list, read, version manifests, aliases, deletion and artifact download."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from api.model_names import known_name as known_name  # re-exported: the routes' import
from api.schemas import (
    AliasBody,
    AliasPath,
    Manifest,
    Model,
    ModelList,
    ModelPath,
    ModelSummary,
    Problem,
    VersionPath,
)
from api.services import services, tenant
from api.serving import serving_view
from training.errors import ResourceNotFound

bp = APIBlueprint(
    "models",
    __name__,
    url_prefix="/v1/models",
    abp_tags=[Tag(name="models")],
    abp_security=[{"bearer": []}],
    abp_responses={400: Problem, 401: Problem, 404: Problem, 422: Problem, 503: Problem},
)


def _summary(model: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": model["name"], "latest_version": model["latest_version"], "aliases": model["aliases"]}


@bp.get("", responses={200: ModelList})
def list_models() -> Response:
    """The tenant's models with their latest version and aliases, by name."""
    return jsonify({"items": services().registry.list_models(tenant()), "next_cursor": None})


@bp.get("/<name>", responses={200: Model})
def get_model(path: ModelPath) -> Response:
    """The model with all its versions (manifests) and its serving policy (PUT /v1/models/{name}/serving)."""

    model = services().registry.get_model(tenant(), known_name(path.name))
    return jsonify({**model, "serving": serving_view(tenant(), path.name)})


@bp.get("/<name>/versions/<int:version>", responses={200: Manifest})
def get_version(path: VersionPath) -> Response:
    """One version's manifest: algorithm, task, params, metrics, features, classes, dataset, artifact."""
    return jsonify(services().registry.manifest(tenant(), known_name(path.name), path.version))


@bp.delete("/<name>/versions/<int:version>", responses={204: None, 409: Problem})
def delete_version(path: VersionPath) -> tuple[str, int]:
    """Delete a version; 409 while an alias points at it."""
    from api.traffic import check_not_in_traffic  # a split or shadow version is in use too

    check_not_in_traffic(tenant(), known_name(path.name), path.version)
    services().registry.delete_version(tenant(), known_name(path.name), path.version)
    return "", 204


@bp.get(
    "/<name>/versions/<int:version>/artifact",
    responses={
        200: {
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in ("application/gzip", "application/onnx", "application/octet-stream")
            }
        }
    },
)
def download_artifact(path: VersionPath) -> Response:
    """The version directory as a .tar.gz, checked against its manifest's sha256 sums first; for an export
    version (optimize method export), the exported file itself (model.onnx, model.torchscript.pt)."""
    name = known_name(path.name)
    exported = _exported_file(name, path.version)
    if exported is not None:
        return exported
    data = services().registry.archive(tenant(), name, path.version)
    response = Response(data, mimetype="application/gzip")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}-v{path.version}.tar.gz"'
    return response


def _exported_file(name: str, version: int) -> Response | None:
    registry = services().registry
    export = registry.manifest(tenant(), name, version).get("export")
    if not isinstance(export, dict):
        return None
    directory = registry.verified_dir(tenant(), name, version)  # its sha256 and the HMAC are checked here
    verified = registry.manifest(tenant(), name, version)
    export = verified.get("export") or {}
    file = str(export.get("file", ""))
    if file not in (verified.get("files") or {}):
        raise ResourceNotFound(
            f"version {version} of {name!r} lists no exported file; download it again after re-export"
        )
    response = Response(
        (directory / file).read_bytes(), mimetype=str(export.get("media_type") or "application/octet-stream")
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{name}-v{version}-{file}"'
    return response


@bp.put("/<name>/aliases/<alias>", responses={200: ModelSummary})
def set_alias(path: AliasPath, body: AliasBody) -> Response:
    """Point an alias (production, staging, …) at a version, or split it between versions with an optional shadow;
    waits until the inference workers hold the versions, then moves traffic."""
    from api.traffic import alias_policy, apply_policy, traffic_of  # traffic policies: api/traffic.py

    registry = services().registry
    name = known_name(path.name)
    registry.check_name(path.alias, "alias")
    apply_policy(tenant(), name, path.alias, alias_policy(body))
    return jsonify({**_summary(registry.get_model(tenant(), name)), "traffic": traffic_of(tenant(), name)})


@bp.delete("/<name>/aliases/<alias>", responses={204: None})
def delete_alias(path: AliasPath) -> tuple[str, int]:
    from api.traffic import check_alias_free
    from store.traffic import TrafficStore

    check_alias_free(tenant(), known_name(path.name), path.alias)
    services().registry.delete_alias(tenant(), known_name(path.name), path.alias)
    TrafficStore(services().redis).delete(tenant(), path.name, path.alias)
    return "", 204
