"""A Redis primary, a replica and three sentinels as real processes, for the Sentinel failover test (and the soak).

Each process is a `redis-server` of its own on a free port (a sentinel is `redis-server FILE --sentinel`); the
sentinels watch the primary as master `mlq` with a 2 s down-after, so a killed primary is replaced in seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from polling import wait_until
from ports import free_port

MASTER = "mlq"


class SentinelCluster:
    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def _server(self, port: int, *extra: str) -> None:
        data = self.directory / str(port)
        data.mkdir(exist_ok=True)
        argv = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
        argv += ["--appendonly", "yes", "--maxmemory-policy", "noeviction", "--logfile", str(data / "log"), *extra]
        self.procs[port] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self._server(self.primary_port)
        self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\nlogfile {self.directory}/sentinel-{port}.log\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 2000\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            self.procs[port] = subprocess.Popen(
                [self.binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
        replica = redis.Redis(port=self.replica_port, socket_timeout=2)
        wait_until(
            lambda: replica.info("replication").get("master_link_status") == "up", 60.0, what="the replica in sync"
        )

        def sentinels_agree() -> bool:
            for port in self.sentinel_ports:
                try:
                    info: dict[str, Any] = redis.Redis(port=port, socket_timeout=2).sentinel_master(MASTER)  # type: ignore[assignment]
                except redis.RedisError:
                    return False
                if int(info.get("num-other-sentinels", 0)) < 2 or int(info.get("num-slaves", 0)) < 1:
                    return False
            return True

        wait_until(sentinels_agree, 60.0, what="three sentinels that know the replica", interval_s=0.2)

    def master_port(self) -> int:
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=2)
        address: tuple[str, int] = client.sentinel_get_master_addr_by_name(MASTER)  # type: ignore[assignment]
        return int(address[1])

    def kill_primary(self) -> None:
        """SIGKILL the current primary (a machine lost), leaving it down."""
        port = self.master_port()
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
