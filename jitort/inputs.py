"""Input conversion and validation against a graph's declared inputs.

Conversion runs on every call (cheap for NumPy arrays); validation runs once per new Signature,
so that a user's mistake is reported with the input's name, what was expected and what came.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dtypes
from .errors import InputDtypeError, InputError, InputShapeError, closest
from .ir.graph import Graph, ValueInfo
from .ir.types import MapType, OptionalType, SequenceType, TensorType


def to_value(v: Any, declared=None) -> Any:
    """A NumPy array (or list for sequences, None for empty optionals) from a user value."""
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "US":
            return v.astype(object)
        return v
    mod = type(v).__module__
    if mod.startswith("torch"):
        return _from_torch(v)
    if v is None:
        return None
    if isinstance(v, dict):  # a map: values take the declared value type
        vt = declared.value if isinstance(declared, MapType) else None
        if isinstance(vt, TensorType) and vt.dtype is not None and vt.dtype.kind not in "OUS":
            return {k: vt.dtype.type(x) for k, x in v.items()}
        return v
    if isinstance(v, (list, tuple)) and isinstance(declared, SequenceType):
        return [to_value(x, declared.elem) for x in v]
    if isinstance(declared, OptionalType):
        return to_value(v, declared.elem)
    dt = declared.dtype if isinstance(declared, TensorType) else None
    arr = np.asarray(v) if dt is None else np.asarray(v, dtype=dt)
    return arr.astype(object) if arr.dtype.kind in "US" else arr


def _from_torch(t) -> np.ndarray:
    import torch  # only reached when the caller already passed a torch tensor

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def type_str(t) -> str:
    """A type as onnxruntime prints it: tensor(float), seq(tensor(int64)), ..."""
    if isinstance(t, TensorType):
        return f"tensor({dtypes.type_name(dtypes.onnx_code(t.dtype)) if t.dtype is not None else 'undefined'})"
    if isinstance(t, SequenceType):
        return f"seq({type_str(t.elem)})"
    if isinstance(t, OptionalType):
        return f"optional({type_str(t.elem)})"
    return "unknown"


def value_type_str(v) -> str:
    if isinstance(v, np.ndarray):
        return f"tensor({dtypes.type_name(dtypes.onnx_code(v.dtype))})"
    if isinstance(v, list):
        return f"seq({value_type_str(v[0]) if v else '?'})"
    return type(v).__name__


def bind_feeds(graph: Graph, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Map positional and keyword arguments onto graph input names (no validation of values)."""
    names = graph.input_names
    if len(args) > len(names):
        raise InputError(f"model takes {len(names)} input(s) {names}, got {len(args)} positional arguments")
    feeds = dict(zip(names, args))
    for k, v in kwargs.items():
        if k in feeds:
            raise InputError(f"input {k!r} given both positionally and by name")
        feeds[k] = v
    return feeds


def validate(graph: Graph, feeds: dict[str, Any]) -> None:
    """Raise an InputError naming the first problem with ``feeds``."""
    declared = {v.name: v for v in graph.inputs}
    extra = [k for k in feeds if k not in declared]
    if extra:
        k = extra[0]
        raise InputError(
            f"unexpected input {k!r}{closest(k, declared)}; the model's inputs are {list(declared)}")
    missing = [v.name for v in graph.inputs if v.name not in feeds and v.name not in graph.initializers]
    if missing:
        raise InputError(
            f"missing input(s) {missing}; the model's inputs are "
            + ", ".join(f"{v.name}: {type_str(v.type)}{_shape_str(v)}" for v in graph.inputs))
    for name, value in feeds.items():
        _check_one(declared[name], value)


def _shape_str(v: ValueInfo) -> str:
    t = v.type
    if isinstance(t, TensorType) and t.shape is not None:
        return "[" + ",".join("?" if d is None else str(d) for d in t.shape) + "]"
    return ""


def _check_one(info: ValueInfo, value: Any) -> None:
    t = info.type
    if isinstance(t, OptionalType):
        if value is None:
            return
        t = t.elem
    if isinstance(t, SequenceType):
        if not isinstance(value, list):
            raise InputError(f"input {info.name!r} expects {type_str(t)}, got {value_type_str(value)}")
        return
    if not isinstance(t, TensorType):
        return
    if not isinstance(value, np.ndarray):
        raise InputError(
            f"input {info.name!r} expects a tensor ({type_str(t)}), got {type(value).__name__}")
    if t.dtype is not None and value.dtype != t.dtype:
        raise InputDtypeError(
            f"input {info.name!r} expects {type_str(t)}, got {value_type_str(value)} "
            f"(cast it with .astype(np.{np.dtype(t.dtype).name}))")
    if t.shape is None:
        return
    if value.ndim != len(t.shape):
        raise InputShapeError(
            f"input {info.name!r} expects rank {len(t.shape)} {_shape_str(info)}, "
            f"got rank {value.ndim} with shape {list(value.shape)}")
    for axis, (want, got) in enumerate(zip(t.shape, value.shape)):
        if isinstance(want, int) and want != got and want >= 0:
            raise InputShapeError(
                f"input {info.name!r} dim {axis} must be {want} {_shape_str(info)}, "
                f"got shape {list(value.shape)}")
