"""Elementwise math, logic and activation kernels vs independent oracles.

Oracles: NumPy/math in float64 (or Python ints, exact), torch CPU in float64 for activations, and
onnxruntime one-node models for a cross-check of the common float ops.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch

from jitort.ops.registry import KernelContext, call, lookup

BF16 = np.dtype(ml_dtypes.bfloat16)
# (rtol, atol) per output dtype, against a float64 oracle rounded to that dtype.
TOL = {
    np.dtype(np.float16): (2e-3, 2e-3),
    BF16: (1.6e-2, 1.6e-2),
    np.dtype(np.float32): (2e-6, 2e-6),
    np.dtype(np.float64): (1e-12, 1e-12),
}
FLOATS = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
INTS = [np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64,
                              np.uint8, np.uint16, np.uint32, np.uint64)]
SHAPES = [(), (0,), (1,), (7,), (3, 1, 5), (2, 0, 3)]
RNG = np.random.default_rng(1234)


def run(name, *inputs, opset=28, **attrs):
    entry = lookup(name, "", opset)
    return call(entry, list(inputs), attrs, KernelContext(opset=opset))


def run1(name, *inputs, **kw):
    (y,) = run(name, *inputs, **kw)
    return y


def close(got, expected, dtype=None):
    dtype = np.dtype(dtype or got.dtype)
    assert isinstance(got, np.ndarray), type(got)
    assert got.dtype == dtype, (got.dtype, dtype)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    rtol, atol = TOL.get(dtype, (0, 0))
    g = got.astype(np.float64)
    e = expected.astype(np.float64)
    np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True)


def exact(got, expected, dtype):
    assert isinstance(got, np.ndarray), type(got)
    assert got.dtype == np.dtype(dtype), (got.dtype, dtype)
    assert got.shape == np.shape(expected), (got.shape, np.shape(expected))
    np.testing.assert_array_equal(got, expected)


def rand(shape, dtype, lo=-3.0, hi=3.0):
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" :
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return RNG.uniform(lo, hi, size=shape).astype(dtype)


def wrap(values, dtype):
    """Python ints -> dtype with two's complement wraparound."""
    dtype = np.dtype(dtype)
    bits = dtype.itemsize * 8
    v = np.array([int(x) % (1 << bits) for x in np.ravel(values)], dtype=np.uint64)
    return v.astype(dtype).reshape(np.shape(values))


def pyints(a):
    return np.array(a, dtype=object) if np.ndim(a) == 0 else np.asarray(a).astype(object)


# ---------------------------------------------------------------- unary float math

UNARY = {
    "Sqrt": (np.sqrt, 0.0, 4.0), "Exp": (np.exp, -5.0, 5.0), "Log": (np.log, 0.01, 9.0),
    "Sin": (np.sin, -6.0, 6.0), "Cos": (np.cos, -6.0, 6.0), "Tan": (np.tan, -1.4, 1.4),
    "Asin": (np.arcsin, -1.0, 1.0), "Acos": (np.arccos, -1.0, 1.0),
    "Atan": (np.arctan, -9.0, 9.0), "Sinh": (np.sinh, -4.0, 4.0), "Cosh": (np.cosh, -4.0, 4.0),
    "Tanh": (np.tanh, -5.0, 5.0), "Asinh": (np.arcsinh, -9.0, 9.0),
    "Acosh": (np.arccosh, 1.0, 9.0), "Atanh": (np.arctanh, -0.99, 0.99),
    "Erf": (np.vectorize(math.erf, otypes=[np.float64]), -3.0, 3.0),
    "Floor": (np.floor, -9.0, 9.0), "Ceil": (np.ceil, -9.0, 9.0),
    "Reciprocal": (lambda v: 1.0 / v, 0.5, 9.0), "Abs": (np.abs, -9.0, 9.0),
    "Neg": (np.negative, -9.0, 9.0), "Sign": (np.sign, -2.0, 2.0),
}


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_float(name, dtype):
    fn, lo, hi = UNARY[name]
    for shape in SHAPES:
        x = rand(shape, dtype, lo, hi)
        y = run1(name, x)
        expected = fn(x.astype(np.float64)).astype(dtype)  # oracle rounded to the output type
        close(y, expected, dtype)


@pytest.mark.parametrize("name", ["Sqrt", "Exp", "Log", "Tanh", "Floor", "Ceil", "Abs", "Neg",
                                  "Sign", "Sin", "Erf", "Reciprocal"])
def test_unary_special_values(name):
    fn = UNARY[name][0]
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e30], np.float32)
    with np.errstate(all="ignore"):
        expected = fn(x.astype(np.float64)).astype(np.float32)
    close(run1(name, x), expected)


def test_round_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.3, 2.7, -2.7, np.nan, np.inf], np.float32)
    expected = np.array([0, 2, 2, -0.0, -2, -2, 2, 3, -3, np.nan, np.inf], np.float32)
    for dt in FLOATS:
        close(run1("Round", x.astype(dt)), expected.astype(dt), dt)
    assert np.signbit(run1("Round", x)[3])


@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_unary_int(dtype):
    x = rand((4, 9), dtype)
    info = np.iinfo(dtype)
    x.flat[:3] = [info.min, info.max, 0]
    xi = pyints(x)
    exact(run1("Abs", x), wrap(np.abs(xi), dtype), dtype)
    exact(run1("Sign", x), np.sign(x.astype(np.float64)).astype(dtype), dtype)
    if dtype.kind == "i":
        exact(run1("Neg", x), wrap(-xi, dtype), dtype)


# ---------------------------------------------------------------- binary arithmetic

BCAST = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((), (2, 3)), ((0, 3), (1, 3)),
         ((1,), ())]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name,fn", [("Add", np.add), ("Sub", np.subtract),
                                     ("Mul", np.multiply), ("Div", np.divide)])
def test_arith_float(name, fn, dtype):
    for sa, sb in BCAST:
        a, b = rand(sa, dtype), rand(sb, dtype, 0.5, 3.0)
        expected = fn(a.astype(np.float64), b.astype(np.float64)).astype(dtype)
        close(run1(name, a, b), expected, dtype)


def _trunc_div(a, b):
    if b == 0:
        return 0
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_arith_int(dtype):
    for sa, sb in BCAST:
        a, b = rand(sa, dtype), rand(sb, dtype)
        b = np.where(b == 0, dtype.type(3), b)
        ai, bi = np.broadcast_arrays(pyints(a), pyints(b))
        exact(run1("Add", a, b), wrap(ai + bi, dtype), dtype)
        exact(run1("Sub", a, b), wrap(ai - bi, dtype), dtype)
        exact(run1("Mul", a, b), wrap(ai * bi, dtype), dtype)
        div = np.vectorize(_trunc_div, otypes=[object])(ai, bi) if ai.size else ai
        exact(run1("Div", a, b), wrap(div, dtype), dtype)


def test_div_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 1, -1], np.int32)
    b = np.array([2, 2, -2, -2, 3, 3], np.int32)
    exact(run1("Div", a, b), np.array([3, -3, -3, 3, 0, 0], np.int32), np.int32)


@pytest.mark.parametrize("dtype", INTS, ids=str)
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_int(dtype, fmod):
    a, b = rand((5, 6), dtype), rand((6,), dtype)
    b = np.where(b == 0, dtype.type(7), b)
    ai, bi = np.broadcast_arrays(pyints(a), pyints(b))
    if fmod:
        expected = np.vectorize(lambda x, y: x - y * _trunc_div(x, y), otypes=[object])(ai, bi)
    else:
        expected = ai % bi  # Python: sign of the divisor
    exact(run1("Mod", a, b, fmod=fmod), wrap(expected, dtype), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_float(dtype, fmod):
    a = rand((4, 7), dtype, -20, 20)
    b = rand((7,), dtype, -6, 6)
    a64, b64 = np.broadcast_arrays(a.astype(np.float64), b.astype(np.float64))
    f = math.fmod if fmod else (lambda x, y: x % y)
    expected = np.array([f(x, y) for x, y in zip(a64.ravel(), b64.ravel())]).reshape(a64.shape)
    close(run1("Mod", a, b, fmod=fmod), expected.astype(dtype), dtype)


def test_mod_float_edge_cases():
    a = np.array([0.0, -0.0, np.inf, 3.0, 3.0, -3.0, 3.0, np.nan], np.float32)
    b = np.array([-2.0, 2.0, 2.0, 0.0, np.inf, np.inf, -np.inf, 1.0], np.float32)
    y = run1("Mod", a, b)
    expected = np.array([-0.0, 0.0, np.nan, np.nan, 3.0, np.inf, -np.inf, np.nan], np.float32)
    close(y, expected)
    assert list(np.signbit(y[:2])) == [True, False]
    y1 = run1("Mod", a, b, fmod=1)
    close(y1, np.array([0.0, -0.0, np.nan, np.nan, 3.0, -3.0, 3.0, np.nan], np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64], ids=str)
def test_pow_int(dtype):
    a = RNG.integers(-6, 7, size=(5, 4)).astype(dtype)
    e = RNG.integers(-2, 8, size=(4,)).astype(dtype)
    ai, ei = np.broadcast_arrays(pyints(a), pyints(e))

    def p(x, y):
        if y >= 0:
            return x ** y
        return 1 if x == 1 else ((-1) ** y if x == -1 else 0)

    exact(run1("Pow", a, e), wrap(np.vectorize(p, otypes=[object])(ai, ei), dtype), dtype)
    # mixed exponent types (Pow-12+): output keeps the base type
    exact(run1("Pow", a, e.astype(np.int64 if dtype == np.int32 else np.int32)),
          wrap(np.vectorize(p, otypes=[object])(ai, ei), dtype), dtype)
    ef = np.array([2.0], np.float32)
    exact(run1("Pow", a, ef), (a.astype(np.float64) ** 2).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_pow_float(dtype):
    a = rand((3, 5), dtype, 0.1, 3.0)
    e = rand((5,), dtype, -2.0, 2.0)
    close(run1("Pow", a, e), (a.astype(np.float64) ** e.astype(np.float64)).astype(dtype), dtype)
    ei = np.array([3], np.int64)
    close(run1("Pow", a, ei), (a.astype(np.float64) ** 3).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", INTS, ids=str)
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift(dtype, direction):
    bits = dtype.itemsize * 8
    x = rand((6, 5), dtype)
    lo = -3 if dtype.kind == "i" else 0
    s = RNG.integers(lo, bits + 3, size=(5,)).astype(dtype)
    s[0], s[1] = 0, bits - 1
    xb, sb = np.broadcast_arrays(pyints(x), pyints(s))

    def f(v, k):
        if k < 0 or k >= bits:
            return -1 if (direction == "RIGHT" and v < 0) else 0
        return v << k if direction == "LEFT" else v >> k  # Python >> is arithmetic

    exact(run1("BitShift", x, s, direction=direction),
          wrap(np.vectorize(f, otypes=[object])(xb, sb), dtype), dtype)


# ---------------------------------------------------------------- comparisons and logic

CMP = {"Equal": np.equal, "Less": np.less, "LessOrEqual": np.less_equal,
       "Greater": np.greater, "GreaterOrEqual": np.greater_equal}


CMP_CASES = [(name, dt) for name in sorted(CMP) for dt in FLOATS + INTS + [np.dtype(np.bool_)]
             if dt != np.bool_ or name == "Equal"]  # the schema allows bool only for Equal


@pytest.mark.parametrize("name,dtype", CMP_CASES, ids=[f"{n}-{d}" for n, d in CMP_CASES])
def test_compare(name, dtype):
    for sa, sb in BCAST:
        if dtype == np.bool_:
            a, b = RNG.random(sa) < 0.5, RNG.random(sb) < 0.5
        else:
            a = rand(sa, dtype, -2, 2)
            b = rand(sb, dtype, -2, 2)
            if dtype.kind == "f" or dtype == BF16:
                a, b = np.round(a.astype(np.float32)).astype(dtype), np.round(b.astype(np.float32)).astype(dtype)
        exact(run1(name, a, b), CMP[name](pyints(a), pyints(b)).astype(bool)
              if dtype.kind in "iu" else CMP[name](a.astype(np.float64), b.astype(np.float64)),
              np.bool_)
    nan = np.array([np.nan, 1.0], np.float32)
    exact(run1(name, nan, nan), CMP[name](nan, nan), np.bool_)


def test_equal_strings():
    a = np.array(["a", "bc", "", "x"], dtype=object)
    b = np.array(["a", "b", "", "X"], dtype=object)
    exact(run1("Equal", a, b), [True, False, True, False], np.bool_)
    exact(run1("Equal", a.reshape(4, 1), np.array("a", dtype=object)).ravel(),
          [True, False, False, False], np.bool_)


@pytest.mark.parametrize("name,fn", [("And", np.logical_and), ("Or", np.logical_or),
                                     ("Xor", np.logical_xor)])
def test_logical(name, fn):
    for sa, sb in BCAST:
        a, b = RNG.random(sa) < 0.5, RNG.random(sb) < 0.5
        exact(run1(name, a, b), np.broadcast_to(fn(a, b), np.broadcast_shapes(sa, sb)), np.bool_)
    x = RNG.random((3, 4)) < 0.5
    exact(run1("Not", x), ~x, np.bool_)


@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_bitwise(dtype):
    a, b = rand((4, 5), dtype), rand((5,), dtype)
    ai, bi = np.broadcast_arrays(pyints(a), pyints(b))
    exact(run1("BitwiseAnd", a, b), wrap(ai & bi, dtype), dtype)
    exact(run1("BitwiseOr", a, b), wrap(ai | bi, dtype), dtype)
    exact(run1("BitwiseXor", a, b), wrap(ai ^ bi, dtype), dtype)
    exact(run1("BitwiseNot", a), wrap(~pyints(a), dtype), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_isinf_isnan(dtype):
    x = np.array([1.0, np.inf, -np.inf, np.nan, 0.0, -2.0], np.float32).astype(dtype)
    exact(run1("IsNaN", x), [False, False, False, True, False, False], np.bool_)
    exact(run1("IsInf", x), [False, True, True, False, False, False], np.bool_)
    exact(run1("IsInf", x, detect_negative=0), [False, True, False, False, False, False], np.bool_)
    exact(run1("IsInf", x, detect_positive=0), [False, False, True, False, False, False], np.bool_)


# ---------------------------------------------------------------- variadic, Clip, Where

@pytest.mark.parametrize("dtype", FLOATS + [np.dtype(np.int32), np.dtype(np.uint8)], ids=str)
def test_variadic(dtype):
    shapes = [(3, 1, 4), (4,), (2, 1, 1, 1)]
    for n in (1, 2, 3):
        xs = [rand(s, dtype, -3, 3) for s in shapes[:n]]
        if dtype.kind in "iu":
            xs = [(x % 16).astype(dtype) for x in xs]
        f = [x.astype(np.float64) for x in xs]
        full = np.broadcast_shapes(*[x.shape for x in xs])
        ref_sum = np.broadcast_to(sum(f), full)
        close(run1("Sum", *xs), ref_sum.astype(dtype), dtype)
        close(run1("Max", *xs), np.broadcast_to(np.maximum.reduce(np.broadcast_arrays(*f)), full).astype(dtype), dtype)
        close(run1("Min", *xs), np.broadcast_to(np.minimum.reduce(np.broadcast_arrays(*f)), full).astype(dtype), dtype)
        if dtype.kind == "f" or dtype == BF16:
            close(run1("Mean", *xs), (ref_sum / n).astype(dtype), dtype)
    nan = np.array([np.nan, 1.0], np.float32)
    close(run1("Max", nan, np.float32([0.0, 2.0])), np.float32([np.nan, 2.0]))


@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=str)
def test_clip(dtype):
    x = rand((3, 7), dtype, -5, 5)
    lo, hi = np.array(-1, dtype=np.float32), np.array(2, dtype=np.float32)
    if dtype.kind == "u":
        lo = np.array(3, np.float32)
    lo, hi = lo.astype(dtype), hi.astype(dtype)
    x64 = x.astype(np.float64)
    lo64, hi64 = float(lo.astype(np.float64)), float(hi.astype(np.float64))
    close(run1("Clip", x, lo, hi), np.minimum(np.maximum(x64, lo64), hi64).astype(dtype), dtype)
    close(run1("Clip", x, lo), np.maximum(x64, lo64).astype(dtype), dtype)
    close(run1("Clip", x, None, hi), np.minimum(x64, hi64).astype(dtype), dtype)
    close(run1("Clip", x), x, dtype)
    # min > max: everything becomes max
    close(run1("Clip", x, hi, lo), np.full(x.shape, lo64).astype(dtype), dtype)


def test_clip_attribute_form():
    x = rand((4, 5), np.float32, -5, 5)
    close(run1("Clip", x, opset=6, min=-1.0, max=1.5), np.clip(x, -1, 1.5))
    close(run1("Clip", x, opset=6), x)
    x16 = x.astype(np.float16)
    close(run1("Clip", x16, opset=6, max=0.5), np.minimum(x16, np.float16(0.5)), np.float16)


def test_where():
    c = RNG.random((3, 1, 4)) < 0.5
    for dt in FLOATS + INTS + [np.dtype(np.bool_)]:
        x, y = rand((5, 4), dt) if dt != np.bool_ else RNG.random((5, 4)) < 0.5, np.zeros((1,), dt)
        exact(run1("Where", c, x, y), np.where(c, x, y), dt)
    xs = np.array(["a", "b"], dtype=object)
    ys = np.array(["c", "d"], dtype=object)
    got = run1("Where", np.array([True, False]), xs, ys)
    assert got.tolist() == ["a", "d"]


def test_zero_d_outputs_are_arrays():
    s = np.array(2.5, np.float32)
    for name in ["Add", "Mul", "Div", "Pow", "Sub", "Mod", "Equal", "Less", "Max", "Sum"]:
        y = run1(name, s, s)
        assert isinstance(y, np.ndarray) and y.shape == (), name
    for name in ["Exp", "Abs", "Relu", "Sigmoid", "Gelu", "IsNaN", "Round"]:
        y = run1(name, s)
        assert isinstance(y, np.ndarray) and y.shape == (), name


# ---------------------------------------------------------------- activations (torch oracle)

F = torch.nn.functional


def _t(fn):
    return lambda x: fn(torch.from_numpy(x)).numpy()


ACT = {
    "Relu": ({}, _t(torch.relu)),
    "Sigmoid": ({}, _t(torch.sigmoid)),
    "HardSigmoid": ({"alpha": 0.3, "beta": 0.4}, lambda x: np.clip(0.3 * x + 0.4, 0, 1)),
    "HardSwish": ({}, _t(F.hardswish)),
    "LeakyRelu": ({"alpha": 0.1}, _t(lambda t: F.leaky_relu(t, 0.1))),
    "Elu": ({"alpha": 0.7}, _t(lambda t: F.elu(t, 0.7))),
    # ONNX's default alpha/gamma are float32-rounded, unlike torch's exact SELU constants
    "Selu": ({}, lambda x: 1.05070102214813232421875 * np.where(
        x > 0, x, 1.67326319217681884765625 * np.expm1(x))),
    "Celu": ({"alpha": 1.5}, _t(lambda t: F.celu(t, 1.5))),
    "ThresholdedRelu": ({"alpha": 0.5}, _t(lambda t: torch.where(t > 0.5, t, 0.0))),
    "Softplus": ({}, _t(F.softplus)),
    "Softsign": ({}, _t(F.softsign)),
    "Shrink": ({"lambd": 0.8, "bias": 0.3},
               _t(lambda t: torch.where(t < -0.8, t + 0.3, torch.where(t > 0.8, t - 0.3, 0.0)))),
    "Mish": ({}, _t(F.mish)),
    "Swish": ({"alpha": 1.7}, _t(lambda t: t * torch.sigmoid(1.7 * t))),
    "Gelu": ({}, _t(F.gelu)),
    "GeluTanh": ({"approximate": "tanh"}, _t(lambda t: F.gelu(t, approximate="tanh"))),
}


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", sorted(ACT))
def test_activation(name, dtype):
    attrs, ref = ACT[name]
    op_name = "Gelu" if name.startswith("Gelu") else name
    for shape in SHAPES + [(2, 3, 4, 5)]:
        x = rand(shape, dtype, -6, 6)
        expected = ref(x.astype(np.float64)).astype(dtype)
        close(run1(op_name, x, **attrs), expected, dtype)


def test_activation_extremes():
    x = np.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4, np.inf, -np.inf], np.float32)
    t = torch.from_numpy(x.astype(np.float64))
    with np.errstate(all="ignore"):
        close(run1("Sigmoid", x), torch.sigmoid(t).numpy().astype(np.float32))
        close(run1("Softplus", x), np.logaddexp(0.0, x.astype(np.float64)).astype(np.float32))
        close(run1("Mish", x[:7]), F.mish(t[:7]).numpy().astype(np.float32))
        close(run1("Swish", x[:7]), F.silu(t[:7]).numpy().astype(np.float32))
    assert not np.isnan(run1("Sigmoid", x)).any()


def test_relu_int_and_prelu():
    for dt in (np.int8, np.int32, np.int64):
        x = rand((3, 4), dt)
        exact(run1("Relu", x), np.maximum(x, 0), dt)
    x = rand((2, 3, 4, 5), np.float32)
    slope = rand((3, 1, 1), np.float32, 0, 1)
    expected = F.prelu(torch.from_numpy(x), torch.from_numpy(slope.ravel())).numpy()
    close(run1("PRelu", x, slope), expected)
    close(run1("PRelu", x, np.float32([0.25])), np.where(x < 0, 0.25 * x, x))
    xi = rand((4, 5), np.int32)
    exact(run1("PRelu", xi, np.int32([2])), np.where(xi < 0, xi * 2, xi), np.int32)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_swiglu(dtype):
    a, b = rand((3, 8), dtype), rand((3, 8), dtype)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    expected = a64 * (1 / (1 + np.exp(-0.5 * a64))) * b64
    close(run1("SwiGLU", a, b, alpha=0.5), expected.astype(dtype), dtype)


# ---------------------------------------------------------------- onnxruntime cross-check

def _ort(op_type, inputs, attrs, opset=20):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    names = [f"x{i}" for i in range(len(inputs))]
    node = helper.make_node(op_type, names, ["y"], **attrs)
    code = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, code[a.dtype], None) for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info("y", code[inputs[0].dtype], None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs)))[0]


@pytest.mark.parametrize("name,attrs", [("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
                                        ("Erf", {}), ("Sigmoid", {}), ("Softplus", {}),
                                        ("Mish", {}), ("Celu", {}), ("HardSwish", {}),
                                        ("Pow", {}), ("Mod", {"fmod": 1})])
def test_vs_onnxruntime(name, attrs):
    x = rand((4, 33), np.float32, -5, 5)
    inputs = [x]
    if name in ("Pow", "Mod"):
        inputs = [np.abs(x) + 0.1, rand((33,), np.float32, -2, 2)]
    close(run1(name, *inputs, **attrs), _ort(name, inputs, attrs))


# -- pre-opset-7 broadcast attributes (jitort/ops/legacy.py) -----------------------------------
@pytest.mark.parametrize("name,fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                                     ("Div", np.divide)])
@pytest.mark.parametrize("opset", [1, 6])
def test_legacy_broadcast_at_axis(name, fn, opset):
    import jitort
    from onnx import TensorProto, helper

    a = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    b = (RNG.standard_normal(3) + 3).astype(np.float32)
    node = helper.make_node(name, ["a", "b"], ["y"], broadcast=1, axis=1)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 4]),
                                        helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    y = jitort.load(m)(a=a, b=b)[0]
    np.testing.assert_allclose(y, fn(a, b[:, None]), rtol=1e-6)


def test_legacy_prelu_slope_is_per_channel():
    import jitort
    from onnx import TensorProto, helper

    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    s = np.array([0.1, 0.2, 0.3], np.float32)
    g = helper.make_graph([helper.make_node("PRelu", ["x", "s"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 6)])
    np.testing.assert_allclose(jitort.load(m)(x=x, s=s)[0], np.where(x < 0, x * s[:, None], x))
