"""A job's checkpoint folder mirrored to the artifact store, so the next attempt may run on another host.

Layout in the store: checkpoints/<job id>/latest.json ({file name: sha256}) and checkpoints/<job id>/blobs/<sha256>.
While the job runs, a thread copies the folder's files that changed (training: last.pt after each epoch; batch:
its parts and checkpoint.json) at most once per interval, blobs first and latest.json last, so latest.json always
names a complete set. JSON files are read before the others: writers write data first and the JSON that
indexes it last, so the snapshot never indexes a part it lacks. A SIGKILL loses at most one interval of progress.
Before an attempt starts, the snapshot is restored into the folder unless the folder already holds it (the same
host resuming its own checkpoint downloads nothing); every file is checked against its sha256 first.

The bucket is not trusted (docs/operations.md, threat model): whoever can write it could plant a latest.json whose
names climb out of the folder (an absolute path, `..`) or a forged last.pt for the next attempt to resume and sign.
So latest.json is a signed index (store/signed_index.py) bound to the job id: its HMAC (MLQ_SECRET_KEY) is checked
before anything in it is used, every name must be a plain file name of CHECKPOINT_NAME_RE that resolves inside the
folder, every sha256 64 hex digits. A snapshot that fails any check is refused and logged, and the attempt starts
fresh. Without MLQ_SECRET_KEY nothing is signed (as for models): the name checks still hold, but a bucket writer
can forge a checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import threading
from pathlib import Path
from types import TracebackType

from store import signed_index
from store.artifacts import ArtifactMissing, ArtifactStore
from training.registry import sha256_file

log = logging.getLogger(__name__)

FORMAT = "mlq-checkpoint-v1"
# The files a checkpoint holds: plain names in the folder itself (last.pt; checkpoint.json, part-000000.csv).
CHECKPOINT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}(\.[a-z0-9]{1,10}){0,2}")


def sign_snapshot(secret: bytes, job_id: str, files: dict[str, str]) -> bytes:
    """The bytes of latest.json naming `files` ({name: sha256}) for the job, signed when there is a secret."""
    return signed_index.sign(secret, FORMAT, job_id, files)


def remove_checkpoint(store: ArtifactStore | None, job_id: str) -> None:
    """Forget the job's checkpoint in the store (the job ended; no attempt will resume it). Best effort: it runs
    just before a job's final status is recorded, which a store outage must not stop; a leftover costs only
    bucket space (an S3 lifecycle rule on checkpoints/ sweeps it, docs/scaling.md)."""
    if store is None:
        return
    try:
        store.delete(store.keys(f"checkpoints/{job_id}/"))
    except Exception:  # noqa: BLE001
        log.warning("could not remove checkpoint %s from the store; it stays until swept", job_id, exc_info=True)


class CheckpointSync:
    """`with CheckpointSync(store, job_id, folder, interval_s):` around one attempt of a job."""

    def __init__(
        self, store: ArtifactStore | None, job_id: str, folder: Path, interval_s: float, *, secret_key: str | bytes
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.secret = secret_key.encode() if isinstance(secret_key, str) else secret_key
        self.prefix = f"checkpoints/{job_id}/"
        self.folder = Path(folder)
        self.interval_s = interval_s
        self._pushed: dict[str, str] = {}  # name -> sha256 in the store
        self._seen: dict[str, tuple[int, int, str]] = {}  # name -> (mtime_ns, size, sha256) read locally
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CheckpointSync:
        if self.store is not None:
            self.restore()
            self._thread = threading.Thread(target=self._loop, name="checkpoint-sync", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            with contextlib.suppress(Exception):
                self.push()  # what the attempt left: a preempted job resumes from its last epoch, not an older one

    def restore(self) -> None:
        assert self.store is not None
        try:
            raw = self.store.get_bytes(self.prefix + "latest.json")
        except ArtifactMissing:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            latest = signed_index.verify(self.secret, FORMAT, self.job_id, raw, self.folder, depth=1)
            if bad := [name for name in latest if not CHECKPOINT_NAME_RE.fullmatch(name)]:
                raise signed_index.IndexRefused(f"{bad[0]!r} is not a checkpoint file name")
        except signed_index.IndexRefused as refused:
            log.warning("refused checkpoint %slatest.json: %s; starting without it", self.prefix, refused)
            return
        for name, sha in latest.items():
            path = self.folder / name
            if path.is_file() and sha256_file(path) == sha:
                continue
            tmp = self.folder / f".download-{name}"
            try:
                self.store.get_file(self.prefix + "blobs/" + sha, tmp)
                intact = sha256_file(tmp) == sha
            except ArtifactMissing:
                intact = False
            if not intact:
                tmp.unlink(missing_ok=True)
                log.warning(
                    "checkpoint %s%s is missing or does not match its sha256; starting without it", self.prefix, name
                )
                for other in latest:
                    (self.folder / other).unlink(missing_ok=True)
                return
            tmp.replace(path)
        self._pushed = dict(latest)
        log.info("restored checkpoint %s (%d files)", self.prefix, len(latest))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.push()
            except Exception:  # noqa: BLE001 - a store hiccup costs progress, not the job; the next push retries
                log.warning("could not copy checkpoint %s to the store", self.prefix, exc_info=True)

    def push(self) -> None:
        """Copy the files that changed since the last push, then latest.json naming them all."""
        assert self.store is not None
        if not self.folder.is_dir():
            return
        names = sorted(
            (
                p.name
                for p in self.folder.iterdir()
                if p.is_file() and CHECKPOINT_NAME_RE.fullmatch(p.name) and not p.name.endswith(".tmp")
            ),
            key=lambda n: (not n.endswith(".json"), n),
        )
        snapshot: dict[str, str] = {}
        for name in names:
            path = self.folder / name
            try:
                stat = path.stat()
                seen = self._seen.get(name)
                if seen is None or seen[:2] != (stat.st_mtime_ns, stat.st_size):
                    # Upload a private copy: the writer may replace the file while we read it, and the blob
                    # must hold exactly the bytes its name (their sha256) says.
                    copy = self.folder / f".sync-{name}"
                    shutil.copyfile(path, copy)
                    sha = sha256_file(copy)
                    if sha not in self._pushed.values():
                        self.store.put_file(self.prefix + "blobs/" + sha, copy)
                    copy.unlink()
                    seen = (stat.st_mtime_ns, stat.st_size, sha)
                    self._seen[name] = seen
                snapshot[name] = seen[2]
            except FileNotFoundError:
                continue  # replaced or removed between the listing and the read
        if not snapshot or snapshot == self._pushed:
            return
        # Last: it names whole blobs.
        self.store.put_bytes(self.prefix + "latest.json", sign_snapshot(self.secret, self.job_id, snapshot))
        stale = set(self._pushed.values()) - set(snapshot.values())
        self.store.delete([self.prefix + "blobs/" + s for s in sorted(stale)])
        self._pushed = snapshot
