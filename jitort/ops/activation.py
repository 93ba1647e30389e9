"""Activations. float16/bfloat16 inputs are computed in float32 and cast back."""

from __future__ import annotations

import math

import numpy as np

from .elementwise import _erf, out, up
from .registry import op


def _act(fn):
    """Wrap fn(xc) -> y where xc is x in its compute dtype; the result gets x's dtype."""

    def kernel(x, **attrs):
        with np.errstate(all="ignore"):
            return out(fn(up(x), **attrs), x.dtype)

    return kernel


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-x)): exp overflows to inf for very negative x, giving the right 0.
    one = x.dtype.type(1)
    return one / (one + np.exp(-x))


def _softplus(x: np.ndarray) -> np.ndarray:
    # log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))
    return np.maximum(x, x.dtype.type(0)) + np.log1p(np.exp(-np.abs(x)))


@op("Relu", since=6)
def relu(x):
    if x.dtype.kind == "V":
        return out(np.maximum(x.astype(np.float32), np.float32(0)), x.dtype)
    return np.asarray(np.maximum(x, x.dtype.type(0)))


@op("Sigmoid", since=6)
def sigmoid(x):
    return _act(_sigmoid)(x)


@op("HardSigmoid", since=6)
def hard_sigmoid(x, *, alpha=0.2, beta=0.5):
    def f(x):
        t = x.dtype.type
        return np.clip(x * t(alpha) + t(beta), t(0), t(1))

    return _act(f)(x)


@op("HardSwish", since=14)
def hard_swish(x):
    def f(x):
        t = x.dtype.type
        return x * np.clip(x * t(1.0 / 6.0) + t(0.5), t(0), t(1))

    return _act(f)(x)


@op("LeakyRelu", since=6)
def leaky_relu(x, *, alpha=0.01):
    def f(x):
        return np.where(x < 0, x * x.dtype.type(alpha), x)

    return _act(f)(x)


@op("PRelu", since=7)
def prelu(x, slope):
    """slope broadcasts unidirectionally to x's shape."""
    with np.errstate(all="ignore"):
        if x.dtype.kind in "iu":
            return out(np.where(x < 0, x * slope.astype(x.dtype), x), x.dtype)
        xc = up(x)
        y = np.where(xc < 0, xc * slope.astype(xc.dtype), xc)
        return out(np.broadcast_to(y, x.shape) if y.shape != x.shape else y, x.dtype)


@op("Elu", since=6)
def elu(x, *, alpha=1.0):
    def f(x):
        return np.where(x > 0, x, np.expm1(x) * x.dtype.type(alpha))

    return _act(f)(x)


@op("Selu", since=6)
def selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    def f(x):
        t = x.dtype.type
        return t(gamma) * np.where(x > 0, x, t(alpha) * np.expm1(x))

    return _act(f)(x)


@op("Celu", since=12)
def celu(x, *, alpha=1.0):
    def f(x):
        t = x.dtype.type
        return np.maximum(x, t(0)) + np.minimum(t(0), t(alpha) * np.expm1(x / t(alpha)))

    return _act(f)(x)


@op("ThresholdedRelu", since=10)
def thresholded_relu(x, *, alpha=1.0):
    def f(x):
        return np.where(x > x.dtype.type(alpha), x, x.dtype.type(0))

    return _act(f)(x)


@op("Softplus", since=1)
def softplus(x):
    return _act(_softplus)(x)


@op("Softsign", since=1)
def softsign(x):
    def f(x):
        return x / (x.dtype.type(1) + np.abs(x))

    return _act(f)(x)


@op("Shrink", since=9)
def shrink(x, *, bias=0.0, lambd=0.5):
    """x < -lambd: x + bias; x > lambd: x - bias; else 0 (any numeric type)."""
    with np.errstate(all="ignore"):
        if x.dtype.kind in "iu":
            xb = x.astype(np.float64)
            y = np.where(xb < -lambd, xb + bias, np.where(xb > lambd, xb - bias, 0.0))
            return out(y, x.dtype)
        xc = up(x)
        t = xc.dtype.type
        y = np.where(xc < t(-lambd), xc + t(bias), np.where(xc > t(lambd), xc - t(bias), t(0)))
        return out(y, x.dtype)


@op("Mish", since=18)
def mish(x):
    def f(x):
        return x * np.tanh(_softplus(x))

    return _act(f)(x)


@op("Swish", since=24)
def swish(x, *, alpha=1.0):
    def f(x):
        return x * _sigmoid(x * x.dtype.type(alpha))

    return _act(f)(x)


@op("SwiGLU", since=28)
def swiglu(a, b, *, alpha=1.0):
    """Swish_alpha(A) * B (no broadcasting in the spec; NumPy's is harmless)."""
    with np.errstate(all="ignore"):
        ac, bc = up(a), up(b)
        return out(ac * _sigmoid(ac * ac.dtype.type(alpha)) * bc, a.dtype)


@op("Gelu", since=20)
def gelu(x, *, approximate="none"):
    def f(x):
        t = x.dtype.type
        if approximate == "tanh":
            inner = t(math.sqrt(2.0 / math.pi)) * (x + t(0.044715) * x * x * x)
            return t(0.5) * x * (t(1) + np.tanh(inner))
        if approximate != "none":
            raise ValueError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return t(0.5) * x * (t(1) + _erf(x * t(1.0 / math.sqrt(2.0))))

    return _act(f)(x)
