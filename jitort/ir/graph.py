"""jitort's graph IR: a Graph of Nodes over named values.

Values are referred to by name (as in ONNX); a Graph keeps the type it knows for each name in
``types`` and constant data in ``initializers``. Nodes are kept in topological order. Subgraphs
(If/Loop/Scan bodies) are Graphs stored in their node's ``attrs``; they may read names of the
enclosing scopes, listed by :meth:`Graph.free_names`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .types import ValueType


@dataclass
class Node:
    op_type: str
    inputs: list[str]  # "" marks a missing optional input
    outputs: list[str]  # "" marks an output nobody asked for
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    name: str = ""
    opset: int | None = None  # pins this node's domain version (body of an inlined function)

    def subgraphs(self) -> Iterator["Graph"]:
        for v in self.attrs.values():
            if isinstance(v, Graph):
                yield v
            elif isinstance(v, list):
                yield from (g for g in v if isinstance(g, Graph))

    def __repr__(self) -> str:
        dom = f"{self.domain}::" if self.domain else ""
        return f"Node({dom}{self.op_type} {self.name!r}: {self.inputs} -> {self.outputs})"


@dataclass
class ValueInfo:
    name: str
    type: ValueType = None
    doc: str = ""


@dataclass
class Graph:
    name: str = "graph"
    nodes: list[Node] = field(default_factory=list)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    types: dict[str, ValueType] = field(default_factory=dict)  # every name whose type is known
    opsets: dict[str, int] = field(default_factory=dict)  # domain ("" = ai.onnx) -> version
    doc: str = ""

    # -- queries --------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.outputs]

    def user_inputs(self) -> list[ValueInfo]:
        """Graph inputs a caller must (or may, if they have an initializer default) feed."""
        return list(self.inputs)

    def required_inputs(self) -> list[ValueInfo]:
        return [v for v in self.inputs if v.name not in self.initializers]

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        uses: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    uses.setdefault(i, []).append(n)
            for g in n.subgraphs():
                for name in g.free_names():
                    uses.setdefault(name, []).append(n)
        return uses

    def free_names(self) -> set[str]:
        """Names this graph reads but does not define: they come from an enclosing scope."""
        defined = set(self.input_names) | set(self.initializers)
        free: set[str] = set()
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in defined:
                    free.add(i)
            for g in n.subgraphs():
                free |= {x for x in g.free_names() if x not in defined}
            defined.update(o for o in n.outputs if o)
        free |= {o for o in self.output_names if o not in defined}
        return free

    def walk(self) -> Iterator[Node]:
        """Every node, including those in subgraphs (depth first)."""
        for n in self.nodes:
            yield n
            for g in n.subgraphs():
                yield from g.walk()

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}: {len(self.nodes)} nodes, inputs={self.input_names}, "
                f"outputs={self.output_names})")


def rename_free(g: Graph, mapping: dict[str, str]) -> None:
    """Inside subgraph ``g``, reads of enclosing-scope names in ``mapping`` read their targets
    (names ``g`` defines itself are left alone, at every depth)."""
    free = g.free_names()
    local = {k: v for k, v in mapping.items() if k in free}
    if not local:
        return
    for n in g.nodes:
        n.inputs = [local.get(i, i) for i in n.inputs]
        for s in n.subgraphs():
            rename_free(s, local)
    for o in g.outputs:
        o.name = local.get(o.name, o.name)


def rename_reads(graph: Graph, mapping: dict[str, str]) -> None:
    """Every read of a name in ``mapping`` (node inputs, subgraph free variables) reads its
    target. Graph outputs are not renamed: the caller must not map them."""
    if not mapping:
        return
    for n in graph.nodes:
        n.inputs = [mapping.get(i, i) for i in n.inputs]
        for g in n.subgraphs():
            rename_free(g, mapping)


@dataclass
class Model:
    """A graph plus the model-level metadata an ONNX file carries."""

    graph: Graph
    ir_version: int = 8
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int | None = None
    doc: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
