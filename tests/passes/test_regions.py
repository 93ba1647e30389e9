"""Elementwise regions: hand-built graphs and real exports, opt_level 0 vs 2, hits, near misses,
idempotence, and the exported ONNX (fused nodes as functions) in onnx.checker and onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import jitort
from jitort.ir.fused_export import export_optimized
from jitort.passes.elementwise_regions import NAME
from jitort.passes.pipeline import optimize
from tests import exported as E
from tests.helpers import model

F, I64, I32, F16 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.FLOAT16
N = helper.make_node


def _run(m, feeds, level=2):
    """(outputs at level 0, outputs at ``level``, OptimizeResult) for one Signature."""
    data = m.SerializeToString() if isinstance(m, onnx.ModelProto) else m
    m0, mx = jitort.load(data, opt_level=0), jitort.load(data, opt_level=level)
    a, b = m0(**feeds), mx(**feeds)
    return a, b, mx.optimization(mx.signatures()[0])


def _same(a, b, rtol=1e-6, atol=1e-6):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol)


def _regions(res):
    return [n for n in res.graph.nodes if n.domain == "jitort" and n.op_type == "ElementwiseRegion"]


def _check_idempotent(res):
    again = optimize(res.bound, res.level)
    assert again.hits[NAME] == 0
    assert sum(again.hits.values()) == 0
    assert again.nodes_after == res.nodes_after


def _check_export(res, feeds, expected, rtol=1e-5, atol=1e-5):
    proto = export_optimized(res.graph)
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}})
    _same(expected, got, rtol, atol)


def _misses(res):
    return [m for m in res.near_misses if m.pattern == "ElementwiseRegion"]


# -- hand-built graphs ------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 3])
def test_broadcast_chain_with_trailing_reduction(batch):
    """x[N,7] + b[7] -> * s -> Tanh -> (Relu -> y) and ReduceSum(axes=-1) -> r: one region."""
    nodes = [N("Add", ["x", "b"], ["a"]), N("Mul", ["a", "s"], ["m"]), N("Tanh", ["m"], ["t"]),
             N("Relu", ["t"], ["y"]), N("ReduceSum", ["t", "ax"], ["r"], keepdims=0)]
    m = model(nodes, [("x", F, ["N", 7])], [("y", F, ["N", 7]), ("r", F, ["N"])],
              inits={"b": np.linspace(-1, 1, 7, dtype=np.float32), "s": np.float32(0.7),
                     "ax": np.array([-1], np.int64)})
    feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 7)).astype(np.float32)}
    a, b, res = _run(m, feeds)
    _same(a, b)
    assert res.hits[NAME] == 1
    [reg] = _regions(res)
    assert [n.op_type for n in reg.attrs["body"].nodes] == ["Add", "Mul", "Tanh", "Relu", "ReduceSum"]
    assert res.op_counts() == {"jitort::ElementwiseRegion": 1}
    assert [res.bound.types[o].shape for o in reg.outputs] == [(batch, 7), (batch,)]  # infer
    _check_idempotent(res)
    _check_export(res, feeds, a)


def test_reduce_mean_axes_attribute_exports_as_input():
    """Opset 13: ReduceMean's axes is an attribute; the function body (opset 23) needs an input."""
    nodes = [N("Sub", ["x", "c"], ["d"]), N("Mul", ["d", "d"], ["q"]),
             N("ReduceMean", ["q"], ["v"], axes=[1], keepdims=1)]
    m = model(nodes, [("x", F, [2, 5, 3])], [("v", F, [2, 1, 3])], inits={"c": np.float32(0.25)}, opset=13)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)}
    a, b, res = _run(m, feeds)
    _same(a, b)
    assert res.hits[NAME] == 1
    _check_export(res, feeds, a)


def test_intermediate_used_outside_with_domain_shape_is_an_output():
    """t = Tanh(x*2) also feeds a MatMul: one region with outputs t and y (no split)."""
    nodes = [N("Mul", ["x", "two"], ["m"]), N("Tanh", ["m"], ["t"]), N("Sigmoid", ["t"], ["y"]),
             N("MatMul", ["t", "w"], ["z"])]
    m = model(nodes, [("x", F, ["N", 5])], [("y", F, ["N", 5]), ("z", F, ["N", 3])],
              inits={"two": np.float32(2), "w": np.ones((5, 3), np.float32)})
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)}
    a, b, res = _run(m, feeds)
    _same(a, b)
    [reg] = _regions(res)
    assert res.hits[NAME] == 1 and len(reg.outputs) == 2
    _check_idempotent(res)
    _check_export(res, feeds, a)


def test_broadcast_intermediate_used_outside_splits_the_region():
    """g = Exp(b)[7] is read by a Concat too: it is smaller than the domain [N,7], so the region
    is split at g (near miss), and Add -> Relu form their own region."""
    nodes = [N("Exp", ["b"], ["e"]), N("Neg", ["e"], ["g"]), N("Add", ["x", "g"], ["a"]),
             N("Relu", ["a"], ["y"]), N("Concat", ["g", "g"], ["c"], axis=0)]
    m = model(nodes, [("x", F, ["N", 7]), ("b", F, [7])], [("y", F, ["N", 7]), ("c", F, [14])])
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((3, 7)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}
    a, b, res = _run(m, feeds)
    _same(a, b)
    assert res.hits[NAME] == 2  # {Exp, Neg} and {Add, Relu}
    assert any("smaller than its domain" in m.reason for m in _misses(res))
    _check_idempotent(res)
    _check_export(res, feeds, a)


def test_dtype_casts_inside_a_region():
    """float32 -> Cast(int32) -> Add -> Cast(float16) -> Mul -> Cast(float32), odd sizes."""
    nodes = [N("Mul", ["x", "k"], ["s"]), N("Cast", ["s"], ["i"], to=I32), N("Add", ["i", "one"], ["j"]),
             N("Cast", ["j"], ["h"], to=F16), N("Mul", ["h", "half"], ["p"]), N("Cast", ["p"], ["y"], to=F),
             N("Greater", ["y", "x"], ["gt"]), N("Where", ["gt", "y", "x"], ["w"])]
    m = model(nodes, [("x", F, ["N", 3, 5])], [("w", F, ["N", 3, 5])],
              inits={"k": np.float32(10), "one": np.int32(1), "half": np.float16(0.5)})
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 3, 5)).astype(np.float32)}
    a, b, res = _run(m, feeds)
    _same(a, b, rtol=0, atol=0)
    assert res.hits[NAME] == 1
    assert len(_regions(res)[0].attrs["body"].nodes) == 8
    _check_idempotent(res)
    _check_export(res, feeds, a, rtol=0, atol=0)


def test_two_reductions_are_not_one_region():
    nodes = [N("Exp", ["x"], ["e"]), N("ReduceMax", ["e"], ["mx"], axes=[1], keepdims=1),
             N("Sub", ["e", "mx"], ["d"]), N("Abs", ["d"], ["q"]),
             N("ReduceSum", ["q", "ax"], ["y"], keepdims=1)]
    m = model(nodes, [("x", F, [2, 9])], [("y", F, [2, 1])], inits={"ax": np.array([1], np.int64)}, opset=17)
    feeds = {"x": np.random.default_rng(4).standard_normal((2, 9)).astype(np.float32)}
    a, b, res = _run(m, feeds)
    _same(a, b)
    assert res.hits[NAME] == 2  # {Exp, ReduceMax} and {Sub, Abs, ReduceSum}
    assert any("reduction" in m.reason for m in _misses(res))
    _check_idempotent(res)
    _check_export(res, feeds, a)


def test_no_region_when_it_would_create_a_cycle():
    """r = Relu(x); y = Add(r, Transpose(r)): {Relu, Add} would be its own ancestor."""
    nodes = [N("Relu", ["x"], ["r"]), N("Transpose", ["r"], ["rt"], perm=[1, 0]), N("Add", ["r", "rt"], ["y"])]
    m = model(nodes, [("x", F, [5, 5])], [("y", F, [5, 5])])
    feeds = {"x": np.random.default_rng(5).standard_normal((5, 5)).astype(np.float32)}
    a, b, res = _run(m, feeds)
    _same(a, b)
    assert res.hits[NAME] == 0
    assert any("cycle" in m.reason for m in _misses(res))


def test_data_dependent_shapes_are_not_fused():
    """After NonZero the shape depends on the data: Exp -> Neg stay unfused (near miss)."""
    nodes = [N("NonZero", ["x"], ["nz"]), N("Cast", ["nz"], ["f"], to=F), N("Exp", ["f"], ["e"]),
             N("Neg", ["e"], ["y"])]
    m = model(nodes, [("x", F, [6])], [("y", F, [1, None])])
    feeds = {"x": np.array([0, 1, 0, 2, 3, 0], np.float32)}
    a, b, res = _run(m, feeds)
    _same(a, b)
    assert res.hits[NAME] == 0
    assert any("not fixed by the Signature" in m.reason for m in _misses(res))


def test_non_constant_reduction_axes_are_a_near_miss():
    nodes = [N("Exp", ["x"], ["e"]), N("Neg", ["e"], ["n"]), N("ReduceSum", ["n", "axes"], ["y"], keepdims=1)]
    m = model(nodes, [("x", F, [2, 3]), ("axes", I64, [1])], [("y", F, None)])
    feeds = {"x": np.ones((2, 3), np.float32), "axes": np.array([1], np.int64)}
    a, b, res = _run(m, feeds)
    _same(a, b)
    assert res.hits[NAME] == 1  # {Exp, Neg}; the reduction stays outside
    assert any("axes are not constant" in m.reason for m in _misses(res))


def test_single_nodes_are_left_alone_and_second_run_changes_nothing():
    from jitort.passes.elementwise_regions import elementwise_regions

    nodes = [N("Relu", ["x"], ["y"])]
    m = model(nodes, [("x", F, [2, 2])], [("y", F, [2, 2])])
    a, b, res = _run(m, {"x": np.ones((2, 2), np.float32)})
    assert res.hits[NAME] == 0 and res.op_counts() == {"Relu": 1}
    # the pass itself, twice on a graph it fused
    m2 = model([N("Relu", ["x"], ["r"]), N("Neg", ["r"], ["y"])], [("x", F, [2, 2])], [("y", F, [2, 2])])
    _, _, res2 = _run(m2, {"x": np.ones((2, 2), np.float32)})
    from jitort.passes.base import PassContext

    ctx = PassContext(types=dict(res2.bound.types), consts=dict(res2.bound.consts))
    assert elementwise_regions(res2.graph, ctx) is False and ctx.hits[NAME] == 0


def test_jitort_gelu_is_a_member():
    """Erf-GELU (fused to jitort::Gelu by fuse_gelu) followed by a scale and a residual add."""
    nodes = [N("Div", ["x", "sq2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["p"]),
             N("Mul", ["x", "p"], ["xp"]), N("Mul", ["xp", "half"], ["g"]),
             N("Mul", ["g", "s"], ["gs"]), N("Add", ["gs", "x"], ["y"])]
    m = model(nodes, [("x", F, ["N", 11])], [("y", F, ["N", 11])],
              inits={"sq2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5),
                     "s": np.float32(1.5)})
    feeds = {"x": np.random.default_rng(6).standard_normal((3, 11)).astype(np.float32)}
    a, b, res = _run(m, feeds)
    _same(a, b, rtol=1e-5, atol=1e-6)
    assert res.hits[NAME] == 1
    body_ops = {(n.domain, n.op_type) for n in _regions(res)[0].attrs["body"].nodes}
    if res.hits.get("fuse_gelu"):
        assert ("jitort", "Gelu") in body_ops
    _check_idempotent(res)
    _check_export(res, feeds, a)


# -- real exports ---------------------------------------------------------------------------------
def _bert_feeds(batch, seq):
    return E.token_feeds(np.random.default_rng(batch), batch, seq, pad_from=seq - 3)


@pytest.mark.parametrize("batch,seq", [(1, 7), (2, 13)])
def test_bert(batch, seq):
    feeds = _bert_feeds(batch, seq)
    a, b, res = _run(E.bert(), feeds)
    _same(a, b, rtol=1e-4, atol=1e-4)
    assert res.hits[NAME] >= 1  # at least the attention-mask arithmetic (And -> Where)
    assert any({"And", "Where"} <= {n.op_type for n in r.attrs["body"].nodes} for r in _regions(res))
    _check_idempotent(res)
    _check_export(res, feeds, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path,feeds", [
    (E.vit, {"pixel_values": np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)}),
    (E.gpt2, E.token_feeds(np.random.default_rng(8), 2, 9, with_token_types=False)),
    (E.mobilenetish, {"image": np.random.default_rng(9).standard_normal((1, 3, 33, 47)).astype(np.float32)}),
], ids=["vit", "gpt2", "mobilenetish"])
def test_real_models_match_and_export(path, feeds):
    a, b, res = _run(path(), feeds)
    _same(a, b, rtol=1e-4, atol=1e-4)
    for reg in _regions(res):  # every member is elementwise or the one trailing reduction
        kinds = [n.op_type for n in reg.attrs["body"].nodes]
        assert len(kinds) >= 2 and sum(k.startswith("Reduce") for k in kinds) <= 1
    _check_idempotent(res)
    _check_export(res, feeds, a, rtol=1e-4, atol=1e-4)
