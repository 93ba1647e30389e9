"""Row kernels for the CPU backend: LayerNorm, SkipLayerNorm, RMSNorm, Softmax/LogSoftmax, bias+GELU.

Every kernel works on the last axis ("rows" of a C-contiguous float32 [R, N] array), one row at a
time with the row held in L1/L2 (two or three passes over it), rows split into ``threads``
contiguous chunks (1: the serial kernel, no Numba pool touched; >1: ``prange`` over the chunks).

Semantics follow the registry's reference kernels (same rounding points; sums in 16-lane
order; exp, erf and tanh within vecmath's tested error bounds, exp_neg's 2 ulp for softmax):

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

The 2-D functions take preallocated float32 outputs (out may be x itself, or another view of
x's buffer; ``sum_out`` may not alias anything); the N-D wrappers (``*_nd``) reshape to rows,
accept float16 (computed in float32, rounded back; for SkipLayerNorm the sum is rounded in
float16 first, like the reference) and allocate outputs.

Compile flags: ``error_model='numpy'`` everywhere, ``fastmath=vecmath.FASTMATH`` (never
``True``: it breaks vecmath's exp), and ``vecmath.wide_vectors()`` at the top of every row body
(512-bit vectors on AVX-512 hosts, whose LLVM tuning otherwise picks 256). Reductions need
``reassoc`` to vectorize, which vecmath's code must not get; Numba puts one flag set on every
op of a function, so the reduction steps are two intrinsics that carry the flags themselves:
``_radd`` (fadd reassoc) and ``_rmax`` (llvm.maxnum reassoc nnan). A loop can then compute
exps and sum them in one pass, with the partial sums in registers.

Structure: software-pipelined over rows (the first, cache-missing pass over row i+1 runs inside
the compute-bound last pass over row i; see the comment above ``_ln_rows``). Softmax: max of
row 0; per row, one pass exp(x - max) -> out with its sum and the max of the next row, one
scaling pass; rows whose max is finite (all but +-inf/nan rows) use ``vecmath.exp_neg``.
In place (out starts at x's data) runs a second compiled copy of each body with x as out: with
two arrays LLVM's runtime overlap check fails and the scalar loop runs.

Measured (benchmarks/row_kernels.py --rounds 5 --runs 30 --floor, float32, medians of
per-process medians; Intel Xeon with AVX-512 under KVM, 2 vCPUs, LLVM host cpu "rocketlake";
the machine was shared with other jobs: load average 2.7-3.4, i.e. another process held one of
the two cores), ms, ORT/jitort in brackets, 1 thread, before -> after this kernel set:

    LayerNorm      [1024, 256]   0.064 (1.9x)  -> 0.047 (2.6x)    floor 0.047
                   [128, 768]    0.022 (1.8x)  -> 0.018 (2.3x)    floor 0.010
                   [1024, 768]   0.234 (1.5x)  -> 0.220 (1.6x)    floor 0.213
    SkipLayerNorm  [128, 768]    0.036 (12x)   -> 0.023 (18x)
                   [1024, 768]   0.368 (9.6x)  -> 0.339 (10x)
    Softmax        [1536, 128]   0.137 (0.45x) -> 0.047 (1.34x)   floor 0.022
                   [12288, 128]  1.19  (0.44x) -> 0.445 (1.10x)   floor 0.428
                   [1024, 768]   0.518 (0.44x) -> 0.224 (1.05x)   floor 0.213
    bias+GELU erf  [128, 3072]   0.479 (0.72x) -> 0.161 (2.2x)    floor 0.094
                   [1024, 3072]  3.75  (0.83x) -> 1.33  (2.7x)    floor 0.857
    bias+GELU tanh [128, 3072]   0.306 (0.94x) -> 0.148 (2.0x)    floor 0.093
                   [1024, 3072]  2.58  (1.0x)  -> 1.35  (1.9x)    floor 0.852

"floor": a Numba loop out = 1.5 * x on the same shape, 512-bit vectors: the memory traffic any
row kernel pays. LayerNorm and Softmax run at that floor from 3 MB per tensor up (beyond the
2 MB L2), and so does onnxruntime's Softmax: no kernel can be 3x faster there. The GELUs are
compute-bound in cache (about 28 vector instructions per 16 elements, see vecmath) and
compute plus traffic beyond it.

2 threads (NUMBA_THREADING_LAYER=omp, ``threads=2``): measurable only while no other job ran
(2 rounds started when both cores had been >85% idle for 8 s; load average 2.0), ms, after:
LayerNorm [1024, 256] 0.026 (ORT 0.104: 4.1x), [128, 768] 0.014 (1.9x), [1024, 768] 0.103
(1.9x); SkipLayerNorm [128, 768] 0.017 (13x), [1024, 768] 0.178 (10x); Softmax [1536, 128]
0.029 (1.18x), [12288, 128] 0.233 (1.16x), [1024, 768] 0.106 (1.05x); bias+GELU erf
[128, 3072] 0.087 (1.9x), [1024, 3072] 0.70 (2.3x); tanh [128, 3072] 0.075 (1.9x),
[1024, 3072] 0.76 (1.7x). With the second core busy, every parallel region of Numba's omp pool
waits for a scheduler tick (5-8 ms per call, every call), while onnxruntime's pool falls back
to about its 1-thread time (presumably its main thread runs the work a late worker has not
started; not checked).
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
_EW = {"error_model": "numpy", "fastmath": _FM, "cache": True, "nogil": True}
_PAR = {**_EW, "parallel": True}

_ZERO, _ONE = f32(0.0), f32(1.0)
_INF = f32(np.inf)


# -- reduction steps that vectorize inside elementwise loops ----------------------------------------
# Numba puts one set of fastmath flags on every float op of a function (vecmath's code inlined
# included), and vecmath must not get reassoc. These two put reassoc on the one reduction step
# only, so a loop can compute exps (no reassoc) and reduce (reassoc: 16 lanes in registers) in
# the same pass.

@intrinsic
def _radd(typingctx, a, b):
    """a + b with reassoc (a sum reduction in a loop vectorizes; only its order changes)."""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=("reassoc", "contract", "nsz"))

    return types.float32(types.float32, types.float32), codegen


@intrinsic
def _rmax(typingctx, a, b):
    """llvm.maxnum.f32 with reassoc, nsz and nnan: a max reduction vectorizes to one vmaxps
    per vector. Without nnan LLVM adds a nan fix-up to every step (3 instructions and 2
    moves; softmax over 1536 rows x 128 took 0.14 instead of 0.10 ms). A nan input makes the
    result formally poison; the machine code gives one of the row's values or a nan, and
    either is right where it is used: a nan anywhere in a row makes that softmax row nan
    whatever its shift. (An LLVM ``freeze`` of the result would make this airtight, but
    InstCombine then strips the nnan flag and the fix-ups come back.)"""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, sig, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f]),
                                            "llvm.maxnum.f32")
        return builder.call(fn, args, fastmath=("nnan", "nsz", "reassoc"))

    return types.float32(types.float32, types.float32), codegen


# -- whole-row reductions ----------------------------------------------------------------------------

@njit(inline="always", **_EW)
def _row_sum(x, i, n):
    s = _ZERO
    for j in range(n):
        s = _radd(s, x[i, j])
    return s


@njit(inline="always", **_EW)
def _row_sqdev(x, i, n, mean):
    s = _ZERO
    for j in range(n):
        d = x[i, j] - mean
        s = _radd(s, d * d)
    return s


@njit(inline="always", **_EW)
def _row_max(x, i, n):
    """Row max (a row with a nan gets some value: see _rmax)."""
    m = -_INF
    for j in range(n):
        m = _rmax(m, x[i, j])
    return m


@njit(inline="always", **_EW)
def _shift_of(m):
    """The softmax shift for a row max m: the reference shifts by 0 when the max is not finite."""
    return m if (m > -_INF and m < _INF) else _ZERO


# -- per-chunk bodies (rows lo..hi) -------------------------------------------------------------------
# Software-pipelined over rows: the first pass over row i+1 (its sum, sum of squares or max:
# the loads that miss the cache) runs inside the last, compute-bound pass over row i, so that
# the next row's memory traffic overlaps this row's arithmetic (in-process A/B, 1 thread:
# LayerNorm 1024x768 0.28 -> 0.26 ms, Softmax 12288x128 0.78 -> 0.57 ms). The last row of a
# chunk reads itself again (nx = i: a select, so that LLVM's runtime overlap check between
# out's row and the rows of x it reads stays exact; a branch instead made the check cover one
# row past x's end, and an out placed right after x took the scalar loop: 7x slower).
# In place (ip: the drivers pass x itself as out, so that LLVM sees one array; with two, its
# overlap check fails and the scalar loop runs, 8x slower) there is no look-ahead: the write
# of row i and a read of row nx = i would be a dependence LLVM cannot vectorize.

@njit(inline="always", **_EW)
def _ln_rows(x, g, b, eps, out, lo, hi, ip):
    vm.wide_vectors()
    n = x.shape[1]
    rn = _ONE / f32(n) if n > 0 else _ZERO
    sn = _row_sum(x, lo, n) if hi > lo and not ip else _ZERO
    for i in range(lo, hi):
        if ip:
            sn = _row_sum(x, i, n)
        mean = sn * rn
        var = _row_sqdev(x, i, n, mean) * rn
        inv = _ONE / np.sqrt(var + eps)
        if ip:
            for j in range(n):
                out[i, j] = (x[i, j] - mean) * inv * g[j] + b[j]
        else:
            nx = i + 1 if i + 1 < hi else i
            sn = _ZERO
            for j in range(n):
                out[i, j] = (x[i, j] - mean) * inv * g[j] + b[j]
                sn = _radd(sn, x[nx, j])


@njit(inline="always", **_EW)
def _skip_ln_rows(x, skip, g, b, bias, eps, out, sm, write_sum, lo, hi):
    vm.wide_vectors()
    n = x.shape[1]
    srows = skip.shape[0]
    rn = _ONE / f32(n) if n > 0 else _ZERO
    for i in range(lo, hi):
        si = i % srows
        # the sum goes to out first (it is rounded to float32 there, as the reference rounds it)
        s = _ZERO
        for j in range(n):
            v = (x[i, j] + skip[si, j]) + bias[j]
            out[i, j] = v
            s = _radd(s, v)
        if write_sum:
            for j in range(n):
                sm[i, j] = out[i, j]
        mean = s * rn
        var = _row_sqdev(out, i, n, mean) * rn
        inv = _ONE / np.sqrt(var + eps)
        for j in range(n):
            out[i, j] = (out[i, j] - mean) * inv * g[j] + b[j]


@njit(inline="always", **_EW)
def _row_sumsq(x, i, n):
    s = _ZERO
    for j in range(n):
        s = _radd(s, x[i, j] * x[i, j])
    return s


@njit(inline="always", **_EW)
def _rms_rows(x, g, eps, out, lo, hi, ip):
    vm.wide_vectors()
    n = x.shape[1]
    rn = _ONE / f32(n) if n > 0 else _ZERO
    ss = _row_sumsq(x, lo, n) if hi > lo and not ip else _ZERO
    for i in range(lo, hi):
        if ip:
            ss = _row_sumsq(x, i, n)
        inv = _ONE / np.sqrt(ss * rn + eps)
        if ip:
            for j in range(n):
                out[i, j] = x[i, j] * inv * g[j]
        else:
            nx = i + 1 if i + 1 < hi else i
            ss = _ZERO
            for j in range(n):
                out[i, j] = x[i, j] * inv * g[j]
                ss = _radd(ss, x[nx, j] * x[nx, j])


@njit(inline="always", **_EW)
def _softmax_rows(x, out, lo, hi, ip):
    vm.wide_vectors()
    n = x.shape[1]
    mn = _row_max(x, lo, n) if hi > lo and not ip else _ZERO
    for i in range(lo, hi):
        if ip:
            mn = _row_max(x, i, n)
        s = _ZERO
        if mn > -_INF and mn < _INF:
            # the common row: every x - m <= 0 (or nan): vecmath.exp_neg, without the overflow
            # clamp and with one polynomial term less (2 instead of 1 ulp; 15-20% less time)
            m = mn
            if ip:
                for j in range(n):
                    e = vm.exp_neg(x[i, j] - m)
                    out[i, j] = e
                    s = _radd(s, e)
            else:
                nx = i + 1 if i + 1 < hi else i
                mn = -_INF
                for j in range(n):
                    e = vm.exp_neg(x[i, j] - m)
                    out[i, j] = e
                    s = _radd(s, e)
                    mn = _rmax(mn, x[nx, j])
        else:
            # a max of +-inf (or a nan row): the reference shifts by 0; x may be +inf
            for j in range(n):
                e = vm.exp(x[i, j])
                out[i, j] = e
                s = _radd(s, e)
            if not ip and i + 1 < hi:
                mn = _row_max(x, i + 1, n)
        r = _ONE / s
        for j in range(n):
            out[i, j] = out[i, j] * r


@njit(inline="always", **_EW)
def _log_softmax_rows(x, out, lo, hi, ip):
    vm.wide_vectors()
    n = x.shape[1]
    mn = _row_max(x, lo, n) if hi > lo and not ip else _ZERO
    for i in range(lo, hi):
        if ip:
            mn = _row_max(x, i, n)
        m = _shift_of(mn)
        s = _ZERO
        if mn > -_INF and mn < _INF:
            if ip:
                for j in range(n):
                    s = _radd(s, vm.exp_neg(x[i, j] - m))
            else:
                nx = i + 1 if i + 1 < hi else i
                mn = -_INF
                for j in range(n):
                    s = _radd(s, vm.exp_neg(x[i, j] - m))
                    mn = _rmax(mn, x[nx, j])
        else:
            for j in range(n):
                s = _radd(s, vm.exp(x[i, j]))
            if not ip and i + 1 < hi:
                mn = _row_max(x, i + 1, n)
        ls = vm.log(s)
        for j in range(n):
            out[i, j] = (x[i, j] - m) - ls


@njit(inline="always", **_EW)
def _gelu_erf_rows(x, bias, out, lo, hi):
    vm.wide_vectors()
    n = x.shape[1]
    for i in range(lo, hi):
        for j in range(n):
            out[i, j] = vm.gelu_erf(x[i, j] + bias[j])


@njit(inline="always", **_EW)
def _gelu_tanh_rows(x, bias, out, lo, hi):
    vm.wide_vectors()
    n = x.shape[1]
    for i in range(lo, hi):
        for j in range(n):
            out[i, j] = vm.gelu_tanh(x[i, j] + bias[j])


# -- drivers: serial (threads == 1) and parallel over `nt` contiguous row chunks -------------------
# ip (in place): out starts at x's data (same shape, both C-contiguous: the same buffer); the
# body is compiled a second time with x as out (see above). Any other overlap takes the general
# body, which LLVM's runtime overlap checks keep correct.

@njit(**_EW)
def _ln_1(x, g, b, eps, out):
    ip = x.ctypes.data == out.ctypes.data
    if ip:
        _ln_rows(out, g, b, eps, out, 0, out.shape[0], True)
    else:
        _ln_rows(x, g, b, eps, out, 0, x.shape[0], False)


@njit(**_PAR)
def _ln_p(x, g, b, eps, out, nt):
    ip = x.ctypes.data == out.ctypes.data
    r = x.shape[0]
    for t in prange(nt):
        lo, hi = t * r // nt, (t + 1) * r // nt
        if ip:
            _ln_rows(out, g, b, eps, out, lo, hi, True)
        else:
            _ln_rows(x, g, b, eps, out, lo, hi, False)


@njit(**_EW)
def _skip_ln_1(x, skip, g, b, bias, eps, out, sm, write_sum):
    ip = x.ctypes.data == out.ctypes.data
    if ip:
        _skip_ln_rows(out, skip, g, b, bias, eps, out, sm, write_sum, 0, out.shape[0])
    else:
        _skip_ln_rows(x, skip, g, b, bias, eps, out, sm, write_sum, 0, x.shape[0])


@njit(**_PAR)
def _skip_ln_p(x, skip, g, b, bias, eps, out, sm, write_sum, nt):
    ip = x.ctypes.data == out.ctypes.data
    r = x.shape[0]
    for t in prange(nt):
        lo, hi = t * r // nt, (t + 1) * r // nt
        if ip:
            _skip_ln_rows(out, skip, g, b, bias, eps, out, sm, write_sum, lo, hi)
        else:
            _skip_ln_rows(x, skip, g, b, bias, eps, out, sm, write_sum, lo, hi)


@njit(**_EW)
def _rms_1(x, g, eps, out):
    ip = x.ctypes.data == out.ctypes.data
    if ip:
        _rms_rows(out, g, eps, out, 0, out.shape[0], True)
    else:
        _rms_rows(x, g, eps, out, 0, x.shape[0], False)


@njit(**_PAR)
def _rms_p(x, g, eps, out, nt):
    ip = x.ctypes.data == out.ctypes.data
    r = x.shape[0]
    for t in prange(nt):
        lo, hi = t * r // nt, (t + 1) * r // nt
        if ip:
            _rms_rows(out, g, eps, out, lo, hi, True)
        else:
            _rms_rows(x, g, eps, out, lo, hi, False)


@njit(**_EW)
def _softmax_1(x, out):
    ip = x.ctypes.data == out.ctypes.data
    if ip:
        _softmax_rows(out, out, 0, out.shape[0], True)
    else:
        _softmax_rows(x, out, 0, x.shape[0], False)


@njit(**_PAR)
def _softmax_p(x, out, nt):
    ip = x.ctypes.data == out.ctypes.data
    r = x.shape[0]
    for t in prange(nt):
        lo, hi = t * r // nt, (t + 1) * r // nt
        if ip:
            _softmax_rows(out, out, lo, hi, True)
        else:
            _softmax_rows(x, out, lo, hi, False)


@njit(**_EW)
def _log_softmax_1(x, out):
    ip = x.ctypes.data == out.ctypes.data
    if ip:
        _log_softmax_rows(out, out, 0, out.shape[0], True)
    else:
        _log_softmax_rows(x, out, 0, x.shape[0], False)


@njit(**_PAR)
def _log_softmax_p(x, out, nt):
    ip = x.ctypes.data == out.ctypes.data
    r = x.shape[0]
    for t in prange(nt):
        lo, hi = t * r // nt, (t + 1) * r // nt
        if ip:
            _log_softmax_rows(out, out, lo, hi, True)
        else:
            _log_softmax_rows(x, out, lo, hi, False)


@njit(**_EW)
def _gelu_erf_1(x, bias, out):
    ip = x.ctypes.data == out.ctypes.data
    if ip:
        _gelu_erf_rows(out, bias, out, 0, out.shape[0])
    else:
        _gelu_erf_rows(x, bias, out, 0, x.shape[0])


@njit(**_PAR)
def _gelu_erf_p(x, bias, out, nt):
    ip = x.ctypes.data == out.ctypes.data
    r = x.shape[0]
    for t in prange(nt):
        lo, hi = t * r // nt, (t + 1) * r // nt
        if ip:
            _gelu_erf_rows(out, bias, out, lo, hi)
        else:
            _gelu_erf_rows(x, bias, out, lo, hi)


@njit(**_EW)
def _gelu_tanh_1(x, bias, out):
    ip = x.ctypes.data == out.ctypes.data
    if ip:
        _gelu_tanh_rows(out, bias, out, 0, out.shape[0])
    else:
        _gelu_tanh_rows(x, bias, out, 0, x.shape[0])


@njit(**_PAR)
def _gelu_tanh_p(x, bias, out, nt):
    ip = x.ctypes.data == out.ctypes.data
    r = x.shape[0]
    for t in prange(nt):
        lo, hi = t * r // nt, (t + 1) * r // nt
        if ip:
            _gelu_tanh_rows(out, bias, out, lo, hi)
        else:
            _gelu_tanh_rows(x, bias, out, lo, hi)


# -- 2-D API (float32, C-contiguous, preallocated outputs) -----------------------------------------

def _check2(name, *arrs):
    shape = None
    for a in arrs:
        if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 2
                and a.flags.c_contiguous):
            raise TypeError(f"{name}: expected C-contiguous 2-D float32 arrays, got "
                            f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"{name}: shape {a.shape} != {shape}")


_FILLS: dict = {}


def _vec(name, v, n, fill):
    """A parameter vector (gamma, beta, bias...) as contiguous float32 (n,), broadcast; None -> fill."""
    if v is None:
        key = (n, fill)
        c = _FILLS.get(key)
        if c is None:
            if len(_FILLS) > 64:
                _FILLS.clear()
            # shared between calls (the kernels only read it); left writeable: a read-only
            # array is another Numba type, i.e. another compiled specialization
            c = _FILLS[key] = np.full(n, fill, dtype=np.float32)
        return c
    if (type(v) is np.ndarray and v.dtype == np.float32 and v.shape == (n,)  # noqa: E721
            and v.flags.c_contiguous):
        return v                                 # the common case, without numpy calls
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
        sm, ws = _NO_SUM, False
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


_NO_SUM = np.empty((0, 0), np.float32)


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
