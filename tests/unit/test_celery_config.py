"""The Celery app's configuration: JSON only, late acks, one job per process, a long visibility timeout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from store.celery_config import make_celery
from store.contract import BATCH_PREDICT_TASK, BATCH_QUEUE, INFERENCE_QUEUE, TRAIN_QUEUE, TRAIN_TASK
from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _conf(**overrides: object) -> Any:
    return make_celery(Settings(redis_url="redis://127.0.0.1:6379/14", **overrides)).conf  # type: ignore[arg-type]


def test_messages_and_results_are_json_only() -> None:
    conf = _conf()
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]


def test_jobs_are_acked_late_and_reserved_one_at_a_time() -> None:
    conf = _conf()
    assert conf.task_acks_late is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is True
    assert conf.worker_proc_alive_timeout >= 120


def test_visibility_timeout_is_set_in_all_three_places_and_outlasts_a_job() -> None:
    conf = _conf(visibility_timeout_s=7200, job_time_limit_s=3600)
    assert conf.broker_transport_options["visibility_timeout"] == 7200
    assert conf.result_backend_transport_options["visibility_timeout"] == 7200
    assert conf.visibility_timeout == 7200
    assert conf.task_time_limit == 3600
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit


def test_tasks_are_routed_to_their_queue_by_name() -> None:
    app = make_celery(Settings(redis_url="redis://127.0.0.1:6379/14"))
    assert {q.name for q in app.conf.task_queues} == {TRAIN_QUEUE, INFERENCE_QUEUE, BATCH_QUEUE}
    assert app.amqp.router.route({}, TRAIN_TASK)["queue"].name == TRAIN_QUEUE
    assert app.amqp.router.route({}, BATCH_PREDICT_TASK)["queue"].name == BATCH_QUEUE
    assert app.conf.broker_url == "redis://127.0.0.1:6379/14"


def test_the_api_side_modules_load_no_torch_and_no_training_code() -> None:
    code = (
        "import sys, json\n"
        "import store.celery_config, store.liveness, worker.launcher\n"
        "from store.celery_config import make_celery\n"
        "from store.settings import Settings\n"
        "make_celery(Settings())\n"
        "heavy = ('torch', 'numpy', 'pandas', 'sklearn', 'worker.tasks', 'training.pipeline')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
