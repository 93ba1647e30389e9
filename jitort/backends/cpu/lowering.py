"""The lowering registry of the CPU backend: which kernel runs a node of the optimized graph.

    @lowers("jitort", "FusedMatMul")
    def _fused_matmul(node, ctx) -> Callable[[env, bufs], None]: ...

A lowering receives the node and a :class:`LowerCtx` (the Signature's types and constants, the
thread count, the cache directory) and returns the step function ``fn(env, bufs)`` that runs it
(see plan.py). It raises :class:`Unsupported` (with the reason) for a node outside what its
kernel covers -- a dtype, an attribute, a dynamic shape; the node then runs on the reference
path, silently (``jitort inspect`` lists the reasons). Any other exception while lowering or
compiling is a bug of ours: the backend falls back to the reference path with one warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...ir.types import TensorType

F32 = np.dtype(np.float32)

LOWERINGS: dict[tuple[str, str], Callable] = {}


class Unsupported(NotImplementedError):
    """The node is outside what the kernel covers: run it on the reference path."""


def lowers(domain: str, *op_types: str):
    def deco(fn):
        for op_type in op_types:
            LOWERINGS[(domain, op_type)] = fn
        return fn

    return deco


@dataclass
class LowerCtx:
    bound: object  # BoundGraph of the optimized graph
    threads: int
    cache_dir: str | None
    memory: object  # the MemoryPlan (which values are views, which have buffers)
    folded: dict = None  # values computed once when the plan was built (constant inputs only)
    derived: dict = None  # arrays derived from constants (packed weights), by tag; cached on disk

    def derive(self, tag: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
        """``fn()`` -- an array computed from constants only, such as packed weights -- or the
        array stored under ``tag`` when the plan is rebuilt from a cache entry (the entry keeps
        ``derived``, so a warm start does not repack). ``tag`` names the node and everything the
        result depends on beyond the graph (the kernel's layout)."""
        if self.derived is None:
            return fn()
        v = self.derived.get(tag)
        if v is None:
            v = self.derived[tag] = fn()
        return v

    @property
    def graph(self):
        return self.bound.graph

    def type(self, name: str) -> TensorType:
        """The static tensor type of ``name`` (Unsupported when it has a dynamic dim or dtype)."""
        t = self.bound.types.get(name)
        if not isinstance(t, TensorType) or t.dtype is None or t.shape is None \
                or any(not isinstance(d, int) for d in t.shape):
            raise Unsupported(f"value {name!r} has no static shape for this signature")
        return t

    def f32(self, name: str) -> tuple[int, ...]:
        """The shape of float32 value ``name`` (Unsupported for another dtype)."""
        t = self.type(name)
        if np.dtype(t.dtype) != F32:
            raise Unsupported(f"dtype {np.dtype(t.dtype)} (the kernel is float32)")
        return tuple(t.shape)

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer the Signature does not feed, or was
        computed from such values when the plan was built."""
        if not name or name in self.bound.fed:
            return None
        v = self.graph.initializers.get(name)
        if v is None and self.folded:
            v = self.folded.get(name)
        return v if isinstance(v, np.ndarray) else None


def size(shape) -> int:
    return math.prod(int(d) for d in shape)


def arg(env: dict, name: str) -> np.ndarray:
    """A C-contiguous input (a copy only for a strided array from a reference kernel)."""
    v = env[name]
    return v if v.flags.c_contiguous else np.ascontiguousarray(v)


def out_buffer(bufs: dict, name: str, shape, dtype=F32) -> np.ndarray:
    """The planned buffer of ``name``, or a new array when the plan has none (dynamic value)."""
    b = bufs.get(name)
    return b if b is not None else np.empty(shape, dtype)


def attr(node, name: str, default=None):
    v = node.attrs.get(name)
    return default if v is None else v


def only_attrs(node, allowed: set[str]) -> None:
    extra = {k for k, v in node.attrs.items() if v is not None} - allowed
    if extra:
        raise Unsupported(f"attributes {sorted(extra)}")
