"""Baseline "in-process Flask": the model called inside the Flask view, no queue at all.

    gunicorn -w 1 -k gthread --threads 32 bench.baselines.inprocess_flask:app
The models load at import (in the gunicorn worker process) through training.predictor.Predictor from the
registry at MLQ_HOME, with MLQ_TORCH_THREADS torch threads, so the same preprocessing runs as in mlqueue.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from flask import Flask, jsonify, request

from training.predictor import Predictor
from training.registry import ModelRegistry
from worker.settings import Settings

settings = Settings.from_env()
torch.set_num_threads(settings.torch_threads)
registry = ModelRegistry(settings.models_dir, secret_key=settings.secret_key or None)
PREDICTORS = {name: Predictor.load(registry, "default", name)
              for name in os.environ.get("BENCH_MODELS", "mlp32,mlp-wide").split(",")}
app = Flask(__name__)


@app.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@app.post("/v1/models/<name>/predict")
def predict_view(name: str) -> Any:
    body = request.get_json()
    predictor = PREDICTORS[name]
    predictions = predictor.predict(body["inputs"], body.get("postprocess"))
    return jsonify({"status": "succeeded", "result": {"model": name, "version": predictor.version,
                                                      "predictions": predictions}})
