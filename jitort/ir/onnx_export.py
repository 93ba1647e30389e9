"""jitort IR -> ONNX ModelProto (valid for onnx.checker)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from .. import dtypes
from .graph import Graph, Model, Node
from .types import MapType, OptionalType, SequenceType, TensorType, ValueType


def tensor_proto(name: str, arr: np.ndarray) -> TensorProto:
    arr = np.asarray(arr)
    if arr.dtype.kind in "OUS":
        t = helper.make_tensor(name, TensorProto.STRING, arr.shape,
                               [v.encode() if isinstance(v, str) else bytes(v) for v in arr.reshape(-1)])
        return t
    return numpy_helper.from_array(arr, name)


def type_proto(t: ValueType) -> onnx.TypeProto:
    if isinstance(t, TensorType):
        elem = dtypes.onnx_code(t.dtype) if t.dtype is not None else 0
        shape = None if t.shape is None else [d if d is not None else None for d in t.shape]
        return helper.make_tensor_type_proto(elem, shape)
    if isinstance(t, SequenceType):
        return helper.make_sequence_type_proto(type_proto(t.elem))
    if isinstance(t, OptionalType):
        return helper.make_optional_type_proto(type_proto(t.elem))
    if isinstance(t, MapType):
        return helper.make_map_type_proto(dtypes.onnx_code(t.key), type_proto(t.value))
    return onnx.TypeProto()


def _attribute(name: str, v) -> AttributeProto:
    if isinstance(v, Graph):
        return helper.make_attribute(name, graph_proto(v))
    if isinstance(v, np.ndarray):
        return helper.make_attribute(name, tensor_proto("", v))
    if isinstance(v, onnx.TypeProto):
        return helper.make_attribute(name, v)
    if isinstance(v, list):
        if not v:
            return helper.make_attribute(name, [], attr_type=AttributeProto.INTS)
        if isinstance(v[0], Graph):
            return helper.make_attribute(name, [graph_proto(g) for g in v])
        if isinstance(v[0], np.ndarray):
            return helper.make_attribute(name, [tensor_proto("", t) for t in v])
        if any(isinstance(x, float) for x in v):
            return helper.make_attribute(name, [float(x) for x in v])
    return helper.make_attribute(name, v)


def node_proto(n: Node) -> onnx.NodeProto:
    p = helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name or None, domain=n.domain or None)
    p.attribute.extend(_attribute(k, v) for k, v in n.attrs.items())
    return p


def graph_proto(g: Graph) -> onnx.GraphProto:
    def vi(v):
        return helper.make_value_info(v.name, type_proto(v.type if v.type is not None else g.types.get(v.name)))

    inputs = [vi(v) for v in g.inputs]
    outputs = [vi(v) for v in g.outputs]
    inits = [tensor_proto(name, arr) for name, arr in g.initializers.items()]
    io = set(g.input_names) | set(g.output_names) | set(g.initializers)
    value_info = [
        helper.make_value_info(name, type_proto(t)) for name, t in g.types.items()
        if name not in io and t is not None
    ]
    gp = helper.make_graph([node_proto(n) for n in g.nodes], g.name, inputs, outputs, inits,
                           doc_string=g.doc or None, value_info=value_info)
    return gp


def export_model(model: Model | Graph, ir_version: int | None = None) -> onnx.ModelProto:
    """A ModelProto for ``model``; opset imports come from the graph."""
    if isinstance(model, Graph):
        model = Model(model)
    g = model.graph
    opsets = dict(g.opsets) or {"": onnx.defs.onnx_opset_version()}
    for n in g.walk():
        if n.domain not in opsets:
            opsets[n.domain] = 1
    m = helper.make_model(
        graph_proto(g),
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
        producer_name=model.producer_name or "jitort",
    )
    if model.producer_version:
        m.producer_version = model.producer_version
    if model.doc:
        m.doc_string = model.doc
    m.ir_version = ir_version or max(model.ir_version, 3)
    if model.domain:
        m.domain = model.domain
    if model.model_version is not None:
        m.model_version = model.model_version
    for k, v in model.metadata.items():
        m.metadata_props.add(key=k, value=v)
    return m
