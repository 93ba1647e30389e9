"""Resize, Upsample, GridSample, AffineGrid vs torch CPU (float64 oracle) and onnxruntime."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch.nn.functional as F

from tests.ops.oracle import checker, kernel_runner, t64
from tests.ops.oracle import ort_run as _ort_run

# (rtol, atol) of a kernel output against a float64 oracle, per output dtype
TOL = {
    np.dtype(np.float16): (5e-3, 5e-3),
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float64): (1e-10, 1e-10),
    np.dtype(np.uint8): (0, 1),
    np.dtype(np.int32): (0, 0),
}
FLOATS = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)]
RNG = np.random.default_rng(5)
run = kernel_runner(19)
check = checker(TOL)
ort_run = functools.partial(_ort_run, opset=19, initializers=True)
NONE = np.zeros((0,), np.float32)


def rand(shape, dtype):
    return RNG.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- Resize vs torch.interpolate

TORCH_MODES = [
    # (torch mode, align_corners, antialias, ONNX attrs)
    ("nearest", None, False, dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
    ("nearest-exact", None, False, dict(mode="nearest", coordinate_transformation_mode="half_pixel",
                                        nearest_mode="round_prefer_ceil")),
    ("linear", False, False, dict(mode="linear", coordinate_transformation_mode="half_pixel")),
    ("linear", True, False, dict(mode="linear", coordinate_transformation_mode="align_corners")),
    ("cubic", False, False, dict(mode="cubic", coordinate_transformation_mode="half_pixel")),
    ("cubic", True, False, dict(mode="cubic", coordinate_transformation_mode="align_corners")),
    ("linear", False, True, dict(mode="linear", antialias=1, exclude_outside=1)),
    ("cubic", False, True, dict(mode="cubic", antialias=1, exclude_outside=1, cubic_coeff_a=-0.5)),
]
SIZES = [((1, 2, 5, 7), (10, 14)), ((2, 1, 8, 9), (3, 4)), ((1, 3, 1, 6), (4, 6)), ((1, 1, 6, 6), (6, 1)),
         ((1, 2, 4, 5), (7, 3))]


# torch's antialias is a different filter when upsampling: only downsampling sizes are compared.
RESIZE_CASES = [(shape, out, tm) for shape, out in SIZES for tm in TORCH_MODES
                if not (tm[2] and (out[0] > shape[2] or out[1] > shape[3]))]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,out,tmode", RESIZE_CASES,
                         ids=[f"{s}-{o}-{m[0]}-{m[1]}-{m[2]}" for s, o, m in RESIZE_CASES])
def test_resize_sizes_vs_torch(shape, out, tmode, dtype):
    mode, ac, aa, attrs = tmode
    x = rand(shape, dtype)
    sizes = np.array([*shape[:2], *out], np.int64)
    y = run("Resize", x, None, None, sizes, **attrs)
    tm = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    exp = F.interpolate(t64(x), size=out, mode=tm, align_corners=ac, antialias=aa)
    check(y, exp.numpy(), dtype)


@pytest.mark.parametrize("mode,tm", [("linear", "linear"), ("nearest", "nearest")])
def test_resize_1d_3d_vs_torch(mode, tm):
    attrs = dict(mode=mode, coordinate_transformation_mode="asymmetric" if mode == "nearest" else "half_pixel",
                 nearest_mode="floor")
    x = rand((2, 3, 7), np.float32)
    y = run("Resize", x, None, None, np.array([2, 3, 12], np.int64), **attrs)
    check(y, F.interpolate(t64(x), size=12, mode=tm).numpy(), np.float32)
    x = rand((1, 2, 3, 4, 5), np.float32)
    y = run("Resize", x, None, None, np.array([1, 2, 6, 3, 7], np.int64), **attrs)
    tm3 = "trilinear" if mode == "linear" else "nearest"
    check(y, F.interpolate(t64(x), size=(6, 3, 7), mode=tm3).numpy(), np.float32)


ORT_CASES = [
    (dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-3.0),
     np.array([0, 0, 0.2, -0.3, 1, 1, 0.9, 1.4], np.float32), None, [1, 2, 7, 5]),
    (dict(mode="nearest", coordinate_transformation_mode="tf_crop_and_resize"),
     np.array([0, 0, 0.13, 0.21, 1, 1, 1.3, 0.8], np.float32), None, [1, 2, 5, 6]),
    (dict(mode="linear", coordinate_transformation_mode="half_pixel_symmetric"), None,
     np.array([1, 1, 0.6, 1.7], np.float32), None),
    (dict(mode="cubic", coordinate_transformation_mode="asymmetric", exclude_outside=1), None,
     np.array([1, 1, 1.5, 0.5], np.float32), None),
    (dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="round_prefer_floor"),
     None, np.array([1, 1, 2.5, 0.7], np.float32), None),
    (dict(mode="nearest", nearest_mode="ceil", coordinate_transformation_mode="align_corners"), None, None,
     [1, 2, 9, 3]),
    (dict(mode="linear", axes=[3, 2]), None, np.array([0.5, 1.5], np.float32), None),
    (dict(mode="nearest", axes=[2, 3], keep_aspect_ratio_policy="not_larger"), None, None, [9, 9]),
    (dict(mode="linear", axes=[2, 3], keep_aspect_ratio_policy="not_smaller"), None, None, [9, 9]),
]


@pytest.mark.parametrize("attrs,roi,scales,sizes", ORT_CASES)
def test_resize_modes_vs_ort(attrs, roi, scales, sizes):
    x = rand((1, 2, 6, 4), np.float32)
    sz = None if sizes is None else np.array(sizes, np.int64)
    y = run("Resize", x, roi, scales, sz, **attrs)
    exp = ort_run("Resize", [x, roi if roi is not None else NONE, scales, sz], attrs)
    check(y, exp, np.float32)


@pytest.mark.parametrize("dt", [np.uint8, np.int32])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_int_and_opset10_vs_ort(dt, mode):
    x = RNG.integers(0, 200, size=(1, 2, 5, 6)).astype(dt)
    scales = np.array([1, 1, 1.6, 0.5], np.float32)
    if not (dt == np.int32 and mode == "linear"):  # ORT: linear only on float/uint8/int8
        y = run("Resize", x, NONE, scales, mode=mode, opset=13)
        check(y, ort_run("Resize", [x, NONE, scales], dict(mode=mode), opset=13), dt)
    xf = x.astype(np.float32)
    check(run("Resize", xf, scales, mode=mode, opset=10), ort_run("Resize", [xf, scales], dict(mode=mode), opset=10),
          np.float32)
    up = np.array([1, 1, 2, 1.5], np.float32)
    check(run("Upsample", xf, up, mode=mode, opset=9), ort_run("Upsample", [xf, up], dict(mode=mode), opset=9),
          np.float32)
    check(run("Upsample", xf, mode=mode, scales=[1.0, 1.0, 2.0, 1.5], opset=7), run("Upsample", xf, up, mode=mode, opset=9),
          np.float32)


def test_resize_strings_and_empty():
    x = np.array([["a", "b"], ["c", "d"]], dtype=object).reshape(1, 1, 2, 2)
    y = run("Resize", x, None, np.array([1, 1, 2, 1.5], np.float32), mode="nearest")
    assert y.shape == (1, 1, 4, 3) and y[0, 0, 3, 2] == "d"
    y = run("Resize", rand((1, 2, 3, 4), np.float32), None, None, np.array([1, 2, 0, 4], np.int64), mode="linear")
    assert y.shape == (1, 2, 0, 4) and y.dtype == np.float32


# ---------------------------------------------------------------- GridSample / AffineGrid


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample_2d_vs_torch(mode, padding_mode, align_corners, dtype):
    x = rand((2, 3, 5, 7), dtype)
    grid = RNG.uniform(-1.4, 1.4, size=(2, 4, 6, 2)).astype(dtype)
    y = run("GridSample", x, grid, opset=22, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    tm = {"linear": "bilinear", "cubic": "bicubic"}[mode] if mode != "nearest" else "nearest"
    exp = F.grid_sample(t64(x), t64(grid), mode=tm, padding_mode=padding_mode, align_corners=bool(align_corners))
    check(y, exp.numpy(), dtype)
    if mode != "nearest":  # the opset-16 spelling
        y16 = run("GridSample", x, grid, opset=16, mode={"linear": "bilinear", "cubic": "bicubic"}[mode],
                  padding_mode=padding_mode, align_corners=align_corners)
        np.testing.assert_array_equal(y16, y)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_grid_sample_3d_vs_torch(mode, padding_mode):
    x = rand((1, 2, 4, 5, 3), np.float64)
    grid = RNG.uniform(-1.3, 1.3, size=(1, 3, 2, 4, 3))
    for ac in (0, 1):
        y = run("GridSample", x, grid, mode=mode, padding_mode=padding_mode, align_corners=ac)
        exp = F.grid_sample(t64(x), t64(grid), mode="bilinear" if mode == "linear" else mode,
                            padding_mode=padding_mode, align_corners=bool(ac))
        check(y, exp.numpy(), np.float64)


@pytest.mark.filterwarnings("ignore:Since version 1.3.0")
@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (1, 1, 1, 3), (2, 2, 3, 4, 2)])
def test_affine_grid_vs_torch(size, align_corners):
    D = len(size) - 2
    theta = RNG.standard_normal((size[0], D, D + 1)).astype(np.float32)
    y = run("AffineGrid", theta, np.array(size, np.int64), opset=20, align_corners=align_corners)
    exp = F.affine_grid(t64(theta), list(size), align_corners=bool(align_corners))
    check(y, exp.numpy(), np.float32)
