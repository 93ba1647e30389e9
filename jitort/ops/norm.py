"""Normalization: BatchNormalization, InstanceNormalization, LayerNormalization, GroupNormalization,
RMSNormalization, LRN, MeanVarianceNormalization, LpNormalization.

Statistics of narrow floats (float16, bfloat16) are computed in float32 and the result cast back.
"""

from __future__ import annotations

import numpy as np

from .conv import to_work, work_dtype
from .registry import op


def _stash(x, stash_type):
    """Compute dtype: stash_type 1 means float32 (float64 inputs keep float64 precision)."""
    if int(stash_type) == 1:
        return work_dtype(x.dtype)
    return x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)


# ---------------------------------------------------------------- BatchNormalization


def _bn_infer(x, scale, b, mean, var, epsilon):
    wd = work_dtype(x.dtype)
    shp = (1, -1) + (1,) * max(x.ndim - 2, 0)
    inv = (np.asarray(scale).astype(wd) / np.sqrt(np.asarray(var).astype(wd) + wd.type(epsilon)))
    shift = np.asarray(b).astype(wd) - np.asarray(mean).astype(wd) * inv
    if inv.ndim > 1:  # spatial=0 (opset < 9): per-activation statistics of shape (C, D1, ...)
        shp = (1,) + inv.shape
    y = to_work(x) * inv.reshape(shp) + shift.reshape(shp)
    return y.astype(x.dtype, copy=False)


def _bn_train(x, scale, b, mean, var, epsilon, momentum):
    wd = work_dtype(x.dtype)
    xw = to_work(x)
    axes = (0,) + tuple(range(2, x.ndim))
    bm = xw.mean(axis=axes)
    bv = xw.var(axis=axes)
    y = _bn_infer(x, scale, b, bm, bv, epsilon)
    m = wd.type(momentum)
    run_mean = np.asarray(mean).astype(wd) * m + bm * (1 - m)
    run_var = np.asarray(var).astype(wd) * m + bv * (1 - m)
    sdt = np.asarray(mean).dtype
    return y, run_mean.astype(sdt), run_var.astype(sdt), bm.astype(sdt), bv.astype(sdt)


@op("BatchNormalization", since=1)
def batch_norm_1(ctx, x, scale, b, mean, var, *, consumed_inputs=None, epsilon=1e-5, is_test=0,
                 momentum=0.9, spatial=1):
    """Opsets 1-13: inference unless the node asks for the training outputs."""
    if ctx.num_outputs > 1:
        return _bn_train(x, scale, b, mean, var, epsilon, momentum)[:ctx.num_outputs]
    return _bn_infer(x, scale, b, mean, var, epsilon)


@op("BatchNormalization", since=14)
def batch_norm_14(ctx, x, scale, b, input_mean, input_var, *, epsilon=1e-5, momentum=0.9,
                  training_mode=0):
    if training_mode:
        return _bn_train(x, scale, b, input_mean, input_var, epsilon, momentum)[:3]
    return _bn_infer(x, scale, b, input_mean, input_var, epsilon)


# ---------------------------------------------------------------- Instance / Group / Layer / RMS


def _normalize(xw, axes, eps):
    mean = xw.mean(axis=axes, keepdims=True)
    d = xw - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + xw.dtype.type(eps))
    return d * inv, mean, inv


@op("InstanceNormalization", since=1)
def instance_norm(x, scale, b, *, consumed_inputs=None, epsilon=1e-5):
    xw = to_work(np.asarray(x))
    y, _, _ = _normalize(xw, tuple(range(2, x.ndim)), epsilon)
    shp = (1, -1) + (1,) * (x.ndim - 2)
    y = y * np.asarray(scale).astype(xw.dtype).reshape(shp) + np.asarray(b).astype(xw.dtype).reshape(shp)
    return y.astype(x.dtype, copy=False)


def _group_norm(x, scale, b, num_groups, epsilon, stash_type, per_channel):
    x = np.asarray(x)
    N, C = x.shape[:2]
    G = int(num_groups)
    cd = _stash(x, stash_type)
    xg = x.astype(cd).reshape(N, G, -1)
    y, _, _ = _normalize(xg, (2,), epsilon)
    shp = (1, -1) + (1,) * (x.ndim - 2)
    if per_channel:
        y = y.reshape(x.shape)
        y = y * np.asarray(scale).astype(cd).reshape(shp) + np.asarray(b).astype(cd).reshape(shp)
    else:  # opset 18: scale/bias per group
        y = y * np.asarray(scale).astype(cd).reshape(1, G, 1) + np.asarray(b).astype(cd).reshape(1, G, 1)
        y = y.reshape(x.shape)
    return y.astype(x.dtype)


@op("GroupNormalization", since=18)
def group_norm_18(x, scale, b, *, epsilon=1e-5, num_groups=None):
    return _group_norm(x, scale, b, num_groups, epsilon, 1, per_channel=False)


@op("GroupNormalization", since=21)
def group_norm_21(x, scale, b, *, epsilon=1e-5, num_groups=None, stash_type=1):
    return _group_norm(x, scale, b, num_groups, epsilon, stash_type, per_channel=True)


@op("LayerNormalization", since=17)
def layer_norm(ctx, x, scale, b=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    x = np.asarray(x)
    ax = axis + x.ndim if axis < 0 else axis
    cd = _stash(x, stash_type)
    xw = x.astype(cd, copy=False)
    axes = tuple(range(ax, x.ndim))
    y, mean, inv = _normalize(xw, axes, epsilon)
    y = y * np.asarray(scale).astype(cd)
    if b is not None:
        y = y + np.asarray(b).astype(cd)
    out = [y.astype(x.dtype, copy=False)]
    if ctx.num_outputs > 1:
        # Mean / InvStdDev are of type U: the stash type
        udt = np.float32 if int(stash_type) == 1 else x.dtype
        out += [mean.astype(udt), inv.astype(udt)]
    return out


@op("RMSNormalization", since=23)
def rms_norm(x, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    x = np.asarray(x)
    ax = axis + x.ndim if axis < 0 else axis
    cd = _stash(x, stash_type)
    xw = x.astype(cd, copy=False)
    ms = (xw * xw).mean(axis=tuple(range(ax, x.ndim)), keepdims=True)
    y = xw / np.sqrt(ms + cd.type(epsilon))
    y = y * np.asarray(scale).astype(cd)
    return y.astype(x.dtype, copy=False)


# ---------------------------------------------------------------- LRN / MVN / LpNormalization


@op("LRN", since=1)
def lrn(x, *, alpha=1e-4, beta=0.75, bias=1.0, size=None):
    x = np.asarray(x)
    xw = to_work(x)
    size = int(size)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = xw * xw
    C = x.shape[1]
    # windowed channel sum via a cumulative sum along channels
    cs = np.cumsum(np.pad(sq, [(0, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2)), axis=1)
    c = np.arange(C)
    top = np.minimum(c + hi, C - 1) + 1
    bot = np.maximum(c - lo, 0)
    win = cs[:, top] - cs[:, bot]
    t = xw.dtype.type
    y = xw / (t(bias) + t(alpha) / t(size) * win) ** t(beta)
    return y.astype(x.dtype, copy=False)


@op("MeanVarianceNormalization", since=9)
def mvn(x, *, axes=(0, 2, 3)):
    x = np.asarray(x)
    xw = x.astype(np.float64) if x.dtype != np.float64 else x
    axes = tuple(int(a) for a in axes)
    mean = xw.mean(axis=axes, keepdims=True)
    var = (xw * xw).mean(axis=axes, keepdims=True) - mean * mean
    y = (xw - mean) / (np.sqrt(np.maximum(var, 0)) + 1e-9)
    return y.astype(x.dtype)


@op("LpNormalization", since=1)
def lp_norm(x, *, axis=-1, p=2):
    x = np.asarray(x)
    xw = to_work(x)
    if int(p) == 1:
        norm = np.abs(xw).sum(axis=axis, keepdims=True)
    else:
        norm = np.sqrt((xw * xw).sum(axis=axis, keepdims=True))
    safe = np.where(norm == 0, xw.dtype.type(1), norm)
    y = np.where(norm == 0, xw.dtype.type(0), xw / safe)
    return y.astype(x.dtype, copy=False)
