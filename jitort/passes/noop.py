"""No-op elimination: nodes whose output equals one of their inputs for this Signature.

    x ──▶ [Identity | Dropout (inference) | Cast to x's type | Reshape/Expand/Tile/Squeeze/
           Unsqueeze/Flatten to x's own shape | Slice of everything | Pad by zeros |
           Transpose that moves only size-1 dims] ──▶ y ──▶ ...        =>   x ──▶ ...

    x ──▶ [Transpose p1] ──▶ [Transpose p2] ──▶ y    with p1[p2[i]] == i     =>   x ──▶ ...
    x ──▶ [Unsqueeze] ──▶ [Squeeze] ──▶ y            with shape(y) == shape(x) =>   x ──▶ ...
    (and Squeeze -> Unsqueeze)

The readers of y read x instead. When y is a graph output its name must stay: then x's producer
is renamed to write y, if y's node was x's only reader (else the node stays).

Guards: shapes and dtypes must be known for this Signature. Dropout is removed only in inference
mode (opset < 7: ``is_test=1``; opset >= 12: ``training_mode`` absent or a constant false) and
when its mask output is unused; otherwise a near miss says why. A Slice with a negative step
reverses, so steps must be positive; Pad must pad by zeros everywhere.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import np_dtype
from ..ir.graph import Graph, Node
from .base import BASIC, PassContext, graph_pass
from .pattern import GraphView

NAME = "no_op"
_SAME_SHAPE = frozenset({"Reshape", "Expand", "Tile", "Squeeze", "Unsqueeze", "Flatten"})


@graph_pass(NAME, level=BASIC, order=20)
def no_op(graph: Graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    changed = False
    for node in list(graph.nodes):
        if node.domain not in ("", "ai.onnx") or not node.outputs or not node.outputs[0]:
            continue
        source = _source(view, node)
        if source is not None and _bypass(view, node, source):
            ctx.hit(NAME)
            changed = True
    return changed


# -- pattern: which input does ``node``'s output equal? ------------------------------------------------
def _source(view: GraphView, node: Node) -> str | None:
    op = node.op_type
    x = node.inputs[0] if node.inputs else ""
    if not x:
        return None
    if op == "Identity":
        return x
    if op == "Dropout":
        return x if _inference_dropout(view, node) else None
    if op == "Cast":
        to = node.attrs.get("to")
        dt = view.dtype(x)
        return x if isinstance(to, int) and dt is not None and np_dtype(to) == dt else None
    if op == "CastLike":
        dt = view.dtype(x)
        return x if dt is not None and len(node.inputs) > 1 and dt == view.dtype(node.inputs[1]) else None
    if op in ("Squeeze", "Unsqueeze"):
        pair = _pair_source(view, node)
        if pair is not None:
            return pair
    if op == "Transpose":
        return _transpose_source(view, node)
    if not _same_shape(view, x, node.outputs[0]):
        return None
    if op in _SAME_SHAPE:
        return x
    if op == "Slice":
        return x if _positive_steps(view, node) else None
    if op == "Pad":
        pads = node.attrs.get("pads") if len(node.inputs) < 2 else view.const(node.inputs[1])
        return x if pads is not None and not np.any(np.asarray(pads)) else None
    return None


def _same_shape(view: GraphView, a: str, b: str) -> bool:
    sa, sb = view.tensor_type(a), view.tensor_type(b)
    return (sa is not None and sb is not None and sa.is_static and sb.is_static and sa.shape == sb.shape
            and (sa.dtype is None or sb.dtype is None or sa.dtype == sb.dtype))


def _inference_dropout(view: GraphView, node: Node) -> bool:
    from ..backends.reference import node_version

    version = node_version(node, view.graph.opsets)
    if version < 7 and not node.attrs.get("is_test", 0):
        view.ctx.near_miss(NAME, node, "Dropout is_test=0 is training mode")
        return False
    if version >= 12 and len(node.inputs) > 2 and node.inputs[2]:
        mode = view.const(node.inputs[2])
        if mode is None:
            view.ctx.near_miss(NAME, node, "Dropout training_mode is not a constant")
            return False
        if bool(np.asarray(mode).reshape(-1)[0]):
            view.ctx.near_miss(NAME, node, "Dropout runs in training mode")
            return False
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    if mask and (view.consumers(mask) or view.is_output(mask)):
        view.ctx.near_miss(NAME, node, "Dropout mask output is used")
        return False
    return True


def _positive_steps(view: GraphView, node: Node) -> bool:
    if len(node.inputs) < 5 or not node.inputs[4]:
        return True  # opset < 10 (no steps) or default steps of 1
    steps = view.const(node.inputs[4])
    return steps is not None and bool(np.all(np.asarray(steps) > 0))


def _perm(view: GraphView, node: Node) -> list[int] | None:
    rank = view.rank(node.inputs[0])
    if rank is None:
        return None
    perm = node.attrs.get("perm")
    return list(range(rank))[::-1] if perm is None else [int(p) for p in perm]


def _transpose_source(view: GraphView, node: Node) -> str | None:
    x = node.inputs[0]
    p2 = _perm(view, node)
    if p2 is None:
        return None
    first = view.producer_of(node, 0, "Transpose")
    if first is not None:
        p1 = _perm(view, first)
        if p1 is not None and [p1[i] for i in p2] == list(range(len(p2))):
            return first.inputs[0]
    if not _same_shape(view, x, node.outputs[0]):
        return None
    shape = view.shape(x)
    moved = [p for p in p2 if shape[p] != 1]
    return x if moved == sorted(moved) else None


def _pair_source(view: GraphView, node: Node) -> str | None:
    other = "Squeeze" if node.op_type == "Unsqueeze" else "Unsqueeze"
    first = view.producer_of(node, 0, other)
    if first is None or not _same_shape(view, first.inputs[0], node.outputs[0]):
        return None
    return first.inputs[0]


# -- replacement ----------------------------------------------------------------------------------------
def _bypass(view: GraphView, node: Node, source: str) -> bool:
    y = node.outputs[0]
    if view.redirect(y, source):
        view.remove(node)
        return True
    # y is a graph output: let source's producer write y, when node is source's only reader
    graph = view.graph
    producer = view.producer(source)
    if (producer is None or view.is_output(source) or source in graph.input_names
            or any(u is not node for u in view.consumers(source))):
        return False
    producer.outputs = [y if o == source else o for o in producer.outputs]
    view.ctx.types[y] = view.ctx.types.get(source, view.ctx.types.get(y))
    view.remove(node)
    return True
