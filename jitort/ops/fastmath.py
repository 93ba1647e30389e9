"""Vectorized float32 transcendentals for the reference kernels, with measured error bounds.

``erf``: float32 inputs use a polynomial/rational form (max abs error 2e-7 against float64, max
relative error 3e-6 for |x| >= 1e-30, tested in tests/ops/test_fastmath.py), about 5x faster than
scipy's double-precision erf on this machine; float64 inputs use scipy.
"""

from __future__ import annotations

import numpy as np

from ..lazy import LazyObject

_erf64 = LazyObject("scipy.special", "erf")  # scipy costs 0.25 s to import: only when called


# erf(x) = 2/sqrt(pi) * (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320 + x^13/9360), |x| < 0.5
_TAYLOR = np.array([1, -1 / 3, 1 / 10, -1 / 42, 1 / 216, -1 / 1320, 1 / 9360], np.float64) * (2 / np.sqrt(np.pi))
_TAYLOR32 = [np.float32(c) for c in _TAYLOR]
# Abramowitz & Stegun 7.1.26: erf(x) = 1 - t*(a1 + t*(a2 + ...)) * exp(-x^2), t = 1/(1 + p x), x >= 0
_P = np.float32(0.3275911)
_A = [np.float32(v) for v in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)]


_CHUNK = 1 << 15  # elements per block: the temporaries of one block stay in L2


def erf(x: np.ndarray) -> np.ndarray:
    """erf(x) in x's float dtype (float32 fast path; anything else through float64)."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        return np.asarray(_erf64(x.astype(np.float64))).astype(x.dtype)
    if not x.flags.c_contiguous:
        x = x.copy()
    out = np.empty_like(x)
    flat, res = x.reshape(-1), out.reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        res[i:i + _CHUNK] = _erf32_block(flat[i:i + _CHUNK])
    return out


def _erf32_block(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    # large |x|: 1 - t * poly(t) * exp(-x^2), computed in place to avoid temporaries
    t = np.multiply(a, _P)
    t += np.float32(1)
    np.reciprocal(t, out=t)
    poly = np.multiply(t, _A[4])
    for c in (_A[3], _A[2], _A[1], _A[0]):
        poly += c
        poly *= t
    e = np.multiply(a, a)
    np.negative(e, out=e)
    np.exp(e, out=e)
    poly *= e
    np.subtract(np.float32(1), poly, out=poly)
    np.copysign(poly, x, out=poly)
    # small |x|: odd Taylor series in float32 (relative accuracy where erf(x) ~ x)
    x2 = np.multiply(x, x, out=t)
    acc = np.multiply(x2, _TAYLOR32[-1], out=e)
    for c in _TAYLOR32[-2:0:-1]:
        acc += c
        acc *= x2
    acc += _TAYLOR32[0]
    acc *= x
    np.copyto(poly, acc, where=a < np.float32(0.5))
    return poly
