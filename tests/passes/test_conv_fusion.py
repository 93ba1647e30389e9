"""Conv fusion (``fuse_conv``, extended level): Conv + BatchNormalization + Add + activation into
jitort::FusedConv, checked against the unfused graph (opt_level 0), onnxruntime, and the
exported optimized model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import jitort
from jitort.ir.fused_export import export_optimized
from jitort.passes.pipeline import optimize
from tests import exported
from tests.helpers import model

ort = pytest.importorskip("onnxruntime")
F = TensorProto.FLOAT
RNG = np.random.default_rng(7)


# -- shared helpers (test_layout.py uses them too) ------------------------------------------------
def run_levels(m, feeds, level=2, rtol=1e-5):
    """Run ``m`` at opt_level 0 and ``level``; assert equal outputs; return the OptimizeResult."""
    src = m.SerializeToString() if isinstance(m, onnx.ModelProto) else m
    base, opt = jitort.load(src, opt_level=0), jitort.load(src, opt_level=level)
    want, got = base.run_feeds(feeds), opt.run_feeds(feeds)
    for w, g in zip(want, got):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(w)))))
    result = opt.optimization(opt.signatures()[0])
    result.model = opt.ir
    result.outputs = want
    return result


def assert_idempotent(result, level, name):
    again = optimize(result.bound, level)
    assert again.hits.get(name, 0) == 0, f"{name} changed an already optimized graph"


def assert_exports(result, feeds, rtol=1e-5):
    """The optimized graph exports to a model onnx.checker and onnxruntime accept, same outputs."""
    mp = export_optimized(result.graph, result.model)
    onnx.checker.check_model(mp)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(mp.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    for w, g in zip(result.outputs, got):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(w)))))


def rand(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def bn_params(c, prefix="bn"):
    return {f"{prefix}_s": rand(c, lo=0.5, hi=1.5), f"{prefix}_b": rand(c), f"{prefix}_m": rand(c),
            f"{prefix}_v": rand(c, lo=0.5, hi=2.0)}


def conv_chain(act=None, bn=True, residual=True, n=2, c=3, m=5, hw=(7, 9), group=1, stride=1, opset=20,
               extra_outputs=(), bn_inputs=(), z_shape=None, bias=True):
    """X -> Conv -> [BN] -> [Add Z] -> [act] -> Y as a ModelProto, plus its feeds."""
    k = 3
    inits = {"w": rand(m, c // group, k, k), **({"b": rand(m)} if bias else {})}
    nodes = [helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["c"], pads=[1, 1, 1, 1],
                              strides=[stride, stride], group=group)]
    t = "c"
    if bn:
        inits.update(bn_params(m))
        nodes.append(helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["n"],
                                      epsilon=1e-3))
        t = "n"
    oh, ow = (-(-hw[0] // stride), -(-hw[1] // stride))
    inputs = [("x", F, [n, c, *hw])]
    feeds = {"x": rand(n, c, *hw)}
    if residual:
        zs = list(z_shape or (n, m, oh, ow))
        inputs.append(("z", F, zs))
        feeds["z"] = rand(*zs)
        nodes.append(helper.make_node("Add", [t, "z"], ["a"]))
        t = "a"
    if act is not None:
        nodes += act(t, "y", inits)
    else:
        nodes.append(helper.make_node("Identity", [t], ["y"]))
    for name in bn_inputs:  # BN parameters fed at run time: not constant
        inputs.append((name, F, [m]))
        feeds[name] = inits.pop(name)
    outs = [(o, F, [n, m, oh, ow]) for o in ["y", *extra_outputs]]
    return model(nodes, inputs, outs, inits=inits, opset=opset), feeds


def _unary(op, **attrs):
    return lambda t, y, inits: [helper.make_node(op, [t], [y], **attrs)]


def _clip(t, y, inits):
    inits.update(lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32))
    return [helper.make_node("Clip", [t, "lo", "hi"], [y])]


def _clip_min_only(t, y, inits):
    inits.update(lo=np.array(-0.25, np.float32))
    return [helper.make_node("Clip", [t, "lo"], [y])]


def _silu(t, y, inits):
    return [helper.make_node("Sigmoid", [t], ["sg"]), helper.make_node("Mul", ["sg", t], [y])]


ACTS = {
    "none": None,
    "Relu": _unary("Relu"),
    "Clip": _clip,
    "ClipMin": _clip_min_only,
    "LeakyRelu": _unary("LeakyRelu", alpha=0.15),
    "Sigmoid": _unary("Sigmoid"),
    "HardSigmoid": _unary("HardSigmoid", alpha=0.3, beta=0.4),
    "HardSwish": _unary("HardSwish"),
    "SiLU": _silu,
    "Gelu": _unary("Gelu"),
    "GeluTanh": _unary("Gelu", approximate="tanh"),
    "Tanh": _unary("Tanh"),
}


# -- hand-built chains ----------------------------------------------------------------------------
@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("n", [1, 2])
def test_each_activation_fuses(act, n):
    m, feeds = conv_chain(ACTS[act], n=n)
    r = run_levels(m, feeds)
    assert r.hits["fuse_conv"] == 1
    ops = r.op_counts()
    assert ops.get("jitort::FusedConv") == 1
    assert not {"Conv", "BatchNormalization", "Add", "Relu", "Sigmoid", "Mul"} & set(ops)
    fused = next(x for x in r.graph.nodes if x.op_type == "FusedConv")
    assert len(fused.inputs) == 4 and fused.attrs["activation"] == {
        "none": "", "ClipMin": "Clip", "GeluTanh": "Gelu"}.get(act, act)
    assert_idempotent(r, 2, "fuse_conv")
    assert_exports(r, feeds)


@pytest.mark.parametrize("bn,residual,act,group,stride,bias", [
    (True, False, "Relu", 1, 2, False),    # Conv + BN + Relu, strided, no conv bias
    (False, True, None, 1, 1, True),       # Conv + Add
    (False, False, "HardSwish", 3, 1, True),  # depthwise Conv + HardSwish
    (True, True, "Clip", 3, 1, True),      # depthwise, everything
])
def test_partial_chains(bn, residual, act, group, stride, bias):
    m, feeds = conv_chain(ACTS[act] if act else None, bn=bn, residual=residual, c=3, m=6 if group == 1 else 3,
                          group=group, stride=stride, bias=bias, hw=(8, 5))
    r = run_levels(m, feeds)
    assert r.hits["fuse_conv"] == 1
    assert "BatchNormalization" not in r.op_counts()
    assert_idempotent(r, 2, "fuse_conv")
    assert_exports(r, feeds)


def test_lone_conv_stays_conv():
    m, feeds = conv_chain(None, bn=False, residual=False)
    r = run_levels(m, feeds)
    assert r.hits["fuse_conv"] == 0 and r.op_counts().get("Conv") == 1


def _miss_reasons(r, pattern=None):
    return [x.reason for x in r.near_misses if pattern is None or x.pattern == pattern]


def test_guard_bn_training_outputs():
    m, feeds = conv_chain(None, bn=False, residual=False, opset=15)
    g = m.graph
    g.node.pop()  # the Identity
    g.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in bn_params(5).items())
    g.node.append(helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"],
                                   ["y", "rm", "rv"], training_mode=1))
    r = run_levels(m, feeds)
    assert r.hits["fuse_conv"] == 0 and r.op_counts().get("BatchNormalization") == 1
    assert any("training" in why for why in _miss_reasons(r, "Conv+BatchNormalization"))


def test_guard_bn_params_not_constant():
    m, feeds = conv_chain(ACTS["Relu"], residual=False, bn_inputs=["bn_v"])
    r = run_levels(m, feeds)
    assert r.op_counts().get("BatchNormalization") == 1
    assert any("not constant" in why for why in _miss_reasons(r, "Conv+BatchNormalization"))
    # the chain stops at the BN; the Relu after it is not fused into the Conv either
    assert r.op_counts().get("Conv") == 1


def test_guard_conv_output_read_elsewhere():
    m, feeds = conv_chain(ACTS["Relu"], residual=False, extra_outputs=["c"])
    r = run_levels(m, feeds)
    assert r.hits["fuse_conv"] == 0
    assert "c" in r.graph.output_names and r.op_counts().get("BatchNormalization") == 1
    m, feeds = conv_chain(ACTS["Relu"], bn=False, residual=False)
    m.graph.node.append(helper.make_node("Neg", ["c"], ["c2"]))
    m.graph.output.append(helper.make_tensor_value_info("c2", F, [2, 5, 7, 9]))
    r = run_levels(m, feeds)
    assert r.hits["fuse_conv"] == 0
    assert any("also read" in why for why in _miss_reasons(r, "Conv+activation"))


def test_guard_broadcasting_residual():
    m, feeds = conv_chain(ACTS["Relu"], z_shape=(1, 5, 1, 1))
    r = run_levels(m, feeds)
    assert r.hits["fuse_conv"] == 1  # Conv + BN fused, the broadcasting Add and the Relu are not
    fused = next(x for x in r.graph.nodes if x.op_type == "FusedConv")
    assert len(fused.inputs) == 3 and fused.attrs["activation"] == ""
    assert any("broadcasts" in why for why in _miss_reasons(r, "Conv+Add"))


def test_guard_clip_bound_not_constant():
    def clip_fed(t, y, inits):
        return [helper.make_node("Clip", [t, "", "hi"], [y])]

    m, feeds = conv_chain(clip_fed, bn=False, residual=False)
    m.graph.input.append(helper.make_tensor_value_info("hi", F, []))
    feeds["hi"] = np.array(0.5, np.float32)
    r = run_levels(m, feeds)
    assert r.hits["fuse_conv"] == 0 and r.op_counts().get("Conv") == 1
    assert any("not a constant" in why for why in _miss_reasons(r, "Conv+activation"))


def test_standalone_bn_stays_bn():
    inits = {"w": rand(4, 3, 1, 1), **bn_params(4)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"])]
    m = model(nodes, [("x", F, [1, 3, 5, 5])], [("y", F, [1, 4, 5, 5])], inits=inits)
    feeds = {"x": rand(1, 3, 5, 5)}
    r = run_levels(m, feeds)
    assert r.hits["fuse_conv"] == 1  # Conv + Relu
    fused = next(x for x in r.graph.nodes if x.op_type == "FusedConv")
    assert fused.attrs["activation"] == "Relu"
    assert r.op_counts().get("BatchNormalization") == 1
    assert_exports(r, feeds)


# -- real models ----------------------------------------------------------------------------------
def resnet_with_logits():
    """The light ResNet-50 with its pre-softmax logits as a second output (its softmax of
    near-uniform logits alone would hide errors)."""
    m = onnx.load(exported.RESNET50)
    sm = next(n for n in m.graph.node if n.op_type == "Softmax")
    m.graph.output.append(helper.make_tensor_value_info(sm.input[0], F, [1, 1000]))
    return m


@pytest.fixture(scope="module")
def resnet_level2():
    m = resnet_with_logits()
    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    feeds = {m.graph.input[0].name: x}
    return m, feeds, run_levels(m, feeds, level=2)


def test_resnet50_level2(resnet_level2):
    m, feeds, r = resnet_level2
    ops = r.op_counts()
    assert "BatchNormalization" not in ops and "Conv" not in ops and "Relu" not in ops
    assert r.hits["fuse_conv"] == 53 and ops["jitort::FusedConv"] == 53
    acts = [n.attrs["activation"] for n in r.graph.nodes if n.op_type == "FusedConv"]
    assert acts.count("Relu") == 49
    assert sum(1 for n in r.graph.nodes if n.op_type == "FusedConv" and len(n.inputs) == 4) == 16
    so = ort.SessionOptions()
    so.log_severity_level = 3
    want = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    for w, g in zip(want, r.outputs):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.max(np.abs(w)))))
    assert_idempotent(r, 2, "fuse_conv")


def test_resnet50_level2_exports(resnet_level2):
    m, feeds, r = resnet_level2
    assert_exports(r, feeds, rtol=1e-4)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 37, 45)])
def test_mobilenetish_level2(shape):
    path = exported.mobilenetish()
    feeds = {"image": np.random.default_rng(5).standard_normal(shape).astype(np.float32)}
    r = run_levels(path, feeds, level=2)
    ops = r.op_counts()
    assert r.hits["fuse_conv"] == 12 and ops.get("Conv") == 1  # read by the next block and its Add
    assert "Clip" not in ops and "Add" not in ops
    acts = sorted(n.attrs["activation"] for n in r.graph.nodes if n.op_type == "FusedConv")
    assert acts.count("Clip") == 10
    assert any("also read" in x.reason for x in r.near_misses if x.pattern == "Conv+Add")
    depthwise = [n for n in r.graph.nodes if n.op_type == "FusedConv" and n.attrs.get("group", 1) > 1]
    assert len(depthwise) == 4
    assert_idempotent(r, 2, "fuse_conv")
    assert_exports(r, feeds)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    want = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(r.outputs[0], want[0], rtol=1e-4, atol=1e-4)
