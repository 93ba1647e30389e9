"""Element types: ONNX TensorProto codes <-> NumPy dtypes (ml_dtypes for the narrow floats/ints)."""

from __future__ import annotations

import ml_dtypes  # noqa: F401  (registers bfloat16, float8_*, int4 ... with NumPy)
import numpy as np
from onnx import TensorProto, helper

_NAMES = {v: k.lower() for k, v in TensorProto.DataType.items() if v != TensorProto.UNDEFINED}

ONNX_TO_NP: dict[int, np.dtype] = {}
for _code in _NAMES:
    try:
        ONNX_TO_NP[_code] = np.dtype(helper.tensor_dtype_to_np_dtype(_code))
    except Exception:  # pragma: no cover - a type this onnx build cannot map
        pass
ONNX_TO_NP[TensorProto.STRING] = np.dtype(object)
NP_TO_ONNX: dict[np.dtype, int] = {dt: code for code, dt in ONNX_TO_NP.items()}


def np_dtype(code: int) -> np.dtype:
    """NumPy dtype of an ONNX element type code."""
    try:
        return ONNX_TO_NP[code]
    except KeyError:
        raise ValueError(f"unknown ONNX element type {code}") from None


def onnx_code(dtype) -> int:
    """ONNX element type code of a NumPy dtype (str/bytes arrays map to STRING)."""
    dt = np.dtype(dtype)
    if dt.kind in "USO":
        return TensorProto.STRING
    try:
        return NP_TO_ONNX[dt]
    except KeyError:
        raise ValueError(f"NumPy dtype {dt} has no ONNX element type") from None


def type_name(code: int) -> str:
    """The short name onnxruntime uses inside 'tensor(...)': float, int64, bfloat16, ..."""
    name = _NAMES.get(code, "undefined")
    return {"float": "float", "double": "double"}.get(name, name)


FLOAT_CODES = frozenset(
    c for c, dt in ONNX_TO_NP.items() if dt.kind == "f" or dt.name.startswith(("bfloat", "float"))
)
