"""The artifact store (store/artifacts.py) and what is built on it, against a real S3 server (rclone serve s3) and a
LocalStore: put/get/list, versions visible only when complete, distinct versions from concurrent writers, sha256
checked after every download, the size-bounded cache, datasets and checkpoints. Redis is the session's real one."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from s3_server import RcloneS3

from store.artifact_cache import ArtifactCache
from store.artifacts import ArtifactMissing, ArtifactStore, LocalStore, S3Store, open_store
from store.remote_datasets import StoreDatasets
from store.remote_registry import StoreRegistry
from store.settings import Settings, SettingsError
from training.errors import ArtifactTampered, ResourceNotFound, VersionInUse
from worker.checkpoint_sync import CheckpointSync, remove_checkpoint

MB = 1024 * 1024


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server: RcloneS3 = request.getfixturevalue("s3_server")
    return S3Store(server.bucket(), "team/a", server.endpoint)


@pytest.fixture(autouse=True)
def s3_credentials(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3's default chain reads the environment: the same way a deployed process gets its credentials.
    if "store" in request.fixturenames and request.node.callspec.params.get("store") == "s3":
        server: RcloneS3 = request.getfixturevalue("s3_server")
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)


def make_registry(store: ArtifactStore, redis_client: redis.Redis, host: Path, max_mb: int = 64) -> StoreRegistry:
    """A registry as one host sees it: its own working folder and cache, the shared store and Redis."""
    return StoreRegistry(
        host / "models", store, lambda: redis_client, ArtifactCache(host / "cache", max_mb * MB), secret_key="k"
    )


def stage(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.skops").write_bytes(content)
    (folder / "pre.skops").write_bytes(b"pre-" + content)
    return folder


def test_put_get_list_delete(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 100_000)
    store.put_file("a/b/f.bin", tmp_path / "f.bin")
    store.put_bytes("a/c.json", b"{}")
    store.put_bytes("z.txt", b"z")
    assert store.keys("a/") == ["a/b/f.bin", "a/c.json"]
    assert store.get_bytes("a/c.json") == b"{}"
    store.get_file("a/b/f.bin", tmp_path / "out" / "f.bin")
    assert (tmp_path / "out" / "f.bin").read_bytes() == b"x" * 100_000
    store.delete(["a/c.json", "never/was"])
    assert store.keys("") == ["a/b/f.bin", "z.txt"]
    with pytest.raises(ArtifactMissing):
        store.get_bytes("a/c.json")
    for bad in ("../up", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(ValueError):
            store.put_bytes(bad, b"")


def test_versions_are_visible_only_with_their_manifest_and_numbers_are_never_reused(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    registry = make_registry(store, redis_client, tmp_path / "host-a")
    assert registry.register("default", "iris", stage(tmp_path / "s1", b"one"), {"n": 1})["version"] == 1
    # A writer that died mid-upload: files of version 2, no manifest. Nobody lists it, and no one reuses 2 ...
    store.put_bytes("models/default/iris/2/model.skops", b"half")
    assert [v["version"] for v in registry.get_model("default", "iris")["versions"]] == [1]
    with pytest.raises(ResourceNotFound):
        registry.manifest("default", "iris", 2)
    redis_client.flushdb()  # ... not even after Redis lost its counter
    assert registry.register("default", "iris", stage(tmp_path / "s3", b"three"), {"n": 3})["version"] == 3
    assert registry.list_models("default") == [{"name": "iris", "latest_version": 3, "aliases": {}}]


def test_concurrent_writers_on_several_hosts_get_distinct_versions(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    hosts = [make_registry(store, redis_client, tmp_path / f"host-{i}") for i in range(4)]
    got: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(hosts))

    def write(i: int) -> None:
        try:
            start.wait()
            for j in range(3):
                staged = stage(tmp_path / f"s-{i}-{j}", f"{i}-{j}".encode())
                got.append(hosts[i].register("default", "race", staged, {"host": i})["version"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(hosts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(got) == list(range(1, 13))
    assert [v["version"] for v in hosts[0].get_model("default", "race")["versions"]] == list(range(1, 13))


def test_aliases_delete_archive_and_state_token(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    a = make_registry(store, redis_client, tmp_path / "host-a")
    b = make_registry(store, redis_client, tmp_path / "host-b")
    a.register("default", "iris", stage(tmp_path / "s1", b"one"), {})
    a.register("default", "iris", stage(tmp_path / "s2", b"two"), {})
    token = b.state_token("default", "iris")
    assert a.set_alias("default", "iris", "production", 1) == {"production": 1}
    assert b.state_token("default", "iris") != token  # another host's cache sees the move at once
    assert b.resolve("default", "iris") == 1 and b.resolve("default", "iris", "production") == 1
    with pytest.raises(VersionInUse):
        b.delete_version("default", "iris", 1)
    b.delete_version("default", "iris", 2)
    assert a.aliases("default", "iris") == {"production": 1}
    with pytest.raises(ResourceNotFound):
        a.verified_dir("default", "iris", 2)
    with tarfile.open(fileobj=io.BytesIO(b.archive("default", "iris", 1)), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["iris-1/manifest.json", "iris-1/model.skops", "iris-1/pre.skops"]
    assert a.register("default", "iris", stage(tmp_path / "s3", b"three"), {})["version"] == 3  # 2 stays unused
    a.delete_alias("default", "iris", "production")
    assert b.aliases("default", "iris") == {}
    # A name nobody registered costs no Redis key per name, and its token is stable until something changes.
    keys = redis_client.dbsize()
    assert a.state_token("default", "nobody") == b.state_token("default", "nobody")
    assert redis_client.dbsize() <= keys + 1


def test_a_download_that_does_not_match_its_sha256_is_refused_and_not_cached(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    writer = make_registry(store, redis_client, tmp_path / "writer")
    writer.register("default", "iris", stage(tmp_path / "s1", b"weights"), {})
    store.put_bytes("models/default/iris/1/model.skops", b"swapped in the bucket")
    reader = make_registry(store, redis_client, tmp_path / "reader")
    with pytest.raises(ArtifactTampered, match="sha256"):
        reader.verified_dir("default", "iris", 1)
    assert reader.cache.entries() == []
    store.put_bytes("models/default/iris/1/model.skops", b"weights")  # repaired: now it loads
    directory = reader.verified_dir("default", "iris", 1)
    assert (directory / "model.skops").read_bytes() == b"weights"


def test_a_cached_version_is_not_downloaded_again(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    make_registry(store, redis_client, tmp_path / "writer").register("default", "m", stage(tmp_path / "s", b"w"), {})
    reader = make_registry(store, redis_client, tmp_path / "reader")
    first = reader.verified_dir("default", "m", 1)
    again = make_registry(store, redis_client, tmp_path / "reader").verified_dir("default", "m", 1)  # a restart
    assert first == again
    assert (reader.cache.hits, reader.cache.misses) == (0, 1)
    # The local copy is still checked: a copy corrupted on this host's disk is dropped and fetched again once
    # from the intact bucket copy (issue 18: it was a permanent 409 "re-register the model").
    (first / "model.skops").write_bytes(b"edited on disk")
    assert (reader.verified_dir("default", "m", 1) / "model.skops").read_bytes() == b"w"
    assert (reader.cache.hits, reader.cache.misses) == (1, 2)
    # Both copies bad: refused (409), and nothing bad stays cached.
    (first / "model.skops").write_bytes(b"edited on disk")
    store.put_bytes("models/default/m/1/model.skops", b"swapped in the bucket")
    with pytest.raises(ArtifactTampered, match="sha256"):
        reader.verified_dir("default", "m", 1)
    assert reader.cache.entries() == []


def test_a_manifest_with_a_wrong_hmac_downloads_nothing(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    make_registry(store, redis_client, tmp_path / "writer").register("default", "m", stage(tmp_path / "s", b"w"), {})
    manifest = json.loads(store.get_bytes("models/default/m/1/manifest.json"))
    manifest["files"]["../../../evil.pth"] = manifest["files"].pop("model.skops")
    store.put_bytes("models/default/m/1/manifest.json", json.dumps(manifest).encode())
    reader = make_registry(store, redis_client, tmp_path / "reader")
    with pytest.raises(ArtifactTampered, match="HMAC"):
        reader.verified_dir("default", "m", 1)
    assert reader.cache.misses == 0  # refused before the cache was even asked to fill
    assert not (tmp_path / "evil.pth").exists()


def test_cache_evicts_least_recently_used_entries_beyond_its_bound(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", max_bytes=250)
    fills: list[str] = []

    def filler(tag: str, size: int) -> Callable[[Path], None]:
        def fill(folder: Path) -> None:
            fills.append(tag)
            (folder / "f").write_bytes(b"x" * size)

        return fill

    digests = {tag: tag * 64 for tag in "abc"}
    cache.entry(digests["a"], filler("a", 100))
    cache.entry(digests["b"], filler("b", 100))
    cache.entry(digests["a"], filler("a", 100))  # a hit: a is now the most recently used
    import os
    import time

    past = time.time() - 100
    os.utime(cache.root / "bb" / digests["b"], (past, past))  # b older than a, whatever the clock's resolution
    cache.entry(digests["c"], filler("c", 100))  # 300 bytes > 250: b goes
    assert fills == ["a", "b", "c"]
    assert sorted(p.name[0] for _, _, p in cache.entries()) == ["a", "c"]
    with pytest.raises(ValueError):
        cache.entry("../etc", filler("x", 1))

    def refuse(folder: Path) -> None:
        (folder / "f").write_bytes(b"partial")
        raise ArtifactTampered("bad download")

    with pytest.raises(ArtifactTampered):
        cache.entry("d" * 64, refuse)
    assert not (cache.root / "dd" / ("d" * 64)).exists()
    assert [p.name for p in cache.root.iterdir() if p.name.startswith(".tmp-")] == []


def test_datasets_upload_once_and_download_once_per_host(store: ArtifactStore, tmp_path: Path) -> None:
    api = StoreDatasets(tmp_path / "api" / "datasets", store, ArtifactCache(tmp_path / "api" / "cache", 64 * MB))
    meta = api.save("default", io.BytesIO(b"a,b\n1,x\n2,y\n"), "small", max_bytes=MB)
    assert list((tmp_path / "api" / "datasets" / "default").iterdir()) == []  # the API keeps no copy
    worker = StoreDatasets(tmp_path / "w" / "datasets", store, ArtifactCache(tmp_path / "w" / "cache", 64 * MB))
    assert worker.get("default", meta["id"]) == meta
    assert [d["id"] for d in worker.list("default")] == [meta["id"]]
    path = worker.path("default", meta["id"])
    assert path.read_bytes() == b"a,b\n1,x\n2,y\n"
    assert worker.path("default", meta["id"]) == path and worker.cache.misses == 1
    store.put_bytes(f"datasets/default/{meta['id']}/data.csv", b"a,b\n9,z\n")
    other = StoreDatasets(tmp_path / "o" / "datasets", store, ArtifactCache(tmp_path / "o" / "cache", 64 * MB))
    with pytest.raises(ArtifactTampered):
        other.path("default", meta["id"])
    api.delete("default", meta["id"])
    with pytest.raises(ResourceNotFound):
        worker.get("default", meta["id"])
    assert worker.list("default") == [] and store.keys("datasets/") == []


def test_checkpoints_follow_the_job_to_another_host(store: ArtifactStore, tmp_path: Path) -> None:
    job = "job_01hx0000000000000000000000"
    here, there = tmp_path / "here" / job, tmp_path / "there" / job
    with CheckpointSync(store, job, here, interval_s=3600, secret_key="k") as sync:
        here.mkdir(parents=True)
        (here / "part-000000.csv").write_bytes(b"rows")
        (here / "checkpoint.json").write_text(json.dumps({"parts": 1}))
        sync.push()
        (here / "last.pt").write_bytes(b"epoch 3")
    # The exit pushed the last state; another host restores it whole.
    with CheckpointSync(store, job, there, interval_s=3600, secret_key="k"):
        assert sorted(p.name for p in there.iterdir()) == ["checkpoint.json", "last.pt", "part-000000.csv"]
        assert (there / "last.pt").read_bytes() == b"epoch 3"
    latest: dict[str, Any] = json.loads(store.get_bytes(f"checkpoints/{job}/latest.json"))
    store.put_bytes(f"checkpoints/{job}/blobs/{latest['files']['last.pt']}", b"corrupted")
    elsewhere = tmp_path / "elsewhere" / job
    with CheckpointSync(store, job, elsewhere, interval_s=3600, secret_key="k"):
        assert not (elsewhere / "last.pt").exists()  # a bad checkpoint is dropped: the job starts over
    remove_checkpoint(store, job)
    assert store.keys(f"checkpoints/{job}/") == []


def test_settings_select_the_store() -> None:
    assert Settings.from_env({}).artifacts == ""
    settings = Settings.from_env(
        {"MLQ_ARTIFACTS": "s3://bucket/some/prefix", "MLQ_CACHE_MAX_MB": "5", "MLQ_HOME": "/tmp/h"}
    )
    assert (settings.artifacts, settings.cache_max_mb) == ("s3://bucket/some/prefix", 5)
    assert settings.artifact_cache_dir == Path("/tmp/h/cache")
    store = open_store(settings.artifacts)
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == ("bucket", "some/prefix/")
    assert isinstance(open_store("file:///srv/mlq"), LocalStore)
    assert open_store("") is None
    for bad in ("s3://", "gs://b/p", "file://relative/x", "s3://b/../x"):
        with pytest.raises(SettingsError, match="MLQ_ARTIFACTS"):
            Settings.from_env({"MLQ_ARTIFACTS": bad})


def test_a_search_trial_saved_on_one_host_is_registered_from_another(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from store.jobs import JobStore
    from store.searches import Searches

    jobs = JobStore(redis_client, ttl_s=60)
    registry = make_registry(store, redis_client, tmp_path / "registry")
    here = Searches(jobs, registry, tmp_path / "here" / "searches", store)
    there = Searches(jobs, registry, tmp_path / "there" / "searches", store)
    trial = here.trial_dir("default", "job_search", "job_trial")
    (trial / "artifact").mkdir(parents=True)
    (trial / "artifact" / "model.skops").write_bytes(b"best model")
    (trial / "manifest.json").write_text("{}")
    here.publish_trial("default", "job_search", "job_trial")
    fetched = there.fetch_trial("default", "job_search", "job_trial")
    assert fetched == there.trial_dir("default", "job_search", "job_trial")
    assert (fetched / "artifact" / "model.skops").read_bytes() == b"best model"
    assert registry.register("default", "searched", fetched / "artifact", {})["version"] == 1
    store.put_bytes("searches/default/job_search/job_trial/artifact/model.skops", b"altered")
    elsewhere = Searches(jobs, registry, tmp_path / "elsewhere" / "searches", store)
    with pytest.raises(ArtifactTampered):
        elsewhere.fetch_trial("default", "job_search", "job_trial")


def test_a_store_that_refuses_is_a_503_that_names_the_store_in_the_log_only(
    s3_server: RcloneS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from store.artifacts import StoreError

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    store = S3Store("no-such-bucket", "secret-prefix", s3_server.endpoint)
    (tmp_path / "f").write_bytes(b"x")
    for call in (
        lambda: store.put_bytes("k", b"x"),
        lambda: store.put_file("k", tmp_path / "f"),
        lambda: store.keys(""),
    ):
        caplog.clear()
        with pytest.raises(StoreError) as info:
            call()
        assert info.value.status == 503
        # The problem's body reaches tenants: no bucket, prefix or internal endpoint (issue 18); the log has them.
        body = str(info.value.to_dict())
        for internal in ("no-such-bucket", "secret-prefix", "127.0.0.1", s3_server.endpoint):
            assert internal not in body, body
        assert "s3://no-such-bucket/secret-prefix/" in caplog.text
