"""Restoring a checkpoint, a search trial or a dataset from the bucket trusts nothing in it (issue 18, finding 1),
against a real S3 server (rclone serve s3) and a LocalStore. An attacker who can write the bucket plants a
latest.json for the next attempt of a job: names that climb out of the folder, a forged last.pt, another job's
snapshot. Every one is refused and logged, nothing is written outside the folder, and the attempt starts fresh
instead of failing. A trial's index and a dataset's meta.json are signed the same way."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import pytest
import redis
from s3_server import RcloneS3

from store.artifact_cache import ArtifactCache
from store.artifacts import ArtifactStore, LocalStore, S3Store
from store.jobs import JobStore
from store.remote_datasets import StoreDatasets
from store.remote_registry import StoreRegistry
from store.searches import TRIAL_INDEX, Searches
from store.signed_index import sign as sign_index
from training.errors import ArtifactTampered
from worker.checkpoint_sync import CheckpointSync, sign_snapshot

JOB = "job_01hx0000000000000000000001"
SECRET = "the-secret-key"


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server: RcloneS3 = request.getfixturevalue("s3_server")
    for name, value in server.env.items():  # boto3's default chain reads the environment, as a deployed worker's
        monkeypatch.setenv(name, value)
    return S3Store(server.bucket(), "team/a", server.endpoint)


def plant(store: ArtifactStore, latest: bytes, blobs: dict[str, bytes]) -> None:
    """What an attacker with write access to the bucket does: blobs, then a latest.json naming them."""
    for content in blobs.values():
        store.put_bytes(f"checkpoints/{JOB}/blobs/{hashlib.sha256(content).hexdigest()}", content)
    store.put_bytes(f"checkpoints/{JOB}/latest.json", latest)


def files_of(blobs: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(content).hexdigest() for name, content in blobs.items()}


def restore(store: ArtifactStore, folder: Path, secret: str = SECRET) -> list[str]:
    with CheckpointSync(store, JOB, folder, interval_s=3600, secret_key=secret):
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_signed_checkpoint_follows_the_job_to_another_host(store: ArtifactStore, tmp_path: Path) -> None:
    here, there = tmp_path / "here" / JOB, tmp_path / "there" / JOB
    with CheckpointSync(store, JOB, here, interval_s=3600, secret_key=SECRET) as sync:
        here.mkdir(parents=True)
        (here / "last.pt").write_bytes(b"epoch 3")
        (here / "checkpoint.json").write_text("{}")
        (here / "part-000000.parquet").write_bytes(b"rows")
        sync.push()
    latest = json.loads(store.get_bytes(f"checkpoints/{JOB}/latest.json"))
    assert latest["subject"] == JOB and isinstance(latest["hmac"], str)
    assert restore(store, there) == ["checkpoint.json", "last.pt", "part-000000.parquet"]
    assert (there / "last.pt").read_bytes() == b"epoch 3"


@pytest.mark.parametrize(
    "name",
    ["{outside}", "../escaped.pth", "../../escaped.pth", "sub/last.pt", ".hidden", "last.pt/..", "..", "a\\b", ""],
)
def test_a_name_that_leaves_the_folder_is_refused_even_when_signed(
    store: ArtifactStore, tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Signed with the real key, so only the name check stands between the bucket and the worker's disk.
    outside = tmp_path / "site-packages" / "evil.pth"
    outside.parent.mkdir()
    name = name.format(outside=outside)
    blobs = {name: b"import os; os.system('calc')\n", "last.pt": b"forged"}
    plant(store, sign_snapshot(SECRET.encode(), JOB, files_of(blobs)), blobs)
    folder = tmp_path / "checkpoints" / JOB
    with caplog.at_level(logging.WARNING, logger="worker.checkpoint_sync"):
        assert restore(store, folder) == []
    assert "refused checkpoint" in caplog.text
    assert not outside.exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "store" not in p.parts) == []


def test_a_checkpoint_not_signed_with_the_key_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    blobs = {"last.pt": b"a forged model the next attempt would register and sign"}
    # The old unsigned layout, a snapshot signed with another key, and one with its HMAC stripped.
    for latest in (
        json.dumps(files_of(blobs)).encode(),
        sign_snapshot(b"another-key", JOB, files_of(blobs)),
        sign_snapshot(b"", JOB, files_of(blobs)),
        b"\xff not json",
    ):
        plant(store, latest, blobs)
        assert restore(store, tmp_path / "c" / JOB) == []


def test_another_jobs_signed_checkpoint_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    blobs = {"last.pt": b"job 2's weights"}
    plant(store, sign_snapshot(SECRET.encode(), "job_01hx0000000000000000000002", files_of(blobs)), blobs)
    assert restore(store, tmp_path / "c" / JOB) == []


def test_a_bad_sha_or_a_missing_blob_starts_fresh(store: ArtifactStore, tmp_path: Path) -> None:
    files = {"last.pt": "../../../models/x"}
    plant(store, sign_snapshot(SECRET.encode(), JOB, files), {})
    assert restore(store, tmp_path / "a" / JOB) == []
    plant(store, sign_snapshot(SECRET.encode(), JOB, {"last.pt": "0" * 64}), {})  # signed, but the blob is gone
    assert restore(store, tmp_path / "b" / JOB) == []


def test_without_a_secret_the_names_are_still_checked(store: ArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "evil.pth"
    blobs = {str(outside): b"code", "last.pt": b"w"}
    plant(store, sign_snapshot(b"", JOB, files_of(blobs)), blobs)
    assert restore(store, tmp_path / "c" / JOB, secret="") == []
    assert not outside.exists()
    good = {"last.pt": b"w"}
    plant(store, sign_snapshot(b"", JOB, files_of(good)), good)
    assert restore(store, tmp_path / "d" / JOB, secret="") == ["last.pt"]


# ---- a search trial's index.json: the concluder registers and signs what it names -----------------------------


def trial_setup(store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path) -> tuple[Searches, Searches]:
    jobs = JobStore(redis_client, ttl_s=60)
    registry = StoreRegistry(
        tmp_path / "models", store, lambda: redis_client, ArtifactCache(tmp_path / "cache", 1 << 24), SECRET
    )
    here = Searches(jobs, registry, tmp_path / "here", store)
    trial = here.trial_dir("default", "job_search", "job_trial")
    (trial / "artifact").mkdir(parents=True)
    (trial / "artifact" / "model.skops").write_bytes(b"best model")
    (trial / "manifest.json").write_text("{}")
    here.publish_trial("default", "job_search", "job_trial")
    return here, Searches(jobs, registry, tmp_path / "there", store)


TRIAL = "searches/default/job_search/job_trial/"


def test_a_swapped_trial_model_with_a_matching_unsigned_index_is_refused(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _, there = trial_setup(store, redis_client, tmp_path)
    forged = b"a model the search would register and sign"
    store.put_bytes(TRIAL + "artifact/model.skops", forged)
    files = {
        "artifact/model.skops": hashlib.sha256(forged).hexdigest(),
        "manifest.json": hashlib.sha256(b"{}").hexdigest(),
    }
    for index in (json.dumps(files).encode(), sign_index(b"", TRIAL_INDEX, TRIAL, files)):
        store.put_bytes(TRIAL + "index.json", index)
        with pytest.raises(ArtifactTampered, match="refused"):
            there.fetch_trial("default", "job_search", "job_trial")
    assert not there.trial_dir("default", "job_search", "job_trial").exists()


def test_a_trial_index_naming_a_path_outside_is_refused(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _, there = trial_setup(store, redis_client, tmp_path)
    outside = tmp_path / "evil.pth"
    for rel in ("../../../evil.pth", str(outside), "artifact/../../x"):
        files = {rel: hashlib.sha256(b"{}").hexdigest()}
        store.put_bytes(TRIAL + "index.json", sign_index(SECRET.encode(), TRIAL_INDEX, TRIAL, files))
        with pytest.raises(ArtifactTampered, match="not a plain relative name"):
            there.fetch_trial("default", "job_search", "job_trial")
    assert not outside.exists() and not (tmp_path / "x").exists()


def test_a_signed_trial_is_fetched_on_another_host(
    store: ArtifactStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _, there = trial_setup(store, redis_client, tmp_path)
    fetched = there.fetch_trial("default", "job_search", "job_trial")
    assert (fetched / "artifact" / "model.skops").read_bytes() == b"best model"


# ---- a dataset's meta.json: its sha256 pins the rows a model is trained on (and then signed) -------------------


def test_a_dataset_swapped_in_the_bucket_with_a_matching_meta_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    def host(name: str, secret: str = SECRET) -> StoreDatasets:
        return StoreDatasets(
            tmp_path / name / "datasets", store, ArtifactCache(tmp_path / name / "cache", 1 << 24), secret
        )

    meta = host("api").save("default", io.BytesIO(b"a,b\n1,x\n2,y\n"), "small", max_bytes=1 << 20)
    worker = host("worker")
    assert worker.get("default", meta["id"]) == meta and "hmac" not in meta
    key = f"datasets/default/{meta['id']}"
    stored = json.loads(store.get_bytes(key + "/meta.json"))
    poisoned = b"a,b\n1,poison\n2,poison\n"
    forged = {**stored, "sha256": hashlib.sha256(poisoned).hexdigest()}
    store.put_bytes(key + "/data.csv", poisoned)
    for meta_json in (forged, {k: v for k, v in forged.items() if k != "hmac"}):
        store.put_bytes(key + "/meta.json", json.dumps(meta_json).encode())
        for reader in (host("a"), host("b")):
            with pytest.raises(ArtifactTampered, match="not signed"):
                reader.path("default", meta["id"])
        assert host("c").list("default") == []  # not listed, and the listing still answers
    # Without a key nothing is signed, as for models: the swap goes through (the threat model says so).
    assert host("d", secret="").path("default", meta["id"]).read_bytes() == poisoned
