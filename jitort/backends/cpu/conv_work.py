"""Work items of the generated convolutions and how threads share them (conv.py's kernels).

    items = chunks(M, NP, MC, threads, MR)             # (m_lo, m_hi, p_lo, p_hi) per item
    ws = Scratch(T, shared_f, thread_f, thread_i)      # the kernel's working memory
    lines = work_items(name, args, T, len(items), unpack, setup, body)

``chunks`` cuts a conv's output into row blocks x panel groups; ``work_items`` writes the source
of the function that runs them (in order with one thread; with T threads, home ranges first and
then stealing through atomic counters, ``conv_ir.atomic_next``) and of the driver that calls it.
``Scratch`` lays out the two arrays every generated conv kernel takes last, ``wsf`` (float32)
and ``wsi`` (int64), and allocates them.
"""

from __future__ import annotations

import numpy as np

from .memory import aligned_zeros

#: int64s between two threads' counters (one 64-byte line each).
COUNTER_STRIDE = 8


class Scratch:
    """The working memory of one generated conv kernel, passed in by its plan (``wsf``, ``wsi``):

        wsf: [shared_f floats every thread reads (the zero row)] [thread_f floats] x T
        wsi: [T x COUNTER_STRIDE counters, with T > 1] [thread_i ints] x T

    each region rounded up to 64 bytes, both arrays 64-byte aligned and zero-filled. The kernel
    allocates nothing itself: a ``np.empty`` inside a cached Numba function brings the
    environment of Numba's ``np.empty`` implementation along, and loading the first such kernel
    in a process imported ``numba.np.arrayobj`` and what it pulls in (~25 ms of ResNet-50's warm
    start). The kernel writes only the thread regions and the counters, so the zero row stays
    zero; one (wsf, wsi) pair serves one call at a time."""

    def __init__(self, threads: int, shared_f: int = 0, thread_f: int = 0, thread_i: int = 0):
        up = lambda n, k: -(-n // k) * k  # noqa: E731
        self.threads = threads
        self.shared_f, self.thread_f = up(shared_f, 16), up(thread_f, 16)
        self.counters = threads * COUNTER_STRIDE if threads > 1 else 0
        self.thread_i = up(thread_i, 8)

    def floats(self, n: int, shared: bool = False) -> str:
        """Source of this thread's (or the shared) first ``n`` floats, in a work-items function."""
        assert n <= (self.shared_f if shared else self.thread_f), "a scratch region too small"
        lo = "0" if shared else self._base(self.shared_f, self.thread_f)
        return f"wsf[{lo}:{lo} + {n}]"

    def ints(self, start: int, n: int) -> str:
        """Source of this thread's ints [start, start + n), in a work-items function."""
        assert start + n <= self.thread_i, "a scratch region too small"
        lo = self._base(self.counters, self.thread_i)
        return f"wsi[{lo} + {start}:{lo} + {start + n}]"

    def _base(self, first: int, per: int) -> str:
        return str(first) if self.threads == 1 else f"{first} + home_t * {per}"

    def buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """A new zero-filled (wsf, wsi)."""
        return (aligned_zeros(max(1, self.shared_f + self.threads * self.thread_f), np.float32),
                aligned_zeros(max(1, self.counters + self.threads * self.thread_i), np.int64))


def decorator(parallel: bool) -> str:
    """The ``@numba.njit`` line of a generated conv function (FASTMATH and CACHE are names the
    generated module defines)."""
    return (f"@numba.njit(error_model='numpy', fastmath=FASTMATH, nogil=True, parallel={parallel}, "
            f"cache=CACHE)")


def chunks(M: int, NP: int, MC: int, threads: int, MR: int = 1) -> list[tuple]:
    """Work items (m_lo, m_hi, p_lo, p_hi). One thread: everything. More: the threads take items
    from atomic counters until none is left, so a thread that the OS does not schedule for a
    while (2 vCPUs shared with other jobs) leaves its work to the others instead of making them
    wait (see ``work_items``). Items: the MC row blocks, each cut into panel groups when there
    are fewer than 4 blocks per thread (then every group of a block gathers the block's patches
    itself). When even one panel per item leaves fewer than 4 items
    per thread, the row blocks are cut finer (multiples of MR): MobileNetV2's 7x7x960->160 was
    1 block x 3 panels, 64 + 96 columns for the two threads."""
    if threads == 1 or M == 0:
        return [(0, M, 0, NP)]
    want = 4 * threads
    step = MC
    nb = -(-M // MC)
    if nb * NP < want and M > MR:
        nb = min(-(-M // MR), -(-want // NP))
        step = max(MR, -(-M // nb) // MR * MR)  # rounded down: at least nb blocks
    blocks = [(i0, min(i0 + step, M)) for i0 in range(0, M, step)]
    groups = 1 if len(blocks) >= want else min(NP, -(-want // len(blocks)))
    return [(a, b, NP * g // groups, NP * (g + 1) // groups) for a, b in blocks for g in range(groups)]


def work_items(name: str, args: str, T: int, nch: int, unpack: str, setup: list[str],
               body: list[str]) -> list[str]:
    """``{name}_items([counter, home_t,] {args})``, a plain (not parallel) function running work
    items (``chunks``; ``body`` is written at indent 12 with ``wi`` the item), then
    ``{name}({args})`` that calls it: once with one thread; with T, as ``prange(T)`` over t
    (``args`` ends with ``wsf, wsi``, see ``Scratch``; the counters are wsi's first T lines).
    The body in its own function keeps Numba's parfor passes off it: compiling the body inside
    the prange took ~3x longer (2-4 s per conv).

    With T threads the items are cut into T home ranges in order (items are ordered by pixel
    rows), each with its own atomic counter (a cache line apart): thread t runs its home range
    first, then takes what is left of the others' from their counters. On a quiet machine every
    thread then computes the same rows in every layer, so a layer reads what the same core wrote
    in the layer before from its own cache instead of the other core's (MobileNetV2's 14x14 1x1
    convs: 1.2x from the second thread with one shared counter, where either thread took any
    item); a thread that the OS does not schedule for a while still leaves its items to the
    others (see conv.py's docstring)."""
    if T == 1:
        loop = [f"    for wi in range({nch}):"]
    else:
        homes = tuple(nch * k // T for k in range(T + 1))
        loop = [f"    for home_h in range({T}):",  # names no body uses
                "        home_c = home_t + home_h",
                f"        if home_c >= {T}:",
                f"            home_c -= {T}",
                f"        home_lo, home_hi = {homes}[home_c], {homes}[home_c + 1]",
                "        while True:",
                f"            wi = home_lo + atomic_next(counter, home_c * {COUNTER_STRIDE})",
                "            if wi >= home_hi:",
                "                break"]
    head = f"def {name}_items({args}):" if T == 1 else f"def {name}_items(counter, home_t, {args}):"
    pad = "    " if T > 1 else ""
    items = ([decorator(False), head, "    wide_vectors()"]
             + ["    " + x for x in setup] + loop + [pad + "        " + unpack]
             + [pad + x[4:] for x in body])
    driver = ["", "", decorator(T > 1), f"def {name}({args}):"]
    if T == 1:
        driver += [f"    {name}_items({args})"]
    else:
        driver += [f"    counter = wsi[:{T * COUNTER_STRIDE}]",
                   f"    for q in range({T * COUNTER_STRIDE}):", "        counter[q] = 0",
                   f"    for t in numba.prange({T}):", f"        {name}_items(counter, t, {args})"]
    return items + driver
