"""Shape and data-movement kernels: Shape/Size, Reshape family, Concat/Split/Slice, Pad, Tile, ...

Outputs may be views of inputs (Reshape, Squeeze, Slice, Transpose, Split, Identity): they are
only read downstream. Kernels that build new data (Expand, Tile, Pad, ...) return fresh arrays.
"""

from __future__ import annotations

import math

import numpy as np

from ..dtypes import np_dtype
from .registry import op

_I64 = np.int64


def _ints(v) -> list[int]:
    """An int64 tensor / list / None as a list of Python ints (no int64 overflow later)."""
    if v is None:
        return []
    return [int(a) for a in np.asarray(v).reshape(-1)]


def _axis(a: int, rank: int) -> int:
    a = int(a)
    if not -rank <= a < rank:
        raise ValueError(f"axis {a} out of range for rank {rank}")
    return a + rank if a < 0 else a


def _zero(dtype: np.dtype):
    """The 'zero' fill value of a dtype ('' for strings)."""
    return "" if dtype == object else np.zeros((), dtype)


# ---------------------------------------------------------------- Shape, Size, Identity, Constant


@op("Shape", since=1)
def shape_(data, *, start=0, end=None):
    # Python slicing clamps exactly like the spec's start/end (v15+); older versions pass neither.
    return np.array(data.shape[start:end], dtype=_I64)


@op("Size", since=1)
def size(data):
    return np.asarray(data.size, dtype=_I64)


@op("Identity", since=1)
def identity(x=None):
    """Passes tensors, sequences (lists) and optionals (None) through unchanged."""
    return [x]  # wrapped: a list result is read as the list of outputs


@op("Constant", since=1)
def constant(*, value=None, sparse_value=None, value_float=None, value_floats=None,
             value_int=None, value_ints=None, value_string=None, value_strings=None):
    if value is not None:
        return np.asarray(value)
    if sparse_value is not None:
        return np.asarray(sparse_value)
    if value_float is not None:
        return np.asarray(value_float, dtype=np.float32)
    if value_floats is not None:
        return np.asarray(value_floats, dtype=np.float32).reshape(-1)
    if value_int is not None:
        return np.asarray(value_int, dtype=_I64)
    if value_ints is not None:
        return np.asarray(value_ints, dtype=_I64).reshape(-1)
    if value_string is not None:
        return np.asarray(value_string, dtype=object)
    if value_strings is not None:
        out = np.empty(len(value_strings), dtype=object)
        out[:] = value_strings
        return out
    raise ValueError("Constant has no value attribute")


@op("ConstantOfShape", since=9)
def constant_of_shape(shape, *, value=None):
    fill = np.zeros((), np.float32) if value is None else np.asarray(value).reshape(-1)[:1].reshape(())
    out = np.empty(tuple(_ints(shape)), dtype=fill.dtype)
    out[...] = fill
    return out


@op("EyeLike", since=9)
def eye_like(x, *, dtype=None, k=0):
    if x.ndim != 2:
        raise ValueError(f"EyeLike needs a 2-D input, got rank {x.ndim}")
    dt = x.dtype if dtype is None else np_dtype(dtype)
    return np.eye(x.shape[0], x.shape[1], k=int(k), dtype=dt)


def _range(start, limit, delta, stash=None):
    dt = start.dtype
    s, l, d = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if dt.kind in "iu":
        s, l, d = int(s), int(l), int(d)
        if d == 0:
            raise ValueError("Range delta must be nonzero")
        n = max(-((s - l) // d), 0)  # ceil((l - s) / d) in exact integer arithmetic
        return (s + np.arange(n, dtype=np.int64) * d).astype(dt)
    work = np.float64 if stash is None else stash
    if float(d) == 0:
        raise ValueError("Range delta must be nonzero")
    s, l, d = (float(v.astype(work)) for v in (s, l, d))
    n = max(math.ceil((l - s) / d), 0)
    return (np.asarray(s, work) + np.arange(n, dtype=work) * np.asarray(d, work)).astype(dt)


@op("Range", since=11)
def range_11(start, limit, delta):
    return _range(start, limit, delta)


@op("Range", since=27)
def range_27(start, limit, delta, *, stash_type=1):
    # stash_type only matters for float16/bfloat16: compute in float (1) or double (11)
    low = start.dtype == np.float16 or start.dtype.name == "bfloat16"
    stash = (np.float64 if stash_type == 11 else np.float32) if low else None
    return _range(start, limit, delta, stash)


# ---------------------------------------------------------------- reshaping views


def _reshape(data, shape, allowzero=0):
    dims = _ints(shape)
    if not allowzero:
        dims = [data.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    if dims.count(-1) > 1:
        raise ValueError("Reshape: at most one -1 in shape")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0:  # ambiguous (onnxruntime rejects it too)
            raise ValueError(f"Reshape: cannot infer -1 in {dims} for a tensor of size {data.size}")
        dims[dims.index(-1)] = data.size // known
    return data.reshape(dims)


@op("Reshape", since=5)
def reshape(data, shape):
    return _reshape(data, shape)


@op("Reshape", since=14)
def reshape_14(data, shape, *, allowzero=0):
    return _reshape(data, shape, allowzero)


@op("Flatten", since=1)
def flatten(x, *, axis=1):
    a = int(axis) + x.ndim if axis < 0 else int(axis)
    if not 0 <= a <= x.ndim:
        raise ValueError(f"Flatten axis {axis} out of range for rank {x.ndim}")
    return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))


def _squeeze(data, axes):
    ax = _ints(axes)
    if not ax:  # no (or empty) axes: drop every size-1 dim
        return np.squeeze(data)
    return np.squeeze(data, axis=tuple(_axis(a, data.ndim) for a in ax))


@op("Squeeze", since=1)
def squeeze_1(data, *, axes=None):
    return _squeeze(data, axes)


@op("Squeeze", since=13)
def squeeze_13(data, axes=None):
    return _squeeze(data, axes)


def _unsqueeze(data, axes):
    ax = _ints(axes)
    rank = data.ndim + len(ax)
    ax = [_axis(a, rank) for a in ax]
    if len(set(ax)) != len(ax):
        raise ValueError(f"Unsqueeze: duplicate axes {ax}")
    return np.expand_dims(data, tuple(ax))


@op("Unsqueeze", since=1)
def unsqueeze_1(data, *, axes):
    return _unsqueeze(data, axes)


@op("Unsqueeze", since=13)
def unsqueeze_13(data, axes):
    return _unsqueeze(data, axes)


@op("Transpose", since=1)
def transpose(data, *, perm=None):
    return np.transpose(data, None if perm is None else [int(p) for p in perm])


@op("Expand", since=8)
def expand(x, shape):
    out = np.broadcast_shapes(x.shape, tuple(_ints(shape)))
    if out == x.shape:
        return x
    return np.broadcast_to(x, out).copy()


@op("Tile", since=6)
def tile(x, repeats):
    reps = _ints(repeats)
    if len(reps) != x.ndim:
        raise ValueError(f"Tile: {len(reps)} repeats for rank {x.ndim}")
    return np.tile(x, reps) if x.ndim else x.copy()


# ---------------------------------------------------------------- Concat, Split, Slice


@op("Concat", since=1)
def concat(*xs, axis=1):
    return np.concatenate(xs, axis=_axis(axis, xs[0].ndim))


def _split(x, axis, split, n_out, chunked):
    """Views of x along axis; split sizes given, or n_out parts (ceil-sized when chunked)."""
    a = _axis(axis, x.ndim)
    dim = x.shape[a]
    if split is not None and len(_ints(split)):
        sizes = _ints(split)
    else:
        if chunked:
            step = -(-dim // n_out)
            sizes = [step] * (n_out - 1) + [dim - step * (n_out - 1)]
        else:
            if dim % n_out:
                raise ValueError(f"Split: dim {dim} not divisible into {n_out} outputs")
            sizes = [dim // n_out] * n_out
    if sum(sizes) != dim or min(sizes) < 0:
        raise ValueError(f"Split sizes {sizes} do not partition dim {dim}")
    out, pos = [], 0
    idx = [slice(None)] * x.ndim
    for s in sizes:
        idx[a] = slice(pos, pos + s)
        out.append(x[tuple(idx)])
        pos += s
    return out


@op("Split", since=2)
def split_2(ctx, x, *, axis=0, split=None):
    return _split(x, axis, split, ctx.num_outputs, False)


@op("Split", since=13)
def split_13(ctx, x, split=None, *, axis=0):
    return _split(x, axis, split, ctx.num_outputs, False)


@op("Split", since=18)
def split_18(ctx, x, split=None, *, axis=0, num_outputs=None):
    n = ctx.num_outputs if num_outputs is None else int(num_outputs)
    return _split(x, axis, split, n, True)


def _slice(data, starts, ends, axes=None, steps=None):
    st, en = _ints(starts), _ints(ends)
    ax = _ints(axes) if axes is not None else list(range(len(st)))
    sp = _ints(steps) if steps is not None else [1] * len(st)
    if not len(st) == len(en) == len(ax) == len(sp):
        raise ValueError("Slice: starts/ends/axes/steps lengths differ")
    idx = [slice(None)] * data.ndim
    seen = set()
    for s, e, a, k in zip(st, en, ax, sp):
        a = _axis(a, data.ndim)
        if a in seen or k == 0:
            raise ValueError("Slice: repeated axis or zero step")
        seen.add(a)
        d = data.shape[a]
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if k > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:  # negative step: start in [0, d-1], end in [-1, d-1] (-1 = before element 0)
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
        idx[a] = slice(s, e if e >= 0 else None, k)
    return data[tuple(idx)]


@op("Slice", since=1)
def slice_1(data, *, starts, ends, axes=None):
    return _slice(data, starts, ends, axes)


@op("Slice", since=10)
def slice_10(data, starts, ends, axes=None, steps=None):
    return _slice(data, starts, ends, axes, steps)


# ---------------------------------------------------------------- Pad, CenterCropPad


def _pad(x, pads, mode="constant", value=None, axes=None):
    r = x.ndim
    p = _ints(pads)
    ax = list(range(r)) if axes is None else [_axis(a, r) for a in _ints(axes)]
    if len(p) != 2 * len(ax):
        raise ValueError(f"Pad: {len(p)} pads for {len(ax)} axes")
    begin, end = [0] * r, [0] * r
    for i, a in enumerate(ax):
        begin[a], end[a] = p[i], p[len(ax) + i]
    if any(b < 0 for b in begin) or any(e < 0 for e in end):  # negative pads crop
        x = x[tuple(slice(-min(b, 0), d + min(e, 0)) for b, e, d in zip(begin, end, x.shape))]
        begin, end = [max(b, 0) for b in begin], [max(e, 0) for e in end]
    if not any(begin) and not any(end):
        return x
    if mode == "constant":
        fill = _zero(x.dtype) if value is None or np.size(value) == 0 else np.asarray(value).reshape(-1)[0]
        fill = np.asarray(fill).astype(x.dtype) if x.dtype != object else fill
        out = np.empty(tuple(b + d + e for b, d, e in zip(begin, x.shape, end)), dtype=x.dtype)
        out[tuple(slice(b, b + d) for b, d in zip(begin, x.shape))] = x
        for a, (b, e) in enumerate(zip(begin, end)):  # fill only the border slabs
            lead = (slice(None),) * a
            if b:
                out[lead + (slice(0, b),)] = fill
            if e:
                out[lead + (slice(out.shape[a] - e, None),)] = fill
        return out
    if mode not in ("reflect", "edge", "wrap"):
        raise ValueError(f"Pad: unknown mode {mode!r}")
    return np.pad(x, list(zip(begin, end)), mode=mode)


@op("Pad", since=2)
def pad_2(data, *, pads, mode="constant", value=0.0):
    return _pad(data, pads, mode, np.asarray(value))


@op("Pad", since=11)
def pad_11(data, pads, constant_value=None, axes=None, *, mode="constant"):
    return _pad(data, pads, mode, constant_value, axes)


@op("CenterCropPad", since=18)
def center_crop_pad(x, shape, *, axes=None):
    r = x.ndim
    ax = list(range(r)) if axes is None else [_axis(a, r) for a in axes]
    target = _ints(shape)
    if len(target) != len(ax):
        raise ValueError("CenterCropPad: shape and axes lengths differ")
    src, dst, out_shape = [slice(None)] * r, [slice(None)] * r, list(x.shape)
    for a, t in zip(ax, target):
        d = x.shape[a]
        out_shape[a] = t
        if t < d:  # crop; window start rounds down
            s = (d - t) // 2
            src[a] = slice(s, s + t)
        elif t > d:  # pad; the odd pixel goes to the end
            s = (t - d) // 2
            dst[a] = slice(s, s + d)
    out = np.empty(out_shape, dtype=x.dtype)
    out[...] = _zero(x.dtype)
    out[tuple(dst)] = x[tuple(src)]
    return out


# ---------------------------------------------------------------- DepthToSpace, SpaceToDepth, Trilu


def _depth_to_space(x, blocksize, mode):
    b, c, h, w = x.shape
    k = int(blocksize)
    if mode == "DCR":
        t = x.reshape(b, k, k, c // (k * k), h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        t = x.reshape(b, c // (k * k), k, k, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise ValueError(f"DepthToSpace: unknown mode {mode!r}")
    return t.reshape(b, c // (k * k), h * k, w * k)


@op("DepthToSpace", since=1)
def depth_to_space_1(x, *, blocksize):
    return _depth_to_space(x, blocksize, "DCR")


@op("DepthToSpace", since=11)
def depth_to_space_11(x, *, blocksize, mode="DCR"):
    return _depth_to_space(x, blocksize, mode)


def _space_to_depth(x, blocksize, mode):
    b, c, h, w = x.shape
    k = int(blocksize)
    t = x.reshape(b, c, h // k, k, w // k, k)
    if mode == "DCR":
        t = t.transpose(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":
        t = t.transpose(0, 1, 3, 5, 2, 4)
    else:
        raise ValueError(f"SpaceToDepth: unknown mode {mode!r}")
    return t.reshape(b, c * k * k, h // k, w // k)


@op("SpaceToDepth", since=1)
def space_to_depth_1(x, *, blocksize):
    return _space_to_depth(x, blocksize, "DCR")


@op("SpaceToDepth", since=28)
def space_to_depth_28(x, *, blocksize, mode="DCR"):
    return _space_to_depth(x, blocksize, mode)


@op("Trilu", since=14)
def trilu(x, k=None, *, upper=1):
    kk = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    rows, cols = x.shape[-2:]
    diff = np.arange(cols, dtype=np.int64)[None, :] - np.arange(rows, dtype=np.int64)[:, None]
    keep = diff >= kk if upper else diff <= kk
    return np.where(keep, x, _zero(x.dtype))
