"""DFT, STFT, windows and MelWeightMatrix against torch.fft / torch.stft / torch windows."""

import numpy as np
import pytest
import torch

from jitort.ops.registry import KernelContext, call, lookup, registered_ops

registered_ops()

# dtype -> (rtol, atol) against a float64 oracle (signals are O(1), lengths <= 64)
TOL = {
    np.dtype(np.float64): (1e-9, 1e-9),
    np.dtype(np.float32): (1e-4, 1e-4),
    np.dtype(np.float16): (1e-2, 5e-2),
}
RNG = np.random.default_rng(3)


def run(name, opset, inputs, **attrs):
    return call(lookup(name, "", opset), list(inputs), attrs, KernelContext(opset=opset))


def check(got, want, dtype):
    assert got.dtype == np.dtype(dtype), got.dtype
    assert got.shape == want.shape, (got.shape, want.shape)
    rtol, atol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol)


def as_pairs(z):
    z = z.resolve_conj().numpy() if isinstance(z, torch.Tensor) else z
    return np.stack([z.real, z.imag], -1)


def complex_of(x):
    x = x.astype(np.float64)
    return torch.from_numpy(x[..., 0] + (1j * x[..., 1] if x.shape[-1] == 2 else 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape,axis", [((2, 10, 1), 1), ((3, 7, 5, 2), 1), ((3, 7, 5, 2), 2), ((2, 9, 2), -2),
                                        ((4, 6, 1), -2)])
@pytest.mark.parametrize("inverse", [0, 1])
@pytest.mark.parametrize("length", [None, 4, 12])
def test_dft_full(dtype, shape, axis, inverse, length):
    x = RNG.standard_normal(shape).astype(dtype)
    z = complex_of(x)
    ax = axis % len(shape)
    fn = torch.fft.ifft if inverse else torch.fft.fft
    want = as_pairs(fn(z, n=length, dim=ax))
    dl = None if length is None else np.array(length, np.int64)
    (v20,) = run("DFT", 20, [x, dl, np.array(axis, np.int64)], inverse=inverse)
    check(v20, want, dtype)
    (v17,) = run("DFT", 17, [x, dl], axis=axis, inverse=inverse)
    check(v17, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,length", [(10, None), (9, None), (8, 12), (8, 5)])
def test_dft_onesided(dtype, n, length):
    x = RNG.standard_normal((3, n, 1)).astype(dtype)
    dl = None if length is None else np.array(length, np.int64)
    (got,) = run("DFT", 20, [x, dl], onesided=1)
    want = as_pairs(torch.fft.rfft(torch.from_numpy(x[..., 0].astype(np.float64)), n=length, dim=1))
    check(got, want, dtype)
    # IRFFT back: onesided + inverse gives a real signal [..., 1]
    nn = n if length is None else length
    (back,) = run("DFT", 20, [got, np.array(nn, np.int64)], onesided=1, inverse=1)
    want_back = torch.fft.irfft(complex_of(got), n=nn, dim=1).numpy()[..., None]
    check(back, want_back, dtype)


def test_dft_irfft_default_length():
    spec = RNG.standard_normal((2, 6, 2)).astype(np.float32)
    (got,) = run("DFT", 20, [spec], onesided=1, inverse=1)
    assert got.shape == (2, 10, 1)
    check(got, torch.fft.irfft(complex_of(spec), dim=1).numpy()[..., None], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length,fl,step", [(64, 16, 8), (50, 12, 5), (31, 31, 1), (40, 8, 8)])
@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize("onesided", [0, 1])
def test_stft(dtype, length, fl, step, windowed, onesided):
    sig = RNG.standard_normal((2, length)).astype(dtype)
    win = np.hanning(fl).astype(dtype) if windowed else None
    inputs = [sig[..., None], np.array(step, np.int64), win, np.array(fl, np.int64)]
    (got,) = run("STFT", 17, inputs, onesided=onesided)
    want = torch.stft(torch.from_numpy(sig.astype(np.float64)), n_fft=fl, hop_length=step, win_length=fl,
                      window=None if win is None else torch.from_numpy(win.astype(np.float64)),
                      center=False, onesided=bool(onesided), return_complex=True)
    check(got, as_pairs(want.transpose(1, 2)), dtype)


def test_stft_complex_and_inferred_frame_length():
    x = RNG.standard_normal((1, 20, 2)).astype(np.float32)
    win = np.hamming(6).astype(np.float32)
    (got,) = run("STFT", 17, [x, np.array(2, np.int64), win], onesided=0)
    z = complex_of(x)
    want = torch.stft(z, n_fft=6, hop_length=2, window=torch.from_numpy(win.astype(np.float64)),
                      center=False, onesided=False, return_complex=True)
    check(got, as_pairs(want.transpose(1, 2)), np.float32)


WINDOWS = {
    "HannWindow": torch.hann_window,
    "BlackmanWindow": torch.blackman_window,
    "HammingWindow": lambda n, periodic, dtype: torch.hamming_window(n, periodic, alpha=25 / 46, beta=21 / 46,
                                                                     dtype=dtype),
}


@pytest.mark.parametrize("name", sorted(WINDOWS))
@pytest.mark.parametrize("size", [1, 2, 7, 10, 33])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("out", [(1, np.float32), (11, np.float64), (10, np.float16)])
def test_windows(name, size, periodic, out):
    code, dtype = out
    (got,) = run(name, 17, [np.array(size, np.int64)], periodic=periodic, output_datatype=code)
    want = WINDOWS[name](size, periodic=bool(periodic), dtype=torch.float64).numpy()
    if size == 1 and periodic:  # ONNX: first point of the size-2 symmetric window (torch special-cases 1)
        want = WINDOWS[name](2, periodic=False, dtype=torch.float64).numpy()[:1]
    check(got, want, dtype)


def test_mel_weight_matrix_properties():
    (m,) = run("MelWeightMatrix", 17, [np.array(8, np.int64), np.array(256, np.int64), np.array(16000, np.int64),
                                       np.array(20.0, np.float32), np.array(8000.0, np.float32)])
    assert m.shape == (129, 8) and m.dtype == np.float32
    assert (m >= 0).all() and (m <= 1).all()
    np.testing.assert_allclose(m.max(axis=0), 1.0)  # every triangle peaks at 1
    centers = m.argmax(axis=0)
    assert (np.diff(centers) > 0).all()  # increasing centre frequencies
    (m64,) = run("MelWeightMatrix", 17, [np.array(8), np.array(256), np.array(16000), np.array(20.0),
                                         np.array(8000.0)], output_datatype=11)
    assert m64.dtype == np.float64
    np.testing.assert_array_equal(m64.astype(np.float32), m)
