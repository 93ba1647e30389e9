"""Quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearMatMul,
QLinearConv, MatMulInteger, ConvInteger.

Integer products are computed exactly with BLAS: zero-point-shifted 8-bit operands are small
integers, so a float32 (when the worst-case sum stays below 2**24) or float64 matmul is exact.
"""

from __future__ import annotations

import math

import functools
import sys
from types import SimpleNamespace

import numpy as np

from ..dtypes import np_dtype
from ..lazy import ml_dtypes
from .registry import op

_INTS = {
    np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767),
}


def _ml():
    """Tables of the ml_dtypes types (empty until ml_dtypes is imported: see cast.py)."""
    return _ml_tables() if "ml_dtypes" in sys.modules else _NO_ML


@functools.cache
def _ml_tables() -> SimpleNamespace:
    return SimpleNamespace(
        F8={np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                  ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz)},
        SMALL_FLOATS={np.dtype(t) for t in (ml_dtypes.float4_e2m1fn, ml_dtypes.float6_e2m3fn,
                                            ml_dtypes.float6_e3m2fn)},
        INT_RANGES={**_INTS, np.dtype(ml_dtypes.uint4): (0, 15), np.dtype(ml_dtypes.int4): (-8, 7),
                    np.dtype(ml_dtypes.uint2): (0, 3), np.dtype(ml_dtypes.int2): (-2, 1)})


_NO_ML = SimpleNamespace(F8=set(), SMALL_FLOATS=set(), INT_RANGES=_INTS)


def _is_int(dt) -> bool:
    return dt in _ml().INT_RANGES or dt.kind in "iu"


def _f32(a: np.ndarray) -> np.ndarray:
    """As float32 (ml_dtypes / float16 / ints); float64 stays float64."""
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


def _param(p: np.ndarray | None, shape: tuple, axis: int, block_size: int) -> np.ndarray | None:
    """A scale / zero point made broadcastable to ``shape`` (per-tensor, per-axis or blocked)."""
    if p is None or p.ndim == 0:
        return p
    if p.size == 1 and not (block_size and p.ndim == len(shape) and p.ndim > 1):
        return p.reshape(())
    axis = axis + len(shape) if axis < 0 else axis
    if block_size and block_size > 0:
        if p.ndim != len(shape):
            raise ValueError(f"blocked quantization needs a scale of rank {len(shape)}, got {p.shape}")
        p = np.repeat(p, block_size, axis=axis)
        if p.shape[axis] < shape[axis]:
            raise ValueError(f"block_size {block_size} with scale {p.shape} does not cover {shape}")
        return np.take(p, np.arange(shape[axis]), axis=axis)
    if p.ndim != 1:
        raise ValueError(f"per-axis scale must be 1-D, got shape {p.shape}")
    if p.size != shape[axis]:
        raise ValueError(f"per-axis scale of size {p.size} does not match dim {axis} of {shape}")
    dims = [1] * len(shape)
    dims[axis] = p.size
    return p.reshape(dims)


def _saturate_int(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rounded float values -> integer ``dtype`` with clamping (NaN maps to 0); may modify v."""
    lo, hi = _ml().INT_RANGES[dtype]
    v = np.clip(v, lo, hi, out=v if v.flags.writeable and v.dtype.kind == "f" else None)
    if v.size and np.isnan(v.sum(dtype=np.float64)):
        v = np.nan_to_num(v, nan=0.0)
    return v.astype(np.int32).astype(dtype, copy=False)


def _to_float_type(v: np.ndarray, dtype: np.dtype, saturate: bool) -> np.ndarray:
    """float32/64 -> float8/float4/float6 with round-to-nearest-even; saturate clamps to +-max."""
    if saturate and dtype in _ml().F8:
        m = float(ml_dtypes.finfo(dtype).max)
        v = np.clip(v, -m, m)  # NaN stays NaN
    return v.astype(dtype)


def _quantize(x, scale, zp, dtype, axis=1, saturate=1, block_size=0, precision=0):
    """y = saturate(round_half_even(x / scale) + zp), the shared core."""
    return np.asarray(_quantize_core(x, scale, zp, dtype, axis, saturate, block_size, precision))


def _quantize_core(x, scale, zp, dtype, axis, saturate, block_size, precision):
    scale = _param(scale, x.shape, axis, block_size)
    zp = _param(zp, x.shape, axis, block_size)
    pdt = np_dtype(precision) if precision else scale.dtype
    if pdt == np.float64:
        q = x.astype(np.float64) / scale.astype(np.float64)
    elif pdt.kind in "iu":  # an integer scale: divide exactly-ish in float64
        q = x.astype(np.float64) / scale.astype(np.float64)
    else:
        q = _f32(x) / _f32(scale)
        if pdt in (np.float16, ml_dtypes.bfloat16):
            q = _f32(q.astype(pdt))  # division at the scale's precision
    if dtype in _ml().INT_RANGES:
        q = np.asarray(q)
        q = np.rint(q, out=q) if q.ndim else np.rint(q).reshape(())
        if zp is not None:
            q += zp.astype(q.dtype)
        return _saturate_int(q, dtype)
    if dtype in _ml().F8 or dtype in _ml().SMALL_FLOATS:
        if zp is not None and np.any(_f32(zp) != 0):
            q = q + _f32(zp)
        return _to_float_type(q, dtype, bool(saturate) or dtype in _ml().SMALL_FLOATS)
    raise TypeError(f"QuantizeLinear: unsupported output type {dtype}")


def _out_dtype(zp, output_dtype):
    if zp is not None:
        if output_dtype and np_dtype(output_dtype) != zp.dtype:
            raise TypeError(f"output_dtype {np_dtype(output_dtype)} != zero point type {zp.dtype}")
        return zp.dtype
    return np_dtype(output_dtype) if output_dtype else np.dtype(np.uint8)


@op("QuantizeLinear", since=10)
def quantize_linear_10(x, y_scale, y_zero_point=None):
    return _quantize(x, y_scale, y_zero_point, _out_dtype(y_zero_point, 0))


@op("QuantizeLinear", since=13)
def quantize_linear_13(x, y_scale, y_zero_point=None, *, axis=1):
    return _quantize(x, y_scale, y_zero_point, _out_dtype(y_zero_point, 0), axis)


@op("QuantizeLinear", since=19)
def quantize_linear_19(x, y_scale, y_zero_point=None, *, axis=1, saturate=1):
    return _quantize(x, y_scale, y_zero_point, _out_dtype(y_zero_point, 0), axis, saturate)


@op("QuantizeLinear", since=21)
def quantize_linear_21(x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0,
                       output_dtype=0):
    dt = _out_dtype(y_zero_point, output_dtype)
    return _quantize(x, y_scale, y_zero_point, dt, axis, saturate, block_size)


@op("QuantizeLinear", since=23)
def quantize_linear_23(x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0,
                       output_dtype=0, precision=0):
    dt = _out_dtype(y_zero_point, output_dtype)
    return _quantize(x, y_scale, y_zero_point, dt, axis, saturate, block_size, precision)


for _v in (24, 25, 28):  # only the allowed type lists grew
    op("QuantizeLinear", since=_v)(quantize_linear_23)


def _dequantize(x, scale, zp, axis=1, block_size=0, output_dtype=0):
    """y = (x - zp) * scale, computed in float32 (float64 for a float64 scale)."""
    if output_dtype:
        out = np_dtype(output_dtype)
    elif scale.dtype == ml_dtypes.float8_e8m0fnu:
        out = np.dtype(np.float32)
    else:
        out = scale.dtype
    scale = _param(scale, x.shape, axis, block_size)
    zp = _param(zp, x.shape, axis, block_size)
    wide = np.float64 if (scale.dtype == np.float64 or x.dtype == np.int32) else np.float32
    if x.dtype == np.int32:
        dx = x.astype(np.int64)
        if zp is not None:
            dx = dx - zp.astype(np.int64)
        dx = dx.astype(np.float32).astype(wide)
    else:
        dx = x.astype(wide)
        # float8/float4 zero points are normally 0; skipping a 0 keeps the sign of -0.0
        if zp is not None and (_is_int(x.dtype) or np.any(_f32(zp) != 0)):
            dx = dx - zp.astype(wide)
    y = dx * scale.astype(wide)
    return np.asarray(y.astype(out))


@op("DequantizeLinear", since=10)
def dequantize_linear_10(x, x_scale, x_zero_point=None):
    return _dequantize(x, x_scale, x_zero_point)


@op("DequantizeLinear", since=13)
def dequantize_linear_13(x, x_scale, x_zero_point=None, *, axis=1):
    return _dequantize(x, x_scale, x_zero_point, axis)


op("DequantizeLinear", since=19)(dequantize_linear_13)


@op("DequantizeLinear", since=21)
def dequantize_linear_21(x, x_scale, x_zero_point=None, *, axis=1, block_size=0):
    return _dequantize(x, x_scale, x_zero_point, axis, block_size)


@op("DequantizeLinear", since=23)
def dequantize_linear_23(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    return _dequantize(x, x_scale, x_zero_point, axis, block_size, output_dtype)


for _v in (24, 25, 28):
    op("DequantizeLinear", since=_v)(dequantize_linear_23)


@op("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(x):
    """uint8 asymmetric quantization over the range [min(0, x), max(0, x)]."""
    xf = _f32(x).astype(np.float32)
    hi = np.float32(max(0.0, float(xf.max()))) if xf.size else np.float32(0)
    lo = np.float32(min(0.0, float(xf.min()))) if xf.size else np.float32(0)
    scale = np.float32(1.0) if hi == lo else np.float32(hi - lo) / np.float32(255)  # onnxruntime
    zp = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255))
    y = np.asarray(np.clip(np.rint(xf / scale) + zp, 0, 255)).astype(np.uint8)
    return y, np.asarray(scale, dtype=x.dtype), np.asarray(zp, dtype=np.uint8)


# ---------------------------------------------------------------- integer matmul / conv


def _exact_matmul(a: np.ndarray, b: np.ndarray, bound: float) -> np.ndarray:
    """a @ b for small-integer-valued float operands, exact; ``bound`` >= max |a| * max |b| * K.

    float32 BLAS is exact while partial sums stay below 2**24: K is split into chunks that do,
    and the chunk results (exact integers) are summed in float64.
    """
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    k = a.shape[-1]
    if bound < 2.0 ** 24 or k <= 1:
        return np.matmul(a, b)
    per = bound / k  # max |a| * max |b|
    step = int(2.0 ** 24 // per) if per else k
    if step < 16:  # wide operands: float64 BLAS is exact below 2**53
        return np.matmul(a.astype(np.float64), b.astype(np.float64))
    out = None
    for i in range(0, k, step):
        part = np.matmul(a[..., i:i + step], b[..., i:i + step, :]).astype(np.float64)
        out = part if out is None else out + part
    return out


def _absmax(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


def _int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact int matmul (numpy semantics) of small-integer arrays, as int64."""
    k = a.shape[-1] if a.ndim else 1
    bound = _absmax(a) * _absmax(b) * max(k, 1)
    if bound >= 2.0 ** 53:
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    return np.rint(_exact_matmul(a, b, bound)).astype(np.int64)


def _shift(x: np.ndarray, zp: np.ndarray | None, row_axis: bool) -> np.ndarray:
    """x - zp as float32 (exact for 8-bit ints and float8); a 1-D zp is per row (row_axis) or
    per column."""
    xf = _f32(x).astype(np.float32)
    if zp is None:
        return xf
    z = _f32(zp).astype(np.float32)
    if z.ndim == 1 and z.size > 1 and row_axis and x.ndim >= 2:
        z = z.reshape(-1, 1)
    return xf - z


def _to_int32(acc: np.ndarray) -> np.ndarray:
    """int64 accumulators -> int32 with two's-complement wrap (accumulation may overflow)."""
    return acc.astype(np.int64).astype(np.int32)


@op("MatMulInteger", since=10)
def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    return _to_int32(_int_matmul(_shift(a, a_zero_point, True), _shift(b, b_zero_point, False)))


def _row_param(p: np.ndarray, ndim: int) -> np.ndarray:
    """A per-row scale of 'a' (1-D of size M) broadcastable against [..., M, N]."""
    return p.reshape(-1, 1) if p.ndim == 1 and p.size > 1 and ndim >= 2 else p


def _requant(acc, mult, y_zero_point, out_dtype, saturate=True):
    """Rescale exact accumulators and quantize to the output type."""
    v = acc * mult.astype(np.float64)
    if out_dtype in _ml().INT_RANGES:
        v = np.rint(v)
        if y_zero_point is not None:
            v = v + y_zero_point.astype(np.float64)
        return _saturate_int(v, out_dtype)
    if y_zero_point is not None:
        v = v + _f32(y_zero_point).astype(np.float64)
    return _to_float_type(v.astype(np.float32), out_dtype, saturate)


def _scale_mult(sa, sb, sy):
    """(sa * sb) / sy rounded at the scales' own precision (float16/bfloat16 scales)."""
    dt = sa.dtype
    if dt in (np.float16, ml_dtypes.bfloat16):
        m = (_f32(sa) * _f32(sb)).astype(dt)
        return (_f32(m) / _f32(sy)).astype(dt).astype(np.float32)
    return (_f32(sa) * _f32(sb)) / _f32(sy)


def _qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    sa, sb = _shift(a, a_zero_point, True), _shift(b, b_zero_point, False)
    if _is_int(a.dtype):
        acc = _to_int32(_int_matmul(sa, sb)).astype(np.float64)
    else:  # float8 operands
        acc = np.matmul(sa.astype(np.float64), sb.astype(np.float64))
    mult = _scale_mult(_row_param(a_scale, a.ndim), b_scale, y_scale)
    out = y_zero_point.dtype if y_zero_point is not None else a.dtype
    return _requant(acc, mult, y_zero_point, np.dtype(out))


@op("QLinearMatMul", since=10)
def qlinear_matmul_10(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    return _qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point)


op("QLinearMatMul", since=21)(qlinear_matmul_10)


def _conv_pads(in_sp, k_sp, strides, dilations, pads, auto_pad):
    nd = len(in_sp)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(nd):
            out = -(-in_sp[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (k_sp[i] - 1) * dilations[i] + 1 - in_sp[i])
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - small if auto_pad == "SAME_UPPER" else small)
        return begin, end
    if auto_pad == "VALID" or not pads:
        return [0] * nd, [0] * nd
    return list(pads[:nd]), list(pads[nd:])


def _int_conv(xs, ws, group, kernel_shape, pads, strides, dilations, auto_pad):
    """Exact N-D grouped convolution of small-integer-valued float32 arrays via im2col + matmul.

    xs: (N, C, *spatial), ws: (M, C/group, *k). Returns float64 (N, M, *out).
    """
    n, c = xs.shape[:2]
    m = ws.shape[0]
    k_sp = list(kernel_shape) if kernel_shape else list(ws.shape[2:])
    nd = len(k_sp)
    strides = list(strides) if strides else [1] * nd
    dilations = list(dilations) if dilations else [1] * nd
    begin, end = _conv_pads(xs.shape[2:], k_sp, strides, dilations, pads, auto_pad or "NOTSET")
    xp = np.pad(xs, [(0, 0), (0, 0)] + list(zip(begin, end)))
    sp = xp.shape[2:]
    out_sp = [(sp[i] - (k_sp[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nd)]
    if min(out_sp + [n, m]) <= 0:
        return np.zeros((n, m, *[max(o, 0) for o in out_sp]), np.float64)
    cg, mg = c // group, m // group
    st = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp,
        shape=(n, group, cg, *k_sp, *out_sp),
        strides=(st[0], st[1] * cg, st[1], *[st[2 + i] * dilations[i] for i in range(nd)],
                 *[st[2 + i] * strides[i] for i in range(nd)]),
        writeable=False,
    )
    kk = cg * math.prod(k_sp)
    cols = view.reshape(n, group, kk, math.prod(out_sp))
    wm = ws.reshape(group, mg, kk)
    bound = _absmax(xs) * _absmax(ws) * kk
    if bound >= 2.0 ** 53:
        raise OverflowError("integer convolution exceeds exact float64 range")
    y = _exact_matmul(wm[None], cols, bound).astype(np.float64)  # (n, group, mg, P)
    return np.rint(y).reshape(n, m, *out_sp)


def _conv_w_zp(w, zp):
    if zp is None:
        return w.astype(np.float32)
    z = zp.astype(np.float32)
    if z.ndim == 1 and z.size > 1:
        z = z.reshape((-1,) + (1,) * (w.ndim - 1))
    return w.astype(np.float32) - z


def _x_shift(x, zp):
    """x - zp as float32 (exact for 8-bit data)."""
    return x.astype(np.float32) - (zp.astype(np.float32).reshape(()) if zp is not None else np.float32(0))


@op("ConvInteger", since=10)
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None,
                 group=1, kernel_shape=None, pads=None, strides=None):
    y = _int_conv(_x_shift(x, x_zero_point), _conv_w_zp(w, w_zero_point), group, kernel_shape,
                  pads, strides, dilations, auto_pad)
    return _to_int32(y.astype(np.int64))


@op("QLinearConv", since=10)
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None,
                 *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
                 strides=None):
    acc = _int_conv(_x_shift(x, x_zero_point), _conv_w_zp(w, w_zero_point), group, kernel_shape,
                    pads, strides, dilations, auto_pad)
    bshape = (1, -1) + (1,) * (acc.ndim - 2)
    if B is not None:
        acc = acc + B.astype(np.float64).reshape(bshape)
    acc = _to_int32(acc.astype(np.int64)).astype(np.float64)
    ws = w_scale.reshape(bshape) if w_scale.ndim == 1 and w_scale.size > 1 else w_scale.reshape(())
    mult = (_f32(x_scale).reshape(()) * _f32(ws)) / _f32(y_scale).reshape(())
    out = y_zero_point.dtype if y_zero_point is not None else x.dtype
    return _requant(acc, mult.astype(np.float32), y_zero_point, np.dtype(out))
