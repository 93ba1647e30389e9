"""Random ops, checked by distribution (their conformance outputs cannot match by value)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import jitort
from tests.helpers import F, model

N = 20000


def _run(nodes, inputs, outputs, feed, **kw):
    return jitort.load(model(nodes, inputs, outputs, **kw))(**feed)


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16])
def test_random_uniform_range_mean_and_seed(dtype):
    node = helper.make_node("RandomUniform", [], ["y"], shape=[N], low=-2.0, high=6.0, seed=3.0, dtype=dtype)
    y1 = _run([node], [], [("y", dtype, [N])], {})[0]
    y2 = _run([node], [], [("y", dtype, [N])], {})[0]
    np.testing.assert_array_equal(y1, y2)  # seeded: reproducible
    assert y1.dtype == helper.tensor_dtype_to_np_dtype(dtype)
    assert y1.min() >= -2 and y1.max() <= 6
    assert abs(float(y1.astype(np.float64).mean()) - 2.0) < 0.1


def test_random_normal_like_moments_and_unseeded_variation():
    x = np.zeros((N,), np.float32)
    node = helper.make_node("RandomNormalLike", ["x"], ["y"], mean=1.0, scale=3.0)
    m = jitort.load(model([node], [("x", F, [N])], [("y", F, [N])]))
    a, b = m(x=x)[0], m(x=x)[0]
    assert a.dtype == np.float32 and a.shape == (N,)
    assert abs(a.mean() - 1.0) < 0.1 and abs(a.std() - 3.0) < 0.1
    assert not np.array_equal(a, b)  # no seed: a fresh draw per call


def test_bernoulli_frequency_matches_probability():
    p = np.linspace(0.05, 0.95, 10).astype(np.float32)
    x = np.tile(p, (N // 10, 1))
    y = _run([helper.make_node("Bernoulli", ["x"], ["y"])], [("x", F, list(x.shape))],
             [("y", F, list(x.shape))], {"x": x})[0]
    assert set(np.unique(y)) <= {0.0, 1.0}
    # unseeded: 5 standard errors per column (0.03 flat was ~3 of them: one run in ~20 failed)
    n = x.shape[0]
    assert np.all(np.abs(y.mean(axis=0) - p) <= 5 * np.sqrt(p * (1 - p) / n)), (y.mean(axis=0), p)


def test_multinomial_frequencies_follow_logits():
    probs = np.array([[0.1, 0.2, 0.7]], np.float32)
    node = helper.make_node("Multinomial", ["x"], ["y"], sample_size=N, seed=1.0)
    y = _run([node], [("x", F, [1, 3])], [("y", TensorProto.INT32, [1, N])], {"x": np.log(probs)})[0]
    assert y.shape == (1, N) and y.dtype == np.int32
    np.testing.assert_allclose(np.bincount(y[0], minlength=3) / N, probs[0], atol=0.02)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.8])
def test_training_dropout_mask_and_scaling(ratio):
    x = np.random.default_rng(0).standard_normal((50, 400)).astype(np.float32)
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "mask"], seed=0)
    y, mask = _run([node], [("x", F, list(x.shape))],
                   [("y", F, list(x.shape)), ("mask", TensorProto.BOOL, list(x.shape))],
                   {"x": x}, inits={"r": np.array(ratio, np.float32), "t": np.array(True)})
    assert mask.dtype == np.bool_
    assert abs(mask.mean() - (1 - ratio)) < 0.02
    np.testing.assert_allclose(y, np.where(mask, x / (1 - ratio), 0), rtol=1e-6)


def test_inference_dropout_is_identity_with_true_mask():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y, mask = _run([helper.make_node("Dropout", ["x"], ["y", "mask"])], [("x", F, [3, 4])],
                   [("y", F, [3, 4]), ("mask", TensorProto.BOOL, [3, 4])], {"x": x})
    np.testing.assert_array_equal(y, x)
    assert mask.all()
