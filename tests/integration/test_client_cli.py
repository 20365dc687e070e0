"""The Python client and `mlq` against the real service: gunicorn, a real worker (`mlq worker`), a real Redis.

Run with MLQ_TEST_REDIS_URL=redis://127.0.0.1:6379/12 (default db 15). The db is flushed before and after.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_until
from ports import free_port, port_taken
from pty_run import run_in_pty, screen_lines, too_wide
from redis_check import require_redis
from sklearn.datasets import load_iris

from mlqueue import Client, NotFound, ValidationFailed
from mlqueue.dev import descendants

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("MLQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
START_TIMEOUT_S = 180.0


def start_mlq_api(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`mlq api` on a free port, once /healthz answers. `mlq api` takes no port 0, so the port is picked first:
    should somebody bind it meanwhile, gunicorn exits saying so and `mlq api` starts again on another one."""
    for _ in range(5):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            api = subprocess.Popen(
                [str(BIN / "mlq"), "api", "--port", str(port), "--workers", "1"],
                cwd=ROOT,
                env={**env, "MLQ_URL": url},
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )

        def healthy(api: subprocess.Popen[bytes] = api, url: str = url) -> bool:
            if api.poll() is not None:
                return True
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, START_TIMEOUT_S, what="`mlq api` answering /healthz", interval_s=0.2)
        if api.poll() is None:
            return api, url
        if not port_taken(log_path.read_text(errors="replace")):
            pytest.fail(f"mlq api exited:\n{log_path.read_text(errors='replace')[-4000:]}")
    pytest.fail(f"mlq api found no free port:\n{log_path.read_text(errors='replace')[-4000:]}")


def write_iris(path: Path) -> None:
    iris = load_iris()
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        for i, (values, target) in enumerate(zip(iris.data, iris.target, strict=True)):
            cells = [f"{v:.1f}" for v in values]
            cells[1] = "" if i % 19 == 4 else cells[1]  # a few blanks: the service imputes them
            writer.writerow([*cells, iris.target_names[target]])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_mlq_dev_without_redis_or_redis_server_says_how_to_install_it(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": str(tmp_path),
        "MLQ_HOME": str(tmp_path / "home"),
        "MLQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    result = subprocess.run(
        [str(BIN / "mlq"), "dev", "--port", str(free_port())], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert "redis-server is not installed" in result.stderr and "apt-get install redis-server" in result.stderr
    assert "Traceback" not in result.stderr


def test_mlq_dev_serves_until_ctrl_c_then_stops_every_child_at_once_and_exits_zero(tmp_path: Path) -> None:
    """Runs first in this module, before the shared service exists, so its /readyz counts only its own workers.

    Ctrl-C (SIGINT to the terminal's foreground group: the supervisor alone, its children have groups of their own)
    stops every child at once and says so; one after another took 10-13 s idle."""
    client = require_redis(REDIS_URL)
    client.flushdb()
    port = free_port()  # `mlq dev` takes no port 0 (it prints the URL before gunicorn binds)
    env = {**os.environ, "MLQ_REDIS_URL": REDIS_URL, "MLQ_HOME": str(tmp_path / "home"), "MLQ_TORCH_THREADS": "1"}
    proc = subprocess.Popen(
        [str(BIN / "mlq"), "dev", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "dev.log").open("w"),
        text=True,
        process_group=0,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("ready:"):
                break
        assert any(line.startswith("ready:") for line in lines), "".join(lines)
        assert f"curl -s http://127.0.0.1:{port}/readyz" in "".join(lines)
        assert f"dashboard http://127.0.0.1:{port}/ui/" in "".join(lines)
        assert httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=5).status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert all(ready["queues"][q]["workers"] >= 1 for q in ("train", "inference"))
        children = descendants(proc.pid)
        assert len(children) >= 3  # gunicorn, two `mlq worker` launchers, their Celery workers
        os.killpg(proc.pid, signal.SIGINT)
        asked = time.monotonic()
        assert proc.wait(timeout=60) == 0
        took = time.monotonic() - asked
        log = (tmp_path / "dev.log").read_text()
        stops = [line for line in log.splitlines() if line.startswith("mlq dev: ")]
        print(f"mlq dev stopped in {took:.1f} s:", *stops, sep="\n  ")
        assert "mlq dev: stopping api, train worker, inference worker, batch worker" in stops, log[-3000:]
        for child in ("api", "train worker", "inference worker", "batch worker"):
            assert any(line.startswith(f"mlq dev: {child} stopped (") for line in stops), log[-3000:]
        assert "did not stop" not in log  # nobody needed the SIGKILL after the grace
        assert not [
            pid
            for pid in children
            if Path(f"/proc/{pid}").exists()
            and "zombie" not in Path(f"/proc/{pid}/status").read_text(errors="replace").lower()
        ]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        client.flushdb()
        client.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """gunicorn serving api.wsgi:app and one `mlq worker` for both queues, on a fresh MLQ_HOME and the test db."""
    client = require_redis(REDIS_URL)
    client.flushdb()
    tmp = tmp_path_factory.mktemp("client-cli")
    env = {
        **os.environ,
        "MLQ_REDIS_URL": REDIS_URL,
        "MLQ_HOME": str(tmp / "home"),
        "MLQ_TORCH_THREADS": "1",
        "MLQ_HEARTBEAT_S": "0.5",
    }
    env.pop("MLQ_TOKEN", None)
    worker_log = (tmp / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(BIN / "mlq"), "worker", "--queues", "train,inference", "--devices", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    api: subprocess.Popen[bytes] | None = None
    try:
        api, url = start_mlq_api(env, tmp / "api.log")  # while the worker boots
        env["MLQ_URL"] = url
        with Client(url, timeout=5, max_retries=0) as probe:

            def ready() -> bool:
                for proc, log in ((api, "api.log"), (worker, "worker.log")):
                    if proc is not None and proc.poll() is not None:
                        pytest.fail(f"{log} process exited:\n{(tmp / log).read_text()[-4000:]}")
                try:
                    probe.ready()
                    return True
                except Exception:
                    return False

            wait_until(ready, START_TIMEOUT_S, what="the service ready", interval_s=0.5)
        data = tmp / "iris.csv"
        write_iris(data)
        yield {"url": url, "env": env, "tmp": tmp, "data": data}
    finally:
        stop(worker)
        if api is not None:
            stop(api)
        worker_log.close()
        client.flushdb()
        client.close()


def mlq(service: dict[str, Any], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mlq"), *args], capture_output=True, text=True, env=service["env"], timeout=timeout
    )


def test_the_client_uploads_trains_predicts_lists_and_points_an_alias(service: dict[str, Any]) -> None:
    with Client(service["url"]) as client:
        dataset = client.upload_dataset(service["data"])
        assert dataset["rows"] == 150 and dataset["name"] == "iris"
        assert dataset["id"] in [d["id"] for d in client.list_datasets()]
        job = client.train("flowers", dataset["id"], target="species", algorithm="logistic_regression")
        assert job["status"] in ("queued", "running", "succeeded")
        final = client.wait(job["id"], timeout=150)
        assert final["status"] == "succeeded", final
        assert final["result"]["version"] == 1 and final["result"]["metrics"]["accuracy"] > 0.8

        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, None, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
        answer = client.result(client.predict("flowers", rows, wait=30)["id"], timeout=60)
        assert (answer["model"], answer["version"]) == ("flowers", 1)
        assert [p["label"] for p in answer["predictions"]][0] == "setosa"
        assert len(answer["predictions"]) == 3

        assert job["id"] in [j["id"] for j in client.list_jobs(type="train")]
        assert {j["type"] for j in client.list_jobs(page_size=1, limit=2)} <= {"train", "predict"}
        assert len(list(client.list_jobs(page_size=1))) >= 2  # follows next_cursor across pages
        assert "flowers" in [m["name"] for m in client.list_models()]
        client.set_alias("flowers", "production", 1)
        assert client.get_model("flowers")["aliases"] == {"production": 1}
        client.delete_alias("flowers", "production")
        assert client.get_model("flowers")["aliases"] == {}


def test_the_client_raises_typed_errors_from_problem_details(service: dict[str, Any]) -> None:
    with Client(service["url"]) as client:
        with pytest.raises(NotFound) as missing:
            client.get_job("job_00000000000000000000000000")
        assert missing.value.status == 404 and missing.value.problem["status"] == 404
        with pytest.raises(NotFound):
            client.get_model("no-such-model")
        with pytest.raises(ValidationFailed) as invalid:
            client.train("flowers", "ds_00000000000000000000000000", target="species", algorithm="deep_forest")
        assert invalid.value.status == 422 and "logistic_regression" in str(invalid.value)


def test_mlq_trains_over_http_and_watch_prints_progress_then_the_final_job(service: dict[str, Any]) -> None:
    submitted = mlq(
        service,
        "train",
        "--data",
        str(service["data"]),
        "--target",
        "species",
        "--algorithm",
        "mlp",
        "--model",
        "petals",
        "--params",
        '{"epochs": 4, "hidden_layers": [8]}',
    )
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["type"] == "train" and f"mlq watch {job['id']}" in submitted.stderr

    watched = mlq(service, "watch", job["id"])
    assert watched.returncode == 0, watched.stderr
    final = json.loads(watched.stdout)
    assert final["id"] == job["id"] and final["status"] == "succeeded"
    assert final["result"]["epochs_run"] >= 1
    assert f"{job['id']} " in watched.stderr and "succeeded" in watched.stderr  # the progress line

    shown = mlq(service, "jobs", "show", job["id"])
    assert json.loads(shown.stdout)["status"] == "succeeded"
    listed = mlq(service, "jobs", "list", "--json")
    assert job["id"] in [j["id"] for j in json.loads(listed.stdout)]
    table = mlq(service, "jobs", "list", "--model", "petals")
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "STATUS", "TYPE"] and job["id"] in table.stdout


def test_mlq_predict_alias_models_and_errors_over_http(service: dict[str, Any]) -> None:
    trained = mlq(
        service,
        "train",
        "--data",
        str(service["data"]),
        "--target",
        "species",
        "--algorithm",
        "random_forest",
        "--model",
        "irises",
        "--params",
        '{"n_estimators": 10}',
        "--wait",
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["version"] == 1

    alias = mlq(service, "models", "alias", "irises", "production", "1")
    assert alias.returncode == 0, alias.stderr
    assert json.loads(alias.stdout)["aliases"] == {"production": 1}
    models = mlq(service, "models", "--json")
    assert {"name": "irises", "latest_version": 1, "aliases": {"production": 1}} in json.loads(models.stdout)
    versions = mlq(service, "models", "irises")
    assert versions.returncode == 0 and "random_forest" in versions.stdout

    rows = service["tmp"] / "rows.json"
    rows.write_text(json.dumps([{"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}]))
    predicted = mlq(service, "predict", "irises", "--input", str(rows), "--version", "production")
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    assert answer["version"] == 1 and answer["predictions"][0]["label"] == "virginica"

    missing = mlq(service, "jobs", "show", "job_00000000000000000000000000")
    assert missing.returncode == 1 and missing.stderr.startswith("error: 404") and missing.stderr.count("\n") == 1
    done = mlq(service, "jobs", "cancel", json.loads(mlq(service, "jobs", "list", "--json").stdout)[0]["id"])
    assert done.returncode == 1 and "error: 409" in done.stderr  # that job is already final


def test_mlq_train_reuses_an_identical_upload_and_prints_one_newline_terminated_json_document(
    service: dict[str, Any],
) -> None:
    def same_file() -> list[str]:
        listed = mlq(service, "datasets", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        sha = hashlib.sha256(service["data"].read_bytes()).hexdigest()
        return [d["id"] for d in json.loads(listed.stdout) if d["sha256"] == sha]

    args = [
        "train",
        "--data",
        str(service["data"]),
        "--target",
        "species",
        "--algorithm",
        "logistic_regression",
        "--model",
        "reused",
        "--json",
    ]
    first, second = mlq(service, *args), mlq(service, *args)
    for run in (first, second):
        assert run.returncode == 0, run.stderr
        assert run.stdout.endswith("}\n") and json.loads(run.stdout)["type"] == "train"
    [dataset] = same_file()  # uploaded at most once, whatever ran before
    assert f"reusing dataset {dataset}" in second.stderr
    waited = mlq(service, *args, "--wait")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.endswith("}\n") and json.loads(waited.stdout)["status"] == "succeeded"


def test_mlq_search_shows_its_trial_table_and_the_client_reads_the_best(service: dict[str, Any]) -> None:
    shown = mlq(
        service,
        "search",
        "--data",
        str(service["data"]),
        "--target",
        "species",
        "--model",
        "iris-search",
        "--algorithm",
        "logistic_regression",
        "--search",
        '{"C": [0.05, 1.0]}',
        "--wait",
    )
    assert shown.returncode == 0, shown.stderr
    assert "algorithm" in shown.stdout and shown.stdout.count("logistic_regression") == 2, shown.stdout
    assert "registered iris-search version 1" in shown.stderr
    with Client(service["url"]) as client:
        dataset = client.upload_dataset(service["data"])
        job = client.search(
            "iris-search",
            dataset["id"],
            "species",
            "random_forest",
            {"strategy": "random", "trials": 2, "space": {"n_estimators": {"int": [5, 20]}}},
            metric="accuracy",
            split={"cv": 3},
        )
        result = client.result(job["id"], timeout=150)
        assert result["version"] == 2 and result["rank_by"] == "cv" and result["metric"] == "accuracy"
        assert [t["score"] for t in result["trials"]] == sorted((t["score"] for t in result["trials"]), reverse=True)
        manifest = client.get_version("iris-search", 2)
        assert manifest["search"]["id"] == job["id"] and manifest["feature_importance"]["features"]


# -- what a person's terminal shows: every line fits its width (a pseudo-terminal of 80 and of 120 columns) ---------


@pytest.mark.parametrize("columns", [80, 120])
def test_jobs_list_watch_and_models_fit_the_terminal(service: dict[str, Any], columns: int) -> None:
    with Client(service["url"]) as client:
        dataset = client.upload_dataset(service["data"])
        job = client.train(
            "wide-check", dataset["id"], target="species", algorithm="mlp", params={"epochs": 6, "hidden_layers": [8]}
        )
        assert client.wait(job["id"], timeout=150)["status"] == "succeeded"
    listed = run_in_pty([str(BIN / "mlq"), "jobs", "list", "--limit", "30"], columns, service["env"])
    assert listed[0] == 0, listed[1]
    assert job["id"] in listed[1] and "epoch 6/6" in listed[1]
    assert not too_wide(listed[1], columns), listed[1]
    header = next(line for line in screen_lines(listed[1]) if line.startswith("ID"))
    assert "PROGRESS" in header and ("CREATED" in header) == (columns >= 120)  # the time goes first when short

    optimize = run_in_pty([str(BIN / "mlq"), "jobs", "list", "--type", "optimize"], columns, service["env"])
    assert optimize[0] == 0, optimize[1]  # the API and the dashboard take this filter; the CLI did not

    watched = run_in_pty([str(BIN / "mlq"), "watch", job["id"]], columns, service["env"])
    assert watched[0] == 0 and "epoch 6/6" in watched[1] and "val_loss" in watched[1], watched[1]
    assert not too_wide(watched[1], columns), watched[1]

    shown = run_in_pty([str(BIN / "mlq"), "models", "wide-check"], columns, service["env"])
    assert shown[0] == 0 and "mlp" in shown[1]
    assert not too_wide(shown[1], columns), shown[1]


def test_a_searchs_live_and_final_table_fit_80_columns_once_with_the_searched_parameter(
    service: dict[str, Any],
) -> None:
    code, text = run_in_pty(
        [
            str(BIN / "mlq"),
            "search",
            "--data",
            str(service["data"]),
            "--target",
            "species",
            "--model",
            "narrow-search",
            "--algorithm",
            "mlp",
            "--params",
            '{"epochs": 3, "hidden_layers": [8], "early_stopping_patience": 5}',
            "--search",
            '{"lr": [0.001, 0.01]}',
            "--wait",
        ],
        80,
        service["env"],
    )
    assert code == 0, text
    # A one-off message may wrap like any text (`reusing dataset …` with its path); the tables may not.
    assert not [line for line in too_wide(text, 80) if not line.startswith("reusing dataset")], text
    final = text[text.rindex("search job_") :]  # the live table is cleared at the end: what stays is printed once
    assert text.count("registered narrow-search version") == 1
    assert "lr=0.001" in final and "lr=0.01" in final, final
    assert "mlp" in final and "succeeded" in final, final  # the other columns are whole
    assert sum(1 for line in screen_lines(text) if line.lstrip().startswith("search job_")) >= 1
