"""W7 (the Open Inference Protocol against /v1 predict) and WP (W1b under a few per-model batching policies),
measured in the same run on the same stack as W1b; tables printed by `tables()`.

W7: mlp-wide, one row per request, 32 connections: `/v1` predict (JSON rows), `/v2` infer with a JSON [1, 256]
tensor, and `/v2` infer with Triton's binary tensor extension (a 1 KB float32 body after a small JSON header, and
the outputs asked as binary: what tritonclient sends by default).
WP: W1b through /v1 predict with `PUT /v1/models/mlp-wide/serving` set to each (max_batch_size,
max_queue_delay_ms) in turn: the latency/throughput curve of the batching policy.
"""

from __future__ import annotations

import argparse
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx

MODEL = "mlp-wide"
HEADER = "Inference-Header-Content-Length"
POLICIES = ((1, 0.0), (8, 1.0), (16, 2.0), (64, 2.0), (64, 10.0))  # (64, 2 ms): the defaults


def oip_json(row: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}


def oip_binary(row: list[float]) -> tuple[bytes, dict[str, str]]:
    blob = struct.pack(f"<{len(row)}f", *row)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, len(row)],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + blob, {"Content-Type": "application/octet-stream", HEADER: str(len(header))}


def check(url: str, row: list[float]) -> None:
    """Both /v2 bodies answer 200 before they are measured (a benchmark of 400s would mean nothing)."""
    answer = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=oip_json(row), timeout=60)
    assert answer.status_code == 200, answer.text
    body, headers = oip_binary(row)
    answer = httpx.post(f"{url}/v2/models/{MODEL}/infer", content=body, headers=headers, timeout=60)
    assert answer.status_code == 200 and HEADER in answer.headers, answer.text


def w7(url: str, row: list[float], measure: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """`measure(url, body, headers)` runs one wrk measurement (headers None: /v1's JSON and Prefer: wait)."""
    check(url, row)
    infer = f"{url}/v2/models/{MODEL}/infer"
    body, headers = oip_binary(row)
    runs: dict[str, tuple[str, Any, dict[str, str] | None]] = {
        "v1_predict": (f"{url}/v1/models/{MODEL}/predict", {"inputs": [row]}, None),
        "v2_json": (infer, oip_json(row), {"Content-Type": "application/json"}),
        "v2_binary": (infer, body, headers),
    }
    # Two rounds, interleaved (A B C A B C): on a shared machine the load drifts within a minute; each side keeps
    # the better of its two runs.
    out: dict[str, Any] = {}
    for round_ in (1, 2):
        for name, (to, sent, sent_headers) in runs.items():
            print(f"W7 round {round_}: {name} ...", flush=True)
            result = measure(to, sent, sent_headers)
            if name not in out or result["rps"] > out[name]["rps"]:
                out[name] = result
    return out


def policies(
    url: str, row: list[float], args: argparse.Namespace, measure: Callable[..., dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    body = {"inputs": [row]}
    for size, delay in POLICIES:
        setting = {"max_batch_size": size, "max_queue_delay_ms": delay}
        answer = httpx.put(f"{url}/v1/models/{MODEL}/serving", json=setting, timeout=30)
        assert answer.status_code == 200, answer.text
        print(f"WP W1b with max_batch_size={size}, max_queue_delay_ms={delay} ...", flush=True)
        out[f"{size}/{delay:g}"] = measure(f"{url}/v1/models/{MODEL}/predict", body, None)
    httpx.put(f"{url}/v1/models/{MODEL}/serving", json={"reset": True}, timeout=30)
    return out


def _row(name: str, r: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    ratio = f"{r['rps'] / base['rps']:.2f}x" if base and base.get("rps") else ""
    batch = r.get("mean_batch") or ""
    cpu = r.get("cpu_ms_per_request", {}).get("api", "")
    return f"| {name} | {r['rps']:.0f} | {ratio} | {r['p50_ms']} | {r['p99_ms']} | {r['non_200']} | {batch} | {cpu} |"


def tables(out: dict[str, Any]) -> str:
    lines = []
    if "W7" in out:
        w = out["W7"]
        head = "| W7 (mlp-wide, 1 row) | req/s | vs /v1 | p50 ms | p99 ms | non-200 | mean batch | API CPU ms/req |"
        lines += [head, "|---|---|---|---|---|---|---|---|"]
        lines.append(_row("/v1 predict", w["v1_predict"]))
        lines.append(_row("/v2 infer, JSON tensor", w["v2_json"], w["v1_predict"]))
        lines.append(_row("/v2 infer, binary tensor", w["v2_binary"], w["v1_predict"]))
    if "WP" in out:
        lines += [
            "",
            "| WP: W1b, max_batch_size / max_queue_delay_ms | req/s | vs 64/2 | p50 ms | p99 ms | non-200 | "
            "mean batch | API CPU ms/req |",
            "|---|---|---|---|---|---|---|---|",
        ]
        base = out["WP"].get("64/2")
        for name, r in out["WP"].items():
            lines.append(_row(name, r, base))
    return "\n".join(lines)
