"""scikit-learn objects on disk through skops, loaded only when every type in the file is on a trusted list.

skops by itself trusts any scikit-learn class; mlqueue is stricter: each caller names the exact types it writes,
and a file naming anything else (a swapped artifact, a FunctionTransformer wrapping os.system) is refused before
a single object is built.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from training.errors import ArtifactTampered, MLQError


def types_in(path: Path) -> set[str]:
    """Every type named in a .skops file: its schema's nodes plus whatever skops itself calls untrusted."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
        found = set(sio.get_untrusted_types(file=path))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ArtifactTampered(f"{path.name} is not a readable skops file: {exc}") from exc
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node and "__module__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def dump(obj: Any, path: Path, trusted: Collection[str]) -> None:
    """Write `obj` atomically; refuse to write what `load` would refuse to read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sio.dump(obj, tmp)
    extra = sorted(types_in(tmp) - set(trusted))
    if extra:
        tmp.unlink()
        raise MLQError(f"refusing to save {path.name}: it holds types outside the trusted list: {', '.join(extra)}")
    os.replace(tmp, path)


def load(path: Path, trusted: Collection[str]) -> Any:
    """Load a file written by `dump`; any type outside `trusted` is refused unbuilt."""
    if not path.is_file():
        raise ArtifactTampered(f"{path.name} is missing; the model version is incomplete")
    extra = sorted(types_in(path) - set(trusted))
    if extra:
        raise ArtifactTampered(
            f"{path.name} contains types mlqueue never writes and will not load: "
            f"{', '.join(extra)}; retrain the model with mlqueue"
        )
    try:
        return sio.load(path, trusted=list(trusted))
    except UntrustedTypesFoundException as exc:
        raise ArtifactTampered(f"{path.name} contains untrusted types; it was not loaded: {exc}") from exc
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # a truncated zip or a bad schema
        raise ArtifactTampered(f"{path.name} is not a readable skops file: {exc}") from exc
