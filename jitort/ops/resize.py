"""Resize (10, 11, 13, 18, 19) and Upsample (7, 9).

Resizing is separable: each resized axis gets a plan (source taps + weights per output index)
and is applied with one np.take + weighted sum. Identity axes are skipped.
"""

from __future__ import annotations

import itertools

import numpy as np

from .registry import op


def _compute_dtype(dt: np.dtype) -> np.dtype:
    if dt in (np.float32, np.float64):
        return dt
    if dt.kind in "iu" and dt.itemsize >= 4:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _cast_back(y: np.ndarray, dt: np.dtype) -> np.ndarray:
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return np.clip(np.round(y), info.min, info.max).astype(dt)
    if dt == bool:
        return y != 0
    return y.astype(dt, copy=False)


def _source_coords(ctm, out_len, in_len, scale, roi_s, roi_e):
    """Output index -> source coordinate (float64), and the tf_crop_and_resize extrapolation mask."""
    y = np.arange(out_len, dtype=np.float64)
    out_w = scale * in_len  # the spec's (possibly fractional) resized length
    extra = None
    if ctm == "align_corners":
        x = np.zeros(out_len) if out_w == 1 else y * (in_len - 1) / (out_w - 1)
    elif ctm == "asymmetric":
        x = y / scale
    elif ctm == "tf_crop_and_resize":
        if out_w == 1:
            x = np.full(out_len, (roi_e - roi_s) * (in_len - 1) / 2)
        else:
            x = y * (roi_e - roi_s) * (in_len - 1) / (out_w - 1)
        x = x + roi_s * (in_len - 1)
        extra = (x < 0) | (x > in_len - 1)
    elif ctm == "pytorch_half_pixel":
        x = np.full(out_len, -0.5) if out_w == 1 else (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        adjustment = out_len / out_w
        x = in_len / 2 * (1 - adjustment) + (y + 0.5) / scale - 0.5
    elif ctm == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    else:
        raise ValueError(f"Resize: unknown coordinate_transformation_mode {ctm!r}")
    return x, extra


def _nearest_index(x, nearest_mode, downsample):
    if nearest_mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if nearest_mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if nearest_mode == "floor":
        return np.floor(x)
    if nearest_mode == "ceil":
        return np.ceil(x)
    if nearest_mode == "simple":  # opset < 11 (onnxruntime): ceil when downsampling, else truncate
        return np.ceil(x) if downsample else np.trunc(x)
    raise ValueError(f"Resize: unknown nearest_mode {nearest_mode!r}")


def _cubic_kernel(d, a):
    d = np.abs(d)
    d2, d3 = d * d, d * d * d
    near = (a + 2) * d3 - (a + 3) * d2 + 1
    far = a * d3 - 5 * a * d2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _axis_plan(mode, in_len, out_len, scale, ctm, roi, nearest_mode, cubic_a, exclude_outside,
               antialias):
    """(taps (out, n) int indices, weights (out, n) or None, extrapolation mask or None)."""
    x, extra = _source_coords(ctm, out_len, in_len, scale, *roi)
    if mode == "nearest":
        idx = _nearest_index(x, nearest_mode, scale < 1).astype(np.int64)
        return np.clip(idx, 0, in_len - 1)[:, None], None, extra
    support = 1 if mode == "linear" else 2
    sk = min(scale, 1.0) if antialias else 1.0
    start = int(np.floor(-support / sk)) + 1
    n = 2 - 2 * start
    fl = np.floor(x)
    fl = np.where(fl == x, x - 1, fl)  # an exact integer counts as the right end of its cell
    ratio = x - fl
    j = np.arange(n)
    taps = fl.astype(np.int64)[:, None] + start + j[None, :]
    dist = ((start + j)[None, :] - ratio[:, None]) * sk
    if mode == "linear":
        w = np.clip(1.0 - np.abs(dist), 0.0, 1.0)
    else:
        w = _cubic_kernel(dist, float(cubic_a))
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    if exclude_outside:
        w = np.where((taps < 0) | (taps >= in_len), 0.0, w)
        s = w.sum(axis=1, keepdims=True)
        w = w / np.where(s == 0, 1.0, s)
    return np.clip(taps, 0, in_len - 1), w, extra


def _apply_axis(x, axis, taps, w):
    if w is None:
        return np.take(x, taps[:, 0], axis=axis)
    g = np.take(x, taps, axis=axis)  # (..., out, n, ...)
    shp = [1] * g.ndim
    shp[axis], shp[axis + 1] = w.shape
    return np.sum(g * w.reshape(shp).astype(g.dtype), axis=axis + 1)


def _resize(x, roi, scales, sizes, *, mode="nearest", coordinate_transformation_mode="half_pixel",
            nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0,
            extrapolation_value=0.0, antialias=0, axes=None, keep_aspect_ratio_policy="stretch"):
    x = np.asarray(x)
    r = x.ndim
    axes = list(range(r)) if axes is None else [int(a) + r if a < 0 else int(a) for a in axes]
    roi_full = [(0.0, 1.0)] * r
    if roi is not None and np.asarray(roi).size:
        rv = np.asarray(roi, np.float64).reshape(-1)
        k = len(rv) // 2
        ax_roi = axes if k == len(axes) else list(range(r))
        for i, a in enumerate(ax_roi):
            roi_full[a] = (rv[i], rv[k + i])
    scale = [1.0] * r
    out_shape = list(x.shape)
    if sizes is not None and np.asarray(sizes).size:
        sz = [int(v) for v in np.asarray(sizes).reshape(-1)]
        for a, s in zip(axes, sz):
            out_shape[a] = s
            scale[a] = s / x.shape[a] if x.shape[a] else 1.0
        if keep_aspect_ratio_policy != "stretch":
            pick = min if keep_aspect_ratio_policy == "not_larger" else max
            s = pick(scale[a] for a in axes)
            for a in axes:
                scale[a] = s
                out_shape[a] = int(s * x.shape[a] + 0.5)
    elif scales is not None and np.asarray(scales).size:
        sc = np.asarray(scales).reshape(-1)
        for a, s in zip(axes, sc):
            scale[a] = float(s)
            out_shape[a] = int(np.floor(float(s) * x.shape[a]))
    else:
        raise ValueError("Resize: one of 'scales' and 'sizes' must be given")
    out_dtype = x.dtype
    if mode != "nearest":
        if out_dtype.kind not in "fiub" and out_dtype.name not in ("bfloat16",) and out_dtype.kind != "V":
            raise NotImplementedError(f"Resize {mode} on {out_dtype}")
        y = x.astype(_compute_dtype(out_dtype), copy=False)
    else:
        y = x
    extra_masks = []
    # resize the shrinking axes first: less work for the rest
    order = sorted(axes, key=lambda a: out_shape[a] / max(x.shape[a], 1))
    for a in order:
        in_len, out_len = x.shape[a], out_shape[a]
        rs, re = roi_full[a]
        ctm = coordinate_transformation_mode
        if out_len == in_len and scale[a] == 1.0 and (ctm != "tf_crop_and_resize" or (rs, re) == (0.0, 1.0)):
            continue
        if out_len == 0 or in_len == 0:
            shp = list(y.shape)
            shp[a] = out_len
            y = np.zeros(shp, y.dtype)
            continue
        taps, w, extra = _axis_plan(mode, in_len, out_len, scale[a], ctm, (rs, re), nearest_mode,
                                    cubic_coeff_a, exclude_outside, antialias)
        y = _apply_axis(y, a, taps, w)
        if extra is not None and extra.any():
            shp = [1] * r
            shp[a] = out_len
            extra_masks.append(extra.reshape(shp))
    if extra_masks:
        m = np.zeros((1,) * r, bool)
        for e in extra_masks:
            m = m | e
        y = np.where(m, np.asarray(extrapolation_value).astype(y.dtype), y)
    return _cast_back(y, out_dtype) if mode != "nearest" else np.ascontiguousarray(y)


@op("Resize", since=10)
def resize_10(x, scales, *, mode="nearest"):
    return _resize(x, None, scales, None, mode=mode, coordinate_transformation_mode="asymmetric",
                   nearest_mode="simple")


@op("Resize", since=11)
def resize_11(x, roi=None, scales=None, sizes=None, *, coordinate_transformation_mode="half_pixel",
              cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, mode="nearest",
              nearest_mode="round_prefer_floor"):
    return _resize(x, roi, scales, sizes, mode=mode,
                   coordinate_transformation_mode=coordinate_transformation_mode,
                   nearest_mode=nearest_mode, cubic_coeff_a=cubic_coeff_a,
                   exclude_outside=exclude_outside, extrapolation_value=extrapolation_value)


@op("Resize", since=18)
def resize_18(x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
              coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
              extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
              nearest_mode="round_prefer_floor"):
    return _resize(x, roi, scales, sizes, mode=mode,
                   coordinate_transformation_mode=coordinate_transformation_mode,
                   nearest_mode=nearest_mode, cubic_coeff_a=cubic_coeff_a,
                   exclude_outside=exclude_outside, extrapolation_value=extrapolation_value,
                   antialias=antialias, axes=axes, keep_aspect_ratio_policy=keep_aspect_ratio_policy)


def _upsample(x, scales, mode):
    mode = "linear" if mode in ("linear", "bilinear") else mode
    return _resize(x, None, np.asarray(scales, np.float32), None, mode=mode,
                   coordinate_transformation_mode="asymmetric", nearest_mode="simple")


@op("Upsample", since=7)
def upsample_7(x, *, mode="nearest", scales=None):
    return _upsample(x, scales, mode)


@op("Upsample", since=9)
def upsample_9(x, scales, *, mode="nearest"):
    return _upsample(x, scales, mode)


# ---------------------------------------------------------------- GridSample / AffineGrid


def _reflect(x, lo, hi):
    """Fold coordinates into [lo, hi] by repeated reflection at the borders."""
    rng = hi - lo
    if rng <= 0:
        return np.full_like(x, lo)
    below = x < lo
    above = x > hi
    dx = np.where(below, lo - x, x - hi)
    k = np.floor(dx / rng)
    rem = dx - k * rng
    even = (k % 2) == 0
    from_low = np.where(even, lo + rem, hi - rem)
    from_high = np.where(even, hi - rem, lo + rem)
    return np.where(below, from_low, np.where(above, from_high, x))


def _gs_cubic(t):
    a = -0.75
    return [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]


def _grid_sample(x, grid, mode, padding_mode, align_corners):
    x = np.asarray(x)
    grid = np.asarray(grid)
    N, C = x.shape[:2]
    sp = x.shape[2:]
    D = len(sp)
    out_sp = grid.shape[1:-1]
    P = int(np.prod(out_sp)) if out_sp else 1
    if N * C * P == 0:
        return np.zeros((N, C, *out_sp), x.dtype)
    g = grid.reshape(N, P, D).astype(np.float64)
    numeric = x.dtype.kind in "fiub" or x.dtype.kind == "V"
    if mode != "nearest" and not numeric:
        raise NotImplementedError(f"GridSample {mode} on {x.dtype}")
    cd = _compute_dtype(x.dtype) if numeric else x.dtype
    xf = x.reshape(N, C, -1).astype(cd, copy=False)
    # per spatial dim d (grid's last axis is x, y, (z): reversed w.r.t. the data's axes)
    axis_taps = []
    for d in range(D):
        L = sp[d]
        gn = g[:, :, D - 1 - d]
        if align_corners:
            c = (gn + 1) / 2 * (L - 1)
            lo, hi = 0.0, L - 1.0
        else:
            c = ((gn + 1) * L - 1) / 2
            lo, hi = -0.5, L - 0.5
        c = c.astype(np.float64)
        if mode == "nearest":
            c = np.rint(c)
        if padding_mode == "border" and mode != "cubic":  # cubic clamps each tap (torch, onnxruntime)
            c = np.where((c < lo) | (c > hi), np.clip(c, 0, L - 1), c)
        elif padding_mode == "reflection":
            c = _reflect(c, lo, hi)
        if mode == "nearest":
            idx = [c.astype(np.int64)]
            wts = [np.ones_like(c)]
        elif mode == "linear":
            f = np.floor(c)
            t = c - f
            idx = [f.astype(np.int64), f.astype(np.int64) + 1]
            wts = [1 - t, t]
        else:
            f = np.floor(c)
            t = c - f
            i0 = f.astype(np.int64)
            idx = [i0 - 1, i0, i0 + 1, i0 + 2]
            wts = _gs_cubic(t)
        fixed = []
        for i, w in zip(idx, wts):
            if padding_mode == "zeros":
                ok = (i >= 0) & (i < L)
                fixed.append((np.clip(i, 0, L - 1), np.where(ok, w, 0.0), ok))
            elif padding_mode == "border":
                fixed.append((np.clip(i, 0, L - 1), w, None))
            else:
                fixed.append((_reflect(i.astype(np.float64), lo, hi).astype(np.int64).clip(0, L - 1), w, None))
        axis_taps.append(fixed)
    strides = [int(np.prod(sp[d + 1:])) for d in range(D)]
    acc = None
    for combo in itertools.product(*axis_taps):
        flat = 0
        w = 1.0
        ok = None
        for (i, wt, okd), st in zip(combo, strides):
            flat = flat + i * st
            w = w * wt
            if okd is not None:
                ok = okd if ok is None else ok & okd
        v = np.take_along_axis(xf, np.broadcast_to(flat[:, None, :], (N, C, P)), axis=2)
        if mode == "nearest":
            if ok is not None:
                v = np.where(ok[:, None, :], v, np.zeros((), v.dtype) if numeric else "")
            acc = v
        else:
            term = v * w[:, None, :].astype(cd)
            acc = term if acc is None else acc + term
    y = acc.reshape(N, C, *out_sp)
    return _cast_back(y, x.dtype) if mode != "nearest" and x.dtype != cd else y.astype(x.dtype, copy=False)


@op("GridSample", since=16)
def grid_sample_16(x, grid, *, align_corners=0, mode="bilinear", padding_mode="zeros"):
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    return _grid_sample(x, grid, mode, padding_mode, align_corners)


@op("GridSample", since=20)
def grid_sample_20(x, grid, *, align_corners=0, mode="linear", padding_mode="zeros"):
    return _grid_sample(x, grid, mode, padding_mode, align_corners)


def _base_coords(L, align_corners):
    if L <= 1:
        return np.zeros(max(L, 0))
    if align_corners:
        return np.linspace(-1.0, 1.0, L)
    return (np.arange(L) * 2.0 + 1.0) / L - 1.0


@op("AffineGrid", since=20)
def affine_grid(theta, size, *, align_corners=0):
    theta = np.asarray(theta)
    sz = [int(v) for v in np.asarray(size).reshape(-1)]
    N, sp = sz[0], sz[2:]
    D = len(sp)
    axes = [_base_coords(L, align_corners) for L in sp]  # data order: (D,) H, W
    mesh = np.meshgrid(*axes, indexing="ij")
    # homogeneous base coordinates, last axis ordered x, y, (z), 1
    base = np.stack([m for m in mesh[::-1]] + [np.ones_like(mesh[0])], axis=-1).reshape(-1, D + 1)
    wd = theta.dtype if theta.dtype in (np.float32, np.float64) else np.float32
    out = np.matmul(base.astype(wd)[None], np.swapaxes(theta.astype(wd), 1, 2))  # (N, P, D)
    return out.reshape(N, *sp, D).astype(theta.dtype, copy=False)
