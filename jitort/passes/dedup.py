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
    for same_shape in groups.values():
        if len(same_shape) < 2:
            continue
        by_sample: dict[bytes, list[str]] = {}  # a cheap fingerprint first: weights rarely collide
        for name in same_shape:
            by_sample.setdefault(_sample(graph.initializers[name]), []).append(name)
        for names in by_sample.values():
            if len(names) > 1:
                _dedup_group(graph, names, mapping)
    if not mapping:
        return False
    rename_reads(graph, mapping)
    for name in mapping:
        del graph.initializers[name]
    ctx.hit(NAME, len(mapping))
    return True


def _dedup_group(graph: Graph, names: list[str], mapping: dict[str, str]) -> None:
    first: dict[bytes, str] = {}
    for name in names:
        key = _digest(graph.initializers[name])
        keep = first.setdefault(key, name)
        if keep != name and np.array_equal(_bytes(graph.initializers[keep]), _bytes(graph.initializers[name])):
            mapping[name] = keep


def _bytes(a: np.ndarray) -> np.ndarray:
    return np.frombuffer(np.ascontiguousarray(a).tobytes(), dtype=np.uint8)


def _sample(a: np.ndarray) -> bytes:
    """A digest of at most 1024 evenly spaced elements (equal arrays have equal samples)."""
    flat = a.reshape(-1)
    step = max(1, flat.size // 1024)
    return hashlib.blake2b(np.ascontiguousarray(flat[::step]).data, digest_size=16).digest()


def _digest(a: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(a).data, digest_size=16).digest()
