"""The Lua scripts of store/lua/, read as package data and composed; their replies parsed into outcome enums.

A script is one file, `store/lua/<name>.lua`, whose header names every KEYS[i] and ARGV[i] and its replies
(tests/unit/test_lua_scripts.py checks). Shared code (the key names a script derives, `emit`, `finish`) lives in
`store/lua/lib/`; a file pulls a library in with a line `-- #include lib/<file>.lua`. Includes are resolved
depth first and each file is included at most once, so a library's own includes come before it and two paths to
one library do not define its functions twice. The result is one self-contained source, as Redis needs it.

Every script replies with an array whose first element is its outcome, a word from a fixed set (an enum of
store/script_outcomes.py), and whose other elements are data (BEGIN's token, CLAIM's holder). `outcome()` parses
that reply.

`LuaScript` runs a script by EVALSHA and loads it when Redis answers NOSCRIPT, like redis-py's `Script`, but in a
pipeline it does not ask SCRIPT EXISTS first (redis-py's `Script` does, one more round trip before every pipeline:
~12 % of an inference worker's CPU). `run_pipeline` catches the NOSCRIPT of a Redis that lost its scripts instead.
Stdlib + redis-py only (the API imports it).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from importlib.resources import files
from typing import Any, TypeVar

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

_INCLUDE = re.compile(r"^--\s*#include\s+(\S+)\s*$", re.MULTILINE)
# The scripts travel with this module (the package it is in, whatever its name: see pyproject package-data).
LUA_DIR = files(__package__).joinpath("lua")

E = TypeVar("E", bound=StrEnum)


def raw_source(path: str) -> str:
    """The text of `store/lua/<path>` as it is in the package, includes unresolved."""
    return LUA_DIR.joinpath(*path.split("/")).read_text(encoding="utf-8")


def _compose(path: str, seen: set[str], parts: list[str]) -> None:
    if path in seen:
        return
    seen.add(path)
    text = raw_source(path)
    for included in _INCLUDE.findall(text):
        _compose(included, seen, parts)
    parts.append(f"-- ---- {path} ----\n{text}")


@functools.cache
def source(name: str) -> str:
    """The runnable source of script `name` (store/lua/<name>.lua): its libraries first, then the script."""
    parts: list[str] = []
    _compose(f"{name}.lua", set(), parts)
    return "\n".join(parts)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def outcome(reply: Any, kind: type[E]) -> tuple[E, list[Any]]:
    """A script's reply, `{outcome, data...}`, as (the outcome of enum `kind`, the data).

    Raises ValueError for a word `kind` does not have: a script and its enum disagree, which is a bug to see."""
    if not isinstance(reply, list) or not reply:
        raise ValueError(f"a script replied {reply!r}; every script replies {{outcome, data...}}")
    return kind(_text(reply[0])), list(reply[1:])


class LuaScript:
    """One script of store/lua/ on one Redis client, run by its SHA1 (EVALSHA)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.source = source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run it now; a Redis that does not have it (first use, restart, SCRIPT FLUSH) gets it, then runs it."""
        try:
            return self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.load()
            return self.client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue it on `pipe`, to be sent by `run_pipeline` (which handles a Redis that does not have it)."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def load(self) -> None:
        self.client.script_load(self.source)


def run_pipeline(client: redis.Redis, fill: Callable[[Pipeline], None], scripts: Iterable[LuaScript]) -> list[Any]:
    """Send the commands `fill` queues (scripts with `LuaScript.queue`) in one non-transactional round trip.

    A Redis that lost its scripts (a restart, SCRIPT FLUSH) answers NOSCRIPT to each script call, which then did
    nothing; the other commands did run. `scripts` are then loaded and the whole pipeline is sent once more, so
    every other command `fill` queues must be safe to repeat (an ack, a delete; a counter may count twice), and
    so must its scripts (a SCRIPT FLUSH from elsewhere may land between two calls of one pipeline).
    """
    try:
        return _execute(client, fill)
    except NoScriptError:
        for script in scripts:
            script.load()
    return _execute(client, fill)


def _execute(client: redis.Redis, fill: Callable[[Pipeline], None]) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        fill(pipe)
        return pipe.execute()
