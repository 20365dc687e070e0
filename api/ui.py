"""The dashboard: static files in api/static/ui, served at /ui/ by the API itself (no Node, no CDN at run time).

The pages are plain ES modules that call the same /v1 routes as any client, so the dashboard has no routes or
rights of its own. Files are revalidated on every load (ETag and Last-Modified, a 304 when unchanged): their names
carry no content hash, and a stale app.js after an upgrade would talk to a newer API.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect, send_from_directory
from werkzeug.wrappers import Response as BaseResponse

STATIC_DIR = Path(__file__).parent / "static" / "ui"
# No inline script or style, nothing from another origin, never framed (clickjacking a Cancel or Promote button).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

bp = Blueprint("ui", __name__)


def _send(filename: str) -> Response:
    response = send_from_directory(STATIC_DIR, filename, max_age=0)
    response.headers.update(HEADERS)
    return response


@bp.get("/")
def root() -> BaseResponse:
    return redirect("/ui/", code=302)


@bp.get("/ui")
def ui_no_slash() -> BaseResponse:
    return redirect("/ui/", code=301)


@bp.get("/ui/")
def index() -> Response:
    return _send("index.html")


@bp.get("/ui/<path:filename>")
def static_file(filename: str) -> Response:
    """A file of the dashboard; send_from_directory refuses paths outside STATIC_DIR (404)."""
    return _send(filename)
