"""Shape / data-movement kernels (jitort/ops/shape.py) against torch, onnxruntime one-node models,
and hand-built NumPy expectations. All of these ops move data, so comparisons are exact except
Range on floats (TOL)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from onnx import TensorProto

from tests.ops.oracle import ort_outputs as ort_run
from tests.ops.oracle import run1
from tests.ops.oracle import run_all as run

# (rtol, atol) per dtype; exact unless listed
TOL = {np.dtype(np.float16): (1e-3, 1e-3), np.dtype(ml_dtypes.bfloat16): (1e-2, 1e-2),
       np.dtype(np.float32): (1e-6, 1e-6), np.dtype(np.float64): (1e-12, 1e-12)}

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.float32, np.float16, BF16, np.int8, np.int64, np.uint64, np.bool_, object]
RNG = np.random.default_rng(1234)


def rand(shape, dtype=np.float32):
    dt = np.dtype(dtype)
    if dt == object:
        return np.array([f"s{v}" for v in RNG.integers(0, 50, int(np.prod(shape)))], dtype=object).reshape(shape)
    if dt == np.bool_:
        return RNG.random(shape) > 0.5
    if dt.kind in "iu":
        return RNG.integers(0 if dt.kind == "u" else -50, 50, shape).astype(dt)
    return RNG.standard_normal(shape).astype(np.float32).astype(dt)


def check(got, exp):
    """Same shape and dtype; exact values (with TOL for floats)."""
    exp = np.asarray(exp)
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == exp.shape, (got.shape, exp.shape)
    if exp.dtype == object or got.dtype == object:
        assert got.dtype == object
        assert got.tolist() == exp.tolist()
        return
    assert got.dtype == exp.dtype, (got.dtype, exp.dtype)
    if got.dtype in TOL:
        rtol, atol = TOL[got.dtype]
        np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64), rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(got, exp)


def i64(*v):
    return np.array(v, dtype=np.int64)


# ---------------------------------------------------------------- Shape, Size, Identity, Constant

@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 0, 2), (2, 3, 5, 1)])
def test_shape_and_size(shape):
    x = np.zeros(shape, np.float32)
    check(run1("Shape", 13, x), np.array(shape, np.int64))
    check(run1("Size", 13, x), np.array(int(np.prod(shape)), np.int64))
    for start, end in [(0, None), (1, None), (-1, None), (-10, 10), (2, 1), (1, -1), (0, 0)]:
        attrs = {"start": start} if end is None else {"start": start, "end": end}
        check(run1("Shape", 15, x, **attrs), ort_run("Shape", 15, [x], **attrs)[0])


def test_identity_passes_anything():
    x = rand((2, 3))
    check(run1("Identity", 16, x), x)
    seq = [rand((2,)), rand((3,))]
    assert run1("Identity", 16, seq) is seq
    assert run1("Identity", 16, None) is None


def test_constant_all_attributes():
    t = rand((2, 3), np.int8)
    check(run1("Constant", 13, value=t), t)
    check(run1("Constant", 13, sparse_value=t), t)
    check(run1("Constant", 13, value_float=1.5), np.array(1.5, np.float32))
    check(run1("Constant", 13, value_floats=[1.0, 2.5]), np.array([1, 2.5], np.float32))
    check(run1("Constant", 13, value_int=7), np.array(7, np.int64))
    check(run1("Constant", 13, value_ints=[]), np.zeros(0, np.int64))
    check(run1("Constant", 13, value_string="ab"), np.array("ab", dtype=object))
    check(run1("Constant", 13, value_strings=["a", "bc"]), np.array(["a", "bc"], dtype=object))


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_, BF16, np.float16, np.uint8])
def test_constant_of_shape(dtype):
    v = np.array([1], dtype=dtype)
    for shape in [(), (0,), (2, 3), (1, 0, 4)]:
        got = run1("ConstantOfShape", 21, np.array(shape, np.int64), value=v)
        check(got, np.full(shape, v[0], dtype=dtype))
    check(run1("ConstantOfShape", 9, i64(2)), np.zeros(2, np.float32))


@pytest.mark.parametrize("shape", [(3, 3), (2, 5), (5, 2), (0, 3), (1, 1)])
def test_eye_like(shape):
    x = rand(shape, np.int32)
    for k in [-6, -1, 0, 1, 3]:
        check(run1("EyeLike", 22, x, k=k), ort_run("EyeLike", 22, [x], k=k)[0])
        check(run1("EyeLike", 22, x, k=k, dtype=TensorProto.DOUBLE), ort_run("EyeLike", 22, [x], k=k, dtype=TensorProto.DOUBLE)[0])
    check(run1("EyeLike", 22, x, dtype=TensorProto.BOOL), np.eye(*shape, dtype=bool))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int16, np.float32, np.float64])
def test_range(dtype):
    for s, l, d in [(0, 10, 3), (10, 4, -2), (5, 5, 1), (3, 1, 1), (-7, 8, 4), (1, 2, 5)]:
        got = run1("Range", 11, *(np.array(v, dtype) for v in (s, l, d)))
        check(got, np.array(list(range(s, l, d)), dtype=dtype))
    if np.dtype(dtype).kind == "f":
        got = run1("Range", 11, *(np.array(v, dtype) for v in (0.5, 2.0, 0.3)))
        check(got, np.arange(0.5, 2.0, 0.3).astype(dtype))


def test_range_int64_extremes_and_low_precision():
    big = np.iinfo(np.int64).max
    check(run1("Range", 11, np.array(big - 5), np.array(big), np.array(2)), np.array([big - 5, big - 3, big - 1]))
    for dt in [np.float16, BF16]:
        args = [np.array(v, dtype=dt) for v in (1000.0, 1100.0, 1.0)]  # bf16 rounds 1100 to 1104
        exp = np.arange(*(float(a) for a in args), dtype=np.float32).astype(dt)
        assert exp.size == int(float(args[1])) - 1000
        check(run1("Range", 27, *args), exp)
        check(run1("Range", 27, *args, stash_type=1), exp)


# ---------------------------------------------------------------- reshaping

@pytest.mark.parametrize("src,target,allowzero,exp", [
    ((2, 3, 4), (4, -1), 0, (4, 6)),
    ((2, 3, 4), (0, -1), 0, (2, 12)),
    ((2, 3, 4), (0, 0, 0), 0, (2, 3, 4)),
    ((2, 3, 4), (-1,), 0, (24,)),
    ((0, 3), (3, -1), 0, (3, 0)),
    ((0, 3), (0, 3), 1, (0, 3)),
    ((1,), (), 0, ()),
    ((), (1, 1), 0, (1, 1)),
    ((2, 0, 4), (0, 4, 0), 1, (0, 4, 0)),
])
def test_reshape(src, target, allowzero, exp):
    x = rand(src)
    got = run1("Reshape", 14, x, np.array(target, np.int64), allowzero=allowzero)
    check(got, x.reshape(exp))
    if not allowzero:
        check(run1("Reshape", 5, x, np.array(target, np.int64)), x.reshape(exp))


def test_reshape_errors():
    for src, target in [((0, 3), (0, -1)), ((2, 3), (-1, -1)), ((2, 3), (4, -1)), ((2, 3), (5,))]:
        with pytest.raises(Exception):
            run1("Reshape", 14, rand(src), np.array(target, np.int64))


@pytest.mark.parametrize("shape", [(2, 3, 4), (0, 3, 2), (1,), (5, 1, 0, 2)])
def test_flatten(shape):
    x = rand(shape)
    for axis in range(-len(shape), len(shape) + 1):
        a = axis + len(shape) if axis < 0 else axis
        exp = x.reshape(int(np.prod(shape[:a])), int(np.prod(shape[a:])))
        check(run1("Flatten", 13, x, axis=axis), exp)


def test_squeeze_unsqueeze():
    x = rand((1, 3, 1, 2, 1), object)
    check(run1("Squeeze", 13, x), x.reshape(3, 2))
    check(run1("Squeeze", 13, x, i64(0, -1)), x.reshape(3, 1, 2))
    check(run1("Squeeze", 11, x, axes=[2]), x.reshape(1, 3, 2, 1))
    check(run1("Squeeze", 1, x, axes=[0]), x.reshape(3, 1, 2, 1))
    with pytest.raises(Exception):
        run1("Squeeze", 13, x, i64(1))
    y = rand((3, 0, 2))
    t = torch.from_numpy(y)
    check(run1("Unsqueeze", 13, y, i64(0, 4)), t.unsqueeze(0).unsqueeze(4).numpy())
    check(run1("Unsqueeze", 13, y, i64(-1, 1)), t.unsqueeze(1).unsqueeze(-1).numpy())
    check(run1("Unsqueeze", 11, y, axes=[4, 0]), t.unsqueeze(0).unsqueeze(4).numpy())
    check(run1("Unsqueeze", 13, np.array(3.0, np.float32), i64(0)), np.array([3.0], np.float32))
    with pytest.raises(Exception):
        run1("Unsqueeze", 13, y, i64(1, 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_expand(dtype):
    for src, shape in [((3, 1), (2, 1, 6)), ((1,), (0,)), ((2, 1, 3), (1, 4, 1)), ((), (2, 2)), ((3,), ())]:
        x = rand(src, dtype)
        got = run1("Expand", 13, x, np.array(shape, np.int64))
        exp = np.broadcast_to(x, np.broadcast_shapes(src, shape))
        check(got, exp)
        assert got.flags.writeable
    with pytest.raises(Exception):
        run1("Expand", 13, rand((3,)), i64(2))


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 0, 5), (4,), (2, 1, 3, 2)])
def test_transpose(shape):
    x = rand(shape)
    for perm in [None, list(RNG.permutation(len(shape)))]:
        exp = torch.from_numpy(x).permute(*(perm if perm is not None else range(len(shape))[::-1])).numpy()
        got = run1("Transpose", 13, x) if perm is None else run1("Transpose", 13, x, perm=perm)
        check(got, exp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile(dtype):
    for shape, reps in [((2, 3), (2, 1)), ((1, 0, 2), (3, 2, 1)), ((3,), (0,)), ((2, 1, 2), (1, 3, 2))]:
        x = rand(shape, dtype)
        exp = np.tile(x, reps) if dtype in (object, BF16) else \
            torch.from_numpy(x.astype(np.float64) if dtype == np.uint64 else x).tile(reps).numpy().astype(dtype)
        check(run1("Tile", 13, x, np.array(reps, np.int64)), exp)


# ---------------------------------------------------------------- Concat, Split, Slice

@pytest.mark.parametrize("dtype", DTYPES)
def test_concat(dtype):
    parts = [rand((2, k, 3), dtype) for k in (1, 0, 4)]
    exp = np.concatenate([p.astype(object) for p in parts], axis=1)
    for axis in (1, -2):
        got = run1("Concat", 13, *parts, axis=axis)
        assert got.dtype == np.dtype(dtype)
        assert got.astype(object).tolist() == exp.tolist()
    check(run1("Concat", 4, parts[0], axis=0), parts[0])


def test_split_forms():
    x = rand((7, 4))
    t = torch.from_numpy(x)

    def same(got, exp):
        assert len(got) == len(exp)
        for g, e in zip(got, exp):
            check(g, e.numpy())

    same(run("Split", 18, [x], num_outputs=3), t.split(3))  # ceil-sized chunks, last smaller
    same(run("Split", 18, [x], num_outputs=4), t.split(2))
    same(run("Split", 18, [x, i64(2, 0, 5)], num_outputs=3), t.split([2, 0, 5]))
    same(run("Split", 18, [x], num_outputs=2, axis=-1), t.split(2, dim=1))
    same(run("Split", 13, [x, i64(1, 6)]), t.split([1, 6]))
    same(run("Split", 13, [x], num_outputs=2, axis=1), t.split(2, dim=1))  # equal parts from ctx
    same(run("Split", 11, [x], num_outputs=2, axis=0, split=[3, 4]), t.split([3, 4]))
    same(run("Split", 2, [x], num_outputs=4, axis=1), t.split(1, dim=1))
    with pytest.raises(Exception):
        run("Split", 13, [x], num_outputs=2)  # 7 is not divisible by 2
    z = rand((0, 3))
    same(run("Split", 18, [z, i64(0, 0)], num_outputs=2), torch.from_numpy(z).split([0, 0]))


BIG = np.iinfo(np.int64).max


@pytest.mark.parametrize("dtype", [np.float32, object, np.int8])
def test_slice_vs_ort(dtype):
    x = rand((5, 1, 6, 0, 3), dtype) if dtype != object else rand((5, 1, 6, 2), dtype)
    cases = [
        ([1], [4], [0], None), ([0, -1], [BIG, -BIG], [2, 0], [1, -1]), ([-100], [100], [-1], [2]),
        ([4, 5], [-BIG, 2], [0, 2], [-2, -1]), ([2], [2], [0], [1]), ([-1], [-BIG - 1], [0], [-1]),
        ([10], [-10], [2], [-3]), ([0], [BIG], [1], [5]), ([3, 1], [0, 5], [0, 2], [-1, 2]),
    ]
    for s, e, a, st in cases:
        ins = [x, np.array(s, np.int64), np.array(e, np.int64), np.array(a, np.int64),
               None if st is None else np.array(st, np.int64)]
        check(run1("Slice", 13, *ins), ort_run("Slice", 13, ins)[0])


def test_slice_attr_form():
    x = rand((4, 5))
    check(run1("Slice", 1, x, starts=[1, -2], ends=[BIG, 100], axes=[0, 1]), x[1:, -2:])
    check(run1("Slice", 1, x, starts=[1], ends=[3]), x[1:3])
    with pytest.raises(Exception):
        run1("Slice", 13, x, i64(0), i64(1), i64(0), i64(0))


# ---------------------------------------------------------------- Pad, CenterCropPad

PADS = [[1, 0, 2, 1], [0, 0, 0, 0], [2, 3, 1, 0], [-1, 1, 0, -2], [0, 2, 0, 1]]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_vs_ort(mode):
    x = rand((4, 5))
    for pads in PADS:
        ins = [x, np.array(pads, np.int64), np.array(2.5, np.float32)]
        check(run1("Pad", 19, *ins, mode=mode), ort_run("Pad", 19, ins, mode=mode)[0])
    x3 = rand((3, 4, 5), np.int32)
    ins = [x3, i64(1, 2, 0, 1), np.array(7, np.int32), i64(-1, 0)]
    check(run1("Pad", 19, *ins, mode=mode), ort_run("Pad", 19, ins, mode=mode)[0])


def test_pad_torch_and_dtypes():
    x = rand((2, 3, 4, 5))
    t = torch.from_numpy(x)
    for mode, tmode in [("reflect", "reflect"), ("edge", "replicate"), ("wrap", "circular")]:
        exp = torch.nn.functional.pad(t, (2, 1, 1, 3), mode=tmode).numpy()
        check(run1("Pad", 19, x, i64(0, 0, 1, 2, 0, 0, 3, 1), mode=mode), exp)
    for dtype in [BF16, np.float16, np.bool_, object, np.uint64]:
        x = rand((2, 3), dtype)
        v = np.array("z" if dtype is object else 1, dtype=dtype)
        got = run1("Pad", 18, x, i64(1, 2), v, i64(1))
        exp = np.empty((2, 6), dtype=dtype)
        exp[...] = v
        exp[:, 1:4] = x
        check(got, exp)
        check(run1("Pad", 18, x, i64(0, 1, 0, 0), mode="edge"), np.concatenate([x[:, :1], x], axis=1))
    check(run1("Pad", 11, rand((0, 2)), i64(1, 0, 1, 0)), np.zeros((2, 2), np.float32))
    x = rand((2, 3))
    check(run1("Pad", 2, x, pads=[0, 1, 0, 0], value=3.0), np.concatenate([np.full((2, 1), 3, np.float32), x], 1))
    check(run1("Pad", 11, rand((2, 3), object), i64(0, 1, 0, 0))[:, 0], np.array(["", ""], dtype=object))


@pytest.mark.parametrize("dtype", [np.float32, np.int64, object])
def test_center_crop_pad(dtype):
    codes = RNG.integers(1, 100, (5, 4, 3))  # strings: compare via nonzero int codes ('' <-> 0)
    x = codes.astype(dtype) if dtype is not object else np.vectorize(lambda c: f"s{c}", otypes=[object])(codes)
    for shape, axes in [((3, 6, 3), None), ((6, 3), [0, 1]), ((1,), [-1]), ((0, 7), [2, 0]), ((5, 4, 3), None)]:
        kw = {} if axes is None else {"axes": axes}
        exp = ort_run("CenterCropPad", 18, [codes if dtype is object else x, np.array(shape, np.int64)], **kw)[0]
        if dtype is object:
            exp = np.vectorize(lambda c: f"s{c}" if c else "", otypes=[object])(exp) if exp.size else exp.astype(object)
        check(run1("CenterCropPad", 18, x, np.array(shape, np.int64), **kw), exp)


# ---------------------------------------------------------------- DepthToSpace, SpaceToDepth, Trilu

@pytest.mark.parametrize("dtype", [np.float32, BF16, object])
def test_depth_space(dtype):
    x = rand((2, 12, 3, 2), dtype)
    b = 2
    f32 = rand((2, 12, 3, 2))
    crd = torch.nn.functional.pixel_shuffle(torch.from_numpy(f32), b).numpy()
    check(run1("DepthToSpace", 13, f32, blocksize=b, mode="CRD"), crd)
    check(run1("DepthToSpace", 13, f32, blocksize=b), ort_run("DepthToSpace", 13, [f32], blocksize=b)[0])
    check(run1("DepthToSpace", 1, f32, blocksize=b), ort_run("DepthToSpace", 13, [f32], blocksize=b)[0])
    for mode in ("DCR", "CRD"):
        y = run1("DepthToSpace", 13, x, blocksize=b, mode=mode)
        assert y.dtype == x.dtype and y.shape == (2, 3, 6, 4)
        check(run1("SpaceToDepth", 28, y, blocksize=b, mode=mode), x)  # inverse pair
    z = rand((1, 3, 4, 6))
    unshuffle = torch.nn.functional.pixel_unshuffle(torch.from_numpy(z), 2).numpy()
    check(run1("SpaceToDepth", 28, z, blocksize=2, mode="CRD"), unshuffle)
    check(run1("SpaceToDepth", 13, z, blocksize=2), ort_run("SpaceToDepth", 13, [z], blocksize=2)[0])


@pytest.mark.parametrize("shape", [(4, 5), (3, 1, 6), (2, 0, 3), (6, 2), (1, 1)])
def test_trilu(shape):
    x = rand(shape)
    t = torch.from_numpy(x)
    for k in [-7, -1, 0, 2, 9, BIG, -BIG]:
        kk = max(min(k, 100), -100)
        check(run1("Trilu", 14, x, i64(k)), torch.triu(t, kk).numpy())
        check(run1("Trilu", 14, x, i64(k), upper=0), torch.tril(t, kk).numpy())
    check(run1("Trilu", 14, x), torch.triu(t).numpy())
    s = rand(shape, object)
    exp = np.where(torch.tril(torch.ones(shape[-2:]), 1).numpy() > 0, s, "")
    check(run1("Trilu", 14, s, i64(1), upper=0), exp)
