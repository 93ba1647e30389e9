"""The lazy session: a loaded model that compiles one plan per input Signature on first use.

    model = jitort.load("m.onnx")
    out = model(input_ids=ids)          # first call with these shapes/dtypes: bind + build plan
    out = model(input_ids=ids)          # same Signature: a dict lookup, then the plan runs

A Signature is the (name, dtype, shape) of every fed input. Plans never freeze data-dependent
shapes; the model's declared output shapes are not trusted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import config
from .backends import get_backend
from .errors import JitortError
from .inputs import bind_feeds, to_value, validate
from .ir.graph import Model
from .ir.infer import BoundGraph, bind
from .passes.base import EXTENDED, LAYOUT, NONE
from .passes.pipeline import OptimizeResult, optimize
from .ir.onnx_import import import_model
from .ir.types import type_of

#: The reference backend gains nothing from the layout level (its Conv is NCHW); the CPU
#: backend's convolutions are NHWC, so it defaults to the layout level.
DEFAULT_OPT_LEVEL = EXTENDED
_OPTIONS = {"backend", "opt_level", "num_threads", "seed", "cache_dir", "device"}


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
    optimized: OptimizeResult | None = None
    calls: int = 0


@dataclass
class SessionStats:
    compiles: int = 0
    calls: int = 0
    signatures: list = field(default_factory=list)


class CompiledModel:
    """What :func:`jitort.load` returns: call it like a function."""

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
        self.ir: Model = import_model(source)
        self.graph = self.ir.graph
        self.backend = get_backend(backend, seed=options.get("seed"),
                                   num_threads=options.get("num_threads"),
                                   cache_dir=options.get("cache_dir"))
        self._check_ops()
        self._fast: dict[tuple, _Variant] = {}
        self._variants: dict[Signature, _Variant] = {}
        self._lock = threading.Lock()
        self.stats = SessionStats()
        self._declared = {v.name: v.type for v in self.graph.inputs}

    @property
    def input_names(self) -> list[str]:
        return self.graph.input_names

    @property
    def output_names(self) -> list[str]:
        return self.graph.output_names

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
        feeds = bind_feeds(self.graph, args, kwargs) if args else kwargs
        return Outputs(self.run_feeds(feeds), self.graph.output_names)

    def run_feeds(self, feeds: dict[str, Any]) -> list:
        values = {k: to_value(v, self._declared.get(k)) for k, v in feeds.items()}
        key = tuple((k, v.dtype, v.shape) if isinstance(v, np.ndarray) else (k, _slow_key(v))
                    for k, v in values.items())
        variant = self._fast.get(key)
        if variant is None:
            variant = self._variant_for(key, values)
        variant.calls += 1
        self.stats.calls += 1
        return variant.plan.run(values)

    def _variant_for(self, key: tuple, values: dict) -> _Variant:
        validate(self.graph, values)
        order = {n: i for i, n in enumerate(self.graph.input_names)}
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
        try:
            bound = bind(self.graph, dict(sig.entries))
            result = optimize(bound, self.opt_level)
            return _Variant(sig, result.bound, self.backend.build_plan(result.bound), result)
        except JitortError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise JitortError(f"building a plan for [{sig}] failed: {type(exc).__name__}: {exc}") from exc

    def signatures(self) -> list[Signature]:
        return list(self._variants)

    def bound_graph(self, sig: Signature) -> BoundGraph:
        """The (optimized) graph run for ``sig`` and the types of its values."""
        return self._variants[sig].bound

    def optimization(self, sig: Signature) -> OptimizeResult | None:
        """What the optimizer did for ``sig``: per-pass hits, near misses, node counts."""
        return self._variants[sig].optimized

    def __repr__(self) -> str:
        return (f"<jitort model {self.graph.name!r}: inputs={self.input_names} "
                f"outputs={self.output_names}, {len(self._variants)} compiled signature(s)>")


def _slow_key(v: Any):
    if isinstance(v, list):
        return ("seq",) + tuple((x.dtype, x.shape) if isinstance(x, np.ndarray) else _slow_key(x) for x in v)
    if v is None:
        return ("none",)
    return (type(v).__name__,)
