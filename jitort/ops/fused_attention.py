"""jitort::Attention -- scaled dot-product attention as one node (made by passes/fuse_attention).

Inputs (a missing optional input is ""), by ``layout``:

                   layout "bsd" (heads split here)     layout "bhsd"
    0 Q            [B, Sq, H*D]                        [B, H, Sq, D]
    1 K            [B, Sk, Hkv*D]                      [B, Hkv, Sk, D]   (not transposed)
    2 V            [B, Sk, Hkv*Dv]                     [B, Hkv, Sk, Dv]
    3 past_key     [B, Hkv, P, D]    optional; K = Concat(past_key, K) along the sequence
    4 past_value   [B, Hkv, P, Dv]   optional, given together with past_key
    5 mask         optional, broadcastable to [B, H, Sq, P+Sk] (rank <= 4):
                   mask_kind "additive": a float bias added to the scores;
                   mask_kind "bool": True = attend, False = never attend

Attributes: ``num_heads`` (H), ``kv_num_heads`` (Hkv; 0 = H; H must be a multiple: query head
h reads kv head h // (H / Hkv)), ``scale`` (float), ``causal`` (0/1), ``causal_fill`` (the score
given to a causally excluded position, default -inf), ``mask_kind`` ("none", "additive", "bool"),
``layout`` ("bsd" or "bhsd", as above; Y has the layout of Q).

Semantics, in this order (T = P + Sk, the total key length)::

    S = (Q @ K^T) * scale                        [B, H, Sq, T]
    S = S + mask            (additive)   or   S = where(mask, S, -inf)   (bool)
    S = where(j <= i + (T - Sq), S, causal_fill) (causal: the past offset aligns the triangle
                                                  bottom-right, so a decode step sees all keys)
    Y = softmax(S, axis=-1) @ V                  [B, H, Sq, Dv] (-> [B, Sq, H*Dv] for "bsd")

Outputs: Y, and present_key / present_value (= the concatenated K / V, [B, Hkv, T, D]) when
asked for. A row whose scores are all -inf gives zeros (the decomposed graph would give NaN).
Math runs in float32 for half types (float64 for double); Y is rounded once at the end.
"""

from __future__ import annotations

import numpy as np
from ..lazy import TensorProto, onnx_helper as helper

from ..ir.fused_export import onnx_body
from ..ir.types import TensorType
from .attention import grouped_matmul, masked_softmax
from .registry import op

MASK_KINDS = ("none", "additive", "bool")
LAYOUTS = ("bsd", "bhsd")


def _cdt(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def _heads(x: np.ndarray, heads: int) -> np.ndarray:
    """[B, S, H*D] -> [B, H, S, D] (a view); 4-D input passes through."""
    if x.ndim == 4:
        return x
    if x.ndim != 3:
        raise ValueError(f"jitort::Attention: rank-{x.ndim} input")
    b, s, hd = x.shape
    if heads <= 0 or hd % heads:
        raise ValueError(f"jitort::Attention: hidden size {hd} is not a multiple of {heads} heads")
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)


def causal_allowed(sq: int, sk: int) -> np.ndarray:
    """[Sq, Sk] bool: query i may see key j iff j <= i + (Sk - Sq)."""
    return np.arange(sk).reshape(1, sk) <= np.arange(sq).reshape(sq, 1) + (sk - sq)


def _infer(ctx, q, k, v, past_key=None, past_value=None, mask=None, *, num_heads=0,
           kv_num_heads=0, scale=1.0, causal=0, causal_fill=-np.inf, mask_kind="none", layout="bsd"):
    h = int(num_heads)
    hkv = int(kv_num_heads) or h
    want = 3 if layout == "bsd" else 4
    if any(t is not None and t.shape is not None and len(t.shape) != want for t in (q, k, v)):
        raise ValueError(f"jitort::Attention: layout {layout!r} wants rank-{want} Q, K, V")

    def split(t, heads):  # -> (B, heads, S, D) with None for unknown
        if t is None or t.shape is None:
            return None
        if len(t.shape) == 4:
            return tuple(t.shape)
        b, s, hd = t.shape
        return (b, heads, s, hd // heads if isinstance(hd, int) else None)

    qs, ks, vs = split(q, h), split(k, hkv), split(v, hkv)
    if qs is None or ks is None or vs is None:
        raise ValueError("jitort::Attention: input ranks unknown")
    total = ks[2]
    if past_key is not None and past_key.shape is not None:
        p = past_key.shape[2]
        total = p + total if isinstance(p, int) and isinstance(total, int) else None
    y4 = (qs[0], qs[1], qs[2], vs[3])
    if layout == "bsd":
        y = (qs[0], qs[2], h * vs[3] if isinstance(vs[3], int) else None)
    else:
        y = y4
    kdt = past_key.dtype if past_key is not None else k.dtype
    vdt = past_value.dtype if past_value is not None else v.dtype
    outs = [TensorType(q.dtype, y), TensorType(kdt, (ks[0], ks[1], total, ks[3])),
            TensorType(vdt, (vs[0], vs[1], total, vs[3]))]
    return outs[:max(1, ctx.num_outputs)]


@op("Attention", since=1, domain="jitort", infer=_infer)
def fused_attention(ctx, q, k, v, past_key=None, past_value=None, mask=None, *, num_heads=0,
                    kv_num_heads=0, scale=1.0, causal=0, causal_fill=-np.inf, mask_kind="none",
                    layout="bsd"):
    """jitort::Attention (see the module docstring): returns (Y, present_key, present_value)."""
    if layout not in LAYOUTS or q.ndim != (3 if layout == "bsd" else 4):
        raise ValueError(f"jitort::Attention: layout {layout!r} (one of {LAYOUTS}) and rank-{q.ndim} Q")
    h = int(num_heads) or q.shape[1]
    hkv = int(kv_num_heads) or h
    out_dt = q.dtype
    dt = _cdt(out_dt)
    qh, kh, vh = _heads(q, h), _heads(k, hkv), _heads(v, hkv)
    if (past_key is None) != (past_value is None):
        raise ValueError("jitort::Attention: past_key and past_value must be given together")
    if past_key is not None:
        kh = np.concatenate([past_key, kh.astype(past_key.dtype, copy=False)], axis=2)
        vh = np.concatenate([past_value, vh.astype(past_value.dtype, copy=False)], axis=2)
    b, _, sq, _ = qh.shape
    sk = kh.shape[2]

    # -- scores ---------------------------------------------------------------------------------
    s = grouped_matmul(qh.astype(dt, copy=False), kh.astype(dt, copy=False).swapaxes(-1, -2))
    s *= dt.type(scale)
    if mask is not None and mask_kind != "none":
        if mask_kind == "bool":
            s = np.where(mask.astype(bool, copy=False), s, dt.type(-np.inf))
        elif mask_kind == "additive":
            s += mask.astype(dt, copy=False)  # the pass guarantees mask broadcasts into s
        else:
            raise ValueError(f"jitort::Attention: unknown mask_kind {mask_kind!r}; one of {MASK_KINDS}")
    if causal:
        np.copyto(s, dt.type(causal_fill), where=~causal_allowed(sq, sk))

    # -- probabilities and output ---------------------------------------------------------------
    p = masked_softmax(s)
    y = grouped_matmul(p, vh.astype(dt, copy=False))
    if layout == "bsd":
        y = y.transpose(0, 2, 1, 3).reshape(b, sq, -1)
    outs = [np.ascontiguousarray(y.astype(out_dt, copy=False)), kh, vh]
    return tuple(outs[:max(1, ctx.num_outputs)])


# -- ONNX function body (opset 23 primitives) ----------------------------------------------------
@onnx_body("Attention")
def attention_body(node) -> list:
    a = node.attrs
    h = int(a.get("num_heads", 0))
    hkv = int(a.get("kv_num_heads", 0)) or h
    nodes: list = []
    n = [0]

    def mk(op_type, inputs, **attrs):
        n[0] += 1
        out = f"t{n[0]}"
        nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def ints(values):
        return mk("Constant", [], value=helper.make_tensor("v", TensorProto.INT64, [len(values)], values))

    def scalar_like(value, like):
        c = mk("Constant", [], value=helper.make_tensor("v", TensorProto.FLOAT, [], [float(value)]))
        return mk("CastLike", [c, like])

    present = [i for i in (1, 2) if i < len(node.outputs) and node.outputs[i]]
    has = [bool(i < len(node.inputs) and node.inputs[i]) for i in range(6)]
    bsd = a.get("layout", "bsd") == "bsd"

    def split(x, heads):  # [B, S, heads*D] -> [B, heads, S, D]
        r = mk("Reshape", [x, ints([0, 0, heads, -1])])
        return mk("Transpose", [r], perm=[0, 2, 1, 3])

    q, k, v = (split("x0", h), split("x1", hkv), split("x2", hkv)) if bsd else ("x0", "x1", "x2")
    if has[3]:
        k = mk("Concat", ["x3", k], axis=2)
        v = mk("Concat", ["x4", v], axis=2)
    if 1 in present:
        nodes.append(helper.make_node("Identity", [k], ["y1"]))
    if 2 in present:
        nodes.append(helper.make_node("Identity", [v], ["y2"]))
    reps = h // hkv if hkv else 1
    qg = mk("Reshape", [q, ints([0, hkv, -1, 0])]) if reps > 1 else q
    s = mk("MatMul", [qg, mk("Transpose", [k], perm=[0, 1, 3, 2])])
    if reps > 1:
        s = mk("Reshape", [s, ints([0, h, -1, 0])])
    s = mk("Mul", [s, scalar_like(a.get("scale", 1.0), s)])
    kind = a.get("mask_kind", "none")
    if has[5] and kind == "additive":
        s = mk("Add", [s, mk("CastLike", ["x5", s])])
    elif has[5] and kind == "bool":
        s = mk("Where", [mk("Cast", ["x5"], to=TensorProto.BOOL), s, scalar_like(-np.inf, s)])
    if int(a.get("causal", 0)):
        # allowed[i, j] = j <= i + (Sk - Sq), built from the score shape
        zero, one = ints([0]), ints([1])
        sq = mk("Shape", [s], start=-2, end=-1)
        sk = mk("Shape", [s], start=-1)
        sq0, sk0 = mk("Squeeze", [sq]), mk("Squeeze", [sk])
        z0, o0 = mk("Squeeze", [zero]), mk("Squeeze", [one])
        rows = mk("Unsqueeze", [mk("Add", [mk("Range", [z0, sq0, o0]), mk("Sub", [sk0, sq0])]), one])
        cols = mk("Unsqueeze", [mk("Range", [z0, sk0, o0]), zero])
        allowed = mk("LessOrEqual", [cols, rows])
        s = mk("Where", [allowed, s, scalar_like(a.get("causal_fill", -np.inf), s)])
    p = mk("Softmax", [s], axis=-1)
    if reps > 1:
        p = mk("Reshape", [p, ints([0, hkv, -1, 0])])
    y = mk("MatMul", [p, v])
    if reps > 1:
        y = mk("Reshape", [y, ints([0, h, -1, 0])])
    if bsd:
        y = mk("Reshape", [mk("Transpose", [y], perm=[0, 2, 1, 3]), ints([0, 0, -1])])
    nodes.append(helper.make_node("Identity", [y], ["y0"]))
    return nodes
