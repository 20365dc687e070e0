"""`mlq`: train and serve models, locally in-process or through the mlqueue service.

Data (JSON, tables) goes to stdout, progress and messages to stderr; errors print one line and exit non-zero
(1: the request or the job failed, 2: bad usage, 130: interrupted). Environment variables are read here, at the
edge: MLQ_URL, MLQ_TOKEN, MLQ_HOME. Training modules (torch, pandas) are imported only by the `--local` paths.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from mlqueue.client import Client
from mlqueue.progress import epoch_text
from mlqueue.terminal import (
    Cli,
    UsageProblem,
    finish,
    home_option,
    http_options,
    json_object,
    out,
    read_rows,
    table,
)


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
@click.option("--preprocessing", help="JSON, e.g. '{\"missing\": \"drop\", \"scale\": true}'.")
@click.option("--split", help="JSON, e.g. '{\"test\": 0.2, \"seed\": 1}'.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where to train (default auto).")
@click.option("--wait", "wait_", is_flag=True, help="Follow the job until it ends (service only).")
@click.option("--idempotency-key", help="Resubmitting with the same key returns the same job.")
@home_option
@http_options
def train(local: bool, data: Path | None, dataset: str | None, target: str, algorithm: str, model_name: str,
          task: str | None, features: str | None, params: str | None, preprocessing: str | None,
          split: str | None, device: str | None, wait_: bool, idempotency_key: str | None, home: Path,
          url: str, token: str | None, as_json: bool) -> None:
    """Train a model on a CSV and register it as the next version of --model."""
    options: dict[str, Any] = {
        "target": target, "algorithm": algorithm, "task": task,
        "features": [f.strip() for f in features.split(",") if f.strip()] if features else None,
        "params": json_object("--params", params), "preprocessing": json_object("--preprocessing", preprocessing),
        "split": json_object("--split", split),
    }
    if local:
        if data is None or dataset:
            raise UsageProblem("--local trains on a file: give --data FILE.csv (not --dataset)")
        from mlqueue import local as in_process  # torch, pandas: only now

        def on_progress(**progress: Any) -> None:
            click.echo(epoch_text(progress), err=True)

        out(in_process.train(home, secret_key(), data, model_name, device or "auto", on_progress, options))
        return
    if bool(data) == bool(dataset):
        raise UsageProblem("give exactly one of --data FILE.csv (uploaded first) or --dataset ID")
    with Client(url, token) as client:
        if data is not None:
            uploaded = client.upload_dataset(data)
            click.echo(f"uploaded {data} as dataset {uploaded['id']} ({uploaded.get('rows')} rows)", err=True)
            dataset = uploaded["id"]
        assert dataset is not None
        job = client.train(model_name, dataset, device=device, idempotency_key=idempotency_key, **options)
        if not wait_:
            out(job)
            click.echo(f"queued job {job['id']}; follow it with: mlq watch {job['id']}", err=True)
            return
        click.echo(f"queued job {job['id']}", err=True)
        finish(client, job, as_json)


@cli.command()
@click.argument("model")
@click.option("--input", "input_path", required=True,
              help="JSON file of rows (a list, or {\"inputs\": [...]}); - for stdin.")
@click.option("--version", "version", help="A version number or alias (default: production, else latest).")
@click.option("--postprocess", help="JSON, e.g. '{\"output\": \"both\", \"top_k\": 2}'.")
@click.option("--local", is_flag=True, help="Predict in this process from the local artifact store.")
@home_option
@http_options
def predict(model: str, input_path: str, version: str | None, postprocess: str | None, local: bool, home: Path,
            url: str, token: str | None, as_json: bool) -> None:
    """Predict rows with a model and print {"model", "version", "predictions"}."""
    rows = read_rows(input_path)
    post = json_object("--postprocess", postprocess)
    if local:
        from mlqueue import local as in_process  # torch, pandas: only now

        out(in_process.predict(home, secret_key(), model, version, rows, post))
        return
    with Client(url, token) as client:
        finish(client, client.predict(model, rows, version=version, postprocess=post, wait=30), as_json)


# -- jobs -----------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("job_id")
@http_options
def watch(job_id: str, url: str, token: str | None, as_json: bool) -> None:
    """Show a job's progress (epoch, loss, ETA) on stderr until it ends; print the final job."""
    with Client(url, token) as client:
        finish(client, client.get_job(job_id), as_json, show="job")


@cli.group()
def jobs() -> None:
    """List, show and cancel jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--type", "type_", type=click.Choice(["train", "predict"]))
@click.option("--model")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@http_options
def jobs_list(status: str | None, type_: str | None, model: str | None, limit: int, url: str, token: str | None,
              as_json: bool) -> None:
    """The newest jobs first."""
    with Client(url, token) as client:
        items = list(client.list_jobs(status=status, type=type_, model=model, limit=limit))
    if as_json:
        return out(items)
    table([[j["id"], j["status"], j["type"], j.get("model"), j.get("created_at"),
            epoch_text(j.get("progress") or {})] for j in items],
          ["ID", "STATUS", "TYPE", "MODEL", "CREATED", "PROGRESS"])


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
    table([[d["id"], d.get("name"), d.get("rows"), len(d.get("columns") or []), d.get("created_at")] for d in items],
          ["ID", "NAME", "ROWS", "COLUMNS", "CREATED"])


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
    table([[m["name"], m.get("latest_version"), _aliases(m)] for m in items], ["NAME", "LATEST", "ALIASES"])


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
    table([[v.get("version"), v.get("algorithm"), v.get("task"), _metrics(v.get("metrics") or {}),
            v.get("created_at")] for v in model.get("versions", [])],
          ["VERSION", "ALGORITHM", "TASK", "METRICS", "CREATED"])


def _metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int, required=False)
@click.option("--delete", is_flag=True, help="Remove the alias instead.")
@http_options
def models_alias(name: str, alias: str, version: int | None, delete: bool, url: str, token: str | None,
                 as_json: bool) -> None:
    """Point ALIAS (production, staging, ...) of model NAME at VERSION, or --delete it."""
    if delete == (version is not None):
        raise UsageProblem("give either a VERSION or --delete")
    with Client(url, token) as client:
        if delete:
            client.delete_alias(name, alias)
        else:
            client.set_alias(name, alias, version or 0)
        out({"name": name, "aliases": client.get_model(name).get("aliases", {})})


@cli.command()
@click.argument("model")
@click.argument("version", type=int)
@click.option("--method", required=True, type=click.Choice(["quantize_dynamic", "prune", "distill", "export"]))
@click.option("--params", help="The method's parameters as JSON, e.g. '{\"amount\": 0.5}' for prune.")
@click.option("--format", "format_", type=click.Choice(["onnx", "torchscript"]), help="export: the file format.")
@click.option("--download", type=click.Path(dir_okay=False, path_type=Path),
              help="export: save the exported file here once the job succeeded.")
@click.option("--idempotency-key", help="Resubmitting with the same key returns the same job.")
@http_options
def optimize(model: str, version: int, method: str, params: str | None, format_: str | None,
             download: Path | None, idempotency_key: str | None, url: str, token: str | None,
             as_json: bool) -> None:
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


# -- running the service ----------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="gunicorn processes.")
@click.option("--threads", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Threads per process (a waiting request holds one).")
def api(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the REST API with gunicorn (settings from MLQ_* variables)."""
    from mlqueue.dev import gunicorn_argv

    argv = gunicorn_argv(host, port, workers, threads)
    os.execv(argv[0], argv)


@cli.command()
@click.option("--queues", default="train,inference", show_default=True, help="Comma-separated queues to consume.")
@click.option("--devices", default="auto", show_default=True, help="auto, cpu, or GPU indexes like 0,1.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Processes per device.")
@click.option("--loglevel", default="info", show_default=True)
def worker(queues: str, devices: str, concurrency: int, loglevel: str) -> None:
    """Run Celery workers, one process per device, with CUDA_VISIBLE_DEVICES pinned before torch loads."""
    import logging

    from worker.contract import QUEUES
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
    """Run everything on this machine: Redis (if none answers), the API, a train and an inference worker."""
    from mlqueue.dev import run_dev

    sys.exit(run_dev(host=host, port=port, env=dict(os.environ)))


if __name__ == "__main__":
    main()
