"""Chains of layout-only ops collapsed into one op.

    x ──▶ [Reshape | Flatten | Squeeze | Unsqueeze] ──▶ ... ──▶ [Reshape | Flatten | Squeeze |
          Unsqueeze] ──▶ y                       =>   x ──▶ [Reshape to shape(y)] ──▶ y

    x ──▶ [Transpose p1] ──▶ [Transpose p2] ──▶ y   =>   x ──▶ [Transpose p1[p2]] ──▶ y

The last node of a chain is rewritten in place (same output name, so nobody else changes) to read
the chain's start; the earlier nodes die if nothing else reads them (dead_code removes them). A
forward sweep collapses a chain of any length in one run: each node sees its producer already
collapsed. Row-major order is all a Reshape/Flatten/Squeeze/Unsqueeze changes, so any chain of
them equals one Reshape to the final shape.

Guards: the final shape must be static for this Signature and free of 0 dims (a 0 in a Reshape
target copies the input dim); Reshape needs opset >= 5 (a shape input). A Transpose pair that
cancels is left to no_op, which removes both.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from .base import BASIC, PassContext, graph_pass
from .pattern import GraphView

NAME = "chain_collapse"
RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


@graph_pass(NAME, level=BASIC, order=30)
def chain_collapse(graph: Graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    changed = False
    for k, node in enumerate(graph.nodes):
        if node.domain not in ("", "ai.onnx") or not node.inputs or not node.inputs[0]:
            continue
        new = None
        if node.op_type in RESHAPES:
            new = _reshape_chain(view, node)
        elif node.op_type == "Transpose":
            new = _transpose_chain(view, node)
        if new is not None:
            graph.nodes[k] = new
            view.invalidate()
            ctx.hit(NAME)
            changed = True
    return changed


def _reshape_chain(view: GraphView, node: Node) -> Node | None:
    first = view.producer_of(node, 0, RESHAPES)
    if first is None:
        return None
    from ..backends.reference import node_version

    y = node.outputs[0]
    t = view.tensor_type(y)
    if t is None or not t.is_static:
        view.ctx.near_miss(NAME, node, "the chain's output shape is not static")
        return None
    if 0 in t.shape:
        view.ctx.near_miss(NAME, node, "the chain's output has a 0 dim")
        return None
    if node.opset is None and node_version(node, view.graph.opsets) < 5:
        return None
    shape = view.add_initializer("shape", np.array(t.shape, dtype=np.int64))
    return Node("Reshape", [first.inputs[0], shape], [y], {}, "", node.name, _reshape_opset(node))


def _reshape_opset(node: Node) -> int | None:
    # a pinned opset (inlined function body) must still know Reshape with a shape input
    return None if node.opset is None else max(node.opset, 5)


def _transpose_chain(view: GraphView, node: Node) -> Node | None:
    first = view.producer_of(node, 0, "Transpose")
    if first is None:
        return None
    p2, p1 = _perm(view, node), _perm(view, first)
    if p1 is None or p2 is None:
        view.ctx.near_miss(NAME, node, "rank unknown")
        return None
    perm = [p1[i] for i in p2]
    if perm == list(range(len(perm))):
        return None  # cancels: no_op removes the pair
    return Node("Transpose", [first.inputs[0]], list(node.outputs), {"perm": perm}, "", node.name, node.opset)


def _perm(view: GraphView, node: Node) -> list[int] | None:
    rank = view.rank(node.inputs[0])
    perm = node.attrs.get("perm")
    if perm is not None:
        return [int(p) for p in perm]
    return None if rank is None else list(range(rank))[::-1]
