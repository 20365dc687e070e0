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


def trials_table(job: dict[str, Any]) -> Table:
    """The search's trials as a table, from its progress (while it runs) or its result (once it ended)."""
    result = job.get("result") or {}
    progress = job.get("progress") or {}
    trials = result.get("trials") or progress.get("trials") or []
    metric = result.get("metric") or progress.get("metric") or "score"
    rank_by = result.get("rank_by") or progress.get("rank_by") or ""
    title = f"search {job['id']} · {job['status']}"
    if progress.get("message"):
        title += f" · {progress['message']}"
    table = Table(title=title, title_justify="left", expand=False)
    for name, justify in (
        ("#", "right"),
        ("algorithm", "left"),
        ("params", "left"),
        ("status", "left"),
        (f"{rank_by} {metric}".strip(), "right"),
        ("seconds", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    best = result.get("best", {}) or progress.get("best") or {}
    for row in trials:
        status = row.get("status") or "queued"
        score = row.get("score")
        marker = " *" if best and row.get("trial") == best.get("trial") and score is not None else ""
        table.add_row(
            str(row.get("trial")),
            str(row.get("algorithm")),
            json.dumps(row.get("params") or {}, separators=(",", ":")),
            f"[{STATUS_STYLE.get(status, '')}]{status}[/]",
            "" if score is None else f"{score:.4f}{marker}",
            "" if row.get("duration_s") is None else f"{row['duration_s']:.1f}",
        )
    return table


def follow_search(client: Client, job: dict[str, Any], as_json: bool) -> None:
    """Show the live table until the search ends; print the result; exit 1 unless it succeeded."""
    console = Console(stderr=True)
    live_view = console.is_terminal
    try:
        if live_view:
            with Live(trials_table(job), console=console, refresh_per_second=4) as live:
                job = client.wait(job["id"], step=1.0, on_progress=lambda j: live.update(trials_table(j)))
        else:
            job = client.wait(job["id"], step=5.0)
    except KeyboardInterrupt:
        click.echo(f"stopped watching; search {job['id']} keeps running: mlq watch {job['id']}", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(job, indent=2, default=str))
    else:
        Console(width=160).print(trials_table(job))
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
