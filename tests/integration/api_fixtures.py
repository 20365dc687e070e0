"""Fixtures of the test_api_* modules, loaded with `pytest_plugins = ["api_fixtures"]`: an app on a tmp MLQ_HOME
and the test Redis, without and with bearer tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import TOKENS, make_settings
from flask.testing import FlaskClient

from api import create_app
from store.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path / "home", redis_url)


@pytest.fixture
def client(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


@pytest.fixture
def auth_settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path / "home", redis_url, auth_tokens=TOKENS)


@pytest.fixture
def auth_client(auth_settings: Settings) -> FlaskClient:
    return create_app(auth_settings).test_client()
