"""Helpers of the tests/reliability/test_api_*, test_malformed_*, test_schemathesis and test_load modules:
the API under a real gunicorn on loopback (tests/api_server.py), and the helpers of tests/integration/api_support.py."""

from __future__ import annotations

import sys
from pathlib import Path

from api_server import gunicorn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from api_support import ALICE, BOB, IRIS_CSV, TOKENS, make_settings, register_model, train_body, upload  # noqa: E402

__all__ = [
    "ALICE",
    "BOB",
    "IRIS_CSV",
    "TOKENS",
    "make_settings",
    "register_model",
    "train_body",
    "upload",
    "gunicorn",
    "token_env",
]


def token_env(tokens: dict[str, str]) -> str:
    """{token: tenant} → the MLQ_AUTH_TOKENS form `tenant:token,…`."""
    return ",".join(f"{tenant}:{token}" for token, tenant in tokens.items())
