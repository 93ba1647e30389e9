"""Small matching helpers shared by fuse_softmax / fuse_norm / fuse_gelu / fuse_matmul."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from .pattern import GraphView

#: Relative tolerance when a model's constant is compared with the one a pattern needs
#: (exporters write float32-rounded or truncated literals: 0.7978845608 vs sqrt(2/pi)).
CONST_RTOL = 1e-4


def close(v: float | None, target: float, rtol: float = CONST_RTOL) -> bool:
    return v is not None and abs(v - target) <= rtol * abs(target)


def is_op(node: Node | None, *ops: str) -> bool:
    return isinstance(node, Node) and node.domain in ("", "ai.onnx") and node.op_type in ops


def other(node: Node, name: str) -> str | None:
    """The other input of a binary node one of whose inputs is ``name``."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a == name:
        return b
    if b == name:
        return a
    return None


def split_const(view: GraphView, node: Node) -> tuple[str, float] | None:
    """(non-constant input, scalar constant) of a binary node with exactly one scalar operand."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    sa, sb = view.scalar(a), view.scalar(b)
    if sb is not None and sa is None:
        return a, sb
    if sa is not None and sb is None:
        return b, sa
    return None


def is_float(view: GraphView, name: str) -> bool:
    dt = view.dtype(name)
    return dt is not None and np.dtype(dt).kind == "f"


def reduce_axes(view: GraphView, node: Node) -> tuple[tuple[int, ...], int] | None:
    """(sorted non-negative axes, keepdims) of a Reduce* node when known; None otherwise."""
    rank = view.rank(node.inputs[0])
    if rank is None:
        return None
    if "axes" in node.attrs:
        axes = node.attrs["axes"]
    elif len(node.inputs) > 1 and node.inputs[1]:
        c = view.const(node.inputs[1])
        if c is None:
            return None
        axes = [int(v) for v in np.asarray(c).reshape(-1)]
    else:
        axes = []
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    norm = sorted({a + rank if a < 0 else a for a in axes})
    if any(not 0 <= a < rank for a in norm):
        return None
    return tuple(norm), int(node.attrs.get("keepdims", 1))


def trailing_start(axes: tuple[int, ...], rank: int) -> int | None:
    """a when axes == (a, a+1, ..., rank-1), else None."""
    if not axes or list(axes) != list(range(axes[0], rank)):
        return None
    return axes[0]


def opset(view: GraphView) -> int:
    ops = view.graph.opsets
    return ops.get("", ops.get("ai.onnx", 1))
