"""Baseline "in-process Flask": the model called inside the Flask view, no queue at all.

    gunicorn -w 1 -k gthread --threads 32 bench.baselines.inprocess_flask:app
The models load at import (in the gunicorn worker process) from the registry at MLQ_HOME, with MLQ_TORCH_THREADS
torch threads: bare (bench/baselines/bare.py: the JSON list as a float32 tensor, one forward pass) unless
BENCH_BASELINE=predictor.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from bench.baselines.bare import load_models

MODELS = load_models()
app = Flask(__name__)


@app.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@app.post("/v1/models/<name>/predict")
def predict_view(name: str) -> Any:
    body = request.get_json()
    model = MODELS[name]
    return jsonify(
        {
            "status": "succeeded",
            "result": {"model": name, "version": model.version, "predictions": model.predict(body["inputs"])},
        }
    )
