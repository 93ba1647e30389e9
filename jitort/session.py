"""The lazy session: a loaded model that compiles one plan per input Signature on first use.

    model = jitort.load("m.onnx")
    out = model(input_ids=ids)          # first call with these shapes/dtypes: bind + build plan
    out = model(input_ids=ids)          # same Signature: a dict lookup, then the plan runs

A Signature is the (name, dtype, shape) of every fed input. Plans never freeze data-dependent
shapes; the model's declared output shapes are not trusted.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import config
from .backends import get_backend
from .errors import JitortError
from .gc_pause import paused, resume
from .inputs import bind_feeds, to_value, validate
from .ir.graph import Model
from .ir.infer import BoundGraph, bind
from .ir.types import type_of
from .passes.base import EXTENDED, LAYOUT, NONE

if TYPE_CHECKING:
    from .passes.pipeline import OptimizeResult

# The optimizer and the ONNX importer are imported where they are used: a warm start (every
# plan from the disk cache) needs neither, and they pull in onnx (0.6 s, see lazy.py).

#: The reference backend gains nothing from the layout level (its Conv is NCHW); the CPU
#: backend's convolutions are NHWC, so it defaults to the layout level.
DEFAULT_OPT_LEVEL = EXTENDED
_OPTIONS = {"backend", "opt_level", "num_threads", "seed", "cache_dir", "device", "cache", "tune"}


@dataclass(frozen=True)
class Signature:
    """Names, dtypes and shapes of the inputs of one call."""

    entries: tuple  # ((name, type), ...) in graph-input order

    def __str__(self) -> str:
        return ", ".join(f"{n}: {t}" for n, t in self.entries)


class Outputs(tuple):
    """A tuple of output arrays that can also be indexed by output name."""

    names: tuple = ()

    def __new__(cls, values, names):
        self = super().__new__(cls, values)
        self.names = tuple(names)
        return self

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self.names.index(key))
            except ValueError:
                raise KeyError(f"no output {key!r}; outputs are {list(self.names)}") from None
        return tuple.__getitem__(self, key)

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self.names, self))


@dataclass
class _Variant:
    signature: Signature
    bound: BoundGraph  # the optimized graph's binding
    plan: Any
    optimized: OptimizeResult | None = None  # None when loaded from the disk cache (see optimization())
    key: Any = None  # the disk cache key (a jitort.cache.key.CacheKey) or None
    first_run: Any = None  # set after the first run of a newly compiled, cached variant
    calls: int = 0


@dataclass
class SessionStats:
    compiles: int = 0  # variants made (optimized here or loaded from the disk cache)
    optimized: int = 0  # variants the optimizer ran for (disk cache misses)
    cache_hits: int = 0  # variants loaded from the disk cache
    calls: int = 0
    signatures: list = field(default_factory=list)


class CompiledModel:
    """What :func:`jitort.load` returns: call it like a function.

    With a backend whose plans are worth keeping (the CPU backend) and ``cache`` left on, each
    Signature's optimized graph and derived arrays (packed weights) go to the disk cache
    (``cache_dir``, else JITORT_CACHE_DIR, else the user cache dir; jitort/cache/): a later
    process with the same model, Signature, options, device and jitort source loads them instead
    of optimizing and packing, and -- when every Signature it meets is cached -- never parses the
    model file either (its inputs and outputs come from a record next to the entries).
    """

    def __init__(self, source, **options):
        unknown = set(options) - _OPTIONS
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; known options: {sorted(_OPTIONS)}")
        self.options = options
        device = options.get("device")
        if device not in (None, "cpu"):
            raise JitortError(f"device {device!r} is not available: jitort runs on 'cpu' "
                              f"(the GPU backend is not built yet)")
        backend = options.get("backend") or config.BACKEND
        level = options.get("opt_level")
        default = LAYOUT if backend == "cpu" else DEFAULT_OPT_LEVEL
        self.opt_level = default if level is None else max(NONE, min(int(level), LAYOUT))
        self._source = source
        self._ir: Model | None = None
        self._cache = None
        self.model_digest: str | None = None
        with paused():  # the backend's import (Numba) and the session live long (gc_pause.py)
            self.backend = get_backend(backend, seed=options.get("seed"),
                                       num_threads=options.get("num_threads"),
                                       cache_dir=options.get("cache_dir"))
            if options.get("cache", True) and getattr(self.backend, "cacheable", False):
                from .cache.variants import VariantCache

                self._cache = VariantCache.open(options.get("cache_dir"), backend, self._key_options())
            self.interface = self._load_interface()
        self._fast: dict[tuple, _Variant] = {}
        self._variants: dict[Signature, _Variant] = {}
        self._lock = threading.Lock()
        self.stats = SessionStats()
        self._declared = {v.name: v.type for v in self.interface.inputs}

    def _key_options(self) -> dict:
        """The options that change what is compiled (the cache key's ``options`` part)."""
        return {"opt_level": self.opt_level, "num_threads": getattr(self.backend, "threads", None),
                "seed": self.options.get("seed")}

    def _load_interface(self):
        from .interface import ModelInterface

        if self._cache is not None:
            self.model_digest = self._cache.known_digest(self._source)
            if self.model_digest is not None:
                iface = self._cache.load_interface(self.model_digest)
                if iface is not None:
                    return iface
        from .ir.onnx_import import import_model

        files: list = []
        self._ir = import_model(self._source, files)
        self._check_ops()
        iface = ModelInterface.of(self._ir)
        if self._cache is not None:
            if self.model_digest is None:
                self.model_digest = self._cache.record_files(self._source, files) if files \
                    else self._cache.known_digest(self._source)
            if self.model_digest is not None:
                self._cache.save_interface(self.model_digest, iface)
            else:  # not a path, bytes or ModelProto we can hash: no disk cache
                self._cache = None
        return iface

    @property
    def ir(self) -> Model:
        """The imported model (parsed on first use when a warm start skipped it)."""
        if self._ir is None:
            from .ir.onnx_import import import_model

            files: list = []
            ir = import_model(self._source, files)
            if self._cache is not None and files \
                    and self._cache.record_files(self._source, files) != self.model_digest:
                raise JitortError(f"model file {self._source!r} changed on disk since it was loaded "
                                  f"(a new Signature needs its graph): load it again")
            self._ir = ir
        return self._ir

    @property
    def graph(self):
        return self.ir.graph

    @property
    def input_names(self) -> list[str]:
        return self.interface.input_names

    @property
    def output_names(self) -> list[str]:
        return self.interface.output_names

    def _check_ops(self) -> None:
        """Fail at load, not at the first call, for an op nobody can run."""
        for node in self.graph.walk():
            if not self.backend.supports(node, self.graph.opsets):
                from .backends.reference import node_version
                from .errors import UnsupportedOpError
                from .ops import registry

                raise UnsupportedOpError(node.op_type, node.domain, node_version(node, self.graph.opsets),
                                         node.name, registry.registered_ops(node.domain))

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs) -> Outputs:
        feeds = bind_feeds(self.interface, args, kwargs) if args else kwargs
        return Outputs(self.run_feeds(feeds), self.interface.output_names)

    def run_feeds(self, feeds: dict[str, Any]) -> list:
        values = {k: to_value(v, self._declared.get(k)) for k, v in feeds.items()}
        key = tuple((k, v.dtype, v.shape) if isinstance(v, np.ndarray) else (k, _slow_key(v))
                    for k, v in values.items())
        variant = self._fast.get(key)
        if variant is None:
            variant = self._variant_for(key, values)
        variant.calls += 1
        self.stats.calls += 1
        first = variant.first_run
        if first is None:
            if variant.calls == 1:  # a loaded variant's first run ends its start (gc_pause.py)
                with paused():
                    return variant.plan.run(values)
            return variant.plan.run(values)
        try:  # the first run compiles the kernels: then other processes may load the entry
            return variant.plan.run(values)
        finally:
            variant.first_run = None
            first.set()

    def _variant_for(self, key: tuple, values: dict) -> _Variant:
        validate(self.interface, values)
        order = {n: i for i, n in enumerate(self.interface.input_names)}
        sig = Signature(tuple(sorted(((k, type_of(v)) for k, v in values.items()),
                                     key=lambda e: order[e[0]])))
        with self._lock:
            variant = self._variants.get(sig)
            if variant is None:
                variant = self._compile(sig)
                self._variants[sig] = variant
                self.stats.compiles += 1
                self.stats.signatures.append(sig)
            self._fast[key] = variant
        return variant

    def _compile(self, sig: Signature) -> _Variant:
        with paused():  # a cached variant's plan lives long; a miss resumes (gc_pause.py)
            return self._load_or_compile(sig)

    def _load_or_compile(self, sig: Signature) -> _Variant:
        try:
            if self._cache is None:
                resume()
                return self._build(sig)
            key = self._cache.key(self.model_digest, sig, self._tuning_fingerprint())
            hit = self._cache.load(key)
            if hit is None:
                resume()  # optimizing and compiling make garbage in bulk
            if hit is None and self.options.get("tune"):
                pre = self._optimize(sig, tune=True)  # new winners change the key: tune first
                key = self._cache.key(self.model_digest, sig, self._tuning_fingerprint())
                hit = self._cache.load(key)
            else:
                pre = None
            if hit is None:
                try:
                    fd = self._cache.acquire(key)  # other processes compiling this key wait here
                except TimeoutError as exc:  # a compile elsewhere is stuck: do not hang with it
                    import warnings

                    warnings.warn(f"jitort cache: {exc}; compiling [{sig}] here without waiting",
                                  RuntimeWarning, stacklevel=4)
                    fd = None
                try:
                    hit = self._cache.load(key) if fd is not None else None
                    if hit is None:
                        variant, derived, info = self._build(sig, key, pre)
                        variant.first_run = threading.Event()
                        image = getattr(self.backend, "kernel_image", None)  # made after the first run
                        kernels = (lambda plan=variant.plan: image(plan)) if image else None
                        self._cache.save_async(variant.key, variant.bound, derived, info, fd,
                                               variant.first_run, kernels)
                        fd = None  # the saving thread releases it after the first run
                        return variant
                finally:
                    if fd is not None:
                        from .cache.fs import release_lock

                        release_lock(fd)
            self.stats.cache_hits += 1
            bound, derived = hit["bound"], hit["derived"]
            extra = {"kernels": hit["kernels"]} if hit.get("kernels") else {}
            return _Variant(sig, bound, self.backend.build_plan(bound, derived=derived, **extra), None, key=key)
        except JitortError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise JitortError(f"building a plan for [{sig}] failed: {type(exc).__name__}: {exc}") from exc

    def _optimize(self, sig: Signature, tune: bool = False):
        """Bind and optimize for ``sig``; with ``tune``, also tune its kernels (the winners go to
        the tuning database, which later plans read)."""
        from .passes.pipeline import optimize

        result = optimize(bind(self.graph, dict(sig.entries)), self.opt_level)
        self.stats.optimized += 1
        if tune and getattr(self.backend, "name", "") == "cpu":
            from .tune import tune_bound

            tune_bound(result.bound, self.backend.threads, self.options.get("cache_dir"))
        return result

    def _build(self, sig: Signature, key=None, result=None):
        """Optimize (unless ``result`` is given) and build the plan. With ``key``: (variant,
        derived arrays, metadata) for the disk cache (written by the caller)."""
        if result is None:
            result = self._optimize(sig, tune=bool(self.options.get("tune")))
        if key is None:
            return _Variant(sig, result.bound, self.backend.build_plan(result.bound), result)
        derived: dict = {}
        t0 = time.perf_counter()
        plan = self.backend.build_plan(result.bound, derived=derived)
        src = self._source
        info = {"model": os.path.abspath(src) if isinstance(src, (str, os.PathLike)) else type(src).__name__,
                "signature": str(sig), "nodes": len(result.bound.graph.nodes),
                "build_s": round(time.perf_counter() - t0, 3)}
        if hasattr(plan, "kernel_counts"):
            info["kernels"] = plan.kernel_counts()
        if getattr(plan, "kernel_modules", None):  # generated sources, shared by entries in kernels/
            info["kernel_modules"] = sorted(plan.kernel_modules)
        return _Variant(sig, result.bound, plan, result, key=key), derived, info

    def _tuning_fingerprint(self) -> str:
        try:
            from .tuning_db import tuning_fingerprint
        except ImportError:
            return ""
        return tuning_fingerprint(self.options.get("cache_dir"))

    def signatures(self) -> list[Signature]:
        return list(self._variants)

    def bound_graph(self, sig: Signature) -> BoundGraph:
        """The (optimized) graph run for ``sig`` and the types of its values."""
        return self._variants[sig].bound

    def optimization(self, sig: Signature) -> OptimizeResult:
        """What the optimizer did for ``sig``: per-pass hits, near misses, node counts. A variant
        loaded from the disk cache did not run the optimizer: it runs here, on demand."""
        v = self._variants[sig]
        if v.optimized is None:
            from .passes.pipeline import optimize

            v.optimized = optimize(bind(self.graph, dict(sig.entries)), self.opt_level)
        return v.optimized

    def __repr__(self) -> str:
        return (f"<jitort model {self.interface.name!r}: inputs={self.input_names} "
                f"outputs={self.output_names}, {len(self._variants)} compiled signature(s)>")


def _slow_key(v: Any):
    if isinstance(v, list):
        return ("seq",) + tuple((x.dtype, x.shape) if isinstance(x, np.ndarray) else _slow_key(x) for x in v)
    if v is None:
        return ("none",)
    return (type(v).__name__,)
