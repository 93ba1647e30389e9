"""Reductions and ArgMax/ArgMin against torch / NumPy float64 oracles."""

import ml_dtypes
import numpy as np
import pytest
import torch

from jitort.ops.registry import KernelContext, call, lookup, registered_ops

registered_ops()  # load every family

BF16 = np.dtype(ml_dtypes.bfloat16)
# dtype -> (rtol, atol) against a float64 oracle
TOL = {
    np.dtype(np.float64): (1e-12, 1e-12),
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float16): (2e-3, 2e-3),
    BF16: (1.6e-2, 1.6e-2),
}
RNG = np.random.default_rng(0)


def run(name, opset, inputs, **attrs):
    return call(lookup(name, "", opset), list(inputs), attrs, KernelContext(opset=opset))


def rand(shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        lo = 0 if dtype.kind == "u" else -5
        return RNG.integers(lo, 6, size=shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def close(got, want, dtype):
    rtol, atol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol, equal_nan=True)


ORACLES = {
    "ReduceSum": lambda x, ax, kd: np.sum(x, axis=ax, keepdims=kd),
    "ReduceMean": lambda x, ax, kd: np.mean(x, axis=ax, keepdims=kd),
    "ReduceMax": lambda x, ax, kd: np.max(x, axis=ax, keepdims=kd),
    "ReduceMin": lambda x, ax, kd: np.min(x, axis=ax, keepdims=kd),
    "ReduceProd": lambda x, ax, kd: np.prod(x, axis=ax, keepdims=kd),
    "ReduceL1": lambda x, ax, kd: np.sum(np.abs(x), axis=ax, keepdims=kd),
    "ReduceL2": lambda x, ax, kd: np.sqrt(np.sum(x * x, axis=ax, keepdims=kd)),
    "ReduceLogSum": lambda x, ax, kd: np.log(np.sum(x, axis=ax, keepdims=kd)),
    "ReduceLogSumExp": lambda x, ax, kd: torch.logsumexp(
        torch.from_numpy(x), dim=ax if ax is not None else tuple(range(x.ndim)), keepdim=kd).numpy(),
    "ReduceSumSquare": lambda x, ax, kd: np.sum(x * x, axis=ax, keepdims=kd),
}


@pytest.mark.parametrize("name", sorted(ORACLES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, BF16])
@pytest.mark.parametrize("shape,axes", [((3, 5, 7), [1]), ((2, 1, 9), [0, 2]), ((4, 3), None), ((6,), [-1]),
                                         ((2, 3, 4, 5), [-3, 3])])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_float(name, dtype, shape, axes, keepdims):
    x = rand(shape, dtype)
    if name == "ReduceLogSum":
        x = np.abs(x) + np.asarray(0.1, dtype)
    x64 = x.astype(np.float64)
    ax = None if axes is None else tuple(a % len(shape) for a in axes)
    want = ORACLES[name](x64, ax, bool(keepdims))
    ax_in = None if axes is None else np.array(axes, np.int64)
    opset = 13 if name == "ReduceSum" else 18
    (got,) = run(name, opset, [x, ax_in], keepdims=keepdims)
    assert got.dtype == x.dtype and got.shape == np.shape(want)
    close(got, want, dtype)
    # the attribute form (opset 11) agrees
    attrs = {"keepdims": keepdims} | ({} if axes is None else {"axes": list(axes)})
    (old,) = run(name, 11, [x], **attrs)
    np.testing.assert_array_equal(old.astype(np.float64), got.astype(np.float64))


@pytest.mark.parametrize("name", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                  "ReduceSumSquare", "ReduceMean"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64])
def test_reduce_int(name, dtype):
    x = rand((4, 5, 3), dtype)
    (got,) = run(name, 18, [x, np.array([1], np.int64)], keepdims=0)
    assert got.dtype == x.dtype
    x64 = x.astype(np.int64)
    if name == "ReduceMean":  # C-style truncation
        s = x64.sum(axis=1)
        want = np.trunc(s / 5).astype(np.int64)
    else:
        want = ORACLES[name](x64, (1,), False)
    np.testing.assert_array_equal(got.astype(np.int64), want)


def test_int_mean_negative_truncates():
    x = np.array([[-3, -4], [3, 4]], np.int32)
    (got,) = run("ReduceMean", 18, [x, np.array([1], np.int64)], keepdims=0)
    np.testing.assert_array_equal(got, np.array([-3, 3], np.int32))


@pytest.mark.parametrize("name,want", [
    ("ReduceSum", 0.0), ("ReduceProd", 1.0), ("ReduceMax", -np.inf), ("ReduceMin", np.inf),
    ("ReduceL1", 0.0), ("ReduceL2", 0.0), ("ReduceSumSquare", 0.0), ("ReduceLogSum", -np.inf),
    ("ReduceLogSumExp", -np.inf)])
def test_empty_set(name, want):
    x = np.zeros((2, 0, 3), np.float32)
    opset = 13 if name == "ReduceSum" else 20
    (got,) = run(name, opset, [x, np.array([1], np.int64)], keepdims=1)
    assert got.shape == (2, 1, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.full((2, 1, 3), want, np.float32))


def test_empty_set_int_extremes():
    x = np.zeros((0, 3), np.int32)
    (mx,) = run("ReduceMax", 18, [x, np.array([0], np.int64)], keepdims=0)
    (mn,) = run("ReduceMin", 18, [x, np.array([0], np.int64)], keepdims=0)
    np.testing.assert_array_equal(mx, np.full(3, np.iinfo(np.int32).min, np.int32))
    np.testing.assert_array_equal(mn, np.full(3, np.iinfo(np.int32).max, np.int32))


def test_bool_max_min():
    x = np.array([[True, False], [False, False]])
    (mx,) = run("ReduceMax", 20, [x, np.array([1], np.int64)], keepdims=0)
    (mn,) = run("ReduceMin", 20, [x, np.array([0], np.int64)], keepdims=0)
    np.testing.assert_array_equal(mx, [True, False])
    np.testing.assert_array_equal(mn, [False, False])
    assert mx.dtype == np.bool_


@pytest.mark.parametrize("name,fn", [("ReduceSum", lambda x: x), ("ReduceSumSquare", np.square),
                                     ("ReduceL1", np.abs), ("ReduceMax", lambda x: x)])
def test_noop_with_empty_axes(name, fn):
    x = rand((3, 4), np.float32)
    opset = 13 if name == "ReduceSum" else 18
    (got,) = run(name, opset, [x, np.array([], np.int64)], keepdims=1, noop_with_empty_axes=1)
    np.testing.assert_allclose(got, fn(x), rtol=1e-6)
    (allr,) = run(name, opset, [x], keepdims=0)  # axes missing -> reduce all
    assert allr.shape == ()


def test_rank0_and_logsumexp_stability():
    (got,) = run("ReduceSum", 13, [np.array(2.5, np.float32)], keepdims=1)
    assert got.shape == () and got == 2.5
    x = np.array([[1000.0, 1000.0], [-np.inf, -np.inf]], np.float32)
    (got,) = run("ReduceLogSumExp", 18, [x, np.array([1], np.int64)], keepdims=0)
    np.testing.assert_allclose(got, [1000 + np.log(2), -np.inf], rtol=1e-6)


@pytest.mark.parametrize("is_max", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16, np.int32, np.uint8, np.int64])
@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_argmax_argmin(is_max, dtype, last, keepdims):
    x = RNG.integers(0, 4, size=(3, 7, 5)).astype(dtype)  # many ties
    name = "ArgMax" if is_max else "ArgMin"
    for axis in (0, 1, -1):
        (got,) = run(name, 13, [x], axis=axis, keepdims=keepdims, select_last_index=last)
        t = torch.from_numpy(x.astype(np.float32))
        if last:
            t = torch.flip(t, dims=[axis])
        want = (torch.argmax if is_max else torch.argmin)(t, dim=axis, keepdim=bool(keepdims)).numpy()
        if last:
            want = x.shape[axis] - 1 - want
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
