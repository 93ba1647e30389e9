"""Pooling: MaxPool (+Indices), AveragePool, LpPool, Global*Pool, MaxUnpool, MaxRoiPool, RoiAlign.

Window reductions are separable (one axis at a time, a loop over that axis' taps on strided
slices), so a k x k pool costs 2k vectorized passes. Only MaxPool's Indices output walks all taps.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .conv import pad_spatial, tap_slices, to_work, window_geometry
from .registry import op


def _pad_value(dt: np.dtype):
    if dt.kind in "iu":
        return np.iinfo(dt).min
    return -np.inf


def _separable(xp, out, s, d, kernel, ufunc):
    """Reduce every window of the padded array xp (trailing len(kernel) axes) with ufunc."""
    n = len(kernel)
    lead = xp.ndim - n
    y = xp
    for ax in range(n):
        axis = lead + ax
        acc = None
        for t in range(kernel[ax]):
            sl = [slice(None)] * y.ndim
            sl[axis] = slice(t * d[ax], t * d[ax] + (out[ax] - 1) * s[ax] + 1, s[ax])
            v = y[tuple(sl)]
            if acc is None:
                acc = v.copy()
            else:
                ufunc(acc, v, out=acc)
        y = acc
    return y


def _prep(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    kernel = [int(k) for k in kernel_shape]
    out, pb, pe, pe_exp, s, d = window_geometry(x.shape[2:], kernel, strides, dilations, pads,
                                                auto_pad, bool(ceil_mode))
    return kernel, out, pb, pe, pe_exp, s, d


def _empty_result(x, out):
    return any(o <= 0 for o in out) or x.shape[0] == 0 or x.shape[1] == 0


# ---------------------------------------------------------------- MaxPool


@op("MaxPool", since=1)
def max_pool(ctx, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None):
    x = np.asarray(x)
    kernel, out, pb, pe, _, s, d = _prep(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    out = [max(o, 0) for o in out]
    want_idx = ctx.num_outputs > 1
    if _empty_result(x, out):
        y = np.zeros((*x.shape[:2], *out), x.dtype)
        return (y, np.zeros(y.shape, np.int64)) if want_idx else y
    wd = x.dtype if x.dtype.kind in "iuf" else np.dtype(np.float32)
    xw = x.astype(wd, copy=False)
    xp = pad_spatial(xw, pb, pe, _pad_value(wd))
    if not want_idx:
        return _separable(xp, out, s, d, kernel, np.maximum).astype(x.dtype, copy=False)
    n = len(kernel)
    sp = x.shape[2:]
    # flat spatial index of input position, row-major (storage_order 0) or column-major (1)
    mult = [math.prod(sp[i + 1:]) for i in range(n)] if not storage_order else [math.prod(sp[:i]) for i in range(n)]
    best = idx = None
    for tap in itertools.product(*(range(k) for k in kernel)):
        v = xp[tap_slices(out, s, d, tap, 2)]
        flat = 0
        for i in range(n):
            pos = np.arange(out[i]) * s[i] - pb[i] + tap[i] * d[i]
            flat = np.add.outer(flat, pos * mult[i]) if i else pos * mult[i]
        if best is None:
            best = v.copy()
            idx = np.broadcast_to(flat, v.shape).copy()
        else:
            better = v > best
            np.copyto(best, v, where=better)
            np.copyto(idx, np.broadcast_to(flat, v.shape), where=better)
    nc = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[0], x.shape[1], *([1] * n))
    idx = idx.astype(np.int64) + nc * math.prod(sp)
    return best.astype(x.dtype, copy=False), idx


# ---------------------------------------------------------------- AveragePool / LpPool


def _axis_counts(out, s, d, k, lo, hi, b):
    """Per-axis number of window taps landing in [lo, hi) (positions relative to the unpadded input)."""
    pos = np.arange(out)[:, None] * s - b + np.arange(k)[None, :] * d
    return ((pos >= lo) & (pos < hi)).sum(axis=1)


def _window_sum(x, kernel, out, pb, pe, s, d):
    xp = pad_spatial(x, pb, pe, 0)
    return _separable(xp, out, s, d, kernel, np.add)


@op("AveragePool", since=1)
def average_pool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=None, pads=None, strides=None):
    x = np.asarray(x)
    kernel, out, pb, pe, pe_exp, s, d = _prep(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if _empty_result(x, out):
        return np.zeros((*x.shape[:2], *[max(o, 0) for o in out]), x.dtype)
    xw = to_work(x)
    total = _window_sum(xw, kernel, out, pb, pe, s, d)
    sp = x.shape[2:]
    cnt = np.ones((), np.int64)
    for i in range(len(kernel)):
        if count_include_pad:
            c = _axis_counts(out[i], s[i], d[i], kernel[i], -pb[i], sp[i] + pe_exp[i], pb[i])
        else:
            c = _axis_counts(out[i], s[i], d[i], kernel[i], 0, sp[i], pb[i])
        cnt = np.multiply.outer(cnt, c)
    y = total / np.maximum(cnt, 1).astype(xw.dtype)
    return y.astype(x.dtype, copy=False)


def _lp(x, p):
    p = float(p)
    a = np.abs(x)
    if p == 2.0:
        return a * a
    if p == 1.0:
        return a
    return a ** a.dtype.type(p)


def _root(v, p):
    p = float(p)
    if p == 2.0:
        return np.sqrt(v)
    if p == 1.0:
        return v
    return v ** v.dtype.type(1.0 / p)


@op("LpPool", since=1)
def lp_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None,
            strides=None):
    x = np.asarray(x)
    kernel, out, pb, pe, _, s, d = _prep(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if _empty_result(x, out):
        return np.zeros((*x.shape[:2], *[max(o, 0) for o in out]), x.dtype)
    xw = to_work(x)
    total = _window_sum(_lp(xw, p), kernel, out, pb, pe, s, d)
    return _root(total, p).astype(x.dtype, copy=False)


# ---------------------------------------------------------------- Global pools


def _spatial_axes(x):
    return tuple(range(2, x.ndim))


@op("GlobalAveragePool", since=1)
def global_average_pool(x):
    x = np.asarray(x)
    return np.mean(to_work(x), axis=_spatial_axes(x), keepdims=True).astype(x.dtype, copy=False)


@op("GlobalMaxPool", since=1)
def global_max_pool(x):
    x = np.asarray(x)
    xw = x if x.dtype.kind in "iuf" else x.astype(np.float32)
    return np.max(xw, axis=_spatial_axes(x), keepdims=True).astype(x.dtype, copy=False)


@op("GlobalLpPool", since=1)
def global_lp_pool(x, *, p=2):
    x = np.asarray(x)
    total = np.sum(_lp(to_work(x), p), axis=_spatial_axes(x), keepdims=True)
    return _root(total, p).astype(x.dtype, copy=False)


# ---------------------------------------------------------------- MaxUnpool


@op("MaxUnpool", since=9)
def max_unpool(x, indices, output_shape=None, *, kernel_shape=None, pads=None, strides=None):
    x = np.asarray(x)
    n = x.ndim - 2
    kernel = [int(k) for k in kernel_shape]
    s = [int(v) for v in strides] if strides else [1] * n
    p = [int(v) for v in pads] if pads else [0] * (2 * n)
    inferred = (*x.shape[:2], *[(i - 1) * st + k - p[j] - p[n + j]
                                for j, (i, st, k) in enumerate(zip(x.shape[2:], s, kernel))])
    idx = np.asarray(indices, np.int64).reshape(-1)
    shape = inferred if output_shape is None else tuple(int(v) for v in np.asarray(output_shape).reshape(-1))
    if output_shape is not None and idx.size and idx.max() >= math.prod(inferred):
        # indices can only address output_shape (MaxPool of an input of that shape): onnxruntime's reading
        y = np.zeros(math.prod(shape), x.dtype)
        y[idx] = x.reshape(-1)
        return y.reshape(shape)
    y = np.zeros(math.prod(inferred), x.dtype)
    y[idx] = x.reshape(-1)
    y = y.reshape(inferred)
    if output_shape is None:
        return y
    # ONNX's reference (and its conformance data) scatter into the inferred shape and place it at
    # output_shape's origin; onnxruntime scatters into output_shape. We follow the conformance data.
    res = np.zeros(shape, x.dtype)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(inferred, shape))
    res[sl] = y[sl]
    return res


# ---------------------------------------------------------------- MaxRoiPool / RoiAlign


@op("MaxRoiPool", since=1)
def max_roi_pool(x, rois, *, pooled_shape=None, spatial_scale=1.0):
    x = np.asarray(x)
    rois = np.asarray(rois)
    ph, pw = (int(v) for v in pooled_shape)
    C, H, W = x.shape[1:]
    y = np.zeros((rois.shape[0], C, ph, pw), x.dtype)
    xw = x if x.dtype.kind == "f" and x.dtype.itemsize >= 2 else x.astype(np.float32)
    for r, roi in enumerate(rois.astype(np.float64)):
        b = int(roi[0])
        x1, y1, x2, y2 = (int(np.round(v * spatial_scale)) for v in roi[1:5])
        rh, rw = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        bh, bw = rh / ph, rw / pw
        hs = np.clip(np.floor(np.arange(ph) * bh).astype(int) + y1, 0, H)
        he = np.clip(np.ceil((np.arange(ph) + 1) * bh).astype(int) + y1, 0, H)
        ws = np.clip(np.floor(np.arange(pw) * bw).astype(int) + x1, 0, W)
        we = np.clip(np.ceil((np.arange(pw) + 1) * bw).astype(int) + x1, 0, W)
        for i in range(ph):
            if he[i] <= hs[i]:
                continue
            rows = xw[b, :, hs[i]:he[i], :].max(axis=1)  # (C, W)
            for j in range(pw):
                if we[j] > ws[j]:
                    y[r, :, i, j] = rows[:, ws[j]:we[j]].max(axis=1)
    return y


def _roi_axis(start, size, n_out, grid, extent):
    """Bilinear sample taps along one axis: (low, high) indices and weights, shape (n_out, grid)."""
    bin_sz = size / n_out
    c = start + np.arange(n_out)[:, None] * bin_sz + (np.arange(grid)[None, :] + 0.5) * bin_sz / grid
    valid = (c >= -1.0) & (c <= extent)
    c = np.maximum(c, 0.0)
    low = np.floor(c).astype(np.int64)
    top = low >= extent - 1
    low = np.where(top, extent - 1, low)
    high = np.where(top, extent - 1, low + 1)
    c = np.where(top, low.astype(c.dtype), c)
    frac = c - low
    w_low = np.where(valid, 1.0 - frac, 0.0)
    w_high = np.where(valid, frac, 0.0)
    return low, high, w_low, w_high


def _roi_align(x, rois, batch_indices, *, mode, output_height, output_width, sampling_ratio,
               spatial_scale, half_pixel):
    x = np.asarray(x)
    xw = to_work(x)
    rois = np.asarray(rois).astype(np.float64)
    bidx = np.asarray(batch_indices).astype(np.int64).reshape(-1)
    C, H, W = x.shape[1:]
    oh, ow = int(output_height), int(output_width)
    y = np.zeros((rois.shape[0], C, oh, ow), xw.dtype)
    off = 0.5 if half_pixel else 0.0
    for r in range(rois.shape[0]):
        x1, y1, x2, y2 = rois[r, :4] * spatial_scale - off
        rw, rh = x2 - x1, y2 - y1
        if not half_pixel:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = int(sampling_ratio) if sampling_ratio > 0 else int(np.ceil(rh / oh))
        gw = int(sampling_ratio) if sampling_ratio > 0 else int(np.ceil(rw / ow))
        if gh <= 0 or gw <= 0:
            continue
        ylo, yhi, wyl, wyh = _roi_axis(y1, rh, oh, gh, H)
        xlo, xhi, wxl, wxh = _roi_axis(x1, rw, ow, gw, W)
        img = xw[bidx[r]]
        if mode == "avg":
            # separable: Y = Ay @ img @ Ax^T / count, Ay (oh, H) summing the grid samples' weights
            ay = np.zeros((oh, H))
            np.add.at(ay, (np.repeat(np.arange(oh), gh), ylo.reshape(-1)), wyl.reshape(-1))
            np.add.at(ay, (np.repeat(np.arange(oh), gh), yhi.reshape(-1)), wyh.reshape(-1))
            ax = np.zeros((ow, W))
            np.add.at(ax, (np.repeat(np.arange(ow), gw), xlo.reshape(-1)), wxl.reshape(-1))
            np.add.at(ax, (np.repeat(np.arange(ow), gw), xhi.reshape(-1)), wxh.reshape(-1))
            ay = (ay / max(gh * gw, 1)).astype(xw.dtype)
            y[r] = ay @ img @ ax.T.astype(xw.dtype)
        else:
            # max over samples of the max of the four weighted corners (the ONNX/ORT definition)
            best = None
            for yi, wy in ((ylo, wyl), (yhi, wyh)):
                for xi, wx in ((xlo, wxl), (xhi, wxh)):
                    v = img[:, yi.reshape(-1)][:, :, xi.reshape(-1)].reshape(C, oh, gh, ow, gw)
                    wgt = (wy[:, :, None, None] * wx[None, None, :, :]).astype(xw.dtype)
                    v = v * wgt
                    best = v if best is None else np.maximum(best, v)
            y[r] = best.max(axis=(2, 4))
    return y.astype(x.dtype, copy=False)


@op("RoiAlign", since=10)
def roi_align_10(x, rois, batch_indices, *, mode="avg", output_height=1, output_width=1,
                 sampling_ratio=0, spatial_scale=1.0):
    return _roi_align(x, rois, batch_indices, mode=mode, output_height=output_height,
                      output_width=output_width, sampling_ratio=sampling_ratio,
                      spatial_scale=spatial_scale, half_pixel=False)


@op("RoiAlign", since=16)
def roi_align_16(x, rois, batch_indices, *, coordinate_transformation_mode="half_pixel", mode="avg",
                 output_height=1, output_width=1, sampling_ratio=0, spatial_scale=1.0):
    return _roi_align(x, rois, batch_indices, mode=mode, output_height=output_height,
                      output_width=output_width, sampling_ratio=sampling_ratio,
                      spatial_scale=spatial_scale,
                      half_pixel=coordinate_transformation_mode == "half_pixel")
