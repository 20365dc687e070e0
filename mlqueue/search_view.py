"""`mlq search`'s live table of trials (rich): one row per trial, best first, redrawn as the search progresses.

On a terminal the table is redrawn in place on stderr; elsewhere (a pipe, CI) only the final table is printed, so
logs are not flooded. Data stays on stdout: the final result as JSON with --json, else the final table.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from mlqueue.client import Client

STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan", "queued": "dim"}


def trials_table(job: dict[str, Any], width: int | None = None) -> Table:
    """The search's trials as a table, from its progress (while it runs) or its result (once it ended), within
    `width` columns (a terminal's): one line per trial."""
    result = job.get("result") or {}
    progress = job.get("progress") or {}
    trials = result.get("trials") or progress.get("trials") or []
    metric = result.get("metric") or progress.get("metric") or "score"
    rank_by = result.get("rank_by") or progress.get("rank_by") or ""
    title = f"search {job['id']} · {job['status']}"
    if progress.get("message"):
        title += f" · {progress['message']}"
    table = Table(title=title, title_justify="left", expand=False)
    # One line per trial, always: the params cell is the one that gives way (cut with …), and the parameters that
    # vary between trials come first in it, so a narrow terminal still shows what the search searched.
    score = f"{rank_by} {metric}".strip()
    algorithm_width = min(19, max([9, *(len(str(row.get("algorithm"))) for row in trials)]))
    # The params cell takes what the other columns leave of the width (6 columns: 7 rules and 12 padding spaces).
    others = len(str(len(trials))) + algorithm_width + len("cancelled") + max(8, len(score)) + len("seconds")
    params_width = max(12, (width or 160) - others - 19)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("algorithm", no_wrap=True, overflow="ellipsis", max_width=algorithm_width)
    table.add_column("params", no_wrap=True, overflow="ellipsis", max_width=params_width)
    table.add_column("status", no_wrap=True)
    table.add_column(score, justify="right", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    varying = varying_params(trials)
    best = result.get("best", {}) or progress.get("best") or {}
    for row in trials:
        status = row.get("status") or "queued"
        score = row.get("score")
        marker = " *" if best and row.get("trial") == best.get("trial") and score is not None else ""
        table.add_row(
            str(row.get("trial")),
            str(row.get("algorithm")),
            params_text(row.get("params") or {}, varying),
            f"[{STATUS_STYLE.get(status, '')}]{status}[/]",
            "" if score is None else f"{score:.4f}{marker}",
            "" if row.get("duration_s") is None else f"{row['duration_s']:.1f}",
        )
    return table


def varying_params(trials: list[dict[str, Any]]) -> list[str]:
    """The parameter names whose values differ between trials: what the search searched."""
    seen: dict[str, set[str]] = {}
    for row in trials:
        for key, value in (row.get("params") or {}).items():
            seen.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
    return sorted(key for key, values in seen.items() if len(values) > 1)


def params_text(params: dict[str, Any], varying: list[str]) -> str:
    """`lr=0.01 hidden=64 · epochs=20 …`: the varying parameters first, then the fixed ones."""

    def show(key: str) -> str:
        value = params[key]
        return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={json.dumps(value, separators=(',', ':'))}"

    first = [show(k) for k in varying if k in params]
    rest = [show(k) for k in params if k not in varying]
    return " ".join(first + (["·", *rest] if first and rest else rest))


def follow_search(client: Client, job: dict[str, Any], as_json: bool) -> None:
    """Show the live table until the search ends; print the result; exit 1 unless it succeeded."""
    console = Console(stderr=True)
    live_view = console.is_terminal
    output = Console()  # stdout: the terminal's width on a terminal; into a file, wide enough for whole rows
    if not output.is_terminal:
        output = Console(width=160)
    try:
        if live_view:
            # transient: the live table is cleared at the end, so the final one is printed once (below), not twice.
            with Live(trials_table(job, console.width), console=console, refresh_per_second=4, transient=True) as live:
                job = client.wait(
                    job["id"], step=1.0, on_progress=lambda j: live.update(trials_table(j, console.width))
                )
        else:
            job = client.wait(job["id"], step=5.0)
    except KeyboardInterrupt:
        click.echo(f"stopped watching; search {job['id']} keeps running: mlq watch {job['id']}", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(job, indent=2, default=str))
    else:
        output.print(trials_table(job, output.width))
    result = job.get("result") or {}
    if job["status"] == "succeeded":
        click.echo(
            f"registered {result.get('model')} version {result.get('version')} "
            f"(trial {(result.get('best') or {}).get('trial')})",
            err=True,
        )
        return
    error = job.get("error") or {}
    click.echo(f"error: search {job['id']} {job['status']}: {error.get('message', '')}", err=True)
    sys.exit(1)
