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


def test_redis_persists_with_an_every_second_aof_never_evicts_and_keeps_its_data_on_a_volume(
    compose: dict[str, Any],
) -> None:
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


class ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types here
    """safe_load plus compose's merge tags (`!reset`, `!override`), read as their plain values."""


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(
        _tag,
        lambda loader, node: (
            loader.construct_sequence(node)
            if isinstance(node, yaml.SequenceNode)
            else loader.construct_mapping(node)
            if isinstance(node, yaml.MappingNode)
            else loader.construct_scalar(node)
        ),
    )


def with_generated_gpus(compose: dict[str, Any], gpus: int, s3: bool = False) -> dict[str, dict[str, Any]]:
    """The GPU services of docker-compose.yml plus `python -m mlqueue.compose_gpus N`, each generated one resolved
    the way compose resolves `extends` and `!override` (the generated keys replace the base service's)."""
    from mlqueue.compose_gpus import services

    generated = yaml.load(services(gpus, s3), Loader=ComposeLoader)["services"]
    out = dict(gpu_services(compose))
    for name, service in generated.items():
        base = compose["services"][service.pop("extends")["service"]]
        out[name] = {**base, **service}
    return out


def test_each_gpu_worker_reserves_its_own_gpu_with_the_gpu_capability(compose: dict[str, Any]) -> None:
    assert set(gpu_services(compose)) == {"worker-train-gpu0", "worker-inference-gpu0"}  # the rest is generated
    gpus = with_generated_gpus(compose, 4)
    assert len(gpus) == 8
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
        assert sorted(ids) == ["0", "1", "2", "3"], f"{queue} workers must each have a distinct GPU: {ids}"
    hostnames = [s["hostname"] for s in gpus.values()]
    assert len(set(hostnames)) == len(hostnames)  # distinct Celery node names
    assert with_generated_gpus(compose, 1) == gpu_services(compose)


def test_the_s3_profile_runs_every_service_on_the_store_without_the_shared_volume(compose: dict[str, Any]) -> None:
    minio = compose["services"]["minio"]
    assert minio["profiles"] == ["s3"] and minio["image"].startswith("minio/minio:")
    assert "mlqueue" in " ".join(minio["entrypoint"]) and minio["healthcheck"]["test"]
    override = yaml.load((ROOT / "docker-compose.s3.yml").read_text(), Loader=ComposeLoader)
    assert {"api", "worker-cpu", "worker-batch", "worker-train-gpu0", "worker-inference-gpu0"} == set(
        override["services"]
    )
    for name, service in override["services"].items():
        assert service["volumes"] == [], name
        env = service["environment"]
        assert env["MLQ_ARTIFACTS"].endswith("s3://mlqueue/mlq}") and "minio:9000" in env["MLQ_S3_ENDPOINT_URL"], name
        assert service["depends_on"]["minio"] == {"condition": "service_healthy", "required": False}
    for name, service in with_generated_gpus(compose, 2, s3=True).items():
        if name.endswith("gpu1"):
            assert service["volumes"] == [] and "MLQ_ARTIFACTS" in service["environment"], name


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
        if name in ("redis", "minio") or name.startswith(("redis-", "sentinel-")):
            continue
        home = service["environment"]["MLQ_HOME"]
        assert f"artifacts:{home}" in service["volumes"], name
        assert "redis://redis:6379/" in service["environment"]["MLQ_REDIS_URL"], name


def test_the_sentinel_profile_has_a_replica_and_three_sentinels_watching_redis_with_a_quorum_of_two(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    profiled = {name for name, s in services.items() if "sentinel" in s.get("profiles", [])}
    assert profiled == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert "--replicaof redis 6379" in " ".join(services["redis-replica"]["command"])
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = services[name]["command"][-1]
        assert "sentinel monitor mymaster redis 6379 2" in script and "--sentinel" in script
    # The processes follow the sentinels when MLQ_REDIS_URL says so; plain redis:// stays the default.
    assert services["api"]["environment"]["MLQ_REDIS_URL"] == "${MLQ_REDIS_URL:-redis://redis:6379/0}"
