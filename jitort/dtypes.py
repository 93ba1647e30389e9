"""Element types: ONNX TensorProto codes <-> NumPy dtypes (ml_dtypes for the narrow floats/ints).

The common codes map without importing onnx or ml_dtypes (0.6 s together, see lazy.py); the
full tables (``ONNX_TO_NP``, ``NP_TO_ONNX``, ``FLOAT_CODES``) are built on first use.
"""

from __future__ import annotations

import functools

import numpy as np

#: TensorProto codes NumPy has natively (onnx.TensorProto.DataType values).
_BASE = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
         8: object, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
         14: np.complex64, 15: np.complex128}
_BASE_TO_NP = {k: np.dtype(v) for k, v in _BASE.items()}
_BASE_TO_ONNX = {dt: k for k, dt in _BASE_TO_NP.items() if k != 8}
_BASE_NAMES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
               8: "string", 9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64",
               14: "complex64", 15: "complex128"}


@functools.cache
def _tables():
    import ml_dtypes  # noqa: F401  (registers bfloat16, float8_*, int4 ... with NumPy)
    from onnx import TensorProto, helper

    names = {v: k.lower() for k, v in TensorProto.DataType.items() if v != TensorProto.UNDEFINED}
    to_np: dict[int, np.dtype] = {}
    for code in names:
        try:
            to_np[code] = np.dtype(helper.tensor_dtype_to_np_dtype(code))
        except Exception:  # pragma: no cover - a type this onnx build cannot map
            pass
    to_np[TensorProto.STRING] = np.dtype(object)
    to_onnx = {dt: code for code, dt in to_np.items()}
    floats = frozenset(c for c, dt in to_np.items() if dt.kind == "f" or dt.name.startswith(("bfloat", "float")))
    return names, to_np, to_onnx, floats


def __getattr__(name: str):
    i = {"_NAMES": 0, "ONNX_TO_NP": 1, "NP_TO_ONNX": 2, "FLOAT_CODES": 3}.get(name)
    if i is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _tables()[i]


def np_dtype(code: int) -> np.dtype:
    """NumPy dtype of an ONNX element type code."""
    dt = _BASE_TO_NP.get(code)
    if dt is not None:
        return dt
    try:
        return _tables()[1][code]
    except KeyError:
        raise ValueError(f"unknown ONNX element type {code}") from None


def onnx_code(dtype) -> int:
    """ONNX element type code of a NumPy dtype (str/bytes arrays map to STRING)."""
    dt = np.dtype(dtype)
    if dt.kind in "USO":
        return 8
    code = _BASE_TO_ONNX.get(dt)
    if code is not None:
        return code
    try:
        return _tables()[2][dt]
    except KeyError:
        raise ValueError(f"NumPy dtype {dt} has no ONNX element type") from None


def type_name(code: int) -> str:
    """The short name onnxruntime uses inside 'tensor(...)': float, int64, bfloat16, ..."""
    name = _BASE_NAMES.get(code)
    return name if name is not None else _tables()[0].get(code, "undefined")
