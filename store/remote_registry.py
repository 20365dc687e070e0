"""The model registry on an artifact store shared by several hosts (S3, or a LocalStore on a mount). Stdlib and
redis only: the API uses it.

Layout in the store: models/<tenant>/<name>/<version>/{artifact files…, manifest.json}, and per model
`aliases.json` and `last_version`. What the local registry (training/registry.py) gets from a rename and a flock
comes from elsewhere here, since an object store has neither:
- a version is visible once its manifest exists, and the manifest is written after every file: a reader that
  lists versions sees only complete ones (a crash mid-upload leaves files nobody lists);
- numbers come from Redis (one atomic script per registration), floored by what the store already holds, so
  writers on any number of hosts get distinct versions and a flushed Redis resumes above the highest number;
- alias changes and deletes take a Redis lock per model (SET NX with a token, released only by its holder);
- `state_token` is a Redis counter bumped by every change, so the API's predict path costs one Redis read, not
  a listing of the bucket.
Loading a version downloads it into the worker's ArtifactCache (keyed by the manifest's sha256) and checks every
file's sha256 there, before anything deserializes it; a cached version is checked again but not downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

import redis

from store import keys
from store.artifact_cache import ArtifactCache
from store.artifacts import ArtifactMissing, ArtifactStore
from store.signed_index import safe_relative
from training.errors import ArtifactTampered, MLQError, ResourceNotFound, VersionInUse
from training.manifest import FileEntry, ModelManifest
from training.registry import (
    ARTIFACT_FORMAT,
    MANIFEST,
    NAME_RE,
    ModelRegistry,
    _artifact_digest,
    _now,
    check_name,
    sha256_file,
)

log = logging.getLogger(__name__)
GLOBAL_EPOCH = keys.REGISTRY_EPOCH
LOCK_TTL_MS = 30_000
LOCK_WAIT_S = 30.0
# Next version: above both the last one handed out and the highest the store holds (a flushed Redis, or
# versions registered before this Redis existed).
_ALLOCATE = """
local last = tonumber(redis.call('HGET', KEYS[1], 'last_version') or '0')
local floor = tonumber(ARGV[1])
if floor > last then last = floor end
last = last + 1
redis.call('HSET', KEYS[1], 'last_version', last)
return last
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RegistryBusy(MLQError):
    """Raised when a model's lock stays taken for longer than a registry change can take."""

    code = "registry_busy"
    status = 503


class StoreRegistry(ModelRegistry):
    """ModelRegistry whose versions live in `store`; `root` is this process's local working folder (staging)."""

    def __init__(
        self,
        root: Path | str,
        store: ArtifactStore,
        redis_client: Callable[[], redis.Redis],
        cache: ArtifactCache,
        secret_key: str | bytes | None = None,
    ) -> None:
        super().__init__(root, secret_key=secret_key)
        self.store = store
        self.cache = cache
        self._redis = redis_client

    # -- keys ---------------------------------------------------------------------------------------------------
    def _model_key(self, model_dir: Path) -> str:
        return "models/" + model_dir.relative_to(self.root).as_posix()

    def _redis_key(self, model_dir: Path) -> str:
        tenant, model = model_dir.relative_to(self.root).parts  # <root>/<tenant>/<model>
        return keys.registry_model(tenant, model)

    # -- what the base class reads ------------------------------------------------------------------------------
    def _versions(self, model_dir: Path) -> list[int]:
        out = set()
        for key in self.store.keys(self._model_key(model_dir) + "/"):
            parts = key.split("/")[3:]
            if len(parts) == 2 and parts[1] == MANIFEST and parts[0].isascii() and parts[0].isdigit():
                out.add(int(parts[0]))
        return sorted(out)

    def _read_aliases(self, model_dir: Path) -> dict[str, int]:
        try:
            return dict(json.loads(self.store.get_bytes(self._model_key(model_dir) + "/aliases.json")))
        except ArtifactMissing:
            return {}

    def _write_aliases(self, model_dir: Path, aliases: dict[str, int]) -> None:
        body = json.dumps(aliases, indent=2, sort_keys=True).encode()
        self.store.put_bytes(self._model_key(model_dir) + "/aliases.json", body)
        self._bump(model_dir)

    @contextmanager
    def _locked(self, model_dir: Path) -> Iterator[None]:
        if not self._versions(model_dir):
            raise ResourceNotFound(f"model {model_dir.name!r} does not exist; train or register it first")
        key, token = self._redis_key(model_dir) + ":lock", secrets.token_hex(8)
        client = self._redis()
        deadline = time.monotonic() + LOCK_WAIT_S
        while not client.set(key, token, nx=True, px=LOCK_TTL_MS):
            if time.monotonic() > deadline:
                raise RegistryBusy(f"model {model_dir.name!r} is being changed by another process; try again")
            time.sleep(0.02)
        try:
            yield
        finally:
            client.eval(_RELEASE, 1, key, token)

    def _bump(self, model_dir: Path) -> None:
        client, key = self._redis(), self._redis_key(model_dir)
        # A random epoch, set once: after a flush the counter restarts, but the tokens it makes are new ones.
        client.hsetnx(key, "epoch", secrets.token_hex(6))
        client.hincrby(key, "changes", 1)

    def state_token(self, tenant: str, name: str) -> str:
        model_dir = self._model_dir(tenant, name)
        client, key = self._redis(), self._redis_key(model_dir)
        values = client.hmget(key, ["epoch", "changes"])
        if values[0] is None:
            # No change since this Redis started (or an unknown model): not written per model, or any name a
            # client asks for would leave a key. One key per Redis names the period instead, so a token taken
            # before a flush never matches one taken after it.
            client.set(GLOBAL_EPOCH, secrets.token_hex(6), nx=True)
            values = ["none", client.get(GLOBAL_EPOCH)]
        return ":".join(v.decode() if isinstance(v, bytes) else str(v) for v in values)

    def _manifest_bytes(self, model_dir: Path, version: int) -> bytes:
        try:
            return self.store.get_bytes(f"{self._model_key(model_dir)}/{version}/{MANIFEST}")
        except ArtifactMissing:
            raise ResourceNotFound(f"model {model_dir.name!r} has no version {version}") from None

    def manifest(self, tenant: str, name: str, version: int) -> ModelManifest:
        path = self._version_dir(tenant, name, version)
        raw = self._manifest_bytes(path.parent, int(path.name))
        try:
            return cast(ModelManifest, json.loads(raw))
        except ValueError as exc:
            raise ArtifactTampered(f"manifest of {name!r} version {version} is unreadable: {exc}") from exc

    def list_models(self, tenant: str) -> list[dict[str, Any]]:
        versions: dict[str, list[int]] = {}
        for key in self.store.keys(f"models/{check_name(tenant, 'tenant')}/"):
            parts = key.split("/")[2:]
            if len(parts) == 3 and parts[2] == MANIFEST and NAME_RE.fullmatch(parts[0]) and parts[1].isdigit():
                versions.setdefault(parts[0], []).append(int(parts[1]))
        return [
            {"name": name, "latest_version": max(found), "aliases": self._read_aliases(self._model_dir(tenant, name))}
            for name, found in sorted(versions.items())
        ]

    # -- changes ------------------------------------------------------------------------------------------------
    def register(self, tenant: str, name: str, staging_dir: Path, given: Mapping[str, Any]) -> ModelManifest:
        """Upload the files of `staging_dir` as a new version, manifest last; return the manifest written."""
        model_dir = self._model_dir(tenant, name)
        model_key = self._model_key(model_dir)
        staging_dir = Path(staging_dir)
        try:
            manifest: ModelManifest = json.loads(json.dumps(given))  # plain JSON copy: what is signed is what is read
        except (TypeError, ValueError) as exc:
            raise MLQError(f"the manifest must be JSON-serialisable: {exc}") from exc
        sources = sorted(p for p in staging_dir.rglob("*") if not p.is_dir()) if staging_dir.is_dir() else []
        if not sources:
            raise MLQError(f"staging directory {staging_dir} has no files; save the model there first")
        files: dict[str, FileEntry] = {}
        for src in sources:
            rel = src.relative_to(staging_dir).as_posix()
            if src.is_symlink() or not src.is_file() or rel == MANIFEST:
                raise MLQError(f"cannot register {src}: stage only regular files, none named {MANIFEST}")
            files[rel] = {"sha256": sha256_file(src), "size_bytes": src.stat().st_size}
        manifest["files"] = files
        manifest["artifact"] = {
            "format": ARTIFACT_FORMAT,
            "size_bytes": sum(f["size_bytes"] for f in files.values()),
            "sha256": _artifact_digest(files),
        }
        manifest.pop("hmac", None)
        version = int(self._redis().eval(_ALLOCATE, 1, self._redis_key(model_dir), self._floor(model_key)))
        uploaded: list[str] = []
        try:
            for rel in files:
                key = f"{model_key}/{version}/{rel}"
                self.store.put_file(key, staging_dir / rel)
                uploaded.append(key)
            manifest["version"] = version
            manifest["created_at"] = _now()
            if self._secret:
                manifest["hmac"] = self._sign(manifest)
            # Last: from this write on, the version is listed, and all its files are already there.
            self.store.put_bytes(
                f"{model_key}/{version}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True).encode()
            )
        except BaseException:
            with suppress(Exception):  # the first error is the one to report; orphans are never listed anyway
                self.store.delete(uploaded)
            raise
        self.store.put_bytes(f"{model_key}/last_version", str(version).encode())
        self._bump(model_dir)
        return manifest

    def _floor(self, model_key: str) -> int:
        """The highest number the store knows for the model: versions, partial uploads, or deleted ones."""
        highest = 0
        for key in self.store.keys(model_key + "/"):
            first = key.split("/")[3]
            if first.isascii() and first.isdigit():
                highest = max(highest, int(first))
        with suppress(ArtifactMissing, ValueError):
            highest = max(highest, int(self.store.get_bytes(model_key + "/last_version")))
        return highest

    def delete_version(self, tenant: str, name: str, version: int) -> None:
        model_dir = self._model_dir(tenant, name)
        with self._locked(model_dir):
            number = int(self._version_dir(tenant, name, version).name)
            users = sorted(a for a, v in self._read_aliases(model_dir).items() if v == number)
            if users:
                raise VersionInUse(
                    f"version {number} of model {name!r} is used by alias(es) {', '.join(users)}; "
                    "move or delete those aliases first"
                )
            prefix = f"{self._model_key(model_dir)}/{number}/"
            # The manifest first: the version is gone for readers before its files are.
            self.store.delete([prefix + MANIFEST])
            self.store.delete(self.store.keys(prefix))
            self._bump(model_dir)

    # -- loading ------------------------------------------------------------------------------------------------
    def verified_dir(self, tenant: str, name: str, version: int) -> Path:
        """A local copy of the version (from the cache, else downloaded), after checking HMAC and every sha256."""
        path = self._version_dir(tenant, name, version)
        number = int(path.name)
        raw = self._manifest_bytes(path.parent, number)
        where = f"model {name!r} version {number}"
        try:
            manifest = cast(ModelManifest, json.loads(raw))
        except ValueError as exc:
            raise ArtifactTampered(f"{where}: the manifest is unreadable: {exc}") from exc
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise ArtifactTampered(f"{where}: manifest lists no files; re-register the model")
        prefix = f"{self._model_key(path.parent)}/{number}/"
        # The HMAC before any byte is downloaded: a forged manifest writes nothing, not even into the cache's temp.
        self._check_signature(where, manifest)

        def fill(folder: Path) -> None:
            (folder / MANIFEST).write_bytes(raw)
            for rel in files:
                if not safe_relative(rel, folder):
                    raise ArtifactTampered(f"{where}: listed file {rel!r} is not a plain relative path")
                try:
                    self.store.get_file(prefix + rel, folder / rel)
                except ArtifactMissing:
                    raise ArtifactTampered(f"{where}: listed file {rel!r} is missing from the store") from None
            self._check_version(folder, where, manifest)  # before the entry is kept, and before anything loads it

        digest = hashlib.sha256(raw).hexdigest()
        entry = self.cache.entry(digest, fill)
        try:
            self._check_version(entry, where, manifest)  # a cached copy is checked as a local version is
        except ArtifactTampered as corrupted:
            # This host's copy went bad (a disk error, a stray write): the bucket's copy may still be intact. Drop
            # the entry and fetch once more; fill checks the download, so a bad bucket copy is still a 409.
            log.warning("%s: the cached copy is corrupted (%s); fetching it again from the store", where, corrupted)
            self.cache.drop(digest)
            entry = self.cache.entry(digest, fill)
            self._check_version(entry, where, manifest)
        return entry
