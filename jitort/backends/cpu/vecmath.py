"""Vectorizable float32 transcendentals for generated Numba kernels.

libm calls inside hot loops stop LLVM's loop vectorizer (measured 5-12x slower than onnxruntime
here). Every function below is branch-free straight-line float32 code: range reduction with
magic-number rounding and integer bit manipulation of the exponent (through tiny LLVM
intrinsics), a polynomial, and ``select``s for the edge cases, so a loop calling it compiles to
packed vector code (see the tests for the check).

Scalar functions (``@njit(inline='always')``, float32 in, float32 out; a float64 argument is
rounded to float32 first)::

    exp  log  erf  tanh  sigmoid  gelu_erf  gelu_tanh  softplus
    exp_neg          e^x for x <= 0 only (softmax's shifted logits): one term less, no overflow clamp

Kernel helper::

    wide_vectors()   call first in a kernel: 512-bit vectors on AVX-512 hosts (see below)

Array wrapper (tests, benchmarks)::

    apply(name, x, out=None) -> float32 array of x's shape

Vector width and ISA. LLVM's tuning for Intel AVX-512 cores (skylake-avx512 ... rocketlake,
sapphirerapids: this host is detected as ``rocketlake``) prefers 256-bit vectors, so loops
compiled as they were got ymm code. ``wide_vectors()`` sets the function attributes
"prefer-vector-width"/"min-legal-vector-width" = 512 on the calling function (llvmlite has no
API for string attributes: they are added raw), and LLVM then emits zmm code. The exponent
scaling 2^k of exp uses ``llvm.ldexp`` on AVX-512 hosts (one ``vscalefps``: exact overflow and
gradual underflow) and two normal factors built from the exponent bits elsewhere (an
``llvm.ldexp`` there becomes a call to libm's ldexpf per element). The choice is made when the
code is generated, from Numba's target features, which are part of Numba's cache key.
Measured (``benchmarks/vecmath.py``, 8x128x3072 float32, 1 thread, 3 rounds; load average 2.5
before, 1.6 after), ns per element before (ymm, earlier formulas) -> now, onnxruntime's
one-node op in brackets: exp 0.72 -> 0.28 (0.30), log 0.60 -> 0.41 (1.6), erf 2.66 -> 0.54
(0.50), tanh 0.94 -> 0.49 (0.30), sigmoid 0.74 -> 0.34 (0.34), softplus 1.69 -> 0.89 (8.8),
gelu_erf 2.63 -> 0.34 (0.58), gelu_tanh 2.30 -> 0.40 (0.64). These arrays (12.6 MB each) are
beyond the caches: about 0.27 ns per element is memory traffic.

Measured max error over the float32 range (``python tests/backends/cpu/test_vecmath.py 257``:
every 257th float32 bit pattern, i.e. both signs, all exponents, denormals, inf, nan, plus 2.6M
dense samples around the branch points and special values; 19.4M points, vs float64
references). ulp = spacing of the reference rounded to float32 (denormal ulps for denormals)::

    function    max ulp   max abs err   notes
    exp         1.01      -             denormal results and overflow to inf included
    exp_neg     2.00      -             x <= 0 (its own test); denormal results included
    log         0.82      -             denormal inputs included
    erf         1.74      1.0e-7
    tanh        1.34      8.0e-8
    sigmoid     2.71      8.9e-8        2-3 ulp only on x < 0 (e * 1/(1+e))
    softplus    1.97      4.8e-7 (x=88)
    gelu_erf    2.9 for x >= -1; 7.8 on [-2, -1); 17 on [-4, -2); 44 where |ref| >= 1e-6
                abs err <= 4.3e-8 wherever the error exceeds 4 ulp (x < -1: the tail x Phi(x)
                is tiny; its relative error is the fit's, weighted by e^(a^2/8), see below);
                beyond |x| = 5.66 the result is relu(x) (abs err <= 4.3e-8)
    gelu_tanh   3.1 for x >= -1; 6.8 on [-2, -1); 13 on [-4, -2); 29 where |ref| >= 1e-6
                abs err <= 3.8e-8 wherever the error exceeds 4 ulp (x < -1: the float32
                rounding of the tanh argument, amplified by exp: inherent to the formula in
                float32); beyond |x| = 5.5 the result is relu(x)

(Before the GELU rewrite: gelu_erf 40 and gelu_tanh 28 ulp where |ref| >= 1e-6, abs <= 7.9e-8
where beyond 4 ulp; the largest absolute errors of both, 2.4e-7, are at large positive x, < 1
ulp there.) The tests assert ``ERROR_BOUNDS``: per element, within ``ulp`` ulps *or* within
``abs`` of the reference (the abs floor only matters for the GELU tails).

Special values: exp(+-inf) = inf/0, exp overflows to inf above 88.7228 and returns denormals
down to -103.97; exp_neg(-inf) = 0 (exp_neg(+inf) = nan: outside its domain); log(0) = -inf,
log(x<0) = nan, log(inf) = inf, denormal inputs are handled; erf/tanh saturate to +-1;
sigmoid(+-inf) = 1/0; gelu(-inf) = 0, gelu(inf) = inf; softplus(-inf) = 0, softplus(inf) = inf;
nan -> nan everywhere.

Compile flags: the functions are inlined at Numba-IR level, so the *calling* kernel's flags
apply to their code. Kernels must compile with ``error_model='numpy'`` and
``fastmath=FASTMATH`` (contract, afn, arcp, nsz). Do not use ``fastmath=True``: measured, its
``nnan``/``ninf`` break the overflow/nan selects (special values wrong) and ``reassoc`` breaks
log's and softplus's log1p correction (out of bounds on finite inputs). The other functions
are built to survive a caller's ``reassoc`` (tested: codegen_elementwise compiles with it):
Numba puts the caller's flags on every float op, intrinsics' included, so the magic-number
rounding reads k back from the bits (integer ops) and Cody-Waite runs as two llvm.fmuladd.
``inline='never'`` would keep these flags under any caller, but then erf, tanh, softplus and
gelu_erf (nested calls) no longer vectorize. The one division in gelu_tanh carries ninf + arcp
itself (its divisor 1 + e is in [1, 2]), so LLVM replaces it by a reciprocal estimate and a
Newton step (vrcp14ps; vrcpps on AVX2).

Coefficients: near-minimax fits (Lawson-reweighted least squares in float64) of
  exp:     (e^r - 1) / r  on |r| <= ln2/2, degree 5  -> exp = 2^k (1 + r S(r))  (2.0e-9 rel)
  exp_neg: the same, degree 4 (9.1e-8 rel)
  2^f:     on |f| <= 1/2, degree 6 (1.9e-9 rel)
  log:     (2 atanh(s) - 2 s) / s^3  in z = s^2, s = f/(2+f), |s| <= 0.1716, degree 3
  erf:     erf(x)/x in x^2 on |x| <= 0.921875, degree 5;  log(erfc(t)) on [0.921875, 4], degree 9
  tanh:    (tanh(x) - x)/x^3 in x^2 on |x| <= 0.625, degree 5; above: 1 - 2/(e^(2|x|) + 1)
  gelu_erf:  gelu(x) = relu(x) - |x| Phi(-|x|), Phi(-a) = 2^q(a), q = log2(erfc(a/sqrt2)/2)
             on [0, 5.66], degree 10, absolute error weighted by e^(a^2/8) (6.7e-8 at a = 0,
             1.1e-7 at 2, 5e-7 at 4, where Phi(-a) is 3e-5): one polynomial and one 2^f,
             no erf, no branch, no cancellation
  gelu_tanh: gelu(x) = relu(x) - |x| sigmoid(-|z|), z = 2 sqrt(2/pi) (x + 0.044715 x^3),
             sigmoid(-w) = e / (1 + e), e = 2^(-w log2 e): one 2^f and one reciprocal
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "FASTMATH", "ERROR_BOUNDS", "FUNCTIONS", "wide_vectors",
    "exp", "exp_neg", "log", "erf", "tanh", "sigmoid", "gelu_erf", "gelu_tanh", "softplus", "apply",
]

# the fastmath flags for kernels calling these functions (a set, as numba wants; do not mutate)
FASTMATH = {"contract", "afn", "arcp", "nsz"}
_FM = set(FASTMATH)

# name -> (max ulps, absolute floor) as asserted by the tests; see the module docstring
ERROR_BOUNDS = {
    "exp": (1.5, 0.0),
    "exp_neg": (2.5, 0.0),      # for x <= 0 only (not in FUNCTIONS: its own test)
    "log": (1.0, 0.0),
    "erf": (2.0, 0.0),
    "tanh": (1.5, 0.0),
    "sigmoid": (3.0, 0.0),
    "softplus": (2.5, 0.0),
    "gelu_erf": (4.0, 1e-7),
    "gelu_tanh": (4.0, 1e-7),
}

f32 = np.float32


# -- bit-level helpers (LLVM intrinsics: i32 arithmetic, no promotion to i64) --------------------

_I32 = ir.IntType(32)
_F32 = ir.FloatType()


def _has_avx512(context) -> bool:
    """Whether the code being generated targets AVX-512F (Numba's target machine features, so the
    answer is part of Numba's cache key: a cached function never runs on another ISA)."""
    try:
        return "+avx512f" in context.codegen().magic_tuple()[2].split(",")
    except Exception:  # noqa: BLE001  (an unknown codegen: take the portable path)
        return False


@intrinsic
def wide_vectors(typingctx):
    """Call first in a kernel: on AVX-512 hosts, let LLVM vectorize the calling function with
    512-bit vectors. LLVM's tuning for Intel AVX-512 cores (skylake-avx512 ... rocketlake,
    sapphirerapids) prefers 256-bit vectors; its function attributes "prefer-vector-width" and
    "min-legal-vector-width" override that per function. No effect elsewhere (no AVX-512, or
    an llvmlite that rejects the attributes). It marks the function whose code is being
    generated: with ``parallel=True`` call it inside the prange body (its own function)."""

    def codegen(context, builder, sig, args):
        if _has_avx512(context):
            attrs = builder.function.attributes
            try:  # llvmlite validates attribute names against a fixed list: add the strings raw
                set.add(attrs, '"prefer-vector-width"="512"')
                set.add(attrs, '"min-legal-vector-width"="512"')
            except Exception:  # noqa: BLE001, S110
                pass
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _scale_k(typingctx, p, t):
    """p * 2^k for t = k + _MAG (k an integer in [-150, 129], as left by the magic-number
    rounding), with one correct rounding on overflow to inf and gradual underflow: AVX-512
    hosts use llvm.ldexp (vscalefps, one instruction), others two normal factors
    2^(k>>1) * 2^(k-(k>>1)) made from the exponent bits."""
    if p != types.float32 or t != types.float32:
        return None

    def codegen(context, builder, sig, args):
        p, t = args
        ki = builder.sub(builder.bitcast(t, _I32), ir.Constant(_I32, _MAG_BITS))
        if _has_avx512(context):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32, [_F32, _I32]),
                                                "llvm.ldexp.f32.i32")
            return builder.call(fn, [p, ki])
        k1 = builder.ashr(ki, ir.Constant(_I32, 1))
        k2 = builder.sub(ki, k1)
        bias = ir.Constant(_I32, 127)
        sh = ir.Constant(_I32, 23)
        s1 = builder.bitcast(builder.shl(builder.add(k1, bias), sh), _F32)
        s2 = builder.bitcast(builder.shl(builder.add(k2, bias), sh), _F32)
        return builder.fmul(builder.fmul(p, s1), s2)

    return types.float32(types.float32, types.float32), codegen


@intrinsic
def _scale_n(typingctx, p, t):
    """p * 2^k for t = k + _MAGB, k in the normal range [-126, 127]: the low bits of t shifted
    into the exponent field (_MAGB carries the bias 127), one multiply."""
    if p != types.float32 or t != types.float32:
        return None

    def codegen(context, builder, sig, args):
        p, t = args
        s = builder.shl(builder.bitcast(t, _I32), ir.Constant(_I32, 23))
        return builder.fmul(p, builder.bitcast(s, _F32))

    return types.float32(types.float32, types.float32), codegen


@intrinsic
def _rdiv(typingctx, a, b):
    """a / b for a finite divisor b (nan passes through): the fdiv carries ninf + arcp, so LLVM
    may use a reciprocal estimate and one Newton step (vrcp14ps, or vrcpps on AVX2) instead of
    a divide (measured <= 1.5 ulp on 1/(1+e), e in [0, 1])."""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.fdiv(args[0], args[1], flags=("ninf", "arcp", "afn", "contract", "nsz"))

    return types.float32(types.float32, types.float32), codegen


def _k_from_bits(off):
    def codegen(context, builder, sig, args):
        ki = builder.sub(builder.bitcast(args[0], _I32), ir.Constant(_I32, off))
        return builder.sitofp(ki, _F32)

    return codegen


@intrinsic
def _k_of(typingctx, t):
    """k as float32 for t = k + _MAG, read from t's bits (an integer subtract and sitofp).
    Written t - _MAG, a caller compiled with reassoc (against the advice below) lets LLVM fold
    (v + _MAG) - _MAG back into v: Numba puts the function's fast-math flags on every float op,
    intrinsics' included, but not on integer ops. With llvm.ldexp the sitofp is the one the
    vscalefps needs anyway (one conversion)."""
    if t != types.float32:
        return None
    return types.float32(types.float32), _k_from_bits(_MAG_BITS)


@intrinsic
def _kb_of(typingctx, t):
    """k as float32 for t = k + _MAGB (see _k_of)."""
    if t != types.float32:
        return None
    return types.float32(types.float32), _k_from_bits(_MAG_BITS + 127)


@intrinsic
def _cw(typingctx, x, k):
    """x - k ln2 in two steps (Cody-Waite: k * _LN2_HI is exact for |k| < 2^9), as
    llvm.fmuladd calls: fused where the target has FMA, and not merged into one product under
    reassoc (InstCombine splits an fmuladd only when all fast-math flags are set)."""
    if x != types.float32 or k != types.float32:
        return None

    def codegen(context, builder, sig, args):
        x, k = args
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32, [_F32] * 3),
                                            "llvm.fmuladd.f32")
        nk = builder.fneg(k)
        r = builder.call(fn, [nk, ir.Constant(_F32, float(_LN2_HI)), x])
        return builder.call(fn, [nk, ir.Constant(_F32, float(_LN2_LO)), r])

    return types.float32(types.float32, types.float32), codegen


_SQRTH_BITS = 0x3F3504F3  # bits of sqrt(0.5)
_LOG_OFF = 0x3F800000 - _SQRTH_BITS


@intrinsic
def _log_mant(typingctx, x):
    """m - 1 where x = m * 2^e, m in [sqrt(0.5), sqrt(2)) (x positive, normal)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        ix = builder.add(builder.bitcast(args[0], _I32), ir.Constant(_I32, _LOG_OFF))
        mi = builder.add(builder.and_(ix, ir.Constant(_I32, 0x007FFFFF)),
                         ir.Constant(_I32, _SQRTH_BITS))
        return builder.fsub(builder.bitcast(mi, _F32), ir.Constant(_F32, 1.0))

    return types.float32(types.float32), codegen


@intrinsic
def _log_expo(typingctx, x):
    """e (as float32) where x = m * 2^e, m in [sqrt(0.5), sqrt(2)) (x positive, normal)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        ix = builder.add(builder.bitcast(args[0], _I32), ir.Constant(_I32, _LOG_OFF))
        e = builder.sub(builder.ashr(ix, ir.Constant(_I32, 23)), ir.Constant(_I32, 127))
        return builder.sitofp(e, _F32)

    return types.float32(types.float32), codegen


# -- constants (numpy float32 globals are frozen as float32 constants) -----------------------------

_ZERO, _HALF, _ONE, _TWO = f32(0.0), f32(0.5), f32(1.0), f32(2.0)
_NAN, _INF = f32(np.nan), f32(np.inf)

# magic-number rounding: for |v| < 2^21, t = v + _MAG rounds v to the nearest integer k, held in
# t's low mantissa bits (k = t - _MAG exactly; read from the bits by _k_of)
_MAG = f32(12582912.0)                     # 1.5 * 2^23
_MAG_BITS = 0x4B400000
_MAGB = f32(12582912.0 + 127.0)            # the same with the exponent bias: bits(t) << 23 = 2^k

_LOG2E = f32(1.4426950408889634)
_LN2_HI = f32(0.693145751953125)          # 15 significant bits: k * _LN2_HI is exact
_LN2_LO = f32(1.4286067653302226e-06)
_EXP_LO, _EXP_HI = f32(-104.0), f32(89.0)  # beyond: 0 (after rounding) / inf
# e^r = 1 + r S(r), |r| <= ln2/2, S of degree 5 (relative error 2.0e-9)
_S1, _S2, _S3, _S4, _S5 = (f32(0.49999994), f32(0.166664317), f32(0.0416680016),
                           f32(0.0083741555), f32(0.00138436537))
# exp_neg: e^r = 1 + r R(r), R of degree 4 (relative error 9.1e-8: one term less)
_R0, _R1, _R2, _R3, _R4 = (f32(0.9999997), f32(0.4999915), f32(0.16667636), f32(0.04189793),
                           f32(0.008290315))
# 2^f, |f| <= 1/2, degree 6 (relative error 1.9e-9)
_P1, _P2, _P3, _P4, _P5, _P6 = (f32(0.693147182), f32(0.240226462), f32(0.0555032864),
                                f32(0.00961848907), f32(0.00133999309), f32(0.00015345811))

_FLT_MIN = f32(1.1754943508222875e-38)
_TWO23 = f32(8388608.0)
_M23 = f32(-23.0)
_L1, _L2, _L3, _L4 = f32(0.6666667), f32(0.40000126), f32(0.28550375), f32(0.23342478)

_ERF_SPLIT = f32(0.921875)
_ERF_CUT = f32(4.0)                        # erfc(4) = 1.5e-8: erf rounds to 1 beyond
_S0, _S1E, _S2E, _S3E, _S4E, _S5E = (f32(1.1283791e+00), f32(-3.7612495e-01), f32(1.1281818e-01),
                                     f32(-2.6766676e-02), f32(4.9932501e-03), f32(-5.9911492e-04))
_S0M1 = f32(float(_S0) - 1.0)               # erf = x + x * (...): the leading 1 stays exact
_B0, _B1, _B2, _B3, _B4 = (f32(3.34826182e-04), f32(-1.13031507e+00), f32(-6.31638646e-01),
                           f32(-1.10316314e-01), f32(2.66026277e-02))
_B5, _B6, _B7, _B8, _B9 = (f32(-4.84825764e-03), f32(6.24485023e-04), f32(-5.14062340e-05),
                           f32(2.21968821e-06), f32(-2.73428284e-08))

_TANH_SPLIT = f32(0.625)
_TANH_CUT = f32(9.1)                       # 1 - tanh(9.1) < half an ulp of 1
_T1, _T2, _T3, _T4, _T5, _T6 = (f32(-0.33333334), f32(0.13333304), f32(-0.05395927),
                                f32(0.02176901), f32(-0.00834418), f32(0.00229297))

# gelu_erf: log2(Phi(-a)) = log2(erfc(a / sqrt2) / 2), 0 <= a <= 5.66, degree 10 (fit weighted by
# e^(a^2/8): absolute error 6.7e-8 at a = 0, 1.1e-7 at 2, 5e-7 at 4, where Phi is small)
_GE_CUT = f32(5.66)                        # Phi(-5.66) = 7.6e-9: beyond, gelu = relu (abs <= 4.3e-8)
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5 = (f32(-0.99999994), f32(-1.15110755), f32(-0.459194928),
                                f32(-0.0525156036), f32(0.00705104647), f32(-8.06833486e-05))
_Q6, _Q7, _Q8, _Q9, _Q10 = (f32(-0.000242922586), f32(6.64117906e-05), f32(-9.35008029e-06),
                            f32(7.17868602e-07), f32(-2.37132589e-08))
# gelu_tanh: |z| log2(e) = a (_GC1 + _GC2 a^2) for z = 2 sqrt(2/pi) (x + 0.044715 x^3), a = |x|
_GC1 = f32(2.0 * 0.7978845608028654 * 1.4426950408889634)
_GC2 = f32(2.0 * 0.7978845608028654 * 1.4426950408889634 * 0.044715)
_GT_CUT = f32(5.5)                          # sigmoid(-|z(5.5)|) = 1.1e-9: beyond, gelu = relu

_JIT = dict(inline="always", error_model="numpy", fastmath=_FM)


# -- the functions ---------------------------------------------------------------------------------
# Comparisons are written as `a if a < c else c` (not min/max) and `x == x` on purpose: each is one
# fcmp + select with a defined nan behaviour, which LLVM vectorizes. `c if x > c else x` keeps a
# nan x (the compare is false), so a clamp written that way needs no separate nan select.

@njit(**_JIT)
def _exp2_frac(f):
    """2^f for |f| <= 1/2."""
    return _ONE + f * (_P1 + f * (_P2 + f * (_P3 + f * (_P4 + f * (_P5 + f * _P6)))))


@njit(**_JIT)
def _exp2_mfrac(u):
    """2^-u for |u| <= 1/2 (the coefficients of _exp2_frac with alternating signs)."""
    return _ONE - u * (_P1 - u * (_P2 - u * (_P3 - u * (_P4 - u * (_P5 - u * _P6)))))


@njit(**_JIT)
def exp(x):
    """e^x, float32. Max error 1 ulp (denormal results included)."""
    x = f32(x)
    xc = _EXP_HI if x > _EXP_HI else x          # nan stays nan through both clamps
    xc = _EXP_LO if xc < _EXP_LO else xc
    t = xc * _LOG2E + _MAG                      # k + _MAG, k = round(x / ln2)
    k = _k_of(t)
    r = _cw(xc, k)
    p = _ONE + r * (_ONE + r * (_S1 + r * (_S2 + r * (_S3 + r * (_S4 + r * _S5)))))
    return _scale_k(p, t)


@njit(**_JIT)
def exp_neg(x):
    """e^x for x <= 0 (softmax's shifted logits), float32: exp without the overflow clamp and
    with a degree-5 polynomial. Max error 2 ulp (denormal results included); -inf -> 0, nan ->
    nan. Positive x up to 176 are right too (overflow to inf included; with vscalefps up to
    2.9e6); beyond, and +inf, the result is garbage (softmax reads it only in rows with a nan,
    whose result is nan whatever it is)."""
    x = f32(x)
    xc = _EXP_LO if x < _EXP_LO else x          # nan stays nan
    t = xc * _LOG2E + _MAG
    k = _k_of(t)
    r = _cw(xc, k)
    p = _ONE + r * (_R0 + r * (_R1 + r * (_R2 + r * (_R3 + r * _R4))))
    return _scale_k(p, t)


@njit(**_JIT)
def log(x):
    """Natural log, float32. Max error 1 ulp; log(0) = -inf, log(<0) = nan."""
    x = f32(x)
    tiny = x < _FLT_MIN
    xs = x * _TWO23 if tiny else x               # denormals: scale into the normal range
    f = _log_mant(xs)
    k = _log_expo(xs)
    k = k + _M23 if tiny else k
    s = f / (_TWO + f)
    z = s * s
    rr = z * (_L1 + z * (_L2 + z * (_L3 + z * _L4)))
    hfsq = _HALF * f * f
    y = k * _LN2_HI - ((hfsq - (s * (hfsq + rr) + k * _LN2_LO)) - f)
    y = y if x != _INF else _INF
    y = y if x != _ZERO else -_INF
    y = y if x >= _ZERO else _NAN                # also nan -> nan
    return y


@njit(**_JIT)
def _erf_small(x, z):
    """erf(x) for |x| < 0.921875, z = x*x."""
    return x + x * (_S0M1 + z * (_S1E + z * (_S2E + z * (_S3E + z * (_S4E + z * _S5E)))))


@njit(**_JIT)
def _erfc_big(a):
    """erfc(a) for a >= 0.921875 (0 beyond 4; the value is meaningless below the split)."""
    t = a if a < _ERF_CUT else _ERF_CUT
    q = _B0 + t * (_B1 + t * (_B2 + t * (_B3 + t * (_B4 + t * (
        _B5 + t * (_B6 + t * (_B7 + t * (_B8 + t * _B9))))))))
    e = exp(q)
    return e if a < _ERF_CUT else _ZERO


@njit(**_JIT)
def erf(x):
    """Error function, float32. Max error 2 ulp."""
    x = f32(x)
    a = abs(x)
    small = _erf_small(x, x * x)
    big = _ONE - _erfc_big(a)
    big = big if x >= _ZERO else -big
    y = small if a < _ERF_SPLIT else big
    return y if x == x else x


@njit(**_JIT)
def tanh(x):
    """Hyperbolic tangent, float32. Max error 2 ulp; saturates to +-1 beyond |x| = 9.1."""
    x = f32(x)
    a = abs(x)
    z = x * x
    small = x + x * z * (_T1 + z * (_T2 + z * (_T3 + z * (_T4 + z * (_T5 + z * _T6)))))
    ac = a if a < _TANH_CUT else _TANH_CUT
    e = exp(ac + ac)
    big = _ONE - _TWO / (e + _ONE)
    big = big if x >= _ZERO else -big
    y = small if a < _TANH_SPLIT else big
    return y if x == x else x


@njit(**_JIT)
def sigmoid(x):
    """1 / (1 + e^-x), float32, computed as e/(1+e) on the negative side. Max error 2 ulp."""
    x = f32(x)
    e = exp(-abs(x))
    s = _ONE / (_ONE + e)
    return s if x >= _ZERO else e * s          # nan: e is nan -> nan


@njit(**_JIT)
def softplus(x):
    """log(1 + e^x), float32, as max(x, 0) + log1p(e^-|x|). Max error 2 ulp."""
    x = f32(x)
    m = x if x > _ZERO else _ZERO
    e = exp(-abs(x))
    w = _ONE + e
    lp = log(w) + (e - (w - _ONE)) / w          # log1p(e) with the rounding of 1+e corrected
    return m + lp


@njit(**_JIT)
def gelu_erf(x):
    """0.5 x (1 + erf(x / sqrt 2)) = x Phi(x), float32, as relu(x) - |x| Phi(-|x|), with
    Phi(-a) = 2^q(a) (one polynomial for log2 Phi(-a), one 2^f): no erf, no cancellation."""
    x = f32(x)
    a = abs(x)
    c = a if a < _GE_CUT else _GE_CUT           # (no garbage, no denormal assists beyond the cut)
    q = _Q0 + c * (_Q1 + c * (_Q2 + c * (_Q3 + c * (_Q4 + c * (
        _Q5 + c * (_Q6 + c * (_Q7 + c * (_Q8 + c * (_Q9 + c * _Q10)))))))))
    t = q + _MAGB                               # q in [-28, -1]: 2^k is normal
    k = _kb_of(t)
    h = _scale_n(_exp2_frac(q - k), t)          # Phi(-a)
    r = x if x > _ZERO else _ZERO               # nan -> 0, but a * h below is nan
    y = r - a * h
    return r if a > _GE_CUT else y              # +-inf: inf / 0


@njit(**_JIT)
def gelu_tanh(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x * sigmoid(2u), float32, as
    relu(x) - |x| sigmoid(-|2u|), sigmoid(-w) = e / (1 + e), e = 2^-(w log2 e)."""
    x = f32(x)
    a = abs(x)
    c = a if a < _GT_CUT else _GT_CUT
    w = c * (_GC1 + _GC2 * (c * c))             # |2u| log2(e) <= 29.8: 2^-w is normal
    t = _MAGB - w
    k = _kb_of(t)                          # round(-w)
    e = _scale_n(_exp2_mfrac(w + k), t)         # 2^-w
    g = _rdiv(e, _ONE + e)
    r = x if x > _ZERO else _ZERO
    y = r - a * g
    return r if a > _GT_CUT else y              # +-inf: inf / 0


# -- array wrapper ---------------------------------------------------------------------------------

_MAP = dict(error_model="numpy", fastmath=_FM, cache=True, nogil=True)


@njit(**_MAP)
def _map_exp(x, out):
    wide_vectors()
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


@njit(**_MAP)
def _map_log(x, out):
    wide_vectors()
    for i in range(x.shape[0]):
        out[i] = log(x[i])


@njit(**_MAP)
def _map_erf(x, out):
    wide_vectors()
    for i in range(x.shape[0]):
        out[i] = erf(x[i])


@njit(**_MAP)
def _map_tanh(x, out):
    wide_vectors()
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@njit(**_MAP)
def _map_sigmoid(x, out):
    wide_vectors()
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i])


@njit(**_MAP)
def _map_softplus(x, out):
    wide_vectors()
    for i in range(x.shape[0]):
        out[i] = softplus(x[i])


@njit(**_MAP)
def _map_gelu_erf(x, out):
    wide_vectors()
    for i in range(x.shape[0]):
        out[i] = gelu_erf(x[i])


@njit(**_MAP)
def _map_gelu_tanh(x, out):
    wide_vectors()
    for i in range(x.shape[0]):
        out[i] = gelu_tanh(x[i])


# name -> (scalar function, 1-D map kernel)
FUNCTIONS = {
    "exp": (exp, _map_exp),
    "log": (log, _map_log),
    "erf": (erf, _map_erf),
    "tanh": (tanh, _map_tanh),
    "sigmoid": (sigmoid, _map_sigmoid),
    "softplus": (softplus, _map_softplus),
    "gelu_erf": (gelu_erf, _map_gelu_erf),
    "gelu_tanh": (gelu_tanh, _map_gelu_tanh),
}


def apply(name: str, x, out: np.ndarray | None = None) -> np.ndarray:
    """Elementwise ``name`` over ``x`` (any shape, cast to contiguous float32).

    ``out``, when given, must be a C-contiguous float32 array of x's shape; it is returned.
    """
    if name not in FUNCTIONS:
        raise KeyError(f"vecmath: unknown function {name!r}; available: {sorted(FUNCTIONS)}")
    xa = np.ascontiguousarray(x, dtype=np.float32)
    if out is None:
        out = np.empty(xa.shape, np.float32)
    elif out.dtype != np.float32 or out.shape != xa.shape or not out.flags.c_contiguous:
        raise ValueError(f"vecmath.apply: out must be C-contiguous float32 of shape {xa.shape}, "
                         f"got {out.dtype} {out.shape}")
    FUNCTIONS[name][1](xa.reshape(-1), out.reshape(-1))
    return out

