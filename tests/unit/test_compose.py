"""The deployment files say what the operations guide promises. No Docker engine here: the YAML is read as data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # yaml.safe_load resolves anchors and `<<` merge keys the way docker compose does.
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def gpu_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if "deploy" in s}


def dockerfile_stages() -> dict[str, str]:
    """Each `FROM ... AS name` stage of the Dockerfile → its text."""
    text = (ROOT / "Dockerfile").read_text()
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE | re.IGNORECASE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_redis_persists_with_an_every_second_aof_never_evicts_and_keeps_its_data_on_a_volume(compose: dict[str,
                                                                                             Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]


def test_the_api_waits_for_a_healthy_redis_and_is_built_without_the_worker_extra(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["build"]["target"] == "api"
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    stages = dockerfile_stages()
    assert {"api", "worker"} <= set(stages)
    api_installs = " ".join(line for line in stages["api"].splitlines() if "pip install" in line)
    assert api_installs and "[worker]" not in api_installs and "torch" not in api_installs
    assert "[worker]" in stages["worker"] and "torch" in stages["worker"]


def test_every_image_runs_as_a_non_root_user() -> None:
    for name in ("api", "worker"):
        users = re.findall(r"^USER\s+(\S+)", dockerfile_stages()[name], flags=re.MULTILINE)
        assert users and users[-1] not in ("root", "0"), name


def test_each_gpu_worker_reserves_its_own_gpu_with_the_gpu_capability(compose: dict[str, Any]) -> None:
    gpus = gpu_services(compose)
    assert {"worker-train-gpu0", "worker-inference-gpu0"} <= set(gpus)
    ids_per_queue: dict[str, list[str]] = {}
    for name, service in gpus.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert "gpu" in device["capabilities"]
        assert "count" not in device  # compose refuses count together with device_ids
        (device_id,) = device["device_ids"]
        queue = service["command"][service["command"].index("--queues") + 1]
        ids_per_queue.setdefault(queue, []).append(device_id)
        assert service["profiles"] == ["gpu"], f"{name} must not start on a CPU-only `docker compose up`"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    for queue, ids in ids_per_queue.items():
        assert len(ids) == len(set(ids)) >= 2, f"{queue} workers must each have a distinct GPU: {ids}"


def test_the_cpu_worker_can_be_scaled_and_serves_both_queues(compose: dict[str, Any]) -> None:
    cpu = compose["services"]["worker-cpu"]
    assert "profiles" not in cpu and "deploy" not in cpu
    # --scale replicas cannot share a container name or a fixed host port.
    assert "container_name" not in cpu and "ports" not in cpu and "hostname" not in cpu
    queues = cpu["command"][cpu["command"].index("--queues") + 1]
    assert set(queues.split(",")) == {"train", "inference"}
    assert cpu["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_service_has_a_healthcheck_and_every_worker_pings_its_own_celery_node(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name, service in compose["services"].items():
        if name.startswith("worker"):
            check = " ".join(service["healthcheck"]["test"])
            assert "inspect ping -d" in check and "$$HOSTNAME" in check, name


def test_api_and_workers_share_the_artifact_volume_at_mlq_home(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "redis":
            continue
        home = service["environment"]["MLQ_HOME"]
        assert f"artifacts:{home}" in service["volumes"], name
        assert service["environment"]["MLQ_REDIS_URL"].startswith("redis://redis:6379/"), name
