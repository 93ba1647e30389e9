"""Binding a graph to a Signature: the type and shape of every value for concrete inputs.

Per node, in order of preference:
1. the op's own ``infer`` from the registry;
2. constant evaluation, when every input is known and small (shape arithmetic: Shape, Gather,
   Concat, ... fold to values, so a Reshape target is known);
3. ONNX's schema inference (``onnx.shape_inference.infer_node_outputs``) given the input types
   and the small constant inputs;
4. otherwise the outputs stay unknown (``TensorType(None, None)``) -- never a guess.

Values that depend on input *data* (NonZero, TopK with a tensor k, Loop outputs) get unknown dims
(``None``) and are recomputed by the plan at every call: nothing here is frozen into a plan.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from ..lazy import onnx

from ..ops import registry
from ..ops.registry import InferContext, KernelContext
from .graph import Graph, Node
from .types import OptionalType, SequenceType, TensorType, ValueType, type_of

#: Largest constant (elements) passed to ONNX inference or produced by constant evaluation.
CONST_LIMIT = 4096
#: Ops never evaluated at bind time: their outputs are random or depend on run-time state.
_NONDETERMINISTIC = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
    "Multinomial", "Dropout",
})


@dataclass
class BoundGraph:
    """A graph with the types (and small constant values) it takes for one Signature."""

    graph: Graph
    types: dict[str, ValueType] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    fed: frozenset = frozenset()  # graph inputs the Signature feeds (others use their initializer)

    def output_types(self) -> list[ValueType]:
        return [self.types.get(n) for n in self.graph.output_names]


def bind(graph: Graph, input_types: dict[str, ValueType]) -> BoundGraph:
    """Types of every value of ``graph`` when its inputs have ``input_types``."""
    b = BoundGraph(graph, fed=frozenset(n for n in input_types if n in graph.input_names))
    for name, arr in graph.initializers.items():
        b.types[name] = TensorType(arr.dtype, arr.shape)
        if arr.size <= CONST_LIMIT:
            b.consts[name] = arr
    for v in graph.inputs:
        if v.name in input_types:
            b.types[v.name] = input_types[v.name]
            b.consts.pop(v.name, None)  # a fed input overrides its initializer default
    for node in graph.nodes:
        outs = _infer_node(node, graph.opsets, b)
        for name, t in zip(node.outputs, outs):
            if name:
                b.types[name] = t
    return b


def _infer_node(node: Node, opsets: dict, b: BoundGraph) -> list[ValueType]:
    from ..backends.reference import node_version

    version = node_version(node, opsets)
    in_types = [b.types.get(i) if i else None for i in node.inputs]
    consts = [b.consts.get(i) if i else None for i in node.inputs]
    entry = registry.find(node.op_type, node.domain, version)
    n_out = len(node.outputs)
    if entry is not None and getattr(entry.infer, "replaces_onnx", False):
        # an inference that stands in for ONNX's below (constants are still evaluated)
        return _infer_generic(node, version, opsets, in_types, consts, b, entry, n_out)
    if entry is not None and entry.infer is not None:
        try:
            ctx = InferContext(num_outputs=n_out, opset=version, node_name=node.name, consts=consts)
            out = entry.infer(ctx, *in_types, **registry.attr_kwargs(node.attrs))
            return _pad(list(out), n_out)
        except Exception:  # noqa: BLE001 - fall through to the generic paths
            pass
    shape_value = _shape_of_static(node, in_types)
    if shape_value is not None:
        if node.outputs and node.outputs[0]:
            b.consts[node.outputs[0]] = shape_value
        return _pad([type_of(shape_value)], n_out)
    return _infer_generic(node, version, opsets, in_types, consts, b, entry, n_out)


def _infer_generic(node, version, opsets, in_types, consts, b, entry, n_out) -> list[ValueType]:
    """Evaluate small constant inputs, else predict the types: ONNX's schema inference, or an
    infer marked ``replaces_onnx`` (ops/broadcast_infer.py) when the op has one."""
    if entry is not None and getattr(entry.infer, "replaces_onnx", False):
        def predict():
            try:
                ctx = InferContext(num_outputs=n_out, opset=version, node_name=node.name, consts=consts)
                return list(entry.infer(ctx, *in_types, **registry.attr_kwargs(node.attrs)))
            except Exception:  # noqa: BLE001 - ONNX's inference reports it as it would
                return _onnx_infer(node, version, opsets, in_types, consts)
    else:
        def predict():
            return _onnx_infer(node, version, opsets, in_types, consts)
    if entry is not None and _can_evaluate(node, consts):
        predicted = predict()
        if any(not _small(t) for t in predicted):
            return _pad(predicted, n_out)  # a large constant: known type, never materialized here
        values = _evaluate(entry, node, consts, version)
        if values is not None:
            for name, v in zip(node.outputs, values):
                if name and isinstance(v, np.ndarray) and v.size <= CONST_LIMIT:
                    b.consts[name] = v
            return _pad([type_of(v) for v in values], n_out)
    return _pad(predict(), n_out)


def _shape_of_static(node: Node, in_types: list) -> np.ndarray | None:
    """Shape/Size of an input whose shape the Signature fixes: a constant for this binding."""
    if node.domain or node.op_type not in ("Shape", "Size") or not in_types:
        return None
    t = in_types[0]
    if not isinstance(t, TensorType) or not t.is_static:
        return None
    if node.op_type == "Size":
        return np.array(int(np.prod(t.shape, dtype=np.int64)), dtype=np.int64)
    rank = len(t.shape)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", rank)
    start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
    return np.array(t.shape[start:end], dtype=np.int64)


def _small(t: ValueType) -> bool:
    """Whether a predicted output is static and at most CONST_LIMIT elements (unknown: no)."""
    return isinstance(t, TensorType) and t.is_static and int(np.prod(t.shape, dtype=np.int64)) <= CONST_LIMIT


def _pad(types: list, n: int) -> list:
    return (types + [TensorType(None, None)] * n)[:n]


def _can_evaluate(node: Node, consts: list) -> bool:
    if node.op_type in _NONDETERMINISTIC or any(True for _ in node.subgraphs()):
        return False
    present = [c for i, c in zip(node.inputs, consts) if i]
    if any(c is None for c in present):
        return False
    if not present and node.op_type != "Constant":
        return False
    return sum(c.size for c in present) <= CONST_LIMIT


def _evaluate(entry, node: Node, consts: list, version: int):
    ctx = KernelContext(num_outputs=len(node.outputs), opset=version, node_name=node.name)
    try:
        with np.errstate(all="ignore"):
            return registry.call(entry, list(consts), node.attrs, ctx)
    except Exception:  # noqa: BLE001 - the plan will report it at run time
        return None


def _onnx_infer(node: Node, version: int, opsets: dict, in_types: list, consts: list) -> list:
    from .onnx_export import node_proto, tensor_proto, type_proto

    try:
        schema = onnx.defs.get_schema(node.op_type, version, node.domain)
    except Exception:  # noqa: BLE001 - no ONNX schema (contrib op without infer)
        return []
    try:
        proto = node_proto(node)
        types = {}
        data = {}
        for name, t, c in zip(node.inputs, in_types, consts):
            if not name:
                continue
            types[name] = type_proto(t) if t is not None else onnx.TypeProto()
            if c is not None and c.size <= CONST_LIMIT and c.dtype != object:
                data[name] = tensor_proto(name, c)
        imports = [onnx.helper.make_opsetid(d, v) for d, v in opsets.items()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = onnx.shape_inference.infer_node_outputs(schema, proto, types, data, None, imports)
    except Exception:  # noqa: BLE001 - inference failed: leave outputs unknown
        return []
    from .onnx_import import value_type

    return [value_type(out[o]) if o in out else TensorType(None, None) for o in node.outputs]


def is_known(t: ValueType) -> bool:
    if isinstance(t, TensorType):
        return t.dtype is not None and t.shape is not None
    if isinstance(t, (SequenceType, OptionalType)):
        return is_known(t.elem)
    return False
