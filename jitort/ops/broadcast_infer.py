"""Type inference of elementwise ops without ONNX's schema inference (which needs the onnx
package: 0.6 s to import, see lazy.py, and a protobuf round trip per node).

    same_type(ctx, *types)       # output: the first typed input's dtype, inputs broadcast
    to_bool(ctx, *types)         # comparisons, logical ops, IsNaN: bool, inputs broadcast
    where(ctx, cond, x, y)       # x's dtype, the three broadcast

Broadcasting follows NumPy's rules on known dims; a symbolic or unknown dim against 1 keeps the
other, against a known dim > 1 becomes that dim, against a different symbol becomes unknown
(None). Two known dims that differ (and neither is 1) raise: the caller then falls back to ONNX's
inference, which reports the model as it would.
"""

from __future__ import annotations

import numpy as np

from ..ir.types import TensorType
from .contrib_common import bshape as broadcast


def _tensors(types):
    if not types or not all(isinstance(t, TensorType) for t in types):
        raise TypeError("non-tensor input")
    return types


def same_type(ctx, *types, **_attrs):
    ts = _tensors([t for t in types if t is not None])
    dtype = next((t.dtype for t in ts if t.dtype is not None), None)
    return [TensorType(dtype, broadcast(*(t.shape for t in ts)))]


def to_bool(ctx, *types, **_attrs):
    ts = _tensors([t for t in types if t is not None])
    return [TensorType(np.dtype(np.bool_), broadcast(*(t.shape for t in ts)))]


def where(ctx, cond, x, y, **_attrs):
    ts = _tensors([cond, x, y])
    return [TensorType(x.dtype if x.dtype is not None else y.dtype, broadcast(*(t.shape for t in ts)))]


for _fn in (same_type, to_bool, where):
    _fn.replaces_onnx = True  # jitort.ir.infer: used where ONNX's inference was, constants still fold

#: op name, since -> infer (the kernels are registered in elementwise.py)
INFERS = {
    **{(n, s): same_type for n, s in [
        ("Add", 7), ("Sub", 7), ("Mul", 7), ("Div", 7), ("Mod", 10), ("Sum", 6), ("Mean", 6),
        ("Max", 6), ("Min", 6), ("BitwiseAnd", 18), ("BitwiseOr", 18), ("BitwiseXor", 18),
        ("Reciprocal", 6), ("Erf", 9), ("Abs", 6), ("Neg", 6), ("Sign", 9), ("BitwiseNot", 18),
        ("Sqrt", 6), ("Exp", 6), ("Log", 6), ("Sin", 7), ("Cos", 7), ("Tan", 7), ("Asin", 7),
        ("Acos", 7), ("Atan", 7), ("Sinh", 9), ("Cosh", 9), ("Tanh", 6), ("Asinh", 9),
        ("Acosh", 9), ("Atanh", 9), ("Floor", 6), ("Ceil", 6), ("Round", 11)]},
    **{(n, s): to_bool for n, s in [
        ("Equal", 7), ("Less", 7), ("Greater", 7), ("LessOrEqual", 12), ("GreaterOrEqual", 12),
        ("And", 7), ("Or", 7), ("Xor", 7), ("Not", 1), ("IsNaN", 9), ("IsInf", 10)]},
    ("Where", 9): where,
}
