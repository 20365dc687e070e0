"""The API process stays light: importing it and building the app loads no ML library and nothing of worker/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = [
    "numpy",
    "pandas",
    "sklearn",
    "torch",
    "worker.tasks",
    "training.data",
    "training.algorithms",
    "training.predictor",
    "training.pipeline",
    "training.mlp",
    "training.metrics",
]

SCRIPT = """
import json, sys
import api
from store.settings import Settings
app = api.create_app(Settings(redis_url="redis://127.0.0.1:1/0", home=__import__("pathlib").Path(sys.argv[1])))
app.test_client().get("/openapi.json")
print(json.dumps(sorted(sys.modules)))
"""


def test_creating_the_app_imports_no_torch_sklearn_pandas_numpy_or_task_modules(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=root, capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "api" in loaded and "flask_openapi3" in loaded
    assert not [m for m in FORBIDDEN if m in loaded]
    # Of the server's own packages, only the torch-free store (and training's stdlib-only modules, below).
    assert not [m for m in loaded if m == "worker" or m.startswith("worker.")]
    assert "store.jobs" in loaded
    # The stdlib-only modules of training/ (postprocess: the API checks predict options at submit; manifest: the
    # typed shape of a version's manifest; drift_psi: the PSI of the drift route and gauges).
    assert {m for m in loaded if m.startswith("training.")} <= {
        "training.errors",
        "training.params",
        "training.optimize_params",
        "training.postprocess",
        "training.registry",
        "training.manifest",
        "training.search_space",
        "training.drift_psi",
        "training.onnx_metadata",  # an upload's metadata, checked for shape (the graph is checked in a child)
    }
