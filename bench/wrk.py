"""Closed-loop load with wrk (-t1 -c32 --latency), a Lua script for the POST body, and its output parsed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

LUA = """
wrk.method = "POST"
%s
wrk.body = %s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) not200 = 0 end
function response(status, headers, body) if status ~= 200 then not200 = not200 + 1 end end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("not200") end
  io.write(string.format("NOT200 %%d\\n", n))
end
"""
# Paced load (W4): each connection waits `interval` ms before each request: one request per connection every
# interval + latency ms. wrk's Lua has no wall clock, so the caller subtracts a latency measured beforehand
# (see pacing_interval); the measured rate is what counts.
PACED = "\nfunction delay() return %d end\n"
JSON_HEADERS = {"Content-Type": "application/json", "Prefer": "wait=10"}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (or run `make bench`, which does)")
    return path


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def pacing_interval(rate: float, connections: int, latency_ms: float = 0.0) -> int:
    """The per-connection delay (ms) for about `rate` req/s when a request takes `latency_ms`."""
    return max(1, round(connections * 1000 / rate - latency_ms))


def run(
    url: str,
    body: dict[str, Any] | bytes,
    seconds: float,
    workdir: Path,
    connections: int = 32,
    rate: float | None = None,
    latency_ms: float = 0.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run against `url`; req/s, p50/p99 (ms), non-2xx, non-200 (e.g. 202: not answered in time).

    With `rate`, the load is paced at about `rate` req/s (see PACED) instead of closed-loop as fast as possible.
    `body` is JSON, or raw bytes (sent with `headers`, e.g. an OIP binary request).
    """
    script = workdir / "post.lua"
    sent = JSON_HEADERS if headers is None else headers
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in sent.items())
    if isinstance(body, bytes):
        text = '"' + "".join(f"\\{b}" for b in body) + '"'  # Lua decimal escapes: any byte
    else:
        text = "[==[" + json.dumps(body) + "]==]"  # a Lua long string holds the JSON as it is
    lua = LUA % (lines, text)
    if rate:
        lua += PACED % pacing_interval(rate, connections, latency_ms)
    script.write_text(lua)
    argv = [
        require_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    result: dict[str, Any] = {"raw": out}
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(match.group(1)) if match else 0.0
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        result[f"p{pct}_ms"] = _ms(match.group(1)) if match else None
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors:.*?timeout (\d+)", out)
    result["timeouts"] = int(match.group(1)) if match else 0
    match = re.search(r"NOT200 (\d+)", out)
    result["non_200"] = int(match.group(1)) if match else 0
    match = re.search(r"(\d+) requests in", out)
    result["requests"] = int(match.group(1)) if match else 0
    return result
