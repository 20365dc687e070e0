"""Drift reference statistics: what a version's inputs and predictions looked like when it was trained, and the
binning that puts live rows into the very same bins.

The training pipeline stores `reference(...)` in the manifest as `drift_reference`; the inference and batch
workers compile it once per loaded version into a `DriftBinner` and count every batch they score with it. One
binning rule for both sides is the point: a value lands in the same bin at training time and at serving time, so
the population stability index (training/drift_psi.py, stdlib only, for the API) compares like with like.

Bins, in the order of a feature's `counts`:
- number: the training split's decile cut points `edges` (ascending, ties merged, so ≤ 9): bin i holds
  edges[i-1] ≤ x < edges[i], the first and last bins are open-ended (len(edges) + 1 bins), then one bin for
  missing values.
- category: the most frequent training categories (at most MAX_CATEGORIES), then "other" (any category not
  listed, including ones never seen in training), then missing.
- predictions: the test split's predicted classes (one bin per class, in `classes` order); for a regression, its
  predicted values' decile cut points, binned like a number feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FORMAT = 1
DECILES = np.linspace(0.1, 0.9, 9)
MAX_CATEGORIES = 20
NUMBER, CATEGORY, CLASS = "number", "category", "class"


def decile_edges(values: np.ndarray) -> list[float]:
    """The interior decile cut points of the finite values, ties merged (a binary feature keeps 1 or 2)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return []
    return sorted({float(v) for v in np.quantile(finite, DECILES)})


def bin_numbers(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value (see the module doc): len(edges) + 1 for missing (NaN)."""
    index = np.searchsorted(edges, values, side="right")
    index[np.isnan(values)] = len(edges) + 1
    return index


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def bin_categories(values: list[Any], lookup: dict[str, int]) -> np.ndarray:
    """Bin index of each value: its category's, else "other" (len(lookup)), missing last (len(lookup) + 1).

    Values are compared as text, the way training.data.as_categories typed the training frame (1 and "1" are one).
    """
    other = len(lookup)
    return np.fromiter(
        (other + 1 if _missing(v) else lookup.get(str(v), other) for v in values), dtype=np.int64, count=len(values)
    )


def _number_feature(name: str, column: pd.Series) -> dict[str, Any]:
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    edges = decile_edges(values)
    counts = np.bincount(bin_numbers(values, np.asarray(edges)), minlength=len(edges) + 2)
    return {"name": name, "kind": NUMBER, "edges": edges, "counts": counts.tolist()}


def _category_feature(name: str, column: pd.Series) -> dict[str, Any]:
    frequent = column.dropna().astype(str).value_counts(sort=True)
    categories = [str(c) for c in frequent.index[:MAX_CATEGORIES]]
    lookup = {c: i for i, c in enumerate(categories)}
    counts = np.bincount(bin_categories(column.tolist(), lookup), minlength=len(categories) + 2)
    return {"name": name, "kind": CATEGORY, "categories": categories, "counts": counts.tolist()}


def reference(
    x_train: pd.DataFrame, feature_dtypes: dict[str, str], test_scores: np.ndarray, classes: list[Any] | None
) -> dict[str, Any]:
    """The manifest's `drift_reference` for raw training rows `x_train` (the training split, before
    preprocessing) and the test split's scores (class probabilities (n, K), or regression values (n,))."""
    features = [
        _number_feature(name, x_train[name]) if dtype == NUMBER else _category_feature(name, x_train[name])
        for name, dtype in feature_dtypes.items()
        if name in x_train.columns
    ]
    return {
        "format": FORMAT,
        "rows": len(x_train),
        "features": features,
        "predictions": _predictions(test_scores, classes),
    }


def _predictions(scores: np.ndarray, classes: list[Any] | None) -> dict[str, Any]:
    if classes is not None:
        counts = (
            np.bincount(np.argmax(scores, axis=1), minlength=len(classes)) if len(scores) else np.zeros(len(classes))
        )
        return {"kind": CLASS, "classes": list(classes), "counts": [int(c) for c in counts], "rows": len(scores)}
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    edges = decile_edges(values)
    counts = np.bincount(bin_numbers(values, np.asarray(edges)), minlength=len(edges) + 2)
    return {"kind": NUMBER, "edges": edges, "counts": counts.tolist(), "rows": len(values)}


class DriftBinner:
    """A stored reference compiled for live counting: rows and scores in, {field: count} out.

    Fields: "n" (rows), "<j>.<b>" (feature j of the reference, bin b), "p.<b>" (prediction bin b). Every number
    feature is binned in one vectorised comparison against a padded (features × 9) matrix of cut points.
    """

    def __init__(self, stored: dict[str, Any], features: list[str]) -> None:
        position = {name: i for i, name in enumerate(features)}
        specs = [f for f in stored["features"] if f["name"] in position]
        self.numbers = [(stored["features"].index(f), position[f["name"]], f) for f in specs if f["kind"] == NUMBER]
        self.categories = [
            (stored["features"].index(f), f["name"], position[f["name"]], {c: i for i, c in enumerate(f["categories"])})
            for f in specs
            if f["kind"] == CATEGORY
        ]
        width = max((len(f["edges"]) for _, _, f in self.numbers), default=0)
        # +inf pads a short row of cut points: no finite value is ≥ it, so it never moves a value up a bin.
        self.edges = np.full((len(self.numbers), width), np.inf)
        for k, (_, _, f) in enumerate(self.numbers):
            self.edges[k, : len(f["edges"])] = f["edges"]
        self.missing_bin = np.array([len(f["edges"]) + 1 for _, _, f in self.numbers], dtype=np.int64)
        sizes = [len(f["edges"]) + 2 for _, _, f in self.numbers]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, int)
        self.number_fields = [
            f"{j}.{b}" for (j, _, _), size in zip(self.numbers, sizes, strict=True) for b in range(size)
        ]
        self.number_names = [f["name"] for _, _, f in self.numbers]
        self.number_columns = [col for _, col, _ in self.numbers]
        pred = stored["predictions"]
        self.pred_kind = pred["kind"]
        self.pred_edges = np.asarray(pred.get("edges") or [], dtype=np.float64)
        self.n_classes = len(pred.get("classes") or [])

    def _number_matrix(self, rows: list[Any]) -> np.ndarray:
        if rows and isinstance(rows[0], dict):
            cells = [[row.get(name) for name in self.number_names] for row in rows]
        else:
            cells = [[row[c] for c in self.number_columns] for row in rows]
        return np.array(cells, dtype=np.float64).reshape(len(rows), len(self.numbers))

    def count(self, rows: list[Any], scores: np.ndarray) -> dict[str, int]:
        """The bins of `rows` (as the Predictor accepted them) and of their `scores` (as Predictor.scores gave)."""
        fields: dict[str, int] = {"n": len(rows)} if rows else {}
        if not rows:
            return fields
        if self.numbers:
            x = self._number_matrix(rows)
            bins = (x[:, :, None] >= self.edges[None, :, :]).sum(axis=2)
            bins = np.where(np.isnan(x), self.missing_bin[None, :], bins)
            flat = np.bincount((bins + self.offsets[None, :]).ravel(), minlength=len(self.number_fields))
            for i in np.flatnonzero(flat).tolist():
                fields[self.number_fields[i]] = int(flat[i])
        for j, name, col, lookup in self.categories:
            values = [row.get(name) for row in rows] if isinstance(rows[0], dict) else [row[col] for row in rows]
            for b, n in enumerate(np.bincount(bin_categories(values, lookup)).tolist()):
                if n:
                    fields[f"{j}.{b}"] = n
        for b, n in enumerate(self._prediction_bins(scores).tolist()):
            if n:
                fields[f"p.{b}"] = n
        return fields

    def _prediction_bins(self, scores: np.ndarray) -> np.ndarray:
        if self.pred_kind == CLASS:
            return np.bincount(np.argmax(scores, axis=1), minlength=self.n_classes) if len(scores) else np.zeros(0, int)
        return np.bincount(bin_numbers(np.asarray(scores, dtype=np.float64).reshape(-1), self.pred_edges))


def for_training(
    model: Any, x_train: pd.DataFrame, feature_dtypes: dict[str, str], x_test: np.ndarray, classes: list[Any] | None
) -> dict[str, Any]:
    """The reference of a freshly fitted `model`: `x_train` raw, `x_test` preprocessed (as the model takes it)."""
    if classes is not None:
        proba = model.predict_proba(x_test) if len(x_test) else np.zeros((0, len(classes)))
        if proba is None:  # a classifier without probabilities: its label is the prediction
            proba = np.eye(len(classes))[np.asarray(model.predict(x_test), dtype=np.int64)]
        scores = np.asarray(proba, dtype=np.float64)
    else:
        scores = np.asarray(model.predict(x_test), dtype=np.float64) if len(x_test) else np.zeros(0)
    return reference(x_train, feature_dtypes, scores, classes)
