"""The Host allow-list against DNS rebinding (issue 18, finding 4): without tokens, a page on an attacker's domain
that resolves to 127.0.0.1 sent `Host: rebind.evil.example`, a matching Origin, no Sec-Fetch-Site, and deleted a
dataset (204). Now any Host but the loopback names, the bind address and MLQ_ALLOWED_HOSTS is a 400 before any
route runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest
from api_server import gunicorn
from api_support import TOKENS, upload
from flask.testing import FlaskClient

from api import create_app
from api.hosts import host_name
from store.settings import Settings, SettingsError, parse_allowed_hosts

pytest_plugins = ["api_fixtures"]

EVIL = "rebind.evil.example:8000"


def rebound(client: FlaskClient, method: str, url: str, host: str = EVIL) -> tuple[int, dict[str, object]]:
    response = client.open(url, method=method, headers={"Host": host, "Origin": f"http://{host}"})
    return response.status_code, response.get_json(silent=True) or {}


def test_a_rebound_page_cannot_drive_an_unauthenticated_api(client: FlaskClient) -> None:
    dataset = upload(client)
    for method, url in (("DELETE", f"/v1/datasets/{dataset['id']}"), ("GET", "/v1/jobs"), ("GET", "/healthz")):
        status, problem = rebound(client, method, url)
        assert status == 400, (method, url)
        assert problem["code"] == "host_not_allowed"
        assert "MLQ_ALLOWED_HOSTS" in str(problem["detail"]) and "rebind.evil.example" in str(problem["detail"])
    assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 200  # still there


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1:5000", "[::1]:8000", "LOCALHOST.", "10.1.2.3:8000", "[fd00::7]"]
)
def test_the_loopback_names_and_ip_addresses_are_answered(client: FlaskClient, host: str) -> None:
    # An IP address cannot be rebound (the page's origin is that IP); probes send the pod's IP as Host.
    assert client.get("/v1/jobs", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["rebind.evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "1.2.3.4.x"])
def test_names_that_look_local_are_not(client: FlaskClient, host: str) -> None:
    assert rebound(client, "GET", "/v1/jobs", host)[0] == 400


def test_allowed_hosts_adds_names_and_star_allows_every_host(settings: Settings) -> None:
    listed = create_app(dataclasses.replace(settings, allowed_hosts=("api.example.com",))).test_client()
    assert listed.get("/v1/jobs", headers={"Host": "api.example.com:443"}).status_code == 200
    assert listed.get("/v1/jobs", headers={"Host": "127.0.0.1"}).status_code == 200  # health checks still work
    assert rebound(listed, "GET", "/v1/jobs")[0] == 400
    star = create_app(dataclasses.replace(settings, allowed_hosts=("*",))).test_client()
    assert rebound(star, "GET", "/v1/jobs")[0] == 200


def test_with_tokens_every_host_is_answered_unless_listed(auth_settings: Settings) -> None:
    # A rebound page has no token: the 401 is the defence, and deployments behind a proxy need no setting.
    auth = create_app(auth_settings).test_client()
    token = {"Authorization": f"Bearer {next(iter(TOKENS))}"}
    assert auth.get("/v1/jobs", headers={"Host": EVIL, **token}).status_code == 200
    listed = create_app(dataclasses.replace(auth_settings, allowed_hosts=("api.example.com",))).test_client()
    assert listed.get("/v1/jobs", headers={"Host": EVIL, **token}).status_code == 400


def test_settings_parse_the_list() -> None:
    assert parse_allowed_hosts(" API.example.com., [::1],10.0.0.5 ") == ("api.example.com", "::1", "10.0.0.5")
    assert parse_allowed_hosts("*") == ("*",)
    assert Settings.from_env({}).allowed_hosts == ()
    for bad in ("http://x", "x:80", "a b", "x/y"):
        with pytest.raises(SettingsError, match="MLQ_ALLOWED_HOSTS"):
            parse_allowed_hosts(bad)
    assert host_name("[::1]:8000") == "::1" and host_name("Example.COM.:80") == "example.com"


def test_under_gunicorn_the_bind_address_is_answered_and_a_rebound_name_is_not(tmp_path: Path, redis_url: str) -> None:
    env = {"MLQ_REDIS_URL": redis_url, "MLQ_HOME": str(tmp_path / "home"), "MLQ_AUTH_TOKENS": ""}
    with gunicorn(env, tmp_path / "api.log") as base:
        port = base.rsplit(":", 1)[1]
        assert httpx.get(base + "/v1/jobs").status_code == 200  # Host: 127.0.0.1:<port>, the bind address
        refused = httpx.get(base + "/v1/jobs", headers={"Host": f"rebind.evil.example:{port}"})
        assert refused.status_code == 400 and refused.json()["code"] == "host_not_allowed"
