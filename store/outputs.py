"""Where a batch prediction's output file lives, what it is called and how it is served. Stdlib only: the API
imports it to stream the file, the batch worker to write it.

Layout: <MLQ_HOME>/outputs/<job id>/<model>-v<version>-<job id>.<csv|parquet>, next to nothing else: the file is
renamed into place whole (written under a temporary name first), so a half-written output is never visible. The
job's result names the file; the job record (its tenant) says who may read it.

With an artifact store (MLQ_ARTIFACTS), the worker also `publish`es the file to outputs/<job id>/<name>, and a
process that lacks the local file (an API on another host) reads it through its ArtifactCache, keyed by the
file's sha256 from the job's result and checked after the download.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from store.ids import is_job_id
from training.errors import ArtifactTampered

if TYPE_CHECKING:
    from store.artifact_cache import ArtifactCache
    from store.artifacts import ArtifactStore

FORMATS = ("csv", "parquet")
MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
FILENAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}-v\d{1,10}-job_[0-9a-z]{26,32}\.(csv|parquet)")


def filename(model: str, version: int, job_id: str, fmt: str) -> str:
    return f"{model}-v{version}-{job_id}.{fmt}"


class OutputStore:
    """The output files of batch predictions under `root` (MLQ_HOME/outputs), one folder per job."""

    def __init__(
        self, root: Path | str, store: ArtifactStore | None = None, cache: ArtifactCache | None = None
    ) -> None:
        self.root = Path(root)
        self.store = store
        self.cache = cache

    def folder(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def path(self, job_id: str, name: str, sha256: str | None = None) -> Path | None:
        """The output file `name` of the job, or None when the name is not one we write or the file is gone.
        With a store, a file this host lacks is downloaded (into the cache) and checked against `sha256`."""
        if not FILENAME_RE.fullmatch(name) or job_id not in name:
            return None
        path = self.folder(job_id) / name
        if path.is_file():
            return path
        return self._fetch(job_id, name, sha256) if self.store is not None and sha256 else None

    def _fetch(self, job_id: str, name: str, sha256: str) -> Path | None:
        from store.artifacts import ArtifactMissing

        assert self.store is not None and self.cache is not None
        store, key = self.store, f"outputs/{job_id}/{name}"

        def fill(folder: Path) -> None:
            store.get_file(key, folder / name)
            digest = hashlib.sha256()
            with (folder / name).open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            if digest.hexdigest() != sha256:
                raise ArtifactTampered(f"the output of job {job_id} in the store does not match its sha256")

        try:
            return self.cache.entry(sha256, fill) / name
        except ArtifactMissing:
            return None

    def publish(self, job_id: str, name: str) -> None:
        """Copy the finished output file to the store (no-op without one) for processes on other hosts."""
        if self.store is not None:
            self.store.put_file(f"outputs/{job_id}/{name}", self.folder(job_id) / name)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
        if self.store is not None:
            self.store.delete(self.store.keys(f"outputs/{job_id}/"))
