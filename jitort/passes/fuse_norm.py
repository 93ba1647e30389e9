"""Layer normalizations written out by exporters, and the residual add before them (extended, 110).

fuse_layernorm (torch < 17 / transformers / TF-style decompositions, constant epsilon)::

        x ──┬──▶ ReduceMean(axes) ──▶ Sub(x, ·) = d ──┬──▶ Pow(d, 2) | Mul(d, d) ──▶ ReduceMean(axes)
            └───────────────────────────▲            │                                 │
                                                     │      Sqrt ◀── Add(eps) ◀────────┘
                                                     ▼       │
                   Div(d, ·) | Mul(d, Reciprocal(·)) | Mul(d, Div(1, ·)) ──▶ [Mul(γ)] ──▶ [Add(β)] ──▶ y
  ==>   x ──▶ LayerNormalization(axis, epsilon)  (opset >= 17)  |  jitort::LayerNorm (older)

    axes must be the trailing axes [axis, rank); γ/β must vary only over them.

fuse_rmsnorm (T5 / LLaMA)::

        x ──┬──▶ Pow(x, 2) | Mul(x, x) ──▶ ReduceMean(axes) ──▶ Add(eps) ──▶ Sqrt ──┐
            └──▶ Div(x, ·) | Mul(x, Reciprocal(·)) | Mul(x, Div(1, ·)) ◀───────────┘──▶ [Mul(γ)] ──▶ y
  ==>   x ──▶ jitort::RMSNorm(axis, epsilon) ──▶ y

fuse_skip_layernorm (BERT / GPT-2 residual connections)::

        a ──▶ [Add(bias)] ──▶ Add(·, b) = s ──▶ LayerNormalization(last axis) ──▶ y
                                          └──▶ (other readers of s, if any)
  ==>   jitort::SkipLayerNorm(a, b, γ, β, bias) ──▶ y [, s]

    s is a second output when it is read elsewhere or is a graph output (as onnxruntime's
    SkipLayerNormalization does). The bias must be a constant of shape (hidden,); b may
    broadcast to a's shape and may be a constant larger than a row (position embeddings).

A non-constant epsilon, an intermediate read outside the subgraph, or an unsupported axis set is
reported as a near miss and left alone.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ops.contrib_common import bshape
from .base import EXTENDED, PassContext, graph_pass
from ._norm_gelu_util import is_float, is_op, opset, other, reduce_axes, trailing_start
from .pattern import GraphView

LN, RMS, SKIP = "fuse_layernorm", "fuse_rmsnorm", "fuse_skip_layernorm"


class _Miss(Exception):
    pass


def _reader(view: GraphView, name: str, *ops: str) -> Node | None:
    hits = [u for u in view.consumers(name) if is_op(u, *ops)]
    return hits[0] if len(hits) == 1 else None


def _square_of(view: GraphView, name: str) -> Node | None:
    """The node computing name**2 (Pow(name, 2) or Mul(name, name))."""
    for u in view.consumers(name):
        if is_op(u, "Pow") and u.inputs[0] == name and view.scalar(u.inputs[1]) == 2.0:
            return u
        if is_op(u, "Mul") and u.inputs == [name, name]:
            return u
    return None


def _mean_over(view: GraphView, red: Node | None, src: str) -> int | None:
    """The start of the trailing axes ``red`` (a keepdims ReduceMean of src) reduces over."""
    if not is_op(red, "ReduceMean") or red.inputs[0] != src:
        return None
    ra = reduce_axes(view, red)
    rank = view.rank(src)
    if ra is None or ra[1] != 1 or rank is None:
        return None
    return trailing_start(ra[0], rank)


def _rsqrt_apply(view: GraphView, var: str, num: str) -> tuple[list[Node], str, float] | None:
    """Nodes computing num / sqrt(var + eps): (nodes, output, eps)."""
    add = _reader(view, var, "Add")
    if add is None:
        return None
    e_name = other(add, var)
    eps = view.scalar(e_name)
    if eps is None:
        raise _Miss(add, f"epsilon {e_name!r} is not a constant")
    sqrt = _reader(view, add.outputs[0], "Sqrt")
    if sqrt is None:
        return None
    sd = sqrt.outputs[0]
    for u in view.consumers(sd):
        if is_op(u, "Div") and u.inputs == [num, sd]:
            return [add, sqrt, u], u.outputs[0], eps
        recip = is_op(u, "Reciprocal") or (is_op(u, "Div") and u.inputs[1] == sd
                                           and view.scalar(u.inputs[0]) == 1.0)
        if recip:
            mul = _reader(view, u.outputs[0], "Mul")
            if mul is not None and other(mul, u.outputs[0]) == num:
                return [add, sqrt, u, mul], mul.outputs[0], eps
    return None


def _param(view: GraphView, name: str, norm_shape: tuple, dtype) -> str | np.ndarray | None:
    """``name`` as a tensor of exactly ``norm_shape`` (a reshaped constant array when needed, made
    an initializer only once the fusion is decided), or None when it varies over non-normalized
    axes or is not known."""
    shape, c = view.shape(name), view.const(name)
    if shape is None or view.dtype(name) != dtype:
        return None
    if tuple(shape) == tuple(norm_shape):
        return name
    core = list(shape)
    while core and core[0] == 1:
        core.pop(0)
    if c is None or len(core) > len(norm_shape):
        return None
    try:
        full = np.broadcast_to(c.reshape(core), norm_shape)
    except ValueError:
        return None
    return np.ascontiguousarray(full)


def _named(view: GraphView, v, prefix: str) -> str:
    """A value name for ``v``: itself, or a new initializer holding the array."""
    return v if isinstance(v, str) else view.add_initializer(prefix, v)


def _affine(view: GraphView, y: str, norm_shape: tuple, dtype, with_beta: bool):
    """Optional Mul(γ) then Add(β) after the normalized value ``y``: (nodes, γ, β, output)."""
    nodes, gamma, beta = [], None, None
    mul = view.single_consumer(y)
    if is_op(mul, "Mul") and other(mul, y) is not None and other(mul, y) != y:
        gamma = _param(view, other(mul, y), norm_shape, dtype)
        if gamma is not None:
            nodes.append(mul)
            y = mul.outputs[0]
            add = view.single_consumer(y)
            if with_beta and is_op(add, "Add") and other(add, y) is not None and other(add, y) != y:
                beta = _param(view, other(add, y), norm_shape, dtype)
                if beta is not None:
                    nodes.append(add)
                    y = add.outputs[0]
    return nodes, gamma, beta, y


def _run(graph: Graph, ctx: PassContext, name: str, anchors: tuple, match) -> bool:
    """Shared loop: match at each anchor, guard, replace; near misses reported."""
    view = GraphView(graph, ctx)
    changed, removed = False, set()
    for node in list(graph.nodes):
        if id(node) in removed or not (is_op(node, *anchors) or
                                       (node.domain == "jitort" and node.op_type in anchors)):
            continue
        try:
            m = match(view, node)
        except _Miss as miss:
            ctx.near_miss(name, miss.args[0], miss.args[1])
            continue
        if m is None:
            continue
        region, build, keep = m
        why = view.escapes(region, keep=keep)
        if why:
            ctx.near_miss(name, node, why)
            continue
        new = build()
        new.name = ctx.fresh(graph, new.op_type)
        view.replace(region, [new])
        removed.update(id(n) for n in region)
        ctx.hit(name)
        changed = True
    return changed


# -- LayerNormalization ---------------------------------------------------------------------

def _match_layernorm(view: GraphView, rm1: Node):
    x = rm1.inputs[0]
    a = _mean_over(view, rm1, x)
    sub = a is not None and _reader(view, rm1.outputs[0], "Sub")
    if not sub or sub.inputs != [x, rm1.outputs[0]] or not is_float(view, x):
        return None
    d = sub.outputs[0]
    sq = _square_of(view, d)
    rm2 = sq and _reader(view, sq.outputs[0], "ReduceMean")
    if not rm2 or _mean_over(view, rm2, sq.outputs[0]) != a:
        return None
    tail = _rsqrt_apply(view, rm2.outputs[0], d)
    if tail is None:
        return None
    nodes, n, eps = tail
    shape, dtype = view.shape(x), view.dtype(x)
    norm_shape = tuple(shape[a:])
    if not all(isinstance(s, int) for s in norm_shape):
        return None
    aff, gamma, beta, y = _affine(view, n, norm_shape, dtype, with_beta=True)
    if gamma is None:
        gamma = np.ones(norm_shape, dtype)
    attrs = {"axis": a, "epsilon": float(eps)}
    op_type, domain = ("LayerNormalization", "") if opset(view) >= 17 else ("LayerNorm", "jitort")

    def build():
        ins = [x, _named(view, gamma, "ln_scale")] + ([_named(view, beta, "ln_bias")] if beta is not None else [])
        return Node(op_type, ins, [y], attrs, domain=domain)

    return [rm1, sub, sq, rm2] + nodes + aff, build, [y]


@graph_pass(LN, level=EXTENDED, order=110)
def fuse_layernorm(graph: Graph, ctx: PassContext) -> bool:
    return _run(graph, ctx, LN, ("ReduceMean",), _match_layernorm)


# -- RMSNorm --------------------------------------------------------------------------------

def _match_rmsnorm(view: GraphView, sq: Node):
    x = sq.inputs[0]
    if not (sq.op_type == "Mul" and sq.inputs == [x, x]) and not (
            sq.op_type == "Pow" and view.scalar(sq.inputs[1]) == 2.0):
        return None
    rm = _reader(view, sq.outputs[0], "ReduceMean")
    a = _mean_over(view, rm, sq.outputs[0])
    if a is None or not is_float(view, x):
        return None
    tail = _rsqrt_apply(view, rm.outputs[0], x)
    if tail is None:
        return None
    nodes, n, eps = tail
    norm_shape = tuple(view.shape(x)[a:])
    if not all(isinstance(s, int) for s in norm_shape):
        return None
    aff, gamma, _, y = _affine(view, n, norm_shape, view.dtype(x), with_beta=False)
    def build():
        ins = [x] + ([_named(view, gamma, "rms_scale")] if gamma is not None else [])
        return Node("RMSNorm", ins, [y], {"axis": a, "epsilon": float(eps)}, domain="jitort")

    return [sq, rm] + nodes + aff, build, [y]


@graph_pass(RMS, level=EXTENDED, order=110)
def fuse_rmsnorm(graph: Graph, ctx: PassContext) -> bool:
    return _run(graph, ctx, RMS, ("Pow", "Mul"), _match_rmsnorm)


# -- SkipLayerNorm --------------------------------------------------------------------------

def _bias_of(view: GraphView, name: str, hidden: int) -> tuple[str, str, Node] | None:
    """(pre-bias value, bias (hidden,), the Add) when ``name`` = Add(v, constant bias) read once."""
    add = view.producer(name)
    if not is_op(add, "Add") or view.single_consumer(name) is None:
        return None
    for v, b in (add.inputs, add.inputs[::-1]):
        c = view.const(b)
        if c is not None and view.const(v) is None and c.size == hidden and c.shape[-1:] == (hidden,) \
                and view.shape(v) == view.shape(name) and c.dtype == view.dtype(v):
            bias = b if c.ndim == 1 else np.ascontiguousarray(c.reshape(hidden))
            return v, bias, add
    return None


def _match_skip(view: GraphView, ln: Node):
    s = ln.inputs[0]
    shape = view.shape(s)
    if shape is None or not is_float(view, s) or not isinstance(shape[-1], int):
        return None
    rank, hidden = len(shape), shape[-1]
    axis = ln.attrs.get("axis", -1)
    if (axis + rank if axis < 0 else axis) != rank - 1:
        return None
    add = view.producer(s)
    if not is_op(add, "Add"):
        return None
    consts = [view.const(i) for i in add.inputs]
    if consts[0] is not None and consts[1] is not None:
        return None
    if any(c is not None and c.size <= hidden for c in consts):
        return None  # Add(x, bias) then LayerNorm: a bias, not a residual
    if any(o and (view.consumers(o) or view.is_output(o)) for o in ln.outputs[1:]):
        raise _Miss(ln, "its mean / inv_std_dev outputs are used")
    for gb in ln.inputs[1:3]:
        if gb and view.shape(gb) != (hidden,):
            raise _Miss(ln, f"scale/bias {gb!r} of shape {view.shape(gb)} is not ({hidden},)")
    for x, skip in (add.inputs, add.inputs[::-1]):
        xs, ks = view.shape(x), view.shape(skip)
        if view.const(x) is not None or xs != shape or ks is None or len(ks) > rank or bshape(xs, ks) != shape:
            continue
        region, bias = [add, ln], ""
        pre = _bias_of(view, x, hidden)
        if pre is not None:
            x, bias, bias_add = pre
            region.insert(0, bias_add)
        gamma = ln.inputs[1]
        beta = ln.inputs[2] if len(ln.inputs) > 2 else ""
        two = bool(view.is_output(s) or [u for u in view.consumers(s) if u is not ln])
        outs = [ln.outputs[0]] + ([s] if two else [])
        eps = float(ln.attrs.get("epsilon", 1e-5))

        def build(x=x, skip=skip, bias=bias):
            ins = [x, skip, gamma, beta, _named(view, bias, "skip_bias") if len(bias) else ""]
            while not ins[-1]:
                ins.pop()
            return Node("SkipLayerNorm", ins, outs, {"epsilon": eps}, domain="jitort")

        return region, build, outs
    return None


@graph_pass(SKIP, level=EXTENDED, order=110)
def fuse_skip_layernorm(graph: Graph, ctx: PassContext) -> bool:
    return _run(graph, ctx, SKIP, ("LayerNormalization", "LayerNorm"), _match_skip)
