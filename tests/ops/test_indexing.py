"""Indexing kernels (jitort/ops/indexing.py) against torch, onnxruntime one-node models and
hand-written loops over the spec's pseudocode. Exact except running sums/products (TOL)."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest
import torch

from tests.ops.oracle import ort_outputs as ort_run
from tests.ops.oracle import run1
from tests.ops.oracle import run_all as run

# (rtol, atol) per dtype for CumSum/CumProd and float scatter reductions; everything else exact
TOL = {np.dtype(np.float16): (2e-3, 2e-3), np.dtype(ml_dtypes.bfloat16): (2e-2, 2e-2),
       np.dtype(np.float32): (1e-5, 1e-5), np.dtype(np.float64): (1e-12, 1e-12)}

BF16 = np.dtype(ml_dtypes.bfloat16)
RNG = np.random.default_rng(99)


def rand(shape, dtype=np.float32, lo=-50, hi=50):
    dt = np.dtype(dtype)
    if dt == object:
        return np.array([f"s{v}" for v in RNG.integers(0, 20, int(np.prod(shape)))], dtype=object).reshape(shape)
    if dt == np.bool_:
        return RNG.random(shape) > 0.5
    if dt.kind in "iu":
        return RNG.integers(0 if dt.kind == "u" else lo, hi, shape).astype(dt)
    return RNG.standard_normal(shape).astype(np.float32).astype(dt)


def check(got, exp, exact=True):
    exp = np.asarray(exp)
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == exp.shape, (got.shape, exp.shape)
    if exp.dtype == object or got.dtype == object:
        assert got.dtype == object and got.tolist() == exp.tolist()
        return
    assert got.dtype == exp.dtype, (got.dtype, exp.dtype)
    if not exact and got.dtype in TOL:
        rtol, atol = TOL[got.dtype]
        np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64), rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(got, exp)


def i64(*v):
    return np.array(v, dtype=np.int64)


DTYPES = [np.float32, np.float16, BF16, np.int8, np.int64, np.uint32, np.bool_, object]


# ---------------------------------------------------------------- Gather family

@pytest.mark.parametrize("dtype", DTYPES)
def test_gather(dtype):
    for shape, axis, ishape in [((5, 4), 0, (3,)), ((5, 4), -1, (2, 2)), ((3, 0, 2), 2, (4,)),
                                ((6,), 0, ()), ((2, 3, 4), 1, (0, 2)), ((1, 3), 0, (2, 1))]:
        x = rand(shape, dtype)
        a = axis % len(shape)
        idx = RNG.integers(-shape[a], shape[a], ishape)
        flat = torch.from_numpy(np.where(idx < 0, idx + shape[a], idx).reshape(-1))
        pos = torch.from_numpy(np.arange(shape[a])).index_select(0, flat).numpy().reshape(ishape)
        exp = np.take(x, pos, axis=a)  # positions from torch, values moved by plain take
        check(run1("Gather", 13, x, idx, axis=axis), exp)
        check(run1("Gather", 13, x, idx.astype(np.int32), axis=axis), exp)
    with pytest.raises(Exception):
        run1("Gather", 13, rand((3,)), i64(3))


@pytest.mark.parametrize("shape,ishape,axis", [((4, 5), (4, 5), 1), ((4, 5), (2, 3), 0), ((3, 4, 2), (3, 7, 1), 1),
                                               ((3, 0), (3, 0), 0), ((5,), (9,), -1), ((2, 3), (2, 0), 1)])
def test_gather_elements(shape, ishape, axis):
    x = rand(shape)
    d = shape[axis]
    idx = RNG.integers(-d, d, ishape) if d else np.zeros(ishape, np.int64)
    exp = torch.gather(torch.from_numpy(x), axis, torch.from_numpy(np.where(idx < 0, idx + d, idx))).numpy()
    check(run1("GatherElements", 13, x, idx, axis=axis), exp)
    s = rand(shape, object)
    check(run1("GatherElements", 13, s, idx, axis=axis), np.take_along_axis(
        s[tuple(slice(None) if i == axis % len(shape) else slice(0, n) for i, n in enumerate(ishape))],
        np.where(idx < 0, idx + d, idx), axis))


@pytest.mark.parametrize("dshape,ishape,b", [((4, 5, 3), (2, 2), 0), ((4, 5, 3), (6, 3), 0), ((4, 5), (3, 1, 0), 0),
                                             ((2, 4, 3), (2, 5, 1), 1), ((2, 3, 4, 5), (2, 3, 2, 1), 2),
                                             ((3, 0, 2), (2, 1), 0), ((2, 3), (2, 0, 1), 1)])
def test_gather_nd(dshape, ishape, b):
    x = rand(dshape)
    m = ishape[-1]
    dims = dshape[b:b + m]
    idx = np.stack([RNG.integers(-n, n, ishape[:-1]) if n else np.zeros(ishape[:-1], np.int64) for n in dims], -1) \
        if m else np.zeros(ishape, np.int64)
    idx = idx.reshape(ishape).astype(np.int64)
    if 0 in dims and idx.size:
        with pytest.raises(Exception):
            run1("GatherND", 13, x, idx, batch_dims=b)
        return
    exp = ort_run("GatherND", 13, [x, idx], batch_dims=b)[0]
    check(run1("GatherND", 13, x, idx, batch_dims=b), exp)
    if b == 0:
        check(run1("GatherND", 11, x, idx), exp)


# ---------------------------------------------------------------- Scatter family

TORCH_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float64])
def test_scatter_elements(reduction, dtype):
    for shape, ishape, axis in [((4, 5), (3, 5), 0), ((4, 5), (4, 2), -1), ((3, 2, 4), (2, 2, 3), 2), ((5,), (0,), 0)]:
        x = rand(shape, dtype, -3, 4)
        a = axis % len(shape)
        if reduction == "none":  # distinct targets per line so the result is defined
            idx = np.argsort(RNG.random(ishape[:a] + (shape[a],) + ishape[a + 1:]), axis=a)
            idx = np.take(idx, np.arange(ishape[a]), axis=a)
        else:
            idx = RNG.integers(0, shape[a], ishape)
        upd = rand(ishape, dtype, -3, 4)
        neg = np.where(RNG.random(ishape) > 0.5, idx - shape[a], idx)  # same targets, negative form
        t = torch.from_numpy(x.copy())
        ti = torch.from_numpy(idx.astype(np.int64))
        if reduction == "none":
            exp = t.scatter(a, ti, torch.from_numpy(upd)).numpy()
        else:
            exp = t.scatter_reduce(a, ti, torch.from_numpy(upd), TORCH_REDUCE[reduction], include_self=True).numpy()
        check(run1("ScatterElements", 18, x, neg, upd, axis=axis, reduction=reduction), exp, exact=False)
        if reduction == "none":
            check(run1("ScatterElements", 11, x, idx, upd, axis=axis), exp)
            check(run1("Scatter", 9, x, idx, upd, axis=axis), exp)
        assert not np.shares_memory(run1("ScatterElements", 18, x, neg, upd, axis=axis), x)


@pytest.mark.parametrize("dtype", [BF16, np.float16, np.bool_, object, np.uint8])
def test_scatter_elements_dtypes(dtype):
    x = rand((3, 4), dtype)
    idx = np.array([[2, 0], [1, 3], [0, 0]])
    upd = rand((3, 2), dtype)
    exp = x.copy()
    for i, j in itertools.product(range(3), range(2)):
        exp[i, idx[i, j]] = upd[i, j]
    idx[2] = [0, 1]
    exp[2, 1] = upd[2, 1]
    exp[2, 0] = upd[2, 0]
    check(run1("ScatterElements", 18, x, idx, upd, axis=1), exp)
    if dtype is not object:
        got = run1("ScatterElements", 18, x, idx, upd, axis=1, reduction="max")
        ref = x.astype(np.float32)
        np.maximum.at(ref, (np.arange(3)[:, None], idx), upd.astype(np.float32))
        check(got, ref.astype(dtype))


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction):
    for dshape, ishape in [((4, 5, 3), (2, 1)), ((4, 5, 3), (3, 2)), ((4, 5), (2, 3, 2)), ((6,), (4, 1)), ((2, 3), (3, 0))]:
        x = rand(dshape, np.float32)
        m = ishape[-1]
        n = int(np.prod(ishape[:-1]))
        if reduction == "none" and m:  # distinct index tuples
            flat = RNG.permutation(int(np.prod(dshape[:m])))[:n]
            idx = np.stack(np.unravel_index(flat, dshape[:m]), -1).reshape(ishape)
        elif m:
            idx = np.stack([RNG.integers(0, s, ishape[:-1]) for s in dshape[:m]], -1)
        else:
            idx = np.zeros(ishape, np.int64)
        idx = idx.astype(np.int64)
        upd = rand(ishape[:-1] + dshape[m:], np.float32)
        if reduction == "none" and m == 0:
            idx, upd = idx[:1], upd[:1]
        exp = ort_run("ScatterND", 18, [x, idx, upd], reduction=reduction)[0]
        neg = np.where(RNG.random(idx.shape) > 0.5, idx - np.array(dshape[:m], np.int64), idx) if m else idx
        check(run1("ScatterND", 18, x, neg, upd, reduction=reduction), exp, exact=False)
        if reduction == "none":
            check(run1("ScatterND", 11, x, idx, upd), exp)


def test_scatter_nd_strings_and_bf16():
    s = rand((3, 2), object)
    got = run1("ScatterND", 18, s, i64([2], [0]), np.array([["a", "b"], ["c", "d"]], dtype=object))
    check(got, np.array([["c", "d"], s[1].tolist(), ["a", "b"]], dtype=object))
    b = np.ones((4,), BF16)
    got = run1("ScatterND", 18, b, i64([1], [1], [3]), np.array([2, 3, 4], BF16), reduction="mul")
    check(got, np.array([1, 6, 1, 4], BF16))


def _tensor_scatter_loop(past, update, w, mode, axis):
    """The spec's pseudocode, verbatim."""
    axis %= past.ndim
    out = past.copy()
    for prefix in np.ndindex(past.shape[:axis]):
        for s in range(update.shape[axis]):
            c = w[prefix[0]] + s
            if mode == "circular":
                c %= past.shape[axis]
            out[(*prefix, c)] = update[(*prefix, s)]
    return out


@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("axis", [-2, 1, 2])
def test_tensor_scatter(mode, axis):
    past = rand((3, 2, 6, 4))
    seq = min(3, past.shape[axis])
    ushape = list(past.shape)
    ushape[axis] = seq
    update = rand(tuple(ushape))
    L = past.shape[axis]
    w = RNG.integers(0, L - seq + 1 if mode == "linear" else L, 3).astype(np.int64)
    exp = _tensor_scatter_loop(past, update, w, mode, axis)
    check(run1("TensorScatter", 24, past, update, w, mode=mode, axis=axis), exp)
    exp0 = _tensor_scatter_loop(past, update, np.zeros(3, np.int64), mode, axis)
    check(run1("TensorScatter", 24, past, update, mode=mode, axis=axis), exp0)
    if mode == "linear":
        with pytest.raises(Exception):
            run1("TensorScatter", 24, past, update, np.full(3, L - seq + 1, np.int64), axis=axis)


# ---------------------------------------------------------------- selection

@pytest.mark.parametrize("dtype", [np.float32, np.int64, object, BF16])
def test_compress(dtype):
    x = rand((4, 3, 2), dtype)
    for axis, n in [(0, 4), (1, 2), (-1, 2), (None, 24), (2, 5), (0, 0)]:
        cond = RNG.random(n) > 0.4
        if axis is None:
            exp = x.reshape(-1)[:n][cond]
        else:
            a = axis % 3
            sel = np.flatnonzero(cond[:x.shape[a]])
            exp = np.take(x, sel, axis=a)
        check(run1("Compress", 11, x, cond) if axis is None else run1("Compress", 11, x, cond, axis=axis), exp)


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.bool_, object, BF16])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 0, 3), (2, 3, 4)])
def test_non_zero(dtype, shape):
    x = rand(shape, dtype)
    x = np.where(RNG.random(shape) > 0.5, x, np.zeros((), x.dtype) if dtype is not object else "")
    exp = torch.from_numpy((x != ("" if dtype is object else 0)).astype(np.bool_)).nonzero().T.numpy().astype(np.int64)
    check(run1("NonZero", 13, x), exp.reshape(len(shape), -1))


def test_non_zero_scalar():
    check(run1("NonZero", 13, np.array(3.0, np.float32)), np.zeros((0, 1), np.int64))
    check(run1("NonZero", 13, np.array(0, np.int32)), np.zeros((0, 0), np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8, np.float16, BF16, np.float64])
@pytest.mark.parametrize("largest", [1, 0])
def test_topk(dtype, largest):
    for shape, axis, k in [((6, 9), -1, 4), ((6, 9), 0, 6), ((3, 7, 5), 1, 0), ((10,), 0, 10), ((2, 0), 0, 0),
                           ((5, 41), 1, 3), ((40, 3, 2), 0, 9), ((0, 50), 1, 2)]:  # 4k < n: partial selection
        x = RNG.integers(0, 4, shape).astype(dtype)  # many ties: must prefer the lower index
        t = torch.from_numpy(x.astype(np.float32))
        v, i = torch.sort(t, dim=axis, descending=bool(largest), stable=True)
        exp_i = i.narrow(axis, 0, k).numpy().astype(np.int64)
        exp_v = np.take_along_axis(x, exp_i, axis)
        k_in = i64(k)
        got = run("TopK", 11, [x, k_in], num_outputs=2, axis=axis, largest=largest)
        check(got[0], exp_v)
        check(got[1], exp_i)
        if largest:
            got10 = run("TopK", 10, [x, k_in], num_outputs=2, axis=axis)
            got1 = run("TopK", 1, [x], num_outputs=2, axis=axis, k=k)
            for g in (got10, got1):
                check(g[0], exp_v)
                check(g[1], exp_i)
    with pytest.raises(Exception):
        run("TopK", 11, [rand((3,)), i64(4)], num_outputs=2)


def test_topk_vs_ort_random_floats():
    x = rand((8, 33))
    for largest, k in [(1, 5), (0, 33)]:
        exp = ort_run("TopK", 11, [x, i64(k)], n_out=2, largest=largest)
        got = run("TopK", 11, [x, i64(k)], num_outputs=2, largest=largest)
        check(got[0], exp[0])
        check(got[1], exp[1])


@pytest.mark.parametrize("sorted_", [1, 0])
def test_unique_vs_ort(sorted_):
    cases = [(np.array([2, 1, 1, 3, 4, 3]), None), (RNG.integers(0, 5, (4, 6)), None),
             (RNG.integers(0, 2, (6, 3)), 0), (RNG.integers(0, 2, (2, 5, 2)), 1), (RNG.integers(0, 3, (3, 4)), -1),
             (np.zeros((0, 3), np.int64), 0), (np.zeros((0,), np.int64), None),
             (rand((5, 2), object), None), (RNG.integers(-2, 2, (7,)).astype(np.float32), None)]
    for x, axis in cases:
        kw = {"sorted": sorted_} if axis is None else {"sorted": sorted_, "axis": axis}
        exp = ort_run("Unique", 11, [x], n_out=4, **kw)
        got = run("Unique", 11, [x], num_outputs=4, **kw)
        for g, e in zip(got, exp):
            check(g, e)


def test_unique_axis_strings_and_bf16():
    x = np.array([["a", "b"], ["c", "d"], ["a", "b"]], dtype=object)
    y, i, inv, c = run("Unique", 11, [x], num_outputs=4, axis=0)
    check(y, x[:2])
    check(i, i64(0, 1))
    check(inv, i64(0, 1, 0))
    check(c, i64(2, 1))
    b = np.array([[3, 1], [3, 1], [-2, 0]], dtype=BF16)
    y, i, inv, c = run("Unique", 28, [b], num_outputs=4, axis=0, sorted=1)
    check(y, b[[2, 0]])
    check(inv, i64(1, 1, 0))
    z = np.array([0.0, -0.0, 1.0], np.float32)  # -0.0 == 0.0
    check(run("Unique", 11, [z.reshape(3, 1)], num_outputs=4, axis=0)[3], i64(2, 1))


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(axis):
    ind = np.array([[0, 2, -1], [5, -4, 1]], np.int64)
    depth = 4
    fixed = np.where(ind < 0, ind + depth, ind)
    valid = (fixed >= 0) & (fixed < depth)
    oh = torch.nn.functional.one_hot(torch.from_numpy(np.where(valid, fixed, 0)), depth).numpy() * valid[..., None]
    hot = np.moveaxis(oh, -1, axis)
    for vals in [np.array([0, 1], np.float32), np.array([-2, 7], np.int32), np.array(["no", "yes"], dtype=object),
                 np.array([0, 1], BF16)]:
        exp = np.where(hot > 0, vals[1], vals[0])
        for dt in (np.int64, np.int32, np.float32):
            check(run1("OneHot", 11, ind.astype(dt), np.array(depth, dt), vals, axis=axis), exp)
    check(run1("OneHot", 11, ind, np.array([4.0], np.float32), np.array([0, 1], np.float32), axis=axis),
          ort_run("OneHot", 11, [ind, np.array([4.0], np.float32), np.array([0, 1], np.float32)], axis=axis)[0])


def _reverse_loop(x, lens, ba, ta):
    out = x.copy()
    for b, n in enumerate(lens):
        for t in range(n):
            dst = [slice(None)] * x.ndim
            src = [slice(None)] * x.ndim
            dst[ba], dst[ta] = b, t
            src[ba], src[ta] = b, n - 1 - t
            out[tuple(dst)] = x[tuple(src)]
    return out


@pytest.mark.parametrize("ba,ta", [(1, 0), (0, 1)])
@pytest.mark.parametrize("dtype", [np.float32, object, BF16])
def test_reverse_sequence(ba, ta, dtype):
    for shape in [(5, 4, 3), (4, 5), (1, 1, 2)]:
        B, T = shape[ba], shape[ta]
        x = rand(shape, dtype)
        lens = RNG.integers(0, T + 1, B).astype(np.int64)
        check(run1("ReverseSequence", 10, x, lens, batch_axis=ba, time_axis=ta), _reverse_loop(x, lens, ba, ta))


# ---------------------------------------------------------------- CumSum / CumProd

@pytest.mark.parametrize("op_name", ["CumSum", "CumProd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint32, np.uint64, np.float16, BF16])
def test_cumulative(op_name, dtype):
    tfn = torch.cumsum if op_name == "CumSum" else torch.cumprod
    ident = 0 if op_name == "CumSum" else 1
    opset = 14 if op_name == "CumSum" else 26
    for shape, axis in [((4, 5), 1), ((3, 4, 2), -3), ((7,), 0), ((2, 0, 3), 1), ((3, 1), 1)]:
        x = RNG.integers(1, 4, shape).astype(dtype) if op_name == "CumProd" else rand(shape, dtype, -9, 10)
        a = axis % len(shape)
        base = x.astype(np.float64) if x.dtype.kind == "f" or x.dtype == BF16 else x.astype(np.int64)
        for exclusive, reverse in itertools.product((0, 1), (0, 1)):
            t = torch.from_numpy(base)
            if reverse:
                t = t.flip(a)
            r = tfn(t, a)
            if exclusive:
                r = torch.cat([torch.full_like(r.narrow(a, 0, min(1, r.shape[a])), ident), r.narrow(a, 0, max(r.shape[a] - 1, 0))], a)
                r = r.narrow(a, 0, x.shape[a])
            if reverse:
                r = r.flip(a)
            exp = r.numpy().astype(dtype)
            for ax in (np.array(axis, np.int64), np.array([axis], np.int32)):
                got = run1(op_name, opset, x, ax, exclusive=exclusive, reverse=reverse)
                check(got, exp, exact=False)


def test_cumsum_integer_wraparound():
    x = np.array([120, 10], np.int8)
    check(run1("CumSum", 11, x, np.array(0)), np.array([120, -126], np.int8))
