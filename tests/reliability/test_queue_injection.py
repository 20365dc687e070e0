"""Only JSON crosses the queue: pickle and YAML messages put raw on the `train` queue are refused unread.

The messages are kombu's own Redis envelope (what `LPUSH train` would carry from an attacker who can write to
Redis), with bodies that create a canary file if anything deserialised them.
"""

from __future__ import annotations

import base64
import json
import pickle
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from reliability_support import ChaosHarness, WorkerFleet, dump
from worker_processes import WorkerProcess

from store.contract import TRAIN_QUEUE, TRAIN_TASK

pytestmark = pytest.mark.integration


class _Gadget:
    """Unpickling this opens (creates) the canary file: code execution from data."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def envelope(body: bytes, content_type: str, task: str = TRAIN_TASK) -> str:
    """A kombu Redis-transport message for `task` on the train queue, as `send_task` would build it."""
    task_id = str(uuid.uuid4())
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "binary" if "python" in content_type else "utf-8",
            "content-type": content_type,
            "headers": {
                "lang": "py",
                "task": task,
                "id": task_id,
                "root_id": task_id,
                "parent_id": None,
                "argsrepr": "",
                "kwargsrepr": "",
                "origin": "attacker",
                "retries": 0,
                "eta": None,
                "expires": None,
                "group": None,
                "timelimit": [None, None],
                "shadow": None,
                "ignore_result": True,
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": TRAIN_QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


@pytest.fixture(scope="module")
def worker(fleet: WorkerFleet) -> WorkerProcess:
    """The one consumer of the train queue here: with a second, the other could take the messages a test pushed
    and its worker's log would lack what the test looks for."""
    return fleet.start([TRAIN_QUEUE])


def test_pickle_and_yaml_messages_are_refused_unread_and_the_queue_keeps_draining(
    harness: ChaosHarness, fleet: WorkerFleet, worker: WorkerProcess, tmp_path: Path
) -> None:
    pid = worker.first_record["pid"]
    pickle_canary, yaml_canary = tmp_path / "pickled", tmp_path / "yamled"
    pickled = pickle.dumps(((_Gadget(pickle_canary),), {}, {}), protocol=2)
    yamled = (f"- - !!python/object/apply:builtins.open ['{yaml_canary}', 'w']\n- {{}}\n- {{}}\n").encode()
    for raw in (
        envelope(pickled, "application/x-python-serialize"),
        envelope(yamled, "application/x-yaml"),
        envelope(b"{not json", "application/json"),
        envelope(b'[[{"job_id": 1}], {}, {}]', "application/json"),
        envelope(b"[[], {}, {}]", "application/json", task="os.system"),
    ):
        harness.redis.lpush(TRAIN_QUEUE, raw)

    good = harness.wait(harness.train_job("iris-after-poison", algorithm="logistic_regression"))
    assert good["status"] == "succeeded", dump(good) + worker.log_tail()
    assert not pickle_canary.exists() and not yaml_canary.exists()
    deadline = time.monotonic() + 10
    while harness.redis.llen(TRAIN_QUEUE) or harness.redis.hlen("unacked"):
        assert time.monotonic() < deadline, "the refused messages were not removed"
        time.sleep(0.05)
    assert worker.proc.poll() is None
    records = [r for r in fleet.liveness.workers() if r["hostname"].startswith(worker.name + "@")]
    assert [r["pid"] for r in records] == [pid]  # the same pool process: nothing crashed it
    log = worker.log_tail(200_000)
    assert "Refusing to deserialize" in log or "untrusted content" in log, log[-4000:]


def test_a_message_that_is_not_a_kombu_envelope_is_dropped_and_the_worker_keeps_consuming(
    harness: ChaosHarness, fleet: WorkerFleet, worker: WorkerProcess
) -> None:
    pid = worker.first_record["pid"]
    # What `redis-cli LPUSH train "not json"` leaves, and envelopes of the wrong shape or encoding.
    for raw in (b"not json", b"42", b'"a string"', b"[]", b'{"body": "x"}', b"\xff\xfe{"):
        harness.redis.lpush(TRAIN_QUEUE, raw)

    good = harness.wait(harness.train_job("iris-after-garbage", algorithm="logistic_regression"))
    assert good["status"] == "succeeded", dump(good) + worker.log_tail()
    assert worker.proc.poll() is None, worker.log_tail()
    assert not harness.redis.llen(TRAIN_QUEUE)
    records = [r for r in fleet.liveness.workers() if r["hostname"].startswith(worker.name + "@")]
    assert [r["pid"] for r in records] == [pid]
    log = worker.log_tail(200_000)
    assert "Unrecoverable error" not in log and "dropped a malformed message" in log, log[-4000:]
