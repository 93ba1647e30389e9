"""Attention (23/24/25), RotaryEmbedding, LinearAttention, CausalConvWithState, FlexAttention.

Oracles: torch scaled_dot_product_attention in float64 (masks built explicitly), torch conv1d,
and plain float64 loops for RoPE and the linear-attention recurrence.
"""

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jitort.ops.registry import KernelContext, call, lookup, registered_ops

registered_ops()

BF16 = np.dtype(ml_dtypes.bfloat16)
# dtype -> (rtol, atol) against a float64 oracle
TOL = {
    np.dtype(np.float64): (1e-10, 1e-10),
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float16): (3e-3, 3e-3),
    BF16: (2e-2, 2e-2),
}
RNG = np.random.default_rng(4)


def run(name, opset, inputs, num_outputs=1, domain="", **attrs):
    ctx = KernelContext(num_outputs=num_outputs, opset=opset)
    return call(lookup(name, domain, opset), list(inputs), attrs, ctx)


def check(got, want, dtype):
    assert got.dtype == np.dtype(dtype), got.dtype
    assert got.shape == want.shape, (got.shape, want.shape)
    rtol, atol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol)


def t64(x):
    return torch.from_numpy(np.asarray(x).astype(np.float64))


def sdpa_ref(q, k, v, bias=None, scale=None, softcap=0.0):
    """float64 oracle on 4-D numpy inputs; ``bias`` is additive (may hold -inf). Dead rows -> 0."""
    q, k, v = t64(q), t64(k), t64(v)
    if bias is not None:
        bias = np.atleast_2d(bias)
    hq, hkv = q.shape[1], k.shape[1]
    if softcap:  # SDPA has no softcap: do it by hand
        k = k.repeat_interleave(hq // hkv, dim=1)
        v = v.repeat_interleave(hq // hkv, dim=1)
        s = q @ k.transpose(-1, -2) * (scale if scale is not None else q.shape[-1] ** -0.5)
        s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + t64(bias)
        p = torch.softmax(s, dim=-1)
        out = p @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else t64(bias),
                                             scale=scale, enable_gqa=hq != hkv)
    out = out.numpy()
    if bias is not None:
        dead = np.isneginf(np.broadcast_to(bias, bias.shape).max(-1, keepdims=True))
        out = np.where(dead, 0.0, out)
    return out


def qkv(b, hq, hkv, sq, sk, d, dv, dtype):
    q = RNG.standard_normal((b, hq, sq, d)).astype(dtype)
    k = RNG.standard_normal((b, hkv, sk, d)).astype(dtype)
    v = RNG.standard_normal((b, hkv, sk, dv)).astype(dtype)
    return q, k, v


def causal_bias(sq, sk, offset):
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None]
    return np.where(j <= i + offset, 0.0, -np.inf)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, BF16])
@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("sq,sk", [(5, 5), (1, 7), (6, 3)])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_4d(dtype, hq, hkv, sq, sk, causal):
    q, k, v = qkv(2, hq, hkv, sq, sk, 8, 6, dtype)
    (y,) = run("Attention", 23, [q, k, v], is_causal=causal)
    bias = causal_bias(sq, sk, 0) if causal else None
    check(y, sdpa_ref(q, k, v, bias), dtype)


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2)])
def test_attention_3d(hq, hkv):
    b, sq, sk, d, dv = 2, 5, 7, 4, 3
    q4, k4, v4 = qkv(b, hq, hkv, sq, sk, d, dv, np.float32)
    q3 = q4.transpose(0, 2, 1, 3).reshape(b, sq, hq * d)
    k3 = k4.transpose(0, 2, 1, 3).reshape(b, sk, hkv * d)
    v3 = v4.transpose(0, 2, 1, 3).reshape(b, sk, hkv * dv)
    y, pk, pv = run("Attention", 23, [q3, k3, v3], num_outputs=3, q_num_heads=hq, kv_num_heads=hkv)
    want = sdpa_ref(q4, k4, v4).transpose(0, 2, 1, 3).reshape(b, sq, hq * dv)
    check(y, want, np.float32)
    np.testing.assert_array_equal(pk, k4)
    np.testing.assert_array_equal(pv, v4)


@pytest.mark.parametrize("mask_shape", [(7,), (5, 7), (2, 1, 1, 7), (1, 4, 5, 7), (4, 5, 7), (2, 4, 5, 4)])
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_masks(mask_shape, kind, causal):
    q, k, v = qkv(2, 4, 2, 5, 7, 8, 8, np.float32)
    if kind == "bool":
        m = RNG.random(mask_shape) > 0.3
        bias = np.where(m, 0.0, -np.inf)
    else:
        m = RNG.standard_normal(mask_shape).astype(np.float32)
        bias = m.astype(np.float64)
    if mask_shape[-1] < 7:  # a short last dim is padded with "masked"
        pad = [(0, 0)] * (len(mask_shape) - 1) + [(0, 7 - mask_shape[-1])]
        bias = np.pad(bias, pad, constant_values=-np.inf)
    if causal:
        bias = bias + causal_bias(5, 7, 0)
    (y,) = run("Attention", 23, [q, k, v, m], is_causal=causal, scale=0.3)
    check(y, sdpa_ref(q, k, v, bias, scale=0.3), np.float32)


def test_fully_masked_rows_are_zero():
    q, k, v = qkv(1, 2, 2, 3, 4, 4, 4, np.float32)
    m = np.ones((3, 4), bool)
    m[1] = False
    y, _, _, qk = run("Attention", 23, [q, k, v, m], num_outputs=4, qk_matmul_output_mode=3)
    assert np.isfinite(y).all() and (y[:, :, 1] == 0).all() and (qk[:, :, 1] == 0).all()
    np.testing.assert_allclose(qk[:, :, [0, 2]].sum(-1), 1, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_past_present(dtype, causal):
    past = 4
    q, k, v = qkv(2, 4, 2, 3, 3, 8, 5, dtype)
    pk = RNG.standard_normal((2, 2, past, 8)).astype(dtype)
    pv = RNG.standard_normal((2, 2, past, 5)).astype(dtype)
    y, ck, cv = run("Attention", 23, [q, k, v, None, pk, pv], num_outputs=3, is_causal=causal)
    kk, vv = np.concatenate([pk, k], 2), np.concatenate([pv, v], 2)
    np.testing.assert_array_equal(ck, kk)
    np.testing.assert_array_equal(cv, vv)
    bias = causal_bias(3, 7, past) if causal else None  # bottom-right aligned
    check(y, sdpa_ref(q, kk, vv, bias), dtype)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_qk_matmul_output_modes(mode):
    q, k, v = qkv(2, 2, 2, 3, 5, 4, 4, np.float32)
    m = RNG.standard_normal((3, 5)).astype(np.float32)
    cap, sc = 2.0, 0.4
    y, _, _, qk = run("Attention", 23, [q, k, v, m], num_outputs=4, qk_matmul_output_mode=mode,
                      softcap=cap, scale=sc)
    raw = (t64(q) @ t64(k).transpose(-1, -2)).numpy() * sc
    capped = cap * np.tanh(raw / cap)
    want = {0: raw, 1: capped, 2: capped + m, 3: torch.softmax(t64(capped + m), -1).numpy()}[mode]
    check(qk, want, np.float32)
    check(y, sdpa_ref(q, k, v, m.astype(np.float64), scale=sc, softcap=cap), np.float32)


@pytest.mark.parametrize("causal", [0, 1])
def test_nonpad_kv_seqlen(causal):
    q, k, v = qkv(3, 2, 2, 2, 6, 4, 4, np.float32)
    lens = np.array([6, 3, 1], np.int64)
    (y,) = run("Attention", 24, [q, k, v, None, None, None, lens], is_causal=causal)
    bias = np.where(np.arange(6)[None, :] < lens[:, None], 0.0, -np.inf)[:, None, None, :]
    if causal:
        bias = bias + np.stack([causal_bias(2, 6, n - 2) for n in lens])[:, None]
    check(y, sdpa_ref(q, k, v, bias), np.float32)


@pytest.mark.parametrize("left,right,causal", [(2, 0, 0), (2, 1, 0), (-1, 1, 0), (1, -1, 1), (0, 0, 0)])
def test_sliding_window_v25(left, right, causal):
    q, k, v = qkv(2, 2, 1, 4, 6, 4, 4, np.float32)
    (y,) = run("Attention", 25, [q, k, v], is_causal=causal, left_window_size=left, right_window_size=right)
    i, j = np.arange(4)[:, None], np.arange(6)[None]
    ok = np.ones((4, 6), bool)
    if left >= 0:
        ok &= i - j <= left
    if right >= 0:
        ok &= j - i <= right
    if causal:
        ok &= j <= i
    check(y, sdpa_ref(q, k, v, np.where(ok, 0.0, -np.inf)), np.float32)


def test_softmax_precision_double():
    q, k, v = qkv(1, 2, 2, 3, 4, 4, 4, np.float32)
    (y,) = run("Attention", 23, [q, k, v], softmax_precision=11)
    check(y, sdpa_ref(q, k, v), np.float32)


def rope_ref(x, cos, sin, interleaved, rdim):
    """float64 RoPE via complex rotation of (x1, x2) pairs; x is [B, H, S, D]."""
    x = x.astype(np.float64)
    rot, rest = x[..., :rdim], x[..., rdim:]
    if interleaved:
        z = rot[..., 0::2] + 1j * rot[..., 1::2]
    else:
        z = rot[..., : rdim // 2] + 1j * rot[..., rdim // 2:]
    z = z * (cos + 1j * sin)[:, None]
    if interleaved:
        out = np.stack([z.real, z.imag], -1).reshape(rot.shape)
    else:
        out = np.concatenate([z.real, z.imag], -1)
    return np.concatenate([out, rest], -1)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rdim", [0, 4])
@pytest.mark.parametrize("three_d", [False, True])
@pytest.mark.parametrize("with_pos", [True, False])
def test_rotary_embedding(dtype, interleaved, rdim, three_d, with_pos):
    b, h, s, d = 2, 3, 5, 8
    r = rdim or d
    x = RNG.standard_normal((b, h, s, d)).astype(dtype)
    theta = RNG.uniform(0, 6, size=(12, r // 2))
    pos = RNG.integers(0, 12, size=(b, s)).astype(np.int64)
    if with_pos:
        cos_c, sin_c = np.cos(theta).astype(dtype), np.sin(theta).astype(dtype)
        cos_g, sin_g = cos_c.astype(np.float64)[pos], sin_c.astype(np.float64)[pos]
        extra = [pos]
    else:
        cos_c, sin_c = np.cos(theta[pos]).astype(dtype), np.sin(theta[pos]).astype(dtype)
        cos_g, sin_g = cos_c.astype(np.float64), sin_c.astype(np.float64)
        extra = []
    want = rope_ref(x, cos_g, sin_g, interleaved, r)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rdim}
    if three_d:
        x3 = x.transpose(0, 2, 1, 3).reshape(b, s, h * d)
        (y,) = run("RotaryEmbedding", 23, [x3, cos_c, sin_c] + extra, num_heads=h, **attrs)
        check(y, want.transpose(0, 2, 1, 3).reshape(b, s, h * d), dtype)
    else:
        (y,) = run("RotaryEmbedding", 23, [x, cos_c, sin_c] + extra, **attrs)
        check(y, want, dtype)


def linear_attention_ref(q, k, v, state, decay, beta, hq, hkv, rule, scale):
    """Token-by-token float64 loops over batch and heads (deliberately naive)."""
    b, t, _ = q.shape
    dk = q.shape[-1] // hq
    dv = v.shape[-1] // hkv
    q = q.reshape(b, t, hq, dk).astype(np.float64)
    k = k.reshape(b, t, hkv, dk).astype(np.float64)
    v = v.reshape(b, t, hkv, dv).astype(np.float64)
    st = np.zeros((b, hkv, dk, dv)) if state is None else state.astype(np.float64).copy()
    out = np.zeros((b, t, hq, dv))
    for bi in range(b):
        for ti in range(t):
            for h in range(hkv):
                s = st[bi, h]
                if rule in ("gated", "gated_delta"):
                    g = decay[bi, ti].reshape(hkv, -1)[h].astype(np.float64)
                    s = np.exp(g)[:, None] * s
                vt = v[bi, ti, h]
                if rule in ("delta", "gated_delta"):
                    bt = beta[bi, ti].reshape(-1)
                    bt = float(bt[h] if bt.size == hkv else bt[0])
                    vt = bt * (vt - s.T @ k[bi, ti, h])
                st[bi, h] = s + np.outer(k[bi, ti, h], vt)
            for hh in range(hq):
                out[bi, ti, hh] = scale * q[bi, ti, hh] @ st[bi, hh // (hq // hkv)]
    return out.reshape(b, t, hq * dv), st


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2)])
@pytest.mark.parametrize("per_dim_decay", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_linear_attention(rule, hq, hkv, per_dim_decay, with_state):
    b, t, dk, dv = 2, 5, 4, 3
    q = RNG.standard_normal((b, t, hq * dk)).astype(np.float32)
    k = RNG.standard_normal((b, t, hkv * dk)).astype(np.float32) * 0.5
    v = RNG.standard_normal((b, t, hkv * dv)).astype(np.float32)
    state = RNG.standard_normal((b, hkv, dk, dv)).astype(np.float32) if with_state else None
    decay = beta = None
    if rule in ("gated", "gated_delta"):
        decay = -RNG.uniform(0, 1, size=(b, t, hkv * dk if per_dim_decay else hkv)).astype(np.float32)
    if rule in ("delta", "gated_delta"):
        beta = RNG.uniform(0, 1, size=(b, t, hkv)).astype(np.float32)
    y, st = run("LinearAttention", 27, [q, k, v, state, decay, beta], num_outputs=2,
                q_num_heads=hq, kv_num_heads=hkv, update_rule=rule)
    want_y, want_st = linear_attention_ref(q, k, v, state, decay, beta, hq, hkv, rule, dk ** -0.5)
    check(y, want_y, np.float32)
    check(st, want_st, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("ksize,length", [(4, 9), (3, 1), (1, 5), (5, 2)])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("activation", ["none", "silu"])
def test_causal_conv_with_state(dtype, ksize, length, with_state, activation):
    b, c = 2, 3
    x = RNG.standard_normal((b, c, length)).astype(dtype)
    w = RNG.standard_normal((c, 1, ksize)).astype(dtype)
    bias = RNG.standard_normal((c,)).astype(dtype)
    past = RNG.standard_normal((b, c, ksize - 1)).astype(dtype) if with_state else None
    y, present = run("CausalConvWithState", 27, [x, w, bias, past], num_outputs=2, activation=activation)
    full = np.concatenate([np.zeros((b, c, ksize - 1)) if past is None else past.astype(np.float64),
                           x.astype(np.float64)], 2)
    want = F.conv1d(t64(full), t64(w), t64(bias), groups=c)
    if activation == "silu":
        want = F.silu(want)
    check(y, want.numpy(), dtype)
    np.testing.assert_array_equal(present, full[:, :, full.shape[2] - (ksize - 1):].astype(dtype))


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 1)])
def test_flex_attention_plain(hq, hkv):
    q, k, v = qkv(2, hq, hkv, 5, 6, 8, 3, np.float32)
    (y,) = run("FlexAttention", 1, [q, k, v], domain="ai.onnx.preview", scale=0.2)
    check(y, sdpa_ref(q, k, v, scale=0.2), np.float32)


def test_flex_attention_score_mod_via_run_graph():
    q, k, v = qkv(1, 2, 2, 3, 4, 4, 4, np.float32)
    seen = {}

    def run_graph(graph, inputs, outer):  # stands in for the session's subgraph runner
        seen["dtype"] = inputs[0].dtype
        return [inputs[0] * 0.5]

    ctx = KernelContext(opset=1, run_graph=run_graph)
    (y,) = call(lookup("FlexAttention", "ai.onnx.preview", 1), [q, k, v], {"score_mod": "g"}, ctx)
    assert seen["dtype"] == np.float32
    check(y, sdpa_ref(q, k, v, scale=0.5 * 4 ** -0.5), np.float32)
