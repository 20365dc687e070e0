"""The model registry on the artifact store: versioned model directories, checksummed manifests. Stdlib only.

Layout: <root>/<tenant>/<name>/<version>/{manifest.json, artifact files}, plus per model `aliases.json`,
`.lock` (fcntl lock serialising writers across processes) and `.last_version` (numbers are never reused after
a delete, so a cache can never serve a stale model under a recycled number). A version is built in
`.tmp-<uuid>` and renamed into place: a crash never leaves a half-written version visible. Listing ignores
dot-entries.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import tarfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from training.errors import ArtifactTampered, InvalidName, MLQError, ResourceNotFound, VersionInUse
from training.manifest import FileEntry, ModelManifest, ModelVersions, is_export

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
NAME_RULE = "1-63 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
ARTIFACT_FORMAT = "mlqueue-v1"
MANIFEST = "manifest.json"
ALIASES = "aliases.json"


def check_name(value: object, what: str = "name") -> str:
    """Return `value` if it is a safe model, tenant or alias name, else raise InvalidName saying the rule."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidName(
            f"invalid {what} {value!r}: expected {NAME_RULE} (pattern ^[a-z0-9][a-z0-9._-]{{0,62}}$)",
            errors=[{"loc": [what], "msg": f"must match ^[a-z0-9][a-z0-9._-]{{0,62}}$ ({NAME_RULE})"}],
        )
    return value


def canonical_json(obj: Any) -> bytes:
    """The bytes an HMAC is computed over: key order and whitespace fixed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks (the registry's, the store's and the checkpoints' one checksum)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _artifact_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    # One line per file in sha256sum's format, sorted by name: independent of the order files were written.
    lines = "".join(f"{files[f]['sha256']}  {f}\n" for f in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ModelRegistry:
    """Versioned models of every tenant under one root directory."""

    def __init__(self, root: Path | str, secret_key: str | bytes | None = None) -> None:
        self.root = Path(root)
        self._root_resolved = self.root.resolve()
        # An empty key means "no HMAC" so a settings default of "" needs no special case at the caller.
        self._secret = secret_key.encode() if isinstance(secret_key, str) else secret_key
        self._secret = self._secret or None

    @property
    def secret_key(self) -> bytes | None:
        """The key manifests are signed with (None: unsigned); store/searches.py signs trial indexes with it too."""
        return self._secret

    @staticmethod
    def check_name(value: object, what: str = "model name") -> str:
        """Return `value` if it is a safe name, else raise InvalidName (for callers holding a registry)."""
        return check_name(value, what)

    def _model_dir(self, tenant: str, name: str) -> Path:
        path = self.root / check_name(tenant, "tenant") / check_name(name, "model name")
        if not path.resolve().is_relative_to(self._root_resolved):
            raise InvalidName(f"{tenant!r}/{name!r} escapes the registry root; use a plain name")
        return path

    def _versions(self, model_dir: Path) -> list[int]:
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isascii() and p.name.isdigit())

    def _version_dir(self, tenant: str, name: str, version: int | str) -> Path:
        model_dir = self._model_dir(tenant, name)
        versions = self._versions(model_dir)
        number = _as_int(version)
        if number is None or number not in versions:
            if not versions:
                raise ResourceNotFound(f"model {name!r} does not exist (tenant {tenant!r}); train or register it")
            listed = ", ".join(map(str, versions))
            shown = version if number is None else number
            raise ResourceNotFound(f"model {name!r} has no version {shown!r}; versions: {listed}")
        return model_dir / str(number)

    @contextmanager
    def _locked(self, model_dir: Path) -> Iterator[None]:
        if not model_dir.is_dir():  # only register creates model directories; a 404 must not leave one behind
            raise ResourceNotFound(f"model {model_dir.name!r} does not exist; train or register it first")
        fd = os.open(model_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def register(self, tenant: str, name: str, staging_dir: Path, given: Mapping[str, Any]) -> ModelManifest:
        """Move the files of `staging_dir` into a new version; return the full manifest written."""
        model_dir = self._model_dir(tenant, name)
        staging_dir = Path(staging_dir)
        try:
            manifest: ModelManifest = json.loads(json.dumps(given))  # a plain JSON copy: what is signed is read
        except (TypeError, ValueError) as exc:
            raise MLQError(f"the manifest must be JSON-serialisable: {exc}") from exc
        sources = sorted(p for p in staging_dir.rglob("*") if not p.is_dir()) if staging_dir.is_dir() else []
        if not sources:
            raise MLQError(f"staging directory {staging_dir} has no files; save the model there first")
        for src in sources:
            if src.is_symlink() or not src.is_file() or src.relative_to(staging_dir).as_posix() == MANIFEST:
                raise MLQError(f"cannot register {src}: stage only regular files, none named {MANIFEST}")
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = model_dir / f".tmp-{uuid.uuid4().hex}"
        try:
            files: dict[str, FileEntry] = {}
            for src in sources:
                rel = src.relative_to(staging_dir).as_posix()
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(src, dst)
                files[rel] = {"sha256": sha256_file(dst), "size_bytes": dst.stat().st_size}
            manifest["files"] = files
            manifest["artifact"] = {
                "format": ARTIFACT_FORMAT,
                "size_bytes": sum(f["size_bytes"] for f in files.values()),
                "sha256": _artifact_digest(files),
            }
            manifest.pop("hmac", None)
            with self._locked(model_dir):
                version = max([self._last_version(model_dir), *self._versions(model_dir)]) + 1
                manifest["version"] = version
                manifest["created_at"] = _now()
                if self._secret:
                    manifest["hmac"] = self._sign(manifest)
                _write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
                os.rename(tmp, model_dir / str(version))
                _write_atomic(model_dir / ".last_version", str(version).encode())
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return manifest

    def _last_version(self, model_dir: Path) -> int:
        try:
            return int((model_dir / ".last_version").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def _sign(self, manifest: ModelManifest) -> str:
        assert self._secret is not None
        body = {k: v for k, v in manifest.items() if k != "hmac"}
        return hmac.new(self._secret, canonical_json(body), hashlib.sha256).hexdigest()

    def set_alias(self, tenant: str, name: str, alias: str, version: int) -> dict[str, int]:
        """Point `alias` at an existing version; return all aliases of the model."""
        check_name(alias, "alias")
        if alias.isdigit():
            raise InvalidName(f"alias {alias!r} is all digits, so it would read as a version; add a letter")
        model_dir = self._model_dir(tenant, name)
        with self._locked(model_dir):
            number = int(self._version_dir(tenant, name, version).name)
            aliases = self._read_aliases(model_dir)
            aliases[alias] = number
            self._write_aliases(model_dir, aliases)
        return aliases

    def delete_alias(self, tenant: str, name: str, alias: str) -> None:
        """Remove `alias`; ResourceNotFound when the model has no such alias."""
        check_name(alias, "alias")
        model_dir = self._model_dir(tenant, name)
        with self._locked(model_dir):
            aliases = self._read_aliases(model_dir)
            if alias not in aliases:
                known = ", ".join(sorted(aliases)) or "none"
                raise ResourceNotFound(f"model {name!r} has no alias {alias!r}; aliases: {known}")
            del aliases[alias]
            self._write_aliases(model_dir, aliases)

    def _write_aliases(self, model_dir: Path, aliases: dict[str, int]) -> None:
        _write_atomic(model_dir / ALIASES, json.dumps(aliases, indent=2, sort_keys=True).encode())

    def delete_version(self, tenant: str, name: str, version: int) -> None:
        """Delete a version; VersionInUse while an alias points at it."""
        model_dir = self._model_dir(tenant, name)
        with self._locked(model_dir):
            path = self._version_dir(tenant, name, version)
            users = sorted(a for a, v in self._read_aliases(model_dir).items() if v == int(path.name))
            if users:
                raise VersionInUse(
                    f"version {path.name} of model {name!r} is used by alias(es) {', '.join(users)}; "
                    "move or delete those aliases first"
                )
            trash = model_dir / f".trash-{uuid.uuid4().hex}"
            os.rename(path, trash)  # one atomic step: the version is gone for readers before its files are
        shutil.rmtree(trash, ignore_errors=True)

    def _read_aliases(self, model_dir: Path) -> dict[str, int]:
        try:
            return dict(json.loads((model_dir / ALIASES).read_text()))
        except FileNotFoundError:
            return {}

    def aliases(self, tenant: str, name: str) -> dict[str, int]:
        """The model's aliases, {alias: version}; ResourceNotFound for an unknown model."""
        model_dir = self._model_dir(tenant, name)
        if not self._versions(model_dir):
            raise ResourceNotFound(f"model {name!r} does not exist (tenant {tenant!r}); train or register it")
        return self._read_aliases(model_dir)

    def manifest(self, tenant: str, name: str, version: int) -> ModelManifest:
        """The manifest of one version (not verified: use verified_dir before loading files)."""
        path = self._version_dir(tenant, name, version) / MANIFEST
        try:
            return cast(ModelManifest, dict(json.loads(path.read_text())))  # the JSON that register() wrote
        except (OSError, ValueError) as exc:
            raise ArtifactTampered(f"manifest of {name!r} version {version} is unreadable: {exc}") from exc

    def list_models(self, tenant: str) -> list[dict[str, Any]]:
        """Every model of `tenant` that has at least one version, sorted by name."""
        tenant_dir = self.root / check_name(tenant, "tenant")
        out = []
        for model_dir in sorted(tenant_dir.iterdir()) if tenant_dir.is_dir() else []:
            versions = self._versions(model_dir) if NAME_RE.fullmatch(model_dir.name) else []
            if versions:
                aliases = self._read_aliases(model_dir)
                out.append({"name": model_dir.name, "latest_version": versions[-1], "aliases": aliases})
        return out

    def get_model(self, tenant: str, name: str) -> ModelVersions:
        """The model with its aliases and every version's manifest, oldest first."""
        aliases = self.aliases(tenant, name)
        versions = self._versions(self._model_dir(tenant, name))
        manifests = [self.manifest(tenant, name, v) for v in versions]
        return {"name": name, "latest_version": versions[-1], "aliases": aliases, "versions": manifests}

    def resolve(self, tenant: str, name: str, ref: str | int | None = None) -> int:
        """A version from a number, a digit string, an alias, or None (production alias, else latest)."""
        model_dir = self._model_dir(tenant, name)
        if ref is None:
            aliases = self.aliases(tenant, name)
            if "production" in aliases:
                return int(self._version_dir(tenant, name, aliases["production"]).name)
            return self._latest_servable(tenant, name, self._versions(model_dir))
        if _as_int(ref) is not None:
            return int(self._version_dir(tenant, name, ref).name)
        if not isinstance(ref, str):
            raise ResourceNotFound(f"version reference {ref!r} is neither a version number nor an alias name")
        aliases = self.aliases(tenant, name)
        if ref not in aliases:
            known = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
            raise ResourceNotFound(f"model {name!r} has no alias {ref!r}; aliases: {known}; or pass a version number")
        return int(self._version_dir(tenant, name, aliases[ref]).name)

    def _latest_servable(self, tenant: str, name: str, versions: list[int]) -> int:
        """The newest version that is not an export: an ONNX or TorchScript export is a file to download, and a
        prediction that named no version must not land on it."""
        for version in reversed(versions):
            if not is_export(self.manifest(tenant, name, version)):
                return version
        raise ResourceNotFound(
            f"model {name!r} has only exports (versions {', '.join(map(str, versions))}), which are files to "
            "download, not served; train or register a servable version"
        )

    def state_token(self, tenant: str, name: str) -> str:
        """A cheap string that changes whenever the aliases or the set of versions change (for caches)."""
        model_dir = self._model_dir(tenant, name)
        try:
            aliases = (model_dir / ALIASES).read_bytes()
        except FileNotFoundError:
            aliases = b""
        # Content, not mtimes: two alias moves within one clock tick must still give different tokens.
        versions = ",".join(map(str, self._versions(model_dir))).encode()
        return hashlib.sha256(aliases + b"\0" + versions).hexdigest()[:20]

    def verified_dir(self, tenant: str, name: str, version: int) -> Path:
        """The version directory, after checking HMAC, every file's sha256 and that no file was added."""
        path = self._version_dir(tenant, name, version)
        self._check_version(path, f"model {name!r} version {path.name}", self.manifest(tenant, name, int(path.name)))
        return path

    def _check_signature(self, where: str, manifest: ModelManifest) -> None:
        """ArtifactTampered unless the manifest's HMAC is right (when a key is configured)."""
        if self._secret:
            given = manifest.get("hmac")
            if not isinstance(given, str) or not hmac.compare_digest(given, self._sign(manifest)):
                raise ArtifactTampered(
                    f"{where}: manifest HMAC is missing or wrong; it was altered or signed with another key. "
                    "Re-register the model, or configure the key it was registered with"
                )

    def _check_version(self, path: Path, where: str, manifest: ModelManifest) -> None:
        """ArtifactTampered unless `path` holds exactly the files `manifest` lists, with their sha256, and the
        manifest's HMAC is right (when a key is configured)."""
        self._check_signature(where, manifest)
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise ArtifactTampered(f"{where}: manifest lists no files; re-register the model")
        for rel, info in files.items():
            file = path / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute() or file.is_symlink() or not file.is_file():
                raise ArtifactTampered(f"{where}: listed file {rel!r} is missing or not a regular file")
            if not isinstance(info, dict) or sha256_file(file) != info.get("sha256"):
                raise ArtifactTampered(f"{where}: file {rel!r} does not match its sha256; it was modified")
        if manifest.get("artifact", {}).get("sha256") != _artifact_digest(files):
            raise ArtifactTampered(f"{where}: the artifact digest does not match the file list")
        for extra in path.rglob("*"):
            rel = extra.relative_to(path).as_posix()
            if rel != MANIFEST and rel not in files and (extra.is_symlink() or not extra.is_dir()):
                raise ArtifactTampered(f"{where}: unexpected file {rel!r} that the manifest does not list")

    def archive(self, tenant: str, name: str, version: int) -> bytes:
        """A deterministic .tar.gz of the verified version directory, entries under `<name>-<version>/`."""
        path = self.verified_dir(tenant, name, version)
        prefix = f"{name}-{_as_int(version)}"  # not path.name: a store-backed registry verifies into a cache folder
        buf = io.BytesIO()
        # Fixed mtimes, owners and order: a version always gives the same bytes (cacheable, comparable).
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                data = file.read_bytes()
                info = tarfile.TarInfo(f"{prefix}/{file.relative_to(path).as_posix()}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def _as_int(ref: object) -> int | None:
    """A version number from an int or an ASCII digit string; None for anything else (bool included)."""
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return ref
    if isinstance(ref, str) and ref.isascii() and ref.isdigit():
        return int(ref)
    return None
