"""MLQ_REDIS_URL: plain Redis or `redis+sentinel://`, parsed in one place; a malformed one stops the process."""

from __future__ import annotations

import pytest

from store.celery_config import make_celery
from store.redis_url import SentinelTarget, kombu_broker, parse_sentinel
from store.settings import Settings, SettingsError

URL = "redis+sentinel://s1:26379,s2:26380/mymaster/3"


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    assert parse_sentinel(URL) == SentinelTarget((("s1", 26379), ("s2", 26380)), "mymaster", 3)
    assert parse_sentinel("redis+sentinel://:p%40ss@h:1/m") == SentinelTarget((("h", 1),), "m", 0, "p@ss")
    assert parse_sentinel("redis://localhost:6379/0") is None


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://",
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/",
        "redis+sentinel://s1/mymaster",
        "redis+sentinel://s1:port/mymaster",
        "redis+sentinel://s1:26379,/mymaster",
        "redis+sentinel://s1:99999/mymaster",
        "redis+sentinel://s1:26379/mymaster/zero",
        "redis+sentinel://s1:26379/mymaster/0/extra",
        "mysql://localhost/0",
    ],
)
def test_a_malformed_url_is_a_start_error_naming_the_setting(url: str) -> None:
    with pytest.raises(SettingsError, match="MLQ_REDIS_URL"):
        Settings.from_env({"MLQ_REDIS_URL": url})


def test_the_error_never_shows_the_password() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"MLQ_REDIS_URL": "redis+sentinel://:hunter2@s1/mymaster"})
    assert "hunter2" not in str(caught.value)


def test_celery_gets_kombus_sentinel_transport_with_the_master_name() -> None:
    assert kombu_broker(URL) == ("sentinel://s1:26379/3;sentinel://s2:26380/3", {"master_name": "mymaster"})
    app = make_celery(Settings(redis_url=URL))
    assert app.conf.broker_url.startswith("sentinel://s1:26379/3")
    assert app.conf.broker_transport_options["master_name"] == "mymaster"
    assert app.conf.broker_transport.endswith(":SentinelTransport")
    assert app.conf.broker_transport_options["visibility_timeout"] == Settings().visibility_timeout_s
