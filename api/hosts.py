"""The Host allow-list: a request whose Host header is not one this API is known by is refused (400) before any
route runs, against DNS rebinding.

Without MLQ_AUTH_TOKENS every request is tenant `default`, so a page on an attacker's domain that re-resolves to
127.0.0.1 could drive a developer's local `mlq dev` as same-origin (its Origin and Host are the attacker's name,
which the CSRF check compares and finds equal). The browser still sends that name as Host, so refusing unknown
Hosts closes it. Always answered: localhost, 127.0.0.1, ::1, the address the server is bound to (WSGI's
SERVER_NAME, unless it is 0.0.0.0 or ::) and any IP address: rebinding needs a domain name (a page at
http://<ip>/ has that IP as its origin, so its requests go to that IP), and load balancers' and Kubernetes' probes
send the pod's IP as Host. MLQ_ALLOWED_HOSTS adds names. Left
unset with tokens, every Host is answered (a rebound page has no token); `*` answers every Host (behind a proxy
that checks it). docs/operations.md.
"""

from __future__ import annotations

import ipaddress

from flask import Flask, request

from api.problems import HostNotAllowed
from store.settings import Settings

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})  # bound to every interface: not a name anyone is reached by


def host_name(host: str) -> str:
    """The name part of a Host header (`[::1]:8000` → `::1`, `Example.COM.:80` → `example.com`)."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal, with or without a port
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The names answered besides the bind address; None: every Host."""
    if "*" in settings.allowed_hosts or (not settings.allowed_hosts and settings.auth_tokens):
        return None
    return LOOPBACK | frozenset(settings.allowed_hosts)


def init_hosts(app: Flask, settings: Settings) -> None:
    """Install the hook that answers 400 to a request whose Host is not allowed (first: before any route)."""
    allowed = allowed_hosts(settings)
    if allowed is None:
        return

    @app.before_request
    def refuse_unknown_host() -> None:
        name = host_name(request.host)
        if name in allowed or _is_ip(name):
            return
        bound = host_name(str(request.environ.get("SERVER_NAME", "")))
        if name == bound and bound not in WILDCARD_BINDS:
            return
        raise HostNotAllowed(
            f"Host {name!r} is not one this server answers (DNS rebinding protection); use "
            f"{', '.join(sorted(allowed))}, or add the name to MLQ_ALLOWED_HOSTS (comma-separated; '*' allows "
            "every Host behind a proxy that checks it)",
            errors=[{"loc": ["header", "Host"], "msg": "not in MLQ_ALLOWED_HOSTS"}],
        )
