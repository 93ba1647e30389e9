"""Conv fusion (extended level, order 140): Conv [+ BatchNormalization] [+ Add] [+ activation]
into one ``jitort::FusedConv``.

                X        W  [B]
                 \\       |  /
                  Conv (or a FusedConv with no residual/activation yet, channels first)
                    |
          [BatchNormalization]   scale, bias, mean, var constant; inference only:
                    |             folded into W' = W * s, B' = (B - mean) * s + bias,
                    |             s = scale / sqrt(var + epsilon)
            Z       |
             \\      |
          [Add or 2-input Sum]   Z has the same shape as the conv output (no broadcasting)
                    |
             [activation]        Relu | Clip (constant bounds) | LeakyRelu | Sigmoid |
                    |            HardSigmoid | HardSwish | Gelu | Tanh |
                    Y            SiLU:   t --+--> Sigmoid --> s
                                             +-------------> Mul(t, s)

    ==>   Y = jitort::FusedConv(X, W', B', Z, activation=..., activation_params=..., channels_last=0)

Every step is optional, but at least one must be there. Each intermediate must be read only by
the next step (the ``escapes`` guard); otherwise the chain stops there and, when the next step
would have fused, a near miss says why. A BatchNormalization after anything else (a Relu, a
Concat, ...) stays a BatchNormalization. Near misses: BN with training outputs or
``training_mode=1``, ``spatial=0``, non-constant BN parameters or Conv weight/bias, a conv
output read elsewhere, a residual whose shape broadcasts, non-constant Clip bounds.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Node
from ..ops.fused_conv import CONV_ATTRS, JITORT
from ..ops.registry import find
from .base import EXTENDED, PassContext, graph_pass
from .pattern import GraphView

NAME = "fuse_conv"
_FLOAT = "f"
#: ops a conv weight may be computed from when no constant folding ran first (light models build
#: their weights with ConstantOfShape); evaluated once, here, at optimization time
_FOLDABLE = {"Constant", "ConstantOfShape", "Identity", "Cast", "Reshape", "Transpose", "Unsqueeze",
             "Squeeze"}
_MAX_EVAL = 1 << 26


# ---------------------------------------------------------------------------------- matching


class _Chain:
    """What has been matched after the conv so far."""

    def __init__(self, anchor: Node):
        self.anchor = anchor
        self.region: list[Node] = [anchor]
        self.tail = anchor.outputs[0]
        self.bn: Node | None = None
        self.z: str = anchor.inputs[3] if anchor.domain == JITORT and len(anchor.inputs) > 3 else ""
        self.activation: str = anchor.attrs.get("activation", "") if anchor.domain == JITORT else ""
        self.params: list[float] = list(anchor.attrs.get("activation_params") or [])

    def add(self, nodes: list[Node], tail: str) -> None:
        self.region += nodes
        self.tail = tail


def _is_conv(n: Node) -> bool:
    if n.domain in ("", "ai.onnx") and n.op_type == "Conv":
        return True
    return (n.domain == JITORT and n.op_type == "FusedConv" and not n.attrs.get("channels_last")
            and not n.attrs.get("activation"))


def _consumers(view: GraphView, name: str) -> list[Node] | None:
    """Readers of ``name``; None when it is a graph output (it must stay a value)."""
    return None if view.is_output(name) else view.consumers(name)


def _std(n: Node, *ops: str) -> bool:
    return n.domain in ("", "ai.onnx") and n.op_type in ops


def _match_bn(view: GraphView, ch: _Chain, n: Node) -> str | None:
    """Guard for folding BatchNormalization ``n``; returns why not, or None."""
    if any(n.outputs[1:]) or n.attrs.get("training_mode", 0):
        return "BatchNormalization computes training outputs / runs in training mode"
    if n.attrs.get("spatial", 1) != 1:
        return "BatchNormalization with spatial=0 (per-activation statistics)"
    if ch.anchor.attrs.get("channels_last"):
        return "conv is channels-last"
    for i, what in zip(range(1, 5), ("scale", "bias", "mean", "variance")):
        if _value(view, n.inputs[i]) is None:
            return f"BatchNormalization {what} {n.inputs[i]!r} is not constant"
    if _value(view, ch.anchor.inputs[1]) is None:
        return f"Conv weight {ch.anchor.inputs[1]!r} is not constant"
    if len(ch.anchor.inputs) > 2 and ch.anchor.inputs[2] and _value(view, ch.anchor.inputs[2]) is None:
        return f"Conv bias {ch.anchor.inputs[2]!r} is not constant"
    return None


def _match_add(view: GraphView, ch: _Chain, n: Node) -> tuple[str | None, str | None]:
    """(residual name, None) when Add/Sum ``n`` fuses, else (None, why not)."""
    ins = [i for i in n.inputs if i]
    if len(ins) != 2 or ins.count(ch.tail) != 1:
        return None, "not a two-input add of the conv output and another value"
    z = ins[1] if ins[0] == ch.tail else ins[0]
    ys, zs, os_ = view.shape(ch.tail), view.shape(z), view.shape(n.outputs[0])
    if ys is None or zs is None or tuple(zs) != tuple(ys) or tuple(os_ or ()) != tuple(ys):
        return None, f"residual {z!r} of shape {zs} broadcasts against the conv output {ys}"
    if view.dtype(z) != view.dtype(ch.tail):
        return None, f"residual {z!r} has dtype {view.dtype(z)}, the conv output {view.dtype(ch.tail)}"
    return z, None


def _match_activation(view: GraphView, ch: _Chain, users: list[Node]):
    """(activation, params, nodes, output) for an activation of ch.tail, or (None, reason) /
    None when nothing activation-like reads it."""
    if len(users) == 2:  # SiLU: t -> Sigmoid -> s; Mul(t, s)
        sig = next((u for u in users if _std(u, "Sigmoid")), None)
        mul = next((u for u in users if _std(u, "Mul")), None)
        if sig is None or mul is None:
            return None
        if sorted(mul.inputs) != sorted([ch.tail, sig.outputs[0]]):
            return None
        if view.single_consumer(sig.outputs[0]) is not mul:
            return None, f"Sigmoid output {sig.outputs[0]!r} is also read elsewhere"
        return "SiLU", [], [sig, mul], mul.outputs[0]
    if len(users) != 1:
        return None
    n = users[0]
    a = n.attrs
    if _std(n, "Relu", "Sigmoid", "HardSwish", "Tanh"):
        return n.op_type, [], [n], n.outputs[0]
    if _std(n, "LeakyRelu"):
        return "LeakyRelu", [float(a.get("alpha", 0.01))], [n], n.outputs[0]
    if _std(n, "HardSigmoid"):
        return "HardSigmoid", [float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))], [n], n.outputs[0]
    if (_std(n, "Gelu") or (n.domain in ("com.microsoft", JITORT) and n.op_type == "Gelu")) \
            and set(a) <= {"approximate"}:
        approx = a.get("approximate", "none")
        if approx not in ("none", "tanh"):
            return None, f"Gelu approximate={approx!r}"
        return "Gelu", [1.0 if approx == "tanh" else 0.0], [n], n.outputs[0]
    if _std(n, "Clip"):
        if len(n.inputs) > 1 or not ({"min", "max"} & set(a)):
            bounds = []
            for i in (1, 2):
                name = n.inputs[i] if i < len(n.inputs) else ""
                if not name:
                    bounds.append(-np.inf if i == 1 else np.inf)
                    continue
                v = view.scalar(name)
                if v is None:
                    return None, f"Clip bound {name!r} is not a constant scalar"
                bounds.append(v)
        else:
            bounds = [float(a.get("min", -3.4028234663852886e38)), float(a.get("max", 3.4028234663852886e38))]
        return "Clip", bounds, [n], n.outputs[0]
    return None


# ---------------------------------------------------------------------------------- constants


def _value(view: GraphView, name: str, depth: int = 3) -> np.ndarray | None:
    """``name``'s value when it is fixed for the Signature, evaluating a short chain of
    constant-only producers (ConstantOfShape, Cast, ...) if no folding pass did."""
    c = view.const(name)
    if c is not None or depth == 0 or not name:
        return c
    p = view.producer(name)
    if p is None or p.domain not in ("", "ai.onnx") or p.op_type not in _FOLDABLE or len(p.outputs) != 1:
        return None
    t = view.tensor_type(name)
    if t is None or not t.is_static or math.prod(t.shape) > _MAX_EVAL:
        return None
    args = []
    for i in p.inputs:
        if not i:
            args.append(None)
            continue
        v = _value(view, i, depth - 1)
        if v is None:
            return None
        args.append(v)
    from ..backends.reference import node_version
    from ..ops.registry import KernelContext, call

    entry = find(p.op_type, p.domain, node_version(p, view.graph.opsets))
    if entry is None:
        return None
    try:
        return np.asarray(call(entry, args, p.attrs, KernelContext(opset=entry.since))[0])
    except Exception:  # noqa: BLE001 - not foldable here: the node runs at run time
        return None


def _fold_bn(view: GraphView, conv: Node, bn: Node) -> tuple[str, str]:
    """New initializers (W', B') with ``bn`` folded into ``conv``'s weight and bias."""
    w = _value(view, conv.inputs[1])
    scale, bias, mean, var = (_value(view, bn.inputs[i]).astype(np.float64).reshape(-1) for i in range(1, 5))
    eps = float(bn.attrs.get("epsilon", 1e-5))
    s = scale / np.sqrt(var + eps)
    has_b = len(conv.inputs) > 2 and conv.inputs[2]
    b = _value(view, conv.inputs[2]).astype(np.float64).reshape(-1) if has_b else np.zeros_like(s)
    w2 = (w.astype(np.float64) * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
    b2 = ((b - mean) * s + bias).astype(w.dtype)
    return view.add_initializer("fused_conv_w", w2), view.add_initializer("fused_conv_b", b2)


def _drop_dead(view: GraphView, names: list[str]) -> None:
    """Remove now-unread constant producers (and initializers) of the folded weights."""
    todo = [n for n in names if n]
    while todo:
        name = todo.pop()
        if view.consumers(name) or view.is_output(name) or name in view.graph.input_names:
            continue
        p = view.producer(name)
        if p is not None:
            if p.op_type in _FOLDABLE and not any(view.consumers(o) or view.is_output(o) for o in p.outputs):
                view.remove(p)
                todo += [i for i in p.inputs if i]
        elif name in view.graph.initializers:
            del view.graph.initializers[name]


# ---------------------------------------------------------------------------------- the pass


def _extend(view: GraphView, ctx: PassContext, ch: _Chain) -> None:
    """Grow ``ch`` over BN, Add, activation as far as the guards allow."""
    anchor_label = ch.anchor
    # -- BatchNormalization
    users = _consumers(view, ch.tail)
    if users and any(_std(u, "BatchNormalization") for u in users) and not ch.z and not ch.activation:
        bn = next(u for u in users if _std(u, "BatchNormalization"))
        if len(users) > 1:
            ctx.near_miss("Conv+BatchNormalization", anchor_label,
                          f"conv output {ch.tail!r} is also read by {len(users) - 1} other node(s)")
            return
        if bn.inputs[0] != ch.tail:
            return
        why = _match_bn(view, ch, bn)
        if why:
            ctx.near_miss("Conv+BatchNormalization", anchor_label, why)
            return
        ch.bn = bn
        ch.add([bn], bn.outputs[0])
        users = _consumers(view, ch.tail)
    # -- residual Add
    if users and not ch.z and not ch.activation:
        adds = [u for u in users if _std(u, "Add") or (_std(u, "Sum") and len(u.inputs) == 2)]
        if adds:
            z, why = _match_add(view, ch, adds[0])
            if len(users) > 1:
                why = f"conv output {ch.tail!r} is also read by {len(users) - 1} other node(s)"
            if why:
                ctx.near_miss("Conv+Add", anchor_label, why)
                return
            ch.z = z
            ch.add([adds[0]], adds[0].outputs[0])
            users = _consumers(view, ch.tail)
    # -- activation
    if users and not ch.activation:
        m = _match_activation(view, ch, users)
        if m is None and len(users) > 1 and any(_match_activation(view, ch, [u]) for u in users):
            m = (None, f"conv output {ch.tail!r} is also read by {len(users) - 1} other node(s)")
        if m is not None and m[0] is None:
            ctx.near_miss("Conv+activation", anchor_label, m[1])
        elif m is not None:
            ch.activation, ch.params = m[0], m[1]
            ch.add(m[2], m[3])


def _fused_node(view: GraphView, ctx: PassContext, ch: _Chain) -> Node:
    conv = ch.anchor
    w, b = conv.inputs[1], conv.inputs[2] if len(conv.inputs) > 2 else ""
    if ch.bn is not None:
        w, b = _fold_bn(view, conv, ch.bn)
    attrs = {k: conv.attrs[k] for k in CONV_ATTRS if k in conv.attrs}
    if not attrs.get("kernel_shape"):
        wshape = view.shape(w)
        attrs["kernel_shape"] = [int(d) for d in wshape[2:]]
    attrs.update(activation=ch.activation, activation_params=[float(p) for p in ch.params],
                 channels_last=0)
    inputs = [conv.inputs[0], w, b, ch.z]
    while inputs and not inputs[-1]:
        inputs.pop()
    return Node("FusedConv", inputs, [ch.tail], attrs, domain=JITORT,
                name=ctx.fresh(view.graph, conv.name or "FusedConv"))


def _eligible(view: GraphView, n: Node) -> bool:
    if not _is_conv(n) or len(n.outputs) != 1 or len(n.inputs) < 2:
        return False
    dt, ws = view.dtype(n.inputs[0]), view.shape(n.inputs[1])
    return (dt is not None and np.dtype(dt).kind == _FLOAT and ws is not None
            and all(isinstance(d, int) for d in ws) and view.rank(n.outputs[0]) is not None)


@graph_pass(NAME, level=EXTENDED, order=140)
def fuse_conv(graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    changed = False
    gone: set[int] = set()
    for anchor in list(graph.nodes):
        if id(anchor) in gone or not _eligible(view, anchor):
            continue
        ch = _Chain(anchor)
        _extend(view, ctx, ch)
        if len(ch.region) == 1:
            continue
        if view.escapes(ch.region, [ch.tail]):  # the steps above checked it; never fuse unsafely
            continue
        old_w = [anchor.inputs[1], anchor.inputs[2] if len(anchor.inputs) > 2 else ""]
        old_bn = [i for i in ch.bn.inputs[1:]] if ch.bn is not None else []
        gone.update(id(n) for n in ch.region)
        view.replace(ch.region, [_fused_node(view, ctx, ch)])
        if ch.bn is not None:
            _drop_dead(view, old_w + old_bn)
        ctx.hit(NAME)
        changed = True
    return changed

