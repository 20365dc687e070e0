"""A closed-loop HTTP load generator in Python, for where wrk is missing or a request body varies per request
(W8 picks a model version per request): N keep-alive connections, each sending its next POST when the answer to
the previous one has arrived. asyncio streams and hand-written HTTP/1.1, so one process drives 32 connections at
a few thousand req/s; compare its figures only with figures it measured itself in the same run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

Body = Callable[[], tuple[str, dict[str, Any]]]  # () -> (path, JSON body) of the next request


async def _connection(
    host: str, port: int, next_body: Body, stop_at: float, latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop_at:
            path, body = next_body()
            payload = orjson.dumps(body)
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"Prefer: wait=10\r\nContent-Length: {len(payload)}\r\n\r\n"
            )
            started = time.monotonic()
            writer.write(head.encode() + payload)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            latencies.append(time.monotonic() - started)
            status = int(status_line.split()[1]) if status_line else 0
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def run(url: str, next_body: Body, seconds: float, connections: int = 32) -> dict[str, Any]:
    """Closed-loop load for `seconds`: req/s, p50/p95/p99 (ms), the count of each status, non-200 answers."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def main() -> list[Any]:
        stop_at = time.monotonic() + seconds
        tasks = [_connection(host, port, next_body, stop_at, latencies, statuses) for _ in range(connections)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    started = time.monotonic()
    outcomes = asyncio.run(main())
    wall = time.monotonic() - started
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2) if ordered else None

    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / wall, 1) if wall else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "non_200": sum(v for k, v in statuses.items() if k != 200),
        "connection_errors": [repr(o) for o in outcomes if isinstance(o, BaseException)],
    }
