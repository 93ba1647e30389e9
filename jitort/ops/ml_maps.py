"""ai.onnx.ml operators on maps: ZipMap (tensor -> sequence of maps), DictVectorizer and CastMap
(map -> tensor).

A map is a Python dict; a sequence of maps is a list of dicts (what onnxruntime's Python API
returns). Keys and values follow onnxruntime: its maps are std::map, so a ZipMap dict lists its
keys in sorted order, CastMap reads its input in key order, and CastMap's string conversions are
C's (std::stof / std::stoll prefixes, "%f" formatting, "0.f" padding).
"""

from __future__ import annotations

import re
from itertools import repeat

import numpy as np

from .ml import ML
from .registry import op


def _as_map(X) -> dict:
    """The map input: a dict (a 0-d object array holding one is unwrapped)."""
    if isinstance(X, np.ndarray) and X.dtype == object and X.ndim == 0:
        X = X.item()
    if not isinstance(X, dict):
        raise TypeError(f"expected a map (dict) input, got {type(X).__name__}")
    return X


# ------------------------------------------------------------------ ZipMap


@op("ZipMap", since=1, domain=ML)
def zip_map(X, *, classlabels_int64s=None, classlabels_strings=None):
    """[N, C] or [C] float scores -> a list of N dicts {label: score} (a 1-tuple: one output)."""
    if bool(classlabels_strings) == bool(classlabels_int64s):
        raise ValueError("ZipMap: give exactly one of classlabels_strings, classlabels_int64s")
    labels = ([str(s) for s in classlabels_strings] if classlabels_strings
              else [int(v) for v in classlabels_int64s])
    x = np.asarray(X)
    if x.ndim not in (1, 2):
        raise ValueError(f"ZipMap: input must be 1-D or 2-D, got shape {list(x.shape)}")
    x = x.reshape(1, -1) if x.ndim == 1 else x
    if x.shape[1] != len(labels):
        raise ValueError(f"ZipMap: {x.shape[1]} scores per row but {len(labels)} class labels")
    # sorted keys; a repeated label keeps its last column (std::map assignment)
    last = {k: i for i, k in enumerate(labels)}
    keys = sorted(last)
    cols = [last[k] for k in keys]
    sel = x if cols == list(range(x.shape[1])) else x[:, cols]
    rows = sel.astype(np.float32).astype(np.float64).tolist()  # float32 values as Python floats
    return (list(map(dict, map(zip, repeat(keys), rows))),)


# ------------------------------------------------------------------ DictVectorizer


def _value_dtype(values: list, ctx) -> np.dtype:
    """Output dtype: the inferred one when the session knows it, else from the values."""
    known = ctx.output_dtypes[0] if ctx is not None and ctx.output_dtypes else None
    if known is not None:
        return np.dtype(known)
    if not values:
        return np.dtype(np.float32)
    if any(isinstance(v, (str, np.str_, bytes)) for v in values):
        return np.dtype(object)
    np_types = [v.dtype for v in values if isinstance(v, np.generic)]
    if np_types and len(np_types) == len(values):
        return np.result_type(*np_types)
    if all(isinstance(v, (bool, int, np.integer)) for v in values):
        return np.dtype(np.int64)
    return np.dtype(np.float32)  # Python floats: map(*, float), the common case


@op("DictVectorizer", since=1, domain=ML)
def dict_vectorizer(ctx, X, *, int64_vocabulary=None, string_vocabulary=None):
    """A map -> [1, len(vocabulary)]: the value of each vocabulary key, 0 ("" for strings) if
    absent. Repeated vocabulary entries repeat the value."""
    m = _as_map(X)
    if string_vocabulary and int64_vocabulary:
        first = next(iter(m), None)
        use_str = first is None or isinstance(first, (str, np.str_))
    else:
        use_str = bool(string_vocabulary)
    if use_str:
        vocab = [str(s) for s in string_vocabulary]
    elif int64_vocabulary:
        vocab = [int(v) for v in int64_vocabulary]
    else:
        raise ValueError("DictVectorizer: no vocabulary")
    dt = _value_dtype(list(m.values()), ctx)
    if dt == object:
        out = np.array([m.get(k, "") for k in vocab] or [], dtype=object)
    else:
        out = np.fromiter(map(m.get, vocab, repeat(0)), dtype=dt, count=len(vocab))
    return out.reshape(1, len(vocab))


# ------------------------------------------------------------------ CastMap

_WS = "[ \t\n\v\f\r]*"
_FLOAT_RX = re.compile(
    _WS + r"([+-]?)(?:(0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?)"
    r"|((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan))", re.IGNORECASE)
_INT_RX = re.compile(_WS + r"([+-]?\d+)")
_I64 = np.iinfo(np.int64)


def _stof(s: str) -> float:
    """std::stof: the longest float prefix after leading whitespace; errors as it throws."""
    m = _FLOAT_RX.match(s)
    if not m:
        raise ValueError(f"CastMap: cannot convert {s!r} to float")
    if m.group(2):
        v = float.fromhex(m.group(1) + m.group(2))
    else:
        v = float(m.group(1) + m.group(3))
    with np.errstate(over="ignore"):
        f = np.float32(v)
    if np.isinf(f) and np.isfinite(v):
        raise ValueError(f"CastMap: {s!r} is out of float range")
    return float(f)


def _stoll(s: str) -> int:
    """std::stoll: the longest base-10 integer prefix after leading whitespace."""
    m = _INT_RX.match(s)
    if not m:
        raise ValueError(f"CastMap: cannot convert {s!r} to int64")
    v = int(m.group(1))
    if not _I64.min <= v <= _I64.max:
        raise ValueError(f"CastMap: {s!r} is out of int64 range")
    return v


_OUT = {"TO_FLOAT": (np.float32, 0.0), "TO_INT64": (np.int64, 0), "TO_STRING": (object, "0.f")}


def _cast_values(vals: list, cast_to: str) -> np.ndarray:
    if any(isinstance(v, (str, np.str_)) for v in vals):
        if cast_to == "TO_STRING":
            return np.array([str(v) for v in vals], dtype=object)
        conv = _stof if cast_to == "TO_FLOAT" else _stoll
        return np.array([conv(str(v)) for v in vals], dtype=_OUT[cast_to][0])
    f = np.asarray(vals, dtype=np.float32).reshape(-1)
    if cast_to == "TO_FLOAT":
        return f
    if cast_to == "TO_INT64":
        with np.errstate(invalid="ignore"):
            return f.astype(np.int64)  # C truncation
    return np.array([f"{v:f}" for v in f.tolist()], dtype=object)  # std::to_string(float)


@op("CastMap", since=1, domain=ML)
def cast_map(X, *, cast_to="TO_FLOAT", map_form="DENSE", max_map=1):
    """A map int64 -> (string | float) -> [1, n]: DENSE takes the values in key order; SPARSE
    puts the value of key k at column k of max_map columns, padding the others."""
    if cast_to not in _OUT:
        raise ValueError(
            f"CastMap: cast_to must be TO_FLOAT, TO_STRING or TO_INT64, got {cast_to!r}")
    if map_form not in ("DENSE", "SPARSE"):
        raise ValueError(f"CastMap: map_form must be DENSE or SPARSE, got {map_form!r}")
    m = _as_map(X)
    keys = sorted(int(k) for k in m)
    by_int = {int(k): v for k, v in m.items()}
    dt, pad = _OUT[cast_to]
    vals = _cast_values([by_int[k] for k in keys], cast_to) if keys else np.zeros(0, dt)
    if map_form == "DENSE":
        return vals.astype(dt).reshape(1, len(keys))
    if keys and keys[0] < 0:
        raise ValueError(f"CastMap: negative key {keys[0]} in a SPARSE map")
    out = np.empty(max(int(max_map), 0), dtype=dt)
    out[...] = pad
    k = np.asarray(keys, np.int64)
    inside = k < out.size
    out[k[inside]] = vals[inside]
    return out.reshape(1, -1)
