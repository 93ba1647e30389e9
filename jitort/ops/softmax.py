"""Softmax, LogSoftmax, Hardmax and the two losses built on them.

Opset < 13 coerces the input to 2-D at ``axis`` (rows = dims before axis, columns = the rest)
and normalizes each row; opset >= 13 normalizes along the single ``axis``. All are max-shifted
for stability; float16/bfloat16 compute in float32.
"""

from __future__ import annotations

import numpy as np

from .registry import op


def _acc(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.float16 or x.dtype.kind == "V":
        return x.astype(np.float32)
    return x


def softmax_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """Stable softmax along one axis in x's own (float32/64) dtype."""
    m = np.max(x, axis=axis, keepdims=True)
    m[~np.isfinite(m)] = 0
    e = np.subtract(x, m)
    np.exp(e, out=e)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def log_softmax_axis(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m[~np.isfinite(m)] = 0
    z = np.subtract(x, m)
    e = np.exp(z)
    with np.errstate(divide="ignore"):
        z -= np.log(np.sum(e, axis=axis, keepdims=True))
    return z


def hardmax_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """One-hot of the first maximum along ``axis``."""
    idx = np.expand_dims(np.argmax(x, axis=axis), axis)
    out = np.zeros(x.shape, dtype=x.dtype)
    np.put_along_axis(out, idx, x.dtype.type(1), axis=axis)
    return out


def _apply(fn, x: np.ndarray, axis: int, coerce_2d: bool) -> np.ndarray:
    if x.size == 0:
        return np.zeros(x.shape, dtype=x.dtype)
    if x.ndim == 0:
        return np.asarray(fn(x.reshape(1), 0).reshape(()))
    axis = axis % x.ndim
    w = _acc(x)
    if coerce_2d:
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        res = fn(w.reshape(rows, -1), 1).reshape(x.shape)
    else:
        res = fn(w, axis)
    return np.asarray(res.astype(x.dtype, copy=False))


@op("Softmax", since=1)
def softmax_v1(x, *, axis=1):
    return _apply(softmax_axis, x, axis, True)


@op("Softmax", since=13)
def softmax_v13(x, *, axis=-1):
    return _apply(softmax_axis, x, axis, False)


@op("LogSoftmax", since=1)
def log_softmax_v1(x, *, axis=1):
    return _apply(log_softmax_axis, x, axis, True)


@op("LogSoftmax", since=13)
def log_softmax_v13(x, *, axis=-1):
    return _apply(log_softmax_axis, x, axis, False)


@op("Hardmax", since=1)
def hardmax_v1(x, *, axis=1):
    return _apply(hardmax_axis, x, axis, True)


@op("Hardmax", since=13)
def hardmax_v13(x, *, axis=-1):
    return _apply(hardmax_axis, x, axis, False)


def nll_loss(logp: np.ndarray, target: np.ndarray, weight, reduction: str, ignore_index):
    """-logp[n, target[n, d...], d...] weighted; ``logp`` is (N, C, d1..dk), computed in float32+.

    mean = sum(w * loss) / sum(w), where w = weight[target] (1 without weights) and 0 at
    ``ignore_index`` positions (which may lie outside [0, C)).
    """
    c = logp.shape[1]
    t = target.astype(np.int64, copy=False)
    keep = np.ones(t.shape, dtype=bool) if ignore_index is None else t != int(ignore_index)
    tc = np.where(keep, t, 0)
    if np.any((tc < 0) | (tc >= c)):
        raise ValueError("NegativeLogLikelihoodLoss: target index out of range [0, C)")
    picked = np.take_along_axis(logp, np.expand_dims(tc, 1), axis=1)[:, 0]
    if weight is not None:
        w = weight.astype(logp.dtype)[tc]
        w = np.where(keep, w, logp.dtype.type(0))
    else:
        w = keep.astype(logp.dtype)
    loss = -picked * w
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.asarray(loss.sum())
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(loss.sum() / w.sum())
    raise ValueError(f"unknown reduction {reduction!r}")


def _nll_entry(x, target, weight, reduction, ignore_index):
    logp = _acc(x)
    return np.asarray(nll_loss(logp, target, weight, reduction, ignore_index)).astype(x.dtype)


@op("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(x, target, weight=None, *, reduction="mean", ignore_index=None):
    return _nll_entry(x, target, weight, reduction, ignore_index)


@op("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(ctx, scores, labels, weights=None, *, reduction="mean", ignore_index=None):
    w = _acc(scores)
    logp = log_softmax_axis(w, 1) if w.size else np.zeros(w.shape, w.dtype)
    loss = np.asarray(nll_loss(logp, labels, weights, reduction, ignore_index)).astype(scores.dtype)
    if ctx.num_outputs > 1:
        return loss, np.asarray(logp.astype(scores.dtype, copy=False))
    return loss
