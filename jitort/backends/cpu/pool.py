"""NHWC float32 2-D pooling kernels for the layout level's jitort::MaxPoolNHWC,
AveragePoolNHWC, GlobalAveragePoolNHWC and GlobalMaxPoolNHWC (see jitort/ops/fused_layout.py).

    max_pool(x, y, geometry, threads)            geometry = (KH, KW, SH, SW, PT, PL, DH, DW)
    average_pool(x, y, geometry, cnt_h, cnt_w, threads)
    global_pool(x, y, is_max)                    x [N, H, W, C] -> y [N, 1, 1, C]

x [N, H, W, C] and y [N, OH, OW, C] are C-contiguous; the output shape (ceil_mode included) is
the caller's. Every inner loop runs over C, contiguous in NHWC, on 1-D row views (so LLVM
vectorizes it). Max follows np.maximum: a NaN tap makes the output NaN; taps in the padding are
skipped (ONNX pads MaxPool with -inf). Average divides the float32 window sum by the count the
caller computed per output row and column (``cnt_h[oh] * cnt_w[ow]``: in-bounds taps, or taps
within the explicit pads with count_include_pad). Global pools accumulate in float64.
Rows (n, oh) are split into ``threads`` chunks (``prange``) when threads > 1.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(error_model="numpy", cache=True, nogil=True)
_NEG_INF = np.float32(-np.inf)


@numba.njit(**_JIT)
def _max_rows(x, y, g, lo, hi):
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    OH, OW = y.shape[1], y.shape[2]
    KH, KW, SH, SW, PT, PL, DH, DW = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
    for r in range(lo, hi):
        n, oh = r // OH, r % OH
        for ow in range(OW):
            out = y[n, oh, ow]
            for c in range(C):
                out[c] = _NEG_INF
            for kh in range(KH):
                ih = oh * SH - PT + kh * DH
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    iw = ow * SW - PL + kw * DW
                    if iw < 0 or iw >= W:
                        continue
                    row = x[n, ih, iw]
                    for c in range(C):
                        v = row[c]
                        m = out[c]
                        out[c] = v if (v > m or v != v) else m


@numba.njit(**_JIT)
def _avg_rows(x, y, g, cnt_h, cnt_w, lo, hi):
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    OH, OW = y.shape[1], y.shape[2]
    KH, KW, SH, SW, PT, PL, DH, DW = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
    for r in range(lo, hi):
        n, oh = r // OH, r % OH
        for ow in range(OW):
            out = y[n, oh, ow]
            for c in range(C):
                out[c] = np.float32(0.0)
            for kh in range(KH):
                ih = oh * SH - PT + kh * DH
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    iw = ow * SW - PL + kw * DW
                    if iw < 0 or iw >= W:
                        continue
                    row = x[n, ih, iw]
                    for c in range(C):
                        out[c] += row[c]
            inv = np.float32(1.0) / np.float32(max(cnt_h[oh] * cnt_w[ow], 1))
            for c in range(C):
                out[c] = out[c] * inv


@numba.njit(parallel=True, **_JIT)
def _max_par(x, y, g, nt):
    rows = y.shape[0] * y.shape[1]
    for t in numba.prange(nt):
        _max_rows(x, y, g, rows * t // nt, rows * (t + 1) // nt)


@numba.njit(parallel=True, **_JIT)
def _avg_par(x, y, g, cnt_h, cnt_w, nt):
    rows = y.shape[0] * y.shape[1]
    for t in numba.prange(nt):
        _avg_rows(x, y, g, cnt_h, cnt_w, rows * t // nt, rows * (t + 1) // nt)


@numba.njit(**_JIT)
def _global(x, y, is_max, acc):
    N, H, W, C = x.shape
    for n in range(N):
        out = y[n, 0, 0]
        for c in range(C):
            acc[c] = -np.inf if is_max else 0.0
        for h in range(H):
            for w in range(W):
                row = x[n, h, w]
                if is_max:
                    for c in range(C):
                        v = np.float64(row[c])
                        m = acc[c]
                        acc[c] = v if (v > m or v != v) else m
                else:
                    for c in range(C):
                        acc[c] += row[c]
        for c in range(C):
            out[c] = acc[c] if is_max else acc[c] / max(H * W, 1)


def max_pool(x, y, geometry, threads=1):
    g = np.asarray(geometry, np.int64)
    rows = y.shape[0] * y.shape[1]
    nt = max(1, min(int(threads), rows))
    if nt == 1:
        _max_rows(x, y, g, 0, rows)
    else:
        _max_par(x, y, g, nt)
    return y


def average_pool(x, y, geometry, cnt_h, cnt_w, threads=1):
    g = np.asarray(geometry, np.int64)
    rows = y.shape[0] * y.shape[1]
    nt = max(1, min(int(threads), rows))
    if nt == 1:
        _avg_rows(x, y, g, cnt_h, cnt_w, 0, rows)
    else:
        _avg_par(x, y, g, cnt_h, cnt_w, nt)
    return y


def global_pool(x, y, is_max):
    # the float64 accumulators come from here: an np.empty inside the kernel would bring Numba's
    # np.empty implementation along, whose loading imports numba.np.arrayobj (conv_work.Scratch)
    _global(x, y, bool(is_max), np.empty(x.shape[3], np.float64))
    return y


def axis_counts(out: int, stride: int, dil: int, k: int, lo: int, hi: int, pad: int) -> np.ndarray:
    """Per output position along one axis: the window taps landing in [lo, hi)."""
    pos = np.arange(out)[:, None] * stride - pad + np.arange(k)[None, :] * dil
    return ((pos >= lo) & (pos < hi)).sum(axis=1).astype(np.int64)
