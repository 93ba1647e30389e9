"""MatMul / Gemm with their epilogue, into one ``jitort::FusedMatMul`` (extended level, order 130).

::

        A, B ──▶ MatMul | Gemm(alpha, transA, transB, beta·C) ──▶ [Add(bias)] ──▶ [act] ──▶ [Add(r)] ──▶ y
  ==>   A, B, bias, r ──▶ jitort::FusedMatMul(transA, transB, alpha, activation, activation_params) ──▶ y

    bias     a constant varying only along the last dim: shape (N,), (1, .., N) or one element
             (Gemm's C counts when it is such a constant; beta is folded into it)
    act      Relu | Sigmoid | Tanh | LeakyRelu | Clip (constant bounds) | Gelu (default domain or
             jitort::Gelu, either approximation)
    r        the residual: any tensor that broadcasts to the product's shape without enlarging it

Each step is taken only when the value before it has that one reader (and is not a graph
output); a fusible reader that shares the value with others is reported as a near miss and the
chain stops there. A MatMul/Gemm with nothing to absorb is left as it is.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ops.contrib_common import bshape
from .base import EXTENDED, PassContext, graph_pass
from ._norm_gelu_util import is_float, is_op, opset, other
from .pattern import GraphView

NAME = "fuse_matmul"
_SIMPLE_ACTS = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Gelu")


def _next(view: GraphView, ctx: PassContext, name: str, wanted) -> Node | None:
    """The reader of ``name`` when it is the only one and ``wanted(reader)``; a wanted reader
    that shares ``name`` with others is a near miss."""
    users = view.consumers(name)
    if len(users) == 1 and not view.is_output(name):
        return users[0] if wanted(users[0]) else None
    for u in users:
        if wanted(u):
            where = "is a graph output" if view.is_output(name) else f"has {len(users)} readers"
            ctx.near_miss("matmul_epilogue", u, f"{name!r} {where}")
            break
    return None


def _row_bias(c: np.ndarray | None, n, scale: float = 1.0) -> np.ndarray | None:
    """A constant that varies only along the last dim, as a 1-D array (N,) or (1,)."""
    if c is None or not isinstance(n, int) or c.dtype.kind != "f":
        return None
    if c.size == 1:
        b = c.reshape(1)
    elif c.ndim >= 1 and c.shape[-1] == n and c.size == n:
        b = c.reshape(n)
    else:
        return None
    return b if scale == 1.0 else (b * b.dtype.type(scale)).astype(c.dtype)


def _activation(view: GraphView, node: Node) -> tuple[str, list] | None:
    """(activation name, params) for an activation node we can fuse."""
    if node.domain == "jitort" and node.op_type == "Gelu":
        return ("GeluTanh" if node.attrs.get("approximate", "none") == "tanh" else "Gelu"), []
    if not is_op(node, *_SIMPLE_ACTS):
        return None
    if node.op_type == "Gelu":
        return ("GeluTanh" if node.attrs.get("approximate", "none") == "tanh" else "Gelu"), []
    if node.op_type == "LeakyRelu":
        return "LeakyRelu", [float(node.attrs.get("alpha", 0.01))]
    if node.op_type == "Clip":
        if opset(view) < 11:
            return "Clip", [float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))]
        bounds = []
        for i, dflt in ((1, -np.inf), (2, np.inf)):
            name = node.inputs[i] if i < len(node.inputs) else ""
            v = view.scalar(name) if name else dflt
            if v is None:
                return None
            bounds.append(float(v))
        return "Clip", bounds
    return node.op_type, []


def _match(view: GraphView, ctx: PassContext, mm: Node):
    a = mm.inputs[0]
    y = mm.outputs[0]
    shape, dtype = view.shape(y), view.dtype(y)
    if shape is None or not is_float(view, a) or not shape:
        return None
    n = shape[-1]
    attrs, bias = {}, None
    if mm.op_type == "Gemm":
        attrs = {k: mm.attrs.get(k, d) for k, d in (("transA", 0), ("transB", 0), ("alpha", 1.0))}
        attrs["alpha"] = float(attrs["alpha"])
        c = mm.inputs[2] if len(mm.inputs) > 2 else ""
        if c:
            bias = _row_bias(view.const(c), n, float(mm.attrs.get("beta", 1.0)))
            if bias is None:
                return None  # a full-size or non-constant C: Gemm already does that itself
    region, residual = [mm], ""

    def is_add(u):
        return is_op(u, "Add") and other(u, y) is not None and other(u, y) != y

    # -- bias --
    nxt = _next(view, ctx, y, is_add) if bias is None else None
    if nxt is not None:
        bias = _row_bias(view.const(other(nxt, y)), n)
        if bias is not None and bias.dtype == dtype and len(view.shape(other(nxt, y))) <= len(shape):
            region.append(nxt)
            y = nxt.outputs[0]
        else:
            bias = None
    # -- activation --
    act = None
    nxt = _next(view, ctx, y, lambda u: _activation(view, u) is not None)
    if nxt is not None and nxt.inputs[0] == y:
        act = _activation(view, nxt)
        region.append(nxt)
        y = nxt.outputs[0]
    # -- residual --
    nxt = _next(view, ctx, y, is_add)
    if nxt is not None:
        r = other(nxt, y)
        rs = view.shape(r)
        if rs is not None and len(rs) <= len(shape) and view.dtype(r) == dtype and _fits(rs, shape):
            residual = r
            region.append(nxt)
            y = nxt.outputs[0]
    if len(region) == 1:
        return None
    return region, y, attrs, bias, act, residual


def _fits(rs, shape) -> bool:
    try:
        return bshape(tuple(rs), tuple(shape)) == tuple(shape)
    except ValueError:
        return False


@graph_pass(NAME, level=EXTENDED, order=130)
def fuse_matmul(graph: Graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    changed, removed = False, set()
    for node in list(graph.nodes):
        if id(node) in removed or not is_op(node, "MatMul", "Gemm"):
            continue
        m = _match(view, ctx, node)
        if m is None:
            continue
        region, y, attrs, bias, act, residual = m
        # -- guard --
        why = view.escapes(region, keep=[y])
        if why:
            ctx.near_miss("matmul_epilogue", node, why)
            continue
        # -- replacement --
        bias_name = ""
        if bias is not None:
            src = region[1].inputs if len(region) > 1 and region[1].op_type == "Add" and node.op_type == "MatMul" else []
            same = [i for i in src if view.const(i) is not None and view.const(i).shape == bias.shape]
            bias_name = same[0] if same else view.add_initializer("matmul_bias", bias)
        ins = [node.inputs[0], node.inputs[1], bias_name, residual]
        while not ins[-1]:
            ins.pop()
        fattrs = dict(attrs)
        if act:
            fattrs["activation"] = act[0]
            if act[1]:
                fattrs["activation_params"] = act[1]
        fused = Node("FusedMatMul", ins, [y], fattrs, domain="jitort", name=ctx.fresh(graph, "FusedMatMul"))
        view.replace(region, [fused])
        removed.update(id(n) for n in region)
        ctx.hit(NAME)
        changed = True
    return changed
