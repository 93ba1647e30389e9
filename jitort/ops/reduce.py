"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare, ArgMax/ArgMin.

Axes come as an attribute (ReduceSum < 13, the others < 18) or as an optional int64 input.
Empty ``axes`` reduce every axis unless ``noop_with_empty_axes`` is set, in which case the
reduction runs over no axis at all (so the elementwise part - abs, square, log, exp - still
applies, as ONNX's reference does). Empty-set results follow the spec: Sum/L1/L2/SumSquare 0,
Prod 1, Max -inf (or the dtype minimum), Min +inf (or the dtype maximum), LogSum/LogSumExp -inf.
"""

from __future__ import annotations

import numpy as np

from .registry import op


def _is_std_float(dt: np.dtype) -> bool:
    return dt.kind == "f" and dt != np.float16


def _work(x: np.ndarray) -> np.ndarray:
    """float16 and the ml_dtypes floats are computed in float32."""
    if x.dtype == np.float16 or x.dtype.kind == "V":
        return x.astype(np.float32)
    return x


def _norm_axes(x: np.ndarray, axes, noop: int):
    """None (all axes) or a tuple of non-negative axes; () for a no-op reduction."""
    if axes is None:
        axes = []
    else:
        axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    if not axes:
        return () if noop else None
    r = x.ndim
    out = []
    for a in axes:
        if not -r <= a < max(r, 1):
            raise ValueError(f"reduction axis {a} out of range for rank {r}")
        out.append(a % r if r else 0)
    if r == 0:
        return None
    return tuple(sorted(set(out)))


def _finish(res, out_dtype) -> np.ndarray:
    res = np.asarray(res)
    if res.dtype != out_dtype:
        res = res.astype(out_dtype)
    return res


def _last_axis_gemv(w, ax, kd, scale=1.0):
    """Float sum over the last axis as a BLAS matrix-vector product (far faster for short rows)."""
    if w.dtype.kind == "f" and w.ndim >= 1 and ax == (w.ndim - 1,) and w.shape[-1] > 0:
        res = w @ np.full(w.shape[-1], scale, dtype=w.dtype)
        return np.expand_dims(res, -1) if kd else res
    return None


def _sum(x, ax, kd):
    w = _work(x)
    fast = _last_axis_gemv(w, ax, kd)
    if fast is not None:
        return _finish(fast, x.dtype)
    return _finish(np.sum(w, axis=ax, keepdims=kd, dtype=w.dtype), x.dtype)


def _mean(x, ax, kd):
    w = _work(x)
    if w.dtype.kind in "iu":
        n = _count(x, ax)
        s = np.sum(w, axis=ax, keepdims=kd, dtype=np.int64 if w.dtype.kind == "i" else np.uint64)
        if n == 0:
            return _finish(np.zeros_like(s), x.dtype)
        if w.dtype.kind == "i":  # C-style truncating division
            q = np.abs(s) // n * np.sign(s)
        else:
            q = s // np.uint64(n)
        return _finish(q, x.dtype)
    fast = _last_axis_gemv(w, ax, kd, 1.0 / w.shape[-1]) if w.ndim and w.shape[-1] else None
    if fast is not None:
        return _finish(fast, x.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _finish(np.mean(w, axis=ax, keepdims=kd), x.dtype)


def _count(x, ax) -> int:
    if ax is None:
        return x.size
    return int(np.prod([x.shape[a] for a in ax], dtype=np.int64))


def _extreme(x, ax, kd, is_max: bool):
    w = _work(x)
    dt = w.dtype
    if dt.kind == "f":
        init = -np.inf if is_max else np.inf
    elif dt.kind == "b":
        init = not is_max
    else:
        info = np.iinfo(dt)
        init = info.min if is_max else info.max
    fn = np.max if is_max else np.min
    return _finish(fn(w, axis=ax, keepdims=kd, initial=init), x.dtype)


def _prod(x, ax, kd):
    w = _work(x)
    return _finish(np.prod(w, axis=ax, keepdims=kd, dtype=w.dtype), x.dtype)


def _l1(x, ax, kd):
    w = _work(x)
    return _finish(np.sum(np.abs(w), axis=ax, keepdims=kd, dtype=w.dtype), x.dtype)


def _sumsq(x, ax, kd):
    w = _work(x)
    return _finish(np.sum(w * w, axis=ax, keepdims=kd, dtype=w.dtype), x.dtype)


def _l2(x, ax, kd):
    w = _work(x)
    if w.dtype.kind in "iu":
        w = w.astype(np.float64)
    return _finish(np.sqrt(np.sum(w * w, axis=ax, keepdims=kd)), x.dtype)


def _logsum(x, ax, kd):
    w = _work(x)
    if w.dtype.kind in "iu":
        w = w.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _finish(np.log(np.sum(w, axis=ax, keepdims=kd)), x.dtype)


def _logsumexp(x, ax, kd):
    w = _work(x)
    if w.dtype.kind in "iu":
        w = w.astype(np.float64)
    if w.size == 0 or ax == ():
        with np.errstate(divide="ignore"):
            return _finish(np.log(np.sum(np.exp(w), axis=ax, keepdims=kd)), x.dtype)
    m = np.max(w, axis=ax, keepdims=True)
    m = np.where(np.isfinite(m), m, w.dtype.type(0))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s = np.sum(np.exp(w - m), axis=ax, keepdims=True)
        res = np.log(s) + m
    if not kd:
        res = res.reshape(()) if ax is None else np.squeeze(res, axis=ax)
    return _finish(res, x.dtype)


_IMPLS = {
    "ReduceSum": _sum,
    "ReduceMean": _mean,
    "ReduceMax": lambda x, ax, kd: _extreme(x, ax, kd, True),
    "ReduceMin": lambda x, ax, kd: _extreme(x, ax, kd, False),
    "ReduceProd": _prod,
    "ReduceL1": _l1,
    "ReduceL2": _l2,
    "ReduceLogSum": _logsum,
    "ReduceLogSumExp": _logsumexp,
    "ReduceSumSquare": _sumsq,
}

# opset where axes moved from attribute to input
_AXES_INPUT_SINCE = {name: (13 if name == "ReduceSum" else 18) for name in _IMPLS}


def _run(impl, x: np.ndarray, ax, kd: bool) -> np.ndarray:
    """Reducing a trailing block of >1 axes of a C-contiguous array: collapse it into one axis."""
    if ax and len(ax) > 1 and x.flags.c_contiguous and ax == tuple(range(ax[0], x.ndim)):
        lead = x.shape[: ax[0]]
        res = impl(x.reshape(lead + (-1,)), (len(lead),), False)
        return res.reshape(lead + (1,) * len(ax)) if kd else res
    return impl(x, ax, kd)


def _register(name: str, impl) -> None:
    @op(name, since=1)
    def reduce_attr(x, *, axes=None, keepdims=1):
        return _run(impl, x, _norm_axes(x, axes, 0), bool(keepdims))

    @op(name, since=_AXES_INPUT_SINCE[name])
    def reduce_input(x, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        return _run(impl, x, _norm_axes(x, axes, noop_with_empty_axes), bool(keepdims))

    reduce_attr.__name__ = reduce_attr.__qualname__ = f"{name}_attr_axes"
    reduce_input.__name__ = reduce_input.__qualname__ = f"{name}_input_axes"


for _name, _impl in _IMPLS.items():
    _register(_name, _impl)


def _arg(x, axis: int, keepdims: int, select_last_index: int, is_max: bool) -> np.ndarray:
    w = _work(x)
    if w.dtype.kind == "b":
        w = w.astype(np.int8)
    axis = int(axis)
    if x.ndim == 0:
        return np.asarray(0, dtype=np.int64)
    axis = axis % x.ndim
    fn = np.argmax if is_max else np.argmin
    if select_last_index:
        n = w.shape[axis]
        idx = n - 1 - fn(np.flip(w, axis=axis), axis=axis)
    else:
        idx = fn(w, axis=axis)
    idx = idx.astype(np.int64)
    if keepdims:
        idx = np.expand_dims(idx, axis)
    return np.asarray(idx)


@op("ArgMax", since=1)
def argmax(x, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(x, axis, keepdims, select_last_index, True)


@op("ArgMin", since=1)
def argmin(x, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(x, axis, keepdims, select_last_index, False)
