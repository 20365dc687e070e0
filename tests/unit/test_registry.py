"""The model registry: versions, aliases, integrity checks, safe names, and concurrent writers. Stdlib only."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from training.errors import ArtifactTampered, InvalidName, ResourceNotFound, VersionInUse
from training.manifest import ModelManifest
from training.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[2]


def stage(directory: Path, content: bytes = b"weights") -> Path:
    """A staging directory holding the files a pipeline would save."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.skops").write_bytes(content)
    (directory / "preprocessor.skops").write_bytes(b"pre-" + content)
    return directory


def register_many(root: str, worker: int, count: int) -> list[int]:
    """Run in a spawned process: register `count` versions of one model."""
    registry = ModelRegistry(Path(root))
    versions = []
    for i in range(count):
        staging = stage(Path(root).parent / f"staging-{worker}-{i}", f"w{worker}-{i}".encode())
        versions.append(registry.register("default", "iris", staging, {"worker": worker, "i": i})["version"])
    return versions


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def register(registry: ModelRegistry, tmp_path: Path, name: str = "iris", tenant: str = "default") -> ModelManifest:
    staging = stage(tmp_path / f"staging-{name}-{len(list(tmp_path.iterdir()))}")
    return registry.register(tenant, name, staging, {"algorithm": "logistic_regression", "task": "classification"})


def test_register_moves_files_into_version_one_and_records_checksums(registry: ModelRegistry, tmp_path: Path) -> None:
    manifest = register(registry, tmp_path)
    assert manifest["version"] == 1
    assert manifest["algorithm"] == "logistic_regression"
    assert manifest["created_at"].endswith("Z") and "." in manifest["created_at"]
    assert manifest["files"]["model.skops"] == {
        "sha256": hashlib.sha256(b"weights").hexdigest(),
        "size_bytes": len(b"weights"),
    }
    assert manifest["artifact"]["format"] == "mlqueue-v1"
    assert manifest["artifact"]["size_bytes"] == len(b"weights") + len(b"pre-weights")
    version_dir = registry.root / "default" / "iris" / "1"
    assert sorted(p.name for p in version_dir.iterdir()) == ["manifest.json", "model.skops", "preprocessor.skops"]
    assert json.loads((version_dir / "manifest.json").read_text()) == manifest
    assert registry.manifest("default", "iris", 1) == manifest


def test_list_get_and_resolve_follow_versions_and_aliases(registry: ModelRegistry, tmp_path: Path) -> None:
    for _ in range(3):
        register(registry, tmp_path)
    register(registry, tmp_path, name="wine")
    assert registry.list_models("default") == [
        {"name": "iris", "latest_version": 3, "aliases": {}},
        {"name": "wine", "latest_version": 1, "aliases": {}},
    ]
    assert registry.list_models("other-tenant") == []
    assert registry.resolve("default", "iris") == 3  # no production alias: latest
    registry.set_alias("default", "iris", "production", 2)
    registry.set_alias("default", "iris", "staging", 3)
    assert registry.resolve("default", "iris") == 2
    assert registry.resolve("default", "iris", "staging") == 3
    assert registry.resolve("default", "iris", "1") == 1
    assert registry.resolve("default", "iris", 1) == 1
    model = registry.get_model("default", "iris")
    assert model["latest_version"] == 3
    assert model["aliases"] == {"production": 2, "staging": 3}
    assert [m["version"] for m in model["versions"]] == [1, 2, 3]


def test_unknown_versions_models_and_aliases_are_not_found_with_what_exists(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    register(registry, tmp_path)
    register(registry, tmp_path)
    with pytest.raises(ResourceNotFound, match=r"no version 7; versions: 1, 2"):
        registry.resolve("default", "iris", 7)
    with pytest.raises(ResourceNotFound, match="no alias 'canary'"):
        registry.resolve("default", "iris", "canary")
    with pytest.raises(ResourceNotFound, match="does not exist"):
        registry.get_model("default", "nope")
    with pytest.raises(ResourceNotFound):
        registry.set_alias("default", "iris", "production", 9)
    with pytest.raises(ResourceNotFound, match="no alias 'staging'"):
        registry.delete_alias("default", "iris", "staging")
    with pytest.raises(ResourceNotFound):
        registry.set_alias("default", "nope", "production", 1)
    assert not (registry.root / "default" / "nope").exists()  # a 404 leaves nothing behind


def test_deleting_an_alias_and_then_its_version_works_but_not_while_aliased(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    register(registry, tmp_path)
    register(registry, tmp_path)
    registry.set_alias("default", "iris", "production", 1)
    with pytest.raises(VersionInUse, match="production"):
        registry.delete_version("default", "iris", 1)
    registry.delete_alias("default", "iris", "production")
    assert registry.aliases("default", "iris") == {}
    registry.delete_version("default", "iris", 1)
    assert [m["version"] for m in registry.get_model("default", "iris")["versions"]] == [2]
    assert not any(p.name.startswith(".trash-") for p in (registry.root / "default" / "iris").iterdir())


def test_version_numbers_are_never_reused_after_deleting_the_latest(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path)
    register(registry, tmp_path)
    registry.delete_version("default", "iris", 2)
    assert register(registry, tmp_path)["version"] == 3


def test_an_alias_made_of_digits_is_refused_as_ambiguous_with_a_version(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    register(registry, tmp_path)
    with pytest.raises(InvalidName, match="digits"):
        registry.set_alias("default", "iris", "2", 1)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "A", ".hidden", "%2e%2e", "..", ".", "a" * 64, "x\n", None])
def test_unsafe_or_malformed_names_are_refused_with_the_allowed_pattern(
    registry: ModelRegistry, tmp_path: Path, bad: Any
) -> None:
    staging = stage(tmp_path / "staging")
    with pytest.raises(InvalidName, match=r"\^\[a-z0-9\]"):
        registry.register("default", bad, staging, {})
    with pytest.raises(InvalidName):
        registry.register(bad, "iris", staging, {})
    with pytest.raises(InvalidName):
        registry.resolve(bad, "iris")
    register(registry, tmp_path)
    with pytest.raises(InvalidName):
        registry.set_alias("default", "iris", bad, 1)
    assert sorted(p.name for p in registry.root.iterdir()) == ["default"]


def test_a_63_character_name_is_accepted(registry: ModelRegistry, tmp_path: Path) -> None:
    assert register(registry, tmp_path, name="a" * 63)["version"] == 1


def test_a_leftover_temporary_directory_is_never_listed_as_a_version(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path)
    leftover = registry.root / "default" / "iris" / ".tmp-crashed"
    leftover.mkdir()
    (leftover / "model.skops").write_bytes(b"half")
    assert registry.get_model("default", "iris")["latest_version"] == 1
    assert register(registry, tmp_path)["version"] == 2
    assert [m["version"] for m in registry.get_model("default", "iris")["versions"]] == [1, 2]


def test_concurrent_registrations_from_several_processes_get_distinct_versions(tmp_path: Path) -> None:
    root = tmp_path / "models"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(register_many, [(str(root), w, 3) for w in range(4)])
    versions = sorted(v for batch in results for v in batch)
    assert versions == list(range(1, 13))
    registry = ModelRegistry(root)
    manifests: list[Mapping[str, Any]] = [*registry.get_model("default", "iris")["versions"]]  # with their own keys
    assert sorted((m["worker"], m["i"]) for m in manifests) == [(w, i) for w in range(4) for i in range(3)]
    for m in manifests:  # each version holds the files its own writer staged
        expected = hashlib.sha256(f"w{m['worker']}-{m['i']}".encode()).hexdigest()
        assert m["files"]["model.skops"]["sha256"] == expected
        registry.verified_dir("default", "iris", m["version"])


def test_a_flipped_byte_is_detected_before_the_path_is_handed_out(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path)
    assert registry.verified_dir("default", "iris", 1) == registry.root / "default" / "iris" / "1"
    model_file = registry.root / "default" / "iris" / "1" / "model.skops"
    data = bytearray(model_file.read_bytes())
    data[0] ^= 0x01
    model_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactTampered, match="model.skops"):
        registry.verified_dir("default", "iris", 1)
    with pytest.raises(ArtifactTampered):
        registry.archive("default", "iris", 1)


def test_an_unlisted_extra_file_in_a_version_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path)
    (registry.root / "default" / "iris" / "1" / "evil.skops").write_bytes(b"x")
    with pytest.raises(ArtifactTampered, match="evil.skops"):
        registry.verified_dir("default", "iris", 1)


def test_a_missing_listed_file_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path)
    (registry.root / "default" / "iris" / "1" / "preprocessor.skops").unlink()
    with pytest.raises(ArtifactTampered, match="preprocessor.skops"):
        registry.verified_dir("default", "iris", 1)


def test_an_hmac_signed_manifest_is_refused_when_edited_or_read_with_another_key(tmp_path: Path) -> None:
    signed = ModelRegistry(tmp_path / "models", secret_key="s3cret")
    manifest = register(signed, tmp_path)
    assert len(manifest["hmac"]) == 64
    assert signed.verified_dir("default", "iris", 1).is_dir()
    with pytest.raises(ArtifactTampered, match="HMAC"):
        ModelRegistry(tmp_path / "models", secret_key="other").verified_dir("default", "iris", 1)
    path = tmp_path / "models" / "default" / "iris" / "1" / "manifest.json"
    edited = json.loads(path.read_text())
    edited["task"] = "regression"
    path.write_text(json.dumps(edited))
    with pytest.raises(ArtifactTampered, match="HMAC"):
        signed.verified_dir("default", "iris", 1)


def test_an_unsigned_manifest_is_refused_when_a_key_is_configured(tmp_path: Path) -> None:
    register(ModelRegistry(tmp_path / "models"), tmp_path)
    with pytest.raises(ArtifactTampered, match="HMAC"):
        ModelRegistry(tmp_path / "models", secret_key="s3cret").verified_dir("default", "iris", 1)


def test_archive_is_a_deterministic_tar_gz_of_the_version_files(registry: ModelRegistry, tmp_path: Path) -> None:
    manifest = register(registry, tmp_path)
    blob = registry.archive("default", "iris", 1)
    assert blob == registry.archive("default", "iris", 1)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        names = tar.getnames()
        members = {n: tar.extractfile(n) for n in names}
        contents = {n: m.read() for n, m in members.items() if m is not None}
    assert names == ["iris-1/manifest.json", "iris-1/model.skops", "iris-1/preprocessor.skops"]
    assert contents["iris-1/model.skops"] == b"weights"
    assert json.loads(contents["iris-1/manifest.json"]) == manifest


def test_the_state_token_changes_when_aliases_or_versions_change(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, tmp_path)
    register(registry, tmp_path)
    tokens = [registry.state_token("default", "iris")]
    registry.set_alias("default", "iris", "production", 1)
    tokens.append(registry.state_token("default", "iris"))
    registry.set_alias("default", "iris", "production", 2)  # same file size, same clock tick is likely
    tokens.append(registry.state_token("default", "iris"))
    register(registry, tmp_path)
    tokens.append(registry.state_token("default", "iris"))
    assert len(set(tokens)) == 4
    assert registry.state_token("default", "iris") == tokens[-1]


def test_importing_the_registry_loads_no_heavy_ml_library() -> None:
    code = (
        "import sys, training.registry\n"
        "heavy = [m for m in ('numpy', 'pandas', 'sklearn', 'torch', 'scipy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
