"""Export of jitort-domain (fused) nodes as ONNX functions, so that onnx.checker and onnxruntime
can load an optimized graph: a correctness check in its own right.

Each fused op registers a body builder with ``@onnx_body("FusedConv")``: ``fn(node) -> list of
NodeProto`` over formal names ``x0, x1, ...`` (the node's inputs by position) and ``y0, y1, ...``
(its outputs). Every exported node gets its own function (attributes are baked into its body).
"""

from __future__ import annotations

from typing import Callable

from ..lazy import onnx, onnx_helper as helper
from .graph import Graph, Model, Node

JITORT_DOMAIN = "jitort"
FUNCTION_DOMAIN = "jitort.fn"
BODY_OPSET = 23

_BODIES: dict[str, Callable[[Node], list]] = {}


def onnx_body(op_type: str):
    def deco(fn):
        _BODIES[op_type] = fn
        return fn

    return deco


def body_for(op_type: str) -> Callable[[Node], list]:
    """The ONNX body builder of jitort::op_type (KeyError if it has none)."""
    has_body(op_type)
    return _BODIES[op_type]


def has_body(op_type: str) -> bool:
    from ..ops import registry

    registry.all_defs()  # fused op modules register their bodies on import
    return op_type in _BODIES


def export_optimized(graph: Graph, base: Model | None = None, types: dict | None = None) -> onnx.ModelProto:
    """A ModelProto of ``graph`` where each jitort-domain node calls a generated ONNX function.

    ``types`` (a BoundGraph's) gives the graph's inputs and outputs the Signature's concrete
    types: an optimized graph is specialized to them, and onnx.checker wants typed outputs.
    """
    from .graph import ValueInfo
    from .onnx_export import export_model

    g = _rewrite(graph, functions := [])
    if types:
        g.inputs = [ValueInfo(v.name, types.get(v.name, v.type), v.doc) for v in g.inputs]
        g.outputs = [ValueInfo(v.name, types.get(v.name, v.type), v.doc) for v in g.outputs]
    model = Model(g) if base is None else Model(g, base.ir_version, base.producer_name,
                                                base.producer_version, base.domain,
                                                base.model_version, base.doc, dict(base.metadata))
    g.opsets = {**{d: v for d, v in graph.opsets.items() if d != JITORT_DOMAIN},
                FUNCTION_DOMAIN: 1}
    g.opsets[""] = max(g.opsets.get("", BODY_OPSET), BODY_OPSET) if functions else g.opsets.get("", BODY_OPSET)
    m = export_model(model, ir_version=max(model.ir_version or 0, 10))
    m.functions.extend(functions)
    return m


def _rewrite(graph: Graph, functions: list) -> Graph:
    from ..passes.pipeline import copy_graph

    g = copy_graph(graph)
    for k, node in enumerate(g.nodes):
        if node.domain != JITORT_DOMAIN:
            for sub in node.subgraphs():
                _rewrite_in_place(sub, functions)
            continue
        functions.append(_function_for(node, k))
        node.op_type, node.domain, node.attrs = functions[-1].name, FUNCTION_DOMAIN, {}
    return g


def _rewrite_in_place(g: Graph, functions: list) -> None:
    for k, node in enumerate(g.nodes):
        if node.domain == JITORT_DOMAIN:
            functions.append(_function_for(node, 1000 * len(functions) + k))
            node.op_type, node.domain, node.attrs = functions[-1].name, FUNCTION_DOMAIN, {}


def _function_for(node: Node, k: int) -> onnx.FunctionProto:
    if not has_body(node.op_type):
        raise NotImplementedError(f"no ONNX function body for jitort::{node.op_type}")
    body = _BODIES[node.op_type](node)
    n_in = len(node.inputs)
    while n_in and not node.inputs[n_in - 1]:
        n_in -= 1
    inputs = [f"x{i}" for i in range(n_in)]  # a missing middle input is passed as "" by the call
    outputs = [f"y{i}" for i in range(len(node.outputs))]
    return helper.make_function(
        FUNCTION_DOMAIN, f"{node.op_type}_{k}", inputs, outputs, body,
        [helper.make_opsetid("", BODY_OPSET), helper.make_opsetid("com.microsoft", 1)],
    )
