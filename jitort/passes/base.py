"""What every optimization pass shares: its registration, its context, its counters.

A pass is ``fn(graph, ctx) -> bool`` (True when it changed the graph), registered with
``@graph_pass(name, level=...)``. Passes are idempotent: a second run changes nothing. Each
counts its rewrites with ``ctx.hit(name)`` and reports a pattern that nearly matched with
``ctx.near_miss(pattern, node, reason)``; tests and ``jitort inspect`` read both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..ir.graph import Graph
from ..ir.types import ValueType

NONE, BASIC, EXTENDED, LAYOUT = 0, 1, 2, 3
LEVEL_NAMES = {NONE: "none", BASIC: "basic", EXTENDED: "extended", LAYOUT: "layout"}


@dataclass
class NearMiss:
    pattern: str
    node: str  # name (or op_type) of the node where the pattern was anchored
    reason: str

    def __str__(self) -> str:
        return f"{self.pattern} at {self.node}: {self.reason}"


@dataclass
class PassContext:
    """Per-optimization state: types and constants of the Signature, counters, near misses."""

    types: dict[str, ValueType] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    level: int = EXTENDED
    #: Graph inputs fed by the Signature; an initializer-backed input not in here is constant.
    fed: frozenset = frozenset()
    #: Largest constant (in elements) constant folding may create.
    fold_limit: int = 1 << 20
    hits: Counter = field(default_factory=Counter)
    near_misses: list[NearMiss] = field(default_factory=list)
    _names: Counter = field(default_factory=Counter)

    def hit(self, name: str, n: int = 1) -> None:
        self.hits[name] += n

    def near_miss(self, pattern: str, node, reason: str) -> None:
        label = getattr(node, "name", "") or getattr(node, "op_type", str(node))
        miss = NearMiss(pattern, label, reason)
        if miss not in self.near_misses:
            self.near_misses.append(miss)

    def fresh(self, graph: Graph, prefix: str) -> str:
        """A value or node name not used anywhere in ``graph``."""
        used = _all_names(graph)
        while True:
            self._names[prefix] += 1
            name = f"{prefix}__{self._names[prefix]}"
            if name not in used:
                return name


def _all_names(graph: Graph) -> set[str]:
    names = set(graph.initializers) | set(graph.input_names) | set(graph.output_names)
    for n in graph.walk():
        names.update(n.inputs)
        names.update(n.outputs)
        names.add(n.name)
    return names


@dataclass
class PassDef:
    name: str
    level: int
    fn: Callable[[Graph, PassContext], bool]
    order: int


_PASSES: list[PassDef] = []


def graph_pass(name: str, level: int, order: int = 100):
    """Register ``fn(graph, ctx) -> bool`` as pass ``name`` of ``level`` (lower order runs first)."""

    def deco(fn):
        _PASSES[:] = [p for p in _PASSES if p.name != name]
        _PASSES.append(PassDef(name, level, fn, order))
        return fn

    return deco


def registered_passes(level: int | None = None) -> list[PassDef]:
    from . import load_all  # noqa: F401  (imports every pass module)

    return sorted((p for p in _PASSES if level is None or p.level == level),
                  key=lambda p: (p.level, p.order, p.name))
