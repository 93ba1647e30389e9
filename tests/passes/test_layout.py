"""NHWC layout (``layout_nhwc``, level 3): conv regions run channels-last with Transposes only at
their boundaries; outputs equal the unoptimized graph, onnxruntime and the exported model."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests import exported
from tests.helpers import model
from tests.passes.test_conv_fusion import (assert_exports, assert_idempotent, bn_params, rand,
                                           resnet_with_logits, run_levels)

ort = pytest.importorskip("onnxruntime")
F = TensorProto.FLOAT


def transposes(r) -> int:
    return r.op_counts().get("Transpose", 0)


def block_model(n=2, hw=(9, 11)):
    """Conv-Relu-MaxPool, a second Conv + residual Add, a standalone BN, Resize, Concat with a
    third conv branch, AveragePool, GlobalAveragePool -> Flatten: one connected conv region."""
    h, w = hw
    ph, pw = (h + 1) // 2, (w + 1) // 2  # MaxPool k3 s2 p1
    inits = {"w1": rand(6, 3, 3, 3), "b1": rand(6), "w2": rand(6, 6, 3, 3), "w3": rand(4, 6, 1, 1),
             "scales": np.array([1, 1, 2, 2], np.float32), "bias4": rand(1, 10, 1, 1),
             "roi": np.array([], np.float32), **bn_params(6)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "p1"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("BatchNormalization", ["r2", "bn_s", "bn_b", "bn_m", "bn_v"], ["n2"]),
        helper.make_node("Resize", ["n2", "roi", "scales"], ["u2"], mode="linear"),
        helper.make_node("Conv", ["u2", "w3"], ["c3"]),
        helper.make_node("Concat", ["u2", "c3"], ["cat"], axis=1),
        helper.make_node("Add", ["cat", "bias4"], ["cb"]),
        helper.make_node("AveragePool", ["cb"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["ap"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ]
    m = model(nodes, [("x", F, [n, 3, h, w])], [("y", F, [n, 10]), ("ap", F, [n, 10, ph, pw])], inits=inits, opset=19)
    return m, {"x": rand(n, 3, h, w)}


@pytest.mark.parametrize("n,hw", [(1, (9, 11)), (2, (8, 13))])
def test_block_region(n, hw):
    m, feeds = block_model(n, hw)
    m.graph.output.pop()  # keep one output: the region ends at the Flatten
    r = run_levels(m, feeds, level=3)
    ops = r.op_counts()
    assert transposes(r) == 1  # in; out is N C 1 1 -> a Reshape
    assert not {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization"} & set(ops)
    assert ops["jitort::MaxPoolNHWC"] == 1 and ops["jitort::GlobalAveragePoolNHWC"] == 1
    assert all(x.attrs["channels_last"] == 1 for x in r.graph.nodes if x.op_type == "FusedConv")
    assert r.hits["layout_nhwc"] > 0
    assert_idempotent(r, 3, "layout_nhwc")
    assert_exports(r, feeds)


def test_region_output_read_twice():
    """A region value that is also a graph output leaves through one Transpose."""
    m, feeds = block_model(2)
    r = run_levels(m, feeds, level=3)
    assert transposes(r) == 2
    assert r.graph.output_names == ["y", "ap"]
    assert_exports(r, feeds)


def test_inverse_transposes_cancel():
    """An NHWC model (Transpose in, Transpose out around a conv) keeps no Transpose at all."""
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["xt", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 3, 1])]
    m = model(nodes, [("x", F, [2, 7, 5, 3])], [("y", F, [2, 7, 5, 4])], inits={"w": rand(4, 3, 3, 3)})
    feeds = {"x": rand(2, 7, 5, 3)}
    r = run_levels(m, feeds, level=3)
    assert transposes(r) == 0
    assert_idempotent(r, 3, "layout_nhwc")
    assert_exports(r, feeds)


def test_near_misses_at_region_boundary():
    """MaxPool with Indices and a Resize with fed scales stay NCHW and say why."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("MaxPool", ["c"], ["p", "idx"], kernel_shape=[2, 2]),
             helper.make_node("Resize", ["c", "", "s"], ["u"], mode="nearest")]
    m = model(nodes, [("x", F, [1, 3, 6, 6]), ("s", F, [4])],
              [("p", F, [1, 4, 5, 5]), ("idx", TensorProto.INT64, [1, 4, 5, 5]), ("u", F, [1, 4, 12, 12])],
              inits={"w": rand(4, 3, 1, 1)}, opset=19)
    feeds = {"x": rand(1, 3, 6, 6), "s": np.array([1, 1, 2, 2], np.float32)}
    r = run_levels(m, feeds, level=3)
    reasons = [x.reason for x in r.near_misses if x.pattern == "NHWC layout"]
    assert any("Indices" in why for why in reasons)
    assert any("not constant" in why for why in reasons)
    assert r.op_counts().get("MaxPool") == 1 and r.op_counts().get("Resize") == 1
    assert_exports(r, feeds)


def test_no_conv_no_change():
    """Rank-4 elementwise work without a convolution is left alone."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2])]
    m = model(nodes, [("x", F, [1, 3, 6, 6])], [("y", F, [1, 3, 5, 5])])
    r = run_levels(m, {"x": rand(1, 3, 6, 6)}, level=3)
    assert r.hits["layout_nhwc"] == 0 and transposes(r) == 0


def test_resnet50_level3():
    m = resnet_with_logits()
    feeds = {m.graph.input[0].name: np.random.default_rng(4).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    r = run_levels(m, feeds, level=3, rtol=1e-4)
    ops = r.op_counts()
    assert transposes(r) <= 2 and "BatchNormalization" not in ops
    assert ops["jitort::FusedConv"] == 53 and ops["jitort::MaxPoolNHWC"] == 1
    assert ops["jitort::AveragePoolNHWC"] == 1
    assert_idempotent(r, 3, "layout_nhwc")
    assert_exports(r, feeds, rtol=1e-4)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (3, 3, 33, 40)])
def test_mobilenetish_level3(shape):
    path = exported.mobilenetish()
    feeds = {"image": np.random.default_rng(6).standard_normal(shape).astype(np.float32)}
    r = run_levels(path, feeds, level=3)
    ops = r.op_counts()
    assert transposes(r) <= 2 and "Conv" not in ops
    assert all(x.attrs["channels_last"] == 1 for x in r.graph.nodes if x.op_type == "FusedConv")
    assert_idempotent(r, 3, "layout_nhwc")
    assert_exports(r, feeds)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    want = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(r.outputs[0], want[0], rtol=1e-4, atol=1e-4)
