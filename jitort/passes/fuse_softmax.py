"""Softmax and LogSoftmax written out with reductions, back into one node (extended, order 90).

softmax (with or without the max subtraction; keepdims reductions over one axis a)::

        x ──┬──▶ ReduceMax(a) ──▶ Sub(x, ·) ──▶ Exp ──┬──▶ ReduceSum(a) ──┐
            └────────────────────────▲               └────────────────▶ Div ──▶ y
                                                        (or Mul(e, Reciprocal(sum)))
        x ──▶ Exp ──┬──▶ ReduceSum(a) ──┐
                    └──────────────────▶ Div ──▶ y
  ==>   x ──▶ Softmax(axis=a) ──▶ y

log-softmax::

        Softmax(axis=a) ──▶ Log ──▶ y                              ==>  LogSoftmax(axis=a)
        d = x - ReduceMax(x); Sub(d, Log(ReduceSum(Exp(d))))        ==>  LogSoftmax(axis=a) of x

Both produce default-domain ops. Below opset 13 Softmax(axis) normalizes over the flattened
dims [axis, rank), which equals a one-axis softmax only for the last axis: other axes are left
alone there (near miss). The max subtraction is only for stability; the fused op is stable.
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from .base import EXTENDED, PassContext, graph_pass
from ._norm_gelu_util import is_float, is_op, opset, reduce_axes
from .pattern import GraphView

NAME = "fuse_softmax"
LOG_NAME = "fuse_softmax_log"


def _one_axis(view: GraphView, red: Node, x: str) -> int | None:
    ra = reduce_axes(view, red)
    if red.inputs[0] != x or ra is None or len(ra[0]) != 1 or ra[1] != 1:
        return None
    return ra[0][0]


def _max_sub(view: GraphView, d: str, axis: int | None = None) -> tuple[str, list[Node], int] | None:
    """(x, [ReduceMax, Sub], axis) when ``d`` is x - ReduceMax(x, axis)."""
    sub = view.producer(d)
    if not is_op(sub, "Sub"):
        return None
    x, m = sub.inputs
    rmax = view.producer(m)
    if not is_op(rmax, "ReduceMax"):
        return None
    a = _one_axis(view, rmax, x)
    if a is None or (axis is not None and a != axis):
        return None
    return x, [rmax, sub], a


def _axis_ok(view: GraphView, ctx: PassContext, pattern: str, anchor: Node, x: str, a: int) -> bool:
    rank = view.rank(x)
    if opset(view) < 13 and a != rank - 1:
        ctx.near_miss(pattern, anchor, f"opset {opset(view)} Softmax flattens [axis, rank): axis {a} "
                                       f"of rank {rank} is not the last")
        return False
    return True


def _match_softmax(view: GraphView, exp: Node):
    """(x, region, axis, y) for a softmax whose Exp is ``exp``."""
    e = exp.outputs[0]
    rsum = next((u for u in view.consumers(e) if is_op(u, "ReduceSum")), None)
    if rsum is None:
        return None
    a = _one_axis(view, rsum, e)
    if a is None:
        return None
    s = rsum.outputs[0]
    tail = None
    for u in view.consumers(e):
        if is_op(u, "Div") and u.inputs == [e, s]:
            tail = [u]
        elif is_op(u, "Mul") and s not in u.inputs:
            r = view.producer(u.inputs[1] if u.inputs[0] == e else u.inputs[0])
            if is_op(r, "Reciprocal") and r.inputs[0] == s:
                tail = [r, u]
    if tail is None:
        return None
    head = _max_sub(view, exp.inputs[0], a)
    x, pre = (head[0], head[1]) if head else (exp.inputs[0], [])
    return x, pre + [exp, rsum] + tail, a, tail[-1].outputs[0]


@graph_pass(NAME, level=EXTENDED, order=90)
def fuse_softmax(graph: Graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    changed, removed = False, set()
    for node in list(graph.nodes):
        if id(node) in removed or not is_op(node, "Exp"):
            continue
        m = _match_softmax(view, node)
        if m is None:
            continue
        x, region, a, y = m
        # -- guard --
        if not is_float(view, x) or not _axis_ok(view, ctx, "softmax", node, x, a):
            continue
        why = view.escapes(region, keep=[y])
        if why:
            ctx.near_miss("softmax", node, why)
            continue
        # -- replacement --
        view.replace(region, [Node("Softmax", [x], [y], {"axis": a}, name=ctx.fresh(graph, "Softmax"))])
        removed.update(id(n) for n in region)
        ctx.hit(NAME)
        changed = True
    return changed


def _match_log_softmax(view: GraphView, log: Node):
    """(x, region, axis, y) for Log(Softmax(x)) or d - Log(ReduceSum(Exp(d))), d = x - max."""
    sm = view.producer(log.inputs[0])
    if is_op(sm, "Softmax"):
        rank = view.rank(sm.inputs[0])
        if rank is None:
            return None
        a = sm.attrs.get("axis", -1 if opset(view) >= 13 else 1)  # same meaning for LogSoftmax
        return sm.inputs[0], [sm, log], a + rank if a < 0 else a, log.outputs[0], True
    rsum = view.producer(log.inputs[0])
    exp = is_op(rsum, "ReduceSum") and view.producer(rsum.inputs[0])
    if not is_op(exp, "Exp"):
        return None
    d = exp.inputs[0]
    a = _one_axis(view, rsum, exp.outputs[0])
    head = a is not None and _max_sub(view, d, a)
    sub = next((u for u in view.consumers(log.outputs[0]) if is_op(u, "Sub") and u.inputs == [d, log.outputs[0]]), None)
    if not head or sub is None:
        return None
    return head[0], head[1] + [exp, rsum, log, sub], a, sub.outputs[0], False


@graph_pass(LOG_NAME, level=EXTENDED, order=90)
def fuse_log_softmax(graph: Graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    changed, removed = False, set()
    for node in list(graph.nodes):
        if id(node) in removed or not is_op(node, "Log"):
            continue
        m = _match_log_softmax(view, node)
        if m is None:
            continue
        x, region, a, y, from_softmax = m
        # -- guard --
        if not is_float(view, x) or not (from_softmax or _axis_ok(view, ctx, "log_softmax", node, x, a)):
            continue
        # d = x - max is read by both Exp and the final Sub: both are inside the region
        why = view.escapes(region, keep=[y])
        if why:
            ctx.near_miss("log_softmax", node, why)
            continue
        # -- replacement --
        view.replace(region, [Node("LogSoftmax", [x], [y], {"axis": a}, name=ctx.fresh(graph, "LogSoftmax"))])
        removed.update(id(n) for n in region)
        ctx.hit(LOG_NAME)
        changed = True
    return changed
