"""The CPU backend: each node of the optimized graph runs a generated Numba kernel when a lowering
covers it (lowering.py, lower_gemm.py, lower_rows.py) and its NumPy reference kernel otherwise,
inside one plan with one memory arena (plan.py).

Threads: one pool. Every parallel kernel is a Numba ``prange`` over ``num_threads`` chunks on
Numba's OpenMP pool; no generated kernel calls a BLAS. The GEMM is generated too, so OpenBLAS
runs only inside reference steps (products the kernels do not cover). Mixing a spinning
OpenBLAS pool with Numba's made a forward pass 20-100x slower here
(shared/notes/cpu-gemm-threads.md), so while a plan of more than one thread that has reference
steps runs, BLAS is held to one thread (plan.py). ``num_threads`` defaults to the cores this
process may use.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ... import config
from ..base import register_backend
from ..reference import ReferenceBackend
from . import kernel_image
from . import lower_gemm, lower_pool, lower_rows, transpose  # noqa: F401  (register their lowerings)
from ...ir.infer import _NONDETERMINISTIC
from .lowering import LOWERINGS, LowerCtx, Unsupported
from .memory import plan_memory
from .modules import recording
from .numba_start import prepare
from .plan import CpuPlan, Step

numba = prepare()  # before the first kernel compiles or loads: see numba_start.py

_LAYER_SET = False
#: Largest value a plan computes once at build time and keeps (bytes).
_FOLD_LIMIT = 64 << 20


def default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, numba.config.NUMBA_NUM_THREADS))


def _use_omp() -> None:
    """Numba's OpenMP layer (measured best here); set before Numba starts any pool."""
    global _LAYER_SET
    if not _LAYER_SET:
        _LAYER_SET = True
        if "NUMBA_THREADING_LAYER" not in os.environ:
            try:
                from numba.np.ufunc import omppool  # noqa: F401
                numba.config.THREADING_LAYER = "omp"
            except ImportError:  # no libgomp: Numba picks what it has
                pass


@register_backend("cpu")
class CpuBackend(ReferenceBackend):
    """Generated kernels where a lowering covers the node; the reference kernel elsewhere."""

    name = "cpu"

    def __init__(self, seed: int | None = None, num_threads: int | None = None,
                 cache_dir: str | None = None, **options):
        super().__init__(seed=seed, **options)
        self.threads = max(1, min(int(num_threads), numba.config.NUMBA_NUM_THREADS)) \
            if num_threads else default_threads()
        self.cache_dir = config.kernel_dir(cache_dir)
        if self.threads > 1:
            _use_omp()
        self._warned: set[str] = set()

    #: Plans are worth caching on disk (see jitort/cache/variants.py).
    cacheable = True

    def build_plan(self, bound, derived: dict | None = None, kernels: bytes | None = None) -> CpuPlan:
        """The plan of ``bound``. ``derived``: arrays computed from constants by tag (packed
        weights); filled as the lowerings compute them, reused when given filled (a cache entry).
        ``kernels``: the image of its compiled kernels (:meth:`kernel_image`, a cache entry)."""
        if kernels is not None:
            kernel_image.install(kernels)
        graph = bound.graph
        memory = plan_memory(bound)
        ctx = LowerCtx(bound, self.threads, self.cache_dir, memory, {}, derived)
        with recording() as modules:
            steps = [self._folded_step(node, ctx) or self._step(node, ctx) for node in graph.nodes]
        plan = CpuPlan(graph, steps, memory, self.threads, ctx.folded)
        plan.kernel_modules = modules  # the generated modules (in cache_dir) its kernels live in
        if config.DEBUG >= 1:
            print(plan.describe())
        return plan

    def kernel_image(self, plan: CpuPlan) -> bytes | None:
        """Its compiled kernels (generated modules', elementwise regions', the package's own it ran)
        in one piece, for a cache entry (after its first run: they are compiled then); see
        kernel_image.py."""
        return kernel_image.collect(getattr(plan, "kernel_modules", ()) or ())

    def _folded_step(self, node, ctx: LowerCtx) -> Step | None:
        """A node whose inputs are all constant (a light model's ConstantOfShape weights, a
        shape computation over the size cap of the fold pass) runs once, here; its outputs
        join the plan's constants, so the kernels after it see constants (a weight is packed
        once) and later calls skip it."""
        if node.op_type in _NONDETERMINISTIC or any(True for _ in node.subgraphs()) \
                or not node.inputs or not all(ctx.const(n) is not None for n in node.inputs if n):
            return None
        env = {n: ctx.const(n) for n in node.inputs if n}
        try:
            _reference_fn(self.lower(node, ctx.graph.opsets))(env, {})
        except Exception:  # noqa: BLE001 - it then fails at run time, as a step, naming the node
            return None
        outs = {o: env.get(o) for o in node.outputs if o}
        if not all(isinstance(v, np.ndarray) and v.nbytes <= _FOLD_LIMIT for v in outs.values()):
            return None
        ctx.folded.update(outs)
        return Step(node, _no_op, "folded")

    def _step(self, node, ctx: LowerCtx) -> Step:
        lower = LOWERINGS.get((node.domain, node.op_type))
        why = "no generated kernel for this op"
        if lower is not None:
            try:
                return Step(node, lower(node, ctx), _kind(node))
            except Unsupported as exc:
                why = str(exc)
            except Exception as exc:  # noqa: BLE001 - a bug of ours: fall back, say so once
                key = f"{node.domain}::{node.op_type}: {type(exc).__name__}: {exc}"
                if key not in self._warned:
                    self._warned.add(key)
                    warnings.warn(f"jitort cpu backend: generating a kernel for {key} failed; "
                                  f"the node runs on the reference path", RuntimeWarning, stacklevel=2)
                why = f"kernel generation failed: {type(exc).__name__}"
        ref = self.lower(node, ctx.graph.opsets)
        return Step(node, _reference_fn(ref), "reference", why)


def _no_op(env, bufs) -> None:
    return None


def _kind(node) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain else node.op_type


def _reference_fn(step):
    """The reference backend's prepared step as a plan step ``fn(env, bufs)``."""
    return lambda env, bufs: step(env)
