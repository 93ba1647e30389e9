"""jitort.backends.cpu.row_kernels vs the registry's reference kernels (and float64 NumPy).

Shapes: rows 0, 1, 7, 129; widths 0, 1, 3, 768, 1001; 1 and 2 threads; float32 and float16.
In place (out is x, or another view of x's buffer), special rows at the edges of the row
chunks (the kernels reduce row i+1 inside row i's last pass), GELU beyond its cut.
Tolerance: |y - ref| <= tol * max(1, max|ref| of the row), tol = 1e-5 (float32), 2e-3 (float16).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")
from jitort.backends.cpu import row_kernels as rk
from jitort.ops.registry import KernelContext, find

TOL = {np.float32: 1e-5, np.float16: 2e-3}
ROWS = (1, 7, 129)
WIDTHS = (1, 3, 768, 1001)


def ref(name, domain, version, *args, num_outputs=1, **attrs):
    d = find(name, domain, version)
    assert d is not None, (name, domain, version)
    if d.wants_ctx:
        return d.kernel(KernelContext(num_outputs=num_outputs), *args, **attrs)
    return d.kernel(*args, **attrs)


def close(y, r, dtype=np.float32):
    y, r = np.asarray(y), np.asarray(r)
    assert y.shape == r.shape and y.dtype == r.dtype, (y.shape, r.shape, y.dtype, r.dtype)
    if r.size == 0:
        return
    y64, r64 = y.astype(np.float64), r.astype(np.float64)
    with np.errstate(invalid="ignore"):
        _close(y64, r64, dtype)


def _close(y64, r64, dtype):
    scale = np.maximum(1.0, np.max(np.abs(np.where(np.isfinite(r64), r64, 0)), axis=-1, keepdims=True))
    same_special = (~np.isfinite(r64)) & ((y64 == r64) | (np.isnan(y64) & np.isnan(r64)))
    err = np.where(same_special, 0.0, np.abs(y64 - r64) / scale)
    assert np.all(err <= TOL[dtype]), f"max scaled err {np.nanmax(err)} (nan: {np.isnan(err).sum()})"


def rand(rng, shape, dtype=np.float32, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# -- LayerNorm ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("width", WIDTHS)
def test_layer_norm(rng, rows, width, threads):
    x = rand(rng, (rows, width), scale=3.0, shift=5.0)      # an offset mean tests the two passes
    g, b = rand(rng, (width,)), rand(rng, (width,))
    for eps in (1e-5, 1e-12, 0.1):
        out = np.full_like(x, np.nan)
        rk.layer_norm(x, g, b, eps, out, threads=threads)
        close(out, ref("LayerNorm", "jitort", 1, x, g, b, epsilon=eps))
        close(out, ref("LayerNormalization", "", 17, x, g, b, epsilon=eps)[0])
    # float64 oracle too (the reference itself computes in float32)
    x64 = x.astype(np.float64)
    m = x64.mean(-1, keepdims=True)
    y64 = (x64 - m) / np.sqrt(((x64 - m) ** 2).mean(-1, keepdims=True) + 0.1) * g + b
    close(out.astype(np.float64), y64)


@pytest.mark.parametrize("shape,axis", [((2, 3, 5), -1), ((2, 3, 5), 1), ((4, 0, 3), -1),
                                        ((0, 6), -1), ((5,), 0), ((3, 7, 129), -1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_layer_norm_nd_broadcast(rng, shape, axis, dtype):
    x = rand(rng, shape, dtype, scale=2.0)
    ns = shape[axis % len(shape):]
    g = rand(rng, ns, dtype)
    b = rand(rng, (1,) * (len(ns) - 1) + ns[-1:], dtype)      # broadcast beta
    y = rk.layer_norm_nd(x, g, b, axis=axis, epsilon=1e-5, threads=2)
    close(y, ref("LayerNorm", "jitort", 1, x, g, b, axis=axis, epsilon=1e-5), dtype)
    y = rk.layer_norm_nd(x, g, None, axis=axis, threads=1)
    close(y, ref("LayerNorm", "jitort", 1, x, g, axis=axis), dtype)
    gs = np.asarray([1.5], dtype)                                  # scalar-like gamma
    y = rk.layer_norm_nd(x, gs, None, axis=axis)
    close(y, ref("LayerNorm", "jitort", 1, x, gs, axis=axis), dtype)


def test_layer_norm_inplace_and_errors(rng):
    x = rand(rng, (7, 33))
    g, b = rand(rng, (33,)), rand(rng, (33,))
    r = ref("LayerNorm", "jitort", 1, x, g, b)
    rk.layer_norm(x, g, b, 1e-5, x)                               # out aliases x
    close(x, r)
    with pytest.raises(TypeError):
        rk.layer_norm(x.astype(np.float64), g, b, 1e-5, x)
    with pytest.raises(ValueError):
        rk.layer_norm(x, rand(rng, (5,)), b, 1e-5, np.empty_like(x))
    with pytest.raises(TypeError):
        rk.layer_norm_nd(np.zeros((2, 3), np.int32), g[:3])


# -- SkipLayerNorm -----------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("width", WIDTHS)
def test_skip_layer_norm(rng, rows, width, threads):
    x, skip = rand(rng, (rows, width)), rand(rng, (rows, width))
    g, b, bias = rand(rng, (width,)), rand(rng, (width,)), rand(rng, (width,))
    for use_b, use_bias in ((True, True), (False, False), (True, False), (False, True)):
        bb, bi = (b if use_b else None), (bias if use_bias else None)
        out, sm = np.empty_like(x), np.empty_like(x)
        rk.skip_layer_norm(x, skip, g, bb, bi, 1e-5, out, sm, threads=threads)
        ry, rs = ref("SkipLayerNorm", "jitort", 1, x, skip, g, bb, bi, num_outputs=2, epsilon=1e-5)
        close(out, ry)
        np.testing.assert_array_equal(sm, rs)                    # the sum is exact float32
        out2 = np.empty_like(x)
        rk.skip_layer_norm(x, skip, g, bb, bi, 1e-5, out2, None, threads=threads)
        np.testing.assert_array_equal(out2, out)


@pytest.mark.parametrize("xs,ss", [((2, 7, 16), (7, 16)), ((2, 7, 16), (1, 7, 16)),
                                   ((3, 5, 9), (9,)), ((3, 5, 9), (3, 1, 9)), ((2, 4, 6), (2, 4, 6)),
                                   ((0, 4, 6), (4, 6)), ((2, 3, 0), (3, 0))])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the reference's means of empty rows
def test_skip_layer_norm_nd(rng, xs, ss, dtype):
    x, skip = rand(rng, xs, dtype), rand(rng, ss, dtype)
    h = xs[-1]
    g, b, bias = rand(rng, (h,), dtype), rand(rng, (h,), dtype), rand(rng, (h,), dtype)
    y, s = rk.skip_layer_norm_nd(x, skip, g, b, bias, epsilon=1e-5, with_sum=True, threads=2)
    ry, rs = ref("SkipLayerNorm", "jitort", 1, x, skip, g, b, bias, num_outputs=2, epsilon=1e-5)
    close(y, ry, dtype)
    np.testing.assert_array_equal(s, rs)
    y = rk.skip_layer_norm_nd(x, skip, g, epsilon=1e-3)
    close(y, ref("SkipLayerNorm", "jitort", 1, x, skip, g, epsilon=1e-3), dtype)


# -- RMSNorm -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("width", WIDTHS)
def test_rms_norm(rng, rows, width, threads):
    x = rand(rng, (rows, width), scale=4.0, shift=1.0)
    g = rand(rng, (width,))
    for eps, scale in ((1e-5, g), (1e-6, None), (0.5, g)):
        out = np.empty_like(x)
        rk.rms_norm(x, scale, eps, out, threads=threads)
        r = ref("RMSNorm", "jitort", 1, x, scale, epsilon=eps) if scale is not None else \
            ref("RMSNorm", "jitort", 1, x, epsilon=eps)
        close(out, r)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rms_norm_nd(rng, dtype):
    x = rand(rng, (2, 3, 17), dtype)
    g = rand(rng, (3, 17), dtype)
    close(rk.rms_norm_nd(x, g, axis=1, threads=2), ref("RMSNorm", "jitort", 1, x, g, axis=1), dtype)
    close(rk.rms_norm_nd(x, None), ref("RMSNorm", "jitort", 1, x), dtype)
    close(rk.rms_norm_nd(np.zeros((0, 5), dtype), None), np.zeros((0, 5), dtype), dtype)


# -- Softmax / LogSoftmax ----------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("width", WIDTHS)
def test_softmax(rng, rows, width, threads):
    x = rand(rng, (rows, width), scale=5.0, shift=30.0)          # needs the max shift
    out = np.empty_like(x)
    close(rk.softmax(x, out, threads=threads), ref("Softmax", "", 13, x, axis=-1))
    close(rk.log_softmax(x, out, threads=threads), ref("LogSoftmax", "", 13, x, axis=-1))
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(-1, keepdims=True))
    close(rk.softmax(x, out, threads=threads).astype(np.float64), e / e.sum(-1, keepdims=True))


def test_softmax_special_values():
    x = np.array([[0.0, 1.0, 2.0], [-np.inf, 0.0, 1.0], [np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0],
                  [-np.inf, -np.inf, -np.inf], [-100.0, 0.0, 100.0]], np.float32)
    for name, fn in (("Softmax", rk.softmax_nd), ("LogSoftmax", rk.log_softmax_nd)):
        with np.errstate(all="ignore"):
            r = ref(name, "", 13, x, axis=-1)
        close(fn(x, threads=1), r)
        close(fn(x, threads=2), r)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(2, 3, 11), (4, 0), (0, 4), (7,), (2, 1, 1)])
def test_softmax_nd(rng, dtype, shape):
    x = rand(rng, shape, dtype, scale=3.0)
    close(rk.softmax_nd(x, threads=2), ref("Softmax", "", 13, x, axis=-1), dtype)
    close(rk.log_softmax_nd(x), ref("LogSoftmax", "", 13, x, axis=-1), dtype)


# -- bias + GELU -------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("rows,width", [(1, 1), (7, 3), (129, 768), (7, 1001), (3, 3072), (0, 5), (5, 0)])
def test_bias_gelu(rng, rows, width, approximate, threads):
    x, b = rand(rng, (rows, width), scale=3.0), rand(rng, (width,))
    out = np.empty_like(x)
    rk.bias_gelu(x, b, out, approximate, threads=threads)
    close(out, ref("Gelu", "jitort", 1, (x + b).astype(np.float32), approximate=approximate))
    if approximate == "none":
        close(out, ref("BiasGelu", "com.microsoft", 1, x, b))
    rk.bias_gelu(x, None, out, approximate, threads=threads)
    close(out, ref("Gelu", "jitort", 1, x, approximate=approximate))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_bias_gelu_nd(rng, dtype):
    x, b = rand(rng, (2, 5, 33), dtype, scale=2.0), rand(rng, (33,), dtype)
    w = (x.astype(np.float32) + b.astype(np.float32)).astype(np.float32)
    r = ref("Gelu", "jitort", 1, w, approximate="tanh").astype(dtype)
    close(rk.bias_gelu_nd(x, b, approximate="tanh", threads=2), r, dtype)
    with pytest.raises(ValueError):
        rk.bias_gelu_nd(x, b, approximate="fast")


# -- in place, chunk edges, special values -------------------------------------------------------

def _all_kernels(x, rng):
    """name -> (fn(x, out, threads), reference(x)) for every 2-D kernel on x's width."""
    n = x.shape[1]
    g, b, bias = rand(rng, (n,)), rand(rng, (n,)), rand(rng, (n,))
    skip = rand(rng, x.shape)
    return {
        "layer_norm": (lambda a, o, t: rk.layer_norm(a, g, b, 1e-5, o, t),
                       lambda a: ref("LayerNorm", "jitort", 1, a, g, b, epsilon=1e-5)),
        "skip_layer_norm": (lambda a, o, t: rk.skip_layer_norm(a, skip, g, b, bias, 1e-5, o, None, t),
                            lambda a: ref("SkipLayerNorm", "jitort", 1, a, skip, g, b, bias,
                                          epsilon=1e-5)),
        "rms_norm": (lambda a, o, t: rk.rms_norm(a, g, 1e-5, o, t),
                     lambda a: ref("RMSNorm", "jitort", 1, a, g, epsilon=1e-5)),
        "softmax": (lambda a, o, t: rk.softmax(a, o, t), lambda a: ref("Softmax", "", 13, a, axis=-1)),
        "log_softmax": (lambda a, o, t: rk.log_softmax(a, o, t),
                        lambda a: ref("LogSoftmax", "", 13, a, axis=-1)),
        "gelu_erf": (lambda a, o, t: rk.bias_gelu(a, bias, o, "none", t),
                     lambda a: ref("Gelu", "jitort", 1, (a + bias).astype(np.float32))),
        "gelu_tanh": (lambda a, o, t: rk.bias_gelu(a, bias, o, "tanh", t),
                      lambda a: ref("Gelu", "jitort", 1, (a + bias).astype(np.float32),
                                    approximate="tanh")),
    }


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows,width", [(1, 1), (2, 3), (3, 17), (7, 768), (129, 33), (4, 1001)])
def test_in_place_and_same_buffer_views(rng, rows, width, threads):
    """out is x (and out a different view of x's buffer) gives the reference result."""
    x = rand(rng, (rows, width), scale=3.0, shift=1.0)
    for name, (fn, reference) in _all_kernels(x, rng).items():
        r = reference(x)
        a = x.copy()
        assert fn(a, a, threads) is a
        close(a, r)
        buf = x.copy().reshape(-1)
        v1, v2 = buf.reshape(rows, width), buf.reshape(rows, width)   # two objects, one buffer
        assert v1 is not v2
        fn(v1, v2, threads)
        close(v2, r)
        o = np.full_like(x, np.nan)
        fn(x, o, threads)
        close(o, r)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [1, 2, 3, 5])
def test_softmax_special_rows_at_chunk_edges(rows, threads):
    """The row max of row i+1 is computed in row i's exp pass: special rows first, last, alone."""
    width = 37
    specials = [(0, np.inf), (1, -np.inf), (2, np.nan), (5, 1e30), (7, -1e30)]
    base = np.linspace(-3, 3, width, dtype=np.float32)
    for r in range(rows):
        for pos, val in specials:
            x = np.tile(base, (rows, 1))
            x[r, pos] = val
            for full in (False, True):
                if full:
                    x[r, :] = val
                for name, fn in (("Softmax", rk.softmax_nd), ("LogSoftmax", rk.log_softmax_nd)):
                    with np.errstate(all="ignore"):
                        want = ref(name, "", 13, x, axis=-1)
                    close(fn(x, threads=threads), want)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_far_and_special_inputs(approximate):
    """Beyond the cut GELU is relu(x) (to within 1e-7 absolute); inf/nan pass through."""
    x = np.array([[0.0, -0.0, 1e-40, -1e-40, 5.4, 5.6, 5.7, -5.4, -5.6, -5.7, 6.0, -6.0, 20.0,
                   -20.0, 1e4, -1e4, 3e38, -3e38, np.inf, -np.inf, np.nan]], np.float32)
    y = rk.bias_gelu(x, None, np.empty_like(x), approximate)
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if approximate == "none":
            from scipy.special import erfc
            want = 0.5 * x64 * erfc(-x64 / np.sqrt(2.0))
        else:
            from scipy.special import expit
            want = x64 * expit(2 * np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3))
    want = np.where(x64 == -np.inf, 0.0, want)
    fin = np.isfinite(x[0])
    err = np.abs(y[0, fin].astype(np.float64) - want[0, fin])
    assert np.all(err <= np.maximum(1e-7, 4 * np.spacing(np.abs(want[0, fin]).astype(np.float32)))), err
    assert y[0, -3] == np.inf and y[0, -2] == 0.0 and np.isnan(y[0, -1])
