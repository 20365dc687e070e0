"""One error hierarchy: every error the server raises descends from MLQError, has its own stable code, and every
code is documented in docs/api.md's error table."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from training.errors import MLQError

ROOT = Path(__file__).resolve().parents[2]
ABSTRACT = {"error"}  # MLQError and ApiError themselves: bases, never raised


def _import_everything() -> None:
    for package in ("training", "store", "worker", "api", "mlqueue"):
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            if info.name != "gunicorn_conf":  # a gunicorn config file, loaded by path
                importlib.import_module(f"{package}.{info.name}")


def _subclasses(cls: type[MLQError]) -> list[type[MLQError]]:
    found: list[type[MLQError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_error_class_has_its_own_code_and_every_code_is_documented() -> None:
    _import_everything()
    classes = _subclasses(MLQError)
    assert len(classes) > 40
    by_code: dict[str, list[str]] = {}
    for cls in classes:
        by_code.setdefault(cls.code, []).append(cls.__qualname__)
    assert {code: names for code, names in by_code.items() if len(names) > 1 and code not in ABSTRACT} == {}
    docs = (ROOT / "docs" / "api.md").read_text()
    table = docs[docs.index("**Error codes.**") : docs.index("- **400** malformed JSON")]
    documented = set(re.findall(r"`([a-z_]+)`", table))
    assert sorted(set(by_code) - ABSTRACT - documented) == []


def test_no_other_exception_roots_in_the_server_packages() -> None:
    """Every exception class in api/, store/, worker/ and training/ is an MLQError (one `except` catches them)."""
    _import_everything()
    strays = []
    for package in ("training", "store", "worker", "api"):
        for path in (ROOT / package).glob("*.py"):
            for name in re.findall(r"^class (\w+)\((?:[\w.]*(?:Exception|Error))\):", path.read_text(), re.M):
                module = importlib.import_module(f"{package}.{path.stem}")
                if not issubclass(getattr(module, name), MLQError):
                    strays.append(f"{package}/{path.name}: {name}")
    assert strays == []
