"""Cast / CastLike / BitCast and the string ops vs independent oracles.

Oracles: onnxruntime one-node models (standard types, float8/bfloat16 via a round trip back to
float32, strings), brute-force nearest-even search over every representable value of the narrow
float formats, Python-int wraparound for the narrow integer types, and Python's re/str methods.
"""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from jitort.dtypes import np_dtype
from jitort.ops.registry import KernelContext, call, lookup

# (rtol, atol) per output dtype; casts are exact except where an oracle double-rounds.
TOL = {np.dtype(np.float16): (1e-3, 0.0), np.dtype(ml_dtypes.bfloat16): (8e-3, 0.0)}
STD = [TP.BOOL, TP.INT8, TP.UINT8, TP.INT16, TP.UINT16, TP.INT32, TP.UINT32, TP.INT64,
       TP.UINT64, TP.FLOAT16, TP.FLOAT, TP.DOUBLE]
F8 = [TP.FLOAT8E4M3FN, TP.FLOAT8E4M3FNUZ, TP.FLOAT8E5M2, TP.FLOAT8E5M2FNUZ]
RNG = np.random.default_rng(7)


def run1(name, *inputs, opset=28, **attrs):
    entry = lookup(name, "", opset)
    (y,) = call(entry, list(inputs), attrs, KernelContext(opset=opset))
    return y


def cast(x, to, opset=28, **attrs):
    return run1("Cast", x, opset=opset, to=to, **attrs)


def same(got, expected, dtype):
    dtype = np.dtype(dtype)
    assert isinstance(got, np.ndarray) and got.dtype == dtype, (type(got), got.dtype, dtype)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    if dtype.kind == "O":
        assert got.tolist() == expected.tolist()
        return
    if dtype.kind in "fV" and dtype.itemsize > 1 or dtype == np.float32:
        rtol, atol = TOL.get(dtype, (0.0, 0.0))
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64),
                                   rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got.astype(np.float64) if dtype.kind == "V" else got,
                                      expected.astype(np.float64) if dtype.kind == "V" else expected)


def ort_run(nodes, inputs: dict, in_types: dict, out_type, opset=21):
    import onnxruntime as ort

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, t, None) for n, t in in_types.items()],
        [helper.make_tensor_value_info("y", out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def ort_cast(x, src, to, opset=21, **attrs):
    return ort_run([helper.make_node("Cast", ["x"], ["y"], to=to, **attrs)], {"x": x},
                   {"x": src}, to, opset)


def values_for(src):
    dt = np_dtype(src)
    if dt == np.bool_:
        return np.array([True, False, True], np.bool_)
    v = np.array([0, 1, 2, 5, 7, 100, 127, 3, 60], np.float64)
    if dt.kind in "if":
        v = np.concatenate([v, -v[1:6]])
    if dt.kind == "f":
        v = np.concatenate([v, [0.5, 1.25, -2.75, 3.9, -3.9]])
    return v.astype(dt).reshape(1, -1, 1)


# ---------------------------------------------------------------- standard numeric pairs

@pytest.mark.parametrize("src", STD, ids=lambda c: TP.DataType.Name(c))
def test_standard_pairs_vs_onnxruntime(src):
    x = values_for(src)
    for to in STD:
        dst = np_dtype(to)
        if dst.kind == "u" and np_dtype(src).kind == "f":
            xs = np.abs(x)  # negative float -> unsigned is undefined
        else:
            xs = x
        same(cast(xs, to), ort_cast(xs, src, to), dst)


def test_integer_wraparound():
    x = np.array([200, -56, 300, -129, 2**40 + 5, -(2**63)], np.int64)
    same(cast(x, TP.INT8), [-56, -56, 44, 127, 5, 0], np.int8)
    same(cast(x, TP.UINT8), [200, 200, 44, 127, 5, 0], np.uint8)
    same(cast(np.array([2**64 - 1], np.uint64), TP.INT32), [-1], np.int32)
    same(cast(np.array([-1], np.int32), TP.UINT64), [2**64 - 1], np.uint64)


def test_float_to_bool_and_back():
    x = np.array([0.0, -0.0, 0.1, np.nan, -np.inf], np.float32)
    same(cast(x, TP.BOOL), [False, False, True, True, True], np.bool_)
    same(cast(np.array([True, False]), TP.DOUBLE), [1.0, 0.0], np.float64)
    same(cast(np.array([True, False]), TP.BFLOAT16), [1.0, 0.0], ml_dtypes.bfloat16)


# ---------------------------------------------------------------- float8 / bfloat16

def _special_floats(n=200):
    v = np.concatenate([RNG.normal(0, 1, n) * 10.0 ** RNG.integers(-6, 6, n),
                        [0.0, -0.0, np.nan, np.inf, -np.inf, 1e6, -1e6, 448.0, 464.0, 57344.0,
                         61440.0, 240.0, 1e-9, -1e-9]])
    return v.astype(np.float32)


@pytest.mark.parametrize("to", F8 + [TP.BFLOAT16], ids=lambda c: TP.DataType.Name(c))
@pytest.mark.parametrize("saturate", [1, 0])
def test_float8_vs_onnxruntime(to, saturate):
    x = _special_floats()
    attrs = {"saturate": saturate} if to in F8 else {}
    nodes = [helper.make_node("Cast", ["x"], ["t"], to=to, **attrs),
             helper.make_node("Cast", ["t"], ["y"], to=TP.FLOAT)]
    expected = ort_run(nodes, {"x": x}, {"x": TP.FLOAT}, TP.FLOAT, opset=21)
    got = cast(x, to, opset=21, **attrs)
    assert got.dtype == np_dtype(to)
    if to == TP.FLOAT8E5M2 and not saturate:
        # onnxruntime rounds values just above FLT_MAX (57344 < |x| < 65536) into a NaN code;
        # the spec (and RNE) says they overflow to +-Inf.
        over = np.abs(x) > 57344
        assert (got.astype(np.float32)[over] == np.sign(x[over]) * np.inf).all()
        x, got, expected = x[~over], got[~over], expected[~over]
    np.testing.assert_array_equal(got.astype(np.float32), expected)
    # and back to float / float16 (exact)
    same(cast(got, TP.FLOAT), got.astype(np.float32), np.float32)
    same(cast(got, TP.FLOAT16, opset=21), got.astype(np.float32).astype(np.float16), np.float16)


def test_float8_saturation_tables():
    x = np.array([np.inf, -np.inf, 1e9, -1e9, np.nan, -0.0], np.float32)
    for to in F8:
        fmax = float(ml_dtypes.finfo(np_dtype(to)).max)
        for opset in (19, 21, 24, 28):
            got = cast(x, to, opset=opset).astype(np.float32)
            same(got, [fmax, -fmax, fmax, -fmax, np.nan, -0.0], np.float32)
        nosat = cast(x, to, saturate=0).astype(np.float32)
        if to == TP.FLOAT8E5M2:
            same(nosat, [np.inf, -np.inf, np.inf, -np.inf, np.nan, -0.0], np.float32)
        else:
            assert np.isnan(nosat[:5]).all() and nosat[5] == 0
        fnuz = to in (TP.FLOAT8E4M3FNUZ, TP.FLOAT8E5M2FNUZ)
        assert bool(np.signbit(cast(x, to, saturate=0).astype(np.float32)[5])) != fnuz


def _all_values(dt):
    """Every finite value of a <= 8-bit float format, with its bit pattern."""
    bits = np.arange(256, dtype=np.uint8)
    n = {1: 8}.get(dt.itemsize)
    nbits = {np.dtype(ml_dtypes.float4_e2m1fn): 4, np.dtype(ml_dtypes.float6_e2m3fn): 6,
             np.dtype(ml_dtypes.float6_e3m2fn): 6}.get(dt, n)
    bits = bits[: 1 << nbits]
    vals = bits.view(dt) if nbits == 8 else bits.view(dt)
    f = vals.astype(np.float64)
    keep = np.isfinite(f)
    return f[keep], bits[keep]


def _nearest_even(x, dt):
    """Brute force RNE onto the finite values of dt; out of range saturates."""
    vals, bits = _all_values(dt)
    order = np.argsort(vals, kind="stable")
    vals, bits = vals[order], bits[order]
    out = np.empty(x.shape, np.float64)
    for i, v in enumerate(x.astype(np.float64).ravel()):
        d = np.abs(vals - v)
        best = np.flatnonzero(d == d.min())
        if len(best) > 1:  # tie: the even mantissa (bit pattern LSB 0)
            best = [b for b in best if bits[b] % 2 == 0] or best
        r = vals[best[0]]
        if r == 0:
            r = np.copysign(0.0, v)
        out.flat[i] = r
    return out


@pytest.mark.parametrize("to", F8 + [TP.FLOAT4E2M1, TP.FLOAT6E2M3, TP.FLOAT6E3M2],
                         ids=lambda c: TP.DataType.Name(c))
def test_narrow_float_rounding_brute_force(to):
    dt = np_dtype(to)
    vals, _ = _all_values(dt)
    fmax = vals.max()
    mids = (np.unique(vals)[1:] + np.unique(vals)[:-1]) / 2  # exact ties
    x = np.concatenate([RNG.uniform(-fmax, fmax, 300), mids, [fmax * 1.5, -fmax * 3]])
    for src in (np.float32, np.float64, np.float16):
        xs = x.astype(src)
        if src == np.float16:
            xs = xs[np.isfinite(xs)]
        got = cast(xs, to)
        assert got.dtype == dt
        expected = _nearest_even(xs, dt)
        np.testing.assert_array_equal(got.astype(np.float64), expected)


def test_float4_specials():
    x = np.array([np.inf, -np.inf, 100.0, -0.0], np.float32)
    same(cast(x, TP.FLOAT4E2M1).astype(np.float32), [6, -6, 6, 0], np.float32)


# ---------------------------------------------------------------- float8e8m0

def test_e8m0_round_modes():
    x = np.array([1.0, 1.1, 1.5, 1.7, 3.0, 0.75, 2.0**-20 * 1.25, 2.0**100 * 1.5], np.float32)
    lo = np.floor(np.log2(x.astype(np.float64)))
    down, up = 2.0**lo, 2.0 ** (lo + (x != 2.0**lo))
    nearest = np.where(x.astype(np.float64) - down >= up - x, up, down)
    for mode, exp in (("up", up), ("down", down), ("nearest", nearest)):
        got = cast(x, TP.FLOAT8E8M0, round_mode=mode)
        assert got.dtype == np.dtype(ml_dtypes.float8_e8m0fnu)
        np.testing.assert_array_equal(got.astype(np.float64), exp, err_msg=mode)
        same(cast(got, TP.FLOAT), exp.astype(np.float32), np.float32)


def test_e8m0_specials():
    big = np.float32(2.0**127 * 1.5)
    x = np.array([0.0, np.nan, np.inf, big], np.float32)
    sat = cast(x, TP.FLOAT8E8M0).view(np.uint8)
    np.testing.assert_array_equal(sat, [0, 0xFF, 0xFE, 0xFE])
    nosat = cast(x, TP.FLOAT8E8M0, saturate=0, round_mode="up").view(np.uint8)
    np.testing.assert_array_equal(nosat, [0, 0xFF, 0xFF, 0xFF])


# ---------------------------------------------------------------- int4 / uint4 / int2 / uint2

@pytest.mark.parametrize("to,bits,signed", [(TP.INT4, 4, True), (TP.UINT4, 4, False),
                                            (TP.INT2, 2, True), (TP.UINT2, 2, False)])
def test_subbyte_ints(to, bits, signed):
    dt = np_dtype(to)

    def wrap(v):
        v = int(v) % (1 << bits)
        return v - (1 << bits) if signed and v >= 1 << (bits - 1) else v

    ints = np.arange(-20, 21, dtype=np.int64)
    for src in (np.int8, np.int32, np.int64, np.uint16):
        xs = ints.astype(src) if np.dtype(src).kind == "i" else np.abs(ints).astype(src)
        got = cast(xs, to)
        same(got.astype(np.int64), [wrap(v) for v in xs.tolist()], np.int64)
        assert got.dtype == dt
    fl = np.array([-9.7, -8.0, -1.5, -0.4, 0.0, 0.6, 1.9, 7.2, 8.0, 15.5, np.inf, np.nan], np.float32)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    for src in (np.float32, np.float16, np.float64):
        got = cast(fl.astype(src), to)
        # in range: truncation toward zero; out of range is undefined by the spec and follows
        # ml_dtypes' own cast (which generates ONNX's conformance data)
        want = [int(v) if np.isfinite(v) and lo <= int(v) <= hi
                else int(np.trunc(np.array([v], src)).astype(dt).astype(np.int64)[0]) for v in fl]
        same(got.astype(np.int64), want, np.int64)
    # back to wider types: exact, sign-extended
    v = np.arange(lo, hi + 1).astype(dt)
    same(cast(v, TP.INT8 if signed else TP.UINT8), np.arange(lo, hi + 1), np.int8 if signed else np.uint8)
    same(cast(v, TP.FLOAT16), np.arange(lo, hi + 1).astype(np.float16), np.float16)
    same(cast(v, TP.FLOAT), np.arange(lo, hi + 1).astype(np.float32), np.float32)
    same(cast(v, TP.BOOL), np.arange(lo, hi + 1) != 0, np.bool_)


# ---------------------------------------------------------------- strings

@pytest.mark.parametrize("src", [TP.FLOAT, TP.DOUBLE, TP.FLOAT16, TP.INT64, TP.INT8, TP.UINT64,
                                 TP.BOOL], ids=lambda c: TP.DataType.Name(c))
def test_to_string_vs_onnxruntime(src):
    dt = np_dtype(src)
    if dt.kind == "f":
        x = np.array([1.5, 0.1, 1e-7, 1e20, 123456789.0, np.nan, np.inf, -np.inf, -0.0, 3.0,
                      1 / 3, 0.3, -2.5e-5], np.float64).astype(dt)
    elif dt == np.bool_:
        x = np.array([True, False])
    else:
        info = np.iinfo(dt)
        x = np.array([info.min, info.max, 0, 7], dt)
    same(cast(x, TP.STRING, opset=21), ort_cast(x, src, TP.STRING), object)


def test_string_parsing():
    s = np.array(["1.5", "INF", "-inf", "+Inf", "nan", "NaN", "1e5", "-2.5E-3", " 7", "1000"],
                 dtype=object)
    expected = np.array([1.5, np.inf, -np.inf, np.inf, np.nan, np.nan, 1e5, -2.5e-3, 7, 1000])
    for to in (TP.FLOAT, TP.DOUBLE, TP.FLOAT16):
        dst = np_dtype(to)
        same(cast(s, to), expected.astype(dst), dst)
        same(cast(s, to), ort_cast(s, TP.STRING, to), dst)
    same(cast(s, TP.BFLOAT16), expected.astype(ml_dtypes.bfloat16), ml_dtypes.bfloat16)
    # float8 goes through the saturating conversion
    same(cast(np.array(["1e9", "INF"], dtype=object), TP.FLOAT8E4M3FN).astype(np.float32),
         [448.0, 448.0], np.float32)
    ints = np.array(["7", "-3", "300", "-129", "12345678901234"], dtype=object)
    for to in (TP.INT8, TP.UINT8, TP.INT32, TP.INT64, TP.UINT64):
        dst = np_dtype(to)
        same(cast(ints, to), ort_cast(ints, TP.STRING, to), dst)
    same(cast(np.array(["100.5", "-2.7"], dtype=object), TP.INT32), [100, -2], np.int32)
    same(cast(np.array(["0", "1", "-3"], dtype=object), TP.BOOL), [False, True, True], np.bool_)
    same(cast(ints, TP.INT4).astype(np.int8), [7, -3, -4, -1, 2], np.int8)
    with pytest.raises(ValueError):
        cast(np.array(["hello"], dtype=object), TP.FLOAT)


def test_string_roundtrip_and_shape():
    s = np.array([["a", "b"], ["c", ""]], dtype=object)
    same(cast(s, TP.STRING), s, object)
    same(cast(np.zeros((0, 3), np.float32), TP.STRING), np.zeros((0, 3), object), object)
    same(cast(np.array(2.5, np.float32), TP.STRING), np.array("2.5", dtype=object), object)


# ---------------------------------------------------------------- CastLike / BitCast

def test_castlike():
    x = np.array([1.7, -2.2, 1e6, np.inf], np.float32)
    same(run1("CastLike", x, np.zeros((), np.int32))[:2], [1, -2], np.int32)
    t8 = np.zeros((1,), ml_dtypes.float8_e4m3fn)
    same(run1("CastLike", x, t8).astype(np.float32), [1.75, -2.25, 448.0, 448.0], np.float32)
    ns = run1("CastLike", x, t8, saturate=0).astype(np.float32)
    assert np.isnan(ns[2:]).all()
    same(run1("CastLike", x[:2], np.array(["z"], dtype=object)), np.array(["1.7", "-2.2"], dtype=object), object)
    same(run1("CastLike", x[:2], np.zeros(0, np.float16), opset=15), x[:2].astype(np.float16), np.float16)


@pytest.mark.parametrize("src,to", [(np.float32, TP.INT32), (np.int64, TP.DOUBLE),
                                    (np.uint16, TP.FLOAT16), (np.int8, TP.UINT8),
                                    (np.uint16, TP.BFLOAT16), (np.float64, TP.UINT64),
                                    (np.uint8, TP.FLOAT8E5M2), (np.int16, TP.UINT16)])
def test_bitcast(src, to):
    x = (RNG.integers(0, 255, size=(3, 4)).astype(src) if np.dtype(src).kind in "iu"
         else RNG.normal(size=(3, 4)).astype(src))
    dst = np_dtype(to)
    got = run1("BitCast", x, to=to)
    assert got.dtype == dst and got.shape == x.shape
    assert got.tobytes() == x.astype(x.dtype.newbyteorder("<")).tobytes()
    scalar = run1("BitCast", np.array(1.0, np.float32), to=TP.INT32)
    assert scalar.shape == () and int(scalar) == 0x3F800000


def test_bitcast_subbyte_and_bool():
    v = np.arange(-8, 8).astype(ml_dtypes.int4)
    u = run1("BitCast", v, to=TP.UINT4)
    same(u.astype(np.int64), np.arange(-8, 8) % 16, np.int64)
    same(run1("BitCast", u, to=TP.INT4).astype(np.int64), np.arange(-8, 8), np.int64)
    f4 = run1("BitCast", u, to=TP.FLOAT4E2M1)
    bits = (np.arange(-8, 8) % 16).astype(np.uint8)
    same(f4.astype(np.float32), bits.view(ml_dtypes.float4_e2m1fn).astype(np.float32), np.float32)
    i2 = run1("BitCast", np.arange(4).astype(ml_dtypes.uint2), to=TP.INT2)
    same(i2.astype(np.int64), [0, 1, -2, -1], np.int64)
    same(run1("BitCast", np.array([True, False]), to=TP.UINT8), [1, 0], np.uint8)
    with pytest.raises(ValueError):
        run1("BitCast", np.zeros(2, np.float32), to=TP.DOUBLE)


# ---------------------------------------------------------------- string ops

def S(*v):
    a = np.empty(len(v), dtype=object)
    a[:] = v
    return a


def test_string_concat():
    x = S("a", "bc", "").reshape(3, 1)
    y = S("1", "2")
    got = run1("StringConcat", x, y)
    assert got.dtype == object and got.shape == (3, 2)
    assert got.tolist() == [["a1", "a2"], ["bc1", "bc2"], ["1", "2"]]
    assert run1("StringConcat", S("x"), np.array("!", dtype=object)).tolist() == ["x!"]


@pytest.mark.parametrize("attrs", [
    {}, {"case_change_action": "UPPER"}, {"case_change_action": "LOWER", "stopwords": ["the"]},
    {"stopwords": ["The", "a"], "is_case_sensitive": 1},
    {"stopwords": ["the", "cat", "SAT", "A", "on", "MAT"], "case_change_action": "LOWER"},
])
@pytest.mark.parametrize("shape", [(6,), (1, 6)])
def test_string_normalizer_vs_onnxruntime(attrs, shape):
    x = S("The", "cat", "sat", "on", "a", "Mat").reshape(shape)
    # this machine has no en_US locale, onnxruntime's default; ASCII case mapping is the same
    node = helper.make_node("StringNormalizer", ["x"], ["y"], locale="C", **attrs)
    expected = ort_run([node], {"x": x}, {"x": TP.STRING}, TP.STRING, opset=20)
    got = run1("StringNormalizer", x, **attrs)
    assert got.dtype == object and got.shape == expected.shape
    assert got.tolist() == expected.tolist()


def test_string_split():
    x = S("a,b,,c", "", "x", "1,2").reshape(2, 2)
    y, z = call(lookup("StringSplit", "", 20), [x], {"delimiter": ","})
    expected = [[s.split(",") for s in row] for row in x.tolist()]
    assert y.shape == (2, 2, 4) and z.dtype == np.int64
    assert z.tolist() == [[len(p) for p in row] for row in expected]
    for i in range(2):
        for j in range(2):
            p = expected[i][j]
            assert y[i, j].tolist() == p + [""] * (4 - len(p))
    y, z = call(lookup("StringSplit", "", 20), [S("  a  b c ", "", "d")], {})
    assert y.tolist() == [["a", "b", "c"], ["", "", ""], ["d", "", ""]] and z.tolist() == [3, 0, 1]
    y, z = call(lookup("StringSplit", "", 20), [S("a-b-c-d")], {"delimiter": "-", "maxsplit": 2})
    assert y.tolist() == [["a", "b", "c-d"]] and z.tolist() == [3]
    y, z = call(lookup("StringSplit", "", 20), [np.empty((0,), object)], {})
    assert y.shape == (0, 0) and z.shape == (0,)


def test_regex_full_match():
    x = S("www.google.com", "www.facebook.com", "google.com", "", "WWW.A.COM").reshape(5, 1)
    for pat in [r"www\.[\w.-]+\.\bcom\b", r"(?i)www\..*", r".*", r"g\w+\.com\z"]:
        got = run1("RegexFullMatch", x, pattern=pat)
        py = re.compile(pat.replace(r"\z", r"\Z"))
        assert got.dtype == np.bool_ and got.shape == x.shape
        assert got.ravel().tolist() == [py.fullmatch(s) is not None for s in x.ravel()]
