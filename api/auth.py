"""Bearer tokens → tenant. Tokens are compared in constant time against every configured token; never logged."""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, g, request

from api.problems import Unauthorized
from store.settings import Settings, SettingsError
from training.registry import NAME_RE

REALM = 'Bearer realm="mlqueue"'


def _digest(token: str) -> bytes:
    # Hashing first makes every comparison the same length, so timing says nothing about the token's length.
    return hashlib.sha256(token.encode()).digest()


def init_auth(app: Flask, settings: Settings) -> None:
    """Install the hook that sets `g.tenant` for every /v1 and /v2 request (401 when tokens are set and none fits);
    the Open Inference Protocol's health probes (/v2/health/...) need none, like /healthz."""
    known = [(_digest(token), tenant) for token, tenant in settings.auth_tokens.items()]
    for _, tenant in known:
        if not NAME_RE.fullmatch(tenant):
            raise SettingsError(f"MLQ_AUTH_TOKENS: tenant {tenant!r} must match ^[a-z0-9][a-z0-9._-]{{0,62}}$")

    @app.before_request
    def authenticate() -> None:
        path = request.path
        if not (path.startswith("/v1") or (path.startswith("/v2") and not path.startswith("/v2/health/"))):
            return
        if not known:
            g.tenant = "default"
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "missing bearer token: send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": REALM}
            )
        digest = _digest(token)
        tenant = None
        for candidate, owner in known:  # no early exit: every token is compared
            if hmac.compare_digest(digest, candidate):
                tenant = owner
        if tenant is None:
            raise Unauthorized("invalid bearer token", headers={"WWW-Authenticate": REALM + ', error="invalid_token"'})
        g.tenant = tenant
