"""A worker's local copy of what it downloaded from the artifact store: content-addressed, size-bounded, LRU.

Layout: <MLQ_CACHE_DIR>/<digest[:2]>/<digest>/… one folder per entry, named by a sha256 of its content (a dataset
file's digest, a model version's artifact digest), so an entry never goes stale: what a name holds never changes.
An entry is filled in `.tmp-<uuid>` by the caller (which checks every file's sha256 there) and renamed into place
whole; a reader never sees a half-downloaded entry. Using an entry touches its folder's mtime; after each fill,
the least recently used entries are removed until the cache is back under its bound. The entry just filled is
never removed, so one entry larger than the bound still works (and is the first to go next time).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
DIGEST_RE = re.compile(r"[0-9a-f]{64}")


class ArtifactCache:
    """Entries under `root`, at most about `max_bytes` in all."""

    def __init__(self, root: Path | str, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def entry(self, digest: str, fill: Callable[[Path], None]) -> Path:
        """The folder of entry `digest`; on a miss `fill(folder)` writes it first (and raises to refuse it)."""
        if not DIGEST_RE.fullmatch(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        path = self.root / digest[:2] / digest
        if path.is_dir():
            self.hits += 1
            with contextlib.suppress(FileNotFoundError):  # evicted by another process just now: refill below
                os.utime(path)
                return path
        self.misses += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            fill(tmp)
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.is_dir():  # not "another process filled it first": a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.evict(keep=path)
        return path

    def drop(self, digest: str) -> None:
        """Remove entry `digest` (found corrupted on this disk): renamed away first, so no reader sees it half gone."""
        if not DIGEST_RE.fullmatch(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        gone = self.root / f".tmp-{uuid.uuid4().hex}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.root / digest[:2] / digest, gone)
        shutil.rmtree(gone, ignore_errors=True)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, folder) of every complete entry, least recently used first."""
        out = []
        for shard in self.root.glob("[0-9a-f][0-9a-f]"):
            for path in shard.iterdir():
                if DIGEST_RE.fullmatch(path.name):
                    try:
                        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                        out.append((path.stat().st_mtime, size, path))
                    except FileNotFoundError:
                        continue  # removed while we looked
        return sorted(out)

    def evict(self, keep: Path | None = None) -> None:
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            log.info("artifact cache: evicted %s (%d bytes) to stay under %d bytes", path.name, size, self.max_bytes)
