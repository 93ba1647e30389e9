"""The attention matcher: what fuse_attention.py fuses, found without changing anything.

Each ``match_*`` function answers one question about the graph around a Softmax and returns a
small record (or None, or a :class:`Miss` with the reason a near miss is reported). The scores
chain, the head split/merge of Q, K, V and the causal analysis are kept apart so each is read
(and tested) on its own; fuse_attention.py assembles them, guards and rewrites.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Node
from ..ops import registry
from ..ops.fused_attention import causal_allowed
from ..ops.registry import KernelContext
from .pattern import GraphView

#: A fill at least this negative absorbs any real score: ``s + fill == fill`` in float32/64.
ABSORBING = -1e30
#: Ops the causal analysis may evaluate on constants (shape-only arithmetic, masks, slices).
_EVAL_OPS = frozenset({
    "Add", "And", "Cast", "Concat", "Constant", "ConstantOfShape", "Div", "Equal", "Expand",
    "Gather", "Greater", "GreaterOrEqual", "Identity", "Less", "LessOrEqual", "Mul", "Neg", "Not",
    "Or", "Range", "Reshape", "Slice", "Squeeze", "Sub", "Trilu", "Unsqueeze", "Where",
})
_EVAL_LIMIT = 1 << 22


@dataclass
class Miss:
    """A pattern that nearly matched: the reason it is left unfused."""

    reason: str


# -- small helpers -------------------------------------------------------------------------------
def is_onnx(node: Node | None, *ops: str) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in ops


def perm_of(node: Node) -> tuple:
    return tuple(node.attrs.get("perm", ()))


def scale_factor(view: GraphView, node: Node) -> tuple[float | None, str | None, str | None]:
    """For Mul/Div ``node``: (factor, data input, None) when one side is a constant scalar
    (a Div's divisor); (None, data input, reason) when the scale is not a constant scalar."""
    if not is_onnx(node, "Mul", "Div") or len(node.inputs) != 2:
        return None, None, None
    if node.op_type == "Div":
        data, other = node.inputs
    else:
        data, other = node.inputs if view.const(node.inputs[1]) is not None else node.inputs[::-1]
    c = view.scalar(other)
    if c is None:
        return None, data, f"scale {other!r} of {node.op_type} {node.name!r} is not a constant scalar"
    if not np.isfinite(c) or c == 0:
        return None, data, f"scale {c} of {node.op_type} {node.name!r} is not finite and non-zero"
    return (c if node.op_type == "Mul" else 1.0 / c), data, None


# -- constant evaluation (causal masks) -----------------------------------------------------------
class ConstEval:
    """Values fixed for this Signature, computed on demand through a few pure ops."""

    def __init__(self, view: GraphView):
        self.view = view
        self.memo: dict[str, np.ndarray | None] = {}

    def __call__(self, name: str, depth: int = 0) -> np.ndarray | None:
        if not name:
            return None
        c = self.view.const(name)
        if c is not None:
            return c
        if name in self.memo:
            return self.memo[name]
        self.memo[name] = None
        p = self.view.producer(name)
        if depth > 32 or p is None or not is_onnx(p, *_EVAL_OPS) or any(True for _ in p.subgraphs()):
            return None
        ins = [self(i, depth + 1) if i else None for i in p.inputs]
        if any(i and v is None for i, v in zip(p.inputs, ins)):
            return None
        from ..backends.reference import node_version

        version = node_version(p, self.view.graph.opsets)
        entry = registry.find(p.op_type, p.domain, version)
        if entry is None:
            return None
        try:
            with np.errstate(all="ignore"):
                outs = registry.call(entry, ins, p.attrs, KernelContext(len(p.outputs), version, p.name))
        except Exception:  # noqa: BLE001 - not evaluable: not a constant for us
            return None
        for o, v in zip(p.outputs, outs):
            if o and isinstance(v, np.ndarray) and v.size <= _EVAL_LIMIT:
                self.memo[o] = v
        return self.memo.get(name)


def is_causal_bool(arr: np.ndarray | None, sq: int, sk: int) -> bool:
    """``arr`` broadcasts to [..., Sq, Sk] and equals the bottom-right causal triangle there."""
    if arr is None or arr.ndim > 4 or arr.dtype != np.bool_:
        return False
    try:
        full = np.broadcast_shapes(arr.shape, (sq, sk))
    except ValueError:
        return False
    if full[-2:] != (sq, sk):
        return False
    return bool(np.array_equal(np.broadcast_to(arr, full), np.broadcast_to(causal_allowed(sq, sk), full)))


@dataclass
class Causal:
    fill: float
    drop_mask: bool = False  # the additive mask is exactly the causal mask: no mask input needed


def causal_in_mask(view: GraphView, ev: ConstEval, mask: str, sq: int, sk: int) -> Causal | None:
    """Does the additive ``mask`` exclude every causally excluded position with one absorbing
    value? Two forms: a constant mask (Trilu, triangular buffer), or transformers' mask builder
    ``Where(Expand?(And(..., causal_bool, ...)), 0, fill)``."""
    allowed = causal_allowed(sq, sk)
    m = ev(mask)
    if m is not None and m.dtype.kind == "f" and m.ndim <= 4:
        try:
            full = np.broadcast_shapes(m.shape, (sq, sk))
        except ValueError:
            return None
        if full[-2:] != (sq, sk):
            return None
        mb = np.broadcast_to(m, full)
        excluded = mb[..., ~allowed]
        if excluded.size == 0:
            return Causal(-np.inf, drop_mask=not np.any(mb))
        fill = float(excluded.reshape(-1)[0])
        if fill > ABSORBING or not np.all(excluded == excluded.reshape(-1)[0]):
            return None
        return Causal(fill, drop_mask=not np.any(mb[..., allowed]))
    w = view.producer(mask)
    if not is_onnx(w, "Where") or view.scalar(w.inputs[1]) != 0.0:
        return None
    fill = view.scalar(w.inputs[2])
    if fill is None or fill > ABSORBING:
        return None
    leaves, stack = [], [w.inputs[0]]
    while stack:  # the And tree of the condition (Expand and bool Casts keep values)
        name = stack.pop()
        p = view.producer(name)
        if is_onnx(p, "And"):
            stack.extend(p.inputs)
        elif is_onnx(p, "Expand") or (is_onnx(p, "Cast") and view.dtype(p.inputs[0]) == np.bool_):
            stack.append(p.inputs[0])
        else:
            leaves.append(name)
    if any(is_causal_bool(ev(leaf), sq, sk) for leaf in leaves):
        return Causal(fill)
    return None


# -- the scores chain: MatMul -> scale -> (mask, causal) -> Softmax -> MatMul ------------------
@dataclass
class Core:
    softmax: Node
    qk: Node
    pv: Node
    nodes: list[Node]  # qk ... pv, the nodes every fused form removes
    scale: float = 1.0
    mask: str | None = None
    mask_kind: str = "none"
    causal: Causal | None = None
    scores_shape: tuple = ()


def _reaches_qk(view: GraphView, name: str, depth: int = 0) -> bool:
    p = view.producer(name)
    if p is None or depth > 8:
        return False
    if is_onnx(p, "MatMul"):
        return view.rank(name) == 4
    if is_onnx(p, "Mul", "Div", "Cast", "Where"):
        return any(_reaches_qk(view, i, depth + 1) for i in p.inputs if i and view.const(i) is None)
    if is_onnx(p, "Add"):
        return any(_reaches_qk(view, i, depth + 1) for i in p.inputs)
    return False


def match_core(view: GraphView, ev: ConstEval, softmax: Node) -> Core | Miss | None:
    from ..backends.reference import node_version

    x = softmax.inputs[0]
    rank = view.rank(x)
    axis = softmax.attrs.get("axis", -1 if node_version(softmax, view.graph.opsets) >= 13 else 1)
    if rank is None or axis not in (-1, rank - 1):
        return None
    # -- after the Softmax: (Cast to the same type) -> MatMul(P, V)
    chain_after, p = [], softmax.outputs[0]
    users = view.consumers(p)
    if view.is_output(p) or len(users) != 1:
        if any(is_onnx(u, "MatMul") for u in users) and _reaches_qk(view, x):
            return Miss(f"the attention probabilities {p!r} are also used elsewhere "
                        f"({len(users)} readers{', a graph output' if view.is_output(p) else ''})")
        return None
    u = users[0]
    if is_onnx(u, "Cast") and view.dtype(u.outputs[0]) == view.dtype(p):
        chain_after.append(u)
        p = u.outputs[0]
        u = view.single_consumer(p)
    if not is_onnx(u, "MatMul") or u.inputs[0] != p or view.rank(u.outputs[0]) != 4:
        return None
    pv = u
    # -- before the Softmax, walking back to MatMul(Q, K^T)
    core = Core(softmax, None, pv, [])
    before: list[Node] = []
    events: list[str] = []  # "mask"/"causal" in backward order
    cur = x
    while True:
        n = view.producer(cur)
        if n is None:
            return None
        if is_onnx(n, "MatMul"):
            core.qk = n
            break
        before.append(n)
        if is_onnx(n, "Mul", "Div"):
            f, data, why = scale_factor(view, n)
            if f is None:
                return Miss(why) if why and any(_reaches_qk(view, i) for i in n.inputs) else None
            core.scale *= f
            cur = data
        elif is_onnx(n, "Add"):
            sides = [_reaches_qk(view, i) for i in n.inputs]
            if sides.count(True) != 1:
                return None
            i = sides.index(True)
            if core.mask is not None:
                return Miss("more than one additive bias on the scores")
            core.mask, core.mask_kind = n.inputs[1 - i], "additive"
            events.append("mask")
            cur = n.inputs[i]
        elif is_onnx(n, "Where"):
            miss = _match_where(view, ev, n, core)
            if isinstance(miss, Miss) or miss is None:
                return miss
            events.append("causal")
            cur = miss
        elif is_onnx(n, "Cast") and view.dtype(n.inputs[0]) == view.dtype(n.outputs[0]):
            cur = n.inputs[0]
        else:
            return None
    shape = view.shape(core.qk.outputs[0])
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
        return Miss(f"the score shape {shape} is not a known [B, H, Sq, Sk]")
    core.scores_shape = tuple(shape)
    if events == ["mask", "causal"] and core.mask is not None:
        return Miss("a causal Where before the additive mask (the fused kernel adds the mask first)")
    core.nodes = [core.qk] + before[::-1] + [softmax] + chain_after + [pv]
    return core


def _match_where(view: GraphView, ev: ConstEval, n: Node, core: Core) -> str | Miss | None:
    """Where(allowed, S, fill) or Where(excluded, fill, S) with a constant causal condition:
    returns the scores input; records the causal fill in ``core``."""
    shape = view.shape(n.outputs[0])
    if shape is None or len(shape) < 2 or not all(isinstance(d, int) for d in shape[-2:]):
        return Miss("a Where on scores of unknown shape")
    sq, sk = shape[-2:]
    cond = ev(n.inputs[0])
    for s_at, f_at, want in ((1, 2, True), (2, 1, False)):
        if not _reaches_qk(view, n.inputs[s_at]):
            continue
        fill = view.scalar(n.inputs[f_at])
        if fill is None:
            return Miss(f"the masked-fill value {n.inputs[f_at]!r} is not a constant scalar")
        if cond is None:
            return Miss(f"the Where condition {n.inputs[0]!r} is not a constant (not a causal mask)")
        c = cond.astype(bool) if want else ~cond.astype(bool)
        if not is_causal_bool(c, sq, sk):
            return Miss(f"the constant Where condition {n.inputs[0]!r} is not a causal triangle")
        if core.causal is not None:
            return Miss("two causal Where nodes on the scores")
        core.causal = Causal(fill)
        return n.inputs[s_at]
    return None


# -- head split / merge -------------------------------------------------------------------------
@dataclass
class Split:
    """x3 [B, S, H*D] --Reshape--> [B, S, H, D] --Transpose(perm)--> x4 (with scale nodes)."""

    x3: str
    x4: str  # the value the rest of the pattern reads
    heads: int
    nodes: list[Node] = field(default_factory=list)
    scale: float = 1.0


def peel_scales(view: GraphView, name: str) -> tuple[str, float, list[Node]]:
    """Walk back through Mul/Div by constant scalars: (source, factor, nodes)."""
    f, nodes = 1.0, []
    while True:
        n = view.producer(name)
        g, data, _ = scale_factor(view, n) if n is not None else (None, None, None)
        if g is None:
            return name, f, nodes
        f *= g
        nodes.append(n)
        name = data


def match_split(view: GraphView, x4: str, perm: tuple, scales: bool = True) -> Split | None:
    """``x4`` = Transpose(perm)(Reshape([B, S, H, D])(x3)), with optional constant scales on
    either side (Q and K only: ``scales``)."""
    src, f, nodes = peel_scales(view, x4) if scales else (x4, 1.0, [])
    t = view.producer(src)
    if not is_onnx(t, "Transpose") or perm_of(t) != perm:
        return None
    r = view.producer(t.inputs[0])
    if not is_onnx(r, "Reshape"):
        return None
    src3, f3, nodes3 = peel_scales(view, r.inputs[0]) if scales else (r.inputs[0], 1.0, [])
    s3, s4 = view.shape(src3), view.shape(r.outputs[0])
    if s3 is None or s4 is None or len(s3) != 3 or len(s4) != 4:
        return None
    if not isinstance(s4[2], int) or not isinstance(s4[3], int) or s3[:2] != s4[:2] \
            or s3[2] != s4[2] * s4[3]:
        return None
    return Split(src3, x4, s4[2], nodes + [t, r] + nodes3, f * f3)


@dataclass
class Merge:
    """[B, H, S, Dv] --Transpose(0,2,1,3)--> --Reshape--> out. When the Reshape goes straight on
    to another shape (a folded chain: [B*S, H*Dv] for a Gemm), it stays, reading the fused
    [B, S, H*Dv] output instead: the element order is the same."""

    transpose: Node
    reshape: Node
    exact: bool  # the Reshape's output is [B, S, H*Dv]: fused too

    @property
    def nodes(self) -> list[Node]:
        return [self.transpose] + ([self.reshape] if self.exact else [])


def match_merge(view: GraphView, y4: str) -> Merge | None:
    t = view.single_consumer(y4)
    if not is_onnx(t, "Transpose") or perm_of(t) != (0, 2, 1, 3):
        return None
    r = view.single_consumer(t.outputs[0])
    if not is_onnx(r, "Reshape") or r.inputs[0] != t.outputs[0]:
        return None
    s4, out = view.shape(y4), view.shape(r.outputs[0])
    if s4 is None or out is None or not all(isinstance(d, int) for d in s4[1:]):
        return None
    if out == (s4[0], s4[2], s4[1] * s4[3]):
        return Merge(t, r, True)
    target = view.const(r.inputs[1]) if len(r.inputs) > 1 else None
    if target is None or (0 in target.tolist() and not r.attrs.get("allowzero", 0)):
        return None  # a 0 would copy a dim of the (now 3-D) input
    return Merge(t, r, False)


@dataclass
class PastConcat:
    node: Node
    past: str
    new: str  # [B, H, S_new, D]

    @property
    def present(self) -> str:
        return self.node.outputs[0]


def match_past(view: GraphView, x4: str) -> PastConcat | None:
    """``x4`` = Concat(past, new, axis=2 or -2) over rank-4 values."""
    c = view.producer(x4)
    if not is_onnx(c, "Concat") or len(c.inputs) != 2 or view.rank(x4) != 4:
        return None
    if c.attrs.get("axis") not in (2, -2):
        return None
    return PastConcat(c, c.inputs[0], c.inputs[1])
