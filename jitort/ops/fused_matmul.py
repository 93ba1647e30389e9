"""jitort::FusedMatMul: a MatMul or Gemm with its epilogue (bias, activation, residual) fused.

    jitort::FusedMatMul(A, B, [Bias], [Residual]) -> Y
        attrs: transA, transB (0/1, Gemm only: 2-D operands), alpha (1.0),
               activation ("" | Relu | Gelu | GeluTanh | Sigmoid | Tanh | LeakyRelu | Clip),
               activation_params (floats: LeakyRelu [alpha]; Clip [min, max])
        Y = act(alpha * op(A) @ op(B) + Bias) + Residual
    op(M) is M transposed when trans is set; @ is numpy.matmul (batched, broadcasting). Bias has
    shape (N,) or (1,) and broadcasts along the last dim; Residual broadcasts to the product's
    shape without enlarging it. The product is computed in A's dtype (float32 for narrower
    floats) and rounded to A's dtype once at the end.
"""

from __future__ import annotations

import numpy as np
from ..lazy import onnx_helper as helper

from ..ir.fused_export import onnx_body
from .contrib_common import dtype_of, like, matmul_shape, shape_of, tt, wide
from .fused_norm import JITORT, gelu_ref
from .registry import op

ACTIVATIONS = ("", "Relu", "Gelu", "GeluTanh", "Sigmoid", "Tanh", "LeakyRelu", "Clip")


def _operand_shape(shape, trans):
    if shape is None or not trans:
        return shape
    return tuple(shape[:-2]) + (shape[-1], shape[-2])


def _infer(ctx, a, b, bias=None, residual=None, *, transA=0, transB=0, **_):
    shape = matmul_shape(_operand_shape(shape_of(a), transA), _operand_shape(shape_of(b), transB))
    return [tt(dtype_of(a), shape)]


def apply_activation(y: np.ndarray, activation: str, params) -> np.ndarray:
    t = y.dtype.type
    p = [float(v) for v in (params or [])]
    if activation == "":
        return y
    if activation == "Relu":
        return np.maximum(y, t(0))
    if activation == "Gelu":
        return gelu_ref(y, "none")
    if activation == "GeluTanh":
        return gelu_ref(y, "tanh")
    if activation == "Sigmoid":
        return t(1) / (t(1) + np.exp(-y))
    if activation == "Tanh":
        return np.tanh(y)
    if activation == "LeakyRelu":
        return np.where(y >= 0, y, y * t(np.float32(p[0] if p else 0.01)))
    if activation == "Clip":
        lo, hi = (p + [-np.inf, np.inf][len(p):])[:2]
        return np.minimum(np.maximum(y, t(lo)), t(hi))
    raise ValueError(f"jitort::FusedMatMul: unknown activation {activation!r}; known: {ACTIVATIONS}")


@op("FusedMatMul", since=1, domain=JITORT, infer=_infer)
def fused_matmul(a, b, bias=None, residual=None, *, transA=0, transB=0, alpha=1.0, activation="",
                 activation_params=None):
    """act(alpha * op(A) @ op(B) + Bias) + Residual."""
    wa, wb = wide(a), wide(b)
    if transA:
        wa = np.swapaxes(wa, -1, -2)
    if transB:
        wb = np.swapaxes(wb, -1, -2)
    with np.errstate(all="ignore"):
        y = np.matmul(wa, wb)
        if alpha != 1.0:
            y = y * y.dtype.type(np.float32(alpha))
        if bias is not None:
            y = y + wide(bias)
        y = apply_activation(y, activation, activation_params)
        if residual is not None:
            y = y + wide(residual)
    return like(y, a.dtype)


def _act_nodes(activation: str, params, src: str, dst: str) -> list:
    p = [float(v) for v in (params or [])]
    if activation == "GeluTanh":
        return [helper.make_node("Gelu", [src], [dst], approximate="tanh")]
    if activation == "LeakyRelu":
        return [helper.make_node("LeakyRelu", [src], [dst], alpha=p[0] if p else 0.01)]
    if activation == "Clip":
        lo, hi = (p + [-np.inf, np.inf][len(p):])[:2]
        return [
            helper.make_node("Constant", [], ["lo_f"], value=helper.make_tensor("lo", 1, [], [lo])),
            helper.make_node("Constant", [], ["hi_f"], value=helper.make_tensor("hi", 1, [], [hi])),
            helper.make_node("CastLike", ["lo_f", src], ["lo"]),
            helper.make_node("CastLike", ["hi_f", src], ["hi"]),
            helper.make_node("Clip", [src, "lo", "hi"], [dst]),
        ]
    return [helper.make_node(activation, [src], [dst])]


@onnx_body("FusedMatMul")
def _fused_matmul_body(node):
    at = node.attrs
    has = [i < len(node.inputs) and bool(node.inputs[i]) for i in range(4)]
    steps = []
    if at.get("transA", 0) or at.get("transB", 0) or float(at.get("alpha", 1.0)) != 1.0:
        steps.append(("Gemm", ["x0", "x1"], dict(transA=int(at.get("transA", 0)),
                                                  transB=int(at.get("transB", 0)),
                                                  alpha=float(at.get("alpha", 1.0)))))
    else:
        steps.append(("MatMul", ["x0", "x1"], {}))
    if has[2]:
        steps.append(("Add", [None, "x2"], {}))
    act = at.get("activation", "")
    if act:
        steps.append(("act", [None], {}))
    if has[3]:
        steps.append(("Add", [None, "x3"], {}))
    nodes, prev = [], None
    for k, (kind, ins, kw) in enumerate(steps):
        dst = "y0" if k == len(steps) - 1 else f"t{k}"
        ins = [prev if i is None else i for i in ins]
        if kind == "act":
            nodes += _act_nodes(act, at.get("activation_params"), ins[0], dst)
        else:
            nodes.append(helper.make_node(kind, ins, [dst], **kw))
        prev = dst
    return nodes
