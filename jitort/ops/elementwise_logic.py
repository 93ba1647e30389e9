"""Elementwise comparisons, logic, bit ops, IsInf/IsNaN and Where."""

from __future__ import annotations

import numpy as np

from .elementwise import F32, is_narrow, out
from .registry import op


def _cmp_operands(a: np.ndarray, b: np.ndarray):
    if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":
        return a.astype(object, copy=False), b.astype(object, copy=False)
    if is_narrow(a.dtype) or is_narrow(b.dtype):
        return a.astype(F32), b.astype(F32)
    return a, b


def _compare(fn):
    def kernel(a, b):
        a, b = _cmp_operands(a, b)
        return np.asarray(fn(a, b), dtype=np.bool_)

    return kernel


equal = op("Equal", since=7)(_compare(np.equal))
less = op("Less", since=7)(_compare(np.less))
greater = op("Greater", since=7)(_compare(np.greater))
less_or_equal = op("LessOrEqual", since=12)(_compare(np.less_equal))
greater_or_equal = op("GreaterOrEqual", since=12)(_compare(np.greater_equal))


def _logical(fn):
    def kernel(a, b):
        return np.asarray(fn(a.astype(np.bool_, copy=False), b.astype(np.bool_, copy=False)))

    return kernel


and_ = op("And", since=7)(_logical(np.logical_and))
or_ = op("Or", since=7)(_logical(np.logical_or))
xor = op("Xor", since=7)(_logical(np.logical_xor))


@op("Not", since=1)
def not_(x):
    return np.asarray(np.logical_not(x))


def _bitwise(fn):
    def kernel(a, b):
        return out(fn(a, b.astype(a.dtype, copy=False)), a.dtype)

    return kernel


bitwise_and = op("BitwiseAnd", since=18)(_bitwise(np.bitwise_and))
bitwise_or = op("BitwiseOr", since=18)(_bitwise(np.bitwise_or))
bitwise_xor = op("BitwiseXor", since=18)(_bitwise(np.bitwise_xor))


@op("BitwiseNot", since=18)
def bitwise_not(x):
    return out(np.invert(x), x.dtype)


@op("BitShift", since=11)
def bit_shift(x, y, *, direction):
    """Shifts >= the bit width or < 0 give the pure sign fill (BitShift-28 semantics)."""
    dt = x.dtype
    bits = dt.itemsize * 8
    y = np.asarray(y)
    if y.dtype.kind == "i":
        bad = (y < 0) | (y >= bits)
    else:
        bad = y >= bits
    ys = np.where(bad, 0, y).astype(dt, copy=False)
    if direction == "LEFT":
        r = np.left_shift(x, ys)
        fill = np.zeros((), dt)
    elif direction == "RIGHT":
        r = np.right_shift(x, ys)
        fill = np.where(x < 0, dt.type(-1), dt.type(0)) if dt.kind == "i" else np.zeros((), dt)
    else:
        raise ValueError(f"BitShift: direction must be LEFT or RIGHT, got {direction!r}")
    if np.any(bad):
        r = np.where(bad, fill, r)
    return out(r, dt)


@op("IsNaN", since=9)
def is_nan(x):
    if x.dtype.kind in "iub":
        return np.zeros(x.shape, np.bool_)
    return np.asarray(np.isnan(x.astype(F32) if is_narrow(x.dtype) else x))


@op("IsInf", since=10)
def is_inf(x, *, detect_negative=1, detect_positive=1):
    if x.dtype.kind in "iub":
        return np.zeros(x.shape, np.bool_)
    xf = x.astype(F32) if is_narrow(x.dtype) else x
    if detect_negative and detect_positive:
        return np.asarray(np.isinf(xf))
    if detect_negative:
        return np.asarray(xf == -np.inf)
    if detect_positive:
        return np.asarray(xf == np.inf)
    return np.zeros(x.shape, np.bool_)


@op("Where", since=9)
def where(cond, x, y):
    dt = x.dtype
    r = np.where(cond.astype(np.bool_, copy=False), x, y.astype(dt, copy=False) if dt.kind != "O" else y)
    return out(r, dt)
