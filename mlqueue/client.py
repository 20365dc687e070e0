"""The Python client of the mlqueue REST API (API.md), on httpx. Torch-free: importable anywhere.

from mlqueue import Client
c = Client("http://127.0.0.1:8000", token="...")
ds = c.upload_dataset("penguins.csv")
job = c.wait(c.train("penguins", ds["id"], target="species", algorithm="mlp")["id"])
print(c.predict("penguins", [{"bill_length_mm": 39.1, "island": "Torgersen"}], wait=30)["result"])
"""

from __future__ import annotations

import email.utils
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from mlqueue.errors import JobCancelled, JobFailed, MLQueueError, Unreachable, WaitTimeout, error_for

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
MAX_WAIT_S = 30.0  # the API's cap on ?wait=
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def retry_after(response: httpx.Response, default: float) -> float:
    """Seconds from a Retry-After header (delta-seconds or an HTTP-date), else `default`; capped at 30."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return default
    try:
        return min(max(float(raw), 0.0), MAX_WAIT_S)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError):
        return default
    return min(max(when - time.time(), 0.0), MAX_WAIT_S)


class Client:
    """A connection to one mlqueue service. Every method returns the API's JSON (dicts), or raises MLQueueError.

    GETs, PUTs, DELETEs and job-creating POSTs (which always carry an Idempotency-Key) are retried up to
    `max_retries` times on connection errors, 429 and 502-504, honouring Retry-After.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "mlqueue-client/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, retry: bool | None = None, wait: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        if retry is None:
            retry = method in ("GET", "PUT", "DELETE")
        if wait is not None:
            # A waiting request legitimately takes up to `wait` seconds: give the read timeout room for it.
            kwargs.setdefault("timeout", httpx.Timeout(self.timeout, read=self.timeout + wait))
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                # A refused connection never reached the server, so even a plain POST is safe to resend.
                safe = retry or isinstance(exc, httpx.ConnectError)
                if safe and attempt < self.max_retries:
                    attempt += 1
                    time.sleep(min(0.5 * 2**attempt, 5.0))
                    continue
                raise Unreachable(
                    None,
                    {
                        "title": f"cannot reach mlqueue at {self.url}",
                        "detail": f"cannot reach mlqueue at {self.url}: {exc}",
                    },
                ) from None
            if response.status_code in RETRY_STATUSES and retry and attempt < self.max_retries:
                attempt += 1
                time.sleep(retry_after(response, min(0.5 * 2**attempt, 5.0)))
                continue
            if response.status_code >= 400:
                raise error_for(response.status_code, _problem(response))
            return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = self._json(method, path, **kwargs)  # the endpoints that answer a JSON object
        return body

    def _pages(self, path: str, params: dict[str, Any], limit: int | None) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, newest first, following `next_cursor`; stops after `limit` items."""
        params = {k: v for k, v in params.items() if v is not None}
        seen = 0
        while True:
            page = self._json("GET", path, params=params)
            for item in page.get("items", []):
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield item
            cursor = page.get("next_cursor")
            if not cursor or (limit is not None and seen >= limit):
                return
            params["cursor"] = cursor

    @staticmethod
    def _wait_param(wait: float | None) -> dict[str, Any]:
        # Whole seconds: the contract's ?wait= is an integer from 0 to 30.
        seconds = int(min(wait or 0, MAX_WAIT_S))
        return {"wait": seconds} if seconds > 0 else {}

    # -- datasets ----------------------------------------------------------------------------------------------

    def upload_dataset(self, data: str | Path | bytes, name: str | None = None) -> dict[str, Any]:
        """Upload a CSV (a path, or its bytes) as multipart field `file`; returns the dataset object."""
        if isinstance(data, bytes):
            filename, content = (name or "data") + ".csv", data
        else:
            path = Path(data)
            filename, content = path.name, path.read_bytes()
            name = name or path.stem
        params = {"name": name} if name else {}
        files = {"file": (filename, content, "text/csv")}
        return self._object("POST", "/v1/datasets", params=params, files=files)

    def list_datasets(self, limit: int | None = None) -> list[dict[str, Any]]:
        return list(self._pages("/v1/datasets", {}, limit))

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._object("GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    # -- jobs ----------------------------------------------------------------------------------------------------

    def train(
        self,
        model: str,
        dataset: str,
        target: str,
        algorithm: str,
        task: str | None = None,
        features: list[str] | None = None,
        params: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
        split: dict[str, Any] | None = None,
        device: str | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
        warm_start: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Submit a training job; returns the job (final if it ended within `wait` seconds, at most 30).

        `warm_start={"model": name, "version": 3}` continues an mlp from that version's weights."""
        body = {
            "model": model,
            "dataset": dataset,
            "target": target,
            "algorithm": algorithm,
            "task": task,
            "features": features,
            "params": params,
            "preprocessing": preprocessing,
            "split": split,
            "device": device,
            "warm_start": warm_start,
        }
        return self._create_job("/v1/jobs/train", body, wait, idempotency_key)

    def search(
        self,
        model: str,
        dataset: str,
        target: str,
        algorithm: str | None = None,
        search: dict[str, Any] | None = None,
        *,
        algorithms: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        metric: str | None = None,
        direction: str | None = None,
        rank_by: str | None = None,
        task: str | None = None,
        features: list[str] | None = None,
        preprocessing: dict[str, Any] | None = None,
        split: dict[str, Any] | None = None,
        device: str | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit a hyperparameter search; returns the search job. Its trials run as train jobs on every train
        worker; `result(job_id)` gives the trial table and the version registered from the best trial.

            c.search("iris", ds, "species", "mlp", {"lr": [0.01, 0.001], "hidden_layers": [[32], [64, 64]]})
            c.search("iris", ds, "species", algorithms={"logistic_regression": {"C": [0.1, 1]},
                     "random_forest": {"n_estimators": [50, 200]}}, split={"cv": 5})
        """
        body = {
            "model": model,
            "dataset": dataset,
            "target": target,
            "algorithm": algorithm,
            "search": search,
            "algorithms": algorithms,
            "params": params,
            "metric": metric,
            "direction": direction,
            "rank_by": rank_by,
            "task": task,
            "features": features,
            "preprocessing": preprocessing,
            "split": split,
            "device": device,
        }
        return self._create_job("/v1/jobs/search", body, wait, idempotency_key)

    def predict(
        self,
        model: str,
        inputs: list[Any],
        version: str | int | None = None,
        postprocess: dict[str, Any] | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit a prediction job on raw rows; returns the job (its `result` is set once it succeeded)."""
        body = {"version": version, "inputs": inputs, "postprocess": postprocess}
        return self._create_job(f"/v1/models/{model}/predict", body, wait, idempotency_key)

    def batch_predict(
        self,
        model: str,
        dataset: str,
        version: str | int | None = None,
        postprocess: dict[str, Any] | None = None,
        columns: list[str] | None = None,
        format: str | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Score a whole uploaded dataset on the batch workers; returns the job. Once it succeeded, fetch the
        file with `download_output(job_id, path)`. `columns` are copied into the output first (e.g. an id);
        `format` is "csv" (default) or "parquet"."""
        body = {
            "version": version,
            "dataset": dataset,
            "postprocess": postprocess,
            "columns": columns,
            "format": format,
        }
        return self._create_job(f"/v1/models/{model}/batch-predict", body, wait, idempotency_key)

    def download_output(self, job_id: str, path: str | Path) -> Path:
        """Stream a succeeded batch prediction's output file to `path`: written under a temporary name, checked
        against the announced Content-Length, then renamed, so `path` never holds half a file."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/output", headers={"Accept": "*/*"}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_for(response.status_code, _problem(response))
                size = 0
                with tmp.open("wb") as fh:
                    for block in response.iter_bytes(1 << 20):
                        fh.write(block)
                        size += len(block)
                expected = response.headers.get("Content-Length")
                if expected is not None and int(expected) != size:
                    raise Unreachable(
                        None,
                        {
                            "title": f"the download of job {job_id}'s output broke off",
                            "detail": f"got {size} of {expected} bytes; download it again",
                        },
                    )
        except httpx.TransportError as exc:
            tmp.unlink(missing_ok=True)
            raise Unreachable(
                None,
                {
                    "title": f"cannot reach mlqueue at {self.url}",
                    "detail": f"cannot reach mlqueue at {self.url}: {exc}",
                },
            ) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)
        return path

    def optimize(
        self,
        model: str,
        version: int,
        method: str,
        params: dict[str, Any] | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit an optimize job (quantize_dynamic, prune, distill, export) of one version; returns the job.
        Its result, once it succeeded, has the new `version` and the `comparison` with its parent."""
        body = {**(params or {}), "method": method}
        return self._create_job(f"/v1/models/{model}/versions/{int(version)}/optimize", body, wait, idempotency_key)

    def rollout(
        self,
        model: str,
        to: int,
        alias: str = "production",
        steps: list[int] | None = None,
        step_seconds: float | None = None,
        guard: dict[str, float] | None = None,
        follow: bool = False,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start a guarded rollout of version `to` on `alias` (docs/rollouts.md); returns the job, or with
        `follow=True` the finished job, fed by its event stream (each step's figures reach `on_progress`)."""
        body = {"alias": alias, "to": int(to), "steps": steps, "step_seconds": step_seconds, "guard": guard}
        job = self._create_job(f"/v1/models/{model}/rollouts", body, None, idempotency_key)
        return self.follow(job["id"], on_progress=on_progress) if follow else job

    def set_traffic(
        self, name: str, alias: str, versions: dict[int, int], shadow: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """Split `alias` between versions ({3: 90, 4: 10}: percents), with an optional shadow {"version", "percent"}."""
        body = {"versions": {str(v): w for v, w in versions.items()}, "shadow": shadow}
        found: dict[str, Any] = self._json("PUT", f"/v1/models/{name}/aliases/{alias}", json=body)
        return found

    def live(self, name: str, version: int, window: str = "5m") -> dict[str, Any]:
        """A version's live figures over the last `window` (5m or 1h)."""
        return self._object("GET", f"/v1/models/{name}/versions/{int(version)}/live", params={"window": window})

    def _create_job(self, path: str, body: dict[str, Any], wait: float | None, key: str | None) -> dict[str, Any]:
        body = {k: v for k, v in body.items() if v is not None}
        # A key of our own makes a retried POST return the same job instead of queueing a second one.
        headers = {"Idempotency-Key": key or uuid.uuid4().hex}
        return self._object(
            "POST", path, json=body, headers=headers, params=self._wait_param(wait), retry=True, wait=wait
        )

    def get_job(self, job_id: str, wait: float | None = None) -> dict[str, Any]:
        return self._object("GET", f"/v1/jobs/{job_id}", params=self._wait_param(wait), wait=wait)

    def list_jobs(
        self,
        status: str | None = None,
        type: str | None = None,
        model: str | None = None,
        limit: int | None = None,
        page_size: int = 50,
    ) -> Iterator[dict[str, Any]]:
        """Iterate over the tenant's jobs, newest first, page by page (at most `limit` of them)."""
        params = {"status": status, "type": type, "model": model, "limit": page_size}
        return self._pages("/v1/jobs", params, limit)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask a job to stop; returns the job. A job already final raises Conflict."""
        return self._object("POST", f"/v1/jobs/{job_id}/cancel", retry=True)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        poll: float = 1.0,
        step: float = MAX_WAIT_S,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the job is final and return it, whatever its status; WaitTimeout after `timeout` s.

        Each request asks the server to hold it for up to `step` seconds (?wait=, at most 30), so a finished job
        is seen at once without polling; a server that answers early is polled again after Retry-After (or
        `poll`). `on_progress(job)` is called whenever the job's status or progress changed; give a small
        `step` with it to see each epoch.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Any = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            hold = step if remaining is None else max(min(step, remaining), 0.0)
            started = time.monotonic()
            response = self._request("GET", f"/v1/jobs/{job_id}", params=self._wait_param(hold), wait=hold)
            job: dict[str, Any] = response.json()
            state = (job.get("status"), job.get("progress"))
            if on_progress is not None and state != last:
                on_progress(job)
            last = state
            if job.get("status") in FINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout or 0.0)
            # The server held the request as asked: ask again at once. It answered early: back off a little.
            elapsed = time.monotonic() - started
            if elapsed < hold - 0.5 or hold < 1.0:
                pause = retry_after(response, poll)
                if deadline is not None:
                    pause = min(pause, max(deadline - time.monotonic(), 0.0))
                time.sleep(max(pause, 0.05))

    def events(self, job_id: str, last_event_id: str | None = None, reconnects: int = 5) -> Iterator[dict[str, Any]]:
        """The job's live events (GET /v1/jobs/{id}/events): its state first, then each status and progress change,
        the whole job last; ends after the final status.

        Each item is the event's data with `event` (snapshot | queued | running | progress | cancel_requested | a
        final status) and `event_id`. A dropped connection is resumed with Last-Event-ID (up to `reconnects` times
        in a row), so no change is missed.
        """
        path = f"/v1/jobs/{job_id}/events"
        for item in self._sse(path, last_event_id, reconnects):
            yield item
            if item.get("event") in FINAL:
                return

    def tenant_events(self, last_event_id: str | None = None, reconnects: int = 5) -> Iterator[dict[str, Any]]:
        """Every status and progress change of the tenant's jobs from now on (GET /v1/events); never ends by itself.
        Each item has the job's `id`, `type`, `model`, `status`, `progress`, `event` and `event_id`."""
        yield from self._sse("/v1/events", last_event_id, reconnects)

    def _sse(self, path: str, last_event_id: str | None, reconnects: int) -> Iterator[dict[str, Any]]:
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            try:
                # No read timeout: the server sends a comment every 15 s, and a dead connection is a read error.
                with self._http.stream(
                    "GET", path, headers=headers, timeout=httpx.Timeout(self.timeout, read=60.0)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise error_for(response.status_code, _problem(response))
                    for event_id, data in _parse_sse(response.iter_lines()):
                        failures = 0
                        if event_id:
                            last_event_id = event_id
                        yield {**data, "event_id": event_id}
                return  # the server ended the stream
            except httpx.TransportError as exc:
                failures += 1
                if failures > reconnects:
                    raise Unreachable(
                        None,
                        {
                            "title": f"cannot reach mlqueue at {self.url}",
                            "detail": f"the event stream of {path} broke: {exc}",
                        },
                    ) from None
                time.sleep(min(0.5 * 2**failures, 5.0))

    def follow(
        self, job_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Like `wait()`, but fed by the job's event stream (every epoch arrives as it happens); falls back to
        waiting by polling when the server has no stream for this client (too many streams open, an old server)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for event in self.events(job_id):
                if on_progress is not None:
                    on_progress(event)
                if event.get("event") in FINAL:
                    return {k: v for k, v in event.items() if k not in ("event", "event_id")}
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except (MLQueueError, httpx.HTTPError):
            pass  # 429 past the stream caps, 404 from an older server, a broken stream: poll instead
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return self.wait(job_id, timeout=remaining, step=1.0 if on_progress else MAX_WAIT_S, on_progress=on_progress)

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for the job and return its `result`; JobFailed or JobCancelled when it did not succeed."""
        job = self.wait(job_id, timeout=timeout)
        if job["status"] == "failed":
            raise JobFailed(job)
        if job["status"] == "cancelled":
            raise JobCancelled(job)
        return job.get("result")

    # -- models --------------------------------------------------------------------------------------------------

    def list_models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/models").get("items", []))

    def get_model(self, name: str) -> dict[str, Any]:
        return self._object("GET", f"/v1/models/{name}")

    def get_version(self, name: str, version: int | str) -> dict[str, Any]:
        return self._object("GET", f"/v1/models/{name}/versions/{version}")

    def upload_model(
        self,
        name: str,
        model: str | Path | bytes,
        tokenizer: str | Path | bytes | None = None,
        metadata: dict[str, Any] | str | Path | None = None,
        external_data: list[str | Path] | None = None,
    ) -> dict[str, Any]:
        """Register an ONNX model (a path or its bytes) as the next version of `name`; returns its manifest.

        `tokenizer`: a Hugging Face tokenizer.json for a text model; `metadata`: a dict or a JSON file (task,
        labels, output, output_kind, features, text, max_length, batch: docs/models.md); `external_data`: files the
        graph keeps its weights in, beside it. The server checks the model first: a 422 names the field at fault."""

        def content(value: str | Path | bytes) -> bytes:
            return value if isinstance(value, bytes) else Path(value).read_bytes()

        files: list[tuple[str, tuple[str, bytes, str]]] = [
            ("model", ("model.onnx", content(model), "application/octet-stream"))
        ]
        if tokenizer is not None:
            files.append(("tokenizer", ("tokenizer.json", content(tokenizer), "application/json")))
        for extra in external_data or []:
            files.append(("external_data", (Path(extra).name, Path(extra).read_bytes(), "application/octet-stream")))
        data: dict[str, str] = {}
        if isinstance(metadata, dict):
            data["metadata"] = json.dumps(metadata)
        elif metadata is not None:
            data["metadata"] = Path(metadata).read_text()
        return self._object("POST", f"/v1/models/{name}/versions", files=files, data=data)

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any] | None:
        body: dict[str, Any] | None = self._json(
            "PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": int(version)}
        )
        return body

    def delete_alias(self, name: str, alias: str) -> None:
        self._request("DELETE", f"/v1/models/{name}/aliases/{alias}")

    def download_artifact(self, name: str, version: int) -> bytes:
        """A version's artifact: the exported file of an export version, else the version as a .tar.gz."""
        return self._request("GET", f"/v1/models/{name}/versions/{int(version)}/artifact").content

    def delete_version(self, name: str, version: int) -> None:
        self._request("DELETE", f"/v1/models/{name}/versions/{version}")

    # -- service -------------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._object("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """The /readyz body; raises ServiceUnavailable (503) while Redis or a queue's workers are missing."""
        return self._object("GET", "/readyz", retry=False)


def _problem(response: httpx.Response) -> dict[str, Any]:
    """The problem details of an error answer; a made-up one when the body is not JSON (a proxy's HTML page)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        body.setdefault("status", response.status_code)
        body.setdefault("title", response.reason_phrase)
        return body
    text = " ".join(response.text.split())[:200]
    return {"status": response.status_code, "title": response.reason_phrase, "detail": text}


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(id, data as JSON) of each event in the lines of a text/event-stream; comments and `retry:` are skipped."""
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event_id, json.loads("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("id:"):
            event_id = line[3:].strip()
