"""How much memory one loaded model version holds, for the model cache's budget (MLQ_MODEL_MEMORY_MB).

- PyTorch models: the bytes of every tensor in the network's state dict (parameters and persistent buffers;
  the packed int8 weights of a quantized version included), exact for what the weights hold.
- scikit-learn models and every preprocessor: an estimate by walking the object graph: numpy arrays count
  their `nbytes`, other objects `sys.getsizeof`; objects without a `__dict__` that define `__getstate__`
  (scikit-learn's Cython `Tree`) are walked through their state, which holds their node and value arrays.
  Nothing is pickled or serialised; the walk is bounded (WALK_LIMIT objects) so a huge forest costs milliseconds.
- On a GPU the cache measures instead the change of `torch.cuda.memory_allocated()` across the load (see
  worker/model_cache.py): what the version holds on the device the budget is for.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from training.predictor import Predictor

WALK_LIMIT = 200_000  # objects visited per estimate; beyond it the estimate is a floor
_ATOMS = (str, bytes, int, float, bool, complex, type(None))


def tensor_bytes(value: Any) -> int:
    """Bytes of a tensor, or of the tensors in a (nested) tuple/list of them (quantized packed params)."""
    if isinstance(value, torch.Tensor):
        return int(value.numel() * value.element_size())
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def module_bytes(module: torch.nn.Module) -> int:
    """Parameters + persistent buffers of `module`, from its state dict."""
    return sum(tensor_bytes(v) for v in module.state_dict().values())


def object_bytes(root: Any) -> int:
    """An estimate of the memory `root` holds (see the module docstring); shared objects count once."""
    # id -> object: holding each object keeps the temporary state dicts alive, so no id is reused mid-walk.
    seen: dict[int, Any] = {}
    todo = [root]
    total = 0
    while todo and len(seen) < WALK_LIMIT:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen[id(obj)] = obj
        if isinstance(obj, np.ndarray):
            # A view counts its base once (the base is walked like any other object).
            total += sys.getsizeof(obj) if obj.base is not None else int(obj.nbytes) + 112
            if obj.base is not None:
                todo.append(obj.base)
            if obj.dtype == object:
                todo.extend(obj.ravel().tolist())
            continue
        if isinstance(obj, torch.Tensor):
            total += tensor_bytes(obj)
            continue
        if isinstance(obj, torch.nn.Module):
            total += module_bytes(obj)
            continue
        total += sys.getsizeof(obj, 64)
        if isinstance(obj, (*_ATOMS, type)):
            continue
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
        elif hasattr(obj, "__dict__"):
            todo.append(vars(obj))
        else:
            todo.extend(_state(obj))
    return total


def _state(obj: Any) -> list[Any]:
    # Extension types (sklearn's Tree) keep their arrays out of reach of __dict__; their state holds them.
    try:
        state = obj.__getstate__()
    except Exception:  # noqa: BLE001 - any object may refuse; it then counts its own size only
        return []
    return [state] if isinstance(state, (dict, list, tuple)) else []


def predictor_bytes(predictor: Predictor) -> int:
    """Host-side bytes of a loaded version: its weights (exact for torch) and its preprocessing (estimated).
    An uploaded ONNX version says its own (its files: onnxruntime's session holds their weights)."""
    own = getattr(predictor, "memory_bytes", None)
    if callable(own):
        return int(own())
    net = getattr(predictor.model, "net", None)
    weights = module_bytes(net) if isinstance(net, torch.nn.Module) else object_bytes(predictor.model)
    return weights + object_bytes(predictor.preprocessor) + object_bytes(predictor.compiled)


def on_gpu(predictor: Predictor) -> bool:
    net = getattr(getattr(predictor, "model", None), "net", None)
    if not isinstance(net, torch.nn.Module):
        return False
    return any(t.is_cuda for t in net.parameters())
