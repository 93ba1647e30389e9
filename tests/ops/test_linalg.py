"""MatMul, Gemm, Einsum, Det against torch / NumPy float64 oracles."""

import ml_dtypes
import numpy as np
import pytest
import torch

from jitort.ops.registry import KernelContext, call, lookup, registered_ops

registered_ops()

BF16 = np.dtype(ml_dtypes.bfloat16)
# dtype -> (rtol, atol) against a float64 oracle (inputs are O(1), K <= ~40)
TOL = {
    np.dtype(np.float64): (1e-10, 1e-10),
    np.dtype(np.float32): (1e-5, 1e-4),
    np.dtype(np.float16): (2e-3, 2e-2),
    BF16: (1.6e-2, 1e-1),
}
RNG = np.random.default_rng(1)


def run(name, opset, inputs, **attrs):
    return call(lookup(name, "", opset), list(inputs), attrs, KernelContext(opset=opset))


def rand(shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return RNG.integers(0 if dtype.kind == "u" else -4, 5, size=shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def check(got, want, dtype):
    dtype = np.dtype(dtype)
    assert got.dtype == dtype, (got.dtype, dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if dtype.kind in "iu":
        np.testing.assert_array_equal(got, want.astype(dtype))
    else:
        rtol, atol = TOL[dtype]
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol)


MM_SHAPES = [
    ((3, 4), (4, 5)), ((7,), (7,)), ((7,), (7, 3)), ((2, 3, 7), (7,)), ((2, 1, 3, 4), (5, 4, 6)),
    ((5, 3, 4), (4, 2)), ((1, 0, 4), (4, 3)), ((3, 0), (0, 2)), ((2, 3, 1, 6), (1, 6, 9)),
]


@pytest.mark.parametrize("sa,sb", MM_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, BF16, np.int32, np.int64, np.uint32])
def test_matmul(sa, sb, dtype):
    a, b = rand(sa, dtype), rand(sb, dtype)
    (got,) = run("MatMul", 13, [a, b])
    want = torch.matmul(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64))).numpy()
    check(got, np.asarray(want), dtype)


def test_matmul_noncontiguous_nd_by_2d():
    a = rand((4, 6, 5), np.float32).transpose(1, 0, 2)  # non-contiguous batch operand
    b = rand((5, 3), np.float32)
    (got,) = run("MatMul", 13, [a, b])
    check(got, a.astype(np.float64) @ b.astype(np.float64), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, BF16, np.int32, np.int64])
@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("cshape", [None, (), (1,), (6,), (5, 1), (5, 6), (1, 6)])
def test_gemm(dtype, ta, tb, cshape):
    m, k, n = 5, 7, 6
    a = rand((k, m) if ta else (m, k), dtype)
    b = rand((n, k) if tb else (k, n), dtype)
    c = None if cshape is None else rand(cshape, dtype)
    integral = np.dtype(dtype).kind in "iu"
    alpha, beta = (2.0, 3.0) if integral else (0.75, -1.25)
    (got,) = run("Gemm", 13, [a, b] + ([] if c is None else [c]), alpha=alpha, beta=beta, transA=ta, transB=tb)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = alpha * ((a64.T if ta else a64) @ (b64.T if tb else b64))
    if c is not None:
        want = want + beta * c.astype(np.float64)
    check(got, want, dtype)


def test_gemm_defaults_and_empty_k():
    a, b = np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32)
    c = np.ones((4,), np.float32)
    (got,) = run("Gemm", 13, [a, b, c])
    np.testing.assert_array_equal(got, np.ones((3, 4), np.float32))


EINSUM = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 6)]),  # ellipsis with broadcasting
    ("...ii->...i", [(3, 4, 4)]),
    ("ii", [(5, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ij", [(3, 4)]),
    ("i,i", [(6,), (6,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 8), (2, 3, 5, 8)]),
    ("Ab,bC->AC", [(2, 3), (3, 4)]),
    ("abc, cd ->  abd", [(2, 3, 4), (4, 5)]),  # spaces allowed
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("...,...->...", [(2, 3), (1, 3)]),
    ("i...->...", [(3, 2, 1)]),
]


@pytest.mark.parametrize("eq,shapes", EINSUM)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32, np.int64])
def test_einsum(eq, shapes, dtype):
    xs = [rand(s, dtype) for s in shapes]
    (got,) = run("Einsum", 12, xs, equation=eq)
    want = torch.einsum(eq.replace(" ", ""), *[torch.from_numpy(x.astype(np.float64)) for x in xs]).numpy()
    check(got, np.asarray(want), dtype)


def test_einsum_output_does_not_alias_input():
    x = rand((3, 4), np.float32)
    (got,) = run("Einsum", 12, [x], equation="ij->ji")
    assert not np.shares_memory(got, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (1, 1), (2, 0, 5, 5), (0, 0)])
def test_det(dtype, shape):
    x = rand(shape, dtype)
    (got,) = run("Det", 22, [x])
    want = torch.linalg.det(torch.from_numpy(x.astype(np.float64))).numpy()
    check(got, np.asarray(want), dtype)
