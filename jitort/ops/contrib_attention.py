"""com.microsoft attention ops as onnxruntime's CPU kernels compute them: Attention (packed QKV
weights), MultiHeadAttention, GroupQueryAttention (float KV cache), RotaryEmbedding.

Masks follow onnxruntime: a masked score gets ``mask_filter_value`` (default -10000) *added*
(so a fully masked row is still a softmax over the raw scores), not -inf.
"""

from __future__ import annotations

import math

import numpy as np

from .contrib_common import MS, dtype_of, like, shape_of, tt, wide
from .registry import op

_NEG = -10000.0


def _softmax(z):
    z = z - np.max(z, axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= np.sum(z, axis=-1, keepdims=True)
    return z


def _heads(x, n):
    """(B, S, N*H) -> (B, N, S, H)."""
    b, s, d = x.shape
    # contiguous heads: batched matmul on strided views is ~20x slower (no BLAS per head)
    return np.ascontiguousarray(x.reshape(b, s, n, d // n).transpose(0, 2, 1, 3))


def _merge(x):
    """(B, N, S, H) -> (B, S, N*H)."""
    b, n, s, h = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, n * h)


def _key_mask(mask, b, s, t, past, filt):
    """An additive (B, 1, S, T) float32 mask from an onnxruntime mask_index / key_padding_mask."""
    m = np.asarray(mask)
    j = np.arange(t)
    if m.ndim == 1 and m.shape[0] == b:  # right padding: valid key lengths
        bad = j[None, :] >= m[:, None]
        return np.where(bad, np.float32(filt), np.float32(0))[:, None, None, :]
    if m.ndim == 1 and m.shape[0] == 2 * b:  # left padding: end (exclusive), start (inclusive)
        bad = (j[None, :] >= m[:b, None]) | (j[None, :] < m[b:, None])
        return np.where(bad, np.float32(filt), np.float32(0))[:, None, None, :]
    if m.ndim == 2:  # (B, T) raw 0/1
        return np.where(m == 0, np.float32(filt), np.float32(0))[:, None, None, :]
    if m.ndim == 3:  # (B, S, T)
        return np.where(m == 0, np.float32(filt), np.float32(0))[:, None, :, :]
    if m.ndim == 4:  # Megatron (B, 1, max_S, max_S): onnxruntime's CPU kernel rejects it too
        raise NotImplementedError("4-D attention mask_index is not supported (as in onnxruntime's CPU kernel)")
    raise ValueError(f"unsupported mask shape {m.shape}")


def _attend(q, k, v, scale, add=None, bias=None, want_qk=False, block=None):
    """softmax(scale * q k^T + add + bias) v over float32 BNSH tensors; returns (out, qk).

    ``block`` (bool, broadcastable to the scores) sets scores to the lowest float32."""
    q, k, v = np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v)
    scores = np.matmul(q, np.swapaxes(k, -1, -2))
    scores *= np.float32(scale)
    if add is not None:
        scores = scores + add
    if bias is not None:
        scores = scores + bias
    if block is not None:
        scores = np.where(block, np.finfo(np.float32).min, scores)
    qk = scores.copy() if want_qk else None
    probs = _softmax(scores)
    return np.matmul(probs, v), qk


# ------------------------------------------------------------------ Attention

def _qkv_sizes(w_cols, qkv_hidden_sizes):
    if qkv_hidden_sizes:
        return [int(v) for v in qkv_hidden_sizes]
    if w_cols is None:
        return [None] * 3
    return [w_cols // 3] * 3


def _attention_infer(ctx, x, w, bias=None, mask=None, past=None, *_, num_heads, qkv_hidden_sizes=None, **__):
    xs, ws = shape_of(x), shape_of(w)
    dq, dk, dv = _qkv_sizes(None if ws is None else ws[1], qkv_hidden_sizes)
    dt = dtype_of(x)
    out = None if xs is None else (xs[0], xs[1], dv)
    outs = [tt(dt, out)]
    if (ctx.num_outputs or 1) > 1:
        ps = shape_of(past)
        present = None
        if xs is not None and dk is not None:
            tot = xs[1] if past is None else (None if ps is None or not isinstance(ps[3], int) or not isinstance(xs[1], int)
                                              else ps[3] + xs[1])
            present = (2, xs[0], num_heads, tot, dk // num_heads)
        outs.append(tt(dt, present))
    return outs


@op("Attention", domain=MS, infer=_attention_infer)
def attention(x, weights, bias=None, mask_index=None, past=None, attention_bias=None, past_sequence_length=None, *,
              num_heads, qkv_hidden_sizes=None, unidirectional=0, scale=0.0, mask_filter_value=_NEG,
              do_rotary=0, rotary_embedding_dim=0, past_present_share_buffer=0):
    """BERT/GPT-2 self-attention with packed QKV projection weights (B, S, Hin) x (Hin, Dq+Dk+Dv)."""
    if do_rotary or past_present_share_buffer:
        raise NotImplementedError("Attention: do_rotary / past_present_share_buffer are not supported")
    dq, dk, dv = _qkv_sizes(weights.shape[1], qkv_hidden_sizes)
    xw = wide(x)
    qkv = np.matmul(xw, wide(weights))
    if bias is not None:
        qkv = qkv + wide(bias)
    b, s, _ = xw.shape
    q, k, v = _heads(qkv[..., :dq], num_heads), _heads(qkv[..., dq:dq + dk], num_heads), \
        _heads(qkv[..., dq + dk:], num_heads)
    p = 0
    if past is not None:
        pw = wide(past)
        p = pw.shape[3]
        k = np.concatenate([pw[0], k], axis=2)
        v = np.concatenate([pw[1], v], axis=2)
    t = p + s
    add = None
    if mask_index is not None:
        add = _key_mask(mask_index, b, s, t, p, mask_filter_value)
    # causal: future keys get the lowest float32 (overriding, not adding to, the padding mask)
    block = (np.arange(t)[None, :] > p + np.arange(s)[:, None]) if unidirectional else None
    sc = scale if scale else 1.0 / math.sqrt(dq // num_heads)
    ab = None if attention_bias is None else wide(attention_bias)
    out, _ = _attend(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), sc, add, ab, block=block)
    y = like(_merge(out), x.dtype)
    present = like(np.stack([k, v]), x.dtype) if dk == dv else None
    return (y, present) if present is not None else y


# ------------------------------------------------------------------ MultiHeadAttention

def _mha_qkv(query, key, value, bias, n):
    """Unpack MHA's input layouts into float32 BNSH q, k, v (bias applied where onnxruntime does)."""
    qw = wide(query).astype(np.float32, copy=False)
    if key is None and qw.ndim == 5:  # packed QKV (B, S, N, 3, H)
        if bias is not None:
            raise NotImplementedError("MultiHeadAttention: bias with packed QKV is not supported")
        q, k, v = (qw[:, :, :, i].transpose(0, 2, 1, 3) for i in range(3))
        return q, k, v, False
    kw = wide(key).astype(np.float32, copy=False)
    d = qw.shape[-1]
    bw = None if bias is None else wide(bias).astype(np.float32)
    if bw is not None:
        qw = qw + bw[:d]
    q = _heads(qw, n)
    if value is None and kw.ndim == 5:  # packed KV (B, L, N, 2, H)
        if bw is not None:
            raise NotImplementedError("MultiHeadAttention: bias with packed KV is not supported")
        return q, kw[:, :, :, 0].transpose(0, 2, 1, 3), kw[:, :, :, 1].transpose(0, 2, 1, 3), False
    vw = wide(value).astype(np.float32, copy=False)
    if kw.ndim == 4:  # key/value already BNSH (cross-attention cache): no bias, no past concat
        return q, kw, vw, True
    if bw is not None:
        dk = kw.shape[-1]
        kw = kw + bw[d:d + dk]
        vw = vw + bw[d + dk:]
    return q, _heads(kw, n), _heads(vw, n), False


def _mha_infer(ctx, query, key=None, value=None, bias=None, mask=None, ab=None, past_key=None, *_, num_heads, **__):
    qs, ks, vs, ps = shape_of(query), shape_of(key), shape_of(value), shape_of(past_key)
    dt = dtype_of(query)
    if qs is None:
        return [tt(dt, None)] * max(1, ctx.num_outputs or 1)
    b, s = qs[0], qs[1]
    if len(qs) == 5:
        h = qs[4]
        dv, kv_len = (None if not isinstance(h, int) else num_heads * h), qs[1]
    elif ks is not None and len(ks) == 5:
        dv = None if not isinstance(ks[4], int) else num_heads * ks[4]
        kv_len = ks[1]
    elif ks is not None and len(ks) == 4:
        dv = None if vs is None or not isinstance(vs[3], int) else num_heads * vs[3]
        kv_len = ks[2]
    else:
        dv = None if vs is None else vs[2]
        kv_len = None if ks is None else ks[1]
    h = qs[2] // num_heads if len(qs) == 3 and isinstance(qs[2], int) else (qs[4] if len(qs) == 5 else None)
    hv = dv // num_heads if isinstance(dv, int) else None
    tot = kv_len
    if ps is not None:
        tot = ps[2] + kv_len if isinstance(ps[2], int) and isinstance(kv_len, int) else None
    outs = [tt(dt, (b, s, dv)), tt(dt, (b, num_heads, tot, h)), tt(dt, (b, num_heads, tot, hv)),
            tt(np.float32 if dt is None else dt, (b, num_heads, s, tot))]
    return outs[: max(1, ctx.num_outputs or 1)]


@op("MultiHeadAttention", domain=MS, infer=_mha_infer)
def multi_head_attention(ctx, query, key=None, value=None, bias=None, key_padding_mask=None, attention_bias=None,
                         past_key=None, past_value=None, past_sequence_length=None, cache_indirection=None, *,
                         num_heads, unidirectional=0, scale=0.0, mask_filter_value=_NEG):
    """Self/cross multi-head attention on projected Q, K, V (separate, packed KV or packed QKV)."""
    if cache_indirection is not None:
        raise NotImplementedError("MultiHeadAttention: cache_indirection (beam search) is not supported")
    q, k, v, bnsh = _mha_qkv(query, key, value, bias, num_heads)
    b, _, s, h = q.shape
    p = 0
    if past_key is not None and not bnsh:
        p = past_key.shape[2]
        k = np.concatenate([wide(past_key).astype(np.float32, copy=False), k], axis=2)
        v = np.concatenate([wide(past_value).astype(np.float32, copy=False), v], axis=2)
    t = k.shape[2]
    add = None
    if key_padding_mask is not None:
        add = _key_mask(key_padding_mask, b, s, t, p, mask_filter_value)
    block = None
    if unidirectional:
        # onnxruntime's CPU MHA: key j > past + i is blocked (lowest float) for rows i < S-1; the last
        # query row is never blocked (matters only for cross attention, where T != past + S)
        i = np.arange(s)[:, None]
        block = (np.arange(t)[None, :] > p + i) & (i < s - 1)
    sc = scale if scale else 1.0 / math.sqrt(h)
    ab = None if attention_bias is None else wide(attention_bias).astype(np.float32, copy=False)
    out, qk = _attend(q, k, v, sc, add, ab, want_qk=ctx.num_outputs > 3, block=block)
    dt = query.dtype
    outs = [like(_merge(out), dt), like(k, dt), like(v, dt)]
    if ctx.num_outputs > 3:
        outs.append(like(qk, dt))
    return outs


# ------------------------------------------------------------------ rotary embeddings

def _rope(x, cos, sin, interleaved):
    """Rotate the leading 2*cos.shape[-1] channels of x (..., H); cos/sin broadcast to (..., R/2)."""
    half = cos.shape[-1]
    rot = x[..., : 2 * half]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    else:
        x1, x2 = rot[..., :half], rot[..., half:]
    y1 = x1 * cos - x2 * sin
    y2 = x2 * cos + x1 * sin
    y = np.stack([y1, y2], axis=-1).reshape(rot.shape) if interleaved else np.concatenate([y1, y2], axis=-1)
    if rot.shape[-1] == x.shape[-1]:
        return y
    return np.concatenate([y, x[..., 2 * half:]], axis=-1)


def _positions(position_ids, b, s):
    pid = np.asarray(position_ids).astype(np.int64)
    if pid.ndim <= 1 or pid.size == 1:  # a start offset
        return np.broadcast_to(pid.reshape(-1)[0] + np.arange(s, dtype=np.int64), (b, s))
    return np.broadcast_to(pid, (b, s))


@op("RotaryEmbedding", domain=MS, infer=lambda ctx, x, *_, **__: [tt(dtype_of(x), shape_of(x))])
def rotary_embedding_ms(x, position_ids, cos_cache, sin_cache, *, interleaved=0, num_heads=0,
                        rotary_embedding_dim=0, is_packed_batching=0, scale=1.0):
    """RoPE on (B, S, N*H) or (B, N, S, H) with cos/sin caches (max_pos, R/2) gathered at position_ids."""
    if is_packed_batching:
        raise NotImplementedError("RotaryEmbedding: is_packed_batching is not supported")
    w = wide(x)
    half = cos_cache.shape[-1]
    if w.ndim == 4:
        b, n, s, h = w.shape
        xs = w
    else:
        b, s, d = w.shape
        h = d // num_heads if num_heads else 2 * half
        n = d // h
        xs = w.reshape(b, s, n, h).transpose(0, 2, 1, 3)
    rot = rotary_embedding_dim or 2 * half
    pos = _positions(position_ids, b, s)
    if pos.size and (pos.min() < 0 or pos.max() >= cos_cache.shape[0]):
        raise IndexError("RotaryEmbedding: position id out of the cos/sin cache range")
    cos = wide(cos_cache)[pos][:, None, :, : rot // 2]  # (B, 1, S, R/2)
    sin = wide(sin_cache)[pos][:, None, :, : rot // 2]
    y = _rope(xs, cos, sin, interleaved)
    if w.ndim == 3:
        y = y.transpose(0, 2, 1, 3).reshape(b, s, -1)
    return like(y, x.dtype)


# ------------------------------------------------------------------ GroupQueryAttention

def _gqa_infer(ctx, query, key=None, value=None, past_key=None, *_, num_heads, kv_num_heads, **__):
    qs, ks = shape_of(query), shape_of(key)
    dt = dtype_of(query)
    if qs is None:
        return [tt(dt, None)] * max(1, ctx.num_outputs or 1)
    b, s = qs[0], qs[1]
    if ks is None and isinstance(qs[2], int):
        h = qs[2] // (num_heads + 2 * kv_num_heads)
    else:
        h = qs[2] // num_heads if isinstance(qs[2], int) else None
    out = (b, s, None if h is None else h * num_heads)
    present = (b, kv_num_heads, None, h)  # max(past buffer, total_sequence_length): known only at run time
    outs = [tt(dt, out), tt(dtype_of(past_key) or dt, present), tt(dtype_of(past_key) or dt, present)]
    return outs[: max(1, ctx.num_outputs or 1)]


@op("GroupQueryAttention", domain=MS, infer=_gqa_infer)
def group_query_attention(ctx, query, key, value, past_key, past_value, seqlens_k, total_sequence_length,
                          cos_cache=None, sin_cache=None, position_ids=None, attention_bias=None, head_sink=None,
                          k_scale=None, v_scale=None, q_norm_weight=None, k_norm_weight=None, query_seqlens=None, *,
                          num_heads, kv_num_heads, scale=0.0, softcap=0.0, local_window_size=-1, do_rotary=0,
                          rotary_interleaved=0, causal=1, smooth_softmax=-1, qk_output=0, sliding_window_cache=0,
                          kv_cache_bit_width=0, k_quant_type="NONE", v_quant_type="NONE", qk_norm_epsilon=1e-6,
                          q_norm_epsilon=0.0, k_norm_epsilon=0.0):
    """Grouped-query attention with a BNSH float KV cache (onnxruntime CPU semantics).

    Batch entry b holds seqlens_k[b] + 1 tokens after this step; its S new rows go at positions
    [total_b - S, total_b) (a first prompt of a right-padded batch starts at 0)."""
    unsupported = {"k_scale/v_scale (quantized cache)": k_scale is not None or v_scale is not None,
                   "q/k_norm_weight": q_norm_weight is not None or k_norm_weight is not None,
                   "query_seqlens": query_seqlens is not None, "sliding_window_cache": bool(sliding_window_cache),
                   "quantized cache types": k_quant_type != "NONE" or v_quant_type != "NONE",
                   "qk_output": bool(qk_output), "head_sink/smooth_softmax": head_sink is not None
                   or smooth_softmax == 1, "causal=0": not causal}
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise NotImplementedError(f"GroupQueryAttention: {', '.join(bad)} not supported")
    qw = wide(query).astype(np.float32, copy=False)
    b, s, _ = qw.shape
    if key is None:  # packed QKV
        h = qw.shape[2] // (num_heads + 2 * kv_num_heads)
        qd, kd = num_heads * h, kv_num_heads * h
        q, k, v = qw[..., :qd], qw[..., qd:qd + kd], qw[..., qd + kd:]
    else:
        h = qw.shape[2] // num_heads
        q, k, v = qw, wide(key).astype(np.float32), wide(value).astype(np.float32)
    q, k, v = _heads(q, num_heads), _heads(k, kv_num_heads), _heads(v, kv_num_heads)
    total = np.asarray(seqlens_k).astype(np.int64).reshape(b) + 1
    tsl = int(np.asarray(total_sequence_length).reshape(-1)[0])
    pbuf = 0 if past_key is None else past_key.shape[2]
    first_prompt = pbuf == 0 and s == tsl
    start = np.zeros(b, np.int64) if first_prompt else total - s  # absolute position of query row 0
    if do_rotary:
        if position_ids is not None:
            pos = np.broadcast_to(np.asarray(position_ids).astype(np.int64), (b, s))
        else:
            pos = start[:, None] + np.arange(s)[None, :]
        half = cos_cache.shape[-1]
        cos = wide(cos_cache)[pos][:, None, :, :half]
        sin = wide(sin_cache)[pos][:, None, :, :half]
        q = _rope(q, cos, sin, rotary_interleaved)
        k = _rope(k, cos, sin, rotary_interleaved)
    cap = max(pbuf, tsl)
    pk = np.zeros((b, kv_num_heads, cap, h), np.float32)
    pv = np.zeros_like(pk)
    if past_key is not None:  # only each entry's past rows [0, start_b) carry over; the rest stays 0
        old = (np.arange(pbuf)[None, :] < start[:, None])[:, None, :, None]
        pk[:, :, :pbuf] = np.where(old, wide(past_key), 0)
        pv[:, :, :pbuf] = np.where(old, wide(past_value), 0)
    rows = start[:, None] + np.arange(s)[None, :]  # (B, S) cache rows of the new tokens
    bi = np.arange(b)[:, None]
    pk[bi, :, rows] = k.transpose(0, 2, 1, 3)
    pv[bi, :, rows] = v.transpose(0, 2, 1, 3)
    g = num_heads // kv_num_heads
    j = np.arange(cap)[None, None, :]
    qpos = rows[:, :, None]
    keep = (j <= qpos) & (j < total[:, None, None])
    if local_window_size is not None and local_window_size > 0:
        keep &= j > qpos - local_window_size
    # query head n uses kv head n // g: group the g query heads of a kv head as extra rows
    qg = np.ascontiguousarray(q).reshape(b, kv_num_heads, g * s, h)
    scores = np.matmul(qg, np.swapaxes(pk, -1, -2)).reshape(b, num_heads, s, cap)
    scores *= np.float32(scale if scale else 1.0 / math.sqrt(h))
    if softcap and softcap > 0:
        scores = np.float32(softcap) * np.tanh(scores / np.float32(softcap))
    if attention_bias is not None:
        scores = scores + wide(attention_bias)[..., :cap]
    # lowest float, not -inf: padding rows of a ragged prompt may see no key (their output is unspecified)
    scores = np.where(keep[:, None], scores, np.finfo(np.float32).min)
    probs = _softmax(scores)
    out = np.matmul(probs.reshape(b, kv_num_heads, g * s, cap), pv).reshape(b, num_heads, s, h)
    dt = query.dtype
    return like(_merge(out), dt), like(pk, dt), like(pv, dt)
