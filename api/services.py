"""What every request handler needs, built once by `create_app` and kept in `app.extensions["mlq"]`."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app, g

from training.registry import ModelRegistry
from worker.datasets import DatasetStore
from worker.jobs import JobStore
from worker.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    datasets: DatasetStore
    registry: ModelRegistry
    celery: Celery


def services() -> Services:
    return current_app.extensions["mlq"]


def tenant() -> str:
    """The tenant of the current request, set by the auth hook ("default" when auth is off)."""
    return g.tenant
