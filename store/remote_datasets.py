"""Datasets on an artifact store shared by several hosts. Stdlib only: the API saves uploads through it.

Layout in the store: datasets/<tenant>/<dataset id>/{data.csv, meta.json}. An upload is streamed, counted and
described on the local disk exactly as DatasetStore does, then uploaded: data.csv first, meta.json last, so a
dataset is listed (and found) only once its data is complete; the local copy is then removed (an API replica
keeps no uploads). A worker reads the data through its ArtifactCache, keyed by the file's sha256 from meta.json
and checked after the download: one download per host, however many jobs use the dataset.

With MLQ_SECRET_KEY, meta.json carries an HMAC bound to its tenant and id, checked before anything in it is used:
its sha256 pins data.csv, so a bucket writer could otherwise swap both and have a model trained on their rows
registered and signed (docs/operations.md, threat model). A meta.json without a valid HMAC is a 409.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import shutil
from pathlib import Path
from typing import IO, Any

from store.artifact_cache import ArtifactCache
from store.artifacts import ArtifactMissing, ArtifactStore
from store.datasets import DatasetStore
from store.ids import is_dataset_id
from training.errors import ArtifactTampered, ResourceNotFound
from training.registry import canonical_json

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


class StoreDatasets(DatasetStore):
    """DatasetStore whose datasets live in `store`; `root` only holds uploads while they are checked."""

    def __init__(
        self, root: Path | str, store: ArtifactStore, cache: ArtifactCache, secret_key: str | bytes | None = None
    ) -> None:
        super().__init__(root)
        self.store = store
        self.cache = cache
        self._secret = (secret_key.encode() if isinstance(secret_key, str) else secret_key) or None

    def _sign(self, key: str, meta: dict[str, Any]) -> str:
        assert self._secret is not None
        body = canonical_json({"dataset": key, "meta": {k: v for k, v in meta.items() if k != "hmac"}})
        return hmac.new(self._secret, body, hashlib.sha256).hexdigest()

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
            stored = json.loads((local / "meta.json").read_bytes())
            if self._secret:
                stored["hmac"] = self._sign(key, stored)
            self.store.put_bytes(f"{key}/meta.json", json.dumps(stored).encode())  # last: now it exists
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return meta

    def get(self, tenant: str, dataset_id: str) -> dict[str, Any]:
        key = self._key(tenant, dataset_id)
        try:
            raw = self.store.get_bytes(key + "/meta.json")
        except ArtifactMissing:
            raise ResourceNotFound(
                f"no dataset {dataset_id!r}; list yours with GET /v1/datasets",
                errors=[{"loc": ["dataset"], "msg": "not found"}],
            ) from None
        try:
            meta = json.loads(raw)
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise ArtifactTampered(f"dataset {dataset_id}: its meta.json in the store is unreadable; re-upload it")
        given = meta.pop("hmac", None)
        if self._secret and (not isinstance(given, str) or not hmac.compare_digest(given, self._sign(key, meta))):
            raise ArtifactTampered(
                f"dataset {dataset_id}: its meta.json in the store is not signed with this MLQ_SECRET_KEY "
                "(altered, or uploaded before datasets were signed); re-upload the dataset"
            )
        return meta

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
            except ArtifactTampered as refused:
                log.warning("not listing dataset %s/%s: %s", tenant, dataset_id, refused)
        return out

    def delete(self, tenant: str, dataset_id: str) -> None:
        key = self._key(tenant, dataset_id)
        self.get(tenant, dataset_id)  # ResourceNotFound for an unknown dataset
        self.store.delete([key + "/meta.json"])  # first: the dataset is gone for readers before its data
        self.store.delete(self.store.keys(key + "/"))
