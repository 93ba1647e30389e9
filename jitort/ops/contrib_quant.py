"""com.microsoft quantized ops: MatMulNBits (2/4/8-bit block-quantized weights),
DynamicQuantizeMatMul, MatMulIntegerToFloat, QGemm, QLinear{Add,Mul,Sigmoid,LeakyRelu,
GlobalAveragePool,Concat}, DynamicQuantizeLSTM.

Quantized results use round-half-to-even and saturate to the output type, as onnxruntime does.
Integer products accumulate exactly (int64 or float64, never float32 for large K).
"""

from __future__ import annotations

import numpy as np

from ..lazy import LazyObject
from .contrib_common import MS, bshape, dtype_of, like, matmul_shape, mul, shape_of, tt, wide
from .registry import op

expit = LazyObject("scipy.special", "expit")  # scipy costs 0.25 s to import: only when called


def _f(x):
    return np.asarray(x, dtype=np.float32)


def _zp(z, dtype=np.int32):
    return np.zeros((), dtype) if z is None else np.asarray(z).astype(dtype)


def _quantize(y, scale, zp, dtype):
    """saturate(round_half_even(y / scale) + zp) as dtype."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(y, np.float32) / _f(scale)) + _f(zp)
    return np.clip(q, info.min, info.max).astype(dtype)


def _imatmul(a, b):
    """Exact integer matmul of int32 arrays via float64 BLAS (exact while |sum| < 2**53)."""
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


# ------------------------------------------------------------------ MatMulNBits

def _unpack(packed, bits):
    """uint8 (..., n) -> (..., n * 8 // bits) values, lowest bits first (onnxruntime's order)."""
    p = np.asarray(packed, np.uint8)
    if bits == 8:
        return p
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits)
    vals = (p[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return vals.reshape(p.shape[:-1] + (p.shape[-1] * per,))


def _nbits_infer(ctx, a, *_, N, **__):
    s = shape_of(a)
    return [tt(dtype_of(a), None if s is None else tuple(s[:-1]) + (N,))]


def dequantize_nbits(b, scales, zero_points, g_idx, *, K, N, bits, block_size):
    """The (N, K) float32 weight matrix of MatMulNBits."""
    if bits not in (2, 4, 8):
        raise NotImplementedError(f"MatMulNBits: bits={bits} is not supported")
    k_blocks = (K + block_size - 1) // block_size
    q = _unpack(np.asarray(b).reshape(N, -1), bits).reshape(N, -1)[:, : k_blocks * block_size]
    sc = wide(np.asarray(scales)).astype(np.float32).reshape(N, k_blocks)
    if zero_points is None:
        zp = np.full((N, k_blocks), float(1 << (bits - 1)), np.float32)
    elif np.asarray(zero_points).dtype == np.uint8:
        zp = _unpack(np.asarray(zero_points).reshape(N, -1), bits)[:, :k_blocks].astype(np.float32)
    else:  # float zero points, same type as A
        zp = wide(np.asarray(zero_points)).astype(np.float32).reshape(N, k_blocks)
    if g_idx is not None and np.asarray(g_idx).size == K:
        gi = np.asarray(g_idx).astype(np.int64).reshape(K)
        return (q[:, :K].astype(np.float32) - zp[:, gi]) * sc[:, gi]
    q = q.astype(np.float32).reshape(N, k_blocks, block_size)
    w = (q - zp[:, :, None]) * sc[:, :, None]
    return w.reshape(N, -1)[:, :K]


@op("MatMulNBits", domain=MS, infer=_nbits_infer)
def matmul_nbits(a, b, scales, zero_points=None, g_idx=None, bias=None, *, K, N, bits=4, block_size,
                 accuracy_level=0, weight_prepacked=0):
    """Y = A @ dequant(B)^T + bias with B block-quantized along K: (q - zero_point) * scale."""
    if weight_prepacked:
        raise NotImplementedError("MatMulNBits: prepacked (EP-specific) weights are not supported")
    aw = wide(a).astype(np.float32, copy=False)
    if np.asarray(b).size == 0:  # an omitted projection: zeros (+ bias)
        y = np.zeros(aw.shape[:-1] + (N,), np.float32)
    else:
        w = dequantize_nbits(b, scales, zero_points, g_idx, K=K, N=N, bits=bits, block_size=block_size)
        y = np.matmul(aw, w.T)
    if bias is not None:
        y = y + wide(bias)
    return like(y, a.dtype)


# ------------------------------------------------------------------ integer matmuls to float

def _mm_infer(ctx, a, b, *_, **__):
    return [tt(np.float32, matmul_shape(shape_of(a), shape_of(b)))]


def _dynamic_quantize(x):
    """onnxruntime's DynamicQuantizeLinear to uint8: (q, scale, zero_point)."""
    x = np.asarray(x, np.float32)
    lo = np.float32(min(0.0, float(x.min()))) if x.size else np.float32(0)
    hi = np.float32(max(0.0, float(x.max()))) if x.size else np.float32(0)
    scale = np.float32((hi - lo) / np.float32(255))
    if scale == 0:
        return np.zeros(x.shape, np.uint8), np.float32(1), np.float32(0)
    zp = np.float32(np.clip(np.rint(-lo / scale), 0, 255))
    return _quantize(x, scale, zp, np.uint8), scale, zp


def _int_mm_float(qa, azp, as_, qb, bzp, bs, bias):
    acc = _imatmul(qa.astype(np.int32) - _zp(azp), qb.astype(np.int32) - _zp(bzp))
    y = (acc * (_f(as_) * _f(bs)).astype(np.float64)).astype(np.float32)
    if bias is not None:
        y = y + _f(bias)
    return y


@op("DynamicQuantizeMatMul", domain=MS, infer=_mm_infer)
def dynamic_quantize_matmul(a, b, b_scale, b_zero_point=None, bias=None):
    """A quantized on the fly to uint8 (DynamicQuantizeLinear), then integer matmul with B, rescaled."""
    qa, sa, za = _dynamic_quantize(a)
    return _int_mm_float(qa, za.astype(np.int32), sa, b, b_zero_point, b_scale, bias)


def _mm_int_float_infer(ctx, a, b, a_scale=None, *_, **__):
    return [tt(dtype_of(a_scale) or np.float32, matmul_shape(shape_of(a), shape_of(b)))]


@op("MatMulIntegerToFloat", domain=MS, infer=_mm_int_float_infer)
def matmul_integer_to_float(a, b, a_scale, b_scale, a_zero_point=None, b_zero_point=None, bias=None):
    """(A - a_zp) @ (B - b_zp) * a_scale * b_scale + bias; b_scale/b_zp may be per column."""
    y = _int_mm_float(a, a_zero_point, wide(a_scale), b, b_zero_point, wide(b_scale),
                      None if bias is None else wide(bias))
    return like(y, a_scale.dtype)


def _qgemm_infer(ctx, a, a_scale, a_zp, b, b_scale, b_zp, c=None, y_scale=None, y_zp=None, *, transA=0, transB=0,
                 **__):
    sa, sb = shape_of(a), shape_of(b)
    m = None if sa is None else sa[1 if transA else 0]
    n = None if sb is None else sb[0 if transB else 1]
    dt = np.float32 if y_zp is None and y_scale is None else (dtype_of(y_zp) or dtype_of(a))
    return [tt(dt, (m, n))]


@op("QGemm", domain=MS, infer=_qgemm_infer)
def qgemm(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None, y_zero_point=None, *,
          alpha=1.0, transA=0, transB=0):
    """alpha * a_scale * b_scale * ((A - a_zp) @ (B - b_zp) + C), float or requantized to y."""
    qa = np.asarray(a).T if transA else np.asarray(a)
    qb = np.asarray(b).T if transB else np.asarray(b)
    acc = _imatmul(qa.astype(np.int32) - _zp(a_zero_point), qb.astype(np.int32) - _zp(b_zero_point))
    if c is not None:
        acc = acc + np.asarray(c).astype(np.float64)
    scale = (np.float32(alpha) * _f(a_scale).reshape(-1)[0] * _f(b_scale).reshape(-1)).astype(np.float64)
    y = (acc * scale).astype(np.float32)
    if y_scale is None:
        return y
    zdt = np.asarray(y_zero_point).dtype if y_zero_point is not None else np.asarray(a).dtype
    return _quantize(y, y_scale, _zp(y_zero_point, np.float32), zdt)


# ------------------------------------------------------------------ QLinear elementwise

def _deq(x, scale, zp):
    return (np.asarray(x).astype(np.float32) - _zp(zp, np.float32)) * _f(scale)


def _qbinary_infer(ctx, a, a_s=None, a_zp=None, b=None, *_, **__):
    return [tt(dtype_of(a), bshape(shape_of(a), shape_of(b)))]


@op("QLinearAdd", domain=MS, infer=_qbinary_infer)
def qlinear_add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point=None):
    y = _deq(a, a_scale, a_zero_point) + _deq(b, b_scale, b_zero_point)
    return _quantize(y, c_scale, _zp(c_zero_point, np.float32), np.asarray(a).dtype)


@op("QLinearMul", domain=MS, infer=_qbinary_infer)
def qlinear_mul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point=None):
    y = _deq(a, a_scale, a_zero_point) * _deq(b, b_scale, b_zero_point)
    return _quantize(y, c_scale, _zp(c_zero_point, np.float32), np.asarray(a).dtype)


def _qunary(x, x_scale, x_zp, y_scale, y_zp, fn):
    """Through a 256-entry lookup table, exactly as each code maps (like onnxruntime)."""
    x = np.asarray(x)
    codes = np.arange(256, dtype=np.int32) + (np.iinfo(x.dtype).min)
    table = _quantize(fn(_deq(codes, x_scale, x_zp)), y_scale, _zp(y_zp, np.float32), x.dtype)
    return table[x.astype(np.int32) - np.iinfo(x.dtype).min]


_same = lambda ctx, x, *_, **__: [tt(dtype_of(x), shape_of(x))]  # noqa: E731


@op("QLinearSigmoid", domain=MS, infer=_same)
def qlinear_sigmoid(x, x_scale, x_zero_point, y_scale, y_zero_point=None):
    return _qunary(x, x_scale, x_zero_point, y_scale, y_zero_point, lambda v: expit(v).astype(np.float32))


@op("QLinearLeakyRelu", domain=MS, infer=_same)
def qlinear_leaky_relu(x, x_scale, x_zero_point, y_scale, y_zero_point=None, *, alpha=0.01):
    a = np.float32(alpha)
    return _qunary(x, x_scale, x_zero_point, y_scale, y_zero_point, lambda v: np.where(v >= 0, v, v * a))


def _qgap_infer(ctx, x, *_, channels_last=0, **__):
    s = shape_of(x)
    if s is None:
        return [tt(dtype_of(x), None)]
    if channels_last:
        return [tt(dtype_of(x), (s[0],) + (1,) * (len(s) - 2) + (s[-1],))]
    return [tt(dtype_of(x), tuple(s[:2]) + (1,) * (len(s) - 2))]


@op("QLinearGlobalAveragePool", domain=MS, infer=_qgap_infer)
def qlinear_global_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, *, channels_last=0):
    x = np.asarray(x)
    axes = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
    # integer sum is exact; the mean of (x - zp) then rescales once
    total = np.sum(x.astype(np.int64), axis=axes, keepdims=True).astype(np.float64)
    count = mul(*(x.shape[i] for i in axes)) or 1
    mean = (total / count - float(_zp(x_zero_point, np.float32))) * float(_f(x_scale))
    return _quantize(mean.astype(np.float32), y_scale, _zp(y_zero_point, np.float32), x.dtype)


def _qconcat_infer(ctx, y_scale, y_zp, *rest, axis, **__):
    tensors = [shape_of(t) for t in rest[0::3]]
    dt = dtype_of(y_zp)
    if any(s is None for s in tensors) or not tensors:
        return [tt(dt, None)]
    r = len(tensors[0])
    ax = axis + r if axis < 0 else axis
    out = list(tensors[0])
    out[ax] = sum(s[ax] for s in tensors) if all(isinstance(s[ax], int) for s in tensors) else None
    for i in range(r):
        if i != ax:
            out[i] = next((s[i] for s in tensors if isinstance(s[i], int)), out[i])
    return [tt(dt, out)]


@op("QLinearConcat", domain=MS, infer=_qconcat_infer)
def qlinear_concat(y_scale, y_zero_point, *inputs, axis):
    """Concat of (tensor, scale, zero_point) triples requantized to (y_scale, y_zero_point)."""
    if len(inputs) % 3:
        raise ValueError("QLinearConcat: inputs must come in (tensor, scale, zero_point) triples")
    ydt = np.asarray(y_zero_point).dtype
    ys, yz = _f(y_scale).reshape(()), _zp(y_zero_point, np.float32).reshape(())
    parts = []
    for x, s, z in zip(inputs[0::3], inputs[1::3], inputs[2::3]):
        x = np.asarray(x)
        if x.dtype == ydt and _f(s).reshape(()) == ys and _zp(z, np.float32).reshape(()) == yz:
            parts.append(x)
        else:
            parts.append(_quantize(_deq(x, s, z), ys, yz, ydt))
    return np.concatenate(parts, axis=axis)


# ------------------------------------------------------------------ DynamicQuantizeLSTM

def _act(name, alpha, beta):
    n = name.lower()
    a = None if alpha is None else np.float32(alpha)
    b = None if beta is None else np.float32(beta)
    table = {
        "sigmoid": lambda x: expit(x),
        "tanh": np.tanh,
        "relu": lambda x: np.maximum(x, 0),
        "affine": lambda x: (1.0 if a is None else a) * x + (0.0 if b is None else b),
        "leakyrelu": lambda x: np.where(x >= 0, x, (0.01 if a is None else a) * x),
        "thresholdedrelu": lambda x: np.where(x > (1.0 if a is None else a), x, 0),
        "scaledtanh": lambda x: (1.0 if a is None else a) * np.tanh((1.0 if b is None else b) * x),
        "hardsigmoid": lambda x: np.clip((0.2 if a is None else a) * x + (0.5 if b is None else b), 0, 1),
        "elu": lambda x: np.where(x >= 0, x, (1.0 if a is None else a) * (np.exp(np.minimum(x, 0)) - 1)),
        "softsign": lambda x: x / (1 + np.abs(x)),
        "softplus": lambda x: np.logaddexp(0, x),
    }
    if n not in table:
        raise NotImplementedError(f"LSTM activation {name!r} is not supported")
    return lambda x: table[n](x).astype(np.float32, copy=False)


def _lstm_acts(activations, alpha, beta, num_dirs):
    names = list(activations) if activations else ["Sigmoid", "Tanh", "Tanh"] * num_dirs
    alpha, beta = list(alpha or []), list(beta or [])
    # alpha/beta are consumed in order by the activations that take them
    takes = {"affine": 2, "leakyrelu": 1, "thresholdedrelu": 1, "scaledtanh": 2, "hardsigmoid": 2, "elu": 1}
    out, ia, ib = [], 0, 0
    for n in names:
        k = takes.get(n.lower(), 0)
        a = alpha[ia] if k >= 1 and ia < len(alpha) else None
        b = beta[ib] if k >= 2 and ib < len(beta) else None
        ia += k >= 1
        ib += k >= 2
        out.append(_act(n, a, b))
    return [out[3 * d: 3 * d + 3] for d in range(num_dirs)]


def _dequant_w(wq, scale, zp):
    """(D, in, 4H) int weights with per-direction or per-(direction, column) scale/zero point."""
    wq = np.asarray(wq).astype(np.float32)
    d = wq.shape[0]
    s = _f(scale).reshape(d, 1, -1)
    z = np.asarray(zp).astype(np.float32).reshape(d, 1, -1)
    return (wq - z) * s


def _lstm_infer(ctx, x, w, r, *_, hidden_size=None, direction="forward", **__):
    xs, rs = shape_of(x), shape_of(r)
    d = 2 if direction == "bidirectional" else 1
    h = hidden_size or (None if rs is None else rs[1])
    t, b = (None, None) if xs is None else (xs[0], xs[1])
    outs = [tt(np.float32, (t, d, b, h)), tt(np.float32, (d, b, h)), tt(np.float32, (d, b, h))]
    return outs[: max(1, ctx.num_outputs or 1)]


@op("DynamicQuantizeLSTM", domain=MS, infer=_lstm_infer)
def dynamic_quantize_lstm(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None,
                          w_scale=None, w_zero_point=None, r_scale=None, r_zero_point=None, *,
                          hidden_size=None, direction="forward", activations=None, activation_alpha=None,
                          activation_beta=None, clip=None, input_forget=0):
    """ONNX LSTM (gates i, o, f, c) with W (D, in, 4H) and R (D, H, 4H) dequantized from int8/uint8.

    onnxruntime also quantizes X and H dynamically on the fly; this reference runs in float32,
    so results agree to quantization accuracy, not bit-exactly."""
    xw = _f(x)
    seq, batch, _ = xw.shape
    wd = _dequant_w(w, w_scale, w_zero_point)
    rd = _dequant_w(r, r_scale, r_zero_point)
    nd = wd.shape[0]
    hs = hidden_size or rd.shape[1]
    acts = _lstm_acts(activations, activation_alpha, activation_beta, nd)
    lens = np.full(batch, seq, np.int64) if sequence_lens is None else np.asarray(sequence_lens).astype(np.int64)
    y = np.zeros((seq, nd, batch, hs), np.float32)
    yh = np.zeros((nd, batch, hs), np.float32)
    yc = np.zeros((nd, batch, hs), np.float32)
    for d in range(nd):
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        f_act, g_act, h_act = acts[d]
        bias = np.zeros(8 * hs, np.float32) if b is None else _f(b)[d]
        bias = bias[: 4 * hs] + bias[4 * hs:]
        pi, po, pf = (np.zeros(hs, np.float32),) * 3 if p is None else np.split(_f(p)[d], 3)
        h = np.zeros((batch, hs), np.float32) if initial_h is None else _f(initial_h)[d].copy()
        c = np.zeros((batch, hs), np.float32) if initial_c is None else _f(initial_c)[d].copy()
        xg = np.matmul(xw, wd[d]) + bias  # (T, B, 4H): input projections for all steps at once
        for step in range(seq):
            # reverse direction walks each sequence backwards from its own last valid step
            t_idx = np.where(lens > step, lens - 1 - step, 0) if reverse else np.full(batch, step)
            live = (lens > step)[:, None]
            g = xg[t_idx, np.arange(batch)] + h @ rd[d]
            gi, go, gf, gc = np.split(g, 4, axis=1)
            if clip is not None:
                cl = np.float32(clip)
                gi, go, gf, gc = (np.clip(v, -cl, cl) for v in (gi, go, gf, gc))
            i = f_act(gi + pi * c)
            f = 1 - i if input_forget else f_act(gf + pf * c)
            c_new = f * c + i * g_act(gc)
            o = f_act(go + po * c_new)
            h_new = o * h_act(c_new)
            c = np.where(live, c_new, c)
            h = np.where(live, h_new, h)
            rows = np.nonzero(live[:, 0])[0]
            y[t_idx[rows], d, rows] = h_new[rows]
        yh[d], yc[d] = h, c
    return y, yh, yc
