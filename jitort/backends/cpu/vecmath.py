"""Vectorizable float32 transcendentals for generated Numba kernels.

libm calls inside hot loops stop LLVM's loop vectorizer (measured 5-12x slower than onnxruntime
here). Every function below is branch-free straight-line float32 code: range reduction with
integer bit manipulation of the exponent (through two tiny LLVM intrinsics), a polynomial, and
``select``s for the edge cases, so a loop calling it compiles to packed vector code (``<8 x float>``
with AVX2; see the tests for the check).

Scalar functions (``@njit(inline='always')``, float32 in, float32 out; a float64 argument is
rounded to float32 first)::

    exp  log  erf  tanh  sigmoid  gelu_erf  gelu_tanh  softplus

Array wrapper (tests, benchmarks)::

    apply(name, x, out=None) -> float32 array of x's shape

Measured max error over the float32 range (``python tests/backends/cpu/test_vecmath.py 257``:
every 257th float32 bit pattern, i.e. both signs, all exponents, denormals, inf, nan, plus 2.6M
dense samples around the branch points and special values; 19.4M points, vs float64
references). ulp = spacing of the reference rounded to float32 (denormal ulps for denormals)::

    function    max ulp   max abs err   notes
    exp         1.28      -             denormal results and overflow to inf included
    log         0.82      -             denormal inputs included
    erf         1.74      1.0e-7
    tanh        1.33      7.9e-8
    sigmoid     2.72      8.9e-8        2-3 ulp only on x < 0 (e * 1/(1+e))
    softplus    2.27      4.8e-7 (x=88)
    gelu_erf    40 (for |ref| >= 1e-6)  1.2e-7   x < -1: the tail x*Phi(x) is ill-conditioned
                in float32 (the rounding of x/sqrt2 is amplified by ~x^2); below x = -5.66
                erf saturates (erfc(4) = 1.5e-8) and the result is -0 (abs err <= 4.4e-8)
    gelu_tanh   28 (for |ref| >= 1e-6)  1.4e-7   x < -1: the float32 rounding of the tanh
                argument, amplified by exp (inherent to evaluating the formula in float32)

Where the ulp error exceeds 4, the absolute error of both GELUs is below 7.9e-8.
The tests assert ``ERROR_BOUNDS``: per element, within ``ulp`` ulps *or* within ``abs`` of the
reference (the abs floor only matters for the GELU tails).

Special values: exp(+-inf) = inf/0, exp overflows to inf above 88.7228 and returns denormals
down to -103.97; log(0) = -inf, log(x<0) = nan, log(inf) = inf, denormal inputs are handled;
erf/tanh saturate to +-1; sigmoid(+-inf) = 1/0; gelu(-inf) = -0, gelu(inf) = inf;
softplus(-inf) = 0, softplus(inf) = inf; nan -> nan everywhere.

Compile flags: the functions are inlined at Numba-IR level, so the *calling* kernel's flags
apply to their code. Kernels must compile with ``error_model='numpy'`` and
``fastmath=FASTMATH`` (contract, afn, arcp, nsz). Do not use ``fastmath=True``: measured, its
``reassoc``/``nnan``/``ninf`` break the Cody-Waite reduction, the overflow/nan selects and the
log1p correction (exp, log, sigmoid, softplus out of bounds on finite inputs, special values
wrong). ``inline='never'`` would keep these flags under any caller, but then erf, tanh,
softplus and gelu_erf (nested calls) no longer vectorize.

Coefficients: near-minimax fits (Lawson-reweighted least squares in float64/mpmath) of
  exp:  (e^r - 1 - r) / r^2  on |r| <= ln2/2, degree 4  -> exp = 2^k (1 + r + r^2 P(r))
  log:  (2 atanh(s) - 2 s) / s^3  in z = s^2, s = f/(2+f), |s| <= 0.1716, degree 3
  erf:  erf(x)/x in x^2 on |x| <= 0.921875, degree 5;  log(erfc(t)) on [0.921875, 4], degree 9
  tanh: (tanh(x) - x)/x^3 in x^2 on |x| <= 0.625, degree 5; above: 1 - 2/(e^(2|x|) + 1)
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "FASTMATH", "ERROR_BOUNDS", "FUNCTIONS",
    "exp", "log", "erf", "tanh", "sigmoid", "gelu_erf", "gelu_tanh", "softplus", "apply",
]

# the fastmath flags for kernels calling these functions (a set, as numba wants; do not mutate)
FASTMATH = {"contract", "afn", "arcp", "nsz"}
_FM = set(FASTMATH)

# name -> (max ulps, absolute floor) as asserted by the tests; see the module docstring
ERROR_BOUNDS = {
    "exp": (1.5, 0.0),
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


@intrinsic
def _rint(typingctx, x):
    """Round to nearest even (llvm.rint: vrndscaleps when vectorized)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32, [_F32]),
                                            "llvm.rint.f32")
        return builder.call(fn, args)

    return types.float32(types.float32), codegen


@intrinsic
def _scale2(typingctx, p, k):
    """p * 2^k for integer-valued float32 k in [-150, 128]: two normal factors 2^(k>>1), 2^(k-(k>>1))
    so that overflow to inf and gradual underflow to denormals round once, correctly."""
    if p != types.float32 or k != types.float32:
        return None

    def codegen(context, builder, sig, args):
        p, k = args
        ki = builder.fptosi(k, _I32)
        k1 = builder.ashr(ki, ir.Constant(_I32, 1))
        k2 = builder.sub(ki, k1)
        bias = ir.Constant(_I32, 127)
        sh = ir.Constant(_I32, 23)
        s1 = builder.bitcast(builder.shl(builder.add(k1, bias), sh), _F32)
        s2 = builder.bitcast(builder.shl(builder.add(k2, bias), sh), _F32)
        return builder.fmul(builder.fmul(p, s1), s2)

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

_LOG2E = f32(1.4426950408889634)
_LN2_HI = f32(0.693145751953125)          # 15 significant bits: k * _LN2_HI is exact
_LN2_LO = f32(1.4286067653302226e-06)
_EXP_LO, _EXP_HI = f32(-104.0), f32(89.0)  # beyond: 0 (after rounding) / inf
_E2, _E3, _E4, _E5, _E6 = (f32(0.5), f32(0.16666578), f32(0.04166685), f32(0.00836314),
                           f32(0.00139013))

_FLT_MIN = f32(1.1754943508222875e-38)
_TWO23 = f32(8388608.0)
_M23 = f32(-23.0)
_L1, _L2, _L3, _L4 = f32(0.6666667), f32(0.40000126), f32(0.28550375), f32(0.23342478)

_ERF_SPLIT = f32(0.921875)
_ERF_CUT = f32(4.0)                        # erfc(4) = 1.5e-8: erf rounds to 1 beyond
_S0, _S1, _S2, _S3, _S4, _S5 = (f32(1.1283791e+00), f32(-3.7612495e-01), f32(1.1281818e-01),
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

_SQRT1_2 = f32(0.7071067811865476)
_GELU_C = f32(0.7978845608028654 * 2.0)    # 2 * sqrt(2/pi): gelu_tanh = x * sigmoid(2u)
_GELU_K = f32(0.044715)

_JIT = dict(inline="always", error_model="numpy", fastmath=_FM)


# -- the functions ---------------------------------------------------------------------------------
# Comparisons are written as `a if a < c else c` (not min/max) and `x == x` on purpose: each is one
# fcmp + select with a defined nan behaviour, which LLVM vectorizes.

@njit(**_JIT)
def exp(x):
    """e^x, float32. Max error 1 ulp (denormal results included)."""
    x = f32(x)
    xc = x if x < _EXP_HI else _EXP_HI          # nan -> _EXP_HI (fixed by the last select)
    xc = xc if xc > _EXP_LO else _EXP_LO
    k = _rint(xc * _LOG2E)
    r = xc - k * _LN2_HI
    r = r - k * _LN2_LO
    p = _ONE + r + (r * r) * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * _E6))))
    y = _scale2(p, k)
    return y if x == x else x


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
    return x + x * (_S0M1 + z * (_S1 + z * (_S2 + z * (_S3 + z * (_S4 + z * _S5)))))


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
    """0.5 x (1 + erf(x / sqrt 2)), float32, without cancellation for x < 0."""
    x = f32(x)
    t = x * _SQRT1_2
    a = abs(t)
    small = _ONE + _erf_small(t, t * t)
    ec = _erfc_big(a)
    big = _TWO - ec if t >= _ZERO else ec        # 1 + erf(t)
    phi2 = small if a < _ERF_SPLIT else big
    y = _HALF * x * phi2
    y = y if phi2 != _ZERO else _ZERO           # -inf * 0
    return y if x == x else x


@njit(**_JIT)
def gelu_tanh(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x * sigmoid(2u), float32."""
    x = f32(x)
    u2 = _GELU_C * x * (_ONE + _GELU_K * (x * x))
    s = sigmoid(u2)
    y = x * s
    y = y if s != _ZERO else _ZERO              # -inf * 0
    return y if x == x else x


# -- array wrapper ---------------------------------------------------------------------------------

_MAP = dict(error_model="numpy", fastmath=_FM, cache=True, nogil=True)


@njit(**_MAP)
def _map_exp(x, out):
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


@njit(**_MAP)
def _map_log(x, out):
    for i in range(x.shape[0]):
        out[i] = log(x[i])


@njit(**_MAP)
def _map_erf(x, out):
    for i in range(x.shape[0]):
        out[i] = erf(x[i])


@njit(**_MAP)
def _map_tanh(x, out):
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@njit(**_MAP)
def _map_sigmoid(x, out):
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i])


@njit(**_MAP)
def _map_softplus(x, out):
    for i in range(x.shape[0]):
        out[i] = softplus(x[i])


@njit(**_MAP)
def _map_gelu_erf(x, out):
    for i in range(x.shape[0]):
        out[i] = gelu_erf(x[i])


@njit(**_MAP)
def _map_gelu_tanh(x, out):
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

