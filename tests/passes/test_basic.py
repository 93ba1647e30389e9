"""Basic-level passes (fold, dedup, no_op, chains, CSE, dead code) on hand-built and real graphs.

Every case compares opt_level=0 against the optimized level on random inputs, asserts the hit
counters (and near misses for the guards), checks that a second optimize changes nothing, and
runs the exported optimized model through onnx.checker and onnxruntime.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import jitort
from jitort.ir.fused_export import export_optimized
from jitort.ir.graph import Graph, Node, ValueInfo
from jitort.ir.types import TensorType
from jitort.passes.base import PassContext
from jitort.passes.fold import constant_folding
from jitort.passes.pipeline import optimize
from tests import exported
from tests.helpers import F, model

I64 = TensorProto.INT64
ort = pytest.importorskip("onnxruntime")


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def check(m, feeds, level=1, exact=True):
    """Run ``m`` at level 0 and ``level``; compare; second optimize is a no-op; export runs in ORT.

    Returns the OptimizeResult of ``level``."""
    ref = jitort.load(m, opt_level=0)(**feeds)
    opt = jitort.load(m, opt_level=level)
    got = opt(**feeds)
    for r, g in zip(ref, got):
        assert g.shape == r.shape and g.dtype == r.dtype
        if exact:
            np.testing.assert_array_equal(g, r)
        else:
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(r).max(initial=0))))
    result = opt.optimization(opt.signatures()[0])
    again = optimize(result.bound, level)
    assert sum(again.hits.values()) == 0, f"second optimize changed the graph: {again.hits}"
    proto = export_optimized(result.graph)
    onnx.checker.check_model(proto)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in proto.graph.output]
    for r, g in zip(ref, sess.run(names, feeds)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(r).max(initial=0))))
    return result


def const(name, value):
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(value)))


# -- constant_folding ---------------------------------------------------------------------------------
def test_fold_constant_subgraph():
    rng = np.random.default_rng(0)
    w = rand(rng, 5, 3)
    m = model([const("s", np.float32(2.0)),
               helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
               helper.make_node("Mul", ["wt", "s"], ["ws"]),
               helper.make_node("MatMul", ["x", "ws"], ["y"])],
              [("x", F, [2, 3])], [("y", F, [2, 5])], inits={"w": w})
    r = check(m, {"x": rand(rng, 2, 3)})
    assert r.hits["constant_folding"] == 3
    assert r.op_counts() == {"MatMul": 1}
    assert r.hits["dead_code"] == 3  # w, s and wt: only ws is read
    assert list(r.graph.initializers) == ["ws"]


@pytest.mark.parametrize("batch,seq", [(1, 5), (3, 7)])
def test_fold_shape_chain(batch, seq):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape target: all folded for the Signature."""
    m = model([helper.make_node("Shape", ["x"], ["sh"]),
               helper.make_node("Gather", ["sh", "i0"], ["b"], axis=0),
               helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
               helper.make_node("Concat", ["b1", "minus1"], ["target"], axis=0),
               helper.make_node("Reshape", ["x", "target"], ["y"])],
              [("x", F, ["B", "S", 4])], [("y", F, ["B", None])],
              inits={"i0": np.array(0, np.int64), "ax0": np.array([0], np.int64),
                     "minus1": np.array([-1], np.int64)})
    r = check(m, {"x": rand(np.random.default_rng(1), batch, seq, 4)})
    assert r.op_counts() == {"Reshape": 1}
    assert r.hits["constant_folding"] == 4


def test_fold_graph_output_keeps_its_name():
    """Everything folds: the graph output becomes an initializer of the same name, zero nodes."""
    m = model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["y"], to=F)],
              [("x", F, [2, 3])], [("y", F, [2])])
    r = check(m, {"x": np.zeros((2, 3), np.float32)})
    assert r.nodes_after == 0 and list(r.graph.initializers) == ["y"]
    assert r.hits["constant_folding"] == 2


def test_fold_never_touches_input_data():
    m = model([helper.make_node("Add", ["x", "c"], ["a"]),
               helper.make_node("NonZero", ["a"], ["nz"]),
               helper.make_node("Shape", ["nz"], ["y"])],
              [("x", F, [2, 3])], [("y", I64, [2])], inits={"c": np.float32(0.5)})
    r = check(m, {"x": rand(np.random.default_rng(2), 2, 3)})
    assert r.hits["constant_folding"] == 0
    assert r.nodes_after == 3


def _ctx_for(graph, **types):
    return PassContext(types={k: TensorType(np.dtype(d), s) for k, (d, s) in types.items()},
                       consts={k: v for k, v in graph.initializers.items()})


def test_fold_limit_not_materialized():
    """A ConstantOfShape of 1e8 elements stays a node: nothing near its size is allocated."""
    g = Graph(nodes=[Node("ConstantOfShape", ["shape"], ["big"], {"value": np.array([1.0], np.float32)}),
                     Node("Add", ["x", "big"], ["y"])],
              inputs=[ValueInfo("x")], outputs=[ValueInfo("y")],
              initializers={"shape": np.array([100_000_000], np.int64)}, opsets={"": 17})
    ctx = _ctx_for(g, x=("float32", (1,)), big=("float32", (100_000_000,)), y=("float32", (100_000_000,)))
    tracemalloc.start()
    try:
        changed = constant_folding(g, ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not changed and len(g.nodes) == 2 and ctx.hits["constant_folding"] == 0
    assert peak < 10_000_000
    assert any("fold_limit" in m.reason for m in ctx.near_misses)


def test_big_constant_of_shape_through_bind_and_optimize():
    """bind predicts the output size before evaluating: a huge constant is never materialized."""
    from jitort.ir.infer import bind

    g = Graph(nodes=[Node("ConstantOfShape", ["shape"], ["big"], {}), Node("Add", ["x", "big"], ["y"])],
              inputs=[ValueInfo("x")], outputs=[ValueInfo("y")],
              initializers={"shape": np.array([20_000_000], np.int64)}, opsets={"": 17})
    tracemalloc.start()
    try:
        result = optimize(bind(g, {"x": TensorType(np.dtype(np.float32), (1,))}), 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.hits["constant_folding"] == 0
    assert peak < 10_000_000


def test_fold_limit_and_unknown_size_reported():
    g = Graph(nodes=[Node("ConstantOfShape", ["shape"], ["c"], {}), Node("Add", ["x", "c"], ["y"])],
              inputs=[ValueInfo("x")], outputs=[ValueInfo("y")],
              initializers={"shape": np.array([3, 4], np.int64)}, opsets={"": 17})
    ctx = _ctx_for(g, x=("float32", (3, 4)), c=("float32", (3, 4)), y=("float32", (3, 4)))
    ctx.fold_limit = 11
    assert not constant_folding(g, ctx)
    ctx.fold_limit = 12
    assert constant_folding(g, ctx) and "c" in g.initializers and len(g.nodes) == 1
    np.testing.assert_array_equal(g.initializers["c"], np.zeros((3, 4), np.float32))
    # an output whose size the binder could not tell is never evaluated
    g2 = Graph(nodes=[Node("ConstantOfShape", ["shape"], ["c"], {})], outputs=[ValueInfo("c")],
               initializers={"shape": np.array([3, 4], np.int64)}, opsets={"": 17})
    ctx2 = PassContext()
    assert not constant_folding(g2, ctx2)
    assert [m.reason for m in ctx2.near_misses] == ["result size unknown before evaluation"]


def test_fold_skips_nondeterministic():
    m = model([helper.make_node("RandomUniform", [], ["r"], shape=[2, 3], seed=1.0),
               helper.make_node("Mul", ["r", "zero"], ["z"]),
               helper.make_node("Add", ["x", "z"], ["y"])],
              [("x", F, [2, 3])], [("y", F, [2, 3])], inits={"zero": np.float32(0.0)})
    r = check(m, {"x": rand(np.random.default_rng(3), 2, 3)})
    assert r.hits["constant_folding"] == 0 and r.nodes_after == 3
    assert any(nm.pattern == "constant_folding" and "nondeterministic" in nm.reason for nm in r.near_misses)


# -- initializer_dedup --------------------------------------------------------------------------------
def test_dedup_initializers():
    c = np.array([0.5, 1.0, 2.0], np.float32)
    m = model([helper.make_node("Mul", ["x", "c1"], ["a"]),
               helper.make_node("Mul", ["x", "c2"], ["b"]),
               helper.make_node("Add", ["a", "b"], ["s"]),
               helper.make_node("Add", ["s", "c3"], ["t"]),
               helper.make_node("Add", ["t", "c4"], ["y"])],
              [("x", F, [2, 3])], [("y", F, [2, 3])],
              inits={"c1": c, "c2": c.copy(), "c3": c.astype(np.float64).astype(np.float32) + 1,
                     "c4": c.astype(np.float32)[::-1].copy()})
    r = check(m, {"x": rand(np.random.default_rng(4), 2, 3)})
    assert r.hits["initializer_dedup"] == 1
    assert r.hits["common_subexpression"] == 1  # the two Muls now read the same names
    assert len(r.graph.initializers) == 3


def test_dedup_keeps_overridable_defaults_and_dtypes():
    m = model([helper.make_node("Add", ["x", "d"], ["a"]),
               helper.make_node("Add", ["a", "e"], ["b"]),
               helper.make_node("Cast", ["i"], ["ic"], to=F),
               helper.make_node("Add", ["b", "ic"], ["y"])],
              [("x", F, [3]), ("d", F, [3])], [("y", F, [3])],
              inits={"d": np.ones(3, np.float32), "e": np.ones(3, np.float32), "i": np.full(3, 2, np.int32)})
    r = check(m, {"x": rand(np.random.default_rng(5), 3)})
    assert r.hits["initializer_dedup"] == 0
    assert "d" in r.graph.initializers


# -- dead_code ------------------------------------------------------------------------------------------
def test_dce_nodes_initializers_and_subgraph_reads():
    then_g = helper.make_graph([helper.make_node("Add", ["x", "k"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", F, [3])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, [3])])
    m = model([helper.make_node("Relu", ["x"], ["unused"]),
               helper.make_node("Neg", ["unused"], ["unused2"]),
               helper.make_node("Abs", ["x"], ["k"]),  # read only by the If's then-branch
               helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
               helper.make_node("Greater", ["s", "zero"], ["cond"]),
               helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
               helper.make_node("Mul", ["y", "two"], ["z"])],
              [("x", F, [3])], [("y", F, [3]), ("z", F, [3])],
              inits={"zero": np.float32(0.0), "two": np.float32(2.0), "junk": np.zeros(7, np.float32)})
    for x in (np.array([1, 2, 3], np.float32), np.array([-1, -2, 0.5], np.float32)):
        r = check(m, {"x": x})
    assert r.hits["dead_code"] == 3  # Relu, Neg, junk
    assert {n.op_type for n in r.graph.nodes} == {"Abs", "ReduceSum", "Greater", "If", "Mul"}


# -- common_subexpression -----------------------------------------------------------------------------
def test_cse_chains_commutative_and_guards():
    m = model([helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0]),
               helper.make_node("Transpose", ["x"], ["t2"], perm=[1, 0]),
               helper.make_node("Transpose", ["x"], ["t3"], perm=[0, 1]),
               helper.make_node("Add", ["t1", "b"], ["a1"]),
               helper.make_node("Add", ["b", "t2"], ["a2"]),  # commutative: same as a1
               helper.make_node("Sub", ["t1", "b"], ["s1"]),
               helper.make_node("Sub", ["b", "t2"], ["s2"]),  # not commutative: differs
               helper.make_node("RandomNormalLike", ["t1"], ["r1"]),
               helper.make_node("RandomNormalLike", ["t2"], ["r2"]),
               helper.make_node("Mul", ["r1", "zero"], ["rz1"]),
               helper.make_node("Mul", ["r2", "zero"], ["rz2"]),
               helper.make_node("Sum", ["a1", "a2", "s1", "s2", "rz1", "rz2"], ["y"]),
               helper.make_node("Relu", ["y"], ["o1"]),
               helper.make_node("Relu", ["y"], ["o2"])],  # both graph outputs: both stay
              [("x", F, [3, 4])], [("o1", F, [4, 3]), ("o2", F, [4, 3]), ("t3", F, [3, 4])],
              inits={"b": np.arange(3, dtype=np.float32), "zero": np.float32(0.0)})
    r = check(m, {"x": rand(np.random.default_rng(6), 3, 4)})
    # t2 -> t1, then a2 -> a1 and nothing else (Sub order differs; randoms never merge)
    assert r.hits["common_subexpression"] == 2
    counts = r.op_counts()
    assert counts["RandomNormalLike"] == 2 and counts["Relu"] == 2 and counts["Sub"] == 2
    assert r.hits["no_op"] == 0  # t3 (identity perm) is a graph output read from an input: stays


# -- no_op ------------------------------------------------------------------------------------------------
def test_noop_each_kind():
    rng = np.random.default_rng(7)
    m = model([helper.make_node("Identity", ["x"], ["a"]),
               helper.make_node("Dropout", ["a"], ["b"], seed=1),
               helper.make_node("Cast", ["b"], ["c"], to=F),
               helper.make_node("Reshape", ["c", "same"], ["d"]),
               helper.make_node("Expand", ["d", "ones"], ["e"]),
               helper.make_node("Slice", ["e", "st", "en", "axes"], ["f"]),
               helper.make_node("Pad", ["f", "zeros"], ["g"]),
               helper.make_node("Tile", ["g", "reps"], ["h"]),
               helper.make_node("Transpose", ["h"], ["i"], perm=[2, 1, 0, 3]),  # swaps two size-1 dims
               helper.make_node("Unsqueeze", ["i", "ax0"], ["j"]),
               helper.make_node("Squeeze", ["j", "ax0"], ["k"]),
               helper.make_node("Transpose", ["k"], ["l"], perm=[3, 0, 1, 2]),
               helper.make_node("Transpose", ["l"], ["m"], perm=[1, 2, 3, 0]),  # cancels the previous
               helper.make_node("CastLike", ["m", "x"], ["n"]),
               helper.make_node("Relu", ["n"], ["y"])],
              [("x", F, [1, 3, 1, 5])], [("y", F, [1, 3, 1, 5])],
              inits={"same": np.array([1, 3, 1, 5], np.int64), "ones": np.array([1, 1], np.int64),
                     "st": np.array([0, -100], np.int64), "en": np.array([100, 100], np.int64),
                     "axes": np.array([1, 2], np.int64), "zeros": np.zeros(8, np.int64),
                     "reps": np.ones(4, np.int64), "ax0": np.array([0], np.int64)}, opset=15)
    r = check(m, {"x": rand(rng, 1, 3, 1, 5)})
    assert r.op_counts() == {"Relu": 1}
    # 12 bypassed; the Unsqueeze of the pair and the first Transpose then die as dead code
    assert r.hits["no_op"] == 12 and r.hits["dead_code"] == 2 + 8


def test_noop_guards():
    rng = np.random.default_rng(8)
    m = model([helper.make_node("Slice", ["x", "st", "en", "ax", "neg"], ["rev"]),  # reverses
               helper.make_node("Transpose", ["rev"], ["t"], perm=[1, 0]),  # shape (1,4)->(4,1)
               helper.make_node("Reshape", ["t", "shape"], ["r"]),  # (4,1) -> (1,4): not a no-op
               helper.make_node("Greater", ["m", "zero"], ["mode"]),
               helper.make_node("Dropout", ["r", "", "mode"], ["d"]),  # training_mode from data
               helper.make_node("Dropout", ["d"], ["d2", "mask"]),  # mask used
               helper.make_node("Cast", ["d2"], ["y"], to=TensorProto.DOUBLE),
               helper.make_node("Cast", ["mask"], ["yy"], to=F)],
              [("x", F, [1, 4]), ("m", F, [])], [("y", TensorProto.DOUBLE, [1, 4]), ("yy", F, [1, 4])],
              inits={"st": np.array([-1], np.int64), "en": np.array([-100], np.int64),
                     "ax": np.array([1], np.int64), "neg": np.array([-1], np.int64),
                     "shape": np.array([1, 4], np.int64), "zero": np.float32(1e9)}, opset=13)
    r = check(m, {"x": rand(rng, 1, 4), "m": np.array(0.0, np.float32)})
    assert r.hits["no_op"] == 0
    reasons = {nm.reason for nm in r.near_misses if nm.pattern == "no_op"}
    assert reasons >= {"Dropout training_mode is not a constant", "Dropout mask output is used"}


def test_noop_graph_output_name_kept():
    m = model([helper.make_node("Relu", ["x"], ["r"]),
               helper.make_node("Identity", ["r"], ["y"]),
               helper.make_node("Identity", ["x"], ["z"])],  # an input passed through: must stay
              [("x", F, [2, 3])], [("y", F, [2, 3]), ("z", F, [2, 3])])
    r = check(m, {"x": rand(np.random.default_rng(9), 2, 3)})
    assert r.hits["no_op"] == 1
    assert r.graph.output_names == ["y", "z"]
    assert r.op_counts() == {"Relu": 1, "Identity": 1}


# -- chain_collapse ----------------------------------------------------------------------------------------
def test_chains_reshape_and_transpose():
    m = model([helper.make_node("Reshape", ["x", "s1"], ["a"]),
               helper.make_node("Unsqueeze", ["a", "ax"], ["b"]),
               helper.make_node("Flatten", ["b"], ["c"], axis=2),
               helper.make_node("Reshape", ["c", "s2"], ["d"]),
               helper.make_node("Transpose", ["d"], ["e"], perm=[1, 2, 0]),
               helper.make_node("Transpose", ["e"], ["f"], perm=[0, 2, 1]),
               helper.make_node("Transpose", ["f"], ["y"], perm=[2, 1, 0])],
              [("x", F, [2, 3, 5])], [("y", F, [2, 3, 5])],
              inits={"s1": np.array([6, 5], np.int64), "ax": np.array([0], np.int64),
                     "s2": np.array([3, 0, -1], np.int64)}, opset=13)
    r = check(m, {"x": rand(np.random.default_rng(10), 2, 3, 5)})
    assert r.op_counts() == {"Reshape": 1, "Transpose": 1}
    assert r.hits["chain_collapse"] == 5


def test_chain_shared_intermediate_stays():
    m = model([helper.make_node("Reshape", ["x", "s1"], ["a"]),
               helper.make_node("Reshape", ["a", "s2"], ["y"]),
               helper.make_node("Relu", ["a"], ["z"])],
              [("x", F, [4, 3])], [("y", F, [2, 6]), ("z", F, [12])],
              inits={"s1": np.array([12], np.int64), "s2": np.array([2, 6], np.int64)})
    r = check(m, {"x": rand(np.random.default_rng(11), 4, 3)})
    assert r.hits["chain_collapse"] == 1 and r.op_counts() == {"Reshape": 2, "Relu": 1}


# -- real models ----------------------------------------------------------------------------------------------
def _real(path, feeds):
    ref = jitort.load(path, opt_level=0)(**feeds)
    results = {}
    for level in (1, 2):
        m = jitort.load(path, opt_level=level)
        got = m(**feeds)
        for r, g in zip(ref, got):
            if level == 1:  # basic passes never reassociate: bit-identical
                np.testing.assert_array_equal(g, r)
            else:
                np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(r).max())))
        res = results[level] = m.optimization(m.signatures()[0])
        assert sum(optimize(res.bound, level).hits.values()) == 0
    basic = results[1]
    assert basic.nodes_after < 0.5 * basic.nodes_before
    for name in ("constant_folding", "initializer_dedup", "dead_code", "no_op"):
        assert basic.hits[name] > 0, name
    assert "Constant" not in basic.op_counts() and "Identity" not in basic.op_counts()
    proto = export_optimized(basic.graph)
    onnx.checker.check_model(proto)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for r, g in zip(ref, sess.run(None, feeds)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(r).max())))
    return basic


@pytest.mark.parametrize("batch,seq", [(1, 7), (3, 5)])
def test_real_bert(batch, seq):
    feeds = exported.token_feeds(np.random.default_rng(seq), batch, seq, pad_from=2)
    _real(exported.bert(), feeds)


@pytest.mark.parametrize("batch,seq", [(1, 9), (2, 4)])
def test_real_gpt2(batch, seq):
    feeds = exported.token_feeds(np.random.default_rng(seq), batch, seq, with_token_types=False)
    basic = _real(exported.gpt2(), feeds)
    assert basic.hits["chain_collapse"] > 0


def test_real_gpt2_past():
    _real(exported.gpt2_past(), exported.past_feeds(np.random.default_rng(0), 2, 1, 5))
