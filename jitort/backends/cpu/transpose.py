"""Transpose on the CPU backend: any permutation that collapses to a swap of two axes,

    x [A, P, Q, R] -> y [A, Q, P, R]        (R: a contiguous block moved whole, R = 1 for none)

which covers the layout pass's NCHW <-> NHWC (A=N, P=C, Q=H*W, R=1 and back) and the head
transposes of attention ([B, S, H, D] -> [B, H, S, D]: A=B, P=S, Q=H, R=D). Other permutations
run on the reference path.

The reference kernel returns a NumPy view, and the next kernel copied it to a contiguous array
on one thread: the network input of ResNet-50 and MobileNetV2 (1x3x224x224 -> NHWC) cost
150 us that way, as much as the first convolution. Here the copy runs over views (p outer, q
inner: one contiguous read stream at a time), writing the planned buffer: 1x3x224x224 87 us at
1 thread, 44 at 2. The output's (a, q) rows are cut into ``threads`` contiguous ranges, one per
thread (the rows a thread writes are the pixel rows that thread's home range reads in the next
layer: see conv_work.work_items). Any dtype of 1, 2, 4 or 8 bytes, moved as raw bits.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .lowering import Unsupported, arg, lowers, only_attrs, out_buffer

_JIT = dict(error_model="numpy", cache=True, nogil=True)
_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def collapse(shape, perm) -> tuple[int, int, int, int] | None:
    """(A, P, Q, R) when transposing ``shape`` by ``perm`` is x [A, P, Q, R] -> [A, Q, P, R]
    (size-1 axes dropped, axes that stay adjacent merged), else None."""
    axes = [a for a in perm if shape[a] != 1]
    groups: list[list[int]] = []  # output-order runs of input axes that stay adjacent
    for a in axes:
        if groups and a == groups[-1][-1] + 1:
            groups[-1].append(a)
        else:
            groups.append([a])
    size = [int(np.prod([shape[a] for a in g])) for g in groups]
    order = sorted(range(len(groups)), key=lambda i: groups[i][0])  # input order of the groups
    n = len(groups)
    if n <= 1:
        return (1, 1, 1, int(np.prod(size)) if size else 1)  # a copy
    # the output lists the groups as: leading ones in input order, then two swapped, then the rest
    out = list(range(n))  # output position -> group
    inp = order  # input position -> group
    lead = 0
    while lead < n and out[lead] == inp[lead]:
        lead += 1
    tail = 0
    while tail < n - lead and out[n - 1 - tail] == inp[n - 1 - tail]:
        tail += 1
    mid_out, mid_in = out[lead:n - tail], inp[lead:n - tail]
    if len(mid_out) != 2 or mid_out[::-1] != mid_in:
        return None
    A = int(np.prod([size[g] for g in out[:lead]]))
    R = int(np.prod([size[g] for g in out[n - tail:]]))
    return A, size[mid_in[0]], size[mid_in[1]], R


@numba.njit(**_JIT)
def _swap_rows(x, y, P, Q, R, lo, hi):
    """y[a, q, p, :] = x[a, p, q, :] for the output rows a*Q + q in [lo, hi). Loops p outer,
    q inner over views, so each read is one contiguous stream and the inner index is the loop
    variable (Numba then drops the negative-index wrap and LLVM vectorizes the copy; indices
    computed in the loop made it 5x slower than NumPy's strided copy)."""
    if hi <= lo:
        return
    for a in range(lo // Q, (hi - 1) // Q + 1):
        q0 = max(lo - a * Q, 0)
        q1 = min(hi - a * Q, Q)
        ya = y[a * Q * P * R:(a + 1) * Q * P * R]
        for p in range(P):
            xs = x[(a * P + p) * Q * R:(a * P + p + 1) * Q * R]
            if R == 1:
                for q in range(q0, q1):
                    ya[q * P + p] = xs[q]
            else:
                for q in range(q0, q1):
                    yq = ya[(q * P + p) * R:(q * P + p + 1) * R]
                    xq = xs[q * R:(q + 1) * R]
                    for k in range(R):
                        yq[k] = xq[k]


@numba.njit(parallel=True, **_JIT)
def _swap_par(x, y, P, Q, R, rows, nt):
    for t in prange(nt):
        _swap_rows(x, y, P, Q, R, rows * t // nt, rows * (t + 1) // nt)


def swap(x: np.ndarray, y: np.ndarray, A: int, P: int, Q: int, R: int, threads: int = 1) -> np.ndarray:
    """x (C-contiguous, A*P*Q*R elements) -> y [A, Q, P, R] (any shape of that size)."""
    bits = _BITS[x.dtype.itemsize]  # a copy: moved as raw bits (one kernel per width, any dtype)
    xf, yf = x.reshape(-1).view(bits), y.reshape(-1).view(bits)
    rows = A * Q
    if rows * P * R == 0:
        return y
    nt = max(1, min(int(threads), rows, (rows * P * R) // 4096 or 1))  # no pool for tiny copies
    if nt == 1:
        _swap_rows(xf, yf, P, Q, R, 0, rows)
    else:
        _swap_par(xf, yf, P, Q, R, rows, nt)
    return y


@lowers("", "Transpose")
def _transpose(node, ctx):
    only_attrs(node, {"perm"})
    x, y = node.inputs[0], node.outputs[0]
    tx, ty = ctx.type(x), ctx.type(y)
    shape = tuple(tx.shape)
    perm = node.attrs.get("perm")
    perm = tuple(range(len(shape) - 1, -1, -1)) if perm is None else tuple(int(p) for p in perm)
    if sorted(perm) != list(range(len(shape))):
        raise Unsupported(f"perm {perm} of a rank-{len(shape)} tensor")
    dt = np.dtype(tx.dtype)
    if dt.hasobject or dt.kind in "SUV" or dt.itemsize not in _BITS:
        raise Unsupported(f"dtype {dt}")
    form = collapse(shape, perm)
    if form is None:
        raise Unsupported(f"perm {perm} of {shape} is not a swap of two axes")
    if tuple(ty.shape) != tuple(shape[p] for p in perm):
        raise Unsupported(f"output {tuple(ty.shape)} against perm {perm} of {shape}")
    A, P, Q, R = form
    sy, nt = tuple(ty.shape), ctx.threads

    def run(env, bufs):
        env[y] = swap(arg(env, x), out_buffer(bufs, y, sy, dt), A, P, Q, R, nt)

    return run
