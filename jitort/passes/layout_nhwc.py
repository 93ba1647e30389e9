"""NHWC layout (level 3, order 800, before elementwise regions): run connected convolution regions channels-last on CPU,
with Transposes only where a region meets the rest of the graph.

      x (N C H W)                                x (N C H W)
          |                                          |
        Conv ---------.                      Transpose(0,2,3,1)          <- region input
          |           |                              |
    BatchNormalization|                     FusedConv[channels_last=1] --.
          |           |          ==>                 |                   |
       MaxPool       Relu                   jitort::MaxPoolNHWC         Relu
          |           |                              |                   |
          +-- Add ----+                              +------- Add -------+
               |                                              |
           Reshape / Gemm ...                        Transpose(0,3,1,2)   <- region output
                                                              |
                                                       Reshape / Gemm ...

A region is a connected set (through rank-4 values) of layout-aware nodes holding at least one
convolution: Conv / channels-first FusedConv (2-D), MaxPool (no Indices), AveragePool,
GlobalAveragePool, GlobalMaxPool, Resize (constant scales/sizes/roi, no ``axes``),
BatchNormalization (inference, constant parameters: becomes Mul + Add by per-channel vectors),
layout-agnostic elementwise ops (their constant operands are permuted) and Concat (its axis is
remapped). A value entering a region gets one Transpose to channels-last, a value leaving it one
back; a boundary Transpose meeting an inverse Transpose cancels, and one that only moves size-1
axes (N C 1 1 <-> N 1 1 C, a pooled feature vector) becomes a Reshape. Near misses: a pool,
Resize, BatchNormalization or Conv next to a region that cannot join it, with the reason.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..ops.fused_conv import CONV_ATTRS, JITORT
from ..ops.fused_layout import to_first_perm, to_last_perm
from ..ops.norm import work_dtype
from .base import LAYOUT, PassContext, graph_pass
from .pattern import GraphView

NAME = "layout_nhwc"
RANK = 4
TO_LAST, TO_FIRST = to_last_perm(RANK), to_first_perm(RANK)

#: elementwise ops whose result does not depend on the layout; (op_type, domain) pairs.
UNARY = {("Gelu", "jitort")} | {(o, "") for o in (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu",
    "Celu", "Softplus", "Softsign", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Erf",
    "Gelu", "Identity", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Mish", "ThresholdedRelu",
    "Cast", "Not", "IsNaN", "IsInf")}
BINARY = {(o, "") for o in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
                            "PRelu", "And", "Or", "Xor", "Equal", "Less", "Greater",
                            "LessOrEqual", "GreaterOrEqual", "Where")}
POOLS = {"MaxPool": "MaxPoolNHWC", "AveragePool": "AveragePoolNHWC",
         "GlobalAveragePool": "GlobalAveragePoolNHWC", "GlobalMaxPool": "GlobalMaxPoolNHWC"}


# ---------------------------------------------------------------------------------- pattern


class _Role:
    """How one node joins a region: its kind, the inputs that carry NCHW data, the constant
    inputs to permute."""

    def __init__(self, kind: str, data: list[int], permute: list[int] = ()):
        self.kind, self.data, self.permute = kind, data, list(permute)


def _rank4(view: GraphView, name: str) -> bool:
    s = view.shape(name)
    return s is not None and len(s) == RANK


def _classify(view: GraphView, n: Node) -> tuple[_Role | None, str | None]:
    """(role, None) when ``n`` can run channels-last, else (None, reason or None if it is not
    a layout candidate at all)."""
    std = n.domain in ("", "ai.onnx")
    outs = [o for o in n.outputs if o]
    if not n.inputs or not n.inputs[0]:
        return None, None
    if (std and n.op_type == "Conv") or (n.domain == JITORT and n.op_type == "FusedConv"
                                         and not n.attrs.get("channels_last")):
        if not (_rank4(view, n.inputs[0]) and _rank4(view, n.outputs[0])):
            return None, "only 2-D convolutions (rank-4 tensors of known shape) run channels-last"
        if view.shape(n.inputs[1]) is None:
            return None, "Conv weight of unknown shape"
        return _Role("conv", [0, 3] if len(n.inputs) > 3 and n.inputs[3] else [0]), None
    if std and n.op_type in POOLS:
        if len(outs) != 1 or len(n.outputs) > 1 and n.outputs[1]:
            return None, "MaxPool with an Indices output"
        if not (_rank4(view, n.inputs[0]) and _rank4(view, n.outputs[0])):
            return None, "pooling over a tensor that is not rank 4"
        return _Role("pool", [0]), None
    if std and n.op_type == "Resize":
        if "axes" in n.attrs:
            return None, "Resize with an axes attribute"
        if n.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            return None, "Resize with keep_aspect_ratio_policy"
        if not (_rank4(view, n.inputs[0]) and _rank4(view, n.outputs[0])):
            return None, "Resize of a tensor that is not rank 4"
        for i in range(1, len(n.inputs)):
            if n.inputs[i] and view.const(n.inputs[i]) is None:
                return None, f"Resize input {n.inputs[i]!r} is not constant"
        return _Role("resize", [0]), None
    if std and n.op_type == "BatchNormalization":
        if len(outs) != 1 or n.attrs.get("training_mode", 0) or n.attrs.get("spatial", 1) != 1:
            return None, "BatchNormalization in training mode or with spatial=0"
        if view.dtype(n.inputs[0]) not in (np.float32, np.float64):
            return None, "BatchNormalization of a dtype other than float32/float64"
        if any(view.const(i) is None for i in n.inputs[1:5]):
            return None, "BatchNormalization parameters are not constant"
        if not _rank4(view, n.inputs[0]):
            return None, "BatchNormalization of a tensor that is not rank 4"
        return _Role("bn", [0]), None
    key = (n.op_type, "" if std else n.domain)
    if key in UNARY or key in BINARY or (std and n.op_type == "Concat"):
        if len(outs) != 1 or not _rank4(view, n.outputs[0]):
            return None, None
        if key in UNARY:
            extra = [i for i in n.inputs[1:] if i]
            if any(view.const(i) is None or view.const(i).size != 1 for i in extra):
                return None, None
            return _Role("elementwise", [0]), None
        data, permute = [], []
        for k, i in enumerate(n.inputs):
            if not i:
                continue
            c = view.const(i)
            s = view.shape(i)
            if c is not None:
                if c.size > 1:
                    if c.ndim > RANK:
                        return None, None
                    permute.append(k)
            elif s is not None and len(s) == RANK:
                data.append(k)
            elif s is not None and all(d == 1 for d in s):
                pass  # a one-element value broadcasts the same in every layout
            else:
                return None, None
        if not data:
            return None, None
        return _Role("concat" if n.op_type == "Concat" else "elementwise", data, permute), None
    return None, None


def _components(view: GraphView, roles: dict[int, _Role]) -> list[list[Node]]:
    """Connected sets of layout nodes (through their data inputs) holding a convolution."""
    parent = {k: k for k in roles}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    nodes = {id(n): n for n in view.graph.nodes if id(n) in roles}
    for k, n in nodes.items():
        for i in roles[k].data:
            p = view.producer(n.inputs[i])
            if p is not None and id(p) in roles:
                parent[find(k)] = find(id(p))
    groups: dict[int, list[Node]] = {}
    for n in view.graph.nodes:
        if id(n) in roles:
            groups.setdefault(find(id(n)), []).append(n)
    return [g for g in groups.values() if any(roles[id(n)].kind == "conv" for n in g)]


# ---------------------------------------------------------------------------------- replacement


def _permuted_const(view: GraphView, value: np.ndarray) -> str:
    v = value.reshape((1,) * (RANK - value.ndim) + value.shape)
    return view.add_initializer("nhwc_const", np.ascontiguousarray(v.transpose(TO_LAST)))


def _rewrite(view: GraphView, n: Node, role: _Role, names: dict[str, str]) -> list[Node]:
    """The channels-last replacement of region node ``n``; data inputs renamed by ``names``."""
    ins = list(n.inputs)
    for i in role.data:
        ins[i] = names[ins[i]]
    for i in role.permute:
        ins[i] = _permuted_const(view, view.const(ins[i]))
    if role.kind == "conv":
        attrs = {k: n.attrs[k] for k in CONV_ATTRS if k in n.attrs}
        if not attrs.get("kernel_shape"):
            attrs["kernel_shape"] = [int(d) for d in view.shape(n.inputs[1])[2:]]
        attrs.update(activation=n.attrs.get("activation", ""),
                     activation_params=list(n.attrs.get("activation_params") or []), channels_last=1)
        return [Node("FusedConv", ins, list(n.outputs), attrs, domain=JITORT, name=n.name)]
    if role.kind == "pool":
        attrs = dict(n.attrs)
        attrs.pop("storage_order", None)
        return [Node(POOLS[n.op_type], ins[:1], n.outputs[:1], attrs, domain=JITORT, name=n.name)]
    if role.kind == "resize":
        for i in range(1, len(ins)):
            c = view.const(n.inputs[i]) if n.inputs[i] else None
            if c is None or c.size == 0:
                continue
            c = c.reshape(-1)
            if c.size == 2 * RANK:  # roi: starts then ends
                p = np.concatenate([c[:RANK][TO_LAST], c[RANK:][TO_LAST]])
            else:
                p = c[TO_LAST]
            ins[i] = view.add_initializer("nhwc_resize", np.ascontiguousarray(p))
        return [Node("Resize", ins, list(n.outputs), dict(n.attrs), name=n.name)]
    if role.kind == "bn":
        x = ins[0]
        dt = np.dtype(view.dtype(n.inputs[0]))
        wd = work_dtype(dt)
        scale, b, mean, var = (np.asarray(view.const(i)).astype(wd) for i in n.inputs[1:5])
        inv = scale / np.sqrt(var + wd.type(n.attrs.get("epsilon", 1e-5)))
        shift = b - mean * inv
        s_name = view.add_initializer("nhwc_bn_scale", inv.astype(dt).reshape(-1))
        b_name = view.add_initializer("nhwc_bn_shift", shift.astype(dt).reshape(-1))
        mid = view.ctx.fresh(view.graph, n.outputs[0] + "_scaled")
        return [Node("Mul", [x, s_name], [mid], name=f"{n.name}_scale"),
                Node("Add", [mid, b_name], list(n.outputs[:1]), name=f"{n.name}_shift")]
    attrs = dict(n.attrs)
    if role.kind == "concat":
        axis = int(attrs.get("axis", 1))
        axis = axis + RANK if axis < 0 else axis
        attrs["axis"] = TO_LAST.index(axis)
    return [Node(n.op_type, ins, list(n.outputs), attrs, domain=n.domain, name=n.name)]


def _boundary(view: GraphView, src: str, shape, dst: str, perm: list[int], tag: str) -> Node:
    """``dst = src`` (of ``shape``) permuted by ``perm``: a Transpose, or a Reshape when only
    size-1 axes move (the other axes keep their order)."""
    big = [i for i in range(len(shape)) if shape[i] != 1]
    if all(isinstance(d, int) for d in shape) and big == [p for p in perm if shape[p] != 1]:
        target = np.array([shape[p] for p in perm], np.int64)
        return Node("Reshape", [src, view.add_initializer("nhwc_shape", target)], [dst],
                    name=view.ctx.fresh(view.graph, tag))
    return Node("Transpose", [src], [dst], {"perm": list(perm)}, name=view.ctx.fresh(view.graph, tag))


def _inverse_transpose_input(view: GraphView, name: str, perm: list[int]) -> str | None:
    """The input of a Transpose producing ``name`` with the inverse of ``perm``, if any."""
    p = view.producer(name)
    if p is not None and p.op_type == "Transpose" and p.domain in ("", "ai.onnx"):
        q = [int(v) for v in p.attrs.get("perm", [])]
        if len(q) == len(perm) and [q[i] for i in perm] == list(range(len(perm))):
            return p.inputs[0]
    return None


def _convert(view: GraphView, ctx: PassContext, region: list[Node], roles: dict[int, _Role]) -> None:
    graph = view.graph
    inside = {id(n) for n in region}
    produced = {o for n in region for o in n.outputs if o}
    names: dict[str, str] = {}
    before: dict[int, list[Node]] = {}  # id(producer) or -1 -> transposes to place after it
    after_region: dict[str, Node] = {}
    maybe_dead: list[Node] = []
    # -- values leaving the region get a channels-last name and a Transpose back
    for o in produced:
        outside = [u for u in view.consumers(o) if id(u) not in inside]
        if view.is_output(o) or outside:
            inner = ctx.fresh(graph, f"{o}_nhwc")
            names[o] = inner
            cancelled = 0
            for u in outside:  # Transpose(0,2,3,1) of an output: read the channels-last value
                if _inverse_transpose_input(view, u.outputs[0], TO_FIRST) != o:
                    continue
                if view.redirect(u.outputs[0], inner):
                    view.remove(u)
                    cancelled += 1
                elif len(outside) == 1 and not view.is_output(o) and inner != u.outputs[0]:
                    names[o] = inner = u.outputs[0]  # a graph output: the region writes it
                    view.remove(u)
                    cancelled += 1
            if view.is_output(o) or cancelled < len(outside):
                shape = view.shape(o)
                after_region[o] = _boundary(view, inner, [shape[p] for p in TO_LAST], o, TO_FIRST,
                                            "nhwc_out")
        else:
            names[o] = o
    # -- values entering the region get a Transpose to channels-last (or lose an inverse one)
    for n in region:
        for i in roles[id(n)].data:
            v = n.inputs[i]
            if v in names:
                continue
            src = _inverse_transpose_input(view, v, TO_LAST)
            if src is not None:
                names[v] = src
                maybe_dead.append(view.producer(v))
                continue
            names[v] = ctx.fresh(graph, f"{v}_nhwc")
            p = view.producer(v)
            before.setdefault(-1 if p is None else id(p), []).append(
                _boundary(view, v, view.shape(v), names[v], TO_LAST, "nhwc_in"))
    # -- rebuild the node list in order
    out = list(before.get(-1, []))
    for n in graph.nodes:
        if id(n) in inside:
            new = _rewrite(view, n, roles[id(n)], names)
            for m in new:  # region outputs are written under their channels-last name
                m.outputs = [names.get(o, o) for o in m.outputs]
            out += new
            out += [after_region[o] for o in n.outputs if o in after_region]
            ctx.hit(NAME)
        else:
            out.append(n)
        out += before.get(id(n), [])
    graph.nodes = out
    view.invalidate()
    for t in maybe_dead:  # a Transpose whose output the region no longer reads
        if not view.consumers(t.outputs[0]) and not view.is_output(t.outputs[0]):
            view.remove(t)


# ---------------------------------------------------------------------------------- the pass


@graph_pass(NAME, level=LAYOUT, order=800)
def layout_nhwc(graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    roles: dict[int, _Role] = {}
    misses: list[tuple[Node, str]] = []
    for n in graph.nodes:
        role, why = _classify(view, n)
        if role is not None:
            roles[id(n)] = role
        elif why is not None:
            misses.append((n, why))
    regions = _components(view, roles)
    if not regions:
        return False
    region_values = {o for r in regions for n in r for o in n.outputs if o}
    region_inputs = {n.inputs[i] for r in regions for n in r for i in roles[id(n)].data}
    for n, why in misses:
        if any(i in region_values for i in n.inputs) or any(o in region_inputs for o in n.outputs):
            ctx.near_miss("NHWC layout", n, why)
    for region in regions:
        _convert(view, ctx, region, roles)
    return True
