"""Credentials never reach a log line (issue 18, finding 7): with debug logging, botocore printed the access key id
in every request's headers (66 times in one `--loglevel debug` run). A real S3 server (rclone serve s3)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from s3_server import RcloneS3

from store import redaction
from store.artifacts import S3Store
from store.settings import Settings


@pytest.fixture
def redacting(s3_server: RcloneS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(secret_key="the-mlq-secret-key", auth_tokens={"tok-alice-123": "alice"})
    redaction.install(settings)
    yield s3_server.env
    redaction.uninstall()


def test_debug_logs_of_the_s3_client_carry_no_credential(
    s3_server: RcloneS3, redacting: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    store = S3Store(s3_server.bucket(), "p", s3_server.endpoint)
    with caplog.at_level(logging.DEBUG):
        store.put_bytes("a/b", b"x")
        assert store.get_bytes("a/b") == b"x"
        store.keys("")
    text = caplog.text
    assert "Credential=***" in text  # the debug logs were there, and held the key id before this fix
    for secret in (redacting["AWS_ACCESS_KEY_ID"], redacting["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in text


def test_known_secrets_and_credential_shaped_text_are_masked_in_messages_and_tracebacks(
    redacting: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("mlq.test")
    with caplog.at_level(logging.INFO):
        log.info("broker %s", "redis://:hunter22@redis:6379/0")
        log.info("headers %r", {"Authorization": "Bearer tok-alice-123"})
        log.info("key %s and %s", "the-mlq-secret-key", "100% literal")
        try:
            raise RuntimeError(f"could not connect with {redacting['AWS_SECRET_ACCESS_KEY']}")
        except RuntimeError:
            log.exception("failed")
    text = caplog.text
    for secret in ("hunter22", "tok-alice-123", "the-mlq-secret-key", redacting["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in text, secret
    assert "redis://:***@redis:6379/0" in text and "100% literal" in text and "RuntimeError" in text
