"""Common-subexpression elimination: the same op over the same inputs is computed once.

           ┌─▶ [Transpose perm=(0,2,1,3)] ──▶ a ──▶ ...            ┌─▶ ...
    x ─────┤                                            =>  x ──▶ [Transpose] ──▶ a ──┤
           └─▶ [Transpose perm=(0,2,1,3)] ──▶ b ──▶ ...            └─▶ ... (read a)

Two nodes are the same when op type, domain, pinned opset, attributes (compared by value,
tensors by bytes), inputs (after earlier merges; sorted for the two-input commutative ops Add,
Mul, Max, Min, And, Or, Xor, Equal, Sum) and the set of requested outputs agree. One forward sweep
merges whole duplicate chains: once the first node of a chain is merged, its successors read the
same names and match too.

Guards: nondeterministic ops (Random*, Bernoulli, Multinomial, Dropout) and ops with subgraphs
are never merged; a duplicate whose output is a graph output keeps its name, so it stays.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, rename_free
from .base import BASIC, PassContext, graph_pass
from .fold import NONDETERMINISTIC

NAME = "common_subexpression"
COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min", "And", "Or", "Xor", "Equal", "Sum"})


@graph_pass(NAME, level=BASIC, order=40)
def common_subexpression(graph: Graph, ctx: PassContext) -> bool:
    outputs = set(graph.output_names)
    seen: dict[tuple, list[str]] = {}
    alias: dict[str, str] = {}
    kept = []
    merged = 0
    for node in graph.nodes:
        if alias:
            node.inputs = [alias.get(i, i) for i in node.inputs]
            for g in node.subgraphs():
                rename_free(g, alias)
        key = _key(node)
        if key is None:
            kept.append(node)
            continue
        first = seen.get(key)
        if first is None or any(o in outputs for o in node.outputs if o):
            seen.setdefault(key, list(node.outputs))
            kept.append(node)
            continue
        for mine, theirs in zip(node.outputs, first):
            if mine:
                alias[mine] = theirs
        merged += 1
    if not merged:
        return False
    graph.nodes = kept
    ctx.hit(NAME, merged)
    return True


# -- pattern: the identity of a computation ----------------------------------------------------------
def _key(node) -> tuple | None:
    if node.op_type in NONDETERMINISTIC or any(True for _ in node.subgraphs()):
        return None
    if not any(node.outputs):
        return None
    inputs = tuple(node.inputs)
    if node.op_type in COMMUTATIVE and node.domain in ("", "ai.onnx") and len(inputs) == 2 and all(inputs):
        inputs = tuple(sorted(inputs))
    try:
        attrs = tuple(sorted((k, _freeze(v)) for k, v in node.attrs.items()))
    except _Unhashable:
        return None
    requested = tuple(bool(o) for o in node.outputs)
    return (node.domain, node.op_type, node.opset, inputs, attrs, requested)


class _Unhashable(Exception):
    pass


def _freeze(v):
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            return ("obj", v.shape, tuple(map(_freeze, v.reshape(-1).tolist())))
        return ("nd", v.dtype.str, v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(v, (list, tuple)):
        return ("seq", tuple(_freeze(x) for x in v))
    if isinstance(v, float):
        return ("f", v.hex())
    if isinstance(v, (int, str, bytes, bool, type(None), np.generic)):
        return (type(v).__name__, v.item() if isinstance(v, np.generic) else v)
    raise _Unhashable(type(v).__name__)
