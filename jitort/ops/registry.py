"""The op registry: (domain, op_type, since_version) -> reference kernel and type inference.

A kernel is a plain function over NumPy arrays, registered with ``@op``::

    @op("LeakyRelu", since=6)
    def leaky_relu(x, *, alpha=0.01):
        return np.where(x >= 0, x, x * x.dtype.type(alpha))

Inputs arrive positionally (a missing optional input is ``None``; trailing missing ones are
omitted), attributes as keyword arguments named as in the ONNX schema (a Python keyword gets a
trailing underscore: ``lambda`` -> ``lambda_``). A kernel whose first parameter is named ``ctx``
also receives a :class:`KernelContext` (number of requested outputs, opset, subgraph runner,
random generator). A kernel returns one array or a tuple/list of outputs.

Lookup picks, for a node of a model importing ``domain`` at version V, the entry with the largest
``since <= V``. ``infer`` (optional) maps input types to output types; without one the binder
falls back to ONNX's schema inference or constant evaluation (see ``jitort.ir.infer``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import keyword
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import UnsupportedOpError

ONNX_DOMAIN = ""
_DOMAIN_ALIASES = {"ai.onnx": ""}


def canonical_domain(domain: str) -> str:
    return _DOMAIN_ALIASES.get(domain, domain)


@dataclass
class OpDef:
    domain: str
    name: str
    since: int
    kernel: Callable
    infer: Callable | None = None

    # What the kernel's signature says, read at first use: inspect.signature over the ~360
    # registrations is half of importing every op family (6 ms of a process that needs one).
    @functools.cached_property
    def _signature(self) -> tuple[bool, frozenset, bool]:
        params = list(inspect.signature(self.kernel).parameters.values())
        wants_ctx = bool(params) and params[0].name == "ctx"
        attrs = frozenset(p.name for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY)
        var_kw = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)
        return wants_ctx, attrs, var_kw

    @property
    def wants_ctx(self) -> bool:
        """The kernel's first parameter is ``ctx`` (it receives a KernelContext)."""
        return self._signature[0]

    @property
    def params(self) -> frozenset:
        """The attribute names the kernel accepts (its keyword-only parameters)."""
        return self._signature[1]

    @property
    def var_kw(self) -> bool:
        """The kernel takes ``**kwargs`` (any attribute)."""
        return self._signature[2]

    def __repr__(self) -> str:
        return f"OpDef({self.domain or 'ai.onnx'}::{self.name}-{self.since})"


@dataclass
class KernelContext:
    """What a kernel may need beyond its inputs and attributes."""

    num_outputs: int = 1
    opset: int = 0
    node_name: str = ""
    run_graph: Callable | None = None  # run_graph(graph, inputs: list, outer: dict) -> list
    outer: dict | None = None  # values visible to subgraphs (outer scope)
    rng: np.random.Generator | None = None
    output_dtypes: list | None = None  # inferred output dtypes when known

    def random(self) -> np.random.Generator:
        if self.rng is None:
            self.rng = np.random.default_rng()
        return self.rng


_REGISTRY: dict[tuple[str, str], list[OpDef]] = {}


def op(name: str, since: int = 1, domain: str = ONNX_DOMAIN, infer: Callable | None = None):
    """Register a reference kernel for ``domain::name`` valid from opset ``since``."""

    def deco(fn: Callable) -> Callable:
        entry = OpDef(canonical_domain(domain), name, since, fn, infer)
        versions = _REGISTRY.setdefault((entry.domain, name), [])
        versions[:] = [v for v in versions if v.since != since] + [entry]
        versions.sort(key=lambda v: v.since)
        return fn

    return deco


def register_infer(name: str, since: int = 1, domain: str = ONNX_DOMAIN):
    """Attach a type/shape inference function to an already registered kernel."""

    def deco(fn: Callable) -> Callable:
        for v in _REGISTRY[(canonical_domain(domain), name)]:
            if v.since == since:
                v.infer = fn
                return fn
        raise KeyError(f"{domain}::{name}-{since} is not registered")

    return deco


def lookup(name: str, domain: str, version: int, node_name: str = "") -> OpDef:
    """The kernel for a node; raises UnsupportedOpError naming the op and what exists."""
    entry = find(name, domain, version)
    if entry is None:
        dom = canonical_domain(domain)
        raise UnsupportedOpError(name, dom, version, node_name, registered_ops(dom))
    return entry


def find(name: str, domain: str, version: int) -> OpDef | None:
    key = (canonical_domain(domain), name)
    if not _LOADED and key not in _FOUND:
        _load_for(key)
    versions = _REGISTRY.get(key)
    if not versions:
        return None
    best = None
    for v in versions:
        if v.since <= version:
            best = v
    return best


def registered_ops(domain: str | None = None) -> list[str]:
    _ensure_loaded()
    return sorted({n for (d, n) in _REGISTRY if domain is None or d == canonical_domain(domain)})


def all_defs() -> list[OpDef]:
    _ensure_loaded()
    return [v for versions in _REGISTRY.values() for v in versions]


def attr_kwargs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attribute names as Python keyword arguments."""
    return {(k + "_" if keyword.iskeyword(k) else k): v for k, v in attrs.items()}


def call(entry: OpDef, inputs: list, attrs: dict[str, Any], ctx: KernelContext | None = None) -> list:
    """Run one kernel; normalizes the result to a list of outputs."""
    kwargs = attr_kwargs(attrs)
    if not entry.var_kw:
        unknown = set(kwargs) - entry.params
        if unknown:
            raise TypeError(
                f"{entry!r} does not understand attribute(s) {sorted(unknown)}; "
                f"it accepts {sorted(entry.params)}"
            )
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    if entry.wants_ctx:
        out = entry.kernel(ctx or KernelContext(), *inputs, **kwargs)
    else:
        out = entry.kernel(*inputs, **kwargs)
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


_LOADED = False
_FOUND: set = set()  # (domain, op) whose family modules are imported


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import load_all  # noqa: F401  (imports every family module)


def _load_for(key: tuple[str, str]) -> None:
    """Import the family modules of one op (op_index.py), or all of them for an op it lacks."""
    from .op_index import MODULES

    mods = MODULES.get(key)
    if mods is None:
        _ensure_loaded()
        return
    for m in mods:
        importlib.import_module(f"{__package__}.{m}")
    _FOUND.add(key)


@dataclass
class InferContext:
    """Passed to ``infer(ctx, *input_types, **attrs) -> list[ValueType]``.

    ``consts[i]`` is input i's value when it is known at bind time (an initializer, a Constant,
    or folded from shapes), else None; use it for shape-carrying inputs (Reshape's shape, ...).
    """

    num_outputs: int = 1
    opset: int = 0
    node_name: str = ""
    consts: list = field(default_factory=list)

    def const(self, i: int):
        return self.consts[i] if i < len(self.consts) else None
