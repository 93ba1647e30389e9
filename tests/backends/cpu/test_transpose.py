"""The CPU backend's Transpose kernel (backends/cpu/transpose.py) against NumPy, and in a plan
against the reference backend."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper

import jitort
from jitort.backends.cpu.transpose import collapse, swap


SHAPES = [(2, 3, 5, 7), (1, 3, 4, 4), (2, 1, 3, 1), (3, 4, 1, 5), (0, 3, 2, 2), (2, 5, 3), (4, 6), (7,),
          (1, 1, 1, 1), (2, 3, 1, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_accepted_permutation_matches_numpy(shape):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    accepted = 0
    for perm in itertools.permutations(range(len(shape))):
        form = collapse(shape, perm)
        if form is None:
            continue
        assert int(np.prod(form)) == int(np.prod(shape))
        accepted += 1
        want = np.ascontiguousarray(x.transpose(perm))
        for threads in (1, 2, 3):
            y = np.full(want.shape, np.nan, np.float32)
            swap(x, y, *form, threads=threads)
            assert np.array_equal(y, want), (perm, form, threads)
    assert accepted >= min(2, len(shape))  # the identity and at least one swap


def test_collapse_forms():
    assert collapse((1, 3, 224, 224), (0, 2, 3, 1)) == (1, 3, 224 * 224, 1)  # NCHW -> NHWC
    assert collapse((1, 7, 7, 512), (0, 3, 1, 2)) == (1, 49, 512, 1)  # NHWC -> NCHW
    assert collapse((2, 128, 12, 64), (0, 2, 1, 3)) == (2, 128, 12, 64)  # attention heads
    assert collapse((4, 5), (1, 0)) == (1, 4, 5, 1)
    assert collapse((2, 3, 4), (0, 1, 2)) == (1, 1, 1, 24)  # a copy
    assert collapse((2, 3, 4), (2, 0, 1)) == (1, 6, 4, 1)
    assert collapse((2, 3, 4), (1, 2, 0)) == (1, 2, 12, 1)
    assert collapse((2, 3, 4, 5), (3, 2, 1, 0)) is None  # a full reversal is not one swap
    assert collapse((2, 3, 4, 5), (1, 0, 3, 2)) is None  # two swaps


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32, np.uint8, np.float16, np.bool_])
def test_dtypes(dtype):
    x = (np.arange(2 * 3 * 5 * 4) % 251).astype(dtype).reshape(2, 3, 5, 4)
    y = np.empty((2, 5, 4, 3), dtype)
    swap(x, y, *collapse(x.shape, (0, 2, 3, 1)), threads=2)
    assert np.array_equal(y, x.transpose(0, 2, 3, 1))


def _transpose_model(shape, perm, elem=TensorProto.FLOAT):
    out = [shape[p] for p in perm]
    g = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=list(perm)),
         helper.make_node("Neg", ["t"], ["y"]) if elem == TensorProto.FLOAT else
         helper.make_node("Identity", ["t"], ["y"])],
        "t", [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, out)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("shape,perm", [((1, 3, 9, 11), (0, 2, 3, 1)), ((2, 5, 3, 4), (0, 2, 1, 3)),
                                        ((3, 1, 4, 6), (0, 3, 1, 2)), ((5, 7), (1, 0)),
                                        ((2, 0, 3), (0, 2, 1))])
@pytest.mark.parametrize("threads", [1, 2])
def test_in_a_plan(shape, perm, threads):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    model = _transpose_model(shape, perm)
    want = jitort.load(model, backend="reference")(x=x)[0]
    m = jitort.load(model, backend="cpu", num_threads=threads, cache=False)
    for _ in range(2):  # the planned buffer is reused by the second call
        got = m(x=x)[0]
        assert got.shape == want.shape and np.array_equal(got, want)
    plan = next(iter(m._variants.values())).plan
    kinds = {s.node.op_type: s.kind for s in plan.steps}
    assert kinds["Transpose"] == "Transpose"  # the kernel, not the reference path


def test_unsupported_permutation_runs_the_reference_path():
    shape, perm = (2, 3, 4, 5), (3, 2, 1, 0)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    model = _transpose_model(shape, perm)
    m = jitort.load(model, backend="cpu", cache=False)
    assert np.array_equal(m(x=x)[0], -x.transpose(perm))
    plan = next(iter(m._variants.values())).plan
    step = next(s for s in plan.steps if s.node.op_type == "Transpose")
    assert step.kind == "reference" and "swap of two axes" in step.why
