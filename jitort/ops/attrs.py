"""ONNX AttributeProto -> plain Python values, as kernels receive them."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from ..lazy import AttributeProto, numpy_helper

A = AttributeProto


def _str(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def tensor_value(t) -> np.ndarray:
    """A TensorProto as a NumPy array (string tensors as object arrays of str)."""
    arr = numpy_helper.to_array(t)
    if arr.dtype == object:
        arr = np.vectorize(lambda v: _str(v) if isinstance(v, bytes) else v, otypes=[object])(arr) if arr.size else arr
    return arr


def sparse_value(sp) -> np.ndarray:
    """A SparseTensorProto densified."""
    values = tensor_value(sp.values)
    idx = tensor_value(sp.indices).astype(np.int64) if sp.indices.dims else np.zeros((0,), np.int64)
    dims = tuple(sp.dims)
    out = np.zeros(dims, dtype=values.dtype)
    flat = out.reshape(-1)
    if idx.ndim == 1:
        flat[idx] = values.reshape(-1)
    elif idx.size:
        flat[np.ravel_multi_index(tuple(idx.T), dims)] = values.reshape(-1)
    return out


def attribute_value(a, graph_fn: Callable | None = None) -> Any:
    t = a.type
    if t == A.FLOAT:
        return float(a.f)
    if t == A.INT:
        return int(a.i)
    if t == A.STRING:
        return _str(a.s)
    if t == A.TENSOR:
        return tensor_value(a.t)
    if t == A.SPARSE_TENSOR:
        return sparse_value(a.sparse_tensor)
    if t == A.GRAPH:
        return graph_fn(a.g) if graph_fn else a.g
    if t == A.FLOATS:
        return [float(v) for v in a.floats]
    if t == A.INTS:
        return [int(v) for v in a.ints]
    if t == A.STRINGS:
        return [_str(v) for v in a.strings]
    if t == A.TENSORS:
        return [tensor_value(v) for v in a.tensors]
    if t == A.GRAPHS:
        return [graph_fn(g) if graph_fn else g for g in a.graphs]
    if t == A.SPARSE_TENSORS:
        return [sparse_value(v) for v in a.sparse_tensors]
    if t == A.TYPE_PROTO:
        return a.tp
    if t == A.TYPE_PROTOS:
        return list(a.type_protos)
    raise ValueError(f"attribute {a.name!r} has unsupported type {t}")


def node_attributes(node, graph_fn: Callable | None = None) -> dict[str, Any]:
    return {a.name: attribute_value(a, graph_fn) for a in node.attribute}
