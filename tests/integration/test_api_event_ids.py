"""Last-Event-ID is validated in full on both SSE routes (issue 18, finding 6): `99999999999999999999-1` passed a
looser regex, Redis refused it, the stream ended right after `retry:` and a browser reconnected with it forever.
Anything but two unsigned 64-bit numbers is a 400 naming the field, before the stream starts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import pytest
from api_support import train_body, upload
from flask.testing import FlaskClient

from store.job_events import U64_MAX, valid_event_id

pytest_plugins = ["api_fixtures"]

BAD = [
    "99999999999999999999-1",
    f"1-{U64_MAX + 1}",
    f"{U64_MAX}-{U64_MAX}",  # valid, but nothing can follow it: Redis refuses it as an exclusive start
    "1-",
    "-1",
    "1",
    "1-1-1",
    "abc",
    "1-1; DROP",
    "0x1-0",
    "+1-0",
    "１-0",  # a fullwidth digit: \\d matches it, int() reads it, Redis does not
]


@pytest.fixture
def job(client: FlaskClient) -> dict[str, Any]:
    response = client.post("/v1/jobs/train", json=train_body(upload(client)["id"]))
    assert response.status_code == 202, response.get_json()
    result: dict[str, Any] = response.get_json()
    return result


@pytest.mark.parametrize("bad", BAD)
def test_a_malformed_last_event_id_is_a_400_on_both_routes(client: FlaskClient, job: dict[str, Any], bad: str) -> None:
    for url in (f"/v1/jobs/{job['id']}/events", "/v1/events"):
        for how, kwargs in (
            ("header", {"headers": {"Last-Event-ID": bad}}),
            ("query", {"query_string": {"last_event_id": bad}}),
        ):
            response = client.get(url, **kwargs)
            assert response.status_code == 400, (url, how, response.data[:200])
            problem = response.get_json()
            assert problem["code"] == "invalid_event_id"
            assert problem["errors"][0]["loc"] == (
                ["header", "Last-Event-ID"] if how == "header" else ["query", "last_event_id"]
            )


@pytest.mark.parametrize("good", ["0-0", "1732891234567-0", f"{U64_MAX}-{U64_MAX - 1}", f"{U64_MAX - 1}-{U64_MAX}", ""])
def test_a_well_formed_id_streams(client: FlaskClient, job: dict[str, Any], good: str) -> None:
    response = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": good}, buffered=False)
    assert response.status_code == 200
    first = next(iter(cast(Iterable[bytes], response.response))).decode()
    assert first.startswith("retry:")
    response.close()


def test_the_parser() -> None:
    assert valid_event_id(None) is None and valid_event_id("  ") is None
    assert valid_event_id(" 5-1 ") == "5-1"
    for bad in BAD:
        with pytest.raises(ValueError):
            valid_event_id(bad)
