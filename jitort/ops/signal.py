"""Signal processing: DFT, STFT, Hann/Hamming/Blackman windows, MelWeightMatrix.

Complex values travel as a trailing dim of 2 (real, imag); a real signal has a trailing dim of 1.
FFTs run in complex64 for float32/float16/bfloat16 inputs and complex128 for float64.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import np_dtype
from .registry import op


def _scalar(v) -> int:
    return int(np.asarray(v).reshape(-1)[0])


def _to_complex(x: np.ndarray) -> np.ndarray:
    """[..., 1|2] real array -> complex array [...] (complex128 for float64, else complex64)."""
    real_dt = np.float64 if x.dtype == np.float64 else np.float32
    w = x.astype(real_dt, copy=False)
    if w.shape[-1] == 1:
        return w[..., 0].astype(np.complex128 if real_dt == np.float64 else np.complex64)
    if w.shape[-1] != 2:
        raise ValueError(f"DFT/STFT input's last dim must be 1 or 2, got {w.shape[-1]}")
    out = np.empty(w.shape[:-1], dtype=np.complex128 if real_dt == np.float64 else np.complex64)
    out.real = w[..., 0]
    out.imag = w[..., 1]
    return out


def _from_complex(z: np.ndarray, dtype) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1).astype(dtype, copy=False)


def _fit(z: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Zero-pad or truncate ``z`` along ``axis`` to length n."""
    cur = z.shape[axis]
    if cur == n:
        return z
    if cur > n:
        return np.take(z, np.arange(n), axis=axis)
    pad = [(0, 0)] * z.ndim
    pad[axis] = (0, n - cur)
    return np.pad(z, pad)


def _dft(x: np.ndarray, dft_length, axis: int, inverse: int, onesided: int) -> np.ndarray:
    r = x.ndim
    if not (-r <= axis <= r - 2 and axis != -1):
        raise ValueError(f"DFT axis {axis} invalid for input rank {r}")
    axis = axis % r
    z = _to_complex(x)
    dim = z.shape[axis]
    if onesided and inverse:  # IRFFT: complex half spectrum -> real signal
        n = 2 * (dim - 1) if dft_length is None else _scalar(dft_length)
        res = np.fft.irfft(z, n=n, axis=axis)
        return np.asarray(res[..., None].astype(x.dtype, copy=False))
    n = dim if dft_length is None else _scalar(dft_length)
    z = _fit(z, n, axis)
    res = np.fft.ifft(z, axis=axis) if inverse else np.fft.fft(z, axis=axis)
    if onesided:
        res = np.take(res, np.arange(n // 2 + 1), axis=axis)
    return np.asarray(_from_complex(res, x.dtype))


@op("DFT", since=17)
def dft_v17(x, dft_length=None, *, axis=1, inverse=0, onesided=0):
    return _dft(x, dft_length, axis, inverse, onesided)


@op("DFT", since=20)
def dft_v20(x, dft_length=None, axis=None, *, inverse=0, onesided=0):
    ax = -2 if axis is None else _scalar(axis)
    return _dft(x, dft_length, ax, inverse, onesided)


@op("STFT", since=17)
def stft(signal, frame_step, window=None, frame_length=None, *, onesided=1):
    """Frames [B, frames, frame_length] via a strided view, windowed, then one batched FFT."""
    z = _to_complex(signal)  # [B, L]
    step = _scalar(frame_step)
    length = z.shape[1]
    if frame_length is not None:
        fl = _scalar(frame_length)
    elif window is not None:
        fl = int(window.shape[0])
    else:
        fl = length
    if window is not None and window.shape[0] != fl:
        raise ValueError(f"STFT window length {window.shape[0]} != frame_length {fl}")
    n_frames = (length - fl) // step + 1
    if n_frames <= 0:
        raise ValueError("STFT: signal shorter than frame_length")
    frames = np.lib.stride_tricks.sliding_window_view(z, fl, axis=1)[:, ::step][:, :n_frames]
    if window is not None:
        frames = frames * window.astype(z.real.dtype, copy=False)
    real_in = signal.shape[-1] == 1
    if onesided and real_in:
        res = np.fft.rfft(frames.real, axis=-1)
    else:
        res = np.fft.fft(frames, axis=-1)
        if onesided:
            res = res[..., : fl // 2 + 1]
    return np.asarray(_from_complex(res, signal.dtype))


def _window(size, periodic: int, output_datatype: int, coeffs) -> np.ndarray:
    """Generalized cosine window sum_k (-1)^k a_k cos(2 pi k n / N), N = size (periodic) or size-1."""
    n_pts = _scalar(size)
    denom = n_pts if periodic else n_pts - 1
    n = np.arange(n_pts, dtype=np.float64)
    out = np.full(n_pts, coeffs[0], dtype=np.float64)
    if denom > 0:
        for k, a in enumerate(coeffs[1:], start=1):
            out += (-1) ** k * a * np.cos(2.0 * np.pi * k * n / denom)
    else:  # a 1-point symmetric window is [1] (as torch and scipy define it)
        out[:] = 1.0
    return np.asarray(out.astype(np_dtype(output_datatype)))


@op("HannWindow", since=17)
def hann_window(size, *, periodic=1, output_datatype=1):
    return _window(size, periodic, output_datatype, (0.5, 0.5))


@op("HammingWindow", since=17)
def hamming_window(size, *, periodic=1, output_datatype=1):
    return _window(size, periodic, output_datatype, (25.0 / 46.0, 21.0 / 46.0))


@op("BlackmanWindow", since=17)
def blackman_window(size, *, periodic=1, output_datatype=1):
    return _window(size, periodic, output_datatype, (0.42, 0.5, 0.08))


@op("MelWeightMatrix", since=17)
def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz,
                      *, output_datatype=1):
    """Triangular filters with unit peaks on mel(f) = 2595 log10(1 + f / 700).

    The band edges follow ONNX/onnxruntime: num_mel_bins + 2 points spaced by
    (mel_hi - mel_lo) / (num_mel_bins + 2), mapped to bins floor((dft_length + 1) * f / rate).
    """
    n_mel = _scalar(num_mel_bins)
    n_fft = _scalar(dft_length)
    rate = float(np.asarray(sample_rate).reshape(-1)[0])
    lo = float(np.asarray(lower_edge_hertz).reshape(-1)[0])
    hi = float(np.asarray(upper_edge_hertz).reshape(-1)[0])
    n_spec = n_fft // 2 + 1
    mel_lo = 2595.0 * np.log1p(lo / 700.0) / np.log(10.0)
    mel_hi = 2595.0 * np.log1p(hi / 700.0) / np.log(10.0)
    pts = np.arange(n_mel + 2, dtype=np.float64) * ((mel_hi - mel_lo) / (n_mel + 2)) + mel_lo
    hz = 700.0 * np.expm1(pts / 2595.0 * np.log(10.0))
    bins = ((n_fft + 1) * hz // rate).astype(np.int64)
    left, center, right = bins[:-2], bins[1:-1], bins[2:]
    j = np.arange(n_spec, dtype=np.int64)[:, None]
    up_w = np.maximum(center - left, 1)
    down_w = np.maximum(right - center, 1)
    rising = (j >= left) & (j <= center)
    falling = (j >= center) & (j < right)
    out = np.zeros((n_spec, n_mel), dtype=np.float64)
    out = np.where(rising, (j - left) / up_w, out)
    out = np.where(rising & (center == left), 1.0, out)
    out = np.where(falling, (right - j) / down_w, out)
    return np.asarray(out.astype(np_dtype(output_datatype)))
