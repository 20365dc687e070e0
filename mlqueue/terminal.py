"""What every `mlq` command shares: JSON and tables on stdout, one-line errors, common options, following a job.

Stdlib + click + the client only: `mlq --help` and the HTTP commands must not import torch.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mlqueue.client import DEFAULT_URL, Client
from mlqueue.progress import JobProgress, terminal_width


class Cli(click.Group):
    """The root group: turns every failure below it into one line on stderr instead of a traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        full_summaries(self)
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # the point of this class: a person reads one line, never a stack trace
            if os.environ.get("MLQ_DEBUG"):
                raise
            message = " ".join(str(exc).split()) or type(exc).__name__
            if not _is_ours(exc):
                message = f"{type(exc).__name__}: {message}"
            click.echo(f"error: {message}", err=True)
            sys.exit(1)


def full_summaries(group: click.Group) -> None:
    """Give every command below `group` its whole first paragraph as the summary its group's --help lists.

    click cuts a summary to fit the terminal ("Train a model on a CSV and register it as the next..."); with a
    `short_help` set it wraps the text instead. Done at start-up, so commands added anywhere are covered.
    """
    for command in group.commands.values():
        if command.short_help is None and command.help:
            command.short_help = " ".join(command.help.split("\n\n")[0].split())
        if isinstance(command, click.Group):
            full_summaries(command)


# The modules the [worker] extra brings; the base install (the client and the API) has none of them.
WORKER_EXTRA = frozenset({"numpy", "pandas", "sklearn", "scipy", "torch", "skops", "safetensors", "joblib"})


def local_module() -> Any:
    """mlqueue.local (the training library in this process), or a UsageProblem saying which extra to install."""
    try:
        from mlqueue import local
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in WORKER_EXTRA:
            raise
        raise UsageProblem(
            f"--local trains and predicts in this process and needs the training libraries "
            f"({exc.name} is not installed): pip install 'mlqueue[worker]', or drop --local to use "
            "the service"
        ) from None
    return local


def _is_ours(exc: Exception) -> bool:
    # Our errors' messages are written for people; anything else gets its class name as context.
    module = type(exc).__module__
    return module.startswith(("mlqueue", "training", "worker")) or isinstance(exc, OSError)


class UsageProblem(click.UsageError):
    """Raised for a bad option value we detect ourselves; printed as one line, exit 2."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def parse_json(option: str, raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageProblem(f"{option} is not valid JSON ({exc}); example: {option} '{{\"epochs\": 5}}'") from None


def json_object(option: str, raw: str | None) -> dict[str, Any] | None:
    value = parse_json(option, raw)
    if value is not None and not isinstance(value, dict):
        raise UsageProblem(f"{option} must be a JSON object like '{{\"epochs\": 5}}', got {raw}")
    return value


def read_rows(path: str) -> list[Any]:
    """Rows from a JSON file (`-` for stdin): a list of rows, or an object with an `inputs` list."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageProblem(f"--input {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("inputs")
    if not isinstance(data, list):
        raise UsageProblem(f'--input {path} must hold a JSON list of rows (or {{"inputs": [...]}})')
    return data


def http_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--url, --token and --json, on every command that talks to the service."""
    f = click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document (for scripts).")(f)
    f = click.option("--token", envvar="MLQ_TOKEN", default=None, help="Bearer token [env MLQ_TOKEN].")(f)
    return click.option(
        "--url", envvar="MLQ_URL", default=DEFAULT_URL, show_default=True, help="The mlqueue API [env MLQ_URL]."
    )(f)


def home_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--home",
        envvar="MLQ_HOME",
        default=".mlqueue",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Artifact store for --local [env MLQ_HOME].",
    )(f)


def finish(client: Client, job: dict[str, Any], as_json: bool, show: str = "result") -> None:
    """Follow a job to its end with a progress line on stderr (fed by its event stream, else by polling); print it
    (or its result); exit 1 unless it succeeded."""
    bar = JobProgress()
    final = job.get("status") in ("succeeded", "failed", "cancelled", "expired")
    if show == "job" or not final:
        bar.update(job)
    if not final:
        try:
            job = client.follow(job["id"], on_progress=bar.update)
        except KeyboardInterrupt:
            bar.close()
            click.echo(f"stopped watching; job {job['id']} keeps running: mlq watch {job['id']}", err=True)
            sys.exit(130)
    bar.close()
    if as_json or show == "job":
        out(job)
    if job["status"] == "succeeded":
        if not (as_json or show == "job"):
            out(job.get("result"))
        return
    error = job.get("error") or {}
    reason = f": {error.get('type', 'error')}: {error.get('message', '')}" if job["status"] == "failed" else ""
    click.echo(f"error: job {job['id']} {job['status']}{reason}", err=True)
    sys.exit(1)


@dataclass(frozen=True)
class Column:
    """A table column: `keep` columns stay whatever the width; the others go, lowest `rank` first, when the
    table would not fit; a `flex` column is cut (with …) down to `min_width` before anything goes. `room` is the
    width kept for values that may come later (a --follow's "succeeded" under a table of "running")."""

    header: str
    rank: int = 0
    keep: bool = False
    flex: bool = False
    min_width: int = 8
    room: int = 0


class Table:
    """Rows laid out once for the terminal's width, then printed; later rows (a --follow) keep the same columns."""

    def __init__(self, columns: list[Column], rows: list[list[Any]], width: int | None) -> None:
        self.columns = columns
        cells = [[c.header for c in columns], *[_texts(row) for row in rows]]
        self.widths: list[int | None] = [max(c.room, *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        self.rows = cells
        if width is not None:
            self._fit(width)

    def _total(self) -> int:
        shown = [w for w in self.widths if w is not None]
        return sum(shown) + 2 * (len(shown) - 1)

    def _fit(self, width: int) -> None:
        for i, column in enumerate(self.columns):  # first cut the flexible columns
            excess = self._total() - width
            current = self.widths[i]
            if excess > 0 and column.flex and current is not None:
                self.widths[i] = min(current, max(column.min_width, current - excess, len(column.header)))
        droppable = sorted((c.rank, i) for i, c in enumerate(self.columns) if not c.keep)
        for _, i in droppable:  # then drop columns, least important first
            if self._total() <= width:
                break
            self.widths[i] = None

    def line(self, row: list[Any]) -> str:
        parts = []
        for value, w in zip(_texts(row), self.widths, strict=True):
            if w is not None:
                parts.append((value if len(value) <= w else value[: max(w - 1, 0)] + "…").ljust(w))
        return "  ".join(parts).rstrip()

    def show(self) -> None:
        for row in self.rows:
            click.echo(self.line(row))


def _texts(row: list[Any]) -> list[str]:
    return ["" if v is None else " ".join(str(v).split()) for v in row]


def stdout_width() -> int | None:
    """The terminal's width when stdout is one (a table must fit it: a wrapped row reads as two); None into a pipe or
    a file, where whole rows are worth more."""
    return terminal_width(sys.stdout) if sys.stdout.isatty() else None


def table(rows: list[list[Any]], header: list[str] | list[Column]) -> Table:
    columns = [c if isinstance(c, Column) else Column(c, keep=True) for c in header]
    laid_out = Table(columns, rows, stdout_width())
    laid_out.show()
    return laid_out
