"""ai.onnx.preview.training optimizers: Adagrad, Adam, Momentum.

Inputs are R (learning rate), T (update count), then the tensor groups back to back
(X..., G..., [V...], [H...]). Scalar coefficients are folded in float64 and applied in each
tensor's own dtype.
"""

from __future__ import annotations

import numpy as np

from .registry import op

_DOMAIN = "ai.onnx.preview.training"


def _groups(tensors, k, name):
    if len(tensors) % k:
        raise ValueError(f"{name}: {len(tensors)} tensor inputs is not a multiple of {k}")
    n = len(tensors) // k
    return [tensors[i * n:(i + 1) * n] for i in range(k)]


def _scalar(a) -> float:
    return np.asarray(a).reshape(-1)[0].item()


def _s(v, dt):
    return dt.type(v)


@op("Adagrad", since=1, domain=_DOMAIN)
def adagrad(R, T, *tensors, decay_factor=0.0, epsilon=1e-6, norm_coefficient=0.0):
    xs, gs, hs = _groups(tensors, 3, "Adagrad")
    r = _scalar(R) / (1.0 + _scalar(T) * decay_factor)
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs):
        dt = x.dtype
        g = _s(norm_coefficient, dt) * x + g
        h2 = h + g * g
        new_x.append((x - _s(r, dt) * g / (np.sqrt(h2) + _s(epsilon, dt))).astype(dt))
        new_h.append(h2.astype(dt))
    return tuple(new_x + new_h)


@op("Momentum", since=1, domain=_DOMAIN)
def momentum(R, T, *tensors, alpha, beta, mode, norm_coefficient):
    xs, gs, vs = _groups(tensors, 3, "Momentum")
    if mode not in ("standard", "nesterov"):
        raise ValueError(f"Momentum: unknown mode {mode!r}")
    b = beta if _scalar(T) > 0 else 1.0
    new_x, new_v = [], []
    for x, g, v in zip(xs, gs, vs):
        dt = x.dtype
        g = _s(norm_coefficient, dt) * x + g
        v2 = _s(alpha, dt) * v + _s(b, dt) * g
        step = v2 if mode == "standard" else g + _s(alpha, dt) * v2
        new_x.append((x - _s(_scalar(R), dt) * step).astype(dt))
        new_v.append(v2.astype(dt))
    return tuple(new_x + new_v)


@op("Adam", since=1, domain=_DOMAIN)
def adam(R, T, *tensors, alpha=0.9, beta=0.999, epsilon=1e-6, norm_coefficient=0.0,
         norm_coefficient_post=0.0):
    xs, gs, vs, hs = _groups(tensors, 4, "Adam")
    t = int(_scalar(T))
    r = _scalar(R)
    if t > 0:  # bias correction of both moments folded into the rate
        r = r * np.sqrt(1.0 - beta ** t) / (1.0 - alpha ** t)
    out_x, out_v, out_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        dt = x.dtype
        g = _s(norm_coefficient, dt) * x + g
        v2 = _s(alpha, dt) * v + _s(1 - alpha, dt) * g
        h2 = _s(beta, dt) * h + _s(1 - beta, dt) * (g * g)
        xn = x - _s(r, dt) * (v2 / (np.sqrt(h2) + _s(epsilon, dt)))
        out_x.append((_s(1 - norm_coefficient_post, dt) * xn).astype(dt))
        out_v.append(v2.astype(dt))
        out_h.append(h2.astype(dt))
    return tuple(out_x + out_v + out_h)
