"""The contract of every Lua script in store/lua/: its header, its named locals, its replies, and that it loads.

A script's header (its leading `--` lines) names every KEYS[i] and ARGV[i] it uses, a trailing ARGV list as
`ARGV[n..]`. Its first block (up to the first blank line after the header) gives them names; nothing after it
touches KEYS or ARGV. Libraries (store/lua/lib/) take everything as parameters and touch neither. Every word a
script returns first is a member of its outcome enum, and every member is returned by some script of that enum.
"""

from __future__ import annotations

import re
from enum import StrEnum

import pytest
import redis

from store import job_scripts
from store.lua_loader import LUA_DIR, outcome, raw_source, source
from store.script_outcomes import SCRIPT_OUTCOMES, BeginOutcome, ClaimOutcome

SCRIPTS = sorted(p.name.removesuffix(".lua") for p in LUA_DIR.iterdir() if p.name.endswith(".lua"))
LIBRARIES = sorted(f"lib/{p.name}" for p in LUA_DIR.joinpath("lib").iterdir() if p.name.endswith(".lua"))

_REFERENCE = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_UNPACK = re.compile(r"unpack\(ARGV,\s*(\d+)\)")
_RETURN = re.compile(r"\breturn\s*\{\s*'(\w+)'")


def split_header(text: str) -> tuple[str, str]:
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    return "\n".join(lines[:end]), "\n".join(lines[end:])


def referenced(code: str) -> set[str]:
    """Every KEYS[i]/ARGV[i] the code uses; `unpack(ARGV, n)` counts as ARGV[n..]."""
    found = {f"{kind}[{n}]" for kind, n in _REFERENCE.findall(code)}
    return found | {f"ARGV[{n}..]" for n in _UNPACK.findall(code)}


def test_there_are_the_scripts_the_python_side_knows() -> None:
    assert sorted(SCRIPT_OUTCOMES) == SCRIPTS
    assert LIBRARIES == [
        "lib/emit.lua",
        "lib/fair.lua",
        "lib/fence.lua",
        "lib/finish.lua",
        "lib/guards.lua",
        "lib/keys.lua",
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_names_every_key_and_argument_in_its_header_and_only_in_its_first_block(name: str) -> None:
    header, code = split_header(raw_source(f"{name}.lua"))
    assert header.startswith(f"-- {name}.lua: "), "the header starts with what the script does"
    used = referenced(code)
    assert used, "a script without KEYS or ARGV? then its header says so and this test learns about it"
    named = {f"{kind}[{n}]" for kind, n in _REFERENCE.findall(header)}
    named |= {f"ARGV[{n}..]" for n in re.findall(r"ARGV\[(\d+)\.\.\]", header)}
    assert used <= named, f"{name}.lua uses {sorted(used - named)} without naming them in its header"
    assert named <= used, f"{name}.lua's header names {sorted(named - used)}, which it does not use"
    assert "Returns" in header
    prologue, _, rest = code.strip("\n").partition("\n\n")
    assert referenced(prologue) == used, "the first block names every KEYS/ARGV entry as a local"
    assert not re.search(r"\b(KEYS|ARGV)\b", rest), f"{name}.lua uses KEYS/ARGV after naming them"


@pytest.mark.parametrize("path", LIBRARIES)
def test_a_library_takes_everything_as_parameters(path: str) -> None:
    text = raw_source(path)
    assert text.startswith(f"-- {path}: ")
    assert not re.search(r"\b(KEYS|ARGV)\b", split_header(text)[1])


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_returns_only_outcome_words_of_its_enum(name: str) -> None:
    code = split_header(raw_source(f"{name}.lua"))[1]
    returns = re.findall(r"\breturn\b[^\n]*", code)
    assert returns and all(_RETURN.match(r) for r in returns), f"{name}.lua: every return is {{'outcome', ...}}"
    words = {_RETURN.match(r).group(1) for r in returns}  # type: ignore[union-attr]
    assert words <= {m.value for m in SCRIPT_OUTCOMES[name]}, sorted(words)


def test_every_outcome_of_an_enum_is_returned_by_one_of_its_scripts() -> None:
    returned: dict[type[StrEnum], set[str]] = {}
    for name, kind in SCRIPT_OUTCOMES.items():
        returned.setdefault(kind, set()).update(_RETURN.findall(raw_source(f"{name}.lua")))
    for kind, words in returned.items():
        assert {m.value for m in kind} == words, kind.__name__


def test_a_library_is_included_once_before_the_code_that_uses_it() -> None:
    composed = source("begin")
    order = [m for m in re.findall(r"^-- ---- (\S+) ----$", composed, re.MULTILINE)]
    assert order == ["lib/keys.lua", "lib/emit.lua", "lib/finish.lua", "lib/guards.lua", "begin.lua"]
    assert source("progress").count("local function emit(") == 1
    assert "#include" not in source("admit")


def test_the_event_log_lengths_are_the_same_in_lua_and_python() -> None:
    emit = raw_source("lib/emit.lua")
    assert re.search(r"local JOB_LOG_MAXLEN = (\d+)", emit).group(1) == str(job_scripts.JOB_LOG_MAXLEN)  # type: ignore[union-attr]
    assert re.search(r"local TENANT_LOG_MAXLEN = (\d+)", emit).group(1) == str(  # type: ignore[union-attr]
        job_scripts.TENANT_LOG_MAXLEN
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_compiles_in_redis(name: str, redis_client: redis.Redis) -> None:
    sha = redis_client.script_load(source(name))
    assert redis_client.script_exists(sha) == [True]


def test_a_reply_is_parsed_into_its_outcome_and_data() -> None:
    assert outcome([b"started", 3], BeginOutcome) == (BeginOutcome.STARTED, [3])
    assert outcome(["held", "1"], ClaimOutcome) == (ClaimOutcome.HELD, ["1"])
    with pytest.raises(ValueError):
        outcome([b"running_elsewhere"], ClaimOutcome)  # a word the enum lacks: the script and its enum disagree
    with pytest.raises(ValueError):
        outcome(1, BeginOutcome)  # the old integer replies
