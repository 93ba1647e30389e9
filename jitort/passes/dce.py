"""Dead-code elimination: nodes whose outputs nobody reads, initializers nobody reads.

    x ──▶ [Shape] ──▶ s          (s read by no node, no subgraph, not a graph output)
    x ──▶ [Relu] ──▶ y (output)             =>       x ──▶ [Relu] ──▶ y (output)
    w_old (init, unread)                             (w_old deleted)

A backward sweep from the graph outputs marks what is live: a node is live when one of its
outputs is; a live node makes its inputs live, and so do the free variables of its subgraphs
(an If/Loop/Scan body reading an outer value keeps that value's producer alive). Subgraph bodies
are swept the same way, from their own outputs. Graph inputs are never removed (they are the
Signature), nor are initializers that back a graph input (overridable defaults).

Every removed node and initializer counts one hit.
"""

from __future__ import annotations

from ..ir.graph import Graph
from .base import BASIC, PassContext, graph_pass

NAME = "dead_code"


@graph_pass(NAME, level=BASIC, order=60)
def dead_code(graph: Graph, ctx: PassContext) -> bool:
    removed = sweep(graph)
    if removed:
        ctx.hit(NAME, removed)
    return removed > 0


def sweep(graph: Graph) -> int:
    """Remove dead nodes and initializers of ``graph`` (and of its live subgraphs); how many."""
    live = {o for o in graph.output_names}
    keep = []
    removed = 0
    for node in reversed(graph.nodes):
        if not any(o and o in live for o in node.outputs):
            removed += 1
            continue
        keep.append(node)
        live.update(i for i in node.inputs if i)
        for g in node.subgraphs():
            removed += sweep(g)
            live |= g.free_names()
    keep.reverse()
    graph.nodes = keep
    inputs = set(graph.input_names)
    for name in [k for k in graph.initializers if k not in live and k not in inputs]:
        del graph.initializers[name]
        removed += 1
    return removed
