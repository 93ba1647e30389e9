"""Pre-opset-7 forms of the binary ops: explicit ``broadcast``/``axis`` attributes.

Before opset 7, B broadcast to A only when ``broadcast=1``, aligned at ``axis`` (default: the
trailing dims); PRelu's slope was per channel (axis 1). These wrap the opset-7 kernels.
"""

from __future__ import annotations

import numpy as np

from . import registry
from .registry import op


def _align(a: np.ndarray, b: np.ndarray, broadcast: int, axis) -> np.ndarray:
    if not broadcast:
        if a.shape != b.shape and b.size != 1:
            raise ValueError(f"shapes {a.shape} and {b.shape} differ and broadcast=0")
        return b
    if axis is None or b.ndim == 0:
        return b
    ax = axis + a.ndim if axis < 0 else axis
    trailing = a.ndim - ax - b.ndim
    if trailing < 0:
        raise ValueError(f"B of shape {b.shape} does not fit A {a.shape} at axis {axis}")
    return b.reshape(b.shape + (1,) * trailing)


def _legacy(name: str, since: int, has_consumed: bool):
    def modern(a, b):  # looked up at call time: module import order does not matter
        return registry.find(name, "", 7).kernel(a, b)

    if has_consumed:
        def kernel(a, b, *, broadcast=0, axis=None, consumed_inputs=None):
            return modern(a, _align(a, b, broadcast, axis))
    else:
        def kernel(a, b, *, broadcast=0, axis=None):
            return modern(a, _align(a, b, broadcast, axis))

    kernel.__name__ = f"{name.lower()}_v{since}"
    op(name, since=since)(kernel)


for _name in ("Add", "Sub", "Mul", "Div"):
    _legacy(_name, 1, True)
    _legacy(_name, 6, False)
for _name in ("Pow", "And", "Or", "Xor", "Equal", "Greater", "Less"):
    _legacy(_name, 1, False)


def _prelu_channels(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    if slope.ndim == 1 and slope.size > 1 and x.ndim >= 2:
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
    return registry.find("PRelu", "", 7).kernel(x, slope)


@op("PRelu", since=1)
def prelu_v1(x, slope, *, consumed_inputs=None):
    return _prelu_channels(x, slope)


@op("PRelu", since=6)
def prelu_v6(x, slope):
    return _prelu_channels(x, slope)
