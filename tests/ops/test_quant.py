"""Quantization kernels vs onnxruntime one-node models and torch quantize_per_tensor/channel."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch

from jitort.dtypes import onnx_code

from .test_ml import assert_close, make_node, run_ort, run_ours

# exact for integer outputs; float outputs are one multiply / divide away from the oracle
TOL = {np.float32: (1e-6, 1e-6), np.float16: (1e-3, 1e-3), ml_dtypes.bfloat16: (1e-2, 1e-2)}
RNG = np.random.default_rng(0)
INT_TYPES = [np.uint8, np.int8, np.uint16, np.int16, ml_dtypes.int4, ml_dtypes.uint4]
F8 = [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]


def _check(node, feeds, opset, out_dtypes, tol=(0, 0)):
    """Compare with onnxruntime, or with a NumPy formula where onnxruntime's Python API cannot
    take the type (int4/uint4/float8 feeds)."""
    feeds = [None if f is None else np.asarray(f) for f in feeds]
    if any(f is not None and f.dtype in NO_ORT for f in feeds) or any(np.dtype(d) in NO_ORT for d in out_dtypes):
        return _check_numpy(node, feeds, opset)
    got = run_ours(node, feeds, opset)
    exp = run_ort(node, feeds, opset, [(onnx_code(d), None) for d in out_dtypes])
    for g, e in zip(got, exp):
        if g.dtype in (np.dtype(t) for t in F8 + [ml_dtypes.int4, ml_dtypes.uint4]):
            assert g.dtype == e.dtype
            np.testing.assert_array_equal(g.astype(np.float32), e.astype(np.float32))
        else:
            assert_close(g, e, *tol)
    return got


NO_ORT = {np.dtype(t) for t in F8 + [ml_dtypes.int4, ml_dtypes.uint4]}
RANGES = {np.dtype(t): (int(ml_dtypes.iinfo(t).min), int(ml_dtypes.iinfo(t).max)) for t in INT_TYPES}


def _bcast(p, shape, axis, block):
    if p.ndim == 0:
        return p.astype(np.float64)
    p = p.astype(np.float64)
    if block:
        return np.repeat(p, block, axis=axis).take(np.arange(shape[axis]), axis=axis)
    dims = [1] * len(shape)
    dims[axis] = -1
    return p.reshape(dims)


def _check_numpy(node, feeds, opset):
    """Q/DQ by the textbook formulas in float64 (exact for these ranges)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    x, s = feeds[0], feeds[1]
    z = feeds[2] if len(feeds) > 2 else None
    ax = attrs.get("axis", 1) % max(x.ndim, 1)
    blk = attrs.get("block_size", 0)
    got = run_ours(node, feeds, opset)[0]
    sf = _bcast(s, x.shape, ax, blk)
    zf = 0.0 if z is None else _bcast(z.astype(np.float32), x.shape, ax, blk)
    if node.op_type == "QuantizeLinear":
        lo, hi = RANGES[np.dtype(z.dtype)]
        exp = np.clip(np.rint(x.astype(np.float32) / sf.astype(np.float32)) + zf, lo, hi)
        assert got.dtype == z.dtype
        np.testing.assert_array_equal(got.astype(np.float64), exp)
    else:
        exp = ((x.astype(np.float64) - zf) * sf).astype(np.float32)
        assert_close(got, exp, *TOL[np.float32])
    return [got]


def _x(shape, scale=30.0):
    x = (RNG.standard_normal(shape) * scale).astype(np.float32)
    x.reshape(-1)[: min(4, x.size)] = [0.5, 1.5, -2.5, 2.5][: min(4, x.size)]  # ties -> even
    return x


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("opset", [10, 13, 19, 21])
def test_quantize_per_tensor(dt, opset):
    x = _x((3, 7, 5), 100.0)
    node = make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    _check(node, [x, np.array(0.7, np.float32), np.array(3, dt)], opset, [dt])


@pytest.mark.parametrize("dt", INT_TYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_per_axis(dt, axis):
    x = _x((4, 6, 5))
    n = x.shape[axis]
    s = RNG.uniform(0.5, 2.0, n).astype(np.float32)
    z = np.array(RNG.integers(0, 3, n), dtype=np.int64).astype(dt)
    node = make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=axis)
    _check(node, [x, s, z], 21, [dt])
    node = make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis)
    q = run_ours(make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=axis), [x, s, z], 21)[0]
    _check(node, [q, s, z], 21, [np.float32], TOL[np.float32])


@pytest.mark.parametrize("dt", [np.int8, np.uint8, ml_dtypes.int4, np.int16])
@pytest.mark.parametrize("block,axis", [(2, 1), (3, 0), (4, -1)])
def test_blocked(dt, block, axis):
    x = _x((6, 7, 8))
    shp = list(x.shape)
    ax = axis % 3
    shp[ax] = -(-shp[ax] // block)
    s = RNG.uniform(0.5, 2.0, shp).astype(np.float32)
    z = RNG.integers(0, 3, shp).astype(np.int64).astype(dt)
    node = make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=axis, block_size=block)
    q = _check(node, [x, s, z], 21, [dt])[0]
    node = make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis, block_size=block)
    _check(node, [q, s, z], 21, [np.float32], TOL[np.float32])


TORCH_F8 = {ml_dtypes.float8_e4m3fn: torch.float8_e4m3fn, ml_dtypes.float8_e5m2: torch.float8_e5m2}


@pytest.mark.parametrize("dt", F8)
@pytest.mark.parametrize("saturate", [0, 1])
def test_quantize_float8(dt, saturate):
    """Oracle: torch's float8 casts (round to nearest even); saturation by clamping first."""
    x = np.concatenate([_x((40,), 300.0), np.array([1e6, -1e6, np.inf, -np.inf, np.nan, 0.0, -0.0], np.float32)])
    node = make_node("QuantizeLinear", ["x", "s", "z"], ["y"], saturate=saturate)
    got = run_ours(node, [x, np.array(1.5, np.float32), np.zeros((), dt)], 19)[0]
    assert got.dtype == np.dtype(dt)
    t = torch.from_numpy(x) / 1.5
    mx = float(ml_dtypes.finfo(dt).max)
    if saturate:
        t = torch.where(torch.isnan(t), t, t.clamp(-mx, mx))
    elif dt == ml_dtypes.float8_e4m3fn:  # no infinity: what rounds past 448 (> 464) is NaN
        t = torch.where(t.abs() > 464, torch.full_like(t, float("nan")), t)
    exp = t.to(TORCH_F8[dt]).float().numpy()
    np.testing.assert_array_equal(got.astype(np.float32), exp)
    ok = ~np.isnan(exp)
    np.testing.assert_array_equal(np.signbit(got.astype(np.float32))[ok], np.signbit(exp)[ok])


@pytest.mark.parametrize("dt", F8 + [ml_dtypes.int4, ml_dtypes.uint4, np.int32])
def test_dequantize_types(dt):
    x = (RNG.standard_normal((5, 4)) * 5).astype(np.float32)
    if dt == np.int32:
        q = RNG.integers(-(2 ** 30), 2 ** 30, (5, 4)).astype(np.int32)
    elif dt in (ml_dtypes.int4, ml_dtypes.uint4):
        q = np.clip(np.rint(x), 0 if dt == ml_dtypes.uint4 else -8, 7).astype(np.int64).astype(dt)
    else:
        q = x.astype(dt)
    node = make_node("DequantizeLinear", ["q", "s"], ["y"])
    _check(node, [q, np.array(0.25, np.float32)], 21, [np.float32], TOL[np.float32])


@pytest.mark.parametrize("sdt", [np.float16, ml_dtypes.bfloat16])
def test_dequantize_scale_dtypes(sdt):
    q = RNG.integers(0, 255, (3, 8)).astype(np.uint8)
    s = np.array([0.1, 0.2, 0.3], np.float32).astype(sdt)
    z = np.array([1, 128, 255], np.uint8)
    got = run_ours(make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0), [q, s, z], 21)[0]
    assert got.dtype == np.dtype(sdt)
    exp = (q.astype(np.float32) - z[:, None]) * s.astype(np.float32)[:, None]
    assert_close(got.astype(np.float32), exp.astype(sdt).astype(np.float32), *TOL[sdt])
    got = run_ours(make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0,
                             output_dtype=onnx.TensorProto.FLOAT), [q, s, z], 23)[0]
    assert got.dtype == np.float32


def test_quantize_output_dtype_and_precision():
    x = _x((4, 5))
    got = run_ours(make_node("QuantizeLinear", ["x", "s"], ["y"], output_dtype=onnx.TensorProto.INT16),
                   [x, np.array(0.01, np.float32)], 21)[0]
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, np.clip(np.rint(x / np.float32(0.01)), -32768, 32767).astype(np.int16))
    got = run_ours(make_node("QuantizeLinear", ["x", "s"], ["y"]), [x, np.array(0.5, np.float32)], 21)[0]
    assert got.dtype == np.uint8  # default output type
    xh = x.astype(np.float16)
    got = run_ours(make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
                   [xh, np.array(0.3, np.float16), np.array(0, np.int8)], 19)[0]
    exp = np.clip(np.rint((xh / np.float16(0.3)).astype(np.float32)), -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, exp)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quantize_vs_torch():
    x = torch.randn(4, 6, 5) * 20
    q = torch.quantize_per_tensor(x, 0.3, 7, torch.quint8)
    got = run_ours(make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
                   [x.numpy(), np.array(0.3, np.float32), np.array(7, np.uint8)], 13)[0]
    np.testing.assert_array_equal(got, q.int_repr().numpy())
    s = torch.rand(6, dtype=torch.float64) + 0.1
    zp = torch.arange(6) - 3
    q = torch.quantize_per_channel(x, s, zp, 1, torch.qint8)
    got = run_ours(make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1),
                   [x.numpy(), s.numpy().astype(np.float32), zp.numpy().astype(np.int8)], 13)[0]
    # torch divides in float64 with a float64 scale: allow one step at exact ties
    assert np.abs(got.astype(int) - q.int_repr().numpy().astype(int)).max() <= 1


def test_dynamic_quantize_linear():
    for x in [_x((3, 4)), np.abs(_x((2, 5))), -np.abs(_x((5,))), np.zeros((2, 3), np.float32)]:
        node = make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
        _check(node, [x], 11, [np.uint8, np.float32, np.uint8], TOL[np.float32])


@pytest.mark.parametrize("adt,bdt", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)])
def test_matmul_integer(adt, bdt):
    """Oracle: int64 NumPy matmul (onnxruntime's u8s8 path may saturate, and it lacks per-row zps)."""
    a = RNG.integers(np.iinfo(adt).min, np.iinfo(adt).max, (2, 5, 33)).astype(adt)
    b = RNG.integers(np.iinfo(bdt).min, np.iinfo(bdt).max, (33, 7)).astype(bdt)
    node = make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])
    got = run_ours(node, [a, b, np.array(3, adt), np.array(1, bdt)], 10)[0]
    assert_close(got, ((a.astype(np.int64) - 3) @ (b.astype(np.int64) - 1)).astype(np.int32), 0, 0)
    a2 = a[0]
    za, zb = RNG.integers(0, 5, 5).astype(adt), RNG.integers(0, 5, 7).astype(bdt)
    got = run_ours(node, [a2, b, za, zb], 10)[0]
    exp = (a2.astype(np.int64) - za[:, None]) @ (b.astype(np.int64) - zb)
    assert_close(got, exp.astype(np.int32), 0, 0)
    if adt == np.uint8:  # onnxruntime agrees where its kernels are exact
        small = np.minimum(a, 100).astype(adt)
        _check(make_node("MatMulInteger", ["a", "b"], ["y"]), [small, (b // 2).astype(bdt)], 10, [np.int32])


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("opset", [10, 21])
def test_qlinear_matmul(dt, opset):
    a = RNG.integers(0, 100, (2, 4, 9)).astype(dt)
    b = RNG.integers(0, 100, (9, 6)).astype(dt)
    node = make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])
    f32 = np.float32
    _check(node, [a, f32(0.05), dt(3), b, f32(0.02), dt(5), f32(0.5), dt(10)], opset, [dt])
    sh = np.float16
    if opset >= 21:  # float16 scales: we round the scale product at float16 like ONNX's reference;
        # onnxruntime keeps it in float32, so a rare tie may differ by one step
        fe = [a, sh(0.05), dt(3), b, sh(0.02), dt(5), sh(0.5), dt(10)]
        got = run_ours(node, fe, opset)[0]
        exp = run_ort(node, [np.asarray(f) for f in fe], opset, [(onnx_code(dt), None)])[0]
        assert got.dtype == exp.dtype
        assert np.abs(got.astype(int) - exp.astype(int)).max() <= 1
    # per-row a scales, per-column b scales (onnxruntime lacks them: float64 NumPy oracle)
    a2 = a[0]
    sa, za = RNG.uniform(0.01, 0.1, 4).astype(f32), RNG.integers(0, 5, 4).astype(dt)
    sb, zb = RNG.uniform(0.01, 0.1, 6).astype(f32), RNG.integers(0, 5, 6).astype(dt)
    got = run_ours(node, [a2, sa, za, b, sb, zb, np.array(0.3, f32), np.array(2, dt)], opset)[0]
    acc = (a2.astype(np.int64) - za[:, None]) @ (b.astype(np.int64) - zb)
    real = acc * (sa[:, None].astype(np.float64) * sb.astype(np.float64)) / 0.3
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    exp = np.clip(np.rint(real) + 2, lo, hi)
    assert got.dtype == np.dtype(dt)
    assert np.abs(got.astype(np.int64) - exp).max() <= 1  # float32 scale products may flip a tie
    assert (got.astype(np.int64) == exp).mean() > 0.9


def _conv_feeds(dt, wdt, shape, wshape, per_channel):
    x = RNG.integers(0, 120, shape).astype(dt)
    w = RNG.integers(-60, 60, wshape).astype(wdt)
    m = wshape[0]
    wz = RNG.integers(-3, 3, m).astype(wdt) if per_channel else np.array(2, wdt)
    return x, w, wz


@pytest.mark.parametrize("attrs", [
    {}, {"pads": [1, 1, 1, 1]}, {"strides": [2, 2], "pads": [0, 1, 2, 1]}, {"dilations": [2, 1]},
    {"group": 2}, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, {"auto_pad": "SAME_LOWER"}])
def test_conv_integer(attrs):
    x, w, wz = _conv_feeds(np.uint8, np.uint8, (2, 4, 7, 6), (6, 4 // attrs.get("group", 1), 3, 3), False)
    wz = np.array(5, np.uint8)
    node = make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], **attrs)
    _check(node, [x, w, np.array(3, np.uint8), wz], 10, [np.int32])


@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 1, 1, 1], "strides": [2, 1]}, {"group": 3}])
@pytest.mark.parametrize("dt,wdt", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)])
def test_qlinear_conv(attrs, dt, wdt):
    g = attrs.get("group", 1)
    x, w, _ = _conv_feeds(dt, wdt, (2, 6, 8, 7), (9, 6 // g, 3, 2), True)
    m = w.shape[0]
    wz = np.zeros(m, wdt) if wdt == np.int8 else RNG.integers(100, 140, m).astype(wdt)
    ws = RNG.uniform(0.001, 0.01, m).astype(np.float32)
    bias = RNG.integers(-500, 500, m).astype(np.int32)
    f32 = np.float32
    node = make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **attrs)
    _check(node, [x, f32(0.05), dt(4), w, ws, wz, f32(0.2), dt(7), bias], 10, [dt])


def test_qlinear_conv_1d_3d():
    for shape, wshape in [((2, 3, 11), (4, 3, 3)), ((1, 2, 5, 4, 6), (3, 2, 2, 3, 2))]:
        x, w, _ = _conv_feeds(np.uint8, np.uint8, shape, wshape, False)
        node = make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
        f32 = np.float32
        _check(node, [x, f32(0.05), np.uint8(4), w, f32(0.01), np.uint8(30), f32(0.1), np.uint8(100)],
               10, [np.uint8])
