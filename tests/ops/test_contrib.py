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


def ort_run(op_type, inputs, attrs=None, nout=1, domain=MS, opset=17, out_mask=None):
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
    graph = helper.make_graph([node], "g", vis, [onnx.ValueInfoProto(name=n) for n in outs if n])
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


def assert_close(got, exp, what=""):
    assert isinstance(got, np.ndarray), f"{what}: got {type(got).__name__}"
    assert got.dtype == exp.dtype, f"{what}: dtype {got.dtype} != {exp.dtype}"
    assert got.shape == exp.shape, f"{what}: shape {got.shape} != {exp.shape}"
    if exp.dtype.kind in "iub":
        diff = np.abs(got.astype(np.int64) - exp.astype(np.int64))
        assert diff.max(initial=0) <= (0 if exp.dtype.kind == "b" else ATOL_INT), f"{what}: max diff {diff.max()}"
        return
    rtol, atol = TOL[exp.dtype]
    np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64), rtol=rtol, atol=atol, err_msg=what)


def check(op_type, inputs, attrs=None, nout=1, domain=MS, opset=17, out_mask=None, skip_outputs=()):
    """Compare every requested output and the inferred types with onnxruntime."""
    exp = ort_run(op_type, inputs, attrs, nout, domain, opset, out_mask)
    got = ours(op_type, inputs, attrs, nout, domain, opset)
    types = infer(op_type, inputs, attrs, nout, domain, opset)
    for i, e in enumerate(exp):
        if e is None or i in skip_outputs:
            continue
        assert i < len(got), f"{op_type}: output {i} missing"
        assert_close(got[i], e, f"{op_type} output {i}")
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
