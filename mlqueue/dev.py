"""`mlq dev`: the whole service on one machine — Redis, the API, a train, an inference and a batch worker.

A small supervisor for trying mlqueue and for development, not for production (use docker compose there). Each
child runs in its own process group, so a Ctrl-C in the terminal reaches only this supervisor, which stops the
children in order (workers, API, then Redis) and waits for them. If any child dies on its own, the rest are
stopped too and the exit code is 1: a half-running service is worse than a clear failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
import redis

from training.errors import MLQError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
READY_TIMEOUT_S = 180.0  # workers import torch and preload models first; two slow cores take a while
STOP_GRACE_S = 15.0  # Celery's warm shutdown lets a running task finish; after this we kill
# Beyond MLQ_SHUTDOWN_GRACE_S, a training that did not finish still checkpoints, requeues and exits: give it this.
STOP_MARGIN_S = 15.0


def activate_hint(env: Mapping[str, str]) -> str:
    """`make run` starts us as .venv/bin/mlq without .venv/bin on the PATH: say how to get `mlq` in a shell."""
    bin_dir = Path(sys.executable).parent
    if str(bin_dir) in env.get("PATH", "").split(os.pathsep):
        return ""
    return f"     source {bin_dir / 'activate'}   # puts mlq on the PATH of a second terminal\n"


def stop_grace_s(env: Mapping[str, str]) -> float:
    """How long a Ctrl-C waits for each child: longer than the workers' own shutdown grace.

    A kill inside MLQ_SHUTDOWN_GRACE_S (default 20 s) caught a training before it requeued itself, so every
    Ctrl-C during a training burned one of its MLQ_MAX_ATTEMPTS.
    """
    from store.settings import Settings  # torch-free: the workers' default

    default = Settings().shutdown_grace_s
    try:
        grace = float(env.get("MLQ_SHUTDOWN_GRACE_S") or default)
    except ValueError:  # the workers refuse such a value at start; stopping must still work
        grace = default
    return max(STOP_GRACE_S, grace + STOP_MARGIN_S)


class DevError(MLQError, RuntimeError):
    """Raised when `mlq dev` cannot start: no Redis and no redis-server, a port in use, a child failing at once."""

    code = "dev_failed"
    status = 500


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def gunicorn_config_path() -> str:
    """api/gunicorn_conf.py as a file: loaded by path, so the `api` package (and prometheus_client with it) is not
    imported into gunicorn's master before the config has set PROMETHEUS_MULTIPROC_DIR."""
    spec = importlib.util.find_spec("api")
    assert spec is not None and spec.submodule_search_locations is not None, "the api package is not installed"
    return str(Path(list(spec.submodule_search_locations)[0]) / "gunicorn_conf.py")


def gunicorn_argv(host: str, port: int, workers: int, worker_class: str = "gevent") -> list[str]:
    """The API under gunicorn with api/gunicorn_conf.py: gevent workers, so a waiting request costs a greenlet."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        gunicorn_config_path(),
        "-w",
        str(workers),
        "-k",
        worker_class,
        "-b",
        f"{host}:{port}",
        "api.wsgi:app",
    ]


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server on a free port (nothing saved to disk); returns it and its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise DevError(
            "no Redis answers and redis-server is not installed. Install it (Debian/Ubuntu: "
            "`sudo apt-get install redis-server`, macOS: `brew install redis`), or run one with "
            "`docker run -d -p 6379:6379 redis:7`, or point MLQ_REDIS_URL at a Redis you have"
        )
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        stdout=sys.stderr,
        process_group=0,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop([Child("redis", proc)], last=())
            raise DevError(f"redis-server did not start on port {port} (exit code {proc.poll()})")
        time.sleep(0.1)
    return proc, url


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc; elsewhere none): the launcher's Celery workers are their own groups."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def stop(children: list[Child], grace_s: float = STOP_GRACE_S, last: tuple[str, ...] = ("redis-server",)) -> None:
    """SIGTERM every child's process group at once, say what is still awaited, SIGKILL whatever is left after
    `grace_s`. The children named in `last` (the Redis we started) stop only after the others, which need it to
    requeue their jobs.

    One after another, four children took 10-13 s idle (each Celery worker's warm shutdown waits about a second
    or two for its consumer); together it is the slowest of them.
    """
    first = [c for c in children if c.name not in last]
    _stop_together(first, grace_s)
    _stop_together([c for c in children if c.name in last], grace_s)


def _stop_together(children: list[Child], grace_s: float) -> None:
    running = [c for c in children if c.proc.poll() is None]
    if not running:
        return
    below = {c.name: descendants(c.proc.pid) for c in running}
    started = time.monotonic()
    for child in running:
        with _quiet():
            os.killpg(child.proc.pid, signal.SIGTERM)
    deadline = started + grace_s
    waiting = list(running)
    while waiting:
        for child in list(waiting):
            if child.proc.poll() is not None:
                waiting.remove(child)
                say(f"{child.name} stopped ({time.monotonic() - started:.1f} s)")
        if not waiting:
            break
        if time.monotonic() > deadline:
            for child in waiting:
                say(f"{child.name} did not stop within {grace_s:g} s; killing it")
                with _quiet():
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
            break
        time.sleep(0.05)
    for child in running:  # processes that left the group (Celery workers) must not outlive the supervisor
        for pid in below[child.name]:
            with _quiet():
                os.kill(pid, signal.SIGKILL)


def quiet_root_warning(env: dict[str, str]) -> None:
    """As root, each Celery worker prints a multi-line superuser warning: three copies under `mlq dev`. Say it once.

    The warning matters for deployments (docs/operations.md: run workers as an unprivileged user); a dev service on
    one's own machine (a container's root, often) needs to hear it once, not three times on every start.
    """
    if os.name != "posix" or os.geteuid() != 0:
        return
    # A warnings filter matches the message's start literally (the field ends at a colon).
    quiet = "ignore:You're running the worker with superuser privileges"
    env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), quiet) if w)
    say("running as root; fine for trying mlqueue, but run workers as an unprivileged user in production")


def say(message: str) -> None:
    print(f"mlq dev: {message}", file=sys.stderr, flush=True)


def announce_running_jobs(redis_url: str) -> None:
    """Name the jobs a stop waits for: a running training checkpoints and requeues itself before its worker exits,
    which takes longer than an idle stop, and a silent wait looks like a hang."""
    from store.jobs import JobStore  # torch-free

    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=1, socket_timeout=2)
    try:
        store = JobStore(client)
        for job_id in store.running_ids():
            job = store.get(job_id)
            if job is None or job.get("status") != "running":
                continue
            kind = job.get("type", "job")
            worker = job.get("worker") or "a worker"
            if kind in ("train", "optimize", "batch"):
                say(f"waiting for {worker}: requeueing {kind} job {job_id} (checkpoint kept; it resumes on restart)")
            else:
                say(f"waiting for {worker}: {kind} job {job_id}")
    except (redis.RedisError, OSError):
        return  # Redis is already gone: nothing to name, the stop goes on
    finally:
        client.close()


class _quiet:
    """Ignore a process that is already gone."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        return exc_type is not None and issubclass(exc_type, ProcessLookupError | PermissionError)


def wait_ready(url: str, children: list[Child], stopping: threading.Event) -> bool:
    """Poll /readyz until it says 200; False on timeout. Raises DevError if a child dies meanwhile."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not stopping.is_set():
        check_children(children)
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        stopping.wait(0.5)
    return False


def check_children(children: list[Child]) -> None:
    for child in children:
        code = child.proc.poll()
        if code is not None:
            raise DevError(f"{child.name} exited with code {code}; stopping the rest (its log is above)")


def run_dev(host: str = "127.0.0.1", port: int = 8000, env: Mapping[str, str] | None = None) -> int:
    """Start everything, wait for Ctrl-C or SIGTERM, stop everything. 0 on a requested stop, 1 on a failure."""
    env = dict(os.environ if env is None else env)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[Child] = []
    try:
        if port_in_use(host, port):
            raise DevError(f"port {port} on {host} is already in use; pick another with --port")
        redis_url = env.get("MLQ_REDIS_URL") or DEFAULT_REDIS_URL
        if redis_answers(redis_url):
            redis_note = "(already running)"
        else:
            print(f"mlq dev: no Redis at {redis_url}; starting redis-server", file=sys.stderr)
            proc, redis_url = start_redis()
            children.append(Child("redis-server", proc))
            redis_note = "(started here; data is not saved)"
        home = Path(env.get("MLQ_HOME") or ".mlqueue").absolute()
        home.mkdir(parents=True, exist_ok=True)
        env.update(MLQ_REDIS_URL=redis_url, MLQ_HOME=str(home), PYTHONUNBUFFERED="1")
        quiet_root_warning(env)
        mlq = [sys.executable, "-m", "mlqueue.cli"]
        for name, argv in (
            ("api", gunicorn_argv(host, port, 1)),
            ("train worker", [*mlq, "worker", "--queues", "train"]),
            ("inference worker", [*mlq, "worker", "--queues", "inference"]),
            ("batch worker", [*mlq, "worker", "--queues", "batch"]),
        ):
            # Children log to our stderr; our stdout carries only the lines below.
            proc = subprocess.Popen(argv, env=env, stdout=sys.stderr, process_group=0)
            children.append(Child(name, proc))
        url = f"http://{host}:{port}"
        print(
            f"mlqueue dev\n  dashboard {url}/ui/\n  api       {url}\n  redis     {redis_url} {redis_note}\n"
            f"  home      {home}\n"
            f"try: curl -s {url}/readyz\n{activate_hint(env)}     MLQ_URL={url} mlq datasets upload data.csv\n"
            "stop with Ctrl-C",
            flush=True,
        )
        if wait_ready(url, children, stopping):
            print(f"ready: {url}/readyz answers 200", flush=True)
        elif not stopping.is_set():
            print(
                f"mlq dev: {url}/readyz is still not 200 after {READY_TIMEOUT_S:g} s; still waiting for the "
                "workers (see their logs above)",
                file=sys.stderr,
            )
        while not stopping.is_set():
            check_children(children)
            stopping.wait(0.5)
        say(f"stopping {', '.join(c.name for c in children if c.proc.poll() is None)}")
        announce_running_jobs(redis_url)
        return 0
    except (DevError, OSError) as exc:
        print(f"mlq dev: {exc}", file=sys.stderr)
        return 1
    finally:
        stop(children, stop_grace_s(env))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
