"""Row kernels for the CPU backend: LayerNorm, SkipLayerNorm, RMSNorm, Softmax/LogSoftmax, bias+GELU.

Every kernel works on the last axis ("rows" of a C-contiguous float32 [R, N] array), one row at a
time with the row held in L1/L2 (two or three passes over it), rows split into ``threads``
contiguous chunks (1: the serial kernel, no Numba pool touched; >1: ``prange`` over the chunks).

Semantics follow the registry's reference kernels exactly (same rounding points):

    layer_norm(x, gamma, beta, eps, out)           jitort::LayerNorm / LayerNormalization-17
        y = (x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma + beta      (two-pass variance)
    skip_layer_norm(x, skip, gamma, beta, bias, eps, out, sum_out)   jitort::SkipLayerNorm
        s = (x + skip) + bias (rounded to float32), y = layer_norm(s); sum_out = s (optional)
        skip may have fewer rows than x (row i uses skip row i % skip_rows: trailing broadcast)
    rms_norm(x, scale, eps, out)                   jitort::RMSNorm
        y = x / sqrt(mean(x^2) + eps) * scale
    softmax(x, out) / log_softmax(x, out)          Softmax-13 / LogSoftmax-13, axis -1
        max-shifted; a non-finite row max shifts by 0 (as the reference does)
    bias_gelu(x, bias, out, approximate)           jitort::Gelu(x + bias[None, :])
        approximate "none" (erf) or "tanh"; bias may be None

The 2-D functions take preallocated float32 outputs (which may alias their inputs, except the
reductions' ``sum_out``); the N-D wrappers (``*_nd``) reshape to rows, accept float16 (computed
in float32, rounded back; for SkipLayerNorm the sum is rounded in float16 first, like the
reference) and allocate outputs.

Compile flags: ``error_model='numpy'`` everywhere. Elementwise loops use
``fastmath=vecmath.FASTMATH`` (never ``True``: it breaks vecmath's exp). Float reductions
(sums, max) cannot vectorize without ``reassoc``, which vecmath forbids for *its* code; so the
pure reductions live in separate non-inlined helpers compiled with ``FASTMATH | {reassoc}``
(they call no vecmath function; reassociation only changes the summation order to 16-wide
lanes). LLVM may inline them after Numba compiled them; the flags stay on their instructions.
The row max uses llvm.maxnum (nan-ignoring; a nan makes the whole softmax row nan anyway),
whose reduction vectorizes under reassoc (a compare+select max did not). Softmax fuses exp and
its sum in one pass (16 explicit lanes, no reassoc near vecmath.exp).

Measured (benchmarks/row_kernels.py, float32, 1 thread, load average ~3 on the 2 shared cores,
so all figures are inflated and noisy), ms, ORT/jitort in brackets: LayerNorm [1024, 768] 0.31
(1.9x), SkipLayerNorm 0.46 (11.6x: ORT's contrib kernel is slow here), Softmax 1.03 (0.53x),
bias+GELU erf [1024, 3072] 11.8 (0.58x), tanh 5.9 (0.93x). Softmax and GELU are bound by
vecmath's exp/erf (8-wide ymm code, ~0.7 and ~3 ns/element); 2-thread figures were dominated by
scheduler ticks (4-12 ms) while other processes held the cores.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import vecmath as vm

__all__ = [
    "DTYPES",
    "bias_gelu",
    "bias_gelu_nd",
    "layer_norm",
    "layer_norm_nd",
    "log_softmax",
    "log_softmax_nd",
    "rms_norm",
    "rms_norm_nd",
    "skip_layer_norm",
    "skip_layer_norm_nd",
    "softmax",
    "softmax_nd",
]

DTYPES = (np.dtype(np.float32), np.dtype(np.float16))

f32 = np.float32
_FM = set(vm.FASTMATH)
_FM_RED = set(vm.FASTMATH) | {"reassoc"}
_EW = {"error_model": "numpy", "fastmath": _FM, "cache": True, "nogil": True}
_RED = {**_EW, "fastmath": _FM_RED, "inline": "never"}
_PAR = {**_EW, "parallel": True}

_ZERO, _ONE = f32(0.0), f32(1.0)
_INF = f32(np.inf)


# -- reductions over one row (reassoc: vectorized 16 lanes) ----------------------------------------

@njit(**_RED)
def _row_sum(x, i, n):
    s = _ZERO
    for j in range(n):
        s += x[i, j]
    return s


@njit(**_RED)
def _row_sqdev(x, i, n, mean):
    s = _ZERO
    for j in range(n):
        d = x[i, j] - mean
        s += d * d
    return s


@njit(**_RED)
def _row_sumsq(x, i, n):
    s = _ZERO
    for j in range(n):
        v = x[i, j]
        s += v * v
    return s


@intrinsic
def _maxnum(typingctx, a, b):
    """llvm.maxnum.f32 (nan-ignoring max): unlike a compare+select, its reduction vectorizes
    under reassoc alone (measured 0.094 vs 0.26 ms for 1024 rows x 768)."""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, sig, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f]),
                                            "llvm.maxnum.f32")
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32), codegen


@njit(**_RED)
def _row_max(x, i, n):
    """Row max ignoring nans (a nan anywhere makes the softmax row nan anyway)."""
    m = -_INF
    for j in range(n):
        m = _maxnum(m, x[i, j])
    return m


# -- per-chunk bodies (rows lo..hi) -------------------------------------------------------------------

@njit(inline="always", **_EW)
def _ln_rows(x, g, b, eps, out, lo, hi):
    n = x.shape[1]
    rn = _ONE / f32(n) if n > 0 else _ZERO
    for i in range(lo, hi):
        mean = _row_sum(x, i, n) * rn
        var = _row_sqdev(x, i, n, mean) * rn
        inv = _ONE / np.sqrt(var + eps)
        for j in range(n):
            out[i, j] = (x[i, j] - mean) * inv * g[j] + b[j]


@njit(inline="always", **_EW)
def _skip_ln_rows(x, skip, g, b, bias, eps, out, sm, write_sum, lo, hi):
    n = x.shape[1]
    srows = skip.shape[0]
    rn = _ONE / f32(n) if n > 0 else _ZERO
    for i in range(lo, hi):
        si = i % srows
        # the sum goes to out first (it is rounded to float32 there, as the reference rounds it)
        for j in range(n):
            out[i, j] = (x[i, j] + skip[si, j]) + bias[j]
        if write_sum:
            for j in range(n):
                sm[i, j] = out[i, j]
        mean = _row_sum(out, i, n) * rn
        var = _row_sqdev(out, i, n, mean) * rn
        inv = _ONE / np.sqrt(var + eps)
        for j in range(n):
            out[i, j] = (out[i, j] - mean) * inv * g[j] + b[j]


@njit(inline="always", **_EW)
def _rms_rows(x, g, eps, out, lo, hi):
    n = x.shape[1]
    rn = _ONE / f32(n) if n > 0 else _ZERO
    for i in range(lo, hi):
        ms = _row_sumsq(x, i, n) * rn
        inv = _ONE / np.sqrt(ms + eps)
        for j in range(n):
            out[i, j] = x[i, j] * inv * g[j]


@njit(inline="always", **_EW)
def _shift(x, i, n):
    # a nan anywhere makes the whole row nan whatever the shift, so the select-max may skip it
    m = _row_max(x, i, n)
    if not (m > -_INF and m < _INF):     # reference: a non-finite max shifts by 0
        m = _ZERO
    return m


@njit(inline="always", **_EW)
def _exp_sum_row(x, i, n, m, out, acc):
    """out[i] = exp(x[i] - m); returns the row sum. The sum runs in 16 lanes (acc) so that the
    loop vectorizes without reassoc (which vecmath.exp must not get): one pass instead of two."""
    n16 = n - n % 16
    for k in range(16):
        acc[k] = _ZERO
    for jb in range(0, n16, 16):
        for k in range(16):
            e = vm.exp(x[i, jb + k] - m)
            out[i, jb + k] = e
            acc[k] += e
    s = _ZERO
    for j in range(n16, n):
        e = vm.exp(x[i, j] - m)
        out[i, j] = e
        s += e
    for k in range(16):
        s += acc[k]
    return s


@njit(inline="always", **_EW)
def _softmax_rows(x, out, lo, hi):
    n = x.shape[1]
    acc = np.empty(16, np.float32)
    for i in range(lo, hi):
        m = _shift(x, i, n)
        r = _ONE / _exp_sum_row(x, i, n, m, out, acc)
        for j in range(n):
            out[i, j] = out[i, j] * r


@njit(inline="always", **_EW)
def _log_softmax_rows(x, out, lo, hi):
    n = x.shape[1]
    acc = np.empty(16, np.float32)
    for i in range(lo, hi):
        m = _shift(x, i, n)
        ls = vm.log(_exp_sum_row(x, i, n, m, out, acc))
        for j in range(n):
            out[i, j] = (x[i, j] - m) - ls


@njit(inline="always", **_EW)
def _gelu_erf_rows(x, bias, out, lo, hi):
    n = x.shape[1]
    for i in range(lo, hi):
        for j in range(n):
            out[i, j] = vm.gelu_erf(x[i, j] + bias[j])


@njit(inline="always", **_EW)
def _gelu_tanh_rows(x, bias, out, lo, hi):
    n = x.shape[1]
    for i in range(lo, hi):
        for j in range(n):
            out[i, j] = vm.gelu_tanh(x[i, j] + bias[j])


# -- drivers: serial (threads == 1) and parallel over `nt` contiguous row chunks -------------------

@njit(**_EW)
def _ln_1(x, g, b, eps, out):
    _ln_rows(x, g, b, eps, out, 0, x.shape[0])


@njit(**_PAR)
def _ln_p(x, g, b, eps, out, nt):
    r = x.shape[0]
    for t in prange(nt):
        _ln_rows(x, g, b, eps, out, t * r // nt, (t + 1) * r // nt)


@njit(**_EW)
def _skip_ln_1(x, skip, g, b, bias, eps, out, sm, write_sum):
    _skip_ln_rows(x, skip, g, b, bias, eps, out, sm, write_sum, 0, x.shape[0])


@njit(**_PAR)
def _skip_ln_p(x, skip, g, b, bias, eps, out, sm, write_sum, nt):
    r = x.shape[0]
    for t in prange(nt):
        _skip_ln_rows(x, skip, g, b, bias, eps, out, sm, write_sum, t * r // nt, (t + 1) * r // nt)


@njit(**_EW)
def _rms_1(x, g, eps, out):
    _rms_rows(x, g, eps, out, 0, x.shape[0])


@njit(**_PAR)
def _rms_p(x, g, eps, out, nt):
    r = x.shape[0]
    for t in prange(nt):
        _rms_rows(x, g, eps, out, t * r // nt, (t + 1) * r // nt)


@njit(**_EW)
def _softmax_1(x, out):
    _softmax_rows(x, out, 0, x.shape[0])


@njit(**_PAR)
def _softmax_p(x, out, nt):
    r = x.shape[0]
    for t in prange(nt):
        _softmax_rows(x, out, t * r // nt, (t + 1) * r // nt)


@njit(**_EW)
def _log_softmax_1(x, out):
    _log_softmax_rows(x, out, 0, x.shape[0])


@njit(**_PAR)
def _log_softmax_p(x, out, nt):
    r = x.shape[0]
    for t in prange(nt):
        _log_softmax_rows(x, out, t * r // nt, (t + 1) * r // nt)


@njit(**_EW)
def _gelu_erf_1(x, bias, out):
    _gelu_erf_rows(x, bias, out, 0, x.shape[0])


@njit(**_PAR)
def _gelu_erf_p(x, bias, out, nt):
    r = x.shape[0]
    for t in prange(nt):
        _gelu_erf_rows(x, bias, out, t * r // nt, (t + 1) * r // nt)


@njit(**_EW)
def _gelu_tanh_1(x, bias, out):
    _gelu_tanh_rows(x, bias, out, 0, x.shape[0])


@njit(**_PAR)
def _gelu_tanh_p(x, bias, out, nt):
    r = x.shape[0]
    for t in prange(nt):
        _gelu_tanh_rows(x, bias, out, t * r // nt, (t + 1) * r // nt)


# -- 2-D API (float32, C-contiguous, preallocated outputs) -----------------------------------------

def _check2(name, *arrs):
    for a in arrs:
        if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 2
                and a.flags.c_contiguous):
            raise TypeError(f"{name}: expected C-contiguous 2-D float32 arrays, got "
                            f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
    shape = arrs[0].shape
    for a in arrs[1:]:
        if a.shape != shape:
            raise ValueError(f"{name}: shape {a.shape} != {shape}")


def _vec(name, v, n, fill):
    """A parameter vector (gamma, beta, bias...) as contiguous float32 (n,), broadcast; None -> fill."""
    if v is None:
        return np.full(n, fill, dtype=np.float32)
    v = np.asarray(v)
    try:
        v = np.broadcast_to(v, (n,)) if v.ndim <= 1 else np.broadcast_to(v.reshape(-1), (n,))
    except ValueError:
        raise ValueError(f"{name}: parameter of shape {np.shape(v)} does not broadcast to ({n},)") from None
    return np.ascontiguousarray(v, dtype=np.float32)


def _threads(threads, rows):
    t = int(threads)
    if t < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return min(t, max(rows, 1))


def layer_norm(x, gamma, beta, eps, out, threads=1):
    """out = LayerNorm(x) over the last axis * gamma + beta (beta may be None)."""
    _check2("layer_norm", x, out)
    n = x.shape[1]
    g, b = _vec("layer_norm", gamma, n, 1.0), _vec("layer_norm", beta, n, 0.0)
    nt = _threads(threads, x.shape[0])
    if nt == 1:
        _ln_1(x, g, b, f32(eps), out)
    else:
        _ln_p(x, g, b, f32(eps), out, nt)
    return out


def skip_layer_norm(x, skip, gamma, beta, bias, eps, out, sum_out=None, threads=1):
    """s = (x + skip) + bias; out = LayerNorm(s) * gamma + beta; sum_out = s when given.
    skip is [R, N] or [R', N] with R % R' == 0 (row i uses skip row i % R')."""
    _check2("skip_layer_norm", x, out)
    _check2("skip_layer_norm", skip)
    r, n = x.shape
    if skip.shape[1] != n or (r and (skip.shape[0] == 0 or r % skip.shape[0])):
        raise ValueError(f"skip_layer_norm: skip {skip.shape} does not tile x {x.shape}")
    if sum_out is not None:
        _check2("skip_layer_norm", x, sum_out)
        sm, ws = sum_out, True
    else:
        sm, ws = np.empty((0, 0), np.float32), False
    if skip.shape[0] == 0:
        skip = np.empty((1, n), np.float32)     # no rows to run: keep i % srows defined
    g, b = _vec("skip_layer_norm", gamma, n, 1.0), _vec("skip_layer_norm", beta, n, 0.0)
    bb = _vec("skip_layer_norm", bias, n, 0.0)
    nt = _threads(threads, r)
    if nt == 1:
        _skip_ln_1(x, skip, g, b, bb, f32(eps), out, sm, ws)
    else:
        _skip_ln_p(x, skip, g, b, bb, f32(eps), out, sm, ws, nt)
    return out


def rms_norm(x, scale, eps, out, threads=1):
    """out = x / sqrt(mean(x^2) + eps) * scale (scale may be None) over the last axis."""
    _check2("rms_norm", x, out)
    g = _vec("rms_norm", scale, x.shape[1], 1.0)
    nt = _threads(threads, x.shape[0])
    if nt == 1:
        _rms_1(x, g, f32(eps), out)
    else:
        _rms_p(x, g, f32(eps), out, nt)
    return out


def softmax(x, out, threads=1):
    """Softmax over the last axis (opset-13 semantics)."""
    _check2("softmax", x, out)
    nt = _threads(threads, x.shape[0])
    if nt == 1:
        _softmax_1(x, out)
    else:
        _softmax_p(x, out, nt)
    return out


def log_softmax(x, out, threads=1):
    """LogSoftmax over the last axis (opset-13 semantics)."""
    _check2("log_softmax", x, out)
    nt = _threads(threads, x.shape[0])
    if nt == 1:
        _log_softmax_1(x, out)
    else:
        _log_softmax_p(x, out, nt)
    return out


def bias_gelu(x, bias, out, approximate="none", threads=1):
    """out = GELU(x + bias[None, :]) (bias may be None); approximate 'none' (erf) or 'tanh'."""
    _check2("bias_gelu", x, out)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"bias_gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    b = _vec("bias_gelu", bias, x.shape[1], 0.0)
    nt = _threads(threads, x.shape[0])
    erf_ = approximate == "none"
    if nt == 1:
        (_gelu_erf_1 if erf_ else _gelu_tanh_1)(x, b, out)
    else:
        (_gelu_erf_p if erf_ else _gelu_tanh_p)(x, b, out, nt)
    return out


# -- N-D wrappers ----------------------------------------------------------------------------------

def _rows(x, axis=-1):
    """x as a contiguous float32 [rows, width] array normalizing over the axes [axis, rank)."""
    x = np.asarray(x)
    if x.dtype not in DTYPES:
        raise TypeError(f"row kernels support {[str(d) for d in DTYPES]}, got {x.dtype}")
    if x.ndim == 0:
        x = x.reshape(1)
    a = axis + x.ndim if axis < 0 else axis
    if not 0 <= a < x.ndim:
        raise ValueError(f"axis {axis} out of range for rank {x.ndim}")
    width = int(np.prod(x.shape[a:], dtype=np.int64))
    rows = int(np.prod(x.shape[:a], dtype=np.int64))
    return np.ascontiguousarray(x, dtype=np.float32).reshape(rows, width), x.shape[a:]


def _param(v, norm_shape):
    return None if v is None else np.broadcast_to(np.asarray(v), norm_shape).reshape(-1)


def _back(y2, x):
    x = np.asarray(x)
    return y2.reshape(x.shape).astype(x.dtype, copy=False)


def layer_norm_nd(x, gamma, beta=None, *, axis=-1, epsilon=1e-5, threads=1):
    """LayerNormalization-17 / jitort::LayerNorm over the axes [axis, rank)."""
    x2, ns = _rows(x, axis)
    out = np.empty_like(x2)
    layer_norm(x2, _param(gamma, ns), _param(beta, ns), epsilon, out, threads)
    return _back(out, x)


def skip_layer_norm_nd(x, skip, gamma, beta=None, bias=None, *, epsilon=1e-5, with_sum=False,
                       threads=1):
    """jitort::SkipLayerNorm over the last axis; returns y or (y, sum) when with_sum."""
    x, skip = np.asarray(x), np.asarray(skip)
    if x.dtype != np.float32:
        # narrow floats: the sum is rounded in x's dtype first (as the reference), then normalized
        s = x + skip if bias is None else (x + skip) + bias
        s = s.astype(x.dtype, copy=False)
        y = layer_norm_nd(s, gamma, beta, epsilon=epsilon, threads=threads)
        return (y, s) if with_sum else y
    shape = np.broadcast_shapes(x.shape, skip.shape)
    if shape != x.shape:
        x = np.broadcast_to(x, shape)
    x2, _ = _rows(x)
    n = x2.shape[1]
    if x2.size == 0:
        y = np.empty(shape, np.float32)
        return (y, np.empty(shape, np.float32)) if with_sum else y
    core = skip.shape
    while core and core[0] == 1 and len(core) > 1:
        core = core[1:]                    # leading 1s: the same rows for every leading index
    if skip.shape == shape or (x2.shape[0] and core and core[-1] == n
                               and tuple(core) == tuple(shape[len(shape) - len(core):])):
        s2 = np.ascontiguousarray(skip, dtype=np.float32).reshape(-1, n)   # tiles x's rows
    else:
        s2 = np.ascontiguousarray(np.broadcast_to(skip, shape), dtype=np.float32).reshape(-1, n)
    out = np.empty_like(x2)
    sm = np.empty_like(x2) if with_sum else None
    skip_layer_norm(x2, s2, gamma, beta, bias, epsilon, out, sm, threads)
    y = out.reshape(shape)
    return (y, sm.reshape(shape)) if with_sum else y


def rms_norm_nd(x, scale=None, *, axis=-1, epsilon=1e-5, threads=1):
    """jitort::RMSNorm over the axes [axis, rank)."""
    x2, ns = _rows(x, axis)
    out = np.empty_like(x2)
    rms_norm(x2, _param(scale, ns), epsilon, out, threads)
    return _back(out, x)


def softmax_nd(x, *, threads=1):
    """Softmax-13 with axis=-1."""
    x2, _ = _rows(x)
    return _back(softmax(x2, np.empty_like(x2), threads), x)


def log_softmax_nd(x, *, threads=1):
    """LogSoftmax-13 with axis=-1."""
    x2, _ = _rows(x)
    return _back(log_softmax(x2, np.empty_like(x2), threads), x)


def bias_gelu_nd(x, bias=None, *, approximate="none", threads=1):
    """GELU(x + bias) with bias of shape (x.shape[-1],) (or None)."""
    x2, _ = _rows(x)
    return _back(bias_gelu(x2, bias, np.empty_like(x2), approximate, threads), x)
