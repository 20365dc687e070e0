"""A client that stops reading an event stream is cut off after MLQ_CLIENT_TIMEOUT_S, and that expected end is one
info line in the API's log, not gunicorn's ERROR "Socket error processing request" with a traceback (issue 18,
finding 7). A real gunicorn (gevent) and a real socket that reads nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import redis
from api_server import gunicorn
from polling import wait_until

from store.jobs import JobStore

EVENTS = 3000  # ~12 MB of events: far more than the two sockets' buffers hold, so the server's write blocks
PAYLOAD = "x" * 3900  # under the events' progress cap (4 KB): each event carries it whole


def test_a_stalled_reader_of_a_stream_is_closed_with_an_info_line(tmp_path: Path, redis_url: str) -> None:
    jobs = JobStore(redis.Redis.from_url(redis_url, decode_responses=True), ttl_s=600)
    job_id = str(jobs.create("default", "train", "m", {})["id"])
    assert jobs.mark_running(job_id, "w@h")
    for i in range(EVENTS):
        jobs.set_progress(job_id, {"fraction": i / EVENTS, "message": PAYLOAD})
    env = {"MLQ_REDIS_URL": redis_url, "MLQ_HOME": str(tmp_path / "home"), "MLQ_CLIENT_TIMEOUT_S": "1"}
    log = tmp_path / "api.log"
    with gunicorn(env, log) as base:
        host, port = base.removeprefix("http://").split(":")
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
        client.connect((host, int(port)))
        client.sendall(f"GET /v1/events?last_event_id=0-0 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        try:
            wait_until(
                lambda: "MLQ_CLIENT_TIMEOUT_S" in log.read_text() or "Socket error" in log.read_text(),
                60.0,
                what="the API closing the stalled stream",
            )
        finally:
            client.close()
    text = log.read_text()
    assert "[INFO] closed a connection whose client read or sent nothing for MLQ_CLIENT_TIMEOUT_S" in text, text[-3000:]
    assert "Socket error processing request" not in text and "Traceback" not in text, text[-3000:]
