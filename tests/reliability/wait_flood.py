"""`python wait_flood.py BASE_URL JOB_ID N TOKEN`: N concurrent `GET /v1/jobs/{id}?wait=30` from one asyncio loop.

Run as its own process by tests/reliability/test_serving.py, so the client's CPU never delays the test's probes.
Prints one JSON line per answer as it arrives: {"elapsed", "code", "status", "retry_after"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx


async def flood(base: str, job_id: str, n: int, token: str) -> None:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as http:

        async def one() -> None:
            started = time.monotonic()
            try:
                response = await http.get(f"/v1/jobs/{job_id}?wait=30")
                line = {
                    "elapsed": time.monotonic() - started,
                    "code": response.status_code,
                    "status": response.json().get("status"),
                    "retry_after": response.headers.get("Retry-After"),
                }
            except httpx.HTTPError as exc:
                line = {
                    "elapsed": time.monotonic() - started,
                    "code": -1,
                    "status": type(exc).__name__,
                    "retry_after": None,
                }
            print(json.dumps(line), flush=True)

        await asyncio.gather(*(one() for _ in range(n)))


if __name__ == "__main__":
    asyncio.run(flood(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
