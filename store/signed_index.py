"""A signed file index: the JSON a writer puts in the bucket to name a set of files ({relative path: sha256}).

The bucket is not trusted (docs/operations.md, threat model): whoever can write it could plant an index whose names
climb out of the folder a reader downloads into (an absolute path, `..`), or swap the files for the next process to
use and then sign as its own (a checkpoint's last.pt, a search trial's model). So an index is
{"format", "subject", "files", "hmac"}: the HMAC (MLQ_SECRET_KEY, over the canonical JSON) binds the kind of index
and what it belongs to (a job id, a trial), and `verify` checks it before anything else in the index is used; then
every name must be plain relative segments that resolve inside the destination, and every sha256 64 hex digits.
Without a secret nothing is signed (as for models): the name checks still hold, but a bucket writer can forge the
content. Stdlib only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

from training.errors import ArtifactTampered
from training.registry import canonical_json

# One path segment: no separator, no leading dot (so never `.`, `..` or a hidden temporary), no control characters.
SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,127}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
MAX_FILES = 100_000  # a batch of 10 M rows in chunks of 100 is this many parts; no index we write is larger


class IndexRefused(ArtifactTampered):
    """The index failed a check; the message says which. Readers log it and go on without the files."""

    code = "artifact_index_refused"


def safe_relative(rel: object, root: Path, *, depth: int = 8) -> bool:
    """True when `rel` is 1..depth plain segments joined by '/', and `root / rel` resolves inside `root`."""
    if not isinstance(rel, str):
        return False
    parts = rel.split("/")
    if not 0 < len(parts) <= depth or not all(SEGMENT_RE.fullmatch(p) for p in parts):
        return False
    resolved, base = (root / rel).resolve(), root.resolve()
    return resolved != base and resolved.is_relative_to(base)


def _signature(secret: bytes, body: dict[str, Any]) -> str:
    return hmac.new(secret, canonical_json(body), hashlib.sha256).hexdigest()


def sign(secret: bytes | None, fmt: str, subject: str, files: dict[str, str]) -> bytes:
    """The bytes of an index of `files` ({relative path: sha256}); signed when there is a secret."""
    body: dict[str, Any] = {"format": fmt, "subject": subject, "files": files}
    if secret:
        body["hmac"] = _signature(secret, body)
    return json.dumps(body).encode()


def verify(secret: bytes | None, fmt: str, subject: str, raw: bytes, root: Path, *, depth: int = 8) -> dict[str, str]:
    """{relative path: sha256} from an index's bytes, or IndexRefused: the HMAC first, then every name and sha256."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise IndexRefused("the index is not JSON") from None
    if not isinstance(body, dict) or body.get("format") != fmt:
        raise IndexRefused(f"the index is not a {fmt} index")
    if secret:
        given = body.pop("hmac", None)
        if not isinstance(given, str) or not hmac.compare_digest(given, _signature(secret, body)):
            raise IndexRefused("the index's HMAC is missing or wrong (not written with this MLQ_SECRET_KEY)")
    if body.get("subject") != subject:
        raise IndexRefused(f"the index belongs to {body.get('subject')!r}, not {subject!r}")
    files = body.get("files")
    if not isinstance(files, dict) or not 0 < len(files) <= MAX_FILES:
        raise IndexRefused("the index names no files, or too many")
    for rel, sha in files.items():
        if not safe_relative(rel, root, depth=depth):
            raise IndexRefused(f"file name {rel!r} is not a plain relative name inside the folder")
        if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
            raise IndexRefused(f"the sha256 of {rel!r} is not 64 hex digits")
    return dict(files)
