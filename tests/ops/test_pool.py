"""Pooling kernels vs torch CPU (float64 oracle) and onnxruntime one-node models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from tests.ops.oracle import checker, kernel_runner, t64
from tests.ops.oracle import ort_run as _ort_run

# (rtol, atol) of a kernel output against a float64 oracle, per output dtype
TOL = {
    np.dtype(np.float16): (2e-3, 2e-3),
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float64): (1e-12, 1e-12),
}
FLOATS = [np.float32, np.float64, np.float16]
RNG = np.random.default_rng(11)
run = kernel_runner(22)
check = checker(TOL)
ort_run = _ort_run


def rand(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


POOL_CASES = [
    # (x shape, kernel, strides, pads (symmetric, per axis), dilations, ceil_mode)
    ((2, 3, 9, 11), (3, 3), (2, 2), (1, 1), (1, 1), 0),
    ((1, 2, 8, 7), (2, 3), (2, 1), (0, 1), (1, 1), 1),
    ((1, 2, 10, 9), (3, 2), (3, 2), (1, 0), (2, 1), 1),
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1), 0),
    ((3, 2, 13), (4,), (3,), (2,), (1,), 1),
    ((1, 2, 5, 6, 7), (2, 3, 2), (2, 1, 2), (1, 1, 0), (1, 1, 2), 0),
]


def _pads(p):
    return list(p) * 2


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_vs_torch(case, dtype):
    xs, k, s, p, d, ceil = case
    n = len(k)
    x = rand(xs, dtype)
    y, idx = run("MaxPool", x, nout=2, kernel_shape=list(k), strides=list(s), pads=_pads(p),
                 dilations=list(d), ceil_mode=ceil)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    ey, ei = fn(t64(x), k, s, p, d, ceil_mode=bool(ceil), return_indices=True)
    check(y, ey.numpy(), dtype)
    assert idx.dtype == np.int64
    # torch indices are per (n, c) plane; ONNX's count from the tensor's start
    plane = int(np.prod(xs[2:]))
    base = (np.arange(xs[0] * xs[1]) * plane).reshape(xs[0], xs[1], *([1] * n))
    np.testing.assert_array_equal(idx, ei.numpy() + base)
    y1 = run("MaxPool", x, kernel_shape=list(k), strides=list(s), pads=_pads(p), dilations=list(d),
             ceil_mode=ceil)
    check(y1, ey.numpy(), dtype)


def test_maxpool_storage_order_and_ints():
    x = rand((2, 3, 5, 4), np.float32)
    attrs = dict(kernel_shape=[2, 2], strides=[1, 2], pads=[1, 0, 0, 1])
    for so in (0, 1):
        ey, ei = ort_run("MaxPool", [x], dict(attrs, storage_order=so), nout=2,
                         out_elems=[onnx.TensorProto.FLOAT, onnx.TensorProto.INT64])
        y, i = run("MaxPool", x, nout=2, storage_order=so, **attrs)
        np.testing.assert_array_equal(y, ey)
        np.testing.assert_array_equal(i, ei)
    for dt in (np.int8, np.uint8):
        xi = RNG.integers(np.iinfo(dt).min, np.iinfo(dt).max, size=(1, 2, 7, 6), endpoint=True).astype(dt)
        a = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        y = run("MaxPool", xi, **a)
        assert y.dtype == dt
        np.testing.assert_array_equal(y, ort_run("MaxPool", [xi], a, opset=12))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool", "LpPool"])
def test_pool_auto_pad_vs_ort(op_type, auto_pad):
    x = rand((1, 2, 7, 8), np.float32)
    attrs = dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad=auto_pad)
    check(run(op_type, x, **attrs), ort_run(op_type, [x], attrs, opset=18), np.float32)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("case", [c for c in POOL_CASES if len(c[1]) <= 3 and max(c[4]) == 1])
def test_avgpool_vs_torch(case, include, dtype):
    xs, k, s, p, _, ceil = case
    n = len(k)
    x = rand(xs, dtype)
    y = run("AveragePool", x, kernel_shape=list(k), strides=list(s), pads=_pads(p), ceil_mode=ceil,
            count_include_pad=include)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    exp = fn(t64(x), k, s, p, ceil_mode=bool(ceil), count_include_pad=bool(include))
    check(y, exp.numpy(), dtype)


@pytest.mark.parametrize("include", [0, 1])
def test_avgpool_dilated_asym_vs_ort(include):
    x = rand((2, 3, 9, 8), np.float32)
    attrs = dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 2, 1], dilations=[2, 3],
                 count_include_pad=include)
    check(run("AveragePool", x, **attrs), ort_run("AveragePool", [x], attrs), np.float32)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_lppool_vs_torch(p):
    x = rand((2, 3, 8, 9), np.float64)
    y = run("LpPool", x, kernel_shape=[3, 2], strides=[2, 2], p=p)
    exp = F.lp_pool2d(t64(np.abs(x)), p, (3, 2), (2, 2)).numpy()
    check(y, exp, np.float64)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (2, 2, 6), (1, 2, 3, 4, 5)])
def test_global_pools_vs_torch(shape, dtype):
    x = rand(shape, dtype)
    axes = tuple(range(2, len(shape)))
    xt = t64(x)
    check(run("GlobalAveragePool", x), xt.mean(dim=axes, keepdim=True).numpy(), dtype)
    check(run("GlobalMaxPool", x), xt.amax(dim=axes, keepdim=True).numpy(), dtype)
    check(run("GlobalLpPool", x, p=3), xt.abs().pow(3).sum(dim=axes, keepdim=True).pow(1 / 3).numpy(), dtype)


def test_maxunpool_vs_torch():
    for hw in ((6, 8), (7, 5)):
        x = rand((2, 3, *hw), np.float32)
        y, idx = run("MaxPool", x, nout=2, kernel_shape=[2, 2], strides=[2, 2])
        plane = hw[0] * hw[1]
        ti = torch.from_numpy(idx - (np.arange(6) * plane).reshape(2, 3, 1, 1))
        exp = F.max_unpool2d(t64(y), ti, 2, 2, output_size=hw).numpy()
        if hw[0] % 2 == 0 and hw[1] % 2 == 0:
            check(run("MaxUnpool", y, idx, kernel_shape=[2, 2], strides=[2, 2]), exp, np.float32)
        # with output_shape = the pooled input's shape
        got = run("MaxUnpool", y, idx, np.array([2, 3, *hw], np.int64), kernel_shape=[2, 2], strides=[2, 2])
        check(got, exp, np.float32)  # (7, 5): indices exceed the inferred 6x4 planes, so address output_shape


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_vs_ort(mode, ctm, sampling_ratio):
    x = rand((2, 3, 10, 12), np.float32)
    rois = np.array([[0, 0, 9, 9], [1.5, 2.2, 7.7, 8.1], [-2, -1, 3, 4], [5, 5, 5.5, 5.2],
                     [3, 1, 14, 12]], np.float32)
    bi = np.array([0, 1, 0, 1, 1], np.int64)
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm, output_height=3, output_width=4,
                 sampling_ratio=sampling_ratio, spatial_scale=0.8)
    exp = ort_run("RoiAlign", [x, rois, bi], attrs, opset=16)
    check(run("RoiAlign", x, rois, bi, **attrs), exp, np.float32)


def test_max_roi_pool_vs_ort():
    x = rand((2, 3, 9, 10), np.float32)
    rois = np.array([[0, 0, 0, 8, 8], [1, 2.4, 1.2, 7.7, 5.1], [0, 4, 4, 4, 4], [1, 6, 2, 12, 11]], np.float32)
    attrs = dict(pooled_shape=[3, 2], spatial_scale=0.9)
    check(run("MaxRoiPool", x, rois, **attrs), ort_run("MaxRoiPool", [x, rois], attrs, opset=16), np.float32)
