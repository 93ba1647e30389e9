"""Extended-level fusions: decomposed Softmax/LogSoftmax, LayerNorm/SkipLayerNorm/RMSNorm, GELU,
MatMul/Gemm epilogues. Each form on a hand-built graph and on real exports: opt_level 0 vs 2
outputs, hit counters, near misses, idempotence, and the exported ONNX in onnxruntime."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import jitort
from jitort.ir.fused_export import export_optimized
from jitort.ops import registry
from jitort.passes.pipeline import optimize
from tests import exported
from tests.helpers import F, model as _model

MINE = ("fuse_softmax", "fuse_softmax_log", "fuse_layernorm", "fuse_rmsnorm", "fuse_skip_layernorm",
        "fuse_gelu", "fuse_matmul")
N = helper.make_node


def model(nodes, inputs, outputs, inits=(), opset=18):
    """tests.helpers.model; an output without a shape gets the first input's rank, symbolic dims."""
    rank = len(inputs[0][2])
    outputs = [(n, t, [f"o{i}" for i in range(rank)] if s is None else s) for n, t, s in outputs]
    return _model(nodes, inputs, outputs, inits, opset=opset)


def c(name, value):
    """A Constant node holding ``value`` as float32."""
    return N("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(value, np.float32), name))


def i64(name, value):
    return N("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(value, np.int64), name))


def run_both(m, feeds, level=2, rtol=1e-5, atol=1e-5):
    """Outputs at opt_level 0 and ``level`` agree; returns the OptimizeResult."""
    m0, m2 = jitort.load(m, opt_level=0), jitort.load(m, opt_level=level)
    o0, o2 = m0.run_feeds(feeds), m2.run_feeds(feeds)
    for a, b in zip(o0, o2):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)
    return m2.optimization(m2.signatures()[0])


def assert_idempotent(res, level=2):
    again = optimize(res.bound, level)
    assert {k: v for k, v in again.hits.items() if k in MINE and v} == {}


def assert_ort(res, feeds, rtol=1e-4, atol=1e-5):
    proto = export_optimized(res.graph)
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    got = sess.run(None, {k: v for k, v in feeds.items() if k in names})
    ref = jitort.load(export_optimized(res.graph), opt_level=0).run_feeds(feeds)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def misses(res, pattern=None):
    return [m for m in res.near_misses if pattern is None or m.pattern == pattern]


# ---------------------------------------------------------------------------------- softmax

def _softmax_nodes(form, axis):
    ax = [axis]
    if form == "max":
        return [i64("ax", ax), N("ReduceMax", ["x", "ax"], ["m"]), N("Sub", ["x", "m"], ["d"]), N("Exp", ["d"], ["e"]),
                N("ReduceSum", ["e", "ax"], ["s"]), N("Div", ["e", "s"], ["y"])]
    if form == "nomax":
        return [i64("ax", ax), N("Exp", ["x"], ["e"]), N("ReduceSum", ["e", "ax"], ["s"]), N("Div", ["e", "s"], ["y"])]
    return [i64("ax", ax), N("Exp", ["x"], ["e"]), N("ReduceSum", ["e", "ax"], ["s"]),  # reciprocal
            N("Reciprocal", ["s"], ["r"]), N("Mul", ["r", "e"], ["y"])]


@pytest.mark.parametrize("form", ["max", "nomax", "recip"])
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("batch", [1, 3])
def test_softmax_forms(form, axis, batch):
    m = model(_softmax_nodes(form, axis), [("x", F, ["B", 5, 7])], [("y", F, None)], opset=18)
    feeds = {"x": rand(np.random.default_rng(0), batch, 5, 7) * 4}
    res = run_both(m, feeds, rtol=1e-6, atol=1e-6)
    assert res.hits["fuse_softmax"] == 1
    assert res.op_counts().get("Softmax") == 1 and "Exp" not in res.op_counts()
    assert_idempotent(res)
    assert_ort(res, feeds)


def test_softmax_old_opset_non_last_axis_is_a_near_miss():
    nodes = [N("ReduceMax", ["x"], ["m"], axes=[1]), N("Sub", ["x", "m"], ["d"]), N("Exp", ["d"], ["e"]),
             N("ReduceSum", ["e"], ["s"], axes=[1]), N("Div", ["e", "s"], ["y"])]
    m = model(nodes, [("x", F, [2, 5, 7])], [("y", F, None)], opset=11)
    res = run_both(m, {"x": rand(np.random.default_rng(1), 2, 5, 7)})
    assert res.hits["fuse_softmax"] == 0 and misses(res, "softmax")
    nodes[0].attribute[0].ints[:] = [2]
    nodes[3].attribute[0].ints[:] = [2]
    res = run_both(model(nodes, [("x", F, [2, 5, 7])], [("y", F, None)], opset=11),
                   {"x": rand(np.random.default_rng(1), 2, 5, 7)})
    assert res.hits["fuse_softmax"] == 1


def test_softmax_exp_read_elsewhere_is_a_near_miss():
    nodes = _softmax_nodes("max", -1) + [N("Neg", ["e"], ["z"])]
    m = model(nodes, [("x", F, [2, 9])], [("y", F, None), ("z", F, None)], opset=18)
    res = run_both(m, {"x": rand(np.random.default_rng(2), 2, 9)})
    assert res.hits["fuse_softmax"] == 0
    assert any("'e'" in mm.reason for mm in misses(res, "softmax"))


@pytest.mark.parametrize("form", ["log_div", "sub_log"])
def test_log_softmax(form):
    if form == "log_div":
        nodes = _softmax_nodes("max", -1)[:-1] + [N("Div", ["e", "s"], ["p"]), N("Log", ["p"], ["y"])]
    else:
        nodes = [i64("ax", [-1]), N("ReduceMax", ["x", "ax"], ["m"]), N("Sub", ["x", "m"], ["d"]), N("Exp", ["d"], ["e"]),
                 N("ReduceSum", ["e", "ax"], ["s"]), N("Log", ["s"], ["l"]), N("Sub", ["d", "l"], ["y"])]
    m = model(nodes, [("x", F, ["B", 11])], [("y", F, None)], opset=18)
    feeds = {"x": rand(np.random.default_rng(3), 4, 11) * 3}
    res = run_both(m, feeds)
    assert res.op_counts().get("LogSoftmax") == 1 and res.hits["fuse_softmax_log"] == 1
    assert "Log" not in res.op_counts()
    assert_idempotent(res)
    assert_ort(res, feeds)


# ---------------------------------------------------------------------------------- LayerNorm

def _ln_nodes(square="pow", div="div", axes=(-1,), eps_input=False, affine=True, axes_attr=False):
    if axes_attr:  # ReduceMean < 18
        nodes = [N("ReduceMean", ["x"], ["mu"], axes=list(axes)), N("Sub", ["x", "mu"], ["d"])]
    else:
        nodes = [i64("ax", list(axes)), N("ReduceMean", ["x", "ax"], ["mu"]), N("Sub", ["x", "mu"], ["d"])]
    nodes += [c("two", 2.0), N("Pow", ["d", "two"], ["sq"])] if square == "pow" else [N("Mul", ["d", "d"], ["sq"])]
    nodes += [N("ReduceMean", ["sq"], ["var"], axes=list(axes)) if axes_attr else N("ReduceMean", ["sq", "ax"], ["var"])]
    nodes += [N("Add", ["var", "eps"], ["ve"])] if eps_input else [c("epsc", 1e-5), N("Add", ["var", "epsc"], ["ve"])]
    nodes += [N("Sqrt", ["ve"], ["sd"])]
    nodes += [N("Div", ["d", "sd"], ["n"])] if div == "div" else [N("Reciprocal", ["sd"], ["r"]), N("Mul", ["d", "r"], ["n"])]
    if affine:
        nodes += [N("Mul", ["n", "gamma"], ["g"]), N("Add", ["beta", "g"], ["y"])]
    else:
        nodes += [N("Identity", ["n"], ["y"])]
    return nodes


def _ln_model(opset=18, axes=(-1,), **kw):
    shape = [3, 6] if len(axes) == 2 else [6]
    rng = np.random.default_rng(4)
    inits = {"gamma": rng.uniform(0.5, 1.5, shape).astype(np.float32), "beta": rng.uniform(-1, 1, shape).astype(np.float32)}
    inputs = [("x", F, ["B", 3, 6])] + ([("eps", F, [])] if kw.get("eps_input") else [])
    return model(_ln_nodes(axes=axes, **kw), inputs, [("y", F, None)], inits, opset=opset)


@pytest.mark.parametrize("square,div", [("pow", "div"), ("mul", "recip")])
@pytest.mark.parametrize("axes", [(-1,), (1, 2)])
@pytest.mark.parametrize("batch", [1, 2])
def test_layernorm_forms(square, div, axes, batch):
    m = _ln_model(axes=axes, square=square, div=div)
    feeds = {"x": rand(np.random.default_rng(5), batch, 3, 6) * 2 + 1}
    res = run_both(m, feeds)
    assert res.hits["fuse_layernorm"] == 1
    counts = res.op_counts()
    assert counts.get("LayerNormalization") == 1 and "ReduceMean" not in counts and "Sqrt" not in counts
    assert_idempotent(res)
    assert_ort(res, feeds)


def test_layernorm_old_opset_uses_jitort_layernorm():
    m = _ln_model(opset=13, affine=False, axes_attr=True)
    feeds = {"x": rand(np.random.default_rng(6), 2, 3, 6)}
    res = run_both(m, feeds)
    assert res.hits["fuse_layernorm"] == 1 and res.op_counts().get("jitort::LayerNorm") == 1
    assert_ort(res, feeds)


def test_layernorm_non_constant_epsilon_is_a_near_miss():
    m = _ln_model(eps_input=True)
    res = run_both(m, {"x": rand(np.random.default_rng(7), 2, 3, 6), "eps": np.float32(1e-5)})
    assert res.hits["fuse_layernorm"] == 0
    assert any("epsilon" in mm.reason for mm in misses(res, "fuse_layernorm"))


def test_layernorm_intermediate_read_elsewhere_is_a_near_miss():
    nodes = _ln_nodes() + [N("Abs", ["d"], ["z"])]
    rng = np.random.default_rng(8)
    inits = {"gamma": rng.uniform(0.5, 1.5, [6]).astype(np.float32), "beta": np.zeros(6, np.float32)}
    m = model(nodes, [("x", F, [2, 3, 6])], [("y", F, None), ("z", F, None)], inits, opset=18)
    res = run_both(m, {"x": rand(rng, 2, 3, 6)})
    assert res.hits["fuse_layernorm"] == 0
    assert any("'d'" in mm.reason for mm in misses(res, "fuse_layernorm"))


# ---------------------------------------------------------------------------------- RMSNorm

@pytest.mark.parametrize("form", ["recip", "div", "one_over"])
@pytest.mark.parametrize("square", ["pow", "mul"])
def test_rmsnorm_forms(form, square):
    nodes = [i64("ax", [-1])]
    nodes += [c("two", 2.0), N("Pow", ["x", "two"], ["sq"])] if square == "pow" else [N("Mul", ["x", "x"], ["sq"])]
    nodes += [N("ReduceMean", ["sq", "ax"], ["ms"]), c("eps", 1e-6), N("Add", ["ms", "eps"], ["mse"]), N("Sqrt", ["mse"], ["rms"])]
    if form == "recip":
        nodes += [N("Reciprocal", ["rms"], ["r"]), N("Mul", ["x", "r"], ["n"])]
    elif form == "one_over":
        nodes += [c("one", 1.0), N("Div", ["one", "rms"], ["r"]), N("Mul", ["r", "x"], ["n"])]
    else:
        nodes += [N("Div", ["x", "rms"], ["n"])]
    nodes += [N("Mul", ["w", "n"], ["y"])]
    rng = np.random.default_rng(9)
    m = model(nodes, [("x", F, ["B", 5, 13])], [("y", F, None)], {"w": rng.uniform(0.5, 2, [13]).astype(np.float32)}, opset=18)
    feeds = {"x": rand(rng, 3, 5, 13)}
    res = run_both(m, feeds)
    assert res.hits["fuse_rmsnorm"] == 1 and res.op_counts().get("jitort::RMSNorm") == 1
    assert "ReduceMean" not in res.op_counts() and "Mul" not in res.op_counts()
    assert_idempotent(res)
    assert_ort(res, feeds)


def test_rmsnorm_non_constant_epsilon_is_a_near_miss():
    nodes = [i64("ax", [-1]), N("Mul", ["x", "x"], ["sq"]), N("ReduceMean", ["sq", "ax"], ["ms"]),
             N("Add", ["ms", "eps"], ["mse"]), N("Sqrt", ["mse"], ["rms"]), N("Div", ["x", "rms"], ["y"])]
    m = model(nodes, [("x", F, [2, 8]), ("eps", F, [])], [("y", F, None)], opset=18)
    res = run_both(m, {"x": rand(np.random.default_rng(10), 2, 8), "eps": np.float32(1e-6)})
    assert res.hits["fuse_rmsnorm"] == 0 and misses(res, "fuse_rmsnorm")


# ---------------------------------------------------------------------------------- SkipLayerNorm

def _skip_model(bias=False, sum_used=False, stats_used=False, skip_shape=("B", 7, 16)):
    rng = np.random.default_rng(11)
    nodes = [N("MatMul", ["h", "w"], ["mm"])]
    nodes += [N("Add", ["bias", "mm"], ["mmb"]), N("Add", ["mmb", "skip"], ["s"])] if bias else [N("Add", ["skip", "mm"], ["s"])]
    outs = ["y", "mean", "istd"] if stats_used else ["y"]
    nodes += [N("LayerNormalization", ["s", "g", "b"], outs, epsilon=1e-6)]
    outputs = [("y", F, None)] + ([("s", F, None)] if sum_used else []) + ([("mean", F, None)] if stats_used else [])
    inits = {"w": rand(rng, 16, 16) * 0.3, "g": rng.uniform(0.5, 1.5, 16).astype(np.float32),
             "b": rand(rng, 16), "bias": rand(rng, 16)}
    return model(nodes, [("h", F, ["B", 7, 16]), ("skip", F, list(skip_shape))], outputs, inits, opset=17)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("sum_used", [False, True])
def test_skip_layernorm(bias, sum_used):
    m = _skip_model(bias=bias, sum_used=sum_used)
    rng = np.random.default_rng(12)
    feeds = {"h": rand(rng, 2, 7, 16), "skip": rand(rng, 2, 7, 16)}
    res = run_both(m, feeds)
    assert res.hits["fuse_skip_layernorm"] == 1
    counts = res.op_counts()
    assert counts.get("jitort::SkipLayerNorm") == 1 and "LayerNormalization" not in counts
    skip_node = next(n for n in res.graph.nodes if n.op_type == "SkipLayerNorm")
    assert len(skip_node.outputs) == (2 if sum_used else 1)
    assert (len(skip_node.inputs) == 5) == bias
    assert_idempotent(res)
    assert_ort(res, feeds)


def test_skip_layernorm_broadcast_skip():
    m = _skip_model(skip_shape=(1, 7, 16))
    rng = np.random.default_rng(13)
    feeds = {"h": rand(rng, 3, 7, 16), "skip": rand(rng, 1, 7, 16)}
    res = run_both(m, feeds)
    assert res.hits["fuse_skip_layernorm"] == 1
    assert_ort(res, feeds)


def test_skip_layernorm_stats_used_is_a_near_miss():
    m = _skip_model(stats_used=True)
    rng = np.random.default_rng(14)
    res = run_both(m, {"h": rand(rng, 2, 7, 16), "skip": rand(rng, 2, 7, 16)})
    assert res.hits["fuse_skip_layernorm"] == 0 and misses(res, "fuse_skip_layernorm")


# ---------------------------------------------------------------------------------- GELU

def _gelu_erf(form):
    if form == "torch":  # (x * (1 + erf(x / sqrt2))) * 0.5
        return [c("s2", math.sqrt(2)), N("Div", ["x", "s2"], ["t"]), N("Erf", ["t"], ["e"]), c("one", 1.0),
                N("Add", ["e", "one"], ["pa"]), N("Mul", ["x", "pa"], ["m"]), c("h", 0.5), N("Mul", ["m", "h"], ["y"])]
    if form == "half_first":  # (x * 0.5) * (1 + erf(x * 1/sqrt2))   (PaddlePaddle / transformers)
        return [c("r2", 1 / math.sqrt(2)), N("Mul", ["r2", "x"], ["t"]), N("Erf", ["t"], ["e"]), c("one", 1.0),
                N("Add", ["one", "e"], ["pa"]), c("h", 0.5), N("Mul", ["x", "h"], ["xh"]), N("Mul", ["xh", "pa"], ["y"])]
    if form == "div2":  # (x * (1 + erf)) / 2
        return [c("s2", 1.41421356), N("Div", ["x", "s2"], ["t"]), N("Erf", ["t"], ["e"]), c("one", 1.0),
                N("Add", ["e", "one"], ["pa"]), N("Mul", ["pa", "x"], ["m"]), c("two", 2.0), N("Div", ["m", "two"], ["y"])]
    # ((1 + erf) * 0.5) * x
    return [c("s2", math.sqrt(2)), N("Div", ["x", "s2"], ["t"]), N("Erf", ["t"], ["e"]), c("one", 1.0),
            N("Add", ["e", "one"], ["pa"]), c("h", 0.5), N("Mul", ["pa", "h"], ["m"]), N("Mul", ["x", "m"], ["y"])]


def _gelu_tanh(form, cubic=0.044715):
    k = math.sqrt(2 / math.pi)
    if form == "fast":  # x * (k + k*0.044715 * x * x)
        head = [N("Mul", ["x", "x"], ["xx"]), c("kc", k * cubic), N("Mul", ["kc", "xx"], ["q"]), c("k", k),
                N("Add", ["q", "k"], ["inner"]), N("Mul", ["x", "inner"], ["t"])]
    else:
        cube = ([c("three", 3.0), N("Pow", ["x", "three"], ["x3"])] if form == "pow" else
                [N("Mul", ["x", "x"], ["xx"]), N("Mul", ["xx", "x"], ["x3"])])
        head = cube + [c("cc", cubic), N("Mul", ["x3", "cc"], ["q"]), N("Add", ["x", "q"], ["inner"]), c("k", k),
                       N("Mul", ["k", "inner"], ["t"])]
    return head + [N("Tanh", ["t"], ["th"]), c("one", 1.0), N("Add", ["th", "one"], ["pa"]), c("h", 0.5),
                   N("Mul", ["h", "x"], ["xh"]), N("Mul", ["xh", "pa"], ["y"])]


@pytest.mark.parametrize("nodes,approx", [(_gelu_erf(f), "none") for f in ("torch", "half_first", "div2", "late_x")]
                         + [(_gelu_tanh(f), "tanh") for f in ("pow", "xxx", "fast")])
@pytest.mark.parametrize("batch", [1, 2])
def test_gelu_forms(nodes, approx, batch):
    m = model(nodes, [("x", F, ["B", 9])], [("y", F, None)], opset=17)
    feeds = {"x": rand(np.random.default_rng(15), batch, 9) * 3}
    res = run_both(m, feeds)
    assert res.hits["fuse_gelu"] == 1
    gelu = [n for n in res.graph.nodes if n.domain == "jitort" and n.op_type == "Gelu"]
    assert len(gelu) == 1 and gelu[0].attrs["approximate"] == approx
    assert not {"Erf", "Tanh", "Pow"} & set(res.op_counts())
    assert_idempotent(res)
    assert_ort(res, feeds)


def test_gelu_wrong_constant_is_not_fused():
    m = model(_gelu_tanh("pow", cubic=0.05), [("x", F, [2, 9])], [("y", F, None)], opset=17)
    res = run_both(m, {"x": rand(np.random.default_rng(16), 2, 9)})
    assert res.hits["fuse_gelu"] == 0 and "jitort::Gelu" not in res.op_counts()
    assert any("0.05" in mm.reason for mm in misses(res, "gelu_tanh"))
    bad = _gelu_erf("torch")
    bad[0] = c("s2", 1.5)
    res = run_both(model(bad, [("x", F, [2, 9])], [("y", F, None)], opset=17), {"x": rand(np.random.default_rng(16), 2, 9)})
    assert res.hits["fuse_gelu"] == 0 and misses(res, "gelu_erf")


def test_gelu_intermediate_read_elsewhere_is_a_near_miss():
    m = model(_gelu_erf("torch") + [N("Neg", ["pa"], ["z"])], [("x", F, [2, 9])], [("y", F, None), ("z", F, None)], opset=17)
    res = run_both(m, {"x": rand(np.random.default_rng(17), 2, 9)})
    assert res.hits["fuse_gelu"] == 0
    assert any("'pa'" in mm.reason for mm in misses(res, "gelu_erf"))


# ---------------------------------------------------------------------------------- MatMul epilogues

ACTS = {
    "Relu": [N("Relu", ["z"], ["act"])],
    "Sigmoid": [N("Sigmoid", ["z"], ["act"])],
    "Tanh": [N("Tanh", ["z"], ["act"])],
    "LeakyRelu": [N("LeakyRelu", ["z"], ["act"], alpha=0.2)],
    "Clip": [c("lo", -0.5), c("hi", 0.7), N("Clip", ["z", "lo", "hi"], ["act"])],
    "Gelu": [N("Gelu", ["z"], ["act"])],
    "GeluTanh": [N("Gelu", ["z"], ["act"], approximate="tanh")],
    "GeluErfDecomposed": [N(n.op_type, [{"x": "z"}.get(i, i) for i in n.input], [{"y": "act"}.get(o, o) for o in n.output])
                          for n in _gelu_erf("torch")[:-1] if n.op_type != "Constant"] + [],
}


def _mm_model(act, bias=True, residual=True, gemm=False):
    rng = np.random.default_rng(18)
    if gemm:
        nodes = [N("Gemm", ["a", "wt", "cb"], ["mm"], transB=1, alpha=0.7, beta=1.5)]
        inits = {"wt": rand(rng, 11, 13) * 0.3, "cb": rand(rng, 11)}
        a_shape = ["B", 13]
    else:
        nodes = [N("MatMul", ["a", "w"], ["mm"])]
        inits = {"w": rand(rng, 13, 11) * 0.3}
        a_shape = ["B", 5, 13]
    cur = "mm"
    if bias and not gemm:
        nodes.append(N("Add", [cur, "bias"], ["z"]))
        inits["bias"] = rand(rng, 11)
        cur = "z"
    elif cur != "z":
        nodes.append(N("Identity", [cur], ["z"]))  # keeps the activations' input name; folded away
    if act == "GeluErfDecomposed":
        nodes += [c("s2", math.sqrt(2)), c("one", 1.0), c("h", 0.5)] + ACTS[act] + [N("Mul", ["m", "h"], ["act"])]
    elif act:
        nodes += ACTS[act]
    else:
        nodes.append(N("Identity", ["z"], ["act"]))
    inputs = [("a", F, a_shape)]
    if residual:
        nodes.append(N("Add", ["r", "act"], ["y"]))
        inputs.append(("r", F, a_shape[:-1] + [11]))
    else:
        nodes.append(N("Identity", ["act"], ["y"]))
    return model(nodes, inputs, [("y", F, None)], inits, opset=20)


@pytest.mark.parametrize("act", list(ACTS) + [""])
def test_matmul_epilogue(act):
    m = _mm_model(act)
    rng = np.random.default_rng(19)
    feeds = {"a": rand(rng, 3, 5, 13), "r": rand(rng, 3, 5, 11)}
    res = run_both(m, feeds)
    assert res.hits["fuse_matmul"] == 1
    counts = res.op_counts()
    assert counts.get("jitort::FusedMatMul") == 1 and "MatMul" not in counts and "Add" not in counts
    fused = next(n for n in res.graph.nodes if n.op_type == "FusedMatMul")
    want = {"GeluErfDecomposed": "Gelu"}.get(act, act)
    assert fused.attrs.get("activation", "") == want and len(fused.inputs) == 4
    assert_idempotent(res)
    assert_ort(res, feeds)


@pytest.mark.parametrize("act", ["Relu", ""])
@pytest.mark.parametrize("batch", [1, 4])
def test_gemm_epilogue(act, batch):
    m = _mm_model(act, gemm=True)
    rng = np.random.default_rng(20)
    feeds = {"a": rand(rng, batch, 13), "r": rand(rng, batch, 11)}
    res = run_both(m, feeds)
    assert res.hits["fuse_matmul"] == 1 and "Gemm" not in res.op_counts()
    assert_idempotent(res)
    assert_ort(res, feeds)


def test_matmul_bias_only_and_residual_only():
    for bias, residual in ((True, False), (False, True)):
        m = _mm_model("", bias=bias, residual=residual)
        rng = np.random.default_rng(21)
        feeds = {"a": rand(rng, 2, 5, 13), "r": rand(rng, 2, 5, 11)}
        res = run_both(m, {k: v for k, v in feeds.items() if residual or k != "r"})
        assert res.hits["fuse_matmul"] == 1


def test_matmul_output_read_elsewhere_is_a_near_miss():
    rng = np.random.default_rng(22)
    nodes = [N("MatMul", ["a", "w"], ["mm"]), N("Add", ["mm", "bias"], ["z"]), N("Relu", ["z"], ["y"]), N("Neg", ["mm"], ["q"])]
    m = model(nodes, [("a", F, [2, 13])], [("y", F, None), ("q", F, None)],
              {"w": rand(rng, 13, 11), "bias": rand(rng, 11)}, opset=18)
    res = run_both(m, {"a": rand(rng, 2, 13)})
    assert res.hits["fuse_matmul"] == 0 and misses(res, "matmul_epilogue")


def test_fused_ops_are_registered_with_bodies():
    from jitort.ir.fused_export import has_body

    for name in ("Gelu", "LayerNorm", "SkipLayerNorm", "RMSNorm", "FusedMatMul"):
        entry = registry.find(name, "jitort", 1)
        assert entry is not None and entry.infer is not None and has_body(name)


# ---------------------------------------------------------------------------------- real models

def _residual_lns(path):
    g = onnx.load(path).graph
    prod = {o: n for n in g.node for o in n.output}
    lns = [n for n in g.node if n.op_type == "LayerNormalization"]
    return len(lns), sum(1 for n in lns if prod.get(n.input[0]) is not None and prod[n.input[0]].op_type == "Add")


@pytest.mark.parametrize("batch,seq", [(1, 5), (2, 9)])
def test_bert(batch, seq):
    path = exported.bert()
    feeds = exported.token_feeds(np.random.default_rng(23), batch, seq, pad_from=4)
    res = run_both(path, feeds, rtol=1e-4, atol=1e-5)
    counts = res.op_counts()
    n_ln, residual = _residual_lns(path)
    assert residual == n_ln == 5
    assert "Erf" not in counts and res.hits["fuse_gelu"] == 2
    assert counts.get("jitort::SkipLayerNorm") == residual == res.hits["fuse_skip_layernorm"]
    assert "LayerNormalization" not in counts
    assert res.hits["fuse_matmul"] >= 3  # 2 x (intermediate dense + GELU), pooler Gemm + Tanh
    assert_idempotent(res)
    if batch == 2:
        assert_ort(res, feeds, rtol=1e-4, atol=1e-4)


def test_gpt2_tanh_gelu():
    path = exported.gpt2()
    feeds = exported.token_feeds(np.random.default_rng(24), 2, 6, with_token_types=False)
    res = run_both(path, feeds, rtol=1e-4, atol=1e-4)
    counts = res.op_counts()
    assert res.hits["fuse_gelu"] == 2 and "Tanh" not in counts and "Pow" not in counts
    # each GELU is tanh-form: standalone, or (since gemm_reshape exposes the Gemm) a FusedMatMul epilogue
    gelus = [n.attrs["approximate"] for n in res.graph.nodes if n.domain == "jitort" and n.op_type == "Gelu"]
    gelus += ["tanh" for n in res.graph.nodes if n.domain == "jitort" and n.op_type == "FusedMatMul"
              and n.attrs.get("activation") == "GeluTanh"]
    assert gelus == ["tanh", "tanh"]
    assert counts.get("jitort::SkipLayerNorm") == res.hits["fuse_skip_layernorm"] == _residual_lns(path)[1]
    assert_idempotent(res)
    assert_ort(res, feeds, rtol=1e-4, atol=1e-4)


def test_vit_level3():
    path = exported.vit()
    feeds = {"pixel_values": rand(np.random.default_rng(25), 2, 3, 32, 32)}
    res = run_both(path, feeds, level=3, rtol=1e-4, atol=1e-4)
    assert res.hits["fuse_gelu"] == 2 and res.hits["fuse_skip_layernorm"] == _residual_lns(path)[1]
    assert res.hits["fuse_matmul"] >= 2
