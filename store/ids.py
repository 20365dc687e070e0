"""Server-generated ids for jobs and datasets: a prefix and 26 lowercase ULID-like characters. Stdlib only.

Ids sort by creation time (48-bit milliseconds first), so "newest first" is "largest id first". Every id that
comes from a client is checked against `ID_RE` before it touches Redis or the filesystem (no path traversal).
"""

from __future__ import annotations

import re
import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
JOB_ID_RE = re.compile(r"job_([0-9a-z]{26}|[0-9a-f]{32})")
DATASET_ID_RE = re.compile(r"ds_([0-9a-z]{26}|[0-9a-f]{32})")


_lock = threading.Lock()
_last = (0, 0)


def new_id(prefix: str) -> str:
    """`prefix` + "_" + 26 characters: 10 of timestamp (ms), 16 of randomness (80 bits).

    Monotonic within a process (the ULID rule): in the same millisecond the random part counts up, so ids
    created one after the other also sort one after the other.
    """
    global _last
    fresh = secrets.randbits(80)  # drawn outside the lock: 32 API threads would otherwise queue on it
    with _lock:
        ms, rand = time.time_ns() // 1_000_000, fresh
        if ms <= _last[0] and _last[1] < (1 << 80) - 1:
            ms, rand = _last[0], _last[1] + 1
        _last = (ms, rand)
    value = ms << 80 | rand
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def is_job_id(value: object) -> bool:
    return isinstance(value, str) and JOB_ID_RE.fullmatch(value) is not None


def is_dataset_id(value: object) -> bool:
    return isinstance(value, str) and DATASET_ID_RE.fullmatch(value) is not None
