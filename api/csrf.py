"""Cross-site request forgery protection for every state-changing request, with or without auth.

With MLQ_AUTH_TOKENS set, a forged request cannot carry the `Authorization` header. Without tokens, any page on
the web could make a visitor's browser POST a form or a no-preflight `fetch` to a local mlqueue (cancel a job,
move an alias). Browsers say where a request comes from: `Sec-Fetch-Site` (every current browser) and `Origin`
(on every cross-origin POST, also from older ones). A request is refused when the browser says it is not
same-origin; a request with neither header is not from a browser (httpx, curl, mlqueue.Client) and passes, so
API clients need no token or extra header. This is the rule of Go's net/http CrossOriginProtection and OWASP's
"Fetch Metadata" defence.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, request

from api.problems import CrossOrigin

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# "none": the user typed the URL or used a bookmark; never a forged request.
TRUSTED_FETCH_SITES = frozenset({"same-origin", "none"})


def cross_origin(method: str, fetch_site: str | None, origin: str | None, host: str | None) -> bool:
    """Whether a request must be refused as cross-origin."""
    if method in SAFE_METHODS:
        return False
    if fetch_site:
        return fetch_site not in TRUSTED_FETCH_SITES  # "same-site" too: a sibling subdomain is another origin
    if not origin:
        return False  # no browser sent this
    # An old browser without Fetch Metadata: compare the Origin's host[:port] with the Host the request went to.
    return origin == "null" or urlsplit(origin).netloc.lower() != (host or "").lower()


def init_csrf(app: Flask) -> None:
    """Install the hook that answers 403 to a state-changing request that a browser sent from another origin."""

    @app.before_request
    def refuse_cross_origin() -> None:
        if cross_origin(
            request.method, request.headers.get("Sec-Fetch-Site"), request.headers.get("Origin"), request.host
        ):
            raise CrossOrigin(
                "cross-origin request refused: a browser sent it from another site; use the "
                "dashboard at /ui/ or an API client"
            )
