"""Python's cyclic garbage collector held off while jitort builds what lives as long as its
session: jitort's and Numba's modules at import, a session, a cached variant's plan and its first
run.

    with paused():      # nests; the collector's state is put back when the outermost one ends
        ...
    resume()            # a compile starts inside a pause: collect as usual from here

A warm start allocates some hundred thousand objects that stay (Numba's types, typing templates
and registries, our modules, the plan), and CPython's collector, triggered every 700 net
allocations, walks them again and again while they pile up -- freeing nothing: ResNet-50's warm
start ran 128 collections, 6 of them full, 42-58 ms of its time here. With the collector held off
they are walked later, once per generation they pass through (32 collections up to the first
result, none full, 22-33 ms; the rest after it). A pause that met a compile ends there (``resume``: a Numba compile
makes cyclic garbage in bulk -- IR, typing contexts -- which must not pile up), and a process
whose collector was off stays so.
"""

from __future__ import annotations

import contextlib
import gc
import threading

_LOCK = threading.Lock()
_depth = 0
_restore = False  # whether the outermost pause found the collector enabled


@contextlib.contextmanager
def paused():
    global _depth, _restore
    with _LOCK:
        if _depth == 0:
            _restore = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _LOCK:
            _depth -= 1
            if _depth == 0 and _restore:
                gc.enable()


def resume() -> None:
    """Collect as usual again, pause or not (a compile starts)."""
    with _LOCK:
        if _depth and _restore:
            gc.enable()


def active() -> bool:
    """Whether a pause holds the collector off now (for tests)."""
    with _LOCK:
        return bool(_depth) and not gc.isenabled()
