"""A model name in a route: one that cannot exist is simply not found. Its own module: the model routes and the
serving-policy routes both need it, and the model routes show the serving policy."""

from __future__ import annotations

from training.errors import ResourceNotFound
from training.registry import NAME_RE


def known_name(name: str) -> str:
    """A name that cannot exist is simply not found (a 404 like any unknown model, not a 422)."""
    if not NAME_RE.fullmatch(name):
        raise ResourceNotFound(f"no model named {name!r}; list yours with GET /v1/models")
    return name
