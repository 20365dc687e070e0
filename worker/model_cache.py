"""The per-process cache of loaded predictors, keyed by (tenant, name, version), under a memory budget.

A request names a model by alias, version number or nothing (production, else latest). Resolving that reference
reads the registry; it is redone only when the registry's cheap state token for the model changes, so an alias
moved through the API is picked up by a running worker at its next request, without a restart.

Residency: each loaded version's footprint is measured (worker/footprint.py; on a GPU the change of
`torch.cuda.memory_allocated()` across the load) and the total is kept within `budget_bytes`
(MLQ_MODEL_MEMORY_MB; 0: no memory budget) and `max_models`, evicting the least frequently requested version
first (request counts halved every AGE_EVERY requests, so popularity that moves is followed; ties: the least
recently used). Why not plain LRU: one batch of 32 requests spans more distinct versions than fit, and LRU then
evicts the popular versions for rare ones at every batch (W8 in docs/benchmarks.md measured a hit rate of 0.19;
a simulation of the same traffic gives LRU 0.09 and this policy 0.68, near the 0.72 of keeping the top versions).
Pinned versions are never evicted: those that a pinned reference resolves to now (MLQ_PIN_ALIASES names aliases
pinned for every model; every MLQ_PRELOAD entry pins what it names). A version that cannot fit, alone or beside
the pinned ones, is refused with ModelTooLarge naming the setting: the request fails, the worker goes on.

Concurrent lookups of a cold version load it once (single flight): the first caller loads, the others wait
for its result. Loads run one at a time (so a GPU delta measures one load), outside the lock that hits take,
so a cold load never stalls requests for versions already in memory. An evicted predictor that another thread
still uses stays alive until that use ends: the budget bounds what the cache holds, not such a straggler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from training.errors import MLQError
from training.predictor import Predictor
from training.predictors import load_predictor
from training.registry import ModelRegistry
from worker.footprint import on_gpu, predictor_bytes
from worker.residency_stats import ResidencyCounters

log = logging.getLogger(__name__)

Loader = Callable[[ModelRegistry, str, str, int, str], Predictor]
Key = tuple[str, str, int]
MB = 1024 * 1024
AGE_EVERY = 1000  # requests between two halvings of the request counts


class ModelTooLarge(MLQError):
    """Raised when a model version does not fit in the worker's model memory budget (MLQ_MODEL_MEMORY_MB)."""

    code = "model_too_large"
    status = 507


def _load(registry: ModelRegistry, tenant: str, name: str, version: int, device: str) -> Predictor:
    return load_predictor(registry, tenant, name, version, device=device)


@dataclass
class Resident:
    predictor: Predictor
    nbytes: int


class _Flight:
    """One load in progress: the callers that want the same version wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.predictor: Predictor | None = None
        self.error: BaseException | None = None

    def result(self) -> Predictor:
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.predictor is not None
        return self.predictor


class ModelCache:
    """Loaded predictors of one worker process, within a memory budget. Thread-safe."""

    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "auto",
        max_models: int = 32,
        loader: Loader = _load,
        budget_bytes: int = 0,
        pins: Iterable[tuple[str | None, str | None, str]] = (),
    ) -> None:
        self.registry = registry
        # "auto": the GPU the launcher pinned for this process, else the CPU.
        self.device = device
        self.max_models = max_models
        self.budget_bytes = budget_bytes
        # (tenant, name, ref); None for tenant and name: the ref (an alias) is pinned for every model.
        self.pins = list(pins)
        self.counters = ResidencyCounters()
        self._loader = loader
        self._entries: OrderedDict[Key, Resident] = OrderedDict()
        self._flights: dict[Key, _Flight] = {}
        self._sizes: dict[Key, int] = {}  # measured footprints, kept after eviction: the next load's estimate
        self._asked: dict[Key, float] = {}  # requests per version (aged), resident or not: the eviction order
        self._since_aging = 0
        # (tenant, name, ref) -> (state token when resolved, version)
        self._resolved: dict[tuple[str, str, str | None], tuple[str, int]] = {}
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()

    def resolve(self, tenant: str, name: str, ref: str | int | None = None) -> int:
        """The version `ref` means now; cached until the model's aliases or versions change."""
        ref_key = None if ref is None else str(ref)
        token = self.registry.state_token(tenant, name)
        with self._lock:
            cached = self._resolved.get((tenant, name, ref_key))
            if cached is not None and cached[0] == token:
                return cached[1]
        version = self.registry.resolve(tenant, name, ref)
        with self._lock:
            self._resolved[(tenant, name, ref_key)] = (token, version)
        return version

    def get(self, tenant: str, name: str, ref: str | int | None = None, requests: int = 1) -> Predictor:
        """The predictor for `ref`, loading (and verifying) its version on first use; `requests`: how many
        requests this lookup serves (the hit rate counts requests)."""
        key = (tenant, name, self.resolve(tenant, name, ref))
        with self._lock:
            self._count(key, requests)
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.counters.add("hits", requests)
                return entry.predictor
            self.counters.add("misses", requests)
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            return flight.result()
        try:
            flight.predictor = self._load_and_admit(key)
        except BaseException as exc:
            flight.error = exc
            self.counters.add("load_failures")
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()
        return flight.predictor

    def _load_and_admit(self, key: Key) -> Predictor:
        tenant, name, version = key
        with self._load_lock:
            # Room for what the version is expected to take, made BEFORE loading: on a GPU, loading first could
            # run the device out of memory.
            self._make_room(key, self._expected_bytes(key))
            started = time.monotonic()
            cuda = torch.cuda.is_available() and self.device != "cpu"
            before = torch.cuda.memory_allocated() if cuda else 0
            predictor = self._loader(self.registry, tenant, name, version, self.device)
            if cuda and on_gpu(predictor):
                nbytes = max(0, torch.cuda.memory_allocated() - before)
            else:
                nbytes = predictor_bytes(predictor)
            seconds = time.monotonic() - started
            with self._lock:
                self._sizes[key] = nbytes
                self._make_room(key, nbytes)  # raises ModelTooLarge: the predictor is dropped with the frame
                self._entries[key] = Resident(predictor, nbytes)
            self.counters.loaded(seconds)
        log.info("loaded model %s/%s v%d: %.1f MB in %.2f s (%s)", *key, nbytes / MB, seconds, self.usage())
        return predictor

    def _count(self, key: Key, requests: int) -> None:
        self._asked[key] = self._asked.get(key, 0.0) + requests
        self._since_aging += requests
        if self._since_aging >= AGE_EVERY:
            self._since_aging = 0
            self._asked = {k: n / 2 for k, n in self._asked.items() if n >= 1 or k in self._entries}

    def _expected_bytes(self, key: Key) -> int:
        if key in self._sizes:
            return self._sizes[key]
        try:  # the weights files' sizes: what the tensors take in memory (a lower bound of the footprint)
            files = self.registry.manifest(*key).get("files", {})
            return sum(
                int(info.get("size_bytes", 0))
                for rel, info in files.items()
                if rel.endswith(".safetensors") and isinstance(info, dict)
            )
        except Exception:  # noqa: BLE001 - only an estimate; the load itself reports what is wrong
            return 0

    def _make_room(self, key: Key, nbytes: int) -> None:
        """Evict unpinned versions, least requested first, until `nbytes` more fit; ModelTooLarge if they never can.

        Called before a load with the weights files' size (a lower bound of the footprint, so a refusal then is
        certain and nothing was loaded in vain), and after it with the measured size."""
        with self._lock:
            limit = self.budget_bytes
            if limit and nbytes > limit:
                raise ModelTooLarge(
                    f"model {key[1]!r} version {key[2]} needs {nbytes / MB:.1f} MB, more than this worker's whole "
                    f"model memory budget MLQ_MODEL_MEMORY_MB={limit // MB}; raise MLQ_MODEL_MEMORY_MB "
                    "(per worker process and device) or serve a smaller (e.g. quantized) version"
                )
            # Least requested first; a stable sort keeps the least recently used first among equals.
            candidates = sorted((k for k in self._entries if k != key), key=lambda k: self._asked.get(k, 0.0))
            used = sum(e.nbytes for k, e in self._entries.items() if k != key)
            count = len(candidates)
            for victim in candidates:
                if (not limit or used + nbytes <= limit) and count < self.max_models:
                    return
                if self._pinned(victim):
                    continue
                used -= self._entries.pop(victim).nbytes
                count -= 1
                self.counters.add("evictions")
                log.info("model cache: evicted %s/%s v%d to make room for %s/%s v%d", *victim, *key)
            if (limit and used + nbytes > limit) or count >= self.max_models:
                raise ModelTooLarge(
                    f"model {key[1]!r} version {key[2]} needs {nbytes / MB:.1f} MB but pinned versions hold "
                    f"{used / MB:.1f} MB of the MLQ_MODEL_MEMORY_MB={limit // MB} budget (or all "
                    f"{self.max_models} slots); raise the budget, or pin fewer versions (MLQ_PIN_ALIASES, MLQ_PRELOAD)"
                )

    def _pinned(self, key: Key) -> bool:
        tenant, name, version = key
        for pin_tenant, pin_name, ref in self.pins:
            if pin_tenant not in (None, tenant) or pin_name not in (None, name):
                continue
            try:
                if self.resolve(tenant, name, ref) == version:
                    return True
            except MLQError:  # the alias does not exist for this model (or the model is gone)
                continue
        return False

    def preload(self, entries: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, int]]:
        """Load every (tenant, name, ref) entry; returns what was loaded.

        A missing or broken model is logged and skipped rather than stopping the worker: in a fresh deployment
        the preloaded models often do not exist yet, and they load on first use once trained.
        """
        loaded = []
        for tenant, name, ref in entries:
            try:
                predictor = self.get(tenant, name, ref, requests=0)  # no request waited: no hit or miss
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
            return list(self._entries)

    def resident_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def footprints(self) -> dict[Key, int]:
        """The measured bytes of each version in memory."""
        with self._lock:
            return {k: e.nbytes for k, e in self._entries.items()}

    def usage(self) -> str:
        budget = f"{self.budget_bytes / MB:.0f} MB" if self.budget_bytes else "no budget"
        return f"{len(self._entries)} versions, {self.resident_bytes() / MB:.1f} MB of {budget}"
