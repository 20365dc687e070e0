"""One entry of the inference streams on its way through a batch: the consumer (worker/inference.py) fills it,
the warm router (worker/warm_routing.py) and the traffic helpers read it. Its own module, so that they need not
import the consumer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from store.contract import PredictRequest
from store.inference_queue import STREAM


@dataclass
class Item:
    """One stream entry on its way through a batch."""

    entry_id: str
    job_id: str | None
    request: PredictRequest | None
    run: bool = True  # False: its job is already final (cancelled, answered) or undecodable
    result: bytes | None = None
    error: dict[str, Any] | None = None
    outputs: list[Any] | None = None  # one label or value per row: the live figures and a shadow's comparison
    stream: str = STREAM  # the lane it was read from
    read_at: float = 0.0  # monotonic: when this consumer first read it (priority lanes' passover bound)
    expired: bool = False  # its deadline passed before it was computed: it ends `expired`, never computed
