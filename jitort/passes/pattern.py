"""The matcher's view of a graph: producers, consumers, constants, types, safe replacement.

Every fusion uses the same few questions -- who produces this value, who else reads it, is it
a constant, what is its shape -- and the same guard (onnxruntime's ``is_safe_to_fuse_nodes``):
no intermediate of a fused region may be read outside it or be a graph output.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..ir.graph import Graph, Node, rename_reads
from ..ir.types import TensorType
from .base import PassContext


class GraphView:
    def __init__(self, graph: Graph, ctx: PassContext):
        self.graph = graph
        self.ctx = ctx
        self._producers: dict[str, Node] | None = None
        self._consumers: dict[str, list[Node]] | None = None

    # -- structure ------------------------------------------------------------------------------
    def invalidate(self) -> None:
        self._producers = self._consumers = None

    def producer(self, name: str) -> Node | None:
        if self._producers is None:
            self._producers = self.graph.producers()
        return self._producers.get(name)

    def consumers(self, name: str) -> list[Node]:
        if self._consumers is None:
            self._consumers = self.graph.consumers()
        return self._consumers.get(name, [])

    def is_output(self, name: str) -> bool:
        return name in self.graph.output_names

    def single_consumer(self, name: str) -> Node | None:
        """The one node reading ``name``, if exactly one does and it is not a graph output."""
        users = self.consumers(name)
        if len(users) == 1 and not self.is_output(name):
            return users[0]
        return None

    def producer_of(self, node: Node, i: int, op_type: str | Iterable[str]) -> Node | None:
        """The producer of ``node``'s input i if its op_type is (one of) ``op_type``."""
        if i >= len(node.inputs) or not node.inputs[i]:
            return None
        p = self.producer(node.inputs[i])
        ops = (op_type,) if isinstance(op_type, str) else tuple(op_type)
        return p if p is not None and p.op_type in ops and p.domain in ("", "ai.onnx") else None

    # -- values ---------------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is fixed for this Signature (not an overridable input)."""
        if not name:
            return None
        if name in self.graph.initializers and name not in self.ctx.fed:
            return self.graph.initializers[name]
        return self.ctx.consts.get(name)

    def scalar(self, name: str) -> float | None:
        """A constant holding exactly one element, as a Python float."""
        c = self.const(name)
        if c is None or c.size != 1 or c.dtype.kind not in "fiub":
            return None
        return float(c.reshape(-1)[0])

    def tensor_type(self, name: str) -> TensorType | None:
        t = self.ctx.types.get(name)
        return t if isinstance(t, TensorType) else None

    def shape(self, name: str) -> tuple | None:
        t = self.tensor_type(name)
        return None if t is None else t.shape

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def dtype(self, name: str):
        t = self.tensor_type(name)
        return None if t is None else t.dtype

    # -- guards ---------------------------------------------------------------------------------
    def escapes(self, region: list[Node], keep: Iterable[str]) -> str | None:
        """Why fusing ``region`` into a node producing ``keep`` is unsafe, or None if it is safe."""
        inside = {id(n) for n in region}
        keep = set(keep)
        for n in region:
            for o in n.outputs:
                if not o or o in keep:
                    continue
                if self.is_output(o):
                    return f"intermediate {o!r} is a graph output"
                for u in self.consumers(o):
                    if id(u) not in inside:
                        return f"intermediate {o!r} is also used by {u.op_type} node {u.name!r}"
        return None

    # -- rewriting ------------------------------------------------------------------------------
    def replace(self, region: list[Node], new_nodes: list[Node]) -> None:
        """Remove ``region`` and put ``new_nodes`` where its last node was (keeps topological order)."""
        ids = {id(n) for n in region}
        positions = [i for i, n in enumerate(self.graph.nodes) if id(n) in ids]
        at = max(positions) - (len(positions) - 1) if positions else len(self.graph.nodes)
        kept = [n for n in self.graph.nodes if id(n) not in ids]
        self.graph.nodes = kept[:at] + list(new_nodes) + kept[at:]
        self.invalidate()

    def remove(self, node: Node) -> None:
        self.replace([node], [])

    def redirect(self, old: str, new: str) -> bool:
        """Make every reader of ``old`` read ``new``. False (and nothing changed) when ``old`` is
        a graph output, whose name the caller sees."""
        if self.is_output(old):
            return False
        rename_reads(self.graph, {old: new})
        self.invalidate()
        return True

    def add_initializer(self, prefix: str, value: np.ndarray) -> str:
        name = self.ctx.fresh(self.graph, prefix)
        self.graph.initializers[name] = value
        self.ctx.types[name] = TensorType(value.dtype, value.shape)
        if value.size <= 4096:
            self.ctx.consts[name] = value
        return name
