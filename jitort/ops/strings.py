"""String ops over object arrays of str: StringConcat, StringNormalizer, StringSplit,
RegexFullMatch. Per-element Python string work is inherent here (no vectorized str kernels)."""

from __future__ import annotations

import functools
import re

import numpy as np

from .registry import op


def _s(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _obj(values, shape) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr.reshape(shape)


@op("StringConcat", since=20)
def string_concat(x, y):
    xb, yb = np.broadcast_arrays(np.asarray(x, dtype=object), np.asarray(y, dtype=object))
    return _obj([_s(a) + _s(b) for a, b in zip(xb.ravel().tolist(), yb.ravel().tolist())],
                xb.shape)


@op("StringNormalizer", since=10)
def string_normalizer(x, *, case_change_action="NONE", is_case_sensitive=0, locale="",
                      stopwords=None):
    """Drop stopwords, then change case. Accepts [C] or [1, C]; an empty result is [""]."""
    if x.ndim == 2 and x.shape[0] != 1 or x.ndim not in (1, 2):
        raise ValueError(f"StringNormalizer: input must be [C] or [1, C], got {x.shape}")
    words = [_s(v) for v in x.ravel().tolist()]
    if stopwords:
        if is_case_sensitive:
            stop = set(stopwords)
            words = [w for w in words if w not in stop]
        else:
            stop = {s.lower() for s in stopwords}
            words = [w for w in words if w.lower() not in stop]
    if case_change_action == "LOWER":
        words = [w.lower() for w in words]
    elif case_change_action == "UPPER":
        words = [w.upper() for w in words]
    elif case_change_action not in ("NONE", ""):
        raise ValueError(f"StringNormalizer: bad case_change_action {case_change_action!r}")
    if not words:
        words = [""]
    return _obj(words, (1, len(words)) if x.ndim == 2 else (len(words),))


@op("StringSplit", since=20)
def string_split(x, *, delimiter="", maxsplit=None):
    """Y: substrings padded with "" along a new last axis; Z: int64 substring counts."""
    ms = -1 if maxsplit is None else int(maxsplit)
    sep = delimiter if delimiter else None  # None: runs of whitespace, trimmed (str.split())
    parts = [_s(v).split(sep, ms) for v in x.ravel().tolist()]
    counts = np.array([len(p) for p in parts], dtype=np.int64).reshape(x.shape)
    width = max((len(p) for p in parts), default=0)
    y = np.empty((len(parts), width), dtype=object)
    y[...] = ""
    for i, p in enumerate(parts):
        y[i, : len(p)] = p
    return y.reshape(x.shape + (width,)), counts


@functools.lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern:
    # RE2's \z (end of text) is Python's \Z; the rest of the common RE2 syntax matches re.
    return re.compile(re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", pattern))


@op("RegexFullMatch", since=20)
def regex_full_match(x, *, pattern):
    rx = _compile(pattern)
    flat = [rx.fullmatch(_s(v)) is not None for v in x.ravel().tolist()]
    return np.array(flat, dtype=np.bool_).reshape(x.shape)
