"""`mlq`: train and serve models, locally in-process or through the mlqueue service.

Data (JSON, tables) goes to stdout, progress and messages to stderr; errors print one line and exit non-zero
(1: the request or the job failed, 2: bad usage, 130: interrupted). Environment variables are read here, at the
edge: MLQ_URL, MLQ_TOKEN, MLQ_HOME. Training modules (torch, pandas) are imported only by the `--local` paths.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from mlqueue.client import Client
from mlqueue.progress import epoch_text
from mlqueue.terminal import (
    Cli,
    Column,
    UsageProblem,
    finish,
    home_option,
    http_options,
    json_object,
    local_module,
    out,
    read_rows,
    table,
)
from mlqueue.train_data import check_before_upload, dataset_for


def secret_key() -> str | None:
    # Local models are signed like the service's when MLQ_SECRET_KEY is set, so either side can load them.
    return os.environ.get("MLQ_SECRET_KEY") or None


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="mlqueue", prog_name="mlq")
def cli() -> None:
    """mlqueue: train and serve ML models through Redis queues (or --local, in this process)."""


def main() -> None:
    """The `mlq` entry point."""
    cli(prog_name="mlq")


# -- training and prediction ----------------------------------------------------------------------------------


@cli.command()
@click.option("--local", is_flag=True, help="Train in this process (needs the [worker] extra), no service.")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A CSV file.")
@click.option("--dataset", help="The id of an uploaded dataset (service only).")
@click.option("--target", required=True, help="The column to predict.")
@click.option("--algorithm", required=True, help="logistic_regression, random_forest, mlp, ...")
@click.option("--model", "model_name", required=True, help="The model name to register a version of.")
@click.option("--task", type=click.Choice(["classification", "regression"]), help="Default: inferred.")
@click.option("--features", help="Comma-separated feature columns (default: all but the target).")
@click.option("--params", help="Algorithm parameters as JSON, e.g. '{\"epochs\": 5}'.")
@click.option("--preprocessing", help='JSON, e.g. \'{"missing": "drop", "scale": true}\'.')
@click.option("--split", help='JSON, e.g. \'{"test": 0.2, "seed": 1}\'.')
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where to train (default auto).")
@click.option("--wait", "wait_", is_flag=True, help="Follow the job until it ends (service only).")
@click.option("--idempotency-key", help="Resubmitting with the same key returns the same job.")
@click.option("--warm-start", help="mlp only: continue from a version, e.g. 'flowers:3' (service only).")
@home_option
@http_options
def train(
    local: bool,
    data: Path | None,
    dataset: str | None,
    target: str,
    algorithm: str,
    model_name: str,
    task: str | None,
    features: str | None,
    params: str | None,
    preprocessing: str | None,
    split: str | None,
    device: str | None,
    wait_: bool,
    idempotency_key: str | None,
    warm_start: str | None,
    home: Path,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Train a model on a CSV and register it as the next version of --model."""
    options: dict[str, Any] = {
        "target": target,
        "algorithm": algorithm,
        "task": task,
        "features": [f.strip() for f in features.split(",") if f.strip()] if features else None,
        "params": json_object("--params", params),
        "preprocessing": json_object("--preprocessing", preprocessing),
        "split": json_object("--split", split),
    }
    if local:
        if data is None or dataset:
            raise UsageProblem("--local trains on a file: give --data FILE.csv (not --dataset)")
        in_process = local_module()  # torch, pandas: only now

        def on_progress(**progress: Any) -> None:
            click.echo(epoch_text(progress), err=True)

        out(in_process.train(home, secret_key(), data, model_name, device or "auto", on_progress, options))
        return
    if bool(data) == bool(dataset):
        raise UsageProblem("give exactly one of --data FILE.csv (uploaded first) or --dataset ID")
    if data is not None:
        check_before_upload(data, options)
    with Client(url, token) as client:
        if data is not None:
            dataset = dataset_for(client, data)  # an identical earlier upload (same sha256) is reused
        assert dataset is not None
        job = client.train(
            model_name,
            dataset,
            device=device,
            idempotency_key=idempotency_key,
            warm_start=_warm_start(warm_start),
            **options,
        )
        if not wait_:
            out(job)
            click.echo(f"queued job {job['id']}; follow it with: mlq watch {job['id']}", err=True)
            return
        click.echo(f"queued job {job['id']}", err=True)
        finish(client, job, as_json)


@cli.command()
@click.argument("model")
@click.option(
    "--input", "input_path", required=True, help='JSON file of rows (a list, or {"inputs": [...]}); - for stdin.'
)
@click.option("--version", "version", help="A version number or alias (default: production, else latest).")
@click.option("--postprocess", help='JSON, e.g. \'{"output": "both", "top_k": 2}\'.')
@click.option("--local", is_flag=True, help="Predict in this process from the local artifact store.")
@home_option
@http_options
def predict(
    model: str,
    input_path: str,
    version: str | None,
    postprocess: str | None,
    local: bool,
    home: Path,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Predict rows with a model and print {"model", "version", "predictions"}."""
    rows = read_rows(input_path)
    post = json_object("--postprocess", postprocess)
    if local:
        in_process = local_module()  # torch, pandas: only now

        out(in_process.predict(home, secret_key(), model, version, rows, post))
        return
    with Client(url, token) as client:
        finish(client, client.predict(model, rows, version=version, postprocess=post, wait=30), as_json)


@cli.command("batch-predict")
@click.argument("model")
@click.option(
    "--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A CSV file: uploaded, then scored."
)
@click.option("--dataset", help="The id of an uploaded dataset instead.")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the predictions.",
)
@click.option("--version", "version", help="A version number or alias (default: production, else latest).")
@click.option(
    "--output",
    type=click.Choice(["label", "proba", "both"]),
    help="Classification: the label, one probability column per class, or both (default).",
)
@click.option("--columns", help="Comma-separated dataset columns copied into the output first, e.g. an id.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet"]),
    help="Default: parquet when --out ends in .parquet, else csv.",
)
@click.option("--idempotency-key", help="Resubmitting with the same key returns the same job.")
@http_options
def batch_predict(
    model: str,
    data: Path | None,
    dataset: str | None,
    out_path: Path,
    version: str | None,
    output: str | None,
    columns: str | None,
    fmt: str | None,
    idempotency_key: str | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Score a whole CSV on the batch workers: upload, run, follow, download to --out."""
    if bool(data) == bool(dataset):
        raise UsageProblem("give exactly one of --data FILE.csv (uploaded first) or --dataset ID")
    fmt = fmt or ("parquet" if out_path.suffix.lower() == ".parquet" else "csv")
    with Client(url, token) as client:
        if data is not None:
            dataset = dataset_for(client, data)  # an identical earlier upload is reused (same sha256)
        assert dataset is not None
        job = client.batch_predict(
            model,
            dataset,
            version=version,
            postprocess={"output": output} if output else None,
            columns=[c.strip() for c in columns.split(",") if c.strip()] if columns else None,
            format=fmt,
            idempotency_key=idempotency_key,
        )
        click.echo(f"queued job {job['id']}", err=True)
        finish(client, job, as_json)  # exits 1 unless it succeeded
        client.download_output(job["id"], out_path)
        click.echo(f"wrote {out_path}", err=True)


def _warm_start(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    name, _, version = raw.partition(":")
    return {"model": name, "version": int(version) if version.isdigit() else (version or None)}


@cli.command()
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A CSV file.")
@click.option("--dataset", help="The id of an uploaded dataset.")
@click.option("--target", required=True, help="The column to predict.")
@click.option("--model", "model_name", required=True, help="The best trial is registered as a version of it.")
@click.option("--algorithm", help="The algorithm whose params --search varies.")
@click.option(
    "--search",
    "space",
    help="""A grid '{"lr": [0.01, 0.001]}' or '{"strategy": "random", "trials": 20,
              "seed": 0, "space": {"lr": {"log_uniform": [1e-4, 0.1]}}}'.""",
)
@click.option(
    "--algorithms",
    help="""Several algorithms, each with its space: '{"logistic_regression": {"C": [0.1, 1]},
              "random_forest": {}}'.""",
)
@click.option("--params", help="Fixed params of every trial, as JSON.")
@click.option("--metric", help="What to optimise (default f1, or rmse for regression).")
@click.option("--direction", type=click.Choice(["maximize", "minimize"]), help="Default: the metric's own.")
@click.option("--rank-by", type=click.Choice(["cv", "test"]), help="Default: cv when --split has cv.")
@click.option("--task", type=click.Choice(["classification", "regression"]), help="Default: inferred.")
@click.option("--features", help="Comma-separated feature columns (default: all but the target).")
@click.option("--preprocessing", help='JSON, e.g. \'{"missing": "drop"}\'.')
@click.option("--split", help="JSON, e.g. '{\"cv\": 5}' to rank trials by their 5-fold CV mean.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--wait", "wait_", is_flag=True, help="Follow the search with a live table of its trials.")
@click.option("--idempotency-key", help="Resubmitting with the same key returns the same search.")
@http_options
def search(
    data: Path | None,
    dataset: str | None,
    target: str,
    model_name: str,
    algorithm: str | None,
    space: str | None,
    algorithms: str | None,
    params: str | None,
    metric: str | None,
    direction: str | None,
    rank_by: str | None,
    task: str | None,
    features: str | None,
    preprocessing: str | None,
    split: str | None,
    device: str | None,
    wait_: bool,
    idempotency_key: str | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Search hyperparameters: one training per trial over the train workers; the best is registered."""
    from mlqueue.search_view import follow_search  # rich: only for this command

    if bool(data) == bool(dataset):
        raise UsageProblem("give exactly one of --data FILE.csv (uploaded first) or --dataset ID")
    with Client(url, token) as client:
        if data is not None:
            dataset = dataset_for(client, data)  # an identical earlier upload is reused (same sha256)
        assert dataset is not None
        job = client.search(
            model_name,
            dataset,
            target,
            algorithm,
            json_object("--search", space),
            algorithms=json_object("--algorithms", algorithms),
            params=json_object("--params", params),
            metric=metric,
            direction=direction,
            rank_by=rank_by,
            task=task,
            features=[f.strip() for f in features.split(",") if f.strip()] if features else None,
            preprocessing=json_object("--preprocessing", preprocessing),
            split=json_object("--split", split),
            device=device,
            idempotency_key=idempotency_key,
        )
        if not wait_:
            out(job)
            click.echo(f"queued search {job['id']}; follow it with: mlq watch {job['id']}", err=True)
            return
        click.echo(f"queued search {job['id']}", err=True)
        follow_search(client, job, as_json)


# -- jobs -----------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("job_id")
@http_options
def watch(job_id: str, url: str, token: str | None, as_json: bool) -> None:
    """Show a job's progress (epoch, loss, ETA) on stderr until it ends; print the final job."""
    with Client(url, token) as client:
        finish(client, client.get_job(job_id), as_json, show="job")


# The job types the API lists by (store.contract.JobType; a test keeps them equal). Spelled here: the client loads
# nothing of the server's packages.
JOB_TYPES = ("train", "predict", "batch_predict", "search", "optimize", "rollout")


@cli.group()
def jobs() -> None:
    """List, show and cancel jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled", "expired"]))
@click.option("--type", "type_", type=click.Choice(JOB_TYPES))
@click.option("--model")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--follow", is_flag=True, help="Then print each change of any of your jobs as it happens (Ctrl-C ends).")
@http_options
def jobs_list(
    status: str | None,
    type_: str | None,
    model: str | None,
    limit: int,
    follow: bool,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """The newest jobs first."""
    with Client(url, token) as client:
        items = list(client.list_jobs(status=status, type=type_, model=model, limit=limit))
        if as_json and not follow:
            return out(items)
        if as_json:  # JSON lines: the listed jobs, then one line per change
            for item in items:
                click.echo(json.dumps(item))
        else:
            laid_out = table([job_row(j) for j in items], JOB_COLUMNS)
        if follow:
            try:
                for change in client.tenant_events():
                    if (
                        (status and change["status"] != status)
                        or (type_ and change["type"] != type_)
                        or (model and change.get("model") != model)
                    ):
                        continue
                    click.echo(json.dumps(change) if as_json else laid_out.line(job_row(change)))
            except KeyboardInterrupt:
                return None
    return None


# What varies between jobs is kept longest: the progress, then the type and the model; the creation time goes first.
JOB_COLUMNS = [
    Column("ID", keep=True, room=30),
    Column("STATUS", keep=True, room=len("succeeded")),
    Column("TYPE", rank=3, room=len("batch_predict")),
    Column("MODEL", rank=2, flex=True, min_width=10),
    Column("CREATED", rank=1),
    Column("PROGRESS", rank=4, flex=True, min_width=16),
]


def job_row(job: dict[str, Any]) -> list[Any]:
    created = str(job.get("created_at") or "")
    # "2026-12-04T16:24:43.123Z" → "12-04 16:24:43": the year and the milliseconds only widen every row.
    short = f"{created[5:10]} {created[11:19]}" if len(created) >= 19 else created
    return [job["id"], job["status"], job["type"], job.get("model"), short, epoch_text(job.get("progress") or {})]


@jobs.command("show")
@click.argument("job_id")
@http_options
def jobs_show(job_id: str, url: str, token: str | None, as_json: bool) -> None:
    """Print one job."""
    with Client(url, token) as client:
        out(client.get_job(job_id))


@jobs.command("cancel")
@click.argument("job_id")
@http_options
def jobs_cancel(job_id: str, url: str, token: str | None, as_json: bool) -> None:
    """Cancel a job: a queued one never starts, a running training stops within one batch."""
    with Client(url, token) as client:
        out(client.cancel(job_id))


# -- datasets and models ----------------------------------------------------------------------------------------


@cli.group()
def datasets() -> None:
    """Upload and list CSV datasets."""


@datasets.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="A name to find it by (default: the file name).")
@http_options
def datasets_upload(path: Path, name: str | None, url: str, token: str | None, as_json: bool) -> None:
    """Upload a CSV file; prints the dataset (its id is what `mlq train --dataset` takes)."""
    with Client(url, token) as client:
        out(client.upload_dataset(path, name=name))


@datasets.command("list")
@http_options
def datasets_list(url: str, token: str | None, as_json: bool) -> None:
    """The uploaded datasets, newest first."""
    with Client(url, token) as client:
        items = client.list_datasets()
    if as_json:
        return out(items)
    table(
        [[d["id"], d.get("name"), d.get("rows"), len(d.get("columns") or []), d.get("created_at")] for d in items],
        [
            Column("ID", keep=True),
            Column("NAME", rank=3, flex=True),
            Column("ROWS", rank=2),
            Column("COLUMNS", rank=1),
            Column("CREATED", rank=0),
        ],
    )


class ModelsGroup(click.Group):
    """`mlq models` lists, `mlq models NAME` shows one model, `mlq models alias ...` points an alias."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


@cli.group(cls=ModelsGroup, invoke_without_command=True)
@http_options
@click.pass_context
def models(ctx: click.Context, url: str, token: str | None, as_json: bool) -> None:
    """List models; `mlq models NAME` shows its versions."""
    if ctx.invoked_subcommand is not None:
        return
    with Client(url, token) as client:
        items = client.list_models()
    if as_json:
        return out(items)
    table(
        [[m["name"], m.get("latest_version"), _aliases(m)] for m in items],
        [Column("NAME", keep=True), Column("LATEST", keep=True), Column("ALIASES", keep=True, flex=True)],
    )


def _algorithm(version: dict[str, Any]) -> str:
    """`mlp`, or `export:onnx (of 3)` for an export: a file to download, which no worker serves."""
    if version.get("kind") == "export" or "export" in version:
        fmt = (version.get("export") or {}).get("format") or version.get("model_kind") or "file"
        return f"export:{fmt} (of {version.get('parent')})"
    return str(version.get("algorithm"))


def _aliases(model: dict[str, Any]) -> str:
    return ", ".join(f"{a}={v}" for a, v in sorted((model.get("aliases") or {}).items()))


@models.command("show", hidden=True)
@click.argument("name")
@http_options
def models_show(name: str, url: str, token: str | None, as_json: bool) -> None:
    with Client(url, token) as client:
        model = client.get_model(name)
    if as_json:
        return out(model)
    click.echo(f"{model['name']}  latest {model.get('latest_version')}  aliases: {_aliases(model) or '-'}")
    table(
        [
            [v.get("version"), _algorithm(v), v.get("task"), _metrics(v.get("metrics") or {}), v.get("created_at")]
            for v in model.get("versions", [])
        ],
        [
            Column("VERSION", keep=True),
            Column("ALGORITHM", keep=True),
            Column("TASK", rank=1),
            Column("METRICS", keep=True, flex=True, min_width=20),
            Column("CREATED", rank=0),
        ],
    )


def _metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int, required=False)
@click.option("--delete", is_flag=True, help="Remove the alias instead.")
@http_options
def models_alias(
    name: str, alias: str, version: int | None, delete: bool, url: str, token: str | None, as_json: bool
) -> None:
    """Point ALIAS (production, staging, ...) of model NAME at VERSION, or --delete it."""
    if delete == (version is not None):
        raise UsageProblem("give either a VERSION or --delete")
    with Client(url, token) as client:
        if delete:
            client.delete_alias(name, alias)
        else:
            client.set_alias(name, alias, version or 0)
        out({"name": name, "aliases": client.get_model(name).get("aliases", {})})


@models.command("upload")
@click.argument("name")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="tokenizer.json")
@click.option("--metadata", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="metadata JSON file")
@click.option(
    "--external-data",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file the graph keeps weights in (repeatable).",
)
@http_options
def models_upload(
    name: str,
    model: Path,
    tokenizer: Path | None,
    metadata: Path | None,
    external_data: tuple[Path, ...],
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Register an ONNX MODEL file as the next version of NAME (checked first; docs/models.md)."""
    with Client(url, token) as client:
        manifest = client.upload_model(name, model, tokenizer, metadata, list(external_data))
    if as_json:
        return out(manifest)
    spec = manifest.get("onnx") or {}
    features = ", ".join(f["name"] for f in manifest.get("features") or [])
    click.echo(f"{name} version {manifest.get('version')}: {manifest.get('task')}, {spec.get('layout')} input")
    click.echo(f"  inputs: {features}")
    click.echo(f"  output: {spec.get('output')} ({spec.get('output_kind')}), classes: {manifest.get('classes')}")


@cli.command()
@click.argument("model")
@click.argument("version", type=int)
@click.option("--method", required=True, type=click.Choice(["quantize_dynamic", "prune", "distill", "export"]))
@click.option("--params", help="The method's parameters as JSON, e.g. '{\"amount\": 0.5}' for prune.")
@click.option("--format", "format_", type=click.Choice(["onnx", "torchscript"]), help="export: the file format.")
@click.option(
    "--download",
    type=click.Path(dir_okay=False, path_type=Path),
    help="export: save the exported file here once the job succeeded.",
)
@click.option("--idempotency-key", help="Resubmitting with the same key returns the same job.")
@http_options
def optimize(
    model: str,
    version: int,
    method: str,
    params: str | None,
    format_: str | None,
    download: Path | None,
    idempotency_key: str | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Optimise VERSION of MODEL into a new version and print parent beside child (size, latency, metrics)."""
    from mlqueue.comparison import comparison_rows, summary

    options = json_object("--params", params) or {}
    if format_:
        options["format"] = format_
    with Client(url, token) as client:
        job = client.optimize(model, version, method, options, idempotency_key=idempotency_key)
        click.echo(f"queued job {job['id']}", err=True)
        job = client.wait(job["id"])
        if job["status"] != "succeeded" or as_json:
            return finish(client, job, as_json)  # the job (--json), or the error and exit 1
        result = job["result"]
        rows, header = comparison_rows(result)
        table(rows, header)
        click.echo(summary(result), err=True)
        if download is not None:
            download.write_bytes(client.download_artifact(model, result["version"]))
            click.echo(f"saved version {result['version']}'s artifact to {download}", err=True)


@cli.command()
@click.argument("model")
@click.argument("to", type=click.IntRange(1))
@click.option("--alias", default="production", show_default=True, help="The alias to move.")
@click.option("--steps", default="5,25,50,100", show_default=True, help="Percents of traffic, increasing to 100.")
@click.option("--step-seconds", type=click.FloatRange(min=0, min_open=True), default=300, show_default=True)
@click.option("--guard", help='JSON, e.g. \'{"max_error_rate": 0.01, "max_p99_ms": 50, "min_requests": 200}\'.')
@click.option("--idempotency-key", help="Resubmitting with the same key returns the same job.")
@http_options
def rollout(
    model: str,
    to: int,
    alias: str,
    steps: str,
    step_seconds: float,
    guard: str | None,
    idempotency_key: str | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Move ALIAS of MODEL to version TO step by step, guarded by live figures; follow it live (Ctrl-C stops
    watching, not the rollout: `mlq jobs cancel ID` rolls it back)."""
    try:
        percents = [int(s) for s in steps.split(",") if s.strip()]
    except ValueError:
        raise UsageProblem(f"--steps must be comma-separated whole percents, got {steps!r}") from None
    with Client(url, token) as client:
        job = client.rollout(
            model,
            to,
            alias=alias,
            steps=percents,
            step_seconds=step_seconds,
            guard=json_object("--guard", guard),
            idempotency_key=idempotency_key,
        )
        click.echo(f"queued rollout {job['id']}: {model} {alias} -> version {to}", err=True)
        finish(client, job, as_json)


# -- running the service ----------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="gunicorn processes.")
@click.option(
    "--worker-class",
    type=click.Choice(["gevent", "gthread"]),
    default="gevent",
    show_default=True,
    help="gevent: a waiting request or event stream costs a greenlet; gthread: it holds one of 16 threads.",
)
def api(host: str, port: int, workers: int, worker_class: str) -> None:
    """Serve the REST API with gunicorn (settings from MLQ_* variables)."""
    from mlqueue.dev import gunicorn_argv

    argv = gunicorn_argv(host, port, workers, worker_class)
    os.execv(argv[0], argv)


@cli.command()
@click.option("--queues", default="train,inference", show_default=True, help="Comma-separated queues to consume.")
@click.option(
    "--devices",
    default="auto",
    show_default=True,
    help="auto (every GPU, else one CPU worker), cpu, cpu:N (N CPU worker processes), or GPU indexes like 0,1.",
)
@click.option("--concurrency", type=click.IntRange(1, 256), default=1, show_default=True, help="Processes per device.")
@click.option("--loglevel", default="info", show_default=True)
def worker(queues: str, devices: str, concurrency: int, loglevel: str) -> None:
    """Run Celery workers, one process per device, with CUDA_VISIBLE_DEVICES pinned before torch loads."""
    import logging

    from store.contract import WORKER_QUEUES as QUEUES
    from worker.launcher import run

    # The launcher reports which worker it starts on which device, and which one died, through logging.
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise UsageProblem(f"--queues must name some of {', '.join(QUEUES)}; got {queues!r}")
    sys.exit(run(names, devices=devices, concurrency=concurrency, loglevel=loglevel))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def dev(host: str, port: int) -> None:
    """Run everything on this machine: Redis (if none answers), the API, a train, an inference and a batch worker."""
    from mlqueue.dev import run_dev

    sys.exit(run_dev(host=host, port=port, env=dict(os.environ)))


if __name__ == "__main__":
    main()
