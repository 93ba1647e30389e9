"""Softmax / LogSoftmax / Hardmax and the NLL / softmax-cross-entropy losses against torch."""

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jitort.ops.registry import KernelContext, call, lookup, registered_ops

registered_ops()

BF16 = np.dtype(ml_dtypes.bfloat16)
# dtype -> (rtol, atol) against a float64 oracle
TOL = {
    np.dtype(np.float64): (1e-10, 1e-12),
    np.dtype(np.float32): (1e-5, 1e-6),
    np.dtype(np.float16): (2e-3, 2e-3),
    BF16: (1.6e-2, 1.6e-2),
}
RNG = np.random.default_rng(2)


def run(name, opset, inputs, num_outputs=1, **attrs):
    return call(lookup(name, "", opset), list(inputs), attrs, KernelContext(num_outputs=num_outputs, opset=opset))


def check(got, want, dtype):
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    rtol, atol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol)


def t64(x):
    return torch.from_numpy(np.asarray(x).astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, BF16])
@pytest.mark.parametrize("shape,axis", [(s, a) for s in [(3, 5), (2, 3, 4), (1, 7), (4, 1, 6), (5,)]
                                        for a in (0, -1, 1) if a < len(s)])
def test_softmax_v13(dtype, shape, axis):
    x = (RNG.standard_normal(shape) * 3).astype(dtype)
    (sm,) = run("Softmax", 13, [x], axis=axis)
    (lsm,) = run("LogSoftmax", 13, [x], axis=axis)
    check(sm, torch.softmax(t64(x), dim=axis).numpy(), dtype)
    check(lsm, torch.log_softmax(t64(x), dim=axis).numpy(), dtype)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_v11_coerces_to_2d(axis):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    a = axis % 3
    flat = t64(x.reshape(int(np.prod(x.shape[:a])), -1))
    for name, fn in (("Softmax", torch.softmax), ("LogSoftmax", torch.log_softmax)):
        (got,) = run(name, 11, [x], axis=axis)
        check(got, fn(flat, dim=1).numpy().reshape(x.shape), np.float32)
    (hm,) = run("Hardmax", 11, [x], axis=axis)
    want = F.one_hot(flat.argmax(dim=1), flat.shape[1]).numpy().reshape(x.shape)
    np.testing.assert_array_equal(hm, want.astype(np.float32))


def test_softmax_default_axis_by_version():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    (v1,) = run("Softmax", 1, [x])  # axis=1, coerced: normalize over 3*4
    (v13,) = run("Softmax", 13, [x])  # axis=-1
    np.testing.assert_allclose(v1.reshape(2, -1).sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(v13.sum(-1), 1, rtol=1e-6)


def test_softmax_stability_and_inf():
    x = np.array([[1e4, 1e4 - 1, -np.inf], [-np.inf, 0.0, -np.inf]], np.float32)
    (sm,) = run("Softmax", 13, [x])
    want = torch.softmax(t64(x), dim=-1).numpy()
    check(sm, want, np.float32)
    (lsm,) = run("LogSoftmax", 13, [x])
    assert np.isfinite(lsm[0, :2]).all() and np.isneginf(lsm[0, 2])


def test_empty():
    x = np.zeros((0, 4), np.float32)
    for name in ("Softmax", "LogSoftmax", "Hardmax"):
        (got,) = run(name, 13, [x])
        assert got.shape == (0, 4) and got.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("axis", [0, -1])
def test_hardmax_v13_first_max(dtype, axis):
    x = RNG.integers(0, 3, size=(4, 6)).astype(dtype)  # ties -> first index
    (got,) = run("Hardmax", 13, [x], axis=axis)
    idx = torch.from_numpy(x.astype(np.float32)).argmax(dim=axis)
    want = F.one_hot(idx, x.shape[axis]).numpy()
    if axis == 0:
        want = want.T
    np.testing.assert_array_equal(got, want.astype(dtype))
    assert got.dtype == np.dtype(dtype)


LOSS_CASES = [
    ((5, 4), (5,)),
    ((3, 4, 6), (3, 6)),
    ((2, 3, 4, 5), (2, 4, 5)),
]


@pytest.mark.parametrize("xs,ts", LOSS_CASES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_losses(xs, ts, reduction, weighted, ignore, dtype):
    c = xs[1]
    x = RNG.standard_normal(xs).astype(dtype)
    t = RNG.integers(0, c, size=ts).astype(np.int64)
    if ignore is not None:
        t.reshape(-1)[::3] = ignore  # an ignore_index outside [0, C) must work too
    w = RNG.uniform(0.5, 2.0, size=(c,)).astype(dtype) if weighted else None
    attrs = {"reduction": reduction} | ({} if ignore is None else {"ignore_index": ignore})
    tt = torch.from_numpy(t)
    wt = None if w is None else t64(w)
    ii = -100 if ignore is None else ignore

    inputs = [x, t] + ([w] if weighted else [])
    (nll,) = run("NegativeLogLikelihoodLoss", 22, inputs, **attrs)
    want = F.nll_loss(t64(x), tt, weight=wt, ignore_index=ii, reduction=reduction).numpy()
    check(nll, np.asarray(want), dtype)

    loss, logp = run("SoftmaxCrossEntropyLoss", 13, inputs, num_outputs=2, **attrs)
    want = F.cross_entropy(t64(x), tt, weight=wt, ignore_index=ii, reduction=reduction).numpy()
    check(loss, np.asarray(want), dtype)
    check(logp, torch.log_softmax(t64(x), dim=1).numpy(), dtype)
    (only,) = run("SoftmaxCrossEntropyLoss", 13, inputs, **attrs)
    np.testing.assert_array_equal(only, loss)


def test_loss_int32_target_and_bad_index():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    t = np.array([0, 3, 2], np.int32)
    (got,) = run("NegativeLogLikelihoodLoss", 13, [x, t], reduction="sum")
    check(got, np.asarray(-x[[0, 1, 2], t].astype(np.float64).sum()), np.float32)
    with pytest.raises(ValueError):
        run("NegativeLogLikelihoodLoss", 13, [x, np.array([0, 4, 1], np.int64)])
