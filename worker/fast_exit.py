"""A worker's main process leaves at once after Celery's warm shutdown, skipping torch's exit-time finalizers.

An idle worker took 7-8 s to stop, of which Celery's own shutdown was under 1.5 s: the rest was the interpreter
running torch's `weakref.finalize` hooks (torch/library.py `_del_library`, one per registered operator library)
in a process about to vanish. Once Celery has shut down (jobs requeued, the broker connection closed, the pool
gone), nothing of ours is left to clean up; logs are flushed and the process exits with Celery's exit code.
A process that exits any other way (an import error, `celery inspect`) runs every exit hook as usual.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from typing import Any

from celery import signals


def install() -> None:
    """Call after torch is imported: exit hooks run last-registered first, so this one runs before torch's."""
    stopped: dict[str, Any] = {}

    def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
        stopped["exitcode"] = getattr(sender, "exitcode", None) or 0

    def leave() -> None:
        if "exitcode" not in stopped:
            return
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: nothing more to say
                stream.flush()
        os._exit(int(stopped["exitcode"]))

    signals.worker_shutdown.connect(on_worker_shutdown, weak=False, dispatch_uid="mlq-fast-exit")
    atexit.register(leave)
