"""The CPU backend as a whole: each lowering against the reference backend on random shapes
(odd sizes, 0- and 1-sized dims), fallbacks, memory safety of the plan, threads.

Graphs are built from jitort-domain nodes directly (the same nodes the optimizer makes), run
through ``jitort.load(..., backend="cpu", opt_level=0)`` (so exactly the node under test runs)
and compared with ``backend="reference"``.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper

import jitort
from jitort.backends.cpu import lowering
from tests.helpers import model

F = TensorProto.FLOAT
D = TensorProto.DOUBLE
J = {"jitort": 1}
RTOL = {np.dtype(np.float32): 2e-5}


def _run(m, feeds, threads=1, **opts):
    got = jitort.load(m.SerializeToString(), backend="cpu", num_threads=threads, opt_level=0, **opts)
    ref = jitort.load(m.SerializeToString(), backend="reference", opt_level=0)
    g, r = got(**feeds), ref(**feeds)
    for a, b in zip(g, r):
        assert a.shape == b.shape and a.dtype == b.dtype
        scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * scale)
    return got


def _counts(compiled):
    (variant,) = compiled._variants.values()
    return variant.plan.kernel_counts()


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# -- products ----------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("lead,M,K,N", [((), 1, 7, 5), ((), 13, 33, 70), ((2, 3), 5, 16, 17),
                                        ((), 0, 8, 4), ((), 6, 1, 1), ((4,), 9, 64, 130)])
@pytest.mark.parametrize("act", ["", "Relu", "Gelu", "GeluTanh", "Sigmoid", "LeakyRelu"])
def test_fused_matmul(threads, lead, M, K, N, act):
    rng = np.random.default_rng(M * 1000 + K + N)
    params = [0.2] if act == "LeakyRelu" else []
    extra = {"activation_params": params} if params else {}
    node = helper.make_node("FusedMatMul", ["a", "b", "bias"], ["y"], domain="jitort",
                            activation=act, alpha=0.5, **extra)
    m = model([node], [("a", F, [*lead, M, K])], [("y", F, None)],
              inits={"b": _rand(rng, K, N), "bias": _rand(rng, N)}, extra_opsets=J)
    c = _run(m, {"a": _rand(rng, *lead, M, K)}, threads)
    assert _counts(c) == {"jitort::FusedMatMul": 1}


@pytest.mark.parametrize("trans_b", [0, 1])
def test_fused_matmul_residual_and_dynamic_b(trans_b):
    """B fed at run time (packed per call), transposed; a residual of the output's shape and
    one that broadcasts."""
    rng = np.random.default_rng(3)
    M, K, N = 11, 20, 37
    bshape = [N, K] if trans_b else [K, N]
    for rshape in ([M, N], [N]):
        node = helper.make_node("FusedMatMul", ["a", "b", "", "r"], ["y"], domain="jitort",
                                transB=trans_b, activation="Relu")
        m = model([node], [("a", F, [M, K]), ("b", F, bshape), ("r", F, rshape)], [("y", F, None)],
                  extra_opsets=J)
        feeds = {"a": _rand(rng, M, K), "b": _rand(rng, *bshape), "r": _rand(rng, *rshape)}
        c = _run(m, feeds)
        assert _counts(c) == {"jitort::FusedMatMul": 1}
        feeds["b"] = _rand(rng, *bshape)  # a new B must be packed again
        _run(m, feeds)


def test_matmul_and_gemm():
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Gemm", ["h", "w2", "c"], ["y"], transB=1, alpha=2.0)]
    m = model(nodes, [("x", F, [3, 19])], [("y", F, None)],
              inits={"w1": _rand(rng, 19, 23), "w2": _rand(rng, 5, 23), "c": _rand(rng, 5)})
    c = _run(m, {"x": _rand(rng, 3, 19)}, threads=2)
    assert _counts(c) == {"MatMul": 1, "Gemm": 1}


def test_unsupported_dtype_runs_on_reference():
    rng = np.random.default_rng(5)
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", D, [3, 4])], [("y", D, None)],
              inits={"w": rng.standard_normal((4, 2))})
    c = _run(m, {"x": rng.standard_normal((3, 4))})
    assert _counts(c) == {"reference": 1}
    (variant,) = c._variants.values()
    assert "float64" in variant.plan.steps[0].why


# -- convolution ---------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", [
    dict(x=(1, 9, 11, 5), w=(7, 5, 3, 3), pads=[1, 1, 1, 1], strides=[1, 1], act="Relu"),
    dict(x=(2, 8, 8, 6), w=(4, 6, 1, 1), pads=[0, 0, 0, 0], strides=[1, 1], act=""),
    dict(x=(1, 10, 9, 3), w=(8, 3, 3, 3), pads=[0, 1, 2, 1], strides=[2, 2], act="Clip"),
    dict(x=(1, 7, 7, 12), w=(12, 1, 3, 3), pads=[1, 1, 1, 1], strides=[1, 1], act="Relu", group=12),
    dict(x=(1, 6, 6, 4), w=(5, 4, 1, 1), pads=[0, 0, 0, 0], strides=[2, 2], act="Gelu", residual=True),
    dict(x=(1, 5, 5, 3), w=(4, 3, 3, 3), pads=[1, 1, 1, 1], strides=[1, 1], act="HardSwish",
         residual=True),
])
def test_fused_conv_nhwc(threads, case):
    rng = np.random.default_rng(6)
    x, w = case["x"], case["w"]
    group = case.get("group", 1)
    params = {"Clip": [0.0, 6.0], "Gelu": [0.0]}.get(case["act"])
    kh, kw = w[2:]
    pt, pl, pb, pr = case["pads"]
    sh, sw = case["strides"]
    oh, ow = (x[1] + pt + pb - kh) // sh + 1, (x[2] + pl + pr - kw) // sw + 1
    ins = ["x", "w", "b"] + (["z"] if case.get("residual") else [])
    node = helper.make_node("FusedConv", ins, ["y"], domain="jitort", kernel_shape=[kh, kw],
                            pads=case["pads"], strides=case["strides"], group=group,
                            activation=case["act"], channels_last=1,
                            **({"activation_params": params} if params else {}))
    inputs = [("x", F, list(x))] + ([("z", F, [x[0], oh, ow, w[0]])] if case.get("residual") else [])
    m = model([node], inputs, [("y", F, None)],
              inits={"w": _rand(rng, *w), "b": _rand(rng, w[0])}, extra_opsets=J)
    feeds = {"x": _rand(rng, *x)}
    if case.get("residual"):
        feeds["z"] = _rand(rng, x[0], oh, ow, w[0])
    c = _run(m, feeds, threads)
    assert _counts(c) == {"jitort::FusedConv": 1}


# -- row kernels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(3, 5, 17), (1, 1), (4, 0, 8), (2, 130)])
def test_norms_softmax_gelu(threads, shape):
    rng = np.random.default_rng(7)
    n = shape[-1]
    nodes = [
        helper.make_node("LayerNorm", ["x", "g", "b"], ["ln"], domain="jitort", epsilon=1e-5),
        helper.make_node("SkipLayerNorm", ["ln", "x", "g", "b", "bias"], ["sln", "sum"],
                         domain="jitort", epsilon=1e-6),
        helper.make_node("RMSNorm", ["sln", "g"], ["rms"], domain="jitort"),
        helper.make_node("Gelu", ["rms"], ["ge"], domain="jitort", approximate="tanh"),
        helper.make_node("Softmax", ["ge"], ["sm"], axis=-1),
        helper.make_node("LogSoftmax", ["sm"], ["y"], axis=-1),
    ]
    m = model(nodes, [("x", F, list(shape))], [("y", F, None), ("sum", F, None)],
              inits={"g": _rand(rng, n), "b": _rand(rng, n), "bias": _rand(rng, n)}, extra_opsets=J)
    x = _rand(rng, *shape)
    x.setflags(write=False)  # a read-only input (ONNX test data comes that way) is only read
    c = _run(m, {"x": x}, threads)
    assert "reference" not in _counts(c)


def test_skip_layer_norm_broadcast_skip_and_old_softmax():
    rng = np.random.default_rng(8)
    nodes = [helper.make_node("SkipLayerNorm", ["x", "s", "g"], ["y0"], domain="jitort"),
             helper.make_node("Softmax", ["y0"], ["y"], axis=1)]  # opset 11: rows over [1, rank)
    m = model(nodes, [("x", F, [2, 3, 16]), ("s", F, [1, 3, 16])], [("y", F, None)],
              inits={"g": _rand(rng, 16)}, extra_opsets=J, opset=11)
    c = _run(m, {"x": _rand(rng, 2, 3, 16), "s": _rand(rng, 1, 3, 16)})
    assert "reference" not in _counts(c)


# -- plan behaviour --------------------------------------------------------------------------------
def _chain_model(rng):
    """MatMul -> Transpose (reference, returns a view) -> MatMul -> Relu output; the transposed
    value must not be overwritten when the arena slot of its input is reused."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Transpose", ["h"], ["t"], perm=[1, 0]),
             helper.make_node("MatMul", ["t", "w2"], ["u"]),
             helper.make_node("MatMul", ["u", "w3"], ["v"]),
             helper.make_node("Add", ["v", "t2"], ["y"]),
             helper.make_node("Transpose", ["t"], ["t2"], perm=[1, 0])]
    nodes = nodes[:4] + [nodes[5], nodes[4]]
    return model(nodes, [("x", F, [6, 6])], [("y", F, None), ("t", F, None)],
                 inits={"w1": _rand(rng, 6, 6), "w2": _rand(rng, 6, 6), "w3": _rand(rng, 6, 6)})


def test_reference_views_of_the_arena_are_safe():
    rng = np.random.default_rng(9)
    _run(_chain_model(rng), {"x": _rand(rng, 6, 6)})


def test_outputs_survive_later_calls_and_threads():
    rng = np.random.default_rng(10)
    m = _chain_model(rng)
    c = jitort.load(m.SerializeToString(), backend="cpu", num_threads=1)
    ref = jitort.load(m.SerializeToString(), backend="reference")
    xs = [_rand(rng, 6, 6) for _ in range(8)]
    first = c(x=xs[0])
    kept = [a.copy() for a in first]
    c(x=xs[1])
    for a, b in zip(first, kept):
        np.testing.assert_array_equal(a, b)
    results: dict[int, list] = {}

    def work(i):
        results[i] = [c(x=xs[i]) for _ in range(20)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, outs in results.items():
        want = ref(x=xs[i])
        for got in outs:
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_failing_lowering_falls_back_with_one_warning(monkeypatch):
    rng = np.random.default_rng(11)

    def broken(node, ctx):
        raise RuntimeError("generator bug")

    monkeypatch.setitem(lowering.LOWERINGS, ("", "MatMul"), broken)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["y"])]
    m = model(nodes, [("x", F, [4, 4])], [("y", F, None)], inits={"w": _rand(rng, 4, 4)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = _run(m, {"x": _rand(rng, 4, 4)})
    msgs = [str(w.message) for w in caught if "generator bug" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert _counts(c) == {"reference": 2}


def test_backend_is_the_default_and_reference_can_be_forced(tmp_path):
    from tests.helpers import add_relu_model

    m = add_relu_model().SerializeToString()
    assert jitort.load(m).backend.name == "cpu"
    assert jitort.load(m, backend="reference").backend.name == "reference"
    s = jitort.InferenceSession(m, providers=["JitortReferenceExecutionProvider"])
    assert s._model.backend.name == "reference"
    assert jitort.InferenceSession(m)._model.backend.name == "cpu"
    with pytest.raises(jitort.JitortError, match="device 'cuda'"):
        jitort.load(m, device="cuda")
    c = jitort.load(m, cache_dir=str(tmp_path), num_threads=1)
    assert c.backend.threads == 1 and str(tmp_path) in c.backend.cache_dir


def test_blas_is_held_to_one_thread_while_a_parallel_plan_runs(monkeypatch):
    """A 2-thread plan with a reference step (float64 MatMul: numpy's BLAS) limits BLAS to one
    thread during the call and restores it afterwards."""
    from threadpoolctl import threadpool_info

    from jitort.ops import registry

    rng = np.random.default_rng(12)
    seen = []
    entry = registry.find("MatMul", "", 13)
    kernel = entry.kernel

    def spy(*args, **kw):
        seen.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
        return kernel(*args, **kw)

    monkeypatch.setattr(entry, "kernel", spy)
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", D, [3, 4])], [("y", D, None)],
              inits={"w": rng.standard_normal((4, 2))}, opset=13)
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    c = jitort.load(m.SerializeToString(), backend="cpu", num_threads=2)
    c(x=rng.standard_normal((3, 4)))
    (variant,) = c._variants.values()
    assert variant.plan.blas_guard
    assert seen and all(n == 1 for n in seen[-1])
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


# -- pooling (NHWC) and plan-time constants --------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op,attrs", [
    ("MaxPoolNHWC", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPoolNHWC", dict(kernel_shape=[2, 3], strides=[1, 2], pads=[0, 1, 1, 0], ceil_mode=1,
                         dilations=[2, 1])),
    ("AveragePoolNHWC", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePoolNHWC", dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1],
                             count_include_pad=1, ceil_mode=1)),
    ("GlobalAveragePoolNHWC", {}),
    ("GlobalMaxPoolNHWC", {}),
])
def test_nhwc_pools(threads, op, attrs):
    rng = np.random.default_rng(13)
    for shape in [(1, 9, 11, 5), (2, 1, 4, 17), (1, 8, 8, 1)]:
        node = helper.make_node(op, ["x"], ["y"], domain="jitort", **attrs)
        m = model([node], [("x", F, list(shape))], [("y", F, None)], extra_opsets=J)
        x = _rand(rng, *shape)
        x.flat[::7] = np.nan  # max and mean must propagate NaN as the reference does
        c = _run(m, {"x": x}, threads)
        assert _counts(c) == {f"jitort::{op}": 1}


def test_constant_subgraphs_run_once_when_the_plan_is_built():
    """A weight made by ConstantOfShape (the onnx package's light models) is computed and
    packed once; the output handed back is the caller's own copy."""
    from onnx import numpy_helper

    value = numpy_helper.from_array(np.array([0.5], np.float32), "v")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["w"], value=value),
             helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("Identity", ["w"], ["w_out"])]
    m = model(nodes, [("x", F, [3, 4])], [("y", F, None), ("w_out", F, None)],
              inits={"shape": np.array([4, 6], np.int64)})
    got = jitort.load(m.SerializeToString(), backend="cpu", num_threads=1, opt_level=0)
    y, w = got(x=np.ones((3, 4), np.float32))
    np.testing.assert_allclose(y, np.full((3, 6), 2.0, np.float32))
    counts = _counts(got)
    assert counts == {"folded": 2, "MatMul": 1}, counts  # ConstantOfShape and Identity
    w[...] = 7  # must not reach the plan's constant
    y2, w2 = got(x=np.ones((3, 4), np.float32))
    np.testing.assert_allclose(y2, y)
    np.testing.assert_allclose(w2, 0.5)


def test_gemm_c_that_is_a_column_is_not_taken_for_a_bias():
    """C of shape (M, 1) with M == N broadcasts along rows: not a bias (the reference runs it)."""
    rng = np.random.default_rng(15)
    m = model([helper.make_node("Gemm", ["x", "w", "c"], ["y"])], [("x", F, [4, 3])], [("y", F, None)],
              inits={"w": _rand(rng, 3, 4), "c": _rand(rng, 4, 1)})
    c = _run(m, {"x": _rand(rng, 4, 3)})
    assert _counts(c) == {"reference": 1}


def test_an_output_that_is_an_input_is_a_copy():
    m = model([helper.make_node("Identity", ["x"], ["y"])], [("x", F, [3])], [("y", F, None)])
    x = np.arange(3, dtype=np.float32)
    (y,) = jitort.load(m.SerializeToString(), backend="cpu", opt_level=0)(x=x)
    y[0] = 9
    assert x[0] == 0
