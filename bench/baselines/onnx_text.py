"""W10's baseline: the tiny text classifier served in-process, onnxruntime per request (no queue, no batching).

    gunicorn -w 1 -k gthread --threads 32 bench.baselines.onnx_text:app
BENCH_TEXT_MODEL names a folder with model.onnx and tokenizer.json (tests/onnx_models.py writes one). What a
careful user writes: the tokenizer and one session loaded at start (one intra-op thread, as mlqueue's worker),
per request the text tokenized (truncated to the model's length), one run, a softmax, the label.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request
from tokenizers import Tokenizer

FOLDER = Path(os.environ.get("BENCH_TEXT_MODEL", "reviews"))
LABELS = ["negative", "positive"]
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
SESSION = ort.InferenceSession(str(FOLDER / "model.onnx"), options, providers=["CPUExecutionProvider"])
TOKENIZER = Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
TOKENIZER.enable_truncation(int(os.environ.get("BENCH_TEXT_MAX_LENGTH", "32")))
app = Flask(__name__)


@app.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@app.post("/v1/models/<name>/predict")
def predict_view(name: str) -> Any:
    texts = [row["review"] for row in request.get_json()["inputs"]]
    predictions = []
    for i, encoding in enumerate(TOKENIZER.encode_batch(texts)):
        ids = np.array([encoding.ids], dtype=np.int64)
        (logits,) = SESSION.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        exp = np.exp(logits[0] - logits[0].max())
        proba = exp / exp.sum()
        predictions.append({"row": i, "label": LABELS[int(proba.argmax())], "proba": proba.tolist()})
    return jsonify({"status": "succeeded", "result": {"model": name, "predictions": predictions}})
