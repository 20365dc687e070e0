"""`make soak` / `python -m bench.soak --minutes 10`: a real stack under a mixed multi-tenant workload and chaos.

The stack (bench/soak_stack.py): Redis with AOF on a private port, the API, 2 train, 1 inference and 1 batch
worker. Three tenants submit trainings, searches, optimizations and batch predictions (about one a second, each
with an Idempotency-Key, retried through 503s and refused connections the way a client should), and a steady
trickle of predictions, while a chaos loop SIGKILLs a random worker (started again at once), restarts the API and
restarts Redis. At the end, with the chaos stopped and every job given time to end, bench/soak_checks.py checks
from Redis and the artifact store alone: every job reached exactly one final state, none is stuck queued or
running, exactly one version per succeeded training/search/optimize and none for the others, every batch output
has every input row once and in order, every prediction got an answer, and no 5xx but 503 while Redis restarted.
It prints a table and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.soak_checks import Outcomes, check, table
from bench.soak_stack import WORKERS, SoakStack
from store import keys

TOKENS = {"tok-acme": "acme", "tok-beta": "beta", "tok-gamma": "gamma"}
TOKEN_OF = {tenant: token for token, tenant in TOKENS.items()}
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MLP = {"epochs": 3, "hidden_layers": [8], "batch_size": 32}
REDIS_GRACE_S = 15.0  # a 503 this long after Redis came back still counts as its restart's


def iris_with_ids() -> tuple[bytes, int]:
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame.columns = [*FEATURES, "species"]
    frame["species"] = frame["species"].map(dict(enumerate(load_iris().target_names)))
    frame.insert(0, "rid", range(len(frame)))
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode(), len(frame)


class Client:
    """HTTP calls as a careful client makes them: retried through 503s and refused connections."""

    def __init__(self, base: str, out: Outcomes) -> None:
        self.base = base
        self.out = out
        self.http = httpx.Client(timeout=30)

    def call(self, tenant: str, method: str, path: str, kind: str, deadline_s: float = 90.0, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN_OF[tenant]}", **kw.pop("headers", {})}
        give_up = time.monotonic() + deadline_s
        while time.monotonic() < give_up:
            try:
                response = self.http.request(method, self.base + path, headers=headers, **kw)
            except httpx.TransportError:  # the API is restarting
                time.sleep(0.5)
                continue
            self.out.statuses.append((time.monotonic(), response.status_code, kind))
            if response.status_code not in (503, 409):  # 409: the same Idempotency-Key still in flight
                return response
            time.sleep(1.0)
        return None

    def submit(self, tenant: str, path: str, body: dict[str, Any], kind: str) -> str | None:
        key = uuid.uuid4().hex
        response = self.call(tenant, "POST", path, kind, json=body, headers={"Idempotency-Key": key})
        if response is None or response.status_code not in (200, 202):
            return None
        job = response.json()
        self.out.submitted.append((job["id"], job["type"], tenant))
        return str(job["id"])


class Soak:
    def __init__(self, minutes: float, workdir: Path, seed: int) -> None:
        self.minutes = minutes
        self.stack = SoakStack(workdir, TOKENS)
        self.out = Outcomes()
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.datasets: dict[str, str] = {}
        self.csv, self.rows = iris_with_ids()

    def setup(self, client: Client) -> None:
        for tenant in TOKENS.values():
            response = client.call(
                tenant,
                "POST",
                "/v1/datasets?name=iris",
                "upload",
                content=self.csv,
                headers={"Content-Type": "text/csv"},
            )
            assert response is not None and response.status_code == 201, response
            self.datasets[tenant] = response.json()["id"]
            job = client.submit(tenant, "/v1/jobs/train", self.train_body(tenant, "base", "mlp"), "train")
            assert job is not None
        for job_id, _, tenant in list(self.out.submitted):  # the workers may still be starting: minutes on 2 cores
            deadline = time.monotonic() + 600
            while (status := self.status(client, tenant, job_id)) not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline, f"the base model {job_id} of {tenant} did not train"
            assert status == "succeeded", f"the base model {job_id} of {tenant} ended {status}"

    def status(self, client: Client, tenant: str, job_id: str) -> str | None:
        response = client.call(tenant, "GET", f"/v1/jobs/{job_id}?wait=30", "wait", timeout=60)
        return None if response is None else str(response.json()["status"])

    def train_body(self, tenant: str, model: str, algorithm: str) -> dict[str, Any]:
        body = {"model": model, "dataset": self.datasets[tenant], "target": "species", "features": FEATURES}
        return {**body, "algorithm": algorithm, "params": MLP if algorithm == "mlp" else {}}

    def submit_one(self, client: Client) -> None:
        tenant = self.rng.choice(list(TOKENS.values()))
        kind = self.rng.choices(["train", "search", "optimize", "batch"], weights=[4, 1, 1, 3])[0]
        if kind == "train":
            body = self.train_body(tenant, "trained", self.rng.choice(["logistic_regression", "mlp"]))
            client.submit(tenant, "/v1/jobs/train", body, kind)
        elif kind == "search":
            body = {**self.train_body(tenant, "searched", "logistic_regression"), "search": {"C": [0.1, 1.0]}}
            body.pop("params")
            client.submit(tenant, "/v1/jobs/search", body, kind)
        elif kind == "optimize":
            client.submit(tenant, "/v1/models/base/versions/1/optimize", {"method": "quantize_dynamic"}, kind)
        else:
            body = {"version": 1, "dataset": self.datasets[tenant], "columns": ["rid"]}
            client.submit(tenant, "/v1/models/base/batch-predict", body, kind)

    def submitter(self, client: Client) -> None:
        while not self.stop.wait(self.rng.uniform(0.5, 1.5)):
            self.submit_one(client)

    def predictor(self, client: Client) -> None:
        row = dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True))
        while not self.stop.wait(0.3):
            tenant = self.rng.choice(list(TOKENS.values()))
            response = client.call(tenant, "POST", "/v1/models/base/predict?wait=10", "predict", json={"inputs": [row]})
            job = response.json().get("id") if response is not None and response.status_code == 202 else None
            self.out.predicts.append((response.status_code if response is not None else 0, job))

    def chaos(self) -> None:
        kinds = ["kill_worker", "restart_api", "restart_redis"]
        first = self.rng.sample(kinds, len(kinds))  # each kind at least once, even in a short soak
        while not self.stop.wait(self.rng.uniform(8, 16)):
            action = first.pop(0) if first else self.rng.choices(kinds, weights=[6, 2, 2])[0]
            if action == "kill_worker":
                name = self.rng.choice(list(WORKERS))
                self.stack.kill(name)
                self.stack.start_worker(name)
                self.out.actions[f"SIGKILL {name}"] += 1
            elif action == "restart_api":
                self.stack.kill("api")
                self.stack.start_api()
                self.out.actions["API restarts"] += 1
            else:
                down = time.monotonic()
                self.stack.restart_redis()
                self.out.redis_windows.append((down, time.monotonic() + REDIS_GRACE_S))
                self.out.actions["Redis restarts"] += 1

    def run(self) -> int:
        stack = self.stack
        try:
            stack.start_redis()
            for name in WORKERS:
                stack.start_worker(name)
            stack.start_api()
            client = Client(stack.api_url, self.out)
            self.setup(client)
            threads = [
                threading.Thread(target=self.submitter, args=(client,), daemon=True),
                threading.Thread(target=self.predictor, args=(Client(stack.api_url, self.out),), daemon=True),
                threading.Thread(target=self.chaos, daemon=True),
            ]
            for thread in threads:
                thread.start()
            time.sleep(self.minutes * 60)
            self.stop.set()
            for thread in threads:
                thread.join(timeout=180)
            self.drain()
            by_state, violations = check(
                stack.client(),
                Path(stack.env["MLQ_HOME"]) / "models",
                list(TOKENS.values()),
                self.out,
                lambda t, j: self.output(client, t, j),
                self.rows,
            )
            print(table(by_state, self.out, violations, self.minutes))
            return 1 if violations else 0
        finally:
            stack.close()

    def drain(self, timeout_s: float = 300.0) -> None:
        """Let every job end: nothing is killed any more; give up after `timeout_s` (the checks then say what)."""
        from bench.soak_checks import FINAL, job_ids

        client = self.stack.client()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ids = job_ids(client, list(TOKENS.values()))
            if all(client.hget(keys.job(j), "status") in (*FINAL, None) for j in ids):
                return
            time.sleep(1.0)

    def output(self, client: Client, tenant: str, job_id: str) -> bytes | None:
        response = client.call(tenant, "GET", f"/v1/jobs/{job_id}/output", "output")
        return response.content if response is not None and response.status_code == 200 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the workload and chaos run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and data here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return Soak(args.minutes, args.workdir, args.seed).run()
    with tempfile.TemporaryDirectory(prefix="mlq-soak-") as tmp:
        return Soak(args.minutes, Path(tmp), args.seed).run()


if __name__ == "__main__":
    sys.exit(main())
