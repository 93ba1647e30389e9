"""com.microsoft contrib kernels (jitort/ops/contrib*.py) against onnxruntime's CPU kernels.

Each case builds a one-node model, runs it in onnxruntime (the oracle) and through
jitort.ops.registry, and also checks the op's infer function against what onnxruntime produced.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

ort = pytest.importorskip("onnxruntime")

from jitort.dtypes import onnx_code  # noqa: E402
from jitort.ops.registry import InferContext, KernelContext, call, lookup  # noqa: E402
from jitort.ir.types import TensorType  # noqa: E402
import jitort.ops.load_all  # noqa: E402,F401  (lookup does not load the families itself)

# (rtol, atol) per output dtype; integer outputs compare with ATOL_INT (quantized rounding: 1 step)
TOL = {
    np.dtype(np.float64): (1e-9, 1e-9),
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.float16): (1e-2, 1e-2),
}
ATOL_INT = 1

MS = "com.microsoft"
F32, F16 = np.float32, np.float16


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(r, *shape, dtype=F32, scale=1.0):
    return (r.standard_normal(shape) * scale).astype(dtype)


def ort_run(op_type, inputs, attrs=None, nout=1, domain=MS, opset=17, out_mask=None, out_types=None):
    """Run one node in onnxruntime; inputs may contain None (omitted optional inputs)."""
    names, vis, feeds = [], [], {}
    for i, a in enumerate(inputs):
        if a is None:
            names.append("")
            continue
        a = np.asarray(a)
        names.append(f"i{i}")
        vis.append(helper.make_tensor_value_info(f"i{i}", onnx_code(a.dtype), a.shape))
        feeds[f"i{i}"] = a
    while names and names[-1] == "":
        names.pop()
    outs = [f"o{i}" if out_mask is None or out_mask[i] else "" for i in range(nout)]
    node = helper.make_node(op_type, names, outs, domain=domain, **(attrs or {}))
    out_types = out_types or {}
    ovis = [helper.make_tensor_value_info(n, onnx_code(out_types[i]), None) if i in out_types
            else onnx.ValueInfoProto(name=n) for i, n in enumerate(outs) if n]
    graph = helper.make_graph([node], "g", vis, ovis)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    model.ir_version = 9
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    res = sess.run([n for n in outs if n], feeds)
    it = iter(res)
    return [next(it) if n else None for n in outs]


def ours(op_type, inputs, attrs=None, nout=1, domain=MS, opset=17):
    version = 1 if domain == MS else opset
    entry = lookup(op_type, domain, version)
    return call(entry, list(inputs), dict(attrs or {}), KernelContext(num_outputs=nout, opset=version))


def infer(op_type, inputs, attrs=None, nout=1, domain=MS, opset=17):
    version = 1 if domain == MS else opset
    entry = lookup(op_type, domain, version)
    assert entry.infer is not None, f"{op_type} has no infer function"
    types = [None if a is None else TensorType(np.asarray(a).dtype, np.asarray(a).shape) for a in inputs]
    ctx = InferContext(num_outputs=nout, opset=version, consts=[None] * len(inputs))
    return entry.infer(ctx, *types, **dict(attrs or {}))


def assert_close(got, exp, what="", tol=None):
    assert isinstance(got, np.ndarray), f"{what}: got {type(got).__name__}"
    assert got.dtype == exp.dtype, f"{what}: dtype {got.dtype} != {exp.dtype}"
    assert got.shape == exp.shape, f"{what}: shape {got.shape} != {exp.shape}"
    if exp.dtype.kind in "iub":
        diff = np.abs(got.astype(np.int64) - exp.astype(np.int64))
        assert diff.max(initial=0) <= (0 if exp.dtype.kind == "b" else ATOL_INT), f"{what}: max diff {diff.max()}"
        return
    rtol, atol = tol or TOL[exp.dtype]
    np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64), rtol=rtol, atol=atol, err_msg=what)


def check(op_type, inputs, attrs=None, nout=1, domain=MS, opset=17, out_mask=None, skip_outputs=(), out_types=None,
          tol=None):
    """Compare every requested output and the inferred types with onnxruntime."""
    exp = ort_run(op_type, inputs, attrs, nout, domain, opset, out_mask, out_types)
    got = ours(op_type, inputs, attrs, nout, domain, opset)
    types = infer(op_type, inputs, attrs, nout, domain, opset)
    for i, e in enumerate(exp):
        if e is None or i in skip_outputs:
            continue
        assert i < len(got), f"{op_type}: output {i} missing"
        assert_close(got[i], e, f"{op_type} output {i}", tol)
        if i < len(types) and types[i] is not None:
            t = types[i]
            assert t.dtype is None or np.dtype(t.dtype) == e.dtype, f"{op_type} infer dtype {i}: {t.dtype} vs {e.dtype}"
            if t.shape is not None:
                assert len(t.shape) == e.ndim, f"{op_type} infer rank {i}: {t.shape} vs {e.shape}"
                for d, n in zip(t.shape, e.shape):
                    assert d is None or isinstance(d, str) or d == n, f"{op_type} infer shape {i}: {t.shape} vs {e.shape}"
    return got, exp


# ------------------------------------------------------------------ contrib.py

SHAPES = [(1, 1, 1), (2, 3, 7), (1, 5, 16), (3, 0, 4)]


@pytest.mark.parametrize("dtype", [F32, F16])
@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_family(dtype, shape):
    r = rng(1)
    x = randn(r, *shape, dtype=dtype, scale=3)
    bias = randn(r, shape[-1], dtype=dtype)
    check("Gelu", [x])
    check("FastGelu", [x])
    check("FastGelu", [x, bias])
    check("BiasGelu", [x, bias])
    check("QuickGelu", [x])
    check("QuickGelu", [x], {"alpha": 1.3})


def test_gelu_float64_and_extremes():
    x = np.array([-1e4, -30.0, -3, -0.5, 0.0, 0.5, 3, 30, 1e4], np.float64)
    check("FastGelu", [x])
    check("QuickGelu", [x])
    xf = x.astype(F32)
    check("Gelu", [xf])
    check("QuickGelu", [xf], {"alpha": -2.0})


@pytest.mark.parametrize("shape", [(2, 5, 6), (1, 1, 3), (1, 9, 32)])
def test_bias_add(shape):
    # onnxruntime has BiasAdd for CUDA only: NumPy oracle in float64
    r = rng(2)
    x, b, s = randn(r, *shape), randn(r, shape[-1]), randn(r, *shape)
    got = ours("BiasAdd", [x, b, s])[0]
    assert_close(got, (x.astype(np.float64) + b + s).astype(F32), "BiasAdd")
    assert infer("BiasAdd", [x, b, s])[0] == TensorType(np.dtype(F32), shape)


@pytest.mark.parametrize("dtype", [F32, F16])
@pytest.mark.parametrize("shape", [(2, 3, 8), (1, 1, 5), (3, 7, 33), (4, 16)])
def test_skip_layer_norm(dtype, shape):
    r = rng(3)
    x, s = randn(r, *shape, dtype=dtype), randn(r, *shape, dtype=dtype)
    g, b, bias = (randn(r, shape[-1], dtype=dtype) for _ in range(3))
    check("SkipLayerNormalization", [x, s, g], nout=4)
    check("SkipLayerNormalization", [x, s, g, b, bias], {"epsilon": 1e-5}, nout=4)
    check("SkipLayerNormalization", [x, s, g, None, bias], nout=4, out_mask=[1, 0, 1, 1])
    check("SkipSimplifiedLayerNormalization", [x, s, g], nout=4)
    check("SkipSimplifiedLayerNormalization", [x, s, g, bias], {"epsilon": 1e-6}, nout=4)
    if len(shape) == 3:  # skip broadcast over the batch
        check("SkipLayerNormalization", [x, s[0], g, b], nout=4)
        check("SkipLayerNormalization", [x, s[:1], g, b], nout=1)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("xdt,sdt", [(F32, F32), (F16, F16), (F16, F32), (np.float64, np.float64)])
def test_default_domain_norms(opset, xdt, sdt):
    r = rng(4)
    x = randn(r, 2, 3, 9, dtype=xdt)
    g, b = randn(r, 9, dtype=sdt), randn(r, 9, dtype=sdt)
    check("SimplifiedLayerNormalization", [x, g], nout=2, domain="", opset=opset)
    check("SimplifiedLayerNormalization", [x, randn(r, 3, 9, dtype=sdt)], {"axis": 1, "epsilon": 1e-3},
          nout=2, domain="", opset=opset)
    if opset < 17:  # onnxruntime's own LayerNormalization-1 (ONNX's is opset 17, another family)
        check("LayerNormalization", [x, g, b], nout=3, domain="", opset=opset)
        check("LayerNormalization", [x, g], {"axis": -2}, nout=3, domain="", opset=opset) if xdt == sdt else None


@pytest.mark.parametrize("dtype", [F32, F16])
@pytest.mark.parametrize("b,s", [(1, 1), (2, 5), (3, 7)])
def test_embed_layer_norm(dtype, b, s):
    r = rng(5)
    h, v, p = 8, 11, 9
    ids = r.integers(0, v, (b, s)).astype(np.int32)
    seg = r.integers(0, 2, (b, s)).astype(np.int32)
    we, pe, se = randn(r, v, h, dtype=dtype), randn(r, p, h, dtype=dtype), randn(r, 2, h, dtype=dtype)
    g, bt = randn(r, h, dtype=dtype), randn(r, h, dtype=dtype)
    mask = r.integers(-1, 3, (b, s)).astype(np.int32)
    check("EmbedLayerNormalization", [ids, seg, we, pe, se, g, bt, mask], nout=3)
    check("EmbedLayerNormalization", [ids, None, we, pe, None, g, bt], {"epsilon": 1e-5}, nout=3)
    pid = r.integers(0, p, (1, s)).astype(np.int32)
    check("EmbedLayerNormalization", [ids, seg, we, pe, se, g, bt, None, pid], nout=3)
    pid = r.integers(0, p, (b, s)).astype(np.int32)
    check("EmbedLayerNormalization", [ids, seg, we, pe, se, g, bt, mask, pid], nout=2)


def test_embed_layer_norm_bad_ids():
    r = rng(5)
    ids = np.array([[0, 12]], np.int32)
    with pytest.raises(Exception):
        ours("EmbedLayerNormalization", [ids, None, randn(r, 5, 4), randn(r, 4, 4), None, randn(r, 4), randn(r, 4)])


FM_CASES = [
    ((3, 4), (4, 5), {}),
    ((2, 3, 4), (2, 5, 4), {"transB": 1, "alpha": 0.5}),
    ((2, 4, 3), (4, 5), {"transA": 1}),
    ((2, 3, 4, 6), (3, 6, 5), {}),
    ((5, 3, 4), (3, 4, 7), {"transBatchA": 1}),
    ((2, 3, 4), (4, 2, 7), {"transBatchB": 1}),
    ((5, 3, 4), (4, 3, 7), {"transBatchA": 1, "transBatchB": 1, "alpha": 2.0}),
    ((4, 3, 5), (7, 3, 4), {"transBatchA": 1, "transA": 1, "transBatchB": 1, "transB": 1}),
    ((4, 2, 3, 5), (2, 3, 5, 6), {"transBatchA": 1}),
    ((4, 2, 3, 5), (2, 1, 5, 6), {"transBatchA": 1}),
    ((1, 3, 4), (1, 0, 4), {"transB": 1}),
]


@pytest.mark.parametrize("dtype", [F32, F16, np.float64])
@pytest.mark.parametrize("sa,sb,attrs", FM_CASES)
def test_fused_matmul(dtype, sa, sb, attrs):
    r = rng(6)
    a, b = randn(r, *sa, dtype=dtype), randn(r, *sb, dtype=dtype)
    check("FusedMatMul", [a, b], attrs)
    if dtype != np.float64 and not any(k.startswith("transBatch") for k in attrs):
        check("TransposeMatMul", [a, b], attrs)


@pytest.mark.parametrize("dtype", [F32, F16, np.float64])
def test_inverse(dtype):
    r = rng(7)
    x = (randn(r, 2, 3, 4, 4, dtype=np.float64) + 4 * np.eye(4)).astype(dtype)
    check("Inverse", [x])
    check("Inverse", [x[0, 0]])


@pytest.mark.parametrize("dtype", [F32, F16, np.float64, np.int64])
def test_trilu(dtype):
    r = rng(8)
    x = (randn(r, 2, 4, 5) * 10).astype(dtype)
    for upper in (0, 1):
        for k in (None, -1, 2, 7):
            ins = [x] if k is None else [x, np.array(k, np.int64)]
            check("Trilu", ins, {"upper": upper})


def test_bias_softmax_against_numpy():
    # onnxruntime has no CPU kernel for BiasSoftmax (CUDA/ROCm only): NumPy/torch oracle
    torch = pytest.importorskip("torch")
    r = rng(9)
    d = randn(r, 2, 3, 4, 5)
    for bias, axis, inner in [(randn(r, 2, 1, 4, 5), 2, 1), (randn(r, 4, 5), 2, 0), (randn(r, 5), 3, 0),
                              (randn(r, 2, 4, 5), 2, 1)]:
        got = ours("BiasSoftmax", [d, bias], {"axis": axis, "is_inner_broadcast": inner})[0]
        b = bias.reshape(2, 1, 4, 5) if bias.ndim == 3 else bias
        z = torch.from_numpy(d + b).reshape(d.shape[:axis] + (-1,))
        exp = torch.softmax(z, -1).reshape(d.shape).numpy()
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6)
        assert infer("BiasSoftmax", [d, bias], {"axis": axis, "is_inner_broadcast": inner})[0].shape == d.shape


def test_bias_dropout_inference():
    # no CPU kernel in onnxruntime; inference mode is exactly data + bias + residual
    r = rng(10)
    d, b, res = randn(r, 2, 3, 6), randn(r, 6), randn(r, 2, 3, 6)
    out, mask = ours("BiasDropout", [d, b, res], nout=2)
    np.testing.assert_allclose(out, d + b + res, rtol=1e-6)
    assert mask.dtype == np.bool_ and mask.all()
    out, mask = ours("BiasDropout", [d, b, None, np.array(0.5, F32), np.array(False)], nout=2)
    np.testing.assert_allclose(out, d + b, rtol=1e-6)
    out, mask = ours("BiasDropout", [d, b, res, np.array(0.25, F32), np.array(True)], nout=2)
    np.testing.assert_allclose(out[mask], ((d + b) / 0.75 + res)[mask], rtol=1e-5)
    np.testing.assert_allclose(out[~mask], res[~mask], rtol=1e-6)
    t = infer("BiasDropout", [d, b, res], nout=2)
    assert t[0].shape == d.shape and t[1].dtype == np.bool_


# ------------------------------------------------------------------ contrib_attention.py

def _qkv(r, b, s, hin, dq, dk, dv, dtype=F32):
    return randn(r, b, s, hin, dtype=dtype), randn(r, hin, dq + dk + dv, dtype=dtype, scale=0.4), \
        randn(r, dq + dk + dv, dtype=dtype)


@pytest.mark.parametrize("b,s", [(1, 1), (2, 5), (3, 4)])
def test_attention_masks(b, s):
    r = rng(11)
    n, hin = 2, 8
    x, w, bias = _qkv(r, b, s, hin, 8, 8, 8)
    a = {"num_heads": n}
    check("Attention", [x, w, bias], a)
    check("Attention", [x, w, None], a)
    lens = r.integers(1, s + 1, b).astype(np.int32)
    check("Attention", [x, w, bias, lens], a)
    check("Attention", [x, w, bias, np.concatenate([lens, r.integers(0, 2, b)]).astype(np.int32)], a)
    m2 = r.integers(0, 2, (b, s)).astype(np.int32)
    m2[0] = 0  # a fully masked row
    check("Attention", [x, w, bias, m2], a)
    check("Attention", [x, w, bias, m2], {**a, "unidirectional": 1, "mask_filter_value": -1e9})
    check("Attention", [x, w, bias, r.integers(0, 2, (b, s, s)).astype(np.int32)], {**a, "scale": 0.3})
    check("Attention", [x, w, bias, None, None, randn(r, 1, n, s, s)], a)
    # (no fully masked row here: scores near -10000 differ by float32 rounding of the sum order)
    m2[:, 0] = 1
    check("Attention", [x, w, bias, m2, None, randn(r, b, n, s, s)], {**a, "unidirectional": 1})


def test_attention_past_and_sizes():
    r = rng(12)
    b, s, n, hin, p = 2, 3, 2, 8, 4
    x, w, bias = _qkv(r, b, s, hin, 8, 8, 8)
    past = randn(r, 2, b, n, p, 4)
    a = {"num_heads": n, "unidirectional": 1}
    check("Attention", [x, w, bias, None, past], a, nout=2)
    check("Attention", [x, w, bias, np.ones((b, p + s), np.int32), past], a, nout=2)
    check("Attention", [x, w, bias, np.array([5, 7], np.int32), past], a, nout=2)
    x, w, bias = _qkv(r, b, s, hin, 8, 8, 4)
    check("Attention", [x, w, bias], {"num_heads": n, "qkv_hidden_sizes": [8, 8, 4]})
    x, w, bias = _qkv(r, b, s, hin, 8, 8, 8, F16)
    check("Attention", [x, w, bias, np.array([2, 3], np.int32)], {"num_heads": n})
    with pytest.raises(NotImplementedError):
        ours("Attention", [x, w, bias, np.ones((b, 1, 4, 4), np.int32)], {"num_heads": n})


@pytest.mark.parametrize("b,s,kv", [(1, 1, 1), (2, 3, 5), (1, 4, 4)])
def test_multi_head_attention(b, s, kv):
    r = rng(13)
    n, h = 2, 4
    d = n * h
    q, k, v, bias = randn(r, b, s, d), randn(r, b, kv, d), randn(r, b, kv, d), randn(r, 3 * d)
    a = {"num_heads": n}
    qk = {3: F32}
    check("MultiHeadAttention", [q, k, v], a)
    check("MultiHeadAttention", [q, k, v, bias], a, nout=3)
    check("MultiHeadAttention", [q, k, v, bias, r.integers(1, kv + 1, b).astype(np.int32)], a)
    check("MultiHeadAttention", [q, k, v, bias, r.integers(0, 2, (b, kv)).astype(np.int32)], a, nout=4, out_types=qk)
    check("MultiHeadAttention", [q, k, v, bias, r.integers(0, 2, (b, s, kv)).astype(np.int32)], {**a, "scale": 0.2})
    check("MultiHeadAttention", [q, k, v, bias, None, randn(r, 1, n, s, kv)], a, nout=4, out_types=qk)
    check("MultiHeadAttention", [q, k, v, bias, None, randn(r, b, 1, s, kv)], {**a, "unidirectional": 1},
          nout=4, out_types=qk)
    check("MultiHeadAttention", [q, k, v, bias, r.integers(0, 2, (b, kv)).astype(np.int32)],
          {**a, "unidirectional": 1, "mask_filter_value": -50.0}, nout=4, out_types=qk)
    check("MultiHeadAttention", [q, k, randn(r, b, kv, 3 * n)], a, nout=3)  # v_hidden_size != hidden_size
    check("MultiHeadAttention", [q, randn(r, b, n, kv, h), randn(r, b, n, kv, h), bias], a, nout=3)  # BNSH K/V
    check("MultiHeadAttention", [q.astype(F16), k.astype(F16), v.astype(F16)], a)


def test_multi_head_attention_past():
    r = rng(14)
    b, s, n, h, p = 2, 3, 2, 4, 4
    d = n * h
    q, k, v, bias = randn(r, b, s, d), randn(r, b, s, d), randn(r, b, s, d), randn(r, 3 * d)
    pk, pv = randn(r, b, n, p, h), randn(r, b, n, p, h)
    a = {"num_heads": n}
    check("MultiHeadAttention", [q, k, v, bias, None, None, pk, pv], a, nout=3)
    check("MultiHeadAttention", [q, k, v, bias, None, None, pk, pv], {**a, "unidirectional": 1}, nout=3)
    check("MultiHeadAttention", [q, k, v, bias, r.integers(0, 2, (b, p + s)).astype(np.int32), randn(r, b, n, s, p + s),
                                 pk, pv], {**a, "unidirectional": 1}, nout=4, out_types={3: F32})
    check("MultiHeadAttention", [q, k, v, None, np.array([5, 7], np.int32), None, pk, pv], a, nout=3)


def test_multi_head_attention_packed_layouts():
    # onnxruntime's CPU kernel rejects packed KV/QKV: compare with the unpacked call instead
    r = rng(15)
    b, s, n, h = 2, 3, 2, 4
    qkv = randn(r, b, s, n, 3, h)
    q, k, v = (qkv[:, :, :, i].reshape(b, s, n * h) for i in range(3))
    a = {"num_heads": n}
    ref = ours("MultiHeadAttention", [q, k, v], a)[0]
    np.testing.assert_allclose(ours("MultiHeadAttention", [qkv], a)[0], ref, rtol=1e-6, atol=1e-6)
    kv = np.stack([k.reshape(b, s, n, h), v.reshape(b, s, n, h)], axis=3)
    np.testing.assert_allclose(ours("MultiHeadAttention", [q, kv], a)[0], ref, rtol=1e-6, atol=1e-6)
    t = infer("MultiHeadAttention", [qkv], a, nout=1)[0]
    assert t.shape == (b, s, n * h) and t.dtype == np.float32


@pytest.mark.parametrize("dtype", [F32, F16])
@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding(dtype, interleaved):
    r = rng(16)
    b, s, n, h, m = 2, 3, 2, 8, 10
    cos, sin = randn(r, m, h // 2, dtype=dtype), randn(r, m, h // 2, dtype=dtype)
    pid = r.integers(0, m, (b, s)).astype(np.int64)
    a = {"interleaved": interleaved}
    x3, x4 = randn(r, b, s, n * h, dtype=dtype), randn(r, b, n, s, h, dtype=dtype)
    check("RotaryEmbedding", [x3, pid, cos, sin], a)
    check("RotaryEmbedding", [x4, pid, cos, sin], a)
    check("RotaryEmbedding", [x3, np.array([4], np.int64), cos, sin], a)
    part = {**a, "num_heads": n, "rotary_embedding_dim": 4}
    check("RotaryEmbedding", [x3, pid, cos[:, :2].copy(), sin[:, :2].copy()], part)
    check("RotaryEmbedding", [x4, pid, cos[:, :2].copy(), sin[:, :2].copy()], part)


# ------------------------------------------------------------------ contrib_quant.py

def _pack(vals, bits):
    per = 8 // bits
    v = vals.reshape(vals.shape[:-1] + (-1, per)).astype(np.uint8)
    out = np.zeros(v.shape[:-1], np.uint8)
    for i in range(per):
        out |= v[..., i] << (i * bits)
    return out


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("k,n,bs", [(32, 5, 16), (70, 3, 32), (128, 1, 64)])
def test_matmul_nbits(bits, k, n, bs):
    r = rng(17)
    kb = (k + bs - 1) // bs
    b = r.integers(0, 256, (n, kb, bs * bits // 8)).astype(np.uint8)
    sc = randn(r, n, kb, scale=0.1)
    a = {"K": k, "N": n, "bits": bits, "block_size": bs}
    zq = r.integers(0, 1 << bits, (n, kb)).astype(np.uint8)
    zp = _pack(np.pad(zq, ((0, 0), (0, (-kb) % (8 // bits)))), bits)
    check("MatMulNBits", [randn(r, 3, k), b, sc], a)
    check("MatMulNBits", [randn(r, 2, 1, k), b, sc, zp, None, randn(r, n)], a)
    check("MatMulNBits", [randn(r, 1, k), b, sc.ravel(), zp.ravel()], a)
    check("MatMulNBits", [randn(r, 4, k, dtype=F16), b, sc.astype(F16), zp], a)
    if bits != 8:  # onnxruntime's CPU kernel rejects float zero points with 8 bits
        check("MatMulNBits", [randn(r, 3, k), b, sc, randn(r, n, kb)], a)


def test_matmul_nbits_g_idx_and_empty():
    r = rng(18)
    k, n, bs = 32, 4, 16
    b = r.integers(0, 256, (n, 2, 8)).astype(np.uint8)
    sc = randn(r, n, 2)
    a = {"K": k, "N": n, "bits": 4, "block_size": bs}
    x = randn(r, 3, k)
    g_idx = (np.arange(k) // bs).astype(np.int32)  # the trivial grouping equals no g_idx
    np.testing.assert_allclose(ours("MatMulNBits", [x, b, sc, None, g_idx], a)[0], ours("MatMulNBits", [x, b, sc], a)[0])
    y = ours("MatMulNBits", [x, np.zeros((n, 0, 8), np.uint8), sc, None, None, np.ones(n, F32)], a)[0]
    assert y.shape == (3, n) and (y == 1).all()


# u8 x s8 products: onnxruntime's AVX2 u8s8 kernels saturate int16 pair sums, so the int8 weights
# here stay in [-64, 64) (what quantizers' reduce_range produces), where its result is exact.
def _u8(r, *s):
    return r.integers(0, 256, s).astype(np.uint8)


def _s8(r, *s):
    return r.integers(-64, 64, s).astype(np.int8)


@pytest.mark.parametrize("bq", [_u8, _s8])
def test_dynamic_quantize_matmul(bq):
    r = rng(19)
    a, b = randn(r, 2, 3, 7), bq(r, 7, 5)
    check("DynamicQuantizeMatMul", [a, b, np.float32(0.02)])
    check("DynamicQuantizeMatMul", [a, b, randn(r, 5) * 0.01, bq(r, 5), randn(r, 5)])
    check("DynamicQuantizeMatMul", [randn(r, 1, 16), bq(r, 16, 3), np.array([0.03], F32), bq(r, 1)])


@pytest.mark.parametrize("aq,bq", [(_u8, _u8), (_u8, _s8), (_s8, _s8)])
def test_matmul_integer_to_float(aq, bq):
    r = rng(20)
    b = bq(r, 7, 5)
    check("MatMulIntegerToFloat", [aq(r, 2, 3, 7), b, np.float32(0.1), np.float32(0.02)])
    check("MatMulIntegerToFloat", [aq(r, 4, 7), b, np.float32(0.1), randn(r, 5), aq(r), bq(r, 5), randn(r, 5)])
    if aq is _u8:
        check("MatMulIntegerToFloat", [aq(r, 4, 7), b, np.float16(0.1), randn(r, 5, dtype=F16), aq(r), bq(r, 5),
                                       randn(r, 5, dtype=F16)])


@pytest.mark.parametrize("aq", [_u8, _s8])
def test_qgemm(aq):
    r = rng(21)
    a, b = aq(r, 4, 6), _s8(r, 6, 5)
    check("QGemm", [a, np.float32(0.05), aq(r), b, np.float32(0.02), _s8(r)])
    check("QGemm", [a.T.copy(), np.float32(0.05), aq(r), b.T.copy(), randn(r, 5) * 0.02, _s8(r, 5),
                    r.integers(-100, 100, (5,)).astype(np.int32)], {"transA": 1, "transB": 1, "alpha": 0.7})
    check("QGemm", [a, np.float32(0.05), aq(r), b, np.float32(0.02), _s8(r), None, np.float32(0.3), aq(r)])
    check("QGemm", [a, np.float32(0.05), aq(r), b, np.float32(0.02), _s8(r),
                    r.integers(-100, 100, (4, 5)).astype(np.int32), np.float32(0.3), aq(r)])


@pytest.mark.parametrize("q", [_u8, lambda r, *s: r.integers(-128, 128, s).astype(np.int8)])
def test_qlinear_elementwise(q):
    r = rng(22)
    a, b = q(r, 2, 3, 5), q(r, 3, 5)
    args = [a, np.float32(0.05), q(r), b, np.float32(0.07), q(r), np.float32(0.09), q(r)]
    check("QLinearAdd", args)
    check("QLinearMul", args)
    check("QLinearAdd", [a, np.float32(0.05), q(r), q(r, 1, 1, 5), np.float32(0.07), q(r), np.float32(0.2), q(r)])
    x = q(r, 2, 3, 4, 5)
    check("QLinearSigmoid", [x, np.float32(0.05), q(r), np.float32(1 / 256), q(r)])
    check("QLinearLeakyRelu", [x, np.float32(0.05), q(r), np.float32(0.03), q(r)], {"alpha": 0.1})
    check("QLinearLeakyRelu", [x, np.float32(0.5), q(r), np.float32(0.03), q(r)])
    check("QLinearGlobalAveragePool", [x, np.float32(0.05), q(r), np.float32(0.03), q(r)])
    check("QLinearGlobalAveragePool", [x, np.float32(0.05), q(r), np.float32(0.03), q(r)], {"channels_last": 1})
    check("QLinearGlobalAveragePool", [q(r, 1, 3, 7, 7), np.float32(0.05), q(r), np.float32(0.05), q(r)])
    check("QLinearConcat", [np.float32(0.05), q(r), q(r, 2, 3), np.float32(0.04), q(r), q(r, 2, 5), np.float32(0.05),
                            q(r), q(r, 2, 1), np.float32(0.2), q(r)], {"axis": 1})
    check("QLinearConcat", [np.float32(0.05), q(r), q(r, 2, 3), np.float32(0.04), q(r), q(r, 4, 3), np.float32(0.05),
                            q(r)], {"axis": -2})


@pytest.mark.parametrize("direction,nd", [("forward", 1), ("reverse", 1), ("bidirectional", 2)])
@pytest.mark.parametrize("wq", [np.int8, np.uint8])
def test_dynamic_quantize_lstm(direction, nd, wq):
    # onnxruntime also quantizes X and H on the fly, so agreement is to quantization accuracy
    r = rng(23)
    t, b, i, h = 5, 3, 4, 6
    lo, hi = (-64, 64) if wq == np.int8 else (0, 256)
    w = r.integers(lo, hi, (nd, i, 4 * h)).astype(wq)
    rr = r.integers(lo, hi, (nd, h, 4 * h)).astype(wq)
    zw = (np.zeros(nd) if wq == np.int8 else np.full(nd, 128)).astype(wq)
    ws, rs = np.full(nd, 0.004, F32), np.full(nd, 0.003, F32)
    x, bias = randn(r, t, b, i), randn(r, nd, 8 * h, scale=0.1)
    a = {"hidden_size": h, "direction": direction}
    tol = (0, 2e-2)
    check("DynamicQuantizeLSTM", [x, w, rr, bias, None, None, None, None, ws, zw, rs, zw], a, nout=3, tol=tol)
    sl = np.array([5, 2, 3], np.int32)
    check("DynamicQuantizeLSTM", [x, w, rr, bias, sl, randn(r, nd, b, h), randn(r, nd, b, h),
                                  randn(r, nd, 3 * h, scale=0.1), ws, zw, rs, zw], a, nout=3, tol=tol)
    wsc = (0.004 * (1 + r.random((nd, 4 * h)))).astype(F32)
    check("DynamicQuantizeLSTM", [x, w, rr, bias, None, None, None, None, wsc, np.repeat(zw[:, None], 4 * h, 1), rs,
                                  zw], {**a, "clip": 0.5, "input_forget": 1}, nout=3, tol=tol)


def test_group_query_attention():
    r = rng(24)
    b, n, nkv, h = 2, 4, 2, 16
    a = {"num_heads": n, "kv_num_heads": nkv}
    cos, sin = randn(r, 16, h // 2), randn(r, 16, h // 2)
    s = 5  # first prompt, right padded batch
    q, k, v = randn(r, b, s, n * h), randn(r, b, s, nkv * h), randn(r, b, s, nkv * h)
    tsl = np.array(s, np.int32)
    check("GroupQueryAttention", [q, k, v, None, None, np.array([4, 4], np.int32), tsl], a, nout=3)
    check("GroupQueryAttention", [q, k, v, None, None, np.array([4, 3], np.int32), tsl], {**a, "local_window_size": 2},
          nout=3)
    check("GroupQueryAttention", [q, k, v, None, None, np.array([4, 4], np.int32), tsl], {**a, "softcap": 1.5,
                                                                                          "scale": 0.3}, nout=3)
    check("GroupQueryAttention", [np.concatenate([q, k, v], -1), None, None, None, None, np.array([4, 4], np.int32), tsl],
          a, nout=3)
    check("GroupQueryAttention", [q, k, v, None, None, np.array([4, 2], np.int32), tsl, cos, sin],
          {**a, "do_rotary": 1, "rotary_interleaved": 1}, nout=3)
    p = 6  # token generation with a shared-size cache buffer, ragged totals
    q, k, v = randn(r, b, 1, n * h), randn(r, b, 1, nkv * h), randn(r, b, 1, nkv * h)
    pk, pv = randn(r, b, nkv, p, h), randn(r, b, nkv, p, h)
    check("GroupQueryAttention", [q, k, v, pk, pv, np.array([6, 6], np.int32), np.array(7, np.int32)], a, nout=3)
    check("GroupQueryAttention", [q, k, v, pk, pv, np.array([6, 3], np.int32), np.array(7, np.int32), cos, sin],
          {**a, "do_rotary": 1}, nout=3)
    check("GroupQueryAttention", [q, k, v, pk, pv, np.array([4, 3], np.int32), np.array(5, np.int32), cos, sin],
          {**a, "do_rotary": 1, "local_window_size": 3}, nout=3)
    check("GroupQueryAttention", [q, k, v, pk, pv, np.array([4, 3], np.int32), np.array(5, np.int32), cos, sin,
                                  np.array([[2], [9]], np.int64)], {**a, "do_rotary": 1}, nout=3)
    s = 3  # a later prompt chunk (batch 1), float16
    q, k, v = randn(r, 1, s, n * h), randn(r, 1, s, nkv * h), randn(r, 1, s, nkv * h)
    check("GroupQueryAttention", [q, k, v, pk[:1], pv[:1], np.array([8], np.int32), np.array(9, np.int32)], a, nout=3)
    f16 = [x.astype(F16) for x in (q, k, v, pk[:1], pv[:1])]
    check("GroupQueryAttention", f16 + [np.array([8], np.int32), np.array(9, np.int32)], a, nout=3)
    with pytest.raises(NotImplementedError):
        ours("GroupQueryAttention", [q, k, v, pk[:1], pv[:1], np.array([8], np.int32), np.array(9, np.int32)],
             {**a, "sliding_window_cache": 1})
