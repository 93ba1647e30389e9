"""Convolution family: Conv, ConvTranspose, DeformConv, Col2Im.

Conv is im2col (a strided sliding-window view copied once) + one batched np.matmul over groups;
depthwise convs are a multiply-accumulate over the kernel taps. Narrow floats compute in float32.
The window/padding helpers here are shared with ``pool.py``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .registry import op

_SAME = ("SAME_UPPER", "SAME_LOWER")


def work_dtype(dt) -> np.dtype:
    """The dtype arithmetic runs in: float32/float64 as is, every narrower float in float32."""
    dt = np.dtype(dt)
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float32)


def to_work(x: np.ndarray) -> np.ndarray:
    wd = work_dtype(x.dtype)
    return x if x.dtype == wd else x.astype(wd)


def _ints(v, n: int, fill: int) -> list[int]:
    return [int(a) for a in v] if v is not None and len(v) else [fill] * n


def window_geometry(spatial, kernel, strides=None, dilations=None, pads=None, auto_pad="NOTSET",
                    ceil_mode=False):
    """Output spatial shape and (begin, end) pads of a sliding window op.

    ``end`` pads include the extra room a ceil_mode window may need past the explicit pads; the
    returned ``explicit_end`` are the pads the model actually declared (for count_include_pad).
    """
    n = len(spatial)
    s = _ints(strides, n, 1)
    d = _ints(dilations, n, 1)
    ek = [(k - 1) * dd + 1 for k, dd in zip(kernel, d)]
    if auto_pad in _SAME:
        out = [-(-i // st) for i, st in zip(spatial, s)]
        total = [max(0, (o - 1) * st + e - i) for o, st, e, i in zip(out, s, ek, spatial)]
        if auto_pad == "SAME_UPPER":
            pb = [t // 2 for t in total]
        else:
            pb = [t - t // 2 for t in total]
        pe = [t - b for t, b in zip(total, pb)]
    else:
        if auto_pad == "VALID":
            p = [0] * (2 * n)
        else:
            p = _ints(pads, 2 * n, 0)
        pb, pe = p[:n], p[n:]
        out = []
        for i in range(n):
            span = spatial[i] + pb[i] + pe[i] - ek[i]
            if ceil_mode:
                o = -(-span // s[i]) + 1
                if (o - 1) * s[i] >= spatial[i] + pb[i]:  # last window would start in the right pad
                    o -= 1
            else:
                o = span // s[i] + 1
            out.append(max(o, 0))
    explicit_end = list(pe)
    pe = [max(e, (o - 1) * st + k - i - b) if o > 0 else e
          for e, o, st, k, i, b in zip(pe, out, s, ek, spatial, pb)]
    return out, pb, pe, explicit_end, s, d


def pad_spatial(x: np.ndarray, pb, pe, value=0) -> np.ndarray:
    """Pad (or crop, for negative pads) the trailing len(pb) axes."""
    n = len(pb)
    if any(b < 0 for b in pb) or any(e < 0 for e in pe):
        sl = [slice(None)] * (x.ndim - n) + [
            slice(max(-b, 0), x.shape[x.ndim - n + i] - max(-e, 0)) for i, (b, e) in enumerate(zip(pb, pe))]
        x = x[tuple(sl)]
        pb = [max(b, 0) for b in pb]
        pe = [max(e, 0) for e in pe]
    if not any(pb) and not any(pe):
        return x
    width = [(0, 0)] * (x.ndim - n) + list(zip(pb, pe))
    return np.pad(x, width, constant_values=value)


def tap_slices(out, strides, dilations, tap, lead: int) -> tuple:
    """Index selecting, for kernel tap ``tap``, the input element of every output position."""
    return (slice(None),) * lead + tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s) for o, s, d, t in zip(out, strides, dilations, tap))


# ---------------------------------------------------------------- Conv


def _conv(x, w, b, *, auto_pad, dilations, group, kernel_shape, pads, strides):
    x = np.asarray(x)
    out_dtype = x.dtype
    x, w = to_work(x), to_work(np.asarray(w)).astype(work_dtype(x.dtype), copy=False)
    n_sp = x.ndim - 2
    kernel = list(w.shape[2:]) if not kernel_shape else [int(k) for k in kernel_shape]
    out, pb, pe, _, s, d = window_geometry(x.shape[2:], kernel, strides, dilations, pads, auto_pad)
    N, C = x.shape[:2]
    M = w.shape[0]
    G = int(group)
    Cg, Mg = C // G, M // G
    if w.shape[1] != Cg or M % G:
        raise ValueError(f"Conv: weight shape {w.shape} does not fit {C} channels in {G} groups")
    xp = pad_spatial(x, pb, pe)
    K = math.prod(kernel)
    L = math.prod(out)
    if N == 0 or L == 0 or M == 0:
        y = np.zeros((N, M, *out), x.dtype)
    elif Cg == 1 and G > 1 and K > 1:
        # depthwise: accumulate over the kernel taps; one pass per channel multiplier (kept 4-D:
        # NumPy iterates broadcast 5-D operands much slower)
        wg = w.reshape(G, Mg, K)
        acc = np.zeros((Mg, N, G, *out), x.dtype)
        tmp = np.empty((N, G, *out), x.dtype)
        bshape = (G,) + (1,) * n_sp
        for t, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
            xv = xp[tap_slices(out, s, d, tap, 2)]
            for m in range(Mg):
                np.multiply(xv, np.ascontiguousarray(wg[:, m, t]).reshape(bshape), out=tmp)
                acc[m] += tmp
        y = acc.transpose(1, 2, 0, *range(3, 3 + n_sp)).reshape(N, M, *out) if Mg > 1 else acc[0]
    else:
        if K == 1:
            col = xp[tap_slices(out, s, d, (0,) * n_sp, 2)].reshape(N, G, Cg, L)
        else:
            ek = [(k - 1) * dd + 1 for k, dd in zip(kernel, d)]
            v = sliding_window_view(xp, ek, axis=tuple(range(2, 2 + n_sp)))
            sel = (slice(None),) * 2 + tuple(slice(0, (o - 1) * st + 1, st) for o, st in zip(out, s)) \
                + tuple(slice(None, None, dd) for dd in d)
            v = v[sel]  # (N, C, *out, *kernel)
            perm = (0, 1) + tuple(range(2 + n_sp, 2 + 2 * n_sp)) + tuple(range(2, 2 + n_sp))
            col = np.ascontiguousarray(v.transpose(perm)).reshape(N, G, Cg * K, L)
        y = np.matmul(w.reshape(G, Mg, Cg * K), col).reshape(N, M, *out)
    if b is not None:
        y += to_work(np.asarray(b)).astype(y.dtype, copy=False).reshape(1, M, *([1] * n_sp))
    return y.astype(out_dtype, copy=False)


@op("Conv", since=1)
def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    return _conv(x, w, b, auto_pad=auto_pad, dilations=dilations, group=group,
                 kernel_shape=kernel_shape, pads=pads, strides=strides)


# ---------------------------------------------------------------- ConvTranspose / Col2Im


def _scatter_taps(col, out_lead, in_sp, kernel, strides, dilations):
    """Col2im core: col (*lead, *kernel, *in_sp) summed into the un-cropped full output."""
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(in_sp, strides, kernel, dilations)]
    acc = np.zeros((*out_lead, *full), col.dtype)
    lead = len(out_lead)
    for tap in itertools.product(*(range(k) for k in kernel)):
        acc[tap_slices(in_sp, strides, dilations, tap, lead)] += col[(slice(None),) * lead + tap]
    return acc


def _crop(full: np.ndarray, pb, out_shape) -> np.ndarray:
    """full[..., pb : pb + out] per spatial axis, zero-filling where the range leaves ``full``."""
    n = len(pb)
    pe = [f - b - o for f, b, o in zip(full.shape[-n:], pb, out_shape)]
    return pad_spatial(full, [-b for b in pb], [-e for e in pe])


@op("ConvTranspose", since=1)
def conv_transpose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   output_padding=None, output_shape=None, pads=None, strides=None):
    x = np.asarray(x)
    out_dtype = x.dtype
    x = to_work(x)
    w = np.asarray(w).astype(x.dtype, copy=False)
    n = x.ndim - 2
    N, C = x.shape[:2]
    G = int(group)
    Cg, Mg = C // G, w.shape[1]
    M = Mg * G
    kernel = list(w.shape[2:])
    s, d = _ints(strides, n, 1), _ints(dilations, n, 1)
    opad = _ints(output_padding, n, 0)[:n]
    in_sp = list(x.shape[2:])
    full = [(i - 1) * st + (k - 1) * dd + 1 for i, st, k, dd in zip(in_sp, s, kernel, d)]
    if pads is None or auto_pad in _SAME:
        if output_shape is not None and len(output_shape):
            oshape = [int(v) for v in output_shape][-n:]
        elif auto_pad in _SAME:
            oshape = [i * st for i, st in zip(in_sp, s)]
        else:
            oshape = None
        if oshape is None:
            pb = [0] * n
            oshape = [f + op_ for f, op_ in zip(full, opad)]
        else:
            total = [f + op_ - o for f, op_, o in zip(full, opad, oshape)]
            pb = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    else:
        p = _ints(pads, 2 * n, 0)
        pb = p[:n]
        if output_shape is not None and len(output_shape):
            oshape = [int(v) for v in output_shape][-n:]
        else:
            oshape = [f + op_ - p[i] - p[n + i] for i, (f, op_) in enumerate(zip(full, opad))]
    L = math.prod(in_sp)
    K = math.prod(kernel)
    # (G, Mg*K, Cg) @ (N, G, Cg, L) -> (N, G, Mg*K, L)
    wt = w.reshape(G, Cg, Mg * K).transpose(0, 2, 1)
    col = np.matmul(wt, x.reshape(N, G, Cg, L)).reshape(N, M, *kernel, *in_sp)
    acc = _scatter_taps(col, (N, M), in_sp, kernel, s, d)
    y = _crop(acc, pb, oshape)
    if b is not None:
        y = y + np.asarray(b).astype(y.dtype).reshape(1, M, *([1] * n))
    return np.ascontiguousarray(y).astype(out_dtype, copy=False)


@op("Col2Im", since=18)
def col2im(x, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    x = np.asarray(x)
    image = [int(v) for v in np.asarray(image_shape).reshape(-1)]
    kernel = [int(v) for v in np.asarray(block_shape).reshape(-1)]
    n = len(image)
    s, d = _ints(strides, n, 1), _ints(dilations, n, 1)
    p = _ints(pads, 2 * n, 0)
    K = math.prod(kernel)
    N, CK, L = x.shape
    C = CK // K
    blocks = [(i + p[j] + p[n + j] - (k - 1) * dd - 1) // st + 1
              for j, (i, k, dd, st) in enumerate(zip(image, kernel, d, s))]
    if math.prod(blocks) != L:
        raise ValueError(f"Col2Im: {L} blocks given, geometry gives {blocks}")
    out_dtype = x.dtype
    xw = x.astype(work_dtype(x.dtype)) if x.dtype.kind == "f" or x.dtype.kind == "V" else x
    if xw.dtype == bool:
        xw = xw.astype(np.int64)
    col = xw.reshape(N, C, *kernel, *blocks)
    acc = _scatter_taps(col, (N, C), blocks, kernel, s, d)
    y = _crop(acc, p[:n], image)
    return np.ascontiguousarray(y).astype(out_dtype, copy=False)


# ---------------------------------------------------------------- DeformConv


def _bilinear_gather_2d(img, py, px):
    """img (N, G, Cg, H, W); py/px (N, G, *P) -> (N, G, Cg, *P); corners outside read as 0."""
    N, G, Cg, H, W = img.shape
    y0 = np.floor(py)
    x0 = np.floor(px)
    ly, lx = py - y0, px - x0
    y0 = y0.astype(np.int64)
    x0 = x0.astype(np.int64)
    flat = img.reshape(N, G, Cg, H * W)
    P = py.shape[2:]
    res = 0
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        yy, xx = y0 + dy, x0 + dx
        wgt = (ly if dy else 1 - ly) * (lx if dx else 1 - lx)
        ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        idx = np.where(ok, yy * W + xx, 0).reshape(N, G, 1, -1)
        v = np.take_along_axis(flat, np.broadcast_to(idx, (N, G, Cg, idx.shape[-1])), axis=3)
        res = res + v.reshape(N, G, Cg, *P) * np.where(ok, wgt, 0).reshape(N, G, 1, *P)
    return res


@op("DeformConv", since=19)
def deform_conv(x, w, offset, b=None, mask=None, *, dilations=None, group=1, kernel_shape=None,
                offset_group=1, pads=None, strides=None):
    x = np.asarray(x)
    out_dtype = x.dtype
    x = to_work(x)
    w = np.asarray(w).astype(x.dtype)
    if x.ndim != 4:
        raise NotImplementedError("DeformConv: only 2-D inputs are supported")
    N, C, H, W_ = x.shape
    M = w.shape[0]
    kh, kw = (list(w.shape[2:]) if not kernel_shape else [int(k) for k in kernel_shape])
    out, pb, _, _, s, d = window_geometry((H, W_), (kh, kw), strides, dilations, pads)
    oh, ow = out
    OG = int(offset_group)
    K = kh * kw
    off = np.asarray(offset).astype(x.dtype).reshape(N, OG, K, 2, oh, ow)
    ky, kx = np.meshgrid(np.arange(kh) * d[0], np.arange(kw) * d[1], indexing="ij")
    base_y = (np.arange(oh) * s[0] - pb[0])[None, :, None] + ky.reshape(K, 1, 1)
    base_x = (np.arange(ow) * s[1] - pb[1])[None, None, :] + kx.reshape(K, 1, 1)
    py = base_y[None, None] + off[:, :, :, 0]
    px = base_x[None, None] + off[:, :, :, 1]
    col = _bilinear_gather_2d(x.reshape(N, OG, C // OG, H, W_), py, px)  # (N, OG, C/OG, K, oh, ow)
    if mask is not None:
        col = col * np.asarray(mask).astype(x.dtype).reshape(N, OG, 1, K, oh, ow)
    G = int(group)
    col = col.reshape(N, G, (C // G) * K, oh * ow)
    y = np.matmul(w.reshape(G, M // G, (C // G) * K), col).reshape(N, M, oh, ow)
    if b is not None:
        y = y + np.asarray(b).astype(x.dtype).reshape(1, M, 1, 1)
    return y.astype(out_dtype, copy=False)
