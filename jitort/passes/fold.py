"""Constant and shape folding: every value fixed for this Signature becomes an initializer.

Two sources of "fixed":

1. constant subgraphs -- a node whose inputs are all initializers (or values folded before it)
   is evaluated once with the registry's reference kernel::

       W (init) ──▶ [Transpose] ──▶ Wt ──▶ [MatMul] ◀── x      =>     Wt (init) ──▶ [MatMul] ◀── x
       [Constant] ──▶ c ──┐
       s (init) ─────────[Mul] ──▶ cs ──▶ ...                  =>     cs (init) ──▶ ...

2. shape arithmetic -- the binder already knows the value (``ctx.consts``) of everything computed
   from input *shapes* only, since every dim is specialized::

       x (fed) ─▶ [Shape] ─▶ [Gather 0] ─▶ [Unsqueeze] ─┐
                                    (init) [-1, 64] ──[Concat] ─▶ target ─▶ [Reshape] ◀── x
                                                                 =>   target (init) ─▶ [Reshape] ◀── x

A folded value keeps its name (readers, subgraphs and graph outputs see no change); its producer
is removed, and dead_code later drops initializers nobody reads any more.

Guards (left unfolded; the reason is a near miss where one is worth reporting):
  * nondeterministic ops (Random*, Bernoulli, Multinomial, Dropout -- no_op handles inference
    Dropout) and ops with subgraphs are never evaluated;
  * only graph inputs' *shapes* may contribute, never their data: fed inputs are not constants,
    and ``ctx.consts`` holds only values the binder derived from initializers and shapes;
  * a result whose size is unknown before evaluation, or above ``ctx.fold_limit`` elements, is not
    materialized (a ConstantOfShape of 1e8 elements stays a node);
  * a kernel that fails, or returns something other than a tensor, is left to the plan.
Only the top-level graph is folded; subgraph bodies run as they are.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Graph, Node
from ..ir.types import TensorType
from ..ops import registry
from ..ops.registry import KernelContext
from .base import BASIC, PassContext, graph_pass

NAME = "constant_folding"
#: Never evaluated at compile time: the result is random (or, for Dropout, mode-dependent).
NONDETERMINISTIC = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
    "Multinomial", "Dropout",
})


@graph_pass(NAME, level=BASIC, order=10)
def constant_folding(graph: Graph, ctx: PassContext) -> bool:
    inputs = set(graph.input_names)
    known = {k: v for k, v in graph.initializers.items() if k not in inputs}
    dead: set[int] = set()
    for node in graph.nodes:
        values = _fold(node, graph, ctx, known, inputs)
        if values is None:
            continue
        for name, v in values.items():
            graph.initializers[name] = v
            known[name] = v
            ctx.types[name] = TensorType(v.dtype, v.shape)
            if v.size <= 4096:
                ctx.consts[name] = v
        dead.add(id(node))
        ctx.hit(NAME)
    if dead:
        graph.nodes = [n for n in graph.nodes if id(n) not in dead]
    return bool(dead)


# -- pattern: is every output of ``node`` fixed, and what is it? -----------------------------------
def _fold(node: Node, graph: Graph, ctx: PassContext, known: dict, inputs: set) -> dict | None:
    outs = [o for o in node.outputs if o]
    if not outs or node.op_type in NONDETERMINISTIC or any(True for _ in node.subgraphs()):
        return _report_random(node, ctx, known)
    if any(o in inputs for o in outs):
        return None
    # shape folding: the binder derived these values from initializers and input shapes
    if all(isinstance(ctx.consts.get(o), np.ndarray) for o in outs):
        return {o: _owned(ctx.consts[o]) for o in outs}
    present = [i for i in node.inputs if i]
    if any(i not in known for i in present) or (not present and node.op_type != "Constant"):
        return None
    # guard: the size of every result must be known and within the limit before evaluating
    sizes = [_static_size(ctx.types.get(o)) for o in outs]
    if any(s is None for s in sizes):
        ctx.near_miss(NAME, node, "result size unknown before evaluation")
        return None
    if sum(sizes) > ctx.fold_limit:
        ctx.near_miss(NAME, node, f"result of {sum(sizes)} elements exceeds fold_limit {ctx.fold_limit}")
        return None
    # replacement: evaluate with the reference kernel
    values = _evaluate(node, graph, [known[i] if i else None for i in node.inputs])
    if values is None:
        return None
    got = dict(zip(node.outputs, values))
    if any(not isinstance(got.get(o), np.ndarray) or got[o].size > ctx.fold_limit for o in outs):
        return None
    return {o: _owned(got[o]) for o in outs}


def _report_random(node: Node, ctx: PassContext, known: dict) -> None:
    present = [i for i in node.inputs if i]
    if node.op_type in NONDETERMINISTIC and node.op_type != "Dropout" and all(i in known for i in present):
        ctx.near_miss(NAME, node, f"{node.op_type} is nondeterministic: never folded")
    return None


def _static_size(t) -> int | None:
    if not isinstance(t, TensorType) or not t.is_static:
        return None
    return math.prod(t.shape)


def _evaluate(node: Node, graph: Graph, args: list) -> list | None:
    from ..backends.reference import node_version

    version = node_version(node, graph.opsets)
    entry = registry.find(node.op_type, node.domain, version)
    if entry is None:
        return None
    kctx = KernelContext(num_outputs=len(node.outputs), opset=version, node_name=node.name)
    try:
        with np.errstate(all="ignore"):
            return registry.call(entry, args, node.attrs, kctx)
    except Exception:  # noqa: BLE001 - left to the plan, which reports it at run time
        return None


def _owned(v) -> np.ndarray:
    """A value safe to keep as an initializer: an array that is not a view into a larger one."""
    v = np.asarray(v)
    return np.array(v) if v.base is not None else v
