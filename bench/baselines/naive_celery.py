"""Baseline "naive Celery": a Flask view sends one Celery task per request and blocks on `result.get()`.

What the common Flask + Celery tutorials do: JSON, Redis broker AND result backend, Celery's defaults otherwise,
one solo-pool worker with the models loaded at start. The worker serves the network bare
(bench/baselines/bare.py: the JSON list as a float32 tensor, one forward pass), or through
training.predictor.Predictor when BENCH_BASELINE=predictor.

    gunicorn -w 1 -k gthread --threads 32 bench.baselines.naive_celery:app
    celery -A bench.baselines.naive_celery worker -P solo -c 1 -Q naive
Environment: BENCH_REDIS_URL (broker and backend), MLQ_HOME (the registry), MLQ_TORCH_THREADS, BENCH_BASELINE.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from flask import Flask, jsonify, request

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
celery_app = Celery("naive", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="naive",
    worker_hijack_root_logger=False,
)
MODELS: dict[str, Any] = {}


@signals.worker_process_init.connect
def load_models(**_: Any) -> None:
    # Worker side only: the Flask process never imports torch.
    from bench.baselines import bare

    MODELS.update(bare.load_models())


signals.worker_init.connect(load_models)  # -P solo sends worker_init, not worker_process_init


@celery_app.task(name="naive.predict")
def predict(name: str, inputs: list[Any]) -> dict[str, Any]:
    model = MODELS[name]
    return {"model": name, "version": model.version, "predictions": model.predict(inputs)}


app = Flask(__name__)


@app.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@app.post("/v1/models/<name>/predict")
def predict_view(name: str) -> Any:
    body = request.get_json()
    result = predict.delay(name, body["inputs"])
    return jsonify({"status": "succeeded", "result": result.get(timeout=10)})
