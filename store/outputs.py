"""Where a batch prediction's output file lives, what it is called and how it is served. Stdlib only: the API
imports it to stream the file, the batch worker to write it.

Layout: <MLQ_HOME>/outputs/<job id>/<model>-v<version>-<job id>.<csv|parquet>, next to nothing else: the file is
renamed into place whole (written under a temporary name first), so a half-written output is never visible. The
job's result names the file; the job record (its tenant) says who may read it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from store.ids import is_job_id

FORMATS = ("csv", "parquet")
MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
FILENAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}-v\d{1,10}-job_[0-9a-z]{26,32}\.(csv|parquet)")


def filename(model: str, version: int, job_id: str, fmt: str) -> str:
    return f"{model}-v{version}-{job_id}.{fmt}"


class OutputStore:
    """The output files of batch predictions under `root` (MLQ_HOME/outputs), one folder per job."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def folder(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def path(self, job_id: str, name: str) -> Path | None:
        """The output file `name` of the job, or None when the name is not one we write or the file is gone."""
        if not FILENAME_RE.fullmatch(name) or job_id not in name:
            return None
        path = self.folder(job_id) / name
        return path if path.is_file() else None

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
