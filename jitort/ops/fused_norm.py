"""Fused jitort-domain ops made by the extended passes: Gelu, LayerNorm, SkipLayerNorm, RMSNorm.

Each has a vectorized NumPy reference kernel (equal to the subgraph it replaces up to float
reassociation), an ``infer`` (jitort ops have no ONNX schema) and an ONNX function body for
``export_optimized``. Statistics of narrow floats are computed in float32, results cast back.

    jitort::Gelu(X) -> Y                              attrs: approximate = "none" | "tanh"
        none: Y = 0.5 * X * (1 + erf(X / sqrt(2)))
        tanh: Y = 0.5 * X * (1 + tanh(sqrt(2/pi) * (X + 0.044715 * X^3)))
    jitort::LayerNorm(X, Scale, [B]) -> Y             attrs: axis (-1), epsilon (1e-5)
        opset-17 LayerNormalization semantics (normalize over axes [axis, rank)) for graphs whose
        opset predates it; Scale/B have the normalized shape X.shape[axis:].
    jitort::SkipLayerNorm(X, Skip, Gamma, [Beta], [Bias]) -> Y, [Sum]   attrs: epsilon (1e-5)
        Sum = X + Skip (+ Bias), computed (and rounded) in X's dtype; Skip broadcasts to X,
        Bias and Gamma/Beta have shape (hidden,). Y = LayerNorm(Sum) over the last axis * Gamma
        + Beta. The optional second output is Sum (onnxruntime's SkipLayerNormalization puts it
        fourth, after mean and inv_std_var; jitort has no use for those).
    jitort::RMSNorm(X, [Scale]) -> Y                  attrs: axis (-1), epsilon (1e-5)
        Y = X / sqrt(mean(X^2 over axes [axis, rank)) + epsilon) * Scale; Scale has the
        normalized shape X.shape[axis:] (absent: 1).
"""

from __future__ import annotations

import math

import numpy as np
from ..lazy import onnx_helper as helper

from ..ir.fused_export import onnx_body
from .contrib_common import bshape, dtype_of, like, shape_of, tt, wide
from .fastmath import erf
from .registry import op

JITORT = "jitort"
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT2_PI = math.sqrt(2.0 / math.pi)


def _same(ctx, x, *_, **__):
    return [tt(dtype_of(x), shape_of(x))]


def _axis(axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return a


# ---------------------------------------------------------------------------------------- Gelu

def gelu_ref(w: np.ndarray, approximate: str) -> np.ndarray:
    """GELU of an array already in its compute dtype."""
    t = w.dtype.type
    if approximate == "tanh":
        return t(0.5) * w * (t(1) + np.tanh(t(_SQRT2_PI) * (w + t(0.044715) * (w * w * w))))
    if approximate != "none":
        raise ValueError(f"jitort::Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return t(0.5) * w * (t(1) + erf(w * t(_SQRT1_2)))


@op("Gelu", since=1, domain=JITORT, infer=_same)
def gelu(x, *, approximate="none"):
    """Y = GELU(X), exact (erf) or tanh-approximated; any float dtype."""
    with np.errstate(all="ignore"):
        return like(gelu_ref(wide(x), approximate), x.dtype)


@onnx_body("Gelu")
def _gelu_body(node):
    return [helper.make_node("Gelu", ["x0"], ["y0"], approximate=node.attrs.get("approximate", "none"))]


# ------------------------------------------------------------------------------- normalizations

def _layer_norm(w, a, eps):
    axes = tuple(range(a, w.ndim))
    mean = w.mean(axis=axes, keepdims=True)
    d = w - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    return d / np.sqrt(var + w.dtype.type(eps))


@op("LayerNorm", since=1, domain=JITORT, infer=_same)
def layer_norm(x, scale, b=None, *, axis=-1, epsilon=1e-5):
    """LayerNormalization-17 over axes [axis, rank) for any opset: (X - mean) / sqrt(var + eps)
    * Scale + B."""
    w = wide(x)
    y = _layer_norm(w, _axis(axis, x.ndim), epsilon) * wide(scale)
    if b is not None:
        y = y + wide(b)
    return like(y, x.dtype)


@onnx_body("LayerNorm")
def _layer_norm_body(node):
    ins = ["x0", "x1"] + (["x2"] if len(node.inputs) > 2 and node.inputs[2] else [])
    return [helper.make_node("LayerNormalization", ins, ["y0"], axis=node.attrs.get("axis", -1),
                             epsilon=float(node.attrs.get("epsilon", 1e-5)))]


def _skip_ln_infer(ctx, x, skip=None, *_, **__):
    shape = shape_of(x)
    if shape is not None and shape_of(skip) is not None:
        shape = bshape(shape, shape_of(skip))
    outs = [tt(dtype_of(x), shape)] * 2
    return outs[: max(1, min(2, ctx.num_outputs or 1))]


@op("SkipLayerNorm", since=1, domain=JITORT, infer=_skip_ln_infer)
def skip_layer_norm(ctx, x, skip, gamma, beta=None, bias=None, *, epsilon=1e-5):
    """Y = LayerNorm(X + Skip + Bias) * Gamma + Beta over the last axis; second output the sum."""
    s = x + skip if bias is None else (x + skip) + bias  # rounded in X's dtype, as the graph did
    s = like(s, x.dtype)
    y = _layer_norm(wide(s), s.ndim - 1, epsilon) * wide(gamma)
    if beta is not None:
        y = y + wide(beta)
    y = like(y, x.dtype)
    return [y, s] if ctx.num_outputs > 1 else y


@onnx_body("SkipLayerNorm")
def _skip_layer_norm_body(node):
    has = [i < len(node.inputs) and bool(node.inputs[i]) for i in range(5)]
    two = len(node.outputs) > 1 and bool(node.outputs[1])
    s = "y1" if two else "sum"
    nodes = [helper.make_node("Add", ["x0", "x1"], ["xs" if has[4] else s])]
    if has[4]:
        nodes.append(helper.make_node("Add", ["xs", "x4"], [s]))
    ln_in = [s, "x2"] + (["x3"] if has[3] else [])
    nodes.append(helper.make_node("LayerNormalization", ln_in, ["y0"], axis=-1,
                                  epsilon=float(node.attrs.get("epsilon", 1e-5))))
    return nodes


@op("RMSNorm", since=1, domain=JITORT, infer=_same)
def rms_norm(x, scale=None, *, axis=-1, epsilon=1e-5):
    """Y = X / sqrt(mean(X^2 over [axis, rank)) + eps) * Scale."""
    w = wide(x)
    axes = tuple(range(_axis(axis, x.ndim), x.ndim))
    ms = (w * w).mean(axis=axes, keepdims=True)
    y = w / np.sqrt(ms + w.dtype.type(epsilon))
    if scale is not None:
        y = y * wide(scale)
    return like(y, x.dtype)


@onnx_body("RMSNorm")
def _rms_norm_body(node):
    # decomposed (RMSNormalization-23 is not implemented everywhere): x * x, mean, + eps, sqrt, /
    eps = helper.make_tensor("eps", 1, [], [float(node.attrs.get("epsilon", 1e-5))])
    nodes = [
        helper.make_node("Constant", [], ["eps_f"], value=eps),
        helper.make_node("CastLike", ["eps_f", "x0"], ["eps_x"]),
        helper.make_node("Shape", ["x0"], ["shp"]),
        helper.make_node("Size", ["shp"], ["rank"]),
        helper.make_node("Constant", [], ["ax"], value_int=int(node.attrs.get("axis", -1))),
        helper.make_node("Constant", [], ["zero"], value_int=0),
        helper.make_node("Constant", [], ["one"], value_int=1),
        helper.make_node("Less", ["ax", "zero"], ["neg"]),
        helper.make_node("Add", ["ax", "rank"], ["ax_wrapped"]),
        helper.make_node("Where", ["neg", "ax_wrapped", "ax"], ["start"]),
        helper.make_node("Range", ["start", "rank", "one"], ["axes"]),
        helper.make_node("Mul", ["x0", "x0"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], keepdims=1),
        helper.make_node("Add", ["ms", "eps_x"], ["mse"]),
        helper.make_node("Sqrt", ["mse"], ["rms"]),
    ]
    if len(node.inputs) > 1 and node.inputs[1]:
        nodes += [helper.make_node("Div", ["x0", "rms"], ["n"]),
                  helper.make_node("Mul", ["n", "x1"], ["y0"])]
    else:
        nodes.append(helper.make_node("Div", ["x0", "rms"], ["y0"]))
    return nodes
