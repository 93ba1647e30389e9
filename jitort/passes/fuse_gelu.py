"""GELU, written out by exporters, into one ``jitort::Gelu`` node (extended level, order 120).

erf form (torch nn.GELU / transformers "gelu", BERT; PaddlePaddle multiplies by 1/sqrt2)::

        x ──┬──▶ Div(√2) | Mul(1/√2) ──▶ Erf ──▶ Add(1) ──┐
            │                                           ▼
            └──────────────── x·0.5·(…) in any association: Mul(x, 0.5)·(…) | (x·(…))·0.5 |
                              (x·(…))/2 | ((…)·0.5)·x                     ──▶ y

tanh form (transformers "gelu_new"/"gelu_pytorch_tanh", GPT-2)::

        x ──┬──▶ Pow(x, 3) | x·x·x ──▶ Mul(0.044715) ──▶ Add(x, ·) ──▶ Mul(√(2/π)) ──▶ Tanh
            │   (or x·(√(2/π) + 0.035677·x·x), onnxruntime's FastGelu spelling)          │
            │                                                              Add(1) ◀──────┘
            └──────────────── x·0.5·(…) as above ──▶ y

  ==>   x ──▶ jitort::Gelu(approximate = "none" | "tanh") ──▶ y

Constants are compared numerically (relative tolerance CONST_RTOL): a different constant is not
GELU and is left alone (reported as a near miss). An intermediate read outside the subgraph
keeps the whole subgraph unfused (near miss).
"""

from __future__ import annotations

import math

from ..ir.graph import Graph, Node
from .base import EXTENDED, PassContext, graph_pass
from ._norm_gelu_util import close, is_float, is_op, other, split_const
from .pattern import GraphView

NAME = "fuse_gelu"
SQRT2 = math.sqrt(2.0)
SQRT2_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


class _Miss(Exception):
    """A structural match whose constant or guard failed: (anchor, reason)."""


def _next(view: GraphView, name: str, *ops: str) -> Node | None:
    """The one reader of ``name`` that is one of ``ops`` (others may exist: the guard decides)."""
    hits = [u for u in view.consumers(name) if is_op(u, *ops)]
    return hits[0] if len(hits) == 1 else None


# -- pattern: the shared tail  (... + 1) * x * 0.5 ----------------------------------------------

def _plus_one(view: GraphView, name: str) -> Node | None:
    add = _next(view, name, "Add")
    if add is None:
        return None
    sc = split_const(view, add)
    if sc is None or sc[0] != name:
        return None
    if not close(sc[1], 1.0):
        raise _Miss(add, f"adds {sc[1]:g} where 1 is expected")
    return add


def _half_x_tail(view: GraphView, x: str, name: str) -> list[Node] | None:
    """Nodes computing x * 0.5 * ``name`` (any association); the last one produces y."""
    m1 = _next(view, name, "Mul")
    if m1 is None:
        return None
    o1 = other(m1, name)
    if o1 is None:
        return None
    s1 = view.scalar(o1)
    if s1 is not None:  # ((...) * 0.5) * x
        if not close(s1, 0.5):
            raise _Miss(m1, f"scales by {s1:g} where 0.5 is expected")
        m2 = _next(view, m1.outputs[0], "Mul")
        return [m1, m2] if m2 is not None and other(m2, m1.outputs[0]) == x else None
    if o1 == x:  # (x * (...)) * 0.5  or  (x * (...)) / 2
        m2 = _next(view, m1.outputs[0], "Mul", "Div")
        if m2 is None:
            return None
        if m2.op_type == "Mul":
            sc = split_const(view, m2)
            want, got = 0.5, None if sc is None else sc[1]
        else:
            want = 2.0
            got = view.scalar(m2.inputs[1]) if m2.inputs[0] == m1.outputs[0] else None
        if got is None:
            return None
        if not close(got, want):
            raise _Miss(m2, f"{m2.op_type} by {got:g} where {want:g} is expected")
        return [m1, m2]
    h = view.producer(o1)  # (x * 0.5) * (...)
    if is_op(h, "Mul"):
        sc = split_const(view, h)
        if sc is not None and sc[0] == x:
            if not close(sc[1], 0.5):
                raise _Miss(h, f"scales x by {sc[1]:g} where 0.5 is expected")
            return [h, m1]
    return None


# -- pattern: the two heads ---------------------------------------------------------------------

def _match_erf(view: GraphView, erf: Node) -> tuple[str, list[Node]] | None:
    p = view.producer(erf.inputs[0])
    if is_op(p, "Div") and view.scalar(p.inputs[1]) is not None and view.scalar(p.inputs[0]) is None:
        x, c, want = p.inputs[0], view.scalar(p.inputs[1]), SQRT2
    elif is_op(p, "Mul") and split_const(view, p) is not None:
        (x, c), want = split_const(view, p), 1.0 / SQRT2
    else:
        return None
    if not close(c, want):
        raise _Miss(p, f"{p.op_type} by {c:g} where {want:g} is expected")
    add = _plus_one(view, erf.outputs[0])
    tail = add and _half_x_tail(view, x, add.outputs[0])
    return (x, [p, erf, add] + tail) if tail else None


def _cube(view: GraphView, name: str) -> tuple[str, list[Node]] | None:
    """(x, nodes) when ``name`` is Pow(x, 3), x*(x*x) or (x*x)*x."""
    n = view.producer(name)
    if is_op(n, "Pow"):
        e = view.scalar(n.inputs[1])
        return (n.inputs[0], [n]) if e == 3.0 else None
    if not is_op(n, "Mul"):
        return None
    for sq_name, x in (n.inputs, n.inputs[::-1]):
        sq = view.producer(sq_name)
        if is_op(sq, "Mul") and sq.inputs == [x, x]:
            return x, [sq, n]
    return None


def _match_tanh(view: GraphView, tanh: Node) -> tuple[str, list[Node]] | None:
    p = view.producer(tanh.inputs[0])
    if not is_op(p, "Mul"):
        return None
    sc = split_const(view, p)
    if sc is not None:  # sqrt(2/pi) * (x + 0.044715 * x^3)
        inner, c = sc
        if not close(c, SQRT2_PI):
            raise _Miss(p, f"scales by {c:g} where sqrt(2/pi) = {SQRT2_PI:.7f} is expected")
        add = view.producer(inner)
        if not is_op(add, "Add"):
            return None
        for x, t in (add.inputs, add.inputs[::-1]):
            m = view.producer(t)
            sm = is_op(m, "Mul") and split_const(view, m)
            cube = sm and _cube(view, sm[0])
            if cube and cube[0] == x:
                if not close(sm[1], CUBIC):
                    raise _Miss(m, f"cubic coefficient {sm[1]:g} where {CUBIC} is expected")
                head = cube[1] + [m, add, p, tanh]
                break
        else:
            return None
    else:  # x * (sqrt(2/pi) + 0.044715 * sqrt(2/pi) * x * x)
        for x, q in (p.inputs, p.inputs[::-1]):
            add = view.producer(q)
            sa = is_op(add, "Add") and split_const(view, add)
            m = sa and view.producer(sa[0])
            sm = is_op(m, "Mul") and split_const(view, m)
            sq = sm and view.producer(sm[0])
            if is_op(sq, "Mul") and sq.inputs == [x, x]:
                if not close(sa[1], SQRT2_PI) or not close(sm[1], CUBIC * SQRT2_PI):
                    raise _Miss(m, f"coefficients {sa[1]:g}, {sm[1]:g} are not sqrt(2/pi), "
                                   f"0.044715*sqrt(2/pi)")
                head = [sq, m, add, p, tanh]
                break
        else:
            return None
    one = _plus_one(view, tanh.outputs[0])
    tail = one and _half_x_tail(view, x, one.outputs[0])
    return (x, head + [one] + tail) if tail else None


# -- the pass -----------------------------------------------------------------------------------

@graph_pass(NAME, level=EXTENDED, order=120)
def fuse_gelu(graph: Graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    changed = False
    removed: set[int] = set()
    for node in list(graph.nodes):
        if id(node) in removed or not is_op(node, "Erf", "Tanh"):
            continue
        approx, pattern = ("none", "gelu_erf") if node.op_type == "Erf" else ("tanh", "gelu_tanh")
        try:
            m = (_match_erf if approx == "none" else _match_tanh)(view, node)
        except _Miss as miss:
            ctx.near_miss(pattern, miss.args[0], miss.args[1])
            continue
        if m is None:
            continue
        x, region = m
        y = region[-1].outputs[0]
        # -- guard --
        if not is_float(view, x):
            ctx.near_miss(pattern, node, f"input {x!r} is not a float tensor of known type")
            continue
        why = view.escapes(region, keep=[y])
        if why:
            ctx.near_miss(pattern, node, why)
            continue
        # -- replacement --
        fused = Node("Gelu", [x], [y], {"approximate": approx}, domain="jitort",
                     name=ctx.fresh(graph, "Gelu"))
        view.replace(region, [fused])
        removed.update(id(n) for n in region)
        ctx.hit(NAME)
        changed = True
    return changed
