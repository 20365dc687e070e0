"""The comparison of an optimize job's result as a table: parent beside child, and what changed."""

from __future__ import annotations

from typing import Any

ROWS = (
    ("artifact_bytes", None, "artifact bytes"),
    ("latency_ms", "1", "latency 1 row (ms)"),
    ("latency_ms", "64", "latency 64 rows (ms)"),
    ("model_latency_ms", "1", "model 1 row (ms)"),
    ("model_latency_ms", "64", "model 64 rows (ms)"),
)
METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall", "rmse", "mae", "r2")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _ratio(parent: Any, child: Any, smaller: str) -> str:
    if not isinstance(parent, int | float) or not isinstance(child, int | float) or not parent or not child:
        return ""
    ratio = parent / child
    worse = "larger" if smaller == "smaller" else "slower"
    return f"{ratio:.2f}x {smaller}" if ratio >= 1 else f"{1 / ratio:.2f}x {worse}"


def comparison_rows(result: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """(rows, header) of the table `mlq optimize` prints."""
    comparison = result.get("comparison") or {}
    parent, child = comparison.get("parent") or {}, comparison.get("child") or {}
    header = ["", f"PARENT v{result.get('parent')}", f"CHILD v{result.get('version')}", "CHANGE"]
    rows: list[list[str]] = []
    for key, sub, label in ROWS:
        p, c = parent.get(key), child.get(key)
        if sub is not None:
            p, c = (p or {}).get(sub), (c or {}).get(sub)
        if p is None and c is None:
            continue
        rows.append([label, _cell(p), _cell(c), _ratio(p, c, "smaller" if key == "artifact_bytes" else "faster")])
    pm, cm = parent.get("metrics") or {}, child.get("metrics") or {}
    for name in METRICS:
        if isinstance(pm.get(name), int | float) and isinstance(cm.get(name), int | float):
            rows.append([f"test {name}", _cell(pm[name]), _cell(cm[name]), f"{cm[name] - pm[name]:+.4f}"])
    return rows, header


def summary(result: dict[str, Any]) -> str:
    """One line under the table: the method and what it reported (sparsity, export inputs)."""
    opt = result.get("optimization") or {}
    extra = []
    if "sparsity" in opt:
        extra.append(f"sparsity {opt['sparsity']:.1%}")
    if "inputs" in opt:
        extra.append(f"{opt.get('format')} file, {opt['inputs']} inputs (download: GET .../artifact)")
    return f"{result.get('method')} {result.get('params')}" + (f"; {'; '.join(extra)}" if extra else "")
