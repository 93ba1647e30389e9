"""ai.onnx.ml: the non-tree classic-ML operators (trees live in ml_trees.py).

Semantics follow the ONNX-ML spec and, where the spec is vague (binary linear classifiers,
1-D inputs, PROBIT), onnxruntime's behaviour, which is what exported models are validated with.
"""

from __future__ import annotations

import numpy as np

from .registry import op

ML = "ai.onnx.ml"


# ------------------------------------------------------------------ shared helpers


def _erfinv_approx(x):
    """The Winitzki erfinv approximation onnxruntime (and ONNX's reference) use for PROBIT."""
    sgn = np.where(x < 0, -1.0, 1.0)
    t = (1.0 - x) * (1.0 + x)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(t)
        v = 2.0 / (np.pi * 0.147) + 0.5 * lg
        v3 = -v + np.sqrt(v * v - lg / 0.147)
        r = sgn * np.sqrt(v3)
    return np.where(t == 0, 0.0, r)


def apply_post_transform(scores: np.ndarray, kind) -> np.ndarray:
    """NONE / SOFTMAX / LOGISTIC / SOFTMAX_ZERO / PROBIT (or their enum 0..4) over the last axis."""
    if isinstance(kind, (int, np.integer)):
        kind = ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"][int(kind)]
    s = scores.astype(np.float64)
    if kind == "NONE":
        return s
    if kind == "LOGISTIC":
        e = np.exp(-np.abs(s))
        return np.where(s >= 0, 1 / (1 + e), e / (1 + e))
    if kind == "SOFTMAX":
        if s.shape[-1] == 0:
            return s
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if kind == "SOFTMAX_ZERO":  # entries that are (almost) 0 stay 0
        if s.shape[-1] == 0:
            return s
        nz = np.abs(s) > 1e-7
        e = np.where(nz, np.exp(s - s.max(axis=-1, keepdims=True)), 0.0)
        tot = e.sum(axis=-1, keepdims=True)
        return np.where(tot == 0, 0.5, e / np.where(tot == 0, 1, tot))
    if kind == "PROBIT":
        return 1.41421356 * _erfinv_approx(s * 2 - 1)
    raise ValueError(f"unknown post_transform {kind!r}")


def _as_2d(x: np.ndarray) -> np.ndarray:
    """[C] -> [1, C]; [N, ...] -> [N, prod(...)]"""
    if x.ndim == 0:
        return x.reshape(1, 1)
    if x.ndim == 1:
        return x.reshape(1, -1)
    return x.reshape(x.shape[0], -1)


def _fl(x: np.ndarray) -> np.ndarray:
    """Numeric input as float64 for computing (outputs are cast by each op)."""
    return x.astype(np.float64)


def _per_feature(vals, c: int, name: str) -> np.ndarray:
    v = np.asarray(vals if vals is not None else [], np.float64)
    if v.size not in (1, c):
        raise ValueError(f"{name} has {v.size} values for {c} features")
    return v


# ------------------------------------------------------------------ simple transforms


@op("ArrayFeatureExtractor", since=1, domain=ML)
def array_feature_extractor(X, Y):
    """X[..., Y] (Y flattened); a 1-D X gives a [1, len(Y)] result."""
    idx = Y.reshape(-1).astype(np.int64)
    last = X.shape[-1] if X.ndim else 1
    if idx.size and (idx.min() < 0 or idx.max() >= last):
        raise IndexError(f"ArrayFeatureExtractor: index out of range [0, {last})")
    out = np.take(X, idx, axis=-1)
    return out.reshape(1, -1) if X.ndim == 1 else out


@op("Binarizer", since=1, domain=ML)
def binarizer(X, *, threshold=0.0):
    return np.asarray(_fl(X) > threshold).astype(X.dtype)


@op("Scaler", since=1, domain=ML)
def scaler(X, *, offset=None, scale=None):
    c = X.shape[-1] if X.ndim else 1
    off = _per_feature(offset if offset is not None else [0.0], c, "offset")
    sc = _per_feature(scale if scale is not None else [1.0], c, "scale")
    return np.asarray(((_fl(X) - off) * sc).astype(np.float32))


@op("Normalizer", since=1, domain=ML)
def normalizer(X, *, norm="MAX"):
    x = _fl(X)
    x2 = x if x.ndim > 1 else x.reshape(1, -1)
    if norm == "MAX":  # the signed maximum, as the spec and onnxruntime define it
        d = x2.max(axis=-1, keepdims=True) if x2.shape[-1] else np.ones(x2.shape[:-1] + (1,))
    elif norm == "L1":
        d = np.abs(x2).sum(axis=-1, keepdims=True)
    elif norm == "L2":
        d = np.sqrt(np.square(x2).sum(axis=-1, keepdims=True))
    else:
        raise ValueError(f"Normalizer: unknown norm {norm!r}")
    y = x2 / np.where(d == 0, 1.0, d)  # an all-zero (or zero-max) row is left as is
    return np.asarray(y.reshape(x.shape).astype(np.float32))


def _lookup(x: np.ndarray, keys: np.ndarray, nan_matches: bool = True):
    """Position of each x in ``keys`` (first occurrence) and a found mask; vectorized for numbers."""
    flat = x.reshape(-1)
    if keys.dtype == object or flat.dtype == object or flat.dtype.kind in "US":
        table = {}
        for i, k in enumerate(keys.tolist()):
            table.setdefault(k, i)
        pos = np.fromiter((table.get(v, -1) for v in flat.tolist()), np.int64, flat.size)
        return pos.reshape(x.shape), (pos >= 0).reshape(x.shape)
    k = keys.astype(np.float64) if keys.dtype.kind == "f" or flat.dtype.kind == "f" else keys.astype(np.int64)
    v = flat.astype(k.dtype)
    order = np.argsort(k, kind="stable")
    ks = k[order]
    i = np.clip(np.searchsorted(ks, v, side="left"), 0, max(len(ks) - 1, 0))
    found = (ks[i] == v) if len(ks) else np.zeros(v.shape, bool)
    pos = np.where(found, order[i] if len(ks) else 0, -1)
    if k.dtype.kind == "f" and nan_matches:  # NaN keys match NaN inputs
        nan_keys = np.flatnonzero(np.isnan(k))
        if nan_keys.size:
            isn = np.isnan(v)
            pos = np.where(isn, nan_keys[0], pos)
            found = found | isn
    return pos.reshape(x.shape), found.reshape(x.shape)


@op("OneHotEncoder", since=1, domain=ML)
def one_hot_encoder(X, *, cats_int64s=None, cats_strings=None, zeros=1):
    """[...] -> [..., n_cats] float32; unknown values give a zero row (or an error if zeros=0)."""
    if cats_strings:
        keys = np.array(cats_strings, dtype=object)
        x = X if X.dtype == object else X.astype(str).astype(object)
    elif cats_int64s:
        keys = np.array(cats_int64s, np.int64)
        x = X.astype(np.int64) if X.dtype.kind in "iub" else X
    else:
        raise ValueError("OneHotEncoder: no categories")
    pos, found = _lookup(x, keys)
    if not zeros and not found.all():
        raise ValueError("OneHotEncoder: a value is not among the categories and zeros=0")
    out = (pos[..., None] == np.arange(len(keys))).astype(np.float32)
    return out


@op("Imputer", since=1, domain=ML)
def imputer(X, *, imputed_value_floats=None, imputed_value_int64s=None, replaced_value_float=0.0,
            replaced_value_int64=0):
    c = X.shape[-1] if X.ndim else 1
    if X.dtype.kind == "f":
        vals = np.asarray(imputed_value_floats or [], np.float64)
        bad = np.isnan(X) if np.isnan(replaced_value_float) else X == X.dtype.type(replaced_value_float)
    else:
        vals = np.asarray(imputed_value_int64s or [], np.int64)
        bad = X == replaced_value_int64
    if vals.size not in (1, c):
        raise ValueError(f"Imputer: {vals.size} imputed values for {c} features")
    fill = np.broadcast_to(vals.astype(X.dtype), X.shape)
    return np.where(bad, fill, X).astype(X.dtype)


@op("FeatureVectorizer", since=1, domain=ML)
def feature_vectorizer(*xs, inputdimensions=None):
    """Concatenate inputs (each as [N, C_i], truncated or zero-padded to inputdimensions[i])."""
    dims = list(inputdimensions or [])
    parts = []
    n = None
    for i, x in enumerate(xs):
        x2 = _as_2d(x)
        n = x2.shape[0] if n is None else n
        want = dims[i] if i < len(dims) else x2.shape[1]
        part = np.zeros((x2.shape[0], want), np.float32)
        k = min(want, x2.shape[1])
        part[:, :k] = x2[:, :k]
        parts.append(part)
    if not parts:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(parts, axis=1)


@op("CategoryMapper", since=1, domain=ML)
def category_mapper(X, *, cats_int64s=None, cats_strings=None, default_int64=-1,
                    default_string="_Unused"):
    ints = np.asarray(cats_int64s or [], np.int64)
    strs = np.array(cats_strings or [], dtype=object)
    if X.dtype == object or X.dtype.kind in "US":
        pos, found = _lookup(X.astype(object), strs)
        return np.where(found, ints[np.where(found, pos, 0)] if ints.size else default_int64,
                        default_int64).astype(np.int64)
    pos, found = _lookup(X.astype(np.int64), ints)
    out = np.empty(X.shape, object)
    out[...] = default_string
    if strs.size:
        out[found] = strs[pos[found]]
    return out


# ------------------------------------------------------------------ LabelEncoder


_STR_DEFAULT = "_Unused"


@op("LabelEncoder", since=1, domain=ML)
def label_encoder_1(X, *, classes_strings=None, default_int64=-1, default_string=_STR_DEFAULT):
    """v1: strings -> their index in classes_strings; int64 -> the class string."""
    classes = np.array(classes_strings or [], dtype=object)
    if X.dtype == object or X.dtype.kind in "US":
        pos, found = _lookup(X.astype(object), classes)
        return np.where(found, pos, default_int64).astype(np.int64)
    idx = X.astype(np.int64)
    ok = (idx >= 0) & (idx < len(classes))
    out = np.empty(X.shape, object)
    out[...] = default_string
    out[ok] = classes[idx[ok]]
    return out


def _encode(X, keys: np.ndarray, values: np.ndarray, default, nan_matches=True):
    x = X.astype(object) if (X.dtype == object or X.dtype.kind in "US") else X
    pos, found = _lookup(x, keys, nan_matches)
    if values.dtype == object:
        out = np.empty(X.shape, object)
        out[...] = default
        out[found] = values[pos[found]]
        return out
    out = np.full(X.shape, default, dtype=values.dtype)
    out[found] = values[pos[found]]
    return out


def _pick(*cands):
    for c in cands:
        if c is not None and len(c) > 0:
            return c
    return None


@op("LabelEncoder", since=2, domain=ML)
def label_encoder_2(X, *, default_float=-0.0, default_int64=-1, default_string=_STR_DEFAULT,
                    keys_floats=None, keys_int64s=None, keys_strings=None, values_floats=None,
                    values_int64s=None, values_strings=None):
    keys, values, default = _v2_tables(keys_floats, keys_int64s, keys_strings, values_floats,
                                       values_int64s, values_strings, default_float, default_int64,
                                       default_string)
    return _encode(X, keys, values, default, nan_matches=False)  # v2: NaN matches nothing


def _v2_tables(keys_floats, keys_int64s, keys_strings, values_floats, values_int64s, values_strings,
               default_float, default_int64, default_string):
    keys = _keys(keys_floats, keys_int64s, keys_strings)
    values, default = _values(values_floats, values_int64s, values_strings, default_float,
                              default_int64, default_string)
    if len(keys) != len(values):
        raise ValueError("LabelEncoder: keys and values differ in length")
    return keys, values, default


def _keys(keys_floats, keys_int64s, keys_strings):
    if keys_strings:
        return np.array(keys_strings, dtype=object)
    if keys_int64s:
        return np.array(keys_int64s, np.int64)
    if keys_floats:
        return np.array(keys_floats, np.float32)
    raise ValueError("LabelEncoder: no keys")


def _values(values_floats, values_int64s, values_strings, default_float, default_int64,
            default_string):
    if values_strings:
        return np.array(values_strings, dtype=object), default_string
    if values_int64s:
        return np.array(values_int64s, np.int64), default_int64
    if values_floats:
        return np.array(values_floats, np.float32), np.float32(default_float)
    raise ValueError("LabelEncoder: no values")


@op("LabelEncoder", since=4, domain=ML)
def label_encoder_4(X, *, default_float=-0.0, default_int64=-1, default_string=_STR_DEFAULT,
                    default_tensor=None, keys_floats=None, keys_int64s=None, keys_strings=None,
                    keys_tensor=None, values_floats=None, values_int64s=None, values_strings=None,
                    values_tensor=None):
    """v4 adds tensor-valued keys/values/default (any of string/int64/int32/int16/float/double)."""
    if keys_tensor is not None:
        keys = keys_tensor.reshape(-1)
    else:
        keys = _keys(keys_floats, keys_int64s, keys_strings)
    if values_tensor is not None:
        values = values_tensor.reshape(-1)
        if default_tensor is not None:
            default = default_tensor.reshape(-1)[0]
        elif values.dtype == object:
            default = default_string
        elif values.dtype.kind == "f":
            default = values.dtype.type(default_float)
        else:
            default = values.dtype.type(default_int64)
    else:
        values, default = _values(values_floats, values_int64s, values_strings, default_float,
                                  default_int64, default_string)
        if default_tensor is not None:
            default = default_tensor.reshape(-1)[0]
    if len(keys) != len(values):
        raise ValueError("LabelEncoder: keys and values differ in length")
    return _encode(X, keys, values, default)


# ------------------------------------------------------------------ linear models


@op("LinearRegressor", since=1, domain=ML)
def linear_regressor(X, *, coefficients=None, intercepts=None, post_transform="NONE", targets=1):
    x = _as_2d(_fl(X)) if X.ndim != 2 else _fl(X)
    coef = np.asarray(coefficients or [], np.float64).reshape(targets, -1)
    y = x @ coef.T
    if intercepts:
        y = y + np.asarray(intercepts, np.float64)
    return np.asarray(apply_post_transform(y, post_transform).astype(np.float32))




@op("LinearClassifier", since=1, domain=ML)
def linear_classifier(X, *, coefficients, classlabels_ints=None, classlabels_strings=None,
                      intercepts=None, multi_class=0, post_transform="NONE"):
    """Scores X @ coef^T + intercepts; one coefficient row with two labels is a binary model."""
    x = _as_2d(_fl(X)) if X.ndim != 2 else _fl(X)
    labels = (np.array(classlabels_strings, dtype=object) if classlabels_strings
              else np.asarray(classlabels_ints or [], np.int64))
    n_cls = len(labels)
    coef = np.asarray(coefficients, np.float64).reshape(-1, x.shape[1])
    scores = x @ coef.T
    if intercepts:
        scores = scores + np.asarray(intercepts, np.float64)
    if coef.shape[0] == 1:  # binary: label from the sign of the single score
        s = scores[:, 0]
        if n_cls == 2:
            pos, neg = labels[1], labels[0]
        else:
            pos, neg = ("1", "0") if classlabels_strings else (1, 0)
        lab = np.where(s > 0, pos, neg)
        if n_cls == 2:  # onnxruntime: [1 - s, s], or [1 - p, p] with p = logistic(s)
            p = apply_post_transform(s, post_transform) if post_transform in ("LOGISTIC", "PROBIT") else s
            scores = np.stack([1 - p, p], axis=1)
        else:
            scores = apply_post_transform(scores, post_transform)
    else:
        scores = apply_post_transform(scores, post_transform)
        arg = np.argmax(scores, axis=1) if scores.shape[0] else np.zeros(0, np.int64)
        lab = labels[arg] if n_cls else arg
    y = np.asarray(lab, dtype=object if classlabels_strings else np.int64)
    return y, np.asarray(scores.astype(np.float32))
