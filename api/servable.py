"""Which registered versions a prediction may use: every version but an export. Torch-free."""

from __future__ import annotations

from training.errors import ExportNotServable
from training.manifest import ModelManifest, export_format, is_export


def refuse_export(name: str, version: int, manifest: ModelManifest) -> None:
    """422 at submit for an export: no worker loads one, so the request would fail in the worker instead."""
    if is_export(manifest):
        raise ExportNotServable(
            f"version {version} of model {name!r} is an export ({export_format(manifest)}), a file to download "
            f"(GET /v1/models/{name}/versions/{version}/artifact), not a served version; predict with the version "
            "it was exported from, or another",
            errors=[{"loc": ["body", "version"], "msg": "an export is not served", "type": "export_not_servable"}],
        )
