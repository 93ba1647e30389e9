"""The optimizer framework: levels, the matcher's guard and rewrites, session wiring."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort
from jitort.ir.graph import Node
from jitort.ir.infer import bind
from jitort.ir.onnx_import import import_model
from jitort.ir.types import TensorType
from jitort.passes.base import PassContext, registered_passes
from jitort.passes.pattern import GraphView
from jitort.passes.pipeline import copy_graph, optimize
from tests.helpers import F, model


def _chain():
    """x -> Relu -> a -> Neg -> b -> Abs -> y, with a also read by an Add -> z."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Neg", ["a"], ["b"], name="n"),
             helper.make_node("Abs", ["b"], ["y"], name="ab"), helper.make_node("Add", ["a", "x"], ["z"], name="ad")]
    return import_model(model(nodes, [("x", F, [2, 3])], [("y", F, [2, 3]), ("z", F, [2, 3])])).graph


def test_escapes_names_the_outside_reader():
    g = _chain()
    view = GraphView(g, PassContext())
    relu, neg, ab, _ = g.nodes
    assert view.escapes([neg, ab], keep=["y"]) is None
    reason = view.escapes([relu, neg], keep=["b"])
    assert "'a'" in reason and "Add" in reason
    assert "graph output" in view.escapes([neg, ab], keep=["b"])


def test_replace_keeps_topological_order_and_redirect_protects_outputs():
    g = _chain()
    view = GraphView(g, PassContext())
    _, neg, ab, _ = g.nodes
    fused = Node("Abs", ["a"], ["y"], name="fused")  # |-a| == |a|
    view.replace([neg, ab], [fused])
    assert [n.name for n in g.nodes] == ["r", "fused", "ad"]
    assert view.producer("y") is fused and view.consumers("a") == [fused, g.nodes[2]]
    assert view.redirect("y", "a") is False  # a graph output keeps its name
    assert view.redirect("x", "a") is True and g.nodes[2].inputs == ["a", "a"]


def test_level_zero_changes_nothing_and_input_graph_is_untouched():
    g = _chain()
    bound = bind(g, {"x": TensorType(np.dtype("float32"), (2, 3))})
    before = [(n.op_type, list(n.inputs)) for n in g.nodes]
    for level in (0, 1, 2, 3):
        res = optimize(bound, level)
        assert (res.graph is g) == (level == 0)
        assert [(n.op_type, list(n.inputs)) for n in g.nodes] == before
    assert optimize(bound, 0).nodes_after == len(g.nodes)


def test_copy_graph_shares_tensors_but_not_structure():
    g = import_model(model([helper.make_node("Add", ["x", "c"], ["y"])], [("x", F, [3])], [("y", F, [3])],
                           inits={"c": np.ones(3, np.float32)})).graph
    c = copy_graph(g)
    assert c.initializers["c"] is g.initializers["c"]
    c.nodes[0].inputs[0] = "zzz"
    assert g.nodes[0].inputs[0] == "x"


def test_passes_are_registered_per_level_in_order():
    for level in (1, 2, 3):
        ps = registered_passes(level)
        assert [p.order for p in ps] == sorted(p.order for p in ps)
        assert all(p.level == level for p in ps)
        assert len({p.name for p in ps}) == len(ps)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_session_option_selects_level(level):
    m = jitort.load(model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, [4])], [("y", F, [4])]),
                    opt_level=level)
    m(x=np.ones(4, np.float32))
    res = m.optimization(m.signatures()[0])
    assert res.level == level
    assert {p.level for p in res.passes} <= set(range(1, level + 1))


def test_inference_session_maps_ort_levels():
    so = jitort.SessionOptions()
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, [4])], [("y", F, [4])])
    for ort_level, ours in [(jitort.GraphOptimizationLevel.ORT_DISABLE_ALL, 0),
                            (jitort.GraphOptimizationLevel.ORT_ENABLE_BASIC, 1),
                            (jitort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, 2),
                            (jitort.GraphOptimizationLevel.ORT_ENABLE_ALL, 3)]:
        so.graph_optimization_level = ort_level
        assert jitort.InferenceSession(m, sess_options=so).model.opt_level == ours
    # ENABLE_ALL is each backend's default: the reference backend has no use for NHWC layouts
    ref = jitort.InferenceSession(m, sess_options=so, providers=["JitortReferenceExecutionProvider"])
    assert ref.model.opt_level == 2


def test_initializer_backed_input_is_constant_only_when_not_fed():
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", F, [3]), ("w", F, [3])], [("y", F, [3])],
              inits={"w": np.arange(3, dtype=np.float32)})
    g = import_model(m).graph
    t = TensorType(np.dtype("float32"), (3,))
    unfed = bind(g, {"x": t})
    fed = bind(g, {"x": t, "w": t})
    assert unfed.fed == {"x"} and fed.fed == {"x", "w"}
    assert GraphView(g, PassContext(fed=unfed.fed)).const("w") is not None
    assert GraphView(g, PassContext(fed=fed.fed)).const("w") is None
