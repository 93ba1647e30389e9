"""gemm_reshape: Reshape -> Gemm -> Reshape becomes a batched MatMul (+ bias), so GPT-2's
Conv1D projections fuse with their bias and GELU."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort
from jitort.passes.pipeline import optimize
from tests import exported
from tests.exported import token_feeds
from tests.helpers import F, model

RNG = np.random.default_rng(5)


def _model(trans_b=0, alpha=1.0, with_c=True, leak=False):
    w = RNG.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)
    inits = {"w": w, "s1": np.array([-1, 4], np.int64), "s2": np.array([2, 3, 5], np.int64)}
    gemm_in = ["flat", "w"]
    if with_c:
        inits["c"] = RNG.standard_normal(5).astype(np.float32)
        gemm_in.append("c")
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["flat"]),
             helper.make_node("Gemm", gemm_in, ["g"], transB=trans_b, alpha=alpha, name="gemm"),
             helper.make_node("Reshape", ["g", "s2"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    outputs = [("y", F, [2, 3, 5])]
    if leak:  # the flattened value is also a graph output: the Reshape must stay
        outputs.append(("flat", F, [6, 4]))
    return model(nodes, [("x", F, [2, 3, 4])], outputs, inits=inits)


@pytest.mark.parametrize("trans_b,with_c", [(0, True), (1, True), (0, False)])
def test_rewrite_is_exact_counted_and_idempotent(trans_b, with_c):
    m = _model(trans_b=trans_b, with_c=with_c)
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    want = jitort.load(m, opt_level=0)(x=x)[0]
    opt = jitort.load(m, opt_level=2)
    np.testing.assert_allclose(opt(x=x)[0], want, rtol=1e-6, atol=1e-6)
    res = opt.optimization(opt.signatures()[0])
    assert res.hits["gemm_reshape"] == 1
    assert res.hits["fuse_matmul"] == 1  # MatMul (+ bias) + Relu now fuse
    assert "Gemm" not in res.op_counts()
    again = optimize(res.bound, 2)
    assert again.hits["gemm_reshape"] == 0


@pytest.mark.parametrize("kw", [dict(alpha=0.5), dict(leak=True)], ids=["alpha", "flat-used-elsewhere"])
def test_guards_leave_the_gemm(kw):
    m = _model(**kw)
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    opt = jitort.load(m, opt_level=2)
    got = opt(x=x)
    np.testing.assert_allclose(got[0], jitort.load(m, opt_level=0)(x=x)[0], rtol=1e-6, atol=1e-6)
    assert opt.optimization(opt.signatures()[0]).hits["gemm_reshape"] == 0


def test_gpt2_projections_fuse_with_bias_and_gelu():
    path = exported.gpt2()
    feeds = token_feeds(np.random.default_rng(0), 2, 9, with_token_types=False)
    want = jitort.load(path, opt_level=0)(**feeds)[0]
    opt = jitort.load(path, opt_level=2)
    np.testing.assert_allclose(opt(**feeds)[0], want, rtol=1e-5, atol=1e-5)
    res = opt.optimization(opt.signatures()[0])
    assert res.hits["gemm_reshape"] == 8  # 2 layers x (qkv, proj, fc, fc-out)
    assert res.hits["fuse_matmul"] == 8 and "Gemm" not in res.op_counts()
