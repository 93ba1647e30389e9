"""Conv, ConvTranspose, DeformConv, Col2Im kernels vs torch CPU (float64 oracle) and onnxruntime."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch.nn.functional as F

from tests.ops.oracle import checker, kernel_runner, t64
from tests.ops.oracle import ort_run as _ort_run

# (rtol, atol) of a kernel output against a float64 oracle, per output dtype
TOL = {
    np.dtype(np.float16): (1e-2, 1e-2),
    np.dtype(np.float32): (1e-4, 1e-4),
    np.dtype(np.float64): (1e-10, 1e-10),
}
FLOATS = [np.float32, np.float64, np.float16]
RNG = np.random.default_rng(7)
run = kernel_runner(22)
check = checker(TOL)
ort_run = functools.partial(_ort_run, opset=19)


def rand(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


def torch_conv(x, w, b, stride, pad_b, pad_e, dil, groups):
    n = x.ndim - 2
    xt = t64(x)
    if any(pad_b) or any(pad_e):
        widths = []
        for i in reversed(range(n)):
            widths += [pad_b[i], pad_e[i]]
        xt = F.pad(xt, widths)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    return fn(xt, t64(w), None if b is None else t64(b), stride=stride, dilation=dil, groups=groups).numpy()


CONV_CASES = [
    # (x shape, M, kernel, strides, pads (begin+end), dilations, group)
    ((2, 3, 9, 11), 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 4, 8, 7), 6, (3, 2), (2, 3), (0, 1, 2, 0), (1, 2), 2),
    ((1, 6, 10, 10), 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 6),   # depthwise
    ((2, 4, 7, 9), 8, (3, 3), (1, 2), (1, 0, 1, 2), (2, 1), 4),     # depthwise, multiplier 2
    ((1, 5, 1, 1), 3, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # 1x1 on 1x1
    ((3, 8, 6, 5), 4, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 2),      # strided 1x1, groups
    ((2, 3, 13), 4, (5,), (3,), (2, 1), (2,), 1),                   # 1-D
    ((1, 2, 5, 6, 7), 4, (3, 2, 3), (1, 2, 1), (1, 0, 1, 1, 1, 0), (1, 1, 2), 2),  # 3-D
    ((1, 3, 4, 4), 2, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1),      # kernel larger than input
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_vs_torch(case, dtype):
    xs, M, k, s, p, d, g = case
    n = len(k)
    x = rand(xs, dtype)
    w = rand((M, xs[1] // g, *k), dtype)
    b = rand((M,), dtype)
    got = run("Conv", x, w, b, strides=list(s), pads=list(p), dilations=list(d), group=g,
              kernel_shape=list(k))
    exp = torch_conv(x, w, b, s, p[:n], p[n:], d, g)
    check(got, exp, dtype)
    got_nb = run("Conv", x, w, strides=list(s), pads=list(p), dilations=list(d), group=g)
    check(got_nb, exp - b.astype(np.float64).reshape(1, M, *([1] * n)), dtype)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("xs,k,s,d", [((1, 2, 7, 8), (3, 4), (2, 3), (1, 1)),
                                      ((2, 3, 6, 5), (2, 3), (1, 1), (2, 1)),
                                      ((1, 2, 9), (4,), (2,), (1,))])
def test_conv_auto_pad_vs_ort(auto_pad, xs, k, s, d):
    x = rand(xs, np.float32)
    w = rand((3, xs[1], *k), np.float32)
    attrs = dict(auto_pad=auto_pad, strides=list(s), dilations=list(d))
    got = run("Conv", x, w, **attrs)
    # the spec's padding arithmetic, done here independently, then torch
    pb, pe = [], []
    for i, L in enumerate(xs[2:]):
        ek = (k[i] - 1) * d[i] + 1
        if auto_pad == "VALID":
            pb.append(0), pe.append(0)
            continue
        out = -(-L // s[i])
        total = max(0, (out - 1) * s[i] + ek - L)
        small = total // 2
        pb.append(small if auto_pad == "SAME_UPPER" else total - small)
        pe.append(total - pb[-1])
    check(got, torch_conv(x, w, None, s, pb, pe, d, 1), np.float32)
    if max(d) == 1:  # onnxruntime rejects dilations with SAME_*
        check(got, ort_run("Conv", [x, w], attrs), np.float32)


def test_conv_empty_batch_and_bf16():
    import ml_dtypes
    x = np.zeros((0, 3, 5, 5), np.float32)
    w = rand((4, 3, 3, 3), np.float32)
    y = run("Conv", x, w, pads=[1, 1, 1, 1])
    assert y.shape == (0, 4, 5, 5) and y.dtype == np.float32
    bf = np.dtype(ml_dtypes.bfloat16)
    xb, wb = rand((1, 3, 6, 6), np.float32).astype(bf), rand((2, 3, 3, 3), np.float32).astype(bf)
    y = run("Conv", xb, wb)
    assert y.dtype == bf
    exp = torch_conv(xb.astype(np.float32), wb.astype(np.float32), None, (1, 1), (0, 0), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(y.astype(np.float64), exp, rtol=3e-2, atol=3e-2 * np.abs(exp).max())


# ---------------------------------------------------------------- ConvTranspose

CT_CASES = [
    # (x shape, M per group, kernel, strides, pads, dilations, group, output_padding)
    ((2, 3, 5, 4), 2, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, (1, 0)),
    ((1, 4, 3, 6), 3, (2, 3), (3, 1), (0, 1, 0, 1), (2, 1), 2, (2, 0)),
    ((1, 2, 7), 4, (3,), (2,), (1, 1), (1,), 1, (1,)),
    ((1, 2, 3, 2, 4), 1, (2, 2, 3), (1, 2, 2), (0, 0, 1, 0, 0, 1), (1, 1, 1), 2, (0, 1, 1)),
    ((1, 3, 1, 1), 2, (4, 4), (2, 2), (0, 0, 0, 0), (1, 1), 1, (0, 0)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CT_CASES)
def test_conv_transpose_vs_torch(case, dtype):
    xs, mg, k, s, p, d, g, op_ = case
    n = len(k)
    x = rand(xs, dtype)
    w = rand((xs[1], mg, *k), dtype)
    b = rand((mg * g,), dtype)
    got = run("ConvTranspose", x, w, b, strides=list(s), pads=list(p), dilations=list(d), group=g,
              output_padding=list(op_))
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
    # torch pads symmetrically only: compute unpadded, then crop ONNX's begin/end pads.
    full = fn(t64(x), t64(w), t64(b), stride=s, padding=0, output_padding=op_, groups=g, dilation=d).numpy()
    crop = (slice(None), slice(None)) + tuple(slice(p[i], full.shape[2 + i] - p[n + i]) for i in range(n))
    check(got, full[crop], dtype)


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 2], output_shape=[10, 8]),
    dict(strides=[2, 2], output_shape=[9, 7], auto_pad="SAME_UPPER"),
    dict(strides=[3, 2], auto_pad="SAME_UPPER"),
    dict(strides=[3, 2], auto_pad="SAME_LOWER"),
    dict(strides=[1, 2], pads=[0, 1, 2, 0], output_padding=[0, 1]),
    dict(strides=[2, 1], dilations=[2, 2], pads=[1, 0, 0, 1]),
])
def test_conv_transpose_shapes_vs_ort(attrs):
    x = rand((1, 2, 4, 4), np.float32)
    w = rand((2, 3, 3, 3), np.float32)
    exp = ort_run("ConvTranspose", [x, w], attrs)
    check(run("ConvTranspose", x, w, **attrs), exp, np.float32)


# ---------------------------------------------------------------- Col2Im / DeformConv


@pytest.mark.parametrize("image,block,d,p,s", [
    ((5, 6), (2, 3), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((7, 5), (3, 2), (2, 1), (1, 0, 1, 2), (2, 1)),
    ((4, 4), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
])
def test_col2im_vs_torch_fold(image, block, d, p, s):
    C = 3
    pb, pe = p[:2], p[2:]
    nb = [(image[i] + pb[i] + pe[i] - d[i] * (block[i] - 1) - 1) // s[i] + 1 for i in range(2)]
    x = rand((2, C * block[0] * block[1], nb[0] * nb[1]), np.float32)
    got = run("Col2Im", x, np.array(image, np.int64), np.array(block, np.int64), dilations=list(d),
              pads=list(p), strides=list(s))
    if pb == pe:
        exp = F.fold(t64(x), image, block, dilation=d, padding=pb, stride=s).numpy()
    else:  # fold onto the padded image, then crop
        full = [image[i] + pb[i] + pe[i] for i in range(2)]
        exp = F.fold(t64(x), full, block, dilation=d, stride=s).numpy()
        exp = exp[:, :, pb[0]:pb[0] + image[0], pb[1]:pb[1] + image[1]]
    check(got, exp, np.float32)


def test_deform_conv_zero_offset_is_conv():
    x = rand((2, 4, 7, 6), np.float64)
    w = rand((6, 2, 3, 3), np.float64)
    b = rand((6,), np.float64)
    oh, ow = 4, 3
    off = np.zeros((2, 2 * 2 * 9, oh, ow))
    attrs = dict(strides=[2, 2], pads=[1, 1, 1, 1], group=2, offset_group=2)
    got = run("DeformConv", x, w, off, b, **attrs)
    exp = run("Conv", x, w, b, strides=[2, 2], pads=[1, 1, 1, 1], group=2)
    check(got, exp, np.float64)
    mask = RNG.uniform(size=(2, 2 * 9, oh, ow))
    got_m = run("DeformConv", x, w, off, None, mask, **attrs)
    assert got_m.shape == exp.shape and not np.allclose(got_m, exp)


def test_deform_conv_vs_ort():
    x = rand((1, 2, 5, 5), np.float32)
    w = rand((3, 2, 2, 2), np.float32)
    off = RNG.uniform(-1.5, 1.5, size=(1, 2 * 4, 4, 4)).astype(np.float32)
    mask = RNG.uniform(size=(1, 4, 4, 4)).astype(np.float32)
    b = rand((3,), np.float32)
    exp = ort_run("DeformConv", [x, w, off, b, mask], {}, opset=19)
    check(run("DeformConv", x, w, off, b, mask), exp, np.float32)
