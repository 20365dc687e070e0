"""The pieces of serving an uploaded ONNX model that need no service: the metadata's checks, length buckets and
padding of token ids, scores that carry each text's truncation through a batch's per-request slices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from training.errors import InvalidModel
from training.onnx_metadata import check_file_name, check_metadata
from training.onnx_model import to_scores
from training.onnx_predictor import OnnxPredictor, TextScores
from training.onnx_text import buckets, feed


def test_one_long_text_gets_a_bucket_of_its_own_and_short_ones_are_padded_to_their_own_longest() -> None:
    lengths = [5, 300, 7, 12, 3]
    groups = buckets(lengths)
    assert groups == [[0, 2, 4], [3], [1]]  # ≤ 8, ≤ 16, ≤ 512: the 300-token text pads nobody
    arrays = feed([[1, 2, 3], [4, 5, 6, 7, 8], []], pad_id=0, inputs={"input_ids": "int64", "attention_mask": "int32"})
    assert arrays["input_ids"].tolist() == [[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [0, 0, 0, 0, 0]]
    assert arrays["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert arrays["attention_mask"].dtype == np.int32 and set(arrays) == {"input_ids", "attention_mask"}


def test_truncation_flags_follow_a_requests_slice_of_the_batch_into_its_predictions() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]).view(TextScores)
    scores.truncated = np.array([False, True, False, True])
    second = scores[1:3]  # worker/inference.py slices the batch per request
    assert second.truncated is not None and second.truncated.tolist() == [True, False]
    predictor: Any = OnnxPredictor.__new__(OnnxPredictor)
    predictor.task, predictor.classes = "classification", ["neg", "pos"]
    options = {"output": "label", "top_k": None, "threshold": None, "sort": "none"}
    predictions = predictor.postprocess(second, options)
    assert predictions == [{"row": 0, "label": "pos", "truncated": True}, {"row": 1, "label": "neg"}]


def test_logits_become_probabilities_and_a_regression_column_becomes_values() -> None:
    proba = to_scores(np.array([[0.0, 0.0], [1000.0, 0.0]]), "classification", "logits")
    assert np.allclose(proba, [[0.5, 0.5], [1.0, 0.0]])  # no overflow on large logits
    assert to_scores(np.array([[1.5], [2.5]]), "regression", "values").tolist() == [1.5, 2.5]


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"task": "ranking"}, "task"),
        ({"labels": []}, "labels"),
        ({"labels": ["a", "a"]}, "labels"),
        ({"labels": [True, False]}, "labels"),
        ({"task": "regression", "labels": ["a"]}, "labels"),
        ({"output_kind": "scores"}, "output_kind"),
        ({"features": ["a", ""]}, "features"),
        ({"text": "review", "features": ["a"]}, "features"),
        ({"max_length": 64}, "max_length"),
        ({"text": "review", "max_length": 1}, "max_length"),
        ({"batch": 4}, "batch"),
        ({"batch": True}, "batch"),
        ({"temperature": 2}, "temperature"),
    ],
)
def test_metadata_that_cannot_be_right_is_refused_naming_its_key(metadata: dict[str, Any], key: str) -> None:
    with pytest.raises(InvalidModel) as refused:
        check_metadata(metadata)
    assert refused.value.errors[0]["loc"] == ["metadata", key]


def test_good_metadata_passes_and_external_file_names_are_plain() -> None:
    meta = {"task": "classification", "labels": ["a", 1], "text": "review", "max_length": 128, "batch": 1}
    assert check_metadata(meta) == meta
    assert check_metadata(None) == {}
    assert check_file_name("weights.bin", "external_data") == "weights.bin"
    for bad in ("../weights.bin", "a/b", "model.onnx", "", None, ".hidden"):
        with pytest.raises(InvalidModel):
            check_file_name(bad, "external_data")
