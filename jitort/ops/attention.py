"""Attention (23/24/25), RotaryEmbedding (23), LinearAttention and CausalConvWithState (27),
ai.onnx.preview FlexAttention (1).

Attention runs as batched matmuls over [B, H, S, D] in float32 (float64 for double inputs).
GQA never materializes repeated K/V heads: query heads of one KV group are stacked along the
sequence axis ([B, Hkv, reps*Sq, D]) so each group is a single GEMM.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import np_dtype
from ..ir.types import TensorType
from .registry import op


def _cdt(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def _split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """[B, S, H*D] -> [B, H, S, D] (a view)."""
    b, s, hd = x.shape
    if heads <= 0 or hd % heads:
        raise ValueError(f"hidden size {hd} is not a multiple of num_heads {heads}")
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)


def grouped_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [B, Hq, M, K] @ b [B, Hkv, K, N] where query head h uses kv head h // (Hq // Hkv)."""
    bsz, hq, m, kdim = a.shape
    hkv = b.shape[1]
    if hq == hkv:
        return np.matmul(a, b)
    if hkv == 0 or hq % hkv:
        raise ValueError(f"q heads {hq} must be a multiple of kv heads {hkv}")
    reps = hq // hkv
    out = np.matmul(a.reshape(bsz, hkv, reps * m, kdim), b)
    return out.reshape(bsz, hq, m, b.shape[-1])


def masked_softmax(s: np.ndarray) -> np.ndarray:
    """In-place stable softmax over the last axis; an all -inf row gives zeros, not NaN."""
    m = np.max(s, axis=-1, keepdims=True)
    m[~np.isfinite(m)] = 0
    s -= m
    np.exp(s, out=s)
    tot = np.sum(s, axis=-1, keepdims=True)
    tot[tot == 0] = 1
    s /= tot
    return s


def _neg_inf_where(allowed: np.ndarray, dt: np.dtype) -> np.ndarray:
    return np.where(allowed, dt.type(0), dt.type(-np.inf))


def _attention_bias(mask, is_causal, offset, nonpad, left, right, b, sq, sk, dt):
    """Additive bias broadcastable to [B, Hq, Sq, Sk] (or None) from every masking source.

    ``offset`` is the causal/window frontier shift: an int, or a [B] array (external cache).
    """
    parts = []
    if mask is not None:
        if mask.shape[-1] < sk:  # a short mask is padded with "not attended"
            pad = [(0, 0)] * (mask.ndim - 1) + [(0, sk - mask.shape[-1])]
            mask = np.pad(mask, pad, constant_values=False if mask.dtype == np.bool_ else -np.inf)
        parts.append(_neg_inf_where(mask, dt) if mask.dtype == np.bool_ else mask.astype(dt, copy=False))
    if is_causal or left >= 0 or right >= 0:
        i = np.arange(sq).reshape(sq, 1)
        j = np.arange(sk).reshape(1, sk)
        if np.ndim(offset):
            pos = i + np.asarray(offset).reshape(-1, 1, 1, 1)  # [B, 1, Sq, 1]
        else:
            pos = i + int(offset)
        allowed = np.ones(np.broadcast_shapes(np.shape(pos), j.shape), dtype=bool)
        if is_causal:
            allowed &= j <= pos
        if left >= 0:
            allowed &= pos - j <= left
        if right >= 0:
            allowed &= j - pos <= right
        parts.append(_neg_inf_where(allowed, dt))
    if nonpad is not None:
        valid = np.arange(sk).reshape(1, sk) < nonpad.reshape(-1, 1).astype(np.int64)
        parts.append(_neg_inf_where(valid, dt).reshape(b, 1, 1, sk))
    if not parts:
        return None
    bias = parts[0]
    for p in parts[1:]:
        bias = bias + p
    return bias


def attention(ctx, q_in, k_in, v_in, attn_mask=None, past_key=None, past_value=None,
              nonpad_kv_seqlen=None, *, is_causal=0, kv_num_heads=None, q_num_heads=None,
              qk_matmul_output_mode=0, scale=None, softcap=0.0, softmax_precision=None,
              left_window_size=-1, right_window_size=-1):
    """The ONNX Attention op; returns (Y, present_key, present_value[, qk_matmul_output])."""
    out_dt = q_in.dtype
    dt = _cdt(out_dt)
    three_d = q_in.ndim == 3
    if three_d:
        q = _split_heads(q_in, int(q_num_heads))
        k = _split_heads(k_in, int(kv_num_heads))
        v = _split_heads(v_in, int(kv_num_heads))
    else:
        q, k, v = q_in, k_in, v_in
    if (past_key is None) != (past_value is None):
        raise ValueError("Attention: past_key and past_value must be given together")
    if past_key is not None:
        if nonpad_kv_seqlen is not None:
            raise ValueError("Attention: nonpad_kv_seqlen cannot be used with past_key/past_value")
        k = np.concatenate([past_key, k.astype(past_key.dtype, copy=False)], axis=2)
        v = np.concatenate([past_value, v.astype(past_value.dtype, copy=False)], axis=2)
    present_k, present_v = k, v
    b, _, sq, d = q.shape
    sk = k.shape[2]
    sc = 1.0 / np.sqrt(d) if scale is None else float(scale)

    qs = q.astype(dt) * dt.type(sc)  # half types: all math in float32, one rounding at the end
    s = grouped_matmul(qs, k.astype(dt, copy=False).swapaxes(-1, -2))
    want_qk = ctx.num_outputs > 3
    qk_out = s.copy() if want_qk and qk_matmul_output_mode == 0 else None
    if softcap and softcap > 0:
        cap = dt.type(softcap)
        s /= cap
        np.tanh(s, out=s)
        s *= cap
    if want_qk and qk_matmul_output_mode == 1:
        qk_out = s.copy()

    if nonpad_kv_seqlen is not None:
        offset = nonpad_kv_seqlen.reshape(-1).astype(np.int64) - sq
    else:
        offset = 0 if past_key is None else past_key.shape[2]
    bias = _attention_bias(attn_mask, is_causal, offset, nonpad_kv_seqlen, int(left_window_size),
                           int(right_window_size), b, sq, sk, dt)
    dead_rows = None
    if bias is not None:
        if s.shape != np.broadcast_shapes(s.shape, bias.shape):
            s = s + bias
        else:
            s += bias
        mx = np.max(bias, axis=-1, keepdims=True)
        if np.isneginf(mx).any():
            dead_rows = np.isneginf(mx)
    if want_qk and qk_matmul_output_mode == 2:
        qk_out = s.copy()

    if softmax_precision is not None:
        sp = np_dtype(int(softmax_precision))
        if sp != s.dtype:  # round through the requested precision (half types: math stays float32)
            s = s.astype(sp)
            if s.dtype != np.float64:
                s = s.astype(np.float32)
    p = masked_softmax(s)
    if dead_rows is not None:
        p = np.where(dead_rows, p.dtype.type(0), p)
    if want_qk and qk_matmul_output_mode == 3:
        qk_out = p
    y = grouped_matmul(p.astype(dt, copy=False), v.astype(dt, copy=False))
    if three_d:
        y = y.transpose(0, 2, 1, 3).reshape(b, sq, -1)
    outs = [np.ascontiguousarray(y.astype(out_dt, copy=False)), present_k, present_v]
    if want_qk:
        outs.append(np.ascontiguousarray(qk_out.astype(out_dt, copy=False)))
    return tuple(outs[: max(1, ctx.num_outputs)])


@op("Attention", since=23)
def attention_v23(ctx, q, k, v, attn_mask=None, past_key=None, past_value=None, *, is_causal=0,
                  kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0, scale=None,
                  softcap=0.0, softmax_precision=None):
    return attention(ctx, q, k, v, attn_mask, past_key, past_value, None, is_causal=is_causal,
                     kv_num_heads=kv_num_heads, q_num_heads=q_num_heads,
                     qk_matmul_output_mode=qk_matmul_output_mode, scale=scale, softcap=softcap,
                     softmax_precision=softmax_precision)


@op("Attention", since=24)
def attention_v24(ctx, q, k, v, attn_mask=None, past_key=None, past_value=None,
                  nonpad_kv_seqlen=None, *, is_causal=0, kv_num_heads=None, q_num_heads=None,
                  qk_matmul_output_mode=0, scale=None, softcap=0.0, softmax_precision=None):
    return attention(ctx, q, k, v, attn_mask, past_key, past_value, nonpad_kv_seqlen,
                     is_causal=is_causal, kv_num_heads=kv_num_heads, q_num_heads=q_num_heads,
                     qk_matmul_output_mode=qk_matmul_output_mode, scale=scale, softcap=softcap,
                     softmax_precision=softmax_precision)


@op("Attention", since=25)
def attention_v25(ctx, q, k, v, attn_mask=None, past_key=None, past_value=None,
                  nonpad_kv_seqlen=None, *, is_causal=0, kv_num_heads=None, q_num_heads=None,
                  qk_matmul_output_mode=0, scale=None, softcap=0.0, softmax_precision=None,
                  left_window_size=-1, right_window_size=-1):
    if left_window_size < -1 or right_window_size < -1:
        raise ValueError("Attention: window sizes must be -1 or non-negative")
    return attention(ctx, q, k, v, attn_mask, past_key, past_value, nonpad_kv_seqlen,
                     is_causal=is_causal, kv_num_heads=kv_num_heads, q_num_heads=q_num_heads,
                     qk_matmul_output_mode=qk_matmul_output_mode, scale=scale, softcap=softcap,
                     softmax_precision=softmax_precision, left_window_size=left_window_size,
                     right_window_size=right_window_size)


@op("RotaryEmbedding", since=23)
def rotary_embedding(x, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=0,
                     rotary_embedding_dim=0):
    """RoPE on [B, H, S, D] or [B, S, H*D]; caches are [max_pos, r/2] (with position_ids) or [B, S, r/2]."""
    out_dt = x.dtype
    dt = _cdt(out_dt)
    if x.ndim == 3:
        if not num_heads:
            raise ValueError("RotaryEmbedding: num_heads is required for 3-D input")
        b, s, hd = x.shape
        xv = x.reshape(b, s, int(num_heads), hd // int(num_heads))  # [B, S, H, D]
        head_axis = 2
    else:
        xv = x  # [B, H, S, D]
        head_axis = 1
    d = xv.shape[-1]
    r = int(rotary_embedding_dim) or d
    half = r // 2
    cos = cos_cache.astype(dt, copy=False)
    sin = sin_cache.astype(dt, copy=False)
    if position_ids is not None:
        cos, sin = cos[position_ids], sin[position_ids]  # [B, S, r/2]
    elif cos.ndim == 2:
        seq = xv.shape[1 if head_axis == 2 else 2]
        cos, sin = cos[None, :seq], sin[None, :seq]
    if cos.shape[-1] != half or sin.shape[-1] != half:
        raise ValueError(f"RotaryEmbedding: cache last dim {cos.shape[-1]} != rotary dim / 2 = {half}")
    cos = np.expand_dims(cos, head_axis)  # broadcast over heads
    sin = np.expand_dims(sin, head_axis)
    out = xv.astype(dt)  # a copy; the pass-through tail is kept as is
    rot = out[..., :r]
    if interleaved:
        x1, x2 = rot[..., 0::2].copy(), rot[..., 1::2].copy()
        rot[..., 0::2] = cos * x1 - sin * x2
        rot[..., 1::2] = sin * x1 + cos * x2
    else:
        x1, x2 = rot[..., :half].copy(), rot[..., half:r].copy()
        rot[..., :half] = cos * x1 - sin * x2
        rot[..., half:r] = sin * x1 + cos * x2
    return np.asarray(out.reshape(x.shape).astype(out_dt, copy=False))


@op("LinearAttention", since=27)
def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, chunk_size=64,
                     kv_num_heads, q_num_heads, scale=0.0, update_rule="gated_delta"):
    """Recurrent linear attention, one vectorized state update per time step (over B and heads)."""
    if update_rule not in ("linear", "gated", "delta", "gated_delta"):
        raise ValueError(f"LinearAttention: unknown update_rule {update_rule!r}")
    gated = update_rule in ("gated", "gated_delta")
    delta = update_rule in ("delta", "gated_delta")
    if gated != (decay is not None) or delta != (beta is not None):
        raise ValueError(f"LinearAttention: update_rule {update_rule!r} needs decay={gated}, beta={delta}")
    hq, hkv = int(q_num_heads), int(kv_num_heads)
    if hq <= 0 or hkv <= 0 or hq % hkv:
        raise ValueError("LinearAttention: q_num_heads must be a positive multiple of kv_num_heads")
    out_dt = query.dtype
    f = np.float32
    b, t, _ = query.shape
    q = _split_heads(query, hq).astype(f)  # [B, Hq, T, dk]
    k = _split_heads(key, hkv).astype(f)
    v = _split_heads(value, hkv).astype(f)
    dk, dv = q.shape[-1], v.shape[-1]
    reps = hq // hkv
    if decay is not None:
        g = decay.astype(f).reshape(b, t, hkv, -1).transpose(0, 2, 1, 3)  # [B, Hkv, T, dk|1]
        g = np.exp(g)
    if beta is not None:
        bt = beta.astype(f).reshape(b, t, -1, 1).transpose(0, 2, 1, 3)  # [B, Hkv|1, T, 1]
    state_dt = out_dt if past_state is None else past_state.dtype
    st = np.zeros((b, hkv, dk, dv), f) if past_state is None else past_state.astype(f)
    sc = f(1.0 / np.sqrt(dk) if not scale else scale)
    qg = q.reshape(b, hkv, reps, t, dk)
    out = np.empty((b, hkv, reps, t, dv), f)
    for i in range(t):
        kt, vt = k[:, :, i], v[:, :, i]  # [B, Hkv, dk], [B, Hkv, dv]
        if gated:
            st = st * g[:, :, i][..., None]
        if delta:
            vt = bt[:, :, i] * (vt - np.einsum("bhkv,bhk->bhv", st, kt))
        st = st + kt[..., :, None] * vt[..., None, :]
        out[:, :, :, i] = np.matmul(qg[:, :, :, i], st) * sc  # [B, Hkv, reps, dv]
    y = out.reshape(b, hq, t, dv).transpose(0, 2, 1, 3).reshape(b, t, hq * dv)
    return np.asarray(y.astype(out_dt)), np.asarray(st.astype(state_dt))


@op("CausalConvWithState", since=27)
def causal_conv_with_state(x, weight, bias=None, past_state=None, *, activation="none"):
    """Depthwise causal conv1d over [past_state | x]; present_state = the last k-1 positions."""
    if activation not in ("none", "silu", "swish"):
        raise ValueError(f"CausalConvWithState: unknown activation {activation!r}")
    b, c, _ = x.shape
    kk = weight.shape[2]
    pad = np.zeros((b, c, kk - 1), x.dtype) if past_state is None else past_state.astype(x.dtype, copy=False)
    full = np.concatenate([pad, x], axis=2)
    f = _cdt(x.dtype)
    win = np.lib.stride_tricks.sliding_window_view(full.astype(f, copy=False), kk, axis=2)  # [B, C, L, k]
    y = np.einsum("bclk,ck->bcl", win, weight[:, 0, :].astype(f, copy=False))
    if bias is not None:
        y += bias.astype(f, copy=False)[None, :, None]
    if activation != "none":
        y = y / (1.0 + np.exp(-y))
    present = full[:, :, full.shape[2] - (kk - 1):]
    return np.asarray(y.astype(x.dtype)), np.ascontiguousarray(present)


def _flex_infer(ctx, q, k, v, **attrs):
    shape = None
    if q.shape is not None and v.shape is not None and len(q.shape) == 4 and len(v.shape) == 4:
        shape = (q.shape[0], q.shape[1], q.shape[2], v.shape[3])
    return [TensorType(q.dtype, shape)]


@op("FlexAttention", since=1, domain="ai.onnx.preview", infer=_flex_infer)
def flex_attention(ctx, q, k, v, *, scale=None, softmax_precision=None, score_mod=None, prob_mod=None):
    """softmax(score_mod(Q K^T * scale)) -> prob_mod -> @ V, in softmax_precision (default f32/f64)."""
    out_dt = q.dtype
    dt = np_dtype(int(softmax_precision)) if softmax_precision is not None else _cdt(out_dt)
    work = dt if dt in (np.float32, np.float64) else np.dtype(np.float32)
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = grouped_matmul(q.astype(work), k.astype(work, copy=False).swapaxes(-1, -2))
    s *= work.type(sc)
    if score_mod is not None:
        s = _run_mod(ctx, score_mod, s.astype(dt, copy=False)).astype(work)
    p = masked_softmax(s.astype(dt, copy=False).astype(work))
    if prob_mod is not None:
        p = _run_mod(ctx, prob_mod, p.astype(dt, copy=False)).astype(work)
    y = grouped_matmul(p, v.astype(work, copy=False))
    return np.asarray(y.astype(out_dt))


def _run_mod(ctx, graph, x: np.ndarray) -> np.ndarray:
    if ctx.run_graph is None:
        raise NotImplementedError("FlexAttention score_mod/prob_mod need a session subgraph runner")
    (res,) = ctx.run_graph(graph, [x], ctx.outer or {})
    return np.asarray(res)
