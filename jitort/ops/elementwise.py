"""Elementwise ops: unary math, arithmetic, variadic Sum/Mean/Max/Min, Clip, comparisons,
logic, bit ops, IsInf/IsNaN and Where. The dtype helpers ``up``/``out`` are shared with the
activation module.
"""

from __future__ import annotations

import functools

import numpy as np

from .registry import op

from .fastmath import erf as _erf

F32 = np.dtype(np.float32)


def is_narrow(dt: np.dtype) -> bool:
    """ml_dtypes types (bfloat16, float8*, int4 ...): NumPy ufunc support is limited/slow."""
    return dt.kind == "V"


def up(x: np.ndarray, f16: bool = True) -> np.ndarray:
    """x in a dtype fit for computing: ml_dtypes (and float16 when ``f16``) -> float32."""
    dt = x.dtype
    if dt.kind == "V" or (f16 and dt == np.float16):
        return x.astype(np.float32)
    return x


def out(y, dt: np.dtype) -> np.ndarray:
    """y as an ndarray of exactly dtype dt (0-d results stay arrays)."""
    y = np.asarray(y)
    return y if y.dtype == dt else y.astype(dt)


def _ignore(fn):
    @functools.wraps(fn)
    def wrapped(*a, **k):
        with np.errstate(all="ignore"):
            return fn(*a, **k)

    return wrapped


# ---------------------------------------------------------------- unary math

def _float_unary(fn):
    """A float-only unary kernel computed in float32 for float16/bfloat16/float8."""

    def kernel(x):
        with np.errstate(all="ignore"):
            return out(fn(up(x)), x.dtype)

    return kernel


def _register_unary(name: str, since: int, fn) -> None:
    k = _float_unary(fn)
    k.__name__ = k.__qualname__ = name.lower()
    op(name, since=since)(k)


for _name, _since, _fn in [
    ("Sqrt", 6, np.sqrt), ("Exp", 6, np.exp), ("Log", 6, np.log),
    ("Sin", 7, np.sin), ("Cos", 7, np.cos), ("Tan", 7, np.tan),
    ("Asin", 7, np.arcsin), ("Acos", 7, np.arccos), ("Atan", 7, np.arctan),
    ("Sinh", 9, np.sinh), ("Cosh", 9, np.cosh), ("Tanh", 6, np.tanh),
    ("Asinh", 9, np.arcsinh), ("Acosh", 9, np.arccosh), ("Atanh", 9, np.arctanh),
    ("Floor", 6, np.floor), ("Ceil", 6, np.ceil),
    ("Round", 11, np.rint),  # half to even
]:
    _register_unary(_name, _since, _fn)


@op("Reciprocal", since=6)
@_ignore
def reciprocal(x):
    xc = up(x)
    return out(np.divide(xc.dtype.type(1), xc), x.dtype)


@op("Erf", since=9)
@_ignore
def erf(x):
    if x.dtype.kind in "iu":  # Erf-9 also allows integer types
        return out(np.rint(_erf(x.astype(np.float64))), x.dtype)
    return out(_erf(up(x)), x.dtype)


@op("Abs", since=6)
@_ignore
def abs_(x):
    if x.dtype.kind in "ub":
        return x.copy()
    return out(np.abs(up(x, f16=False)), x.dtype)


@op("Neg", since=6)
@_ignore
def neg(x):
    return out(np.negative(up(x, f16=False)), x.dtype)


@op("Sign", since=9)
@_ignore
def sign(x):
    if x.dtype == np.bool_:
        return x.copy()
    return out(np.sign(up(x, f16=False)), x.dtype)


# ---------------------------------------------------------------- binary arithmetic

def _arith(fn):
    """Same-type binary op; ml_dtypes computed in float32 and cast back."""

    def kernel(a, b):
        dt = a.dtype
        with np.errstate(all="ignore"):
            if is_narrow(dt) or is_narrow(b.dtype):
                return out(fn(a.astype(F32), b.astype(F32)), dt)
            return out(fn(a, b.astype(dt, copy=False)), dt)

    return kernel


add = op("Add", since=7)(_arith(np.add))
sub = op("Sub", since=7)(_arith(np.subtract))
mul = op("Mul", since=7)(_arith(np.multiply))


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C integer division: truncates toward zero; x / 0 gives 0 (undefined in ONNX)."""
    if a.dtype.kind == "u":
        return np.floor_divide(a, b)
    r = np.fmod(a, b)  # sign of the dividend, so a - r is an exact multiple of b
    return np.floor_divide(a - r, b)


@op("Div", since=7)
@_ignore
def div(a, b):
    dt = a.dtype
    b = b.astype(dt, copy=False) if not is_narrow(dt) else b
    if dt.kind in "iu":
        return out(_int_div(a, b), dt)
    if is_narrow(dt):
        return out(np.divide(a.astype(F32), b.astype(F32)), dt)
    return out(np.divide(a, b), dt)


@op("Mod", since=10)
@_ignore
def mod(a, b, *, fmod=0):
    """fmod=0: sign of the divisor (Python %); fmod=1: C fmod (sign of the dividend)."""
    dt = a.dtype
    fn = np.fmod if fmod else np.mod
    if is_narrow(dt):
        return out(fn(a.astype(F32), b.astype(F32)), dt)
    return out(fn(a, b.astype(dt, copy=False)), dt)


def _int_pow(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Integer power with C-like results for negative exponents (1, +-1 or 0)."""
    neg = e < 0
    if not np.any(neg):
        return np.power(a, e)
    r = np.power(a, np.where(neg, 0, e))
    one = np.ones_like(r)
    odd = (e % 2) != 0
    inv = np.where(a == 1, one, np.where(a == -1, np.where(odd, -one, one), np.zeros_like(r)))
    return np.where(neg, inv, r)


@op("Pow", since=7)
@_ignore
def pow_(x, y):
    """Output has the base's type; the exponent may be any numeric type (Pow-12+)."""
    dt = x.dtype
    if dt.kind in "iu":
        if y.dtype.kind in "iub":
            ya = y.astype(np.int64)
            xa = x.astype(np.int64) if dt.kind == "i" or dt.itemsize < 8 else x
            if xa.dtype == np.uint64:
                ya = np.maximum(ya, 0).astype(np.uint64)
            return out(_int_pow(xa, ya), dt)
        return out(np.power(x.astype(np.float64), up(y).astype(np.float64)), dt)
    if is_narrow(dt) or dt == np.float16:
        return out(np.power(x.astype(F32), y.astype(F32)), dt)
    return out(np.power(x, y.astype(dt, copy=False)), dt)


# ---------------------------------------------------------------- variadic

def _variadic(fn, xs):
    dt = xs[0].dtype
    acc_dt = F32 if (is_narrow(dt) or dt == np.float16) else dt
    acc = xs[0].astype(acc_dt, copy=True)
    for x in xs[1:]:
        acc = fn(acc, x.astype(acc_dt, copy=False))
    return acc, dt


@op("Sum", since=6)
@_ignore
def sum_(*xs):
    acc, dt = _variadic(np.add, xs)
    return out(acc, dt)


@op("Mean", since=6)
@_ignore
def mean(*xs):
    acc, dt = _variadic(np.add, xs)
    return out(acc / acc.dtype.type(len(xs)) if acc.dtype.kind == "f" else acc // len(xs), dt)


@op("Max", since=6)
@_ignore
def max_(*xs):
    acc, dt = _variadic(np.maximum, xs)
    return out(acc, dt)


@op("Min", since=6)
@_ignore
def min_(*xs):
    acc, dt = _variadic(np.minimum, xs)
    return out(acc, dt)


# ---------------------------------------------------------------- Clip

def _clip(x, lo, hi):
    dt = x.dtype
    xc = up(x, f16=False)
    if lo is not None:
        lo = np.asarray(lo).reshape(()) if np.size(lo) == 1 else lo
        xc = np.maximum(xc, np.asarray(lo).astype(xc.dtype))
    if hi is not None:
        hi = np.asarray(hi).reshape(()) if np.size(hi) == 1 else hi
        xc = np.minimum(xc, np.asarray(hi).astype(xc.dtype))
    return out(xc, dt) if xc is not x else x.copy()


@op("Clip", since=6)
@_ignore
def clip_6(x, *, min=-3.4028234663852886e38, max=3.4028234663852886e38):  # noqa: A002
    dt = up(x, f16=False).dtype
    return _clip(x, np.asarray(min, dtype=dt), np.asarray(max, dtype=dt))


@op("Clip", since=11)
@_ignore
def clip_11(x, min=None, max=None):  # noqa: A002
    return _clip(x, min, max)


# ---------------------------------------------------------------- comparisons and logic
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
    c = cond.astype(np.bool_, copy=False)
    if dt.kind in "OUS" or y.dtype.kind in "OUS":  # strings: never truncate to a fixed width
        return np.asarray(np.where(c, x.astype(object), y.astype(object)), dtype=object)
    return out(np.where(c, x, y.astype(dt, copy=False)), dt)


def _attach_infers() -> None:
    from .broadcast_infer import INFERS
    from .registry import register_infer

    for (name, since), fn in INFERS.items():
        register_infer(name, since)(fn)


_attach_infers()
