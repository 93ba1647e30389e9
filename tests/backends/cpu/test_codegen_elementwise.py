"""Elementwise-region codegen: regions made by the real optimizer pass on hand-built graphs, lowered
to Numba, compiled and compared with the reference backend (opt_level 0) on random shapes with
broadcasting, 0 and 1 sized dims, each dtype; the rendered source parses; model text never
reaches it; float16 bit conversions are exact."""

from __future__ import annotations

import ast

import numpy as np
import onnx
import pytest
from onnx import helper

import jitort
from jitort.backends.cpu import codegen_elementwise as CG
from jitort.ir.types import TensorType
from tests.helpers import model

N = helper.make_node
#: (rtol, atol) per output dtype; ints and bools are exact.
TOL = {np.float64: (1e-10, 1e-12), np.float32: (3e-5, 3e-6), np.float16: (1e-2, 1e-2)}


def _tt(dt) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dt))


def _regions(nodes, feeds, outs, inits=None, opset=20):
    """(region nodes, optimized graph values, expected outputs by name) for one Signature."""
    m = model(nodes, [(k, _tt(v.dtype), list(v.shape)) for k, v in feeds.items()],
              [(name, _tt(dt), None) for name, dt in outs], inits=inits or {}, opset=opset)
    data = m.SerializeToString()
    expected = jitort.load(data, opt_level=0)(**feeds)
    s = jitort.load(data, opt_level=2)
    s(**feeds)
    res = s.optimization(s.signatures()[0])
    regs = [n for n in res.graph.nodes if n.op_type == "ElementwiseRegion"]
    vals = {**res.graph.initializers, **res.bound.consts, **feeds}
    return regs, vals, dict(zip([o for o, _ in outs], expected))


def _close(got, want, tol_dtype=None):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    if want.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want)
    else:
        rtol, atol = TOL[np.dtype(tol_dtype or want.dtype).type]
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)


def _check(nodes, feeds, outs, inits=None, opset=20, regions=1, tol=None):
    """Each region lowered, parsed, compiled and run; outputs compared (tolerance of ``tol[name]``'s
    dtype where given: a value computed in float32 and cast to float64 is float32-accurate)."""
    regs, vals, expected = _regions(nodes, feeds, outs, inits, opset)
    assert len(regs) == regions
    checked = 0
    for reg in regs:
        ins = [vals[i] for i in reg.inputs]
        src = CG.lower_region(reg, ins)
        ast.parse(src)
        fn = CG.compile_region(reg, ins)
        got = CG.call_region(fn, *ins)
        for name, g in zip(reg.outputs, got):
            if name in expected:
                _close(g, expected[name], (tol or {}).get(name))
                checked += 1
    assert checked == len(outs)
    return regs


def _rand(rng, shape, dt):
    dt = np.dtype(dt)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        return rng.integers(-20 if dt.kind == "i" else 0, 20, size=shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


# -- broadcasting, shapes, reductions ----------------------------------------------------------------
SHAPES = [(3, 7), (1, 5), (0, 4), (4, 0), (2, 1, 3), (5,), (2, 3, 5, 1), (1, 1), (3, 4, 9)]


REDUCES = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"]


@pytest.mark.parametrize("shape,reduce", [(s, REDUCES[k % 4]) for k, s in enumerate(SHAPES)]
                         + [((3, 7), "ReduceMax"), ((0, 4), "ReduceMean"), ((4, 0), "ReduceMean")], ids=str)
def test_broadcast_chain_with_trailing_reduction(shape, reduce):
    """(x + b[last]) * s[1] -> Tanh -> Relu -> y, and a reduction of the Tanh over the last axis
    (keepdims) or over every axis."""
    rng = np.random.default_rng(sum(shape) + len(reduce))
    x = rng.standard_normal(shape).astype(np.float32)
    feeds = {"x": x, "b": rng.standard_normal(shape[-1:]).astype(np.float32),
             "s": rng.standard_normal((1,)).astype(np.float32)}
    axes = [-1] if len(shape) % 2 == 0 else []  # odd ranks reduce everything
    nodes = [N("Add", ["x", "b"], ["a"]), N("Mul", ["a", "s"], ["m"]), N("Tanh", ["m"], ["t"]),
             N("Relu", ["t"], ["y"]), N(reduce, ["t", "ax"], ["r"], keepdims=1)]
    _check(nodes, feeds, [("y", np.float32), ("r", np.float32)], inits={"ax": np.array(axes, np.int64)})


@pytest.mark.parametrize("shape,axes,keepdims", [
    ((5, 3), [0], 1), ((4, 6, 3), [0, 2], 0), ((3, 4, 5), [1], 1), ((2, 0, 3), [0], 0), ((2, 3), [-2, -1], 1),
], ids=str)
def test_reduction_not_innermost_uses_an_accumulator_array(shape, axes, keepdims):
    rng = np.random.default_rng(len(shape))
    feeds = {"x": rng.standard_normal(shape).astype(np.float64),
             "c": rng.standard_normal(shape[-1:]).astype(np.float64)}
    nodes = [N("Sub", ["x", "c"], ["d"]), N("Mul", ["d", "d"], ["q"]),
             N("ReduceMean", ["q"], ["v"], axes=axes, keepdims=keepdims)]
    _check(nodes, feeds, [("v", np.float64)], opset=13)


def test_collapse_keeps_broadcast_dims_apart():
    """x[2,3,4,5] * g[3,1,1] + h[1,4,5] -> Exp: no pair of dims can merge for every operand."""
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
             "g": rng.standard_normal((3, 1, 1)).astype(np.float32),
             "h": rng.standard_normal((1, 4, 5)).astype(np.float32)}
    nodes = [N("Mul", ["x", "g"], ["m"]), N("Add", ["m", "h"], ["a"]), N("Exp", ["a"], ["y"])]
    [reg] = _check(nodes, feeds, [("y", np.float32)])
    src = CG.lower_region(reg, [feeds[i] for i in reg.inputs])
    assert "range(2)" in src and "range(20)" in src  # h's (4, 5) dims collapse, g's do not


# -- dtypes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(3, 5), (1, 7), (0, 3)], ids=str)
def test_float_math(dt, shape):
    rng = np.random.default_rng(shape[-1])
    feeds = {"x": _rand(rng, shape, dt), "z": _rand(rng, shape[-1:], dt), "w": _rand(rng, (1,) + shape[1:], dt)}
    nodes = [N("Div", ["x", "z"], ["d"]), N("Erf", ["d"], ["e"]), N("Sigmoid", ["w"], ["sg"]),
             N("Mul", ["e", "sg"], ["p"]), N("Greater", ["p", "x"], ["gt"]),
             N("Where", ["gt", "p", "x"], ["wh"]), N("Max", ["wh", "z", "w"], ["mx"]),
             N("Min", ["mx", "x"], ["mn"]), N("Sum", ["mn", "d", "z"], ["su"]), N("Mean", ["su", "x"], ["me"]),
             N("Abs", ["me"], ["ab"]), N("Log", ["ab"], ["lg"]), N("Exp", ["lg"], ["ex"]), N("Sqrt", ["ex"], ["sq"]),
             N("Neg", ["sq"], ["ng"]), N("Sign", ["ng"], ["sgn"]), N("Floor", ["me"], ["fl"]),
             N("Ceil", ["me"], ["ce"]), N("Reciprocal", ["ce"], ["rc"]), N("Pow", ["ab", "z"], ["pw"]),
             N("Sub", ["pw", "rc"], ["sb"]), N("Tanh", ["sb"], ["th"]), N("Add", ["th", "sgn"], ["y"]),
             N("Cast", ["y"], ["y64"], to=onnx.TensorProto.DOUBLE)]
    _check(nodes, feeds, [("gt", np.bool_), ("fl", dt), ("y", dt), ("y64", np.float64)], tol={"y64": dt})


@pytest.mark.parametrize("dt", [np.float32, np.float16])
def test_activations(dt):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 9)) * 3).astype(dt)
    feeds = {"x": x, "slope": rng.standard_normal((9,)).astype(dt),
             "lo": np.array(-0.5, dt), "hi": np.array(1.5, dt)}
    acts = [("Elu", {"alpha": 0.7}), ("Selu", {}), ("ThresholdedRelu", {"alpha": 0.4}),
            ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}), ("Softplus", {}),
            ("Softsign", {}), ("Mish", {}), ("LeakyRelu", {"alpha": 0.2}), ("Shrink", {"lambd": 0.6, "bias": 0.3}),
            ("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("Relu", {})]
    if dt == np.float32:  # Celu is float32-only in ONNX (no type inference for float16)
        acts.append(("Celu", {"alpha": 1.3}))
    nodes, prev = [], "x"
    for k, (op, attrs) in enumerate(acts):
        nodes.append(N(op, [prev], [f"a{k}"], **attrs))
        nodes.append(N("Add", [f"a{k}", "x"], [f"s{k}"]))
        prev = f"s{k}"
    nodes += [N("PRelu", [prev, "slope"], ["pr"]), N("Clip", ["pr", "lo", "hi"], ["y"])]
    _check(nodes, feeds, [("y", dt)])


@pytest.mark.parametrize("dt", [np.int32, np.int64])
@pytest.mark.parametrize("reduce", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"])
def test_integer_semantics(dt, reduce):
    """Div truncates toward zero, Mod by sign rules (fmod 0 and 1), x/0 = 0, wrapping ints."""
    rng = np.random.default_rng(2)
    a = rng.integers(-50, 50, size=(3, 11)).astype(dt)
    b = rng.integers(-7, 8, size=(11,)).astype(dt)  # includes 0
    feeds = {"a": a, "b": b}
    nodes = [N("Div", ["a", "b"], ["q"]), N("Mod", ["a", "b"], ["m0"]), N("Mod", ["a", "b"], ["m1"], fmod=1),
             N("Mul", ["q", "b"], ["qb"]), N("Add", ["qb", "m1"], ["back"]), N("Sub", ["back", "m0"], ["d"]),
             N("Abs", ["d"], ["ad"]), N("Neg", ["ad"], ["nd"]), N("Max", ["nd", "m0"], ["mx"]),
             N("Less", ["mx", "q"], ["lt"]), N("Where", ["lt", "q", "mx"], ["y"]), N(reduce, ["y", "ax"], ["r"], keepdims=0)]
    _check(nodes, feeds, [("q", dt), ("m0", dt), ("m1", dt), ("back", dt), ("y", dt), ("r", dt)],
           inits={"ax": np.array([1], np.int64)}, opset=18)


def test_int_cast_round_trip_and_pow():
    rng = np.random.default_rng(3)
    feeds = {"x": (rng.standard_normal((2, 3, 5)) * 10).astype(np.float32),
             "e": rng.integers(0, 4, size=(5,)).astype(np.int32)}
    nodes = [N("Cast", ["x"], ["i"], to=onnx.TensorProto.INT32), N("Pow", ["i", "e"], ["p"]),
             N("Cast", ["p"], ["h"], to=onnx.TensorProto.FLOAT16), N("Cast", ["h"], ["f"], to=onnx.TensorProto.FLOAT),
             N("Cast", ["x"], ["u8"], to=onnx.TensorProto.BOOL), N("Cast", ["u8"], ["i64"], to=onnx.TensorProto.INT64),
             N("Mul", ["f", "x"], ["y"])]
    _check(nodes, feeds, [("p", np.int32), ("y", np.float32), ("i64", np.int64)], regions=2)


def test_bool_logic():
    rng = np.random.default_rng(4)
    feeds = {"p": rng.random((3, 1, 4)) < 0.5, "q": rng.random((5, 4)) < 0.5, "x": rng.standard_normal((4,)).astype(np.float32)}
    nodes = [N("And", ["p", "q"], ["a"]), N("Or", ["a", "p"], ["o"]), N("Xor", ["o", "q"], ["x1"]),
             N("Not", ["x1"], ["n"]), N("Equal", ["n", "p"], ["eq"]), N("Where", ["eq", "x", "x"], ["w"]),
             N("IsNaN", ["w"], ["nan"]), N("Or", ["nan", "eq"], ["y"])]
    _check(nodes, feeds, [("y", np.bool_), ("w", np.float32)])


def test_nan_and_inf_propagate():
    x = np.array([[np.nan, 1.0, -np.inf, np.inf, -2.0, 0.0]], np.float32)
    feeds = {"x": x, "z": np.array([0.5, np.nan, 1.0, -1.0, np.nan, 0.0], np.float32)}
    nodes = [N("Max", ["x", "z"], ["mx"]), N("Relu", ["mx"], ["r"]), N("IsInf", ["x"], ["inf"]),
             N("IsNaN", ["r"], ["nan"]), N("Or", ["inf", "nan"], ["y"]),
             N("ReduceMax", ["r"], ["rm"], axes=[1], keepdims=1)]
    _check(nodes, feeds, [("y", np.bool_), ("r", np.float32), ("rm", np.float32)], opset=17)


def test_float16_reduction_and_region_output_kept_in_domain():
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((6, 13)).astype(np.float16), "b": rng.standard_normal((13,)).astype(np.float16)}
    nodes = [N("Add", ["x", "b"], ["a"]), N("Exp", ["a"], ["e"]), N("ReduceSum", ["e", "ax"], ["s"], keepdims=1)]
    _check(nodes, feeds, [("e", np.float16), ("s", np.float16)], inits={"ax": np.array([1], np.int64)})


def test_jitort_gelu_member():
    """The erf-GELU subgraph becomes jitort::Gelu (fuse_gelu), then a member of the region."""
    rng = np.random.default_rng(6)
    feeds = {"x": rng.standard_normal((3, 11)).astype(np.float32), "s": np.float32([1.5])}
    nodes = [N("Div", ["x", "sq2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["p"]),
             N("Mul", ["x", "p"], ["xp"]), N("Mul", ["xp", "half"], ["g"]),
             N("Mul", ["g", "s"], ["gs"]), N("Add", ["gs", "x"], ["y"])]
    regs = _check(nodes, feeds, [("y", np.float32)],
                  inits={"sq2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)})
    assert ("jitort", "Gelu") in {(n.domain, n.op_type) for n in regs[0].attrs["body"].nodes}


# -- safety, template, API ---------------------------------------------------------------------------
def test_model_text_never_reaches_the_source():
    evil = ["x'\"\n__import__('os').system('echo pwned')", "b\\n#{{ loops }}", "__import__('os')", "t\n\tq'\"\"\""]
    rng = np.random.default_rng(7)
    feeds = {evil[0]: rng.standard_normal((2, 5)).astype(np.float32), evil[1]: rng.standard_normal((5,)).astype(np.float32)}
    nodes = [N("Add", [evil[0], evil[1]], [evil[2]], name="n'\n__import__('sys')"),
             N("Tanh", [evil[2]], [evil[3]], name="{{ args }}")]
    regs, vals, expected = _regions(nodes, feeds, [(evil[3], np.float32)])
    [reg] = regs
    ins = [vals[i] for i in reg.inputs]
    src = CG.lower_region(reg, ins)
    ast.parse(src)
    for text in evil + ["__import__", "pwned", "sys", "{{"]:
        assert text not in src
    got = CG.call_region(CG.compile_region(reg, ins), *ins)
    _close(got[0], expected[evil[3]])


def test_template_renders_and_parses_on_its_own():
    text = CG.TEMPLATE.read_text()
    slots = {"params": "# P", "imports": "pass", "args": "in0, out0", "views": "pass",
             "prologue": "pass", "loops": "for i0 in range(3):\n    out0[i0] = in0[i0]", "epilogue": "pass"}
    ast.parse(CG.render(text, **slots))
    with pytest.raises(KeyError):
        CG.render(text, **{k: v for k, v in slots.items() if k != "loops"})
    with pytest.raises(KeyError):
        CG.render(text, extra="x", **slots)


def test_refusals_raise_lowering_error():
    rng = np.random.default_rng(8)
    feeds = {"x": rng.standard_normal((2, 3)).astype(np.float32)}
    regs, _, _ = _regions([N("Exp", ["x"], ["e"]), N("Neg", ["e"], ["y"])], feeds, [("y", np.float32)])
    [reg] = regs
    with pytest.raises(CG.LoweringError):  # a symbolic dim
        CG.lower_region(reg, [TensorType(np.dtype(np.float32), ("N", 3))])
    with pytest.raises(CG.LoweringError):  # Exp on ints
        CG.lower_region(reg, [TensorType(np.dtype(np.int32), (2, 3))])
    assert CG.region_output_types(reg, [TensorType(np.dtype(np.float32), (4, 3))])[0].shape == (4, 3)


def test_funcs_mapping_is_the_one_switch(monkeypatch):
    """Pointing FUNCS['tanh'] elsewhere changes the generated import, nothing else."""
    rng = np.random.default_rng(9)
    feeds = {"x": rng.standard_normal((2, 3)).astype(np.float64)}
    regs, vals, expected = _regions([N("Tanh", ["x"], ["t"]), N("Neg", ["t"], ["y"])], feeds, [("y", np.float64)])
    ins = [vals[i] for i in regs[0].inputs]
    monkeypatch.setitem(CG.FUNCS, "tanh", "numpy:tanh")
    monkeypatch.setitem(CG.FUNCS, "tanh_f32", "no_such_module:tanh")  # float32 only: unused here
    src = CG.lower_region(regs[0], ins)
    assert "from numpy import tanh as f_tanh" in src and "no_such_module" not in src
    _close(CG.call_region(CG.compile_region(regs[0], ins), *ins)[0], expected["y"])


def test_float32_entries_can_point_at_vecmath(monkeypatch):
    vecmath = pytest.importorskip("jitort.backends.cpu.vecmath")
    rng = np.random.default_rng(12)
    feeds = {"x": rng.standard_normal((5, 33)).astype(np.float32), "b": rng.standard_normal((33,)).astype(np.float32)}
    nodes = [N("Add", ["x", "b"], ["a"]), N("Erf", ["a"], ["e"]), N("Tanh", ["e"], ["t"]), N("Sigmoid", ["t"], ["y"])]
    regs, vals, expected = _regions(nodes, feeds, [("y", np.float32)])
    ins = [vals[i] for i in regs[0].inputs]
    for name in ("erf", "tanh", "sigmoid"):
        assert hasattr(vecmath, name)
        monkeypatch.setitem(CG.FUNCS, f"{name}_f32", f"jitort.backends.cpu.vecmath:{name}")
    src = CG.lower_region(regs[0], ins)
    assert "from jitort.backends.cpu.vecmath import erf as f_erf_f32" in src
    _close(CG.call_region(CG.compile_region(regs[0], ins), *ins)[0], expected["y"])


def test_cache_dir_module_is_imported_by_name(tmp_path):
    rng = np.random.default_rng(10)
    feeds = {"x": rng.standard_normal((3, 4)).astype(np.float32)}
    regs, vals, expected = _regions([N("Sigmoid", ["x"], ["s"]), N("Mul", ["s", "x"], ["y"])], feeds, [("y", np.float32)])
    ins = [vals[i] for i in regs[0].inputs]
    fn = CG.compile_region(regs[0], ins, cache_dir=tmp_path)
    assert list(tmp_path.glob("jitort_ew_*.py"))
    _close(CG.call_region(fn, *ins)[0], expected["y"])


# -- float16 bits ------------------------------------------------------------------------------------
def test_float16_conversions_are_exact():
    from numba import njit

    @njit
    def both(h, f, back, out):
        for i in range(h.size):
            back[i] = CG.h2f(h[i])
        for i in range(f.size):
            out[i] = CG.f2h(f[i])

    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    want = bits.view(np.float16).astype(np.float32)
    rng = np.random.default_rng(11)
    f = np.concatenate([want, rng.standard_normal(20000).astype(np.float32) * np.float32(10) ** rng.integers(-9, 6, 20000),
                        np.array([65519.99, 65520.0, 1e-8, 2.9802322e-08, 2.9802326e-08, -0.0, 1e30], np.float32),
                        (want[np.isfinite(want)] + np.float32(0)).view(np.uint32).__add__(np.uint32(4096)).view(np.float32)])
    back, out = np.empty(65536, np.float32), np.empty(f.size, np.uint16)
    both(bits, f, back, out)
    np.testing.assert_array_equal(back.view(np.uint32)[~np.isnan(want)], want.view(np.uint32)[~np.isnan(want)])
    assert np.isnan(back[np.isnan(want)]).all()
    ref = f.astype(np.float16)
    ok = ~np.isnan(f)
    np.testing.assert_array_equal(out[ok], ref.view(np.uint16)[ok])
    assert np.isnan(out[~ok].view(np.float16)).all()
