"""`mlq train --data FILE.csv`: check what can be checked here, then reuse an identical upload or upload the file.

Stdlib + the client + training.params (stdlib only): the base install has no pandas or torch. Before this,
every `mlq train --data` uploaded the same file again (one more dataset per run) and did so before a typo in
--target or --params could be reported, so a mistake cost a full upload first.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import click

from mlqueue.client import Client
from mlqueue.terminal import UsageProblem


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_before_upload(path: Path, options: dict[str, Any]) -> None:
    """Refuse, before any upload, an unknown algorithm, bad params, or a target or feature not in the header.

    The server checks all of this again (and more); this only saves a pointless upload. Raises UsageProblem.
    """
    from training.errors import MLQError  # stdlib only, but `mlq --help` loads no training module at all
    from training.params import check_algorithm, validate_params

    try:
        check_algorithm(options["algorithm"], options.get("task"))
        validate_params(options["algorithm"], options.get("params"), options.get("task"))
    except MLQError as exc:
        raise UsageProblem(exc.message) from None
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        header = [name.strip() for name in next(csv.reader(fh), [])]
    wanted = [("--target", options["target"])] + [("--features", f) for f in options.get("features") or []]
    missing = [f"{option} {name!r}" for option, name in wanted if name not in header]
    if missing:
        raise UsageProblem(f"{', '.join(missing)} not in the header of {path}; its columns: {', '.join(header)}")


def dataset_for(client: Client, path: Path) -> str:
    """The id of a dataset with exactly this file's bytes: an earlier upload (same sha256), else a new one."""
    sha = file_sha256(path)
    for dataset in client.list_datasets():
        if dataset.get("sha256") == sha:
            click.echo(f"reusing dataset {dataset['id']}: {path} was uploaded before (same sha256)", err=True)
            return str(dataset["id"])
    uploaded = client.upload_dataset(path)
    click.echo(f"uploaded {path} as dataset {uploaded['id']} ({uploaded.get('rows')} rows)", err=True)
    return str(uploaded["id"])
