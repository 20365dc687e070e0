"""The table `python -m bench` prints: one row per workload and system, ratios against the bare baselines, then
the API-cost line, W4's CPU per request, W3, W2, row P and idle."""

from __future__ import annotations

from typing import Any

from bench import preprocessing, traffic


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


SYSTEMS = {
    "mlqueue": "mlqueue",
    "naive_celery": "naive Celery (bare)",
    "inprocess_flask": "in-process Flask (bare)",
    "naive_celery_predictor": "naive Celery (Predictor, extra)",
    "inprocess_flask_predictor": "in-process Flask (Predictor, extra)",
}


def per_process(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


def table(out: dict[str, Any]) -> str:
    lines = [
        "| workload | system | req/s | p50 ms | p99 ms | errors (non-2xx / non-200) | mean batch | CPU % per "
        "process | CPU ms per request | req/s vs naive | p99 vs naive | req/s vs in-process |",
        "|" + "---|" * 12,
    ]
    for workload in ("W1", "W1b"):
        # The ratios are against the bare baselines (BENCHMARK.md's targets); Predictor rows are for reference.
        naive = out[workload].get("naive_celery", {})
        inproc = out[workload].get("inprocess_flask", {})
        for system, label in SYSTEMS.items():
            r = out[workload].get(system)
            if not r:
                continue
            lines.append(
                f"| {workload} | {label} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['non_2xx']} / {r['non_200']} | {r.get('mean_batch') or '-'} | "
                f"{per_process(r['cpu_pct'])} | {per_process(r.get('cpu_ms_per_request', {}))} | "
                f"{ratio(r['rps'], naive.get('rps'))} | {ratio(r['p99_ms'], naive.get('p99_ms'))} | "
                f"{ratio(r['rps'], inproc.get('rps'))} |"
            )
    for config, r in out.get("W4", {}).items():
        lines.append(
            f"| W4 | mlqueue {config} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['non_2xx']} / {r['non_200']} | {r.get('mean_batch') or '-'} | {per_process(r['cpu_pct'])} | "
            f"{per_process(r.get('cpu_ms_per_request', {}))} | | | "
            f"{ratio(r['rps'], out['W4']['api1_workers1']['rps'])} vs 1 worker |"
        )
    lines += api_cost(out) + w4_cpu(out) + traffic.lines(out)
    w3 = out.get("W3")
    if w3:
        lines.append(
            f"\nW3 ({w3['rows']} x 32, 5 epochs): through the queue {w3['queue_s']} s, in-process "
            f"{w3['inprocess_s']} s: overhead {w3['overhead_pct']} % (the job's own duration_s "
            f"{w3['job_duration_s']} s: the queue's share is {w3['queue_s'] - (w3['job_duration_s'] or 0):.3f}"
            " s)"
        )
    if "W2" in out:
        lines.append(
            "W2 rows/s (one torch thread): "
            + ", ".join(
                f"{k} {v['rows_per_s']:.0f} ({v['ms_per_call']} ms/call, {v.get('cpu_ms_per_call')} ms CPU)"
                for k, v in out["W2"].items()
            )
        )
    if "P" in out:
        lines.append(preprocessing.line(out["P"]))
    if "idle" in out:
        lines.append(f"Idle: {out['idle']}")
    return "\n".join(lines)


def api_cost(out: dict[str, Any]) -> list[str]:
    """The target "API CPU per predict request <= 1.3x the bare in-process view's, minus its forward pass"."""
    lines = []
    for workload, model in (("W1", "mlp32"), ("W1b", "mlp-wide")):
        mine = out[workload].get("mlqueue", {}).get("cpu_ms_per_request", {}).get("api")
        bare = out[workload].get("inprocess_flask", {}).get("cpu_ms_per_request", {}).get("api")
        forward = out.get("W2", {}).get(f"{model}/1", {}).get("cpu_ms_per_call")
        if mine and bare and forward:
            view = bare - forward
            lines.append(
                f"API CPU per request, {workload}: mlqueue {mine:.3f} ms vs the bare view {bare:.3f} ms "
                f"- forward {forward:.3f} ms = {view:.3f} ms: {mine / view:.2f}x (target <= 1.3x)"
            )
    return ["", *lines] if lines else []


def w4_cpu(out: dict[str, Any]) -> list[str]:
    runs = out.get("W4_cpu")
    if not runs:
        return []
    lines = [
        "",
        "W4 CPU per request (mlp-wide, 1 API process, 1 worker, paced load below saturation):",
        "",
        "| offered req/s | measured req/s | p50 ms | p99 ms | mean batch | CPU ms per request | "
        "one API process sustains | one worker sustains | Redis sustains |",
        "|" + "---|" * 9,
    ]
    for r in runs.values():
        can = r["sustainable_rps"]
        lines.append(
            f"| {r['offered_rps']:.0f} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r.get('mean_batch') or '-'} | {per_process(r['cpu_ms_per_request'])} | {can['api']} req/s | "
            f"{can['worker']} req/s | {can['redis']} req/s |"
        )
    return lines
