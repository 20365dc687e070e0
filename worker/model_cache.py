"""The per-process cache of loaded predictors, keyed by (tenant, name, version).

A request names a model by alias, version number or nothing (production, else latest). Resolving that reference
reads the registry; it is redone only when the registry's cheap state token for the model changes, so an alias
moved through the API is picked up by a running worker at its next request, without a restart. A version, once
loaded, stays in memory (least recently used ones are dropped beyond `max_models`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from training.errors import MLQError
from training.predictor import Predictor
from training.predictors import load_predictor
from training.registry import ModelRegistry

log = logging.getLogger(__name__)

Loader = Callable[[ModelRegistry, str, str, int, str], Predictor]


def _load(registry: ModelRegistry, tenant: str, name: str, version: int, device: str) -> Predictor:
    return load_predictor(registry, tenant, name, version, device=device)


class ModelCache:
    """Loaded predictors of one worker process. Thread-safe; a load holds the lock (loads are rare)."""

    def __init__(
        self, registry: ModelRegistry, device: str = "auto", max_models: int = 32, loader: Loader = _load
    ) -> None:
        self.registry = registry
        # "auto": the GPU the launcher pinned for this process, else the CPU.
        self.device = device
        self.max_models = max_models
        self._loader = loader
        self._predictors: OrderedDict[tuple[str, str, int], Predictor] = OrderedDict()
        # (tenant, name, ref) -> (state token when resolved, version)
        self._resolved: dict[tuple[str, str, str | None], tuple[str, int]] = {}
        self._lock = threading.RLock()

    def resolve(self, tenant: str, name: str, ref: str | int | None = None) -> int:
        """The version `ref` means now; cached until the model's aliases or versions change."""
        ref_key = None if ref is None else str(ref)
        token = self.registry.state_token(tenant, name)
        with self._lock:
            cached = self._resolved.get((tenant, name, ref_key))
            if cached is not None and cached[0] == token:
                return cached[1]
            version = self.registry.resolve(tenant, name, ref)
            self._resolved[(tenant, name, ref_key)] = (token, version)
            return version

    def get(self, tenant: str, name: str, ref: str | int | None = None) -> Predictor:
        """The predictor for `ref`, loading (and verifying) its version on first use."""
        version = self.resolve(tenant, name, ref)
        key = (tenant, name, version)
        with self._lock:
            predictor = self._predictors.get(key)
            if predictor is not None:
                self._predictors.move_to_end(key)
                return predictor
            predictor = self._loader(self.registry, tenant, name, version, self.device)
            self._predictors[key] = predictor
            while len(self._predictors) > self.max_models:
                evicted, _ = self._predictors.popitem(last=False)
                log.info("model cache full: dropped %s/%s v%d", *evicted)
            log.info("loaded model %s/%s v%d", tenant, name, version)
            return predictor

    def preload(self, entries: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, int]]:
        """Load every (tenant, name, ref) entry; returns what was loaded.

        A missing or broken model is logged and skipped rather than stopping the worker: in a fresh deployment
        the preloaded models often do not exist yet, and they load on first use once trained.
        """
        loaded = []
        for tenant, name, ref in entries:
            try:
                predictor = self.get(tenant, name, ref)
            except MLQError as exc:
                log.error("could not preload %s/%s:%s: %s", tenant, name, ref, exc.message)
                continue
            except Exception:
                # A crash here would kill the process before it serves anything, and Celery would restart it
                # into the same crash; serving the other models is better.
                log.exception("could not preload %s/%s:%s", tenant, name, ref)
                continue
            loaded.append((tenant, name, predictor.version))
        return loaded

    def describe(self) -> list[str]:
        """The loaded versions as "tenant/name:version" strings (for the liveness record)."""
        return [f"{tenant}/{name}:{version}" for tenant, name, version in self.loaded()]

    def loaded(self) -> list[tuple[str, str, int]]:
        """The (tenant, name, version) keys now in memory, least recently used first."""
        with self._lock:
            return list(self._predictors)
