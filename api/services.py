"""What every request handler needs, built once by `create_app` and kept in `app.extensions["mlq"]`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from celery import Celery
from flask import current_app, g

from api.hub import EventHub
from store.datasets import DatasetStore
from store.fair import FairQueues
from store.jobs import JobStore
from store.settings import Settings
from training.registry import ModelRegistry

if TYPE_CHECKING:
    from api.wait_slots import WaitSlots


@dataclass(frozen=True)
class Services:
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    datasets: DatasetStore
    registry: ModelRegistry
    celery: Celery
    hub: EventHub
    waits: WaitSlots
    fair: FairQueues  # the train and batch queues' fair order (store/fair.py)


def services() -> Services:
    found: Services = current_app.extensions["mlq"]
    return found


def tenant() -> str:
    """The tenant of the current request, set by the auth hook ("default" when auth is off)."""
    found: str = g.tenant
    return found
