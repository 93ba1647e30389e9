"""Gemm between flattening Reshapes -> a batched MatMul (+ bias Add), so epilogues can fuse.

    x [..., K] ──▶ Reshape ──▶ [M, K] ──▶ Gemm(W, C) ──▶ [M, N] ──▶ Reshape ──▶ y [..., N]
                                           (transA=0, alpha=1, W and C constant)
    =>
    x [..., K] ──▶ MatMul(W') ──▶ Add(C') ──▶ y [..., N]          (W' = W or Wᵀ, C' = C as [N])

This is how transformers' Conv1D (GPT-2) exports ``x.view(-1, K) @ W + b``: the Reshapes hide
the Gemm's output from the MatMul + bias + activation fusion. Guards: static shapes for this
Signature; the outer Reshape restores exactly x's leading dims; the flattened values are read
only here; C broadcasts along rows only (shape [N], [1, N] or scalar) and beta is 1 (or C is
absent); a Gemm with transA or alpha != 1 is left alone.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from .base import BASIC, PassContext, graph_pass
from .pattern import GraphView

NAME = "gemm_reshape"


@graph_pass(NAME, level=BASIC, order=35)
def gemm_reshape(graph: Graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    changed = False
    for gemm in [n for n in graph.nodes if n.op_type == "Gemm" and n.domain in ("", "ai.onnx")]:
        match = _match(view, gemm)
        if match is None:
            continue
        inner, outer, x = match
        view.replace([inner, gemm, outer], _rewrite(view, gemm, outer, x))
        ctx.hit(NAME)
        changed = True
    return changed


def _match(view: GraphView, gemm: Node):
    inner = view.producer_of(gemm, 0, "Reshape")
    if inner is None or len(gemm.inputs) < 2:
        return None
    outer = view.single_consumer(gemm.outputs[0])
    if outer is None or outer.op_type != "Reshape" or outer.inputs[0] != gemm.outputs[0]:
        return None
    if view.single_consumer(inner.outputs[0]) is not gemm:
        return None
    x = inner.inputs[0]
    xs, fs, ys = view.shape(x), view.shape(inner.outputs[0]), view.shape(outer.outputs[0])
    if not all(s is not None and all(isinstance(d, int) for d in s) for s in (xs, fs, ys)):
        return None
    if len(xs) < 3 or len(fs) != 2 or fs[1] != xs[-1] or tuple(ys[:-1]) != tuple(xs[:-1]):
        return None
    a = gemm.attrs
    if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0:
        return None
    w = view.const(gemm.inputs[1])
    if w is None or w.ndim != 2:
        return None
    c_name = gemm.inputs[2] if len(gemm.inputs) > 2 else ""
    if c_name:
        c = view.const(c_name)
        n = w.shape[0] if a.get("transB", 0) else w.shape[1]
        if c is None or float(a.get("beta", 1.0)) != 1.0 or c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1):
            return None
    if ys[-1] != (w.shape[0] if a.get("transB", 0) else w.shape[1]):
        return None
    return inner, outer, x


def _rewrite(view: GraphView, gemm: Node, outer: Node, x: str) -> list[Node]:
    w = view.const(gemm.inputs[1])
    if gemm.attrs.get("transB", 0):
        w = np.ascontiguousarray(w.T)
    w_name = view.add_initializer(f"{gemm.name or 'gemm'}_W", w)
    y = outer.outputs[0]
    c_name = gemm.inputs[2] if len(gemm.inputs) > 2 else ""
    if not c_name:
        return [Node("MatMul", [x, w_name], [y], name=f"{gemm.name}_matmul")]
    c = view.const(c_name).reshape(-1)
    c_name = view.add_initializer(f"{gemm.name or 'gemm'}_C", c)
    mm = view.ctx.fresh(view.graph, f"{gemm.name or 'gemm'}_mm")
    return [Node("MatMul", [x, w_name], [mm], name=f"{gemm.name}_matmul"),
            Node("Add", [mm, c_name], [y], name=f"{gemm.name}_bias")]
