"""The pieces of W8 and the GPU check that run without a service: the Zipf weights, the cold-load p95 read from
the workers' histogram, and the Python load generator against a small real HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench import loadgen
from bench.w8 import cold_load_p95, zipf_weights


def test_zipf_weights_fall_as_a_power_of_the_rank() -> None:
    weights = zipf_weights(20, 1.1)
    assert abs(sum(weights) - 1) < 1e-9
    assert weights == sorted(weights, reverse=True)
    assert abs(weights[0] / weights[1] - 2**1.1) < 1e-9


def test_the_cold_load_p95_is_read_from_the_histogram_buckets() -> None:
    before = {"load_s:0.05": 10.0}
    after = {"load_s:0.05": 100.0, "load_s:0.25": 10.0}  # 90 loads <= 50 ms, 10 in (100 ms, 250 ms]
    p95 = cold_load_p95(before, after)
    assert p95 is not None and 0.1 < p95 <= 0.25
    assert cold_load_p95(after, after) is None


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load generator expects

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 200 if body.get("ok", True) else 503
        payload = json.dumps({"echo": body}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_load_generator_keeps_its_connections_busy_and_counts_statuses(server: str) -> None:
    sent = {"n": 0}

    def body() -> tuple[str, dict[str, Any]]:
        sent["n"] += 1
        return "/predict", {"ok": sent["n"] % 10 != 0, "n": sent["n"]}  # every tenth request is refused

    result = loadgen.run(server, body, seconds=1.0, connections=4)
    assert result["requests"] > 10 and result["connection_errors"] == []
    assert result["statuses"].keys() <= {"200", "503"} and result["non_200"] == result["statuses"].get("503", 0)
    assert result["non_200"] >= result["requests"] // 10 - 4  # the last request of each connection may go unread
    assert result["p50_ms"] is not None and result["p50_ms"] <= result["p99_ms"]
