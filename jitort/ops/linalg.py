"""Linear algebra: MatMul, Gemm, Einsum, Det.

float16 and the ml_dtypes floats accumulate in float32 (BLAS) and are cast back; float32/64 go
straight to BLAS through np.matmul; integer types use NumPy's exact (wrapping) integer matmul.
"""

from __future__ import annotations

import numpy as np

from .registry import op


def _acc_dtype(dt: np.dtype) -> np.dtype:
    """Dtype to compute in: float32 for float16/bfloat16/float8, else the dtype itself."""
    if dt == np.float16 or dt.kind == "V":
        return np.dtype(np.float32)
    return dt


def matmul_nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul semantics; an N-D @ 2-D product runs as one large GEMM instead of a batch loop."""
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
        out = a.reshape(-1, a.shape[-1]) @ b
        return out.reshape(a.shape[:-1] + (b.shape[-1],))
    return np.matmul(a, b)


@op("MatMul", since=1)
def matmul(a, b):
    out_dt = a.dtype
    acc = _acc_dtype(out_dt)
    if acc != out_dt:
        a, b = a.astype(acc), b.astype(acc)
    elif b.dtype != acc:
        b = b.astype(acc)
    res = matmul_nd(a, b)
    return np.asarray(res if res.dtype == out_dt else res.astype(out_dt))


@op("Gemm", since=1)
def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0):
    """Y = alpha * A' @ B' + beta * C (C unidirectionally broadcast to (M, N))."""
    out_dt = a.dtype
    acc = _acc_dtype(out_dt)
    if transA:
        a = a.T
    if transB:
        b = b.T
    a = a.astype(acc, copy=False)
    b = b.astype(acc, copy=False)
    integral = acc.kind in "iu"
    if integral and not (float(alpha).is_integer() and float(beta).is_integer()):
        acc = np.dtype(np.float64)  # fractional scale on integers: compute in double, cast back
        a, b = a.astype(acc), b.astype(acc)
        integral = False
    y = a @ b
    if alpha != 1.0:
        y *= acc.type(int(alpha) if integral else alpha)
    if c is not None and beta != 0.0:
        c = c.astype(acc, copy=False)
        if beta != 1.0:
            c = c * acc.type(int(beta) if integral else beta)
        y += c
    return np.asarray(y.astype(out_dt, copy=False))


@op("Einsum", since=12)
def einsum(*xs, equation=""):
    eq = equation.replace(" ", "")
    if not xs:
        raise ValueError("Einsum needs at least one input")
    out_dt = xs[0].dtype
    acc = _acc_dtype(out_dt)
    ops = [x.astype(acc, copy=False) for x in xs]
    if len(ops) == 1:
        res = np.einsum(eq, *ops)
        if np.shares_memory(res, xs[0]):
            res = res.copy()
    else:
        res = np.einsum(eq, *ops, optimize=True)
    return np.asarray(res).astype(out_dt, copy=False)


@op("Det", since=11)
def det(x):
    out_dt = x.dtype
    acc = _acc_dtype(out_dt)
    if x.shape[-1] == 0 and x.ndim >= 2:  # det of a 0x0 matrix is 1
        return np.ones(x.shape[:-2], dtype=out_dt)
    res = np.linalg.det(x.astype(acc, copy=False))
    return np.asarray(res).astype(out_dt, copy=False)
