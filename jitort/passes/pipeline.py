"""The ordered pass levels and the driver that runs them on one bound graph.

    level 0 none      nothing
    level 1 basic     constant and shape folding, dead code, CSE, no-op elimination, chains
    level 2 extended  + fusions into jitort-domain nodes (conv, matmul, norms, GELU, attention,
                        elementwise regions)
    level 3 layout    + NCHW -> NHWC for CPU convolution chains

Each level's passes run in order, repeatedly, until none changes the graph (at most
``MAX_ROUNDS``); a level includes the ones below it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..ir.graph import Graph
from ..ir.infer import BoundGraph, bind
from .base import EXTENDED, LEVEL_NAMES, NearMiss, PassContext, registered_passes

MAX_ROUNDS = 8


@dataclass
class PassReport:
    name: str
    level: int
    hits: int = 0


@dataclass
class OptimizeResult:
    graph: Graph
    bound: BoundGraph
    level: int
    passes: list[PassReport] = field(default_factory=list)
    near_misses: list[NearMiss] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0

    @property
    def hits(self) -> dict[str, int]:
        return {p.name: p.hits for p in self.passes}

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.graph.nodes:
            key = f"{n.domain}::{n.op_type}" if n.domain else n.op_type
            counts[key] = counts.get(key, 0) + 1
        return counts


def copy_graph(graph: Graph) -> Graph:
    """A copy passes may rewrite: nodes, lists and dicts are new; tensors are shared (read-only)."""
    memo = {id(v): v for v in graph.initializers.values()}
    return copy.deepcopy(graph, memo)


def optimize(bound: BoundGraph, level: int = EXTENDED) -> OptimizeResult:
    """Optimize ``bound.graph`` for its Signature; the input graph is left untouched."""
    n0 = len(bound.graph.nodes)
    if level <= 0:
        return OptimizeResult(bound.graph, bound, level, nodes_before=n0, nodes_after=n0)
    graph = copy_graph(bound.graph)
    result = OptimizeResult(graph, bound, level, nodes_before=n0, nodes_after=n0)
    ctx = PassContext(types=dict(bound.types), consts=dict(bound.consts), level=level, fed=bound.fed)
    passes = [p for lv in range(1, level + 1) for p in registered_passes(lv)]
    fed_types = {n: bound.types[n] for n in bound.fed}
    for _ in range(MAX_ROUNDS):
        changed = False
        for p in passes:
            changed |= bool(p.fn(graph, ctx))
        if not changed:
            break
        # re-bind so later passes see types of the values earlier ones created
        rebound = bind(graph, fed_types)
        ctx.types, ctx.consts = dict(rebound.types), dict(rebound.consts)
    result.passes = [PassReport(p.name, p.level, ctx.hits[p.name]) for p in passes]
    result.near_misses = list(ctx.near_misses)
    result.nodes_after = len(graph.nodes)
    result.bound = bind(graph, fed_types)
    return result


def describe_levels() -> str:
    lines = []
    for lv, name in LEVEL_NAMES.items():
        names = [p.name for p in registered_passes(lv)]
        lines.append(f"{lv} {name}: {', '.join(names) or '-'}")
    return "\n".join(lines)
