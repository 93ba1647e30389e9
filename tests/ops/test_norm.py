"""Normalization kernels vs torch CPU (float64 oracle) and onnxruntime one-node models."""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import pytest
import torch.nn.functional as F

from tests.ops.oracle import checker, kernel_runner, t64
from tests.ops.oracle import ort_run as _ort_run

BF16 = np.dtype(ml_dtypes.bfloat16)
# (rtol, atol) of a kernel output against a float64 oracle, per output dtype
TOL = {
    np.dtype(np.float16): (5e-3, 5e-3),
    BF16: (3e-2, 3e-2),
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float64): (1e-10, 1e-10),
}
FLOATS = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)]
RNG = np.random.default_rng(3)
run = kernel_runner(23)
check = checker(TOL)
ort_run = functools.partial(_ort_run, opset=18)


def rand(shape, dtype, lo=None):
    a = RNG.standard_normal(shape) if lo is None else RNG.uniform(lo, lo + 1, shape)
    return a.astype(dtype)


SHAPES = [(2, 3, 5, 4), (1, 4, 1, 1), (3, 2, 7), (2, 3, 2, 3, 2), (1, 1, 5)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_inference_vs_torch(shape, dtype):
    C = shape[1]
    x, s, b, m = rand(shape, dtype), rand((C,), dtype), rand((C,), dtype), rand((C,), dtype)
    v = rand((C,), dtype, lo=0.5)
    for opset in (9, 15):
        y = run("BatchNormalization", x, s, b, m, v, opset=opset, epsilon=1e-3)
        exp = F.batch_norm(t64(x), t64(m), t64(v), t64(s), t64(b), training=False, eps=1e-3)
        check(y, exp.numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)])
def test_batchnorm_training_vs_torch(dtype):
    x = rand((4, 3, 5, 2), dtype)
    s, b, m = rand((3,), dtype), rand((3,), dtype), rand((3,), dtype)
    v = rand((3,), dtype, lo=0.5)
    y, rm, rv = run("BatchNormalization", x, s, b, m, v, nout=3, training_mode=1, momentum=0.8)
    tm, tv = t64(m).clone(), t64(v).clone()
    exp = F.batch_norm(t64(x), tm, tv, t64(s), t64(b), training=True, momentum=0.2, eps=1e-5)
    check(y, exp.numpy(), dtype)
    check(rm, tm.numpy(), dtype)
    # ONNX's running variance uses the biased batch variance (torch: unbiased)
    bv = x.astype(np.float64).var(axis=(0, 2, 3))
    check(rv, v.astype(np.float64) * 0.8 + bv * 0.2, dtype)
    y2 = run("BatchNormalization", x, s, b, m, v, nout=1, training_mode=1)
    check(y2, exp.numpy(), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [s for s in SHAPES if len(s) > 2])
def test_instancenorm_vs_torch(shape, dtype):
    C = shape[1]
    x, s, b = rand(shape, dtype), rand((C,), dtype), rand((C,), dtype)
    y = run("InstanceNormalization", x, s, b, epsilon=1e-4)
    if np.prod(shape[2:]) == 1:  # torch refuses; a single element normalizes to 0
        exp = np.broadcast_to(b.astype(np.float64).reshape(1, C, 1, 1), shape)
    else:
        exp = F.instance_norm(t64(x), weight=t64(s), bias=t64(b), eps=1e-4).numpy()
    check(y, exp, dtype)


@pytest.mark.parametrize("dtype", FLOATS + [BF16])
@pytest.mark.parametrize("shape,axis", [((2, 3, 5), -1), ((2, 3, 5), 1), ((4, 7), 0), ((3, 1, 1, 6), -2), ((5,), 0)])
def test_layernorm_vs_torch(shape, axis, dtype):
    ax = axis % len(shape)
    ns = shape[ax:]
    x, s, b = rand(shape, dtype), rand(ns, dtype), rand(ns, dtype)
    y, mean, inv = run("LayerNormalization", x, s, b, nout=3, axis=axis, epsilon=1e-5)
    exp = F.layer_norm(t64(x), ns, t64(s), t64(b), eps=1e-5)
    check(y, exp.numpy(), dtype)
    xd = x.astype(np.float64)
    axes = tuple(range(ax, len(shape)))
    assert mean.dtype == np.float32 and mean.shape == shape[:ax] + (1,) * len(ns)
    np.testing.assert_allclose(mean, xd.mean(axis=axes, keepdims=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inv, 1 / np.sqrt(xd.var(axis=axes, keepdims=True) + 1e-5), rtol=1e-3)
    y_nb = run("LayerNormalization", x, s, axis=axis)
    check(y_nb, F.layer_norm(t64(x), ns, t64(s), None, eps=1e-5).numpy(), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,groups", [((2, 6, 4, 3), 3), ((1, 4, 5), 2), ((2, 3, 2, 2, 2), 1), ((1, 4, 1, 1), 4)])
def test_groupnorm_vs_torch(shape, groups, dtype):
    C = shape[1]
    x, s, b = rand(shape, dtype), rand((C,), dtype), rand((C,), dtype)
    y = run("GroupNormalization", x, s, b, opset=21, num_groups=groups, epsilon=1e-5)
    if np.prod(shape[1:]) == groups:  # torch refuses one value per group: it normalizes to 0
        check(y, np.broadcast_to(b.astype(np.float64).reshape(1, C, 1, 1), shape), dtype)
        return
    check(y, F.group_norm(t64(x), groups, t64(s), t64(b), eps=1e-5).numpy(), dtype)
    # opset 18: scale and bias are per group
    sg, bg = rand((groups,), dtype), rand((groups,), dtype)
    y18 = run("GroupNormalization", x, sg, bg, opset=18, num_groups=groups, epsilon=1e-5)
    rep = C // groups
    exp = F.group_norm(t64(x), groups, t64(np.repeat(sg, rep)), t64(np.repeat(bg, rep)), eps=1e-5)
    check(y18, exp.numpy(), dtype)


@pytest.mark.parametrize("dtype", FLOATS + [BF16])
@pytest.mark.parametrize("shape,axis", [((2, 3, 8), -1), ((2, 3, 4), 1), ((6,), 0)])
def test_rmsnorm_vs_torch(shape, axis, dtype):
    ax = axis % len(shape)
    ns = shape[ax:]
    x, s = rand(shape, dtype), rand(ns, dtype)
    y = run("RMSNormalization", x, s, axis=axis, epsilon=1e-6)
    check(y, F.rms_norm(t64(x), ns, t64(s), eps=1e-6).numpy(), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_lrn_vs_torch(size, dtype):
    x = rand((2, 6, 4, 3), dtype)
    y = run("LRN", x, size=size, alpha=2e-3, beta=0.7, bias=1.5)
    if size % 2 == 0:  # torch centres even windows the other way (and ORT rejects them)
        xd = x.astype(np.float64)
        sq = np.pad(xd * xd, [(0, 0), ((size - 1) // 2, size // 2), (0, 0), (0, 0)])
        win = sum(sq[:, i:i + 6] for i in range(size))
        exp = xd / (1.5 + 2e-3 / size * win) ** 0.7
    else:
        exp = F.local_response_norm(t64(x), size, alpha=2e-3, beta=0.7, k=1.5).numpy()
    check(y, exp, dtype)


@pytest.mark.parametrize("axes", [[0, 2, 3], [1], [2, 3]])
def test_mvn_vs_ort(axes):
    x = rand((2, 3, 4, 5), np.float32)
    check(run("MeanVarianceNormalization", x, axes=axes), ort_run("MeanVarianceNormalization", [x], dict(axes=axes)),
          np.float32)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_lpnorm_vs_torch(p, axis, dtype):
    x = rand((3, 4, 5), dtype)
    x[0, 0] = 0  # a zero row normalizes to zeros
    y = run("LpNormalization", x, p=p, axis=axis)
    check(y, F.normalize(t64(x), p=p, dim=axis, eps=0).nan_to_num(0.0).numpy(), dtype)
