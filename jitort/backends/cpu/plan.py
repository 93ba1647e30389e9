"""The executable plan of the CPU backend for one Signature.

    plan = CpuPlan(graph, steps, memory, threads)
    outputs = plan.run(feeds)

A plan is an ordered list of steps, one per node of the optimized graph. A step is a callable
``step(env, bufs)``: it reads its inputs from ``env`` (name -> value) and stores its outputs there.
Generated steps (GEMM, convolution, row kernels, attention, elementwise regions, views) write
into ``bufs[name]``, the buffer the memory plan gave that value; reference steps (any node no
kernel covers) return their own arrays.

Memory (``memory.plan_memory``): every intermediate with a static type lives in one arena
allocated once per plan, at the offset the liveness-based planner chose (in place and views where
it said so). Storage groups that hold a graph output are allocated fresh at every call instead,
so the arrays handed to the caller are never overwritten by a later call. Two safety rules keep
reference steps from breaking the plan's liveness assumptions:

* a reference output that may share memory with the arena (a NumPy view of an arena input,
  e.g. Transpose or Slice) is copied, unless the planner made that value a view of that input;
* a graph output that may share memory with the arena is copied before it is returned.

One plan owns one arena; a call that finds it busy (another thread is running the plan) runs
with a temporary arena of its own.

Threads: the generated kernels run on Numba's pool. A plan with ``threads > 1`` runs each call
at its thread count or at 1 thread, whichever its governor measured faster (governor.py: on a
busy machine every join waits for a descheduled worker). A plan with ``threads > 1`` that also has
reference steps (which may call numpy's BLAS) holds every BLAS library to one thread while it
runs (threadpoolctl, ~8 us a call): two spinning pools on the same cores made a forward pass
20-100x slower here (shared/notes/cpu-gemm-threads.md).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from ... import config
from ...errors import ExecutionError, JitortError
from ..reference import _where, dead_after
from .governor import ThreadGovernor
from .memory import ALIGN, MemoryPlan


class Step:
    """One node of the plan: ``fn(env, bufs)``; ``kind`` names the kernel ("reference" for the
    NumPy path), ``why`` says why a node runs on the reference path."""

    __slots__ = ("node", "fn", "kind", "why")

    def __init__(self, node, fn: Callable, kind: str, why: str = ""):
        self.node, self.fn, self.kind, self.why = node, fn, kind, why


class CpuPlan:
    def __init__(self, graph, steps: list[Step], memory: MemoryPlan, threads: int = 1,
                 folded: dict | None = None):
        self.graph = graph
        self.steps = steps
        self.memory = memory
        self.input_names = graph.input_names
        self.output_names = graph.output_names
        self.initializers = {**graph.initializers, **(folded or {})}
        self._lock = threading.Lock()
        out_groups = [b for b in memory.buffers if b.has_output and b.size]
        self._out_groups = [(b.size, [(m, memory.types[m]) for m in b.members]) for b in out_groups]
        out_members = {m for b in out_groups for m in b.members}
        self._planned = {n: o for n, o in memory.offsets.items() if n not in out_members}
        self._arena, self._bufs = self._allocate()
        self._dead_after = dead_after(steps, set(graph.output_names) | set(self.initializers))
        # what the call loop reads of each step, looked up once (~1 us a step otherwise)
        self._loop = [(s.fn, s, s.kind == "reference", tuple(d)) for s, d in zip(steps, self._dead_after)]
        self.blas_guard = threads > 1 and any(s.kind == "reference" for s in steps)
        self.governor = ThreadGovernor(threads) if threads > 1 and config.ADAPTIVE_THREADS else None

    # -- memory ---------------------------------------------------------------------------------
    def _allocate(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        size = max((self.memory.offsets[n] + _nbytes(self.memory.types[n]) for n in self._planned),
                   default=0)
        arena = _aligned(size)
        bufs = {}
        for name, off in self._planned.items():
            t = self.memory.types[name]
            bufs[name] = arena[off:off + _nbytes(t)].view(t.dtype).reshape(t.shape)
        return arena, bufs

    def _output_buffers(self, bufs: dict) -> None:
        for size, members in self._out_groups:
            raw = _aligned(size)
            for name, t in members:
                bufs[name] = raw[:_nbytes(t)].view(t.dtype).reshape(t.shape)

    # -- running --------------------------------------------------------------------------------
    def run(self, feeds: dict[str, Any]) -> list:
        if self.governor is not None:
            return self.governor.run(self._run_guarded, feeds)
        return self._run_guarded(feeds)

    def _run_guarded(self, feeds: dict[str, Any]) -> list:
        if self.blas_guard:
            with _blas_controller().limit(limits=1, user_api="blas"):
                return self._run_locked(feeds)
        return self._run_locked(feeds)

    def _run_locked(self, feeds: dict[str, Any]) -> list:
        if self._lock.acquire(blocking=False):
            try:
                return self._run(feeds, self._arena, dict(self._bufs))
            finally:
                self._lock.release()
        arena, bufs = self._allocate()  # another thread holds the plan's arena
        return self._run(feeds, arena, bufs)

    def _run(self, feeds, arena, bufs) -> list:
        self._output_buffers(bufs)
        env: dict[str, Any] = dict(self.initializers)
        env.update(feeds)
        views = self.memory.views
        with np.errstate(all="ignore"):
            for fn, step, reference, dead in self._loop:
                try:
                    fn(env, bufs)
                except JitortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any kernel failure names the node
                    raise ExecutionError(f"{_where(step.node)} failed ({step.kind} kernel): "
                                         f"{type(exc).__name__}: {exc}") from exc
                if reference:
                    for name in step.node.outputs:
                        v = env.get(name) if name else None
                        if isinstance(v, np.ndarray) and name not in views and arena.size \
                                and np.may_share_memory(v, arena):
                            env[name] = v.copy()
                for name in dead:
                    env.pop(name, None)
        out = []
        for name in self.output_names:
            try:
                v = env[name]
            except KeyError:
                raise ExecutionError(f"graph output {name!r} was never computed") from None
            if isinstance(v, np.ndarray) and (name in self.initializers or name in feeds or (
                    arena.size and np.may_share_memory(v, arena))):
                v = v.copy()  # the caller owns what it gets: never a constant, an input or the arena
            out.append(v)
        return out

    def profile(self, feeds: dict[str, Any], repeat: int = 3) -> list[tuple[Step, float]]:
        """Seconds per step (the median of ``repeat`` runs), in plan order."""
        times = [[] for _ in self.steps]
        for _ in range(repeat):
            with self._lock:
                bufs = dict(self._bufs)
                self._output_buffers(bufs)
                env = {**self.initializers, **feeds}
                for step, t in zip(self.steps, times):
                    t0 = time.perf_counter()
                    step.fn(env, bufs)
                    t.append(time.perf_counter() - t0)
        return [(s, sorted(t)[len(t) // 2]) for s, t in zip(self.steps, times)]

    # -- reporting --------------------------------------------------------------------------------
    def kernel_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.steps:
            counts[s.kind] = counts.get(s.kind, 0) + 1
        return counts

    def describe(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.kernel_counts().items()))
        lines = [f"cpu plan: {len(self.steps)} steps ({counts})", self.memory.describe()]
        why: dict[str, int] = {}
        for s in self.steps:
            if s.kind == "reference" and s.why:
                why[s.why] = why.get(s.why, 0) + 1
        for reason, n in sorted(why.items(), key=lambda e: -e[1])[:12]:
            lines.append(f"  reference x{n}: {reason}")
        return "\n".join(lines)


_CONTROLLER = None


def _blas_controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def _nbytes(t) -> int:
    n = np.dtype(t.dtype).itemsize
    for d in t.shape:
        n *= int(d)
    return n


def _aligned(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + ALIGN, np.uint8)
    shift = (-raw.ctypes.data) % ALIGN
    return raw[shift:shift + nbytes]
