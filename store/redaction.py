"""Credentials never reach a log line: every log record is redacted when it is made, whatever logger made it.

With `--loglevel debug`, botocore logs each request's headers (the access key id in `Credential=`, once per request
and retry), Celery logs its broker URL (a Redis password), and any exception may quote a URL. Filters on handlers
would miss handlers that gunicorn or Celery install later, so this replaces the log record factory: a record is
made only after its logger's level check, and is then formatted once, with every known secret value and every
credential-shaped text (`Credential=…`, `Signature=…`, a bearer token, a URL's password) replaced by `***`.
Installed at the process edges (api/wsgi.py, worker/app.py). Stdlib only.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from store.settings import Settings

MASK = "***"
ENV_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLQ_SECRET_KEY")
# Credential-shaped text, whatever its value: SigV4's Credential= and Signature=, the session token header, bearer
# tokens, and the password of a URL (redis://:pw@host, redis://user:pw@host).
PATTERNS = (
    (re.compile(r"(Credential=)[^/,\s'\"]+"), r"\1" + MASK),
    (re.compile(r"(Signature=)[0-9a-fA-F]+"), r"\1" + MASK),
    (re.compile(r"((?:X-Amz-Security-Token|x-amz-security-token)['\"]?\s*[:=]\s*['\"]?)[^'\",\s&]+"), r"\1" + MASK),
    (re.compile(r"(Bearer\s+)[^\s'\",]+", re.IGNORECASE), r"\1" + MASK),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]*:)[^@\s'\"/]+(@)"), r"\1" + MASK + r"\2"),
)
_installed: dict[str, Any] = {}


def secrets_of(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """The secret values this process knows: the settings' key and tokens, the AWS credentials it runs with."""
    found = [env.get(name, "") for name in ENV_SECRETS] + [settings.secret_key, *settings.auth_tokens]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def install(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Redact every log record this process makes from now on (again: the secrets are replaced, not added)."""
    secrets = secrets_of(settings, os.environ if env is None else env)
    base: Callable[..., logging.LogRecord] = _installed.get("base") or logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            record.msg, record.args = redact(record.getMessage(), secrets), None
        except Exception:  # noqa: BLE001 - a record whose arguments do not format: leave it to the handler
            return record
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(formatter.formatException(record.exc_info), secrets)
        return record

    _installed["base"] = base
    logging.setLogRecordFactory(factory)


def uninstall() -> None:
    """Back to the factory before install() (tests)."""
    if "base" in _installed:
        logging.setLogRecordFactory(_installed.pop("base"))
