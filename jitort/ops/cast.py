"""Cast, CastLike, BitCast over every ONNX element type (ml_dtypes for the narrow ones).

Rules (ONNX Cast spec):
- float -> float8 (E4M3FN/E4M3FNUZ/E5M2/E5M2FNUZ): round to nearest even; with ``saturate``
  out-of-range values and +-Inf clamp to +-FLT_MAX (all four types, as the opset-24 table,
  onnxruntime and the ONNX reference do; the opset 19-23 table said Inf -> NaN for FNUZ);
  without it overflow gives NaN (Inf for E5M2).
- float -> float8e8m0: per ``round_mode`` (up/down/nearest) on the exponent; saturate clamps.
- float4/float6: saturating RNE (no Inf/NaN in those formats); int4/uint4/int2/uint2: from an
  integer wrap like other integers; from a float truncate, and out of range (undefined by the
  spec) do what ml_dtypes' own cast does, as ONNX's reference and test data do.
- integers wrap (two's complement); float -> int truncates (out of range is undefined).
- strings: parse 'INF'/'+INF'/'-INF'/'NaN' case-insensitively and decimal/scientific numbers;
  numbers format like onnxruntime ('%.8g', 'NaN', 'INF', '-INF'; ints exactly, bools 1/0).
"""

from __future__ import annotations

import functools
import sys
from types import SimpleNamespace

import numpy as np

from ..dtypes import np_dtype
from ..lazy import ml_dtypes
from .registry import op

F32 = np.dtype(np.float32)


def _ml():
    """Tables of the ml_dtypes types. Empty while ml_dtypes is not imported: no array or ONNX
    type code can carry one of its types before then, and importing it costs 0.5 s."""
    return _ml_tables() if "ml_dtypes" in sys.modules else _NO_ML


@functools.cache
def _ml_tables() -> SimpleNamespace:
    sub = {np.dtype(ml_dtypes.int4): (4, True), np.dtype(ml_dtypes.uint4): (4, False),
           np.dtype(ml_dtypes.int2): (2, True), np.dtype(ml_dtypes.uint2): (2, False)}
    f4 = np.dtype(ml_dtypes.float4_e2m1fn)
    return SimpleNamespace(
        FLOAT8={np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                      ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz)},
        E8M0=np.dtype(ml_dtypes.float8_e8m0fnu), SUBBYTE_INT=sub, FLOAT4=f4,
        SUBBYTE_BITS={**{dt: b for dt, (b, _) in sub.items()}, f4: 4})


_STRING = 8  # TensorProto.STRING
_NO_ML = SimpleNamespace(FLOAT8=set(), E8M0=None, SUBBYTE_INT={}, FLOAT4=None, SUBBYTE_BITS={})
_STR = np.dtype(object)


def _is_str(dt: np.dtype) -> bool:
    return dt.kind in "OUS"


def _narrow_int(dt: np.dtype) -> bool:
    return dt in _ml().SUBBYTE_INT


def _as_compute(x: np.ndarray) -> np.ndarray:
    """Narrow floats -> float32, narrow ints -> int8/uint8 (both exact); others unchanged."""
    dt = x.dtype
    if dt.kind != "V":
        return x
    if dt in _ml().SUBBYTE_INT:
        return x.astype(np.int8 if _ml().SUBBYTE_INT[dt][1] else np.uint8)
    return x.astype(F32)


# ---------------------------------------------------------------- float8e8m0

def _to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """Power-of-two scale: the biased float32 exponent, rounded per round_mode on the mantissa."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.uint16)
    mant = bits & 0x7FFFFF
    special = exp == 0xFF
    if round_mode == "up":
        inc = mant != 0
    elif round_mode == "down":
        inc = np.zeros(exp.shape, np.bool_)
    elif round_mode == "nearest":  # ties (mantissa exactly .5) round up
        inc = (mant & 0x400000) != 0
        inc &= (exp > 0) | ((mant & 0x3FFFFF) != 0)
    else:
        raise ValueError(f"Cast: round_mode must be up, down or nearest, got {round_mode!r}")
    e = exp + inc.astype(np.uint16)
    if saturate:
        e = np.minimum(e, 0xFE)
    e = np.where(e > 0xFF, 0xFF, e)  # overflow past the largest exponent -> NaN
    isinf = special & (mant == 0)
    e = np.where(special, 0xFF, e)
    if saturate:
        e = np.where(isinf, 0xFE, e)
    return e.astype(np.uint8).view(_ml().E8M0)


# ---------------------------------------------------------------- strings

def _fmt_float(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "INF" if v > 0 else "-INF"
    return "%.8g" % v


def _to_string(x: np.ndarray) -> np.ndarray:
    dt = x.dtype
    if _is_str(dt):
        res = [str(v) for v in x.ravel()]
    elif dt == np.bool_:
        res = ["1" if v else "0" for v in x.ravel().tolist()]
    elif dt.kind in "iu" or _narrow_int(dt):
        res = [str(v) for v in _as_compute(x).ravel().tolist()]
    else:
        xf = x.astype(np.float64) if dt.kind == "V" or dt == np.float16 else x
        res = [_fmt_float(v) for v in xf.ravel().tolist()]
    arr = np.empty(len(res), dtype=object)
    arr[:] = res
    return arr.reshape(x.shape)


def _parse_float(s) -> float:
    s = s.decode() if isinstance(s, bytes) else str(s)
    try:
        return float(s)  # accepts inf/+inf/-INF/nan/infinity in any case, and 1e-5 forms
    except ValueError:
        raise ValueError(f"Cast: cannot parse {s!r} as a number") from None


def _parse_int(s) -> int:
    s = s.decode() if isinstance(s, bytes) else str(s)
    try:
        return int(s.strip())
    except ValueError:
        f = _parse_float(s)  # '100.5' -> 100 (the spec calls this undefined)
        return int(f) if f == f and abs(f) != float("inf") else 0


def _from_string(x: np.ndarray, dst: np.dtype, **kw) -> np.ndarray:
    flat = x.ravel()
    if dst == np.bool_:
        return np.array([_parse_float(s) != 0 for s in flat], dtype=np.bool_).reshape(x.shape)
    if dst.kind in "iu" or _narrow_int(dst):
        # wrap modulo 2**64, then let the integer cast discard the high bits
        vals = np.array([_parse_int(s) % (1 << 64) for s in flat], dtype=np.uint64)
        base = vals.astype(np.int64) if (dst.kind == "i" or _ml().SUBBYTE_INT.get(dst, (0, False))[1]) else vals
        return cast_array(base.reshape(x.shape), dst)
    vals = np.array([_parse_float(s) for s in flat], dtype=np.float64).reshape(x.shape)
    return cast_array(vals, dst, **kw)


# ---------------------------------------------------------------- numeric

def cast_array(x: np.ndarray, dst, saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    """x converted to dtype dst following ONNX Cast semantics."""
    dst = np.dtype(dst)
    x = np.asarray(x)
    src = x.dtype
    if _is_str(dst):
        return _to_string(x)
    if _is_str(src):
        return _from_string(x, dst, saturate=saturate, round_mode=round_mode)
    if src == dst:
        return x.copy()
    with np.errstate(all="ignore"):
        if dst == np.bool_:
            return np.asarray(_as_compute(x) != 0)
        if dst in _ml().FLOAT8:
            xf = x if src.kind == "f" else _as_compute(x).astype(
                np.float64 if src.kind in "iu" else F32)
            if saturate:
                fmax = float(ml_dtypes.finfo(dst).max)
                return np.clip(xf, -fmax, fmax).astype(dst)  # NaN passes through; Inf clamps
            return xf.astype(dst)
        if dst == _ml().E8M0:
            return _to_e8m0(_as_compute(x).astype(F32), bool(saturate), round_mode)
        if dst.kind == "V":  # bfloat16, float4/float6, int4/uint4/int2/uint2
            xc = _as_compute(x)
            if dst in _ml().SUBBYTE_INT and xc.dtype.kind == "f":
                # out of range is undefined by the spec: ml_dtypes decides (as ONNX's own
                # reference and test data do); in range it truncates toward zero
                return np.trunc(xc).astype(dst)
            elif xc.dtype == np.bool_:
                xc = xc.astype(np.int8)
            elif dst in _ml().SUBBYTE_INT and xc.dtype == np.uint64:
                xc = xc.astype(np.int64)  # wraps; the low bits are what survive
            return xc.astype(dst)
        return _as_compute(x).astype(dst)


def _cast(x, to, saturate, round_mode):
    dst = np_dtype(to)  # STRING (8) -> object
    return cast_array(x, dst, saturate, round_mode)


@op("Cast", since=6)
def cast_6(x, *, to):
    return _cast(x, to, 1, "up")


@op("Cast", since=19)
def cast_19(x, *, to, saturate=1):
    return _cast(x, to, saturate, "up")


@op("Cast", since=24)
def cast_24(x, *, to, saturate=1, round_mode="up"):
    return _cast(x, to, saturate, round_mode)


@op("CastLike", since=15)
def cast_like_15(x, target):
    return cast_array(x, target.dtype, 1, "up")


@op("CastLike", since=19)
def cast_like_19(x, target, *, saturate=1):
    return cast_array(x, target.dtype, saturate, "up")


@op("CastLike", since=24)
def cast_like_24(x, target, *, saturate=1, round_mode="up"):
    return cast_array(x, target.dtype, saturate, round_mode)


# ---------------------------------------------------------------- BitCast



def _bit_width(dt: np.dtype) -> int:
    return _ml().SUBBYTE_BITS.get(dt, dt.itemsize * 8)


@op("BitCast", since=26)
def bit_cast(x, *, to):
    """Reinterpret the (little-endian) bits of each element as type ``to``."""
    if to == _STRING or _is_str(x.dtype):
        raise TypeError("BitCast does not support string tensors")
    dst = np_dtype(to)
    src = x.dtype
    if _bit_width(src) != _bit_width(dst):
        raise ValueError(f"BitCast: {src} ({_bit_width(src)} bits) and {dst} "
                         f"({_bit_width(dst)} bits) differ in width")
    x = x if x.flags.c_contiguous else x.copy()
    if src.byteorder == ">":
        x = x.astype(src.newbyteorder("<"))
    if dst in _ml().SUBBYTE_BITS:
        nbits = _bit_width(dst)
        u = x.view(np.uint8) & np.uint8((1 << nbits) - 1)
        if dst in _ml().SUBBYTE_INT and _ml().SUBBYTE_INT[dst][1]:  # sign-extend the low bits
            half = 1 << (nbits - 1)
            return ((u.astype(np.int8) ^ half) - half).astype(np.int8).astype(dst)
        if dst == _ml().FLOAT4:
            return u.view(dst)
        return u.astype(dst)
    if dst == np.bool_:
        return np.asarray(x.view(np.uint8) != 0)
    return x.view(dst).copy()
