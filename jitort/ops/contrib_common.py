"""Helpers shared by the com.microsoft contrib kernels (contrib*.py): dtype handling and
shape-inference utilities. Not an op family module (no registrations here)."""

from __future__ import annotations

import numpy as np

from ..ir.types import TensorType

MS = "com.microsoft"


def wide(x: np.ndarray) -> np.ndarray:
    """x in a computing dtype: float64 stays, every other float (float16, bfloat16...) -> float32."""
    if x.dtype == np.float64 or x.dtype == np.float32:
        return x
    return x.astype(np.float32)


def like(y: np.ndarray, dtype) -> np.ndarray:
    """y cast (without copying when possible) to dtype, always as an ndarray."""
    return np.asarray(y).astype(dtype, copy=False)


def scalar(v) -> float:
    return float(np.asarray(v).reshape(-1)[0])


# ---------------------------------------------------------------- shape inference helpers

def tt(dtype, shape) -> TensorType:
    return TensorType(None if dtype is None else np.dtype(dtype), None if shape is None else tuple(shape))


def shape_of(t):
    return None if t is None or getattr(t, "shape", None) is None else tuple(t.shape)


def dtype_of(t):
    return None if t is None else getattr(t, "dtype", None)


def bdim(a, b):
    """Broadcast of two dims (int, symbolic str or None)."""
    if a == 1:
        return b
    if b == 1:
        return a
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise ValueError(f"dims {a} and {b} do not broadcast")
    return a if isinstance(a, int) else b if isinstance(b, int) else None


def bshape(*shapes):
    """Multidirectional broadcast of shapes (None: unknown rank -> None)."""
    if any(s is None for s in shapes):
        return None
    n = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(n):
        d = 1
        for s in shapes:
            k = i - (n - len(s))
            if k >= 0:
                d = bdim(d, s[k])
        out.append(d)
    return tuple(out)


def mul(*dims):
    """Product of dims, None when any is not an int."""
    p = 1
    for d in dims:
        if not isinstance(d, int):
            return None
        p *= d
    return p


def same_as(i: int = 0, n: int = 1):
    """infer: n outputs typed like input i."""

    def infer(ctx, *types, **_):
        t = types[i]
        return [tt(dtype_of(t), shape_of(t))] * max(1, min(n, ctx.num_outputs or 1))

    return infer


def matmul_shape(a, b):
    """numpy.matmul result shape of shapes a and b (dims may be symbolic/None)."""
    if a is None or b is None:
        return None
    a1, b1 = len(a) == 1, len(b) == 1
    a2 = (1,) + tuple(a) if a1 else tuple(a)
    b2 = tuple(b) + (1,) if b1 else tuple(b)
    batch = bshape(a2[:-2], b2[:-2])
    out = tuple(batch) + (a2[-2], b2[-1])
    if a1:
        out = out[:-2] + out[-1:]
    if b1:
        out = out[:-1]
    return out
