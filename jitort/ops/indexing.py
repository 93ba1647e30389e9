"""Indexing kernels: Gather*/Scatter*, TensorScatter, Compress, NonZero, TopK, Unique, OneHot,
ReverseSequence, CumSum/CumProd. All vectorized: index arithmetic, fancy indexing, ufunc.at."""

from __future__ import annotations

import math

import numpy as np

from .registry import op

_I64 = np.int64


def _axis(a, rank: int) -> int:
    a = int(a)
    if not -rank <= a < rank:
        raise ValueError(f"axis {a} out of range for rank {rank}")
    return a + rank if a < 0 else a


def _ml(dtype: np.dtype) -> bool:
    """ml_dtypes types (bfloat16, float8*, int4, ...): NumPy ufuncs/sorts go through float32."""
    return dtype.type.__module__ == "ml_dtypes"


def _narrow(dtype: np.dtype) -> bool:
    """Types whose running sums/products are computed in float32."""
    return dtype == np.float16 or _ml(dtype)


def _norm_index(idx, dim, what="index"):
    """Indices as intp with negatives wrapped; raises IndexError when out of [-dim, dim)."""
    idx = np.asarray(idx).astype(np.intp, copy=False)
    if not idx.size:
        return idx
    lo = idx.min()
    if lo < -dim or idx.max() >= dim:
        raise IndexError(f"{what} out of range for a dimension of size {dim}")
    return idx + (idx < 0) * dim if lo < 0 else idx


# ---------------------------------------------------------------- Gather family


@op("Gather", since=1)
def gather(data, indices, *, axis=0):
    a = _axis(axis, data.ndim)
    idx = _norm_index(indices, data.shape[a])
    # 1-D index then reshape: np.take with a 0-d index would return a NumPy scalar
    out = np.take(data, idx.reshape(-1), axis=a)
    return out.reshape(data.shape[:a] + idx.shape + data.shape[a + 1:])


def _along_axis_offsets(shape, idx, a):
    """Row-major element offsets into a C-contiguous array of `shape` for every position of
    idx (an index tensor along axis a, other dims no larger than shape's)."""
    strides = [math.prod(shape[d + 1:]) for d in range(len(shape))]
    lin = idx * strides[a]
    for d, n in enumerate(idx.shape):
        if d != a and n > 1:
            step = np.arange(n, dtype=np.intp) * strides[d]
            lin = lin + step.reshape([-1 if j == d else 1 for j in range(idx.ndim)])
    return np.broadcast_to(lin, idx.shape)


@op("GatherElements", since=11)
def gather_elements(data, indices, *, axis=0):
    a = _axis(axis, data.ndim)
    idx = _norm_index(indices, data.shape[a])
    if any(i > d for j, (i, d) in enumerate(zip(idx.shape, data.shape)) if j != a) or idx.ndim != data.ndim:
        raise ValueError("GatherElements: indices shape exceeds data shape")
    lin = _along_axis_offsets(data.shape, idx, a)
    return np.take(np.ascontiguousarray(data).reshape(-1), lin.reshape(-1)).reshape(idx.shape)


def _flat_nd_index(indices, dims):
    """Row-major offsets of index tuples (last axis of indices) into dims, bounds-checked."""
    idx = np.asarray(indices).astype(np.intp, copy=False)
    d = np.asarray(dims, dtype=np.intp)
    if idx.size and ((idx < -d).any() or (idx >= d).any()):
        raise IndexError(f"index tuple out of range for dims {tuple(dims)}")
    idx = np.where(idx < 0, idx + d, idx)
    strides = np.ones(len(dims), dtype=np.intp)
    if len(dims) > 1:
        strides[:-1] = np.cumprod(d[::-1])[::-1][1:]
    return idx @ strides if len(dims) else np.zeros(idx.shape[:-1], np.intp)


def _gather_nd(data, indices, batch_dims=0):
    b = int(batch_dims)
    m = indices.shape[-1]
    batch = data.shape[:b]
    if indices.shape[:b] != batch:
        raise ValueError("GatherND: batch dims of data and indices differ")
    if b + m > data.ndim:
        raise ValueError("GatherND: index tuple longer than data rank")
    tail = data.shape[b + m:]
    nb = math.prod(batch)
    d2 = data.reshape(nb, math.prod(data.shape[b:b + m]), *tail)
    lin = _flat_nd_index(indices.reshape(nb, -1, m) if indices.size else
                         np.zeros((nb, math.prod(indices.shape[b:-1]), m), np.intp), data.shape[b:b + m])
    out = d2[np.arange(nb)[:, None], lin]
    return out.reshape(indices.shape[:-1] + tail)


@op("GatherND", since=11)
def gather_nd_11(data, indices):
    return _gather_nd(data, indices)


@op("GatherND", since=12)
def gather_nd_12(data, indices, *, batch_dims=0):
    return _gather_nd(data, indices, batch_dims)


# ---------------------------------------------------------------- Scatter family

_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_flat(out, lin, updates, reduction):
    """Scatter into the 1-D view `out` at element offsets lin: assign, or ufunc.at (which applies
    duplicates in order, like a sequential loop)."""
    if reduction in (None, "none"):
        out[lin] = updates
        return
    fn = _REDUCE.get(reduction)
    if fn is None:
        raise ValueError(f"unknown reduction {reduction!r}")
    if _ml(out.dtype):  # ufunc.at on ml_dtypes: go through float32
        tmp = out.astype(np.float32)
        fn.at(tmp, lin, updates.astype(np.float32))
        out[...] = tmp.astype(out.dtype)
    else:
        fn.at(out, lin, updates)


def _scatter_elements(data, indices, updates, axis=0, reduction="none"):
    a = _axis(axis, data.ndim)
    idx = _norm_index(indices, data.shape[a])
    if updates.shape != idx.shape:
        raise ValueError("ScatterElements: updates and indices shapes differ")
    if idx.ndim != data.ndim or any(i > d for j, (i, d) in enumerate(zip(idx.shape, data.shape)) if j != a):
        raise ValueError("ScatterElements: indices shape exceeds data shape")
    out = np.array(data, order="C", copy=True)
    lin = _along_axis_offsets(data.shape, idx, a).reshape(-1)
    _scatter_flat(out.reshape(-1), lin, updates.reshape(-1), reduction)
    return out


@op("Scatter", since=9)
def scatter(data, indices, updates, *, axis=0):
    return _scatter_elements(data, indices, updates, axis)


@op("ScatterElements", since=11)
def scatter_elements_11(data, indices, updates, *, axis=0):
    return _scatter_elements(data, indices, updates, axis)


@op("ScatterElements", since=16)
def scatter_elements_16(data, indices, updates, *, axis=0, reduction="none"):
    return _scatter_elements(data, indices, updates, axis, reduction)


def _scatter_nd(data, indices, updates, reduction="none"):
    m = indices.shape[-1]
    tail = data.shape[m:]
    if updates.shape != indices.shape[:-1] + tail:
        raise ValueError("ScatterND: updates shape must be indices.shape[:-1] + data.shape[m:]")
    n = math.prod(indices.shape[:-1])
    t = math.prod(tail)
    out = np.array(data, order="C", copy=True)
    if out.size == 0 or n == 0:
        if m and n:
            _flat_nd_index(indices.reshape(n, m), data.shape[:m])  # still bounds-check
        return out
    if m:
        rows = _flat_nd_index(indices.reshape(n, m), data.shape[:m])
    else:  # every update addresses the whole tensor
        rows = np.zeros(n, np.intp)
    if reduction in (None, "none"):  # whole rows at once
        out.reshape((-1, t))[rows] = updates.reshape(n, t)
        return out
    lin = (rows[:, None] * t + np.arange(t, dtype=np.intp)).reshape(-1)  # element offsets: ufunc.at fast path
    _scatter_flat(out.reshape(-1), lin, updates.reshape(-1), reduction)
    return out


@op("ScatterND", since=11)
def scatter_nd_11(data, indices, updates):
    return _scatter_nd(data, indices, updates)


@op("ScatterND", since=16)
def scatter_nd_16(data, indices, updates, *, reduction="none"):
    return _scatter_nd(data, indices, updates, reduction)


@op("TensorScatter", since=24)
def tensor_scatter(past_cache, update, write_indices=None, *, mode="linear", axis=-2):
    """KV-cache write: present[b, ..., w[b] + s, ...] = update[b, ..., s, ...]."""
    r = past_cache.ndim
    a = _axis(axis, r)
    if a == 0:
        raise ValueError("TensorScatter: axis must not be the batch axis")
    same = all(u == p for i, (u, p) in enumerate(zip(update.shape, past_cache.shape)) if i != a)
    if update.ndim != r or not same:
        raise ValueError("TensorScatter: update shape incompatible with past_cache")
    B, L, S = past_cache.shape[0], past_cache.shape[a], update.shape[a]
    if S > L:
        raise ValueError("TensorScatter: update longer than the cache")
    w = np.zeros(B, np.int64) if write_indices is None else np.asarray(write_indices, np.int64).reshape(B)
    pos = w[:, None] + np.arange(S, dtype=np.int64)[None, :]
    if mode == "circular":
        pos %= L
    elif mode != "linear":
        raise ValueError(f"TensorScatter: unknown mode {mode!r}")
    if pos.size and (pos.min() < 0 or pos.max() >= L):
        raise IndexError("TensorScatter: write position out of range (linear mode)")
    out = past_cache.copy()
    # advanced indices on dims 0 and a (B, S) broadcast to the front of the indexed result
    where = [slice(None)] * r
    where[0], where[a] = np.arange(B)[:, None], pos
    out[tuple(where)] = np.moveaxis(update, a, 1) if a > 1 else update
    return out


# ---------------------------------------------------------------- selection


@op("Compress", since=9)
def compress(x, condition, *, axis=None):
    cond = np.asarray(condition).reshape(-1).astype(bool)
    if axis is None:
        flat = x.reshape(-1)
        return flat[cond[:flat.size].nonzero()[0]]
    a = _axis(axis, x.ndim)
    return np.compress(cond[:x.shape[a]], x, axis=a)  # a longer condition is truncated


@op("NonZero", since=9)
def non_zero(x):
    if _ml(x.dtype):
        x = x.astype(np.float32)
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), dtype=_I64)
    return np.stack(np.nonzero(x)).astype(_I64, copy=False).reshape(x.ndim, -1)


def _order_key(x, largest):
    """A key whose ascending order is the wanted order (ties keep ascending index)."""
    key = x.astype(np.float32) if _ml(x.dtype) else x
    if not largest:
        return key
    if key.dtype.kind == "f":
        return -key
    if key.dtype.kind in "iu":
        return ~key  # order-reversing and overflow-free
    return None


def _smallest_k(key, k):
    """Indices (last axis) of the k smallest of each row of a 2-D key, ascending, stable."""
    rows, n = key.shape
    if k == 0 or rows == 0:
        return np.zeros((rows, k), np.intp)
    if 4 * k < n and not (key.dtype.kind == "f" and np.isnan(key).any()):
        # partial selection: everything below the k-th value, then the lowest-indexed ties
        kth = np.partition(key, k - 1, axis=1)[:, k - 1:k]
        below = key < kth
        tie = key == kth
        need = k - below.sum(axis=1, keepdims=True)
        pick = below | tie
        extra = np.flatnonzero(tie.sum(axis=1, keepdims=True) > need)
        if extra.size:  # rows with surplus ties at the k-th value: keep the lowest indices
            t = tie[extra]
            pick[extra] = below[extra] | (t & (np.cumsum(t, axis=1, dtype=np.int32) <= need[extra]))
        cand = np.nonzero(pick)[1].reshape(rows, k)  # per row, in index order
        sub = np.take_along_axis(key, cand, axis=1)
        return np.take_along_axis(cand, np.argsort(sub, axis=1, kind="stable"), axis=1)
    return np.argsort(key, axis=1, kind="stable")[:, :k]


def _topk(x, k, axis=-1, largest=1, sorted_=1):
    a = _axis(axis, x.ndim)
    n = x.shape[a]
    k = int(np.asarray(k).reshape(-1)[0])
    if not 0 <= k <= n:
        raise ValueError(f"TopK: k={k} out of range for axis of size {n}")
    key = _order_key(x, largest)
    moved = np.moveaxis(x if key is None else key, a, -1)
    lead = moved.shape[:-1]
    flat = moved.reshape(-1, n)
    if key is None:  # no order-reversing key (bool): stable sort of the reversed rows
        order = np.flip(np.argsort(np.flip(flat, 1), axis=1, kind="stable"), 1)[:, :k]
        idx = (n - 1) - order
    else:
        idx = _smallest_k(flat, k)
    idx = np.moveaxis(idx.reshape(lead + (k,)), -1, a)
    return np.take_along_axis(x, idx, axis=a), idx.astype(_I64)


@op("TopK", since=1)
def topk_1(x, *, k, axis=-1):
    return _topk(x, k, axis)


@op("TopK", since=10)
def topk_10(x, k, *, axis=-1):
    return _topk(x, k, axis)


@op("TopK", since=11)
def topk_11(x, k, *, axis=-1, largest=1, sorted=1):  # noqa: A002
    return _topk(x, k, axis, largest, sorted)


def _unique_rows(rows):
    """Unique rows of an int matrix: (first index, inverse, counts), groups in sorted order."""
    n = rows.shape[0]
    if n == 0:
        return (np.zeros(0, np.intp),) * 3
    order = np.lexsort(rows.T[::-1]) if rows.shape[1] else np.arange(n)  # stable
    srt = rows[order]
    new = np.ones(n, bool)
    new[1:] = (srt[1:] != srt[:-1]).any(axis=1)
    starts = np.flatnonzero(new)
    inv = np.empty(n, np.intp)
    inv[order] = np.cumsum(new) - 1
    return order[starts], inv, np.diff(np.append(starts, n))


@op("Unique", since=11)
def unique(x, *, axis=None, sorted=1):  # noqa: A002
    key = x.astype(np.float32) if _ml(x.dtype) else x
    if axis is None:
        flat = key.reshape(-1)
        _, first, inv, counts = np.unique(flat, return_index=True, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
    else:
        a = _axis(axis, x.ndim)
        moved = np.moveaxis(key, a, 0)
        # compare sub-tensors through dense codes of their elements (exact for any dtype)
        codes = np.unique(moved.reshape(-1), return_inverse=True)[1]
        codes = codes.reshape(moved.shape[0], math.prod(moved.shape[1:]))
        first, inv, counts = _unique_rows(codes)
    if not sorted:  # groups in order of first occurrence
        perm = np.argsort(first, kind="stable")
        rank = np.empty_like(perm)
        rank[perm] = np.arange(perm.size)
        first, counts, inv = first[perm], counts[perm], rank[inv]
    y = x.reshape(-1)[first] if axis is None else np.take(x, first, axis=_axis(axis, x.ndim))
    return y, first.astype(_I64), inv.astype(_I64), counts.astype(_I64)


@op("OneHot", since=9)
def one_hot(indices, depth, values, *, axis=-1):
    d = int(np.asarray(depth).reshape(-1)[0])
    if d < 1:
        raise ValueError(f"OneHot: depth must be positive, got {d}")
    ind = np.asarray(indices)
    ind = ind.astype(np.float64) if _ml(ind.dtype) else ind
    ind = ind.astype(np.int64)  # float indices truncate, as a cast
    ind = np.where(ind < 0, ind + d, ind)  # negative counts from the back; others stay unmatched
    a = _axis(axis, ind.ndim + 1)
    shape = [1] * (ind.ndim + 1)
    shape[a] = d
    hot = np.expand_dims(ind, a) == np.arange(d, dtype=np.int64).reshape(shape)
    vals = np.asarray(values).reshape(-1)
    return np.where(hot, vals[1:2].reshape(()), vals[0:1].reshape(()))


@op("ReverseSequence", since=10)
def reverse_sequence(x, sequence_lens, *, batch_axis=1, time_axis=0):
    ba, ta = _axis(batch_axis, x.ndim), _axis(time_axis, x.ndim)
    if ba == ta:
        raise ValueError("ReverseSequence: batch_axis == time_axis")
    B, T = x.shape[ba], x.shape[ta]
    lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
    if lens.shape != (B,) or (lens.size and (lens.min() < 0 or lens.max() > T)):
        raise ValueError("ReverseSequence: sequence_lens must be B values in [0, T]")
    t = np.arange(T, dtype=np.int64)[None, :]
    L = lens[:, None]
    src = np.where(t < L, L - 1 - t, t)  # (B, T): source time step of each output step
    b = np.arange(B)[:, None]
    where = [slice(None)] * x.ndim
    where[ba], where[ta] = (b, src) if ba < ta else (b.T, src.T)
    if abs(ba - ta) == 1:  # adjacent advanced indices keep their place: one gather of rows
        return x[tuple(where)]
    shape = [1] * x.ndim
    shape[ba], shape[ta] = B, T
    src = (src if ba < ta else src.T).reshape(shape)
    return np.take_along_axis(x, np.broadcast_to(src, x.shape), axis=ta)


def _cumulative(fn, ident, x, axis, exclusive, reverse):
    a = _axis(np.asarray(axis).reshape(-1)[0], x.ndim)
    work = np.float32 if _narrow(x.dtype) else x.dtype
    y = x.astype(work, copy=False)
    if reverse:
        y = np.flip(y, a)
    if exclusive and y.shape[a]:
        head = [(0, 0)] * x.ndim
        head[a] = (1, 0)
        y = np.pad(np.take(y, np.arange(y.shape[a] - 1), axis=a), head, constant_values=ident)
    r = fn(y, axis=a, dtype=work)
    if reverse:
        r = np.flip(r, a)
    return np.ascontiguousarray(r.astype(x.dtype, copy=False))


@op("CumSum", since=11)
def cumsum(x, axis, *, exclusive=0, reverse=0):
    return _cumulative(np.cumsum, 0, x, axis, exclusive, reverse)


@op("CumProd", since=26)
def cumprod(x, axis, *, exclusive=0, reverse=0):
    return _cumulative(np.cumprod, 1, x, axis, exclusive, reverse)
