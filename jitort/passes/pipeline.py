"""The ordered pass levels and the driver that runs them on one bound graph.

    level 0 none      nothing
    level 1 basic     constant and shape folding, dead code, CSE, no-op elimination, chains
    level 2 extended  + fusions into jitort-domain nodes (conv, matmul, norms, GELU, attention,
                        elementwise regions)
    level 3 layout    + NCHW -> NHWC for CPU convolution chains

A level includes the ones below it. The passes of all included levels run sorted by their
``order`` (so the layout pass, order 800, runs before elementwise regions, order 900), repeatedly,
until none changes the graph (at most ``MAX_ROUNDS``).
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
    nodes_before: int | None = None  # whole graph, right before the pass first ran
    nodes_after: int | None = None  # whole graph, right after that first run
    delta: int = 0  # node-count change summed over every round the pass ran in


@dataclass
class OptimizeResult:
    graph: Graph
    bound: BoundGraph
    level: int
    passes: list[PassReport] = field(default_factory=list)
    near_misses: list[NearMiss] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    rounds: int = 0

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
    passes = sorted((p for lv in range(1, level + 1) for p in registered_passes(lv)), key=lambda p: p.order)
    fed_types = {n: bound.types[n] for n in bound.fed}
    reports = {p.name: PassReport(p.name, p.level) for p in passes}
    for _ in range(MAX_ROUNDS):
        result.rounds += 1
        changed = False
        for p in passes:
            before = len(graph.nodes)
            changed |= bool(p.fn(graph, ctx))
            rep = reports[p.name]
            if rep.nodes_before is None:
                rep.nodes_before, rep.nodes_after = before, len(graph.nodes)
            rep.delta += len(graph.nodes) - before
        if not changed:
            break
        # re-bind so later passes see types of the values earlier ones created
        rebound = bind(graph, fed_types)
        ctx.types, ctx.consts = dict(rebound.types), dict(rebound.consts)
    for p in passes:
        reports[p.name].hits = ctx.hits[p.name]
    result.passes = list(reports.values())
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
