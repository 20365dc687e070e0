"""Imbalanced classes: per-class precision, recall and F1, and a warning for classes too rare to learn well.

Macro averages (training/metrics.py) hide which class a model gets wrong; a 95/5 dataset can score 0.95 accuracy
by never predicting the rare class. These numbers and the warning make that visible in every result and manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

RARE_CLASS_SHARE = 0.05  # a class under this share of the rows gets a warning


def per_class_metrics(y_true: Any, y_pred: Any, classes: list[Any]) -> dict[str, dict[str, Any]]:
    """{label: {"precision", "recall", "f1", "support"}} on class codes 0..len(classes)-1, keyed by label text."""
    labels = list(range(len(classes)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64), labels=labels, zero_division=0
    )
    return {
        str(classes[i]): {
            "precision": round(float(precision[i]), 6),
            "recall": round(float(recall[i]), 6),
            "f1": round(float(f1[i]), 6),
            "support": int(support[i]),
        }
        for i in labels
    }


def rare_class_warnings(y_codes: Any, classes: list[Any], share: float = RARE_CLASS_SHARE) -> list[str]:
    """One sentence per class with under `share` of the rows, saying what to do about it."""
    counts = np.bincount(np.asarray(y_codes, dtype=np.int64), minlength=len(classes))
    total = int(counts.sum())
    warnings = []
    for code, count in enumerate(counts.tolist()):
        if total and count / total < share:
            warnings.append(
                f"class {classes[code]!r} has {count} of {total} rows ({100 * count / total:.1f} %, "
                f"under {100 * share:g} %): its recall may be poor; consider params.class_weight "
                '"balanced", more rows of it, and its per-class metrics'
            )
    return warnings
