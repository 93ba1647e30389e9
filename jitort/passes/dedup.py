"""Identical initializers merged: same dtype, same shape, same bytes -> one tensor.

    w1 = [0.5, 1, 2] (init) ──▶ [Mul] ◀── a            w1 (init) ──▶ [Mul] ◀── a
    w2 = [0.5, 1, 2] (init) ──▶ [Mul] ◀── b     =>        └─────────▶ [Mul] ◀── b

Exporters repeat small constants (axes, shapes, scalars) once per use, and constant folding
produces many equal shape vectors; merged, they let common_subexpression merge the nodes that
read them. The first initializer (in the graph's order) is kept, readers of the others -- nodes
and subgraphs that read them as free variables -- are renamed, and the others are deleted.

Guards: an initializer that is also a graph input (an overridable default) or a graph output is
never merged; object (string) tensors are not compared.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..ir.graph import Graph, rename_reads
from .base import BASIC, PassContext, graph_pass

NAME = "initializer_dedup"


@graph_pass(NAME, level=BASIC, order=15)
def initializer_dedup(graph: Graph, ctx: PassContext) -> bool:
    fixed = set(graph.input_names) | set(graph.output_names)
    groups: dict[tuple, list[str]] = {}
    for name, arr in graph.initializers.items():
        if name in fixed or arr.dtype == object:
            continue
        groups.setdefault((arr.dtype.str, arr.shape), []).append(name)
    mapping: dict[str, str] = {}
    for names in groups.values():
        if len(names) < 2:
            continue
        first: dict[bytes, str] = {}
        for name in names:
            key = _digest(graph.initializers[name])
            keep = first.setdefault(key, name)
            if keep != name and np.array_equal(_bytes(graph.initializers[keep]), _bytes(graph.initializers[name])):
                mapping[name] = keep
    if not mapping:
        return False
    rename_reads(graph, mapping)
    for name in mapping:
        del graph.initializers[name]
    ctx.hit(NAME, len(mapping))
    return True


def _bytes(a: np.ndarray) -> np.ndarray:
    return np.frombuffer(np.ascontiguousarray(a).tobytes(), dtype=np.uint8)


def _digest(a: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(a).data, digest_size=16).digest()
