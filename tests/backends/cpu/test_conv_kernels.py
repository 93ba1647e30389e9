"""NHWC conv kernels (jitort.backends.cpu.conv) against the registry's FusedConv reference
kernel (channels_last=1) evaluated in float64.

Every case builds one plan (a GEMM and maybe an epilogue/depthwise kernel compile), so the cases
are chosen to cover together: the three paths (1x1 GEMM, im2col + GEMM, depthwise), H/W of 1, 7,
13, C of 3 and 17, O of 1, 5, 33, strides 1-2, asymmetric pads, dilation 2, every activation
(fused into the GEMM and as a separate pass), bias, residual, 1 and 2 threads, 0-sized dims.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from jitort.backends.cpu.conv import ConvPlan
from jitort.ops.registry import find

REF = find("FusedConv", "jitort", 1).kernel
RTOL = 3e-5  # float32, per element, relative to the magnitude of the terms summed there
INF = math.inf

# x NHWC, w OIHW, strides, pads (t, l, b, r), dilations, group, activation, params, bias, residual, threads
CASES = [
    ((2, 7, 13, 3), (5, 3, 3, 3), (1, 2), (1, 0, 2, 1), (2, 1), 1, "Sigmoid", (), True, True, 1),
    ((1, 13, 7, 17), (33, 17, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "Relu", (), True, False, 2),
    ((1, 13, 13, 17), (33, 17, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, "Gelu", (0,), True, False, 2),
    ((3, 1, 1, 3), (1, 3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "", (), False, True, 1),
    ((1, 7, 7, 3), (5, 3, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, "Clip", (0, 6), True, True, 1),
    ((1, 7, 13, 17), (5, 17, 3, 1), (1, 1), (0, 2, 1, 0), (2, 2), 1, "LeakyRelu", (0.1,), False, True, 2),
    ((1, 13, 7, 3), (33, 3, 2, 3), (1, 2), (0, 1, 1, 0), (1, 1), 1, "HardSigmoid", (0.2, 0.5), True, False, 1),
    ((2, 7, 7, 17), (5, 17, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "Tanh", (), True, True, 2),
    ((1, 13, 13, 3), (33, 3, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, "SiLU", (), True, False, 2),
    ((1, 13, 7, 3), (33, 3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "Gelu", (1,), False, True, 1),
    ((1, 7, 7, 17), (1, 17, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Clip", (-INF, 0.5), True, False, 1),
    ((1, 1, 1, 3), (5, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "HardSwish", (), True, True, 1),
    # depthwise
    ((1, 13, 7, 17), (17, 1, 3, 3), (2, 1), (1, 1, 0, 2), (1, 2), 17, "HardSwish", (), True, True, 2),
    ((2, 7, 13, 3), (3, 1, 3, 3), (1, 1), (1, 1, 1, 1), (2, 2), 3, "Gelu", (0,), False, False, 1),
    ((1, 1, 1, 17), (17, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 17, "Sigmoid", (), True, False, 1),
    ((1, 13, 13, 33), (33, 1, 5, 5), (2, 2), (2, 1, 2, 2), (1, 1), 33, "Relu", (), True, True, 2),
    ((1, 7, 7, 17), (17, 1, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 17, "", (), False, False, 1),
    # 0-sized dims
    ((0, 7, 7, 3), (5, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Relu", (), True, True, 1),
    ((1, 0, 7, 3), (5, 3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "Tanh", (), True, False, 1),
    ((1, 7, 7, 3), (0, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "", (), True, False, 1),
    ((1, 7, 7, 0), (5, 0, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Sigmoid", (), True, False, 1),
    ((0, 7, 7, 3), (3, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3, "Relu", (), True, False, 2),
]


def _ref(x, w, b, z, plan, ws, strides, pads, dil, group, act, params):
    kw = dict(dilations=list(dil), group=group, kernel_shape=list(ws[2:]), pads=list(pads),
              strides=list(strides), channels_last=1)
    f64 = [None if a is None else a.astype(np.float64) for a in (x, w, b, z)]
    y = REF(*f64, activation=act, activation_params=list(params), **kw)
    a64 = [None if a is None else np.abs(a) for a in f64]
    scale = REF(*a64, activation="", activation_params=[], **kw)  # magnitude of the summed terms
    return y, scale


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-g{c[5]}-{c[6] or 'none'}-t{c[10]}")
def test_conv_matches_reference(case):
    xs, ws, strides, pads, dil, group, act, params, has_b, has_z, threads = case
    rng = np.random.default_rng(CASES.index(case))
    plan = ConvPlan(xs, ws, strides, pads, dil, group, act, params, has_b, has_z, threads)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if has_b else None
    z = rng.standard_normal(plan.y_shape).astype(np.float32) if has_z else None
    packed = plan.pack_weights(w, b)
    want, scale = _ref(x, w, b, z, plan, ws, strides, pads, dil, group, act, params)
    assert plan.y_shape == want.shape
    for _ in range(2):  # a second call reuses the patch buffer and must give the same result
        got = plan(x, packed, residual=z)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_array_less(np.abs(got - want), RTOL * scale + 1e-6)
    out = np.full(plan.y_shape, np.nan, np.float32)
    assert plan(x, packed, out=out, residual=z) is out
    np.testing.assert_array_equal(out, got)


def test_paths():
    assert ConvPlan((1, 7, 7, 3), (5, 3, 1, 1)).kind == "gemm"
    assert ConvPlan((1, 7, 7, 3), (5, 3, 1, 1), strides=(2, 2)).kind == "im2col"
    assert ConvPlan((1, 7, 7, 3), (3, 1, 3, 3), group=3).kind == "depthwise"


def test_errors():
    with pytest.raises(NotImplementedError, match="grouped"):
        ConvPlan((1, 7, 7, 4), (4, 2, 3, 3), group=2)
    with pytest.raises(ValueError, match="channels"):
        ConvPlan((1, 7, 7, 4), (4, 3, 3, 3))
    with pytest.raises(ValueError, match="activation"):
        ConvPlan((1, 7, 7, 3), (5, 3, 1, 1), activation="Elu")
    with pytest.raises(ValueError, match="params"):
        ConvPlan((1, 7, 7, 3), (5, 3, 1, 1), activation="Clip", activation_params=(0,))
    with pytest.raises(ValueError, match="does not fit"):
        ConvPlan((1, 2, 2, 3), (5, 3, 3, 3))
    plan = ConvPlan((1, 7, 7, 3), (5, 3, 1, 1), has_bias=True)
    with pytest.raises(ValueError, match="B must be"):
        plan.pack_weights(np.zeros((5, 3, 1, 1), np.float32))
    packed = plan.pack_weights(np.zeros((5, 3, 1, 1), np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="float32"):
        plan(np.zeros((1, 7, 7, 3)), packed)
    with pytest.raises(ValueError, match="residual"):
        plan(np.zeros((1, 7, 7, 3), np.float32), packed, residual=np.zeros((1, 7, 7, 5), np.float32))
