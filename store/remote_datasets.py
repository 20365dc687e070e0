"""Datasets on an artifact store shared by several hosts. Stdlib only: the API saves uploads through it.

Layout in the store: datasets/<tenant>/<dataset id>/{data.csv, meta.json}. An upload is streamed, counted and
described on the local disk exactly as DatasetStore does, then uploaded: data.csv first, meta.json last, so a
dataset is listed (and found) only once its data is complete; the local copy is then removed (an API replica
keeps no uploads). A worker reads the data through its ArtifactCache, keyed by the file's sha256 from meta.json
and checked after the download: one download per host, however many jobs use the dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import IO, Any

from store.artifact_cache import ArtifactCache
from store.artifacts import ArtifactMissing, ArtifactStore
from store.datasets import DatasetStore
from store.ids import is_dataset_id
from training.errors import ArtifactTampered, ResourceNotFound

_CHUNK = 1 << 20


class StoreDatasets(DatasetStore):
    """DatasetStore whose datasets live in `store`; `root` only holds uploads while they are checked."""

    def __init__(self, root: Path | str, store: ArtifactStore, cache: ArtifactCache) -> None:
        super().__init__(root)
        self.store = store
        self.cache = cache

    def _key(self, tenant: str, dataset_id: str) -> str:
        self._tenant_dir(tenant)  # ResourceNotFound for a tenant name that is not one
        if not is_dataset_id(dataset_id):
            raise ResourceNotFound(
                f"no dataset {dataset_id!r}: dataset ids look like ds_01hx…",
                errors=[{"loc": ["dataset"], "msg": "not found"}],
            )
        return f"datasets/{tenant}/{dataset_id}"

    def save(
        self,
        tenant: str,
        stream: IO[bytes],
        name: str | None,
        max_bytes: int,
        max_rows: int | None = None,
        max_columns: int | None = None,
    ) -> dict[str, Any]:
        meta = super().save(tenant, stream, name, max_bytes, max_rows, max_columns)
        local = self._tenant_dir(tenant) / meta["id"]
        key = self._key(tenant, meta["id"])
        try:
            self.store.put_file(f"{key}/data.csv", local / "data.csv")
            self.store.put_bytes(f"{key}/meta.json", (local / "meta.json").read_bytes())  # last: now it exists
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return meta

    def get(self, tenant: str, dataset_id: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self.store.get_bytes(self._key(tenant, dataset_id) + "/meta.json")))
        except ArtifactMissing:
            raise ResourceNotFound(
                f"no dataset {dataset_id!r}; list yours with GET /v1/datasets",
                errors=[{"loc": ["dataset"], "msg": "not found"}],
            ) from None

    def path(self, tenant: str, dataset_id: str) -> Path:
        """A local copy of the dataset's CSV: from this host's cache, else downloaded and checked first."""
        meta = self.get(tenant, dataset_id)
        key = self._key(tenant, dataset_id) + "/data.csv"

        def fill(folder: Path) -> None:
            self.store.get_file(key, folder / "data.csv")
            digest = hashlib.sha256()
            with (folder / "data.csv").open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != meta["sha256"]:
                raise ArtifactTampered(
                    f"dataset {dataset_id}: the downloaded data.csv does not match the sha256 "
                    "recorded at upload; it was modified in the store"
                )

        return self.cache.entry(str(meta["sha256"]), fill) / "data.csv"

    def list(self, tenant: str) -> list[dict[str, Any]]:
        self._tenant_dir(tenant)
        ids = {k.split("/")[2] for k in self.store.keys(f"datasets/{tenant}/") if k.endswith("/meta.json")}
        out = []
        for dataset_id in sorted((i for i in ids if is_dataset_id(i)), reverse=True):  # ids sort by creation
            try:
                out.append(self.get(tenant, dataset_id))
            except ResourceNotFound:
                continue  # deleted while we listed
        return out

    def delete(self, tenant: str, dataset_id: str) -> None:
        key = self._key(tenant, dataset_id)
        self.get(tenant, dataset_id)  # ResourceNotFound for an unknown dataset
        self.store.delete([key + "/meta.json"])  # first: the dataset is gone for readers before its data
        self.store.delete(self.store.keys(key + "/"))
