"""A model's calling interface without its body: what input binding and validation need.

A warm start (a cache entry for every Signature it meets) never parses the ONNX file; the
session then validates feeds against this record, kept in the cache next to the entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ir.graph import ValueInfo


@dataclass
class ModelInterface:
    name: str
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    #: graph inputs that have an initializer (a default value): they may be left out
    initializers: frozenset = field(default_factory=frozenset)

    @classmethod
    def of(cls, model) -> "ModelInterface":
        g = model.graph
        names = {v.name for v in g.inputs}
        return cls(g.name, list(g.inputs), list(g.outputs),
                   frozenset(n for n in g.initializers if n in names))

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.outputs]

    def required_inputs(self) -> list[ValueInfo]:
        return [v for v in self.inputs if v.name not in self.initializers]
