"""Random generators and Dropout.

A ``seed`` attribute gives a deterministic np.random.default_rng built from the seed's float
bits (same values on every run); without one the session's generator (``ctx.random()``) is used.
Values are drawn in float64 and cast to the requested dtype.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import np_dtype
from .registry import op


def _rng(ctx, seed) -> np.random.Generator:
    if seed is None:
        return ctx.random()
    bits = int(np.float64(seed).view(np.uint64))  # any float (negative too) -> a valid seed
    return np.random.default_rng(bits)


def _out_dtype(dtype, like: np.ndarray | None) -> np.dtype:
    if dtype is None:
        if like is None:
            return np.dtype(np.float32)
        return like.dtype
    return np_dtype(int(dtype))


@op("RandomNormal", since=1)
def random_normal(ctx, *, shape, dtype=1, mean=0.0, scale=1.0, seed=None):
    vals = _rng(ctx, seed).normal(mean, scale, size=tuple(int(s) for s in shape))
    return np.asarray(vals.astype(_out_dtype(dtype, None)))


@op("RandomNormalLike", since=1)
def random_normal_like(ctx, x, *, dtype=None, mean=0.0, scale=1.0, seed=None):
    vals = _rng(ctx, seed).normal(mean, scale, size=x.shape)
    return np.asarray(vals.astype(_out_dtype(dtype, x)))


@op("RandomUniform", since=1)
def random_uniform(ctx, *, shape, dtype=1, high=1.0, low=0.0, seed=None):
    vals = _rng(ctx, seed).uniform(low, high, size=tuple(int(s) for s in shape))
    return np.asarray(vals.astype(_out_dtype(dtype, None)))


@op("RandomUniformLike", since=1)
def random_uniform_like(ctx, x, *, dtype=None, high=1.0, low=0.0, seed=None):
    vals = _rng(ctx, seed).uniform(low, high, size=x.shape)
    return np.asarray(vals.astype(_out_dtype(dtype, x)))


@op("Bernoulli", since=15)
def bernoulli(ctx, x, *, dtype=None, seed=None):
    p = x.astype(np.float64)
    draws = _rng(ctx, seed).random(size=x.shape) < p
    return np.asarray(draws.astype(_out_dtype(dtype, x)))


@op("Multinomial", since=7)
def multinomial(ctx, x, *, dtype=6, sample_size=1, seed=None):
    """``x`` [batch, classes] holds unnormalized log-probabilities; output [batch, sample_size]."""
    logits = x.astype(np.float64)
    b, c = logits.shape
    m = np.max(logits, axis=1, keepdims=True) if c else np.zeros((b, 1))
    p = np.exp(logits - np.where(np.isfinite(m), m, 0.0))
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    # one global searchsorted: row r's cdf is shifted into [r, r + 1]
    rows = np.arange(b, dtype=np.float64)[:, None]
    u = _rng(ctx, seed).random(size=(b, int(sample_size)))
    flat = (cdf + rows).reshape(-1)
    idx = np.searchsorted(flat, (u + rows).reshape(-1), side="right").reshape(b, -1)
    idx = np.minimum(idx - (rows.astype(np.int64) * c), c - 1)
    return np.asarray(idx.astype(np_dtype(int(dtype))))


def _dropout(ctx, x, ratio: float, training: bool, seed, mask_dtype):
    if not training or ratio == 0.0:
        out = x
        mask = np.ones(x.shape, dtype=mask_dtype)
    else:
        keep = _rng(ctx, seed).random(size=x.shape) >= ratio
        scale = 1.0 / (1.0 - ratio)
        w = x.astype(np.float64) if x.dtype.kind == "V" or x.dtype == np.float16 else x
        out = np.where(keep, w * w.dtype.type(scale), w.dtype.type(0)).astype(x.dtype, copy=False)
        mask = keep.astype(mask_dtype, copy=False)
    if ctx.num_outputs > 1:
        return np.asarray(out), mask
    return np.asarray(out)


@op("Dropout", since=1)
def dropout_v1(ctx, x, *, ratio=0.5, is_test=0, consumed_inputs=None):
    return _dropout(ctx, x, ratio, not is_test, None, x.dtype)


@op("Dropout", since=7)
def dropout_v7(ctx, x, *, ratio=0.5):
    return _dropout(ctx, x, ratio, False, None, x.dtype)


@op("Dropout", since=10)
def dropout_v10(ctx, x, *, ratio=0.5):
    return _dropout(ctx, x, ratio, False, None, np.bool_)


@op("Dropout", since=12)
def dropout_v12(ctx, x, ratio=None, training_mode=None, *, seed=None):
    r = 0.5 if ratio is None else float(np.asarray(ratio, dtype=np.float64).reshape(-1)[0])
    training = training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0])
    if training and not 0.0 <= r < 1.0:
        raise ValueError(f"Dropout ratio must be in [0, 1), got {r}")
    return _dropout(ctx, x, r, training, seed, np.bool_)
