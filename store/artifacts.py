"""Where artifacts live when processes share no disk: an object store behind a small interface. Stdlib only at
import (boto3 is imported when an S3 store is first used): the API imports this module.

`MLQ_ARTIFACTS` selects the store:
  unset        no store: every process reads and writes MLQ_HOME directly, as on one host (the default);
  file:///dir  a LocalStore on `dir`, e.g. a network mount: MLQ_HOME then only holds per-process working copies;
  s3://b/p     an S3Store on bucket `b` under prefix `p`, endpoint MLQ_S3_ENDPOINT_URL (else the AWS variables),
               credentials from boto3's default chain (AWS_ACCESS_KEY_ID…, a profile, an instance role).

Keys are relative '/'-separated paths (`models/<tenant>/<name>/<version>/model.pt`). A store has no rename and
no lock, so callers make writes atomic as seen by readers by writing files first and a manifest last, and take
numbers and locks from Redis (store/remote_registry.py).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlparse

from training.errors import MLQError

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
# Plain segments only: a key never climbs out of its prefix or the LocalStore's root.
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}")


class ArtifactMissing(MLQError):
    """Raised when a key is not in the store."""

    code = "artifact_missing"
    status = 404


class StoreError(MLQError):
    """Raised when the store cannot be reached or refuses a request (after the client's own retries)."""

    code = "artifact_store_unavailable"
    status = 503


def check_key(key: str) -> str:
    parts = key.split("/")
    if not parts or not all(_SEGMENT_RE.fullmatch(p) for p in parts):
        raise ValueError(f"not an artifact key: {key!r}")
    return key


class ArtifactStore(Protocol):
    """What mlqueue needs of an object store: whole-object put and get, listing by prefix, delete."""

    url: str

    def put_file(self, key: str, path: Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_file(self, key: str, dest: Path) -> None:
        """Write the object to `dest` (replaced whole); ArtifactMissing if there is none."""

    def get_bytes(self, key: str) -> bytes: ...
    def open(self, key: str) -> IO[bytes]:
        """A readable stream of the object, for serving it without a local copy."""

    def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a folder: '' or ending in '/'), sorted."""

    def delete(self, keys: list[str]) -> None: ...


class LocalStore:
    """A store on a directory: each key is a file under `root`, written beside its place and renamed in."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.url = self.root.as_uri() if self.root.is_absolute() else str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write(self, key: str, source: IO[bytes]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
        try:
            with tmp.open("wb") as fh:
                shutil.copyfileobj(source, fh, _CHUNK)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        with Path(path).open("rb") as fh:
            self._write(key, fh)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, io.BytesIO(data))

    def get_file(self, key: str, dest: Path) -> None:
        with self.open(key) as src:
            _copy_to(src, Path(dest))

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as src:
            return src.read()

    def open(self, key: str) -> IO[bytes]:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactMissing(f"no artifact {key!r} in the artifact store") from None

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not any(part.startswith(".") for part in k.split("/")))

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)


class S3Store:
    """A store on an S3 bucket (AWS, MinIO, rclone serve s3 …) under a key prefix, through boto3."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or None
        self.url = f"s3://{bucket}/{self.prefix}"
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = 0

    @property
    def client(self) -> Any:
        # One client per process, made on first use: a client made before a fork would share its connections.
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                import boto3
                from botocore.config import Config

                region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
                # Path-style addressing: MinIO and rclone serve buckets at <endpoint>/<bucket>, not as subdomains.
                # Checksums only where the API requires them: we check every file's sha256 ourselves, and botocore's
                # response-checksum wrapper hides an S3-compatible server's 5xx behind an AttributeError instead of
                # retrying it (boto/boto3#4754, seen here with rclone under four concurrent writers).
                config = Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                    s3={"addressing_style": "path"},
                    response_checksum_validation="when_required",
                    request_checksum_calculation="when_required",
                )
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, region_name=region, config=config
                )
                self._pid = os.getpid()
            return self._client

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, what: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ArtifactMissing(f"no artifact {key!r} in the artifact store") from None
            # The bucket, prefix and endpoint go to the log only: a problem's body reaches every tenant.
            log.warning("the artifact store %s refused to %s %r: %s %s", self.url, what, key, code, exc)
            raise StoreError(
                f"the artifact store refused to {what} an artifact ({code or 'an error'}); see the server log"
            ) from exc
        except (BotoCoreError, Boto3Error) as exc:  # Boto3Error: S3UploadFailedError of a (multipart) upload
            log.warning("the artifact store %s could not %s %r: %s", self.url, what, key, exc)
            raise StoreError(
                f"the artifact store could not {what} an artifact ({type(exc).__name__}); see the server log"
            ) from exc

    def put_file(self, key: str, path: Path) -> None:
        with Path(path).open("rb") as fh:
            # upload_fileobj switches to a multipart upload for large files; the object appears whole either way.
            self._call(
                "write", key, lambda **kw: self.client.upload_fileobj(fh, kw["Bucket"], kw["Key"]), Key=self._key(key)
            )

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("write", key, self.client.put_object, Key=self._key(key), Body=data)

    def open(self, key: str) -> IO[bytes]:
        response = self._call("read", key, self.client.get_object, Key=self._key(key))
        body: IO[bytes] = response["Body"]  # botocore StreamingBody: read(), close()
        return body

    def get_file(self, key: str, dest: Path) -> None:
        body = self.open(key)
        try:
            _copy_to(body, Path(dest))
        finally:
            body.close()

    def get_bytes(self, key: str) -> bytes:
        body = self.open(key)
        try:
            return body.read()
        finally:
            body.close()

    def keys(self, prefix: str) -> list[str]:
        full = self.prefix + prefix
        keys: list[str] = []
        for page in self._pages(full):
            keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(keys)

    def _pages(self, full_prefix: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": full_prefix, **({"ContinuationToken": token} if token else {})}
            page = self._call("list", full_prefix, self.client.list_objects_v2, **kwargs)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            if batch:
                self._call(
                    "delete", batch[0]["Key"], self.client.delete_objects, Delete={"Objects": batch, "Quiet": True}
                )


def _copy_to(source: IO[bytes], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{uuid.uuid4().hex}-{dest.name}")
    try:
        with tmp.open("wb") as fh:
            shutil.copyfileobj(source, fh, _CHUNK)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def delete_prefix(store: ArtifactStore, prefix: str) -> None:
    store.delete(store.keys(prefix))


def parse_store_url(url: str) -> tuple[str, str, str]:
    """('file', path, '') or ('s3', bucket, prefix) of an MLQ_ARTIFACTS value; ValueError naming the forms."""
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.path and not parsed.netloc:
        return "file", parsed.path, ""
    if parsed.scheme == "s3" and parsed.netloc:
        prefix = parsed.path.strip("/")
        try:
            if prefix:
                check_key(prefix)
        except ValueError:
            raise ValueError(f"MLQ_ARTIFACTS={url!r}: the prefix must be plain '/'-separated names") from None
        return "s3", parsed.netloc, prefix
    raise ValueError(f"MLQ_ARTIFACTS={url!r} is neither file:///absolute/dir nor s3://bucket/prefix")


def open_store(url: str, endpoint_url: str = "") -> ArtifactStore | None:
    """The store an MLQ_ARTIFACTS value names; None when it is empty (everything stays under MLQ_HOME)."""
    if not url:
        return None
    kind, where, prefix = parse_store_url(url)
    if kind == "file":
        return LocalStore(where)
    return S3Store(
        where,
        prefix,
        endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None,
    )
