"""Inlining of ONNX functions: model-local FunctionProtos and the function bodies of ONNX schemas.

An inlined call site is replaced by the function's nodes with every internal name made unique
(``<call>__<name>``), formal inputs/outputs mapped to the call's actual ones, and attribute
references (``ref_attr_name``) resolved against the call's attributes or the function defaults.
"""

from __future__ import annotations

import itertools
from typing import Callable

from ..lazy import AttributeProto, LazyObject, onnx

FunctionProto = LazyObject("onnx", "FunctionProto")

from ..ops.attrs import attribute_value
from .graph import Node

_counter = itertools.count()


def _resolve_attrs(fnode: NodeProto, call_attrs: dict, defaults: dict) -> list:
    out = []
    for a in fnode.attribute:
        if a.ref_attr_name:
            src = call_attrs.get(a.ref_attr_name, defaults.get(a.ref_attr_name))
            if src is None:
                continue  # an optional attribute the call did not set
            b = AttributeProto()
            b.CopyFrom(src)
            b.name = a.name
            out.append(b)
        else:
            out.append(a)
    return out


def inline_function(
    fn: FunctionProto,
    call: NodeProto,
    graph_fn: Callable,
    prefix: str | None = None,
    defaults: dict | None = None,
) -> tuple[list[Node], dict[str, int]]:
    """Nodes implementing ``call`` by ``fn``'s body, and the opsets the body imports.

    ``graph_fn`` converts a GraphProto attribute of a body node into an IR Graph.
    """
    tag = prefix or f"{call.name or fn.name}__f{next(_counter)}"
    rename: dict[str, str] = {"": ""}
    for formal, actual in zip(fn.input, call.input):
        rename[formal] = actual
    for formal in list(fn.input)[len(call.input):]:
        rename[formal] = ""
    for formal, actual in zip(fn.output, call.output):
        rename[formal] = actual
    call_attrs = {a.name: a for a in call.attribute}
    defaults = {**(defaults or {}), **{a.name: a for a in fn.attribute_proto}}

    def name(x: str) -> str:
        if x not in rename:
            rename[x] = f"{tag}__{x}"
        return rename[x]

    nodes = []
    for fnode in fn.node:
        attrs = _resolve_attrs(fnode, call_attrs, defaults)
        nodes.append(Node(
            op_type=fnode.op_type,
            inputs=[name(i) for i in fnode.input],
            outputs=[name(o) for o in fnode.output],
            attrs={a.name: attribute_value(a, lambda g: graph_fn(g, rename, tag)) for a in attrs},
            domain=fnode.domain if fnode.domain != "ai.onnx" else "",
            name=f"{tag}/{fnode.name or fnode.op_type}",
        ))
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in fn.opset_import}
    return nodes, opsets


def schema_defaults(op_type: str, domain: str, version: int) -> dict:
    """The schema's attribute defaults, as AttributeProtos by name."""
    try:
        schema = onnx.defs.get_schema(op_type, version, domain)
    except Exception:  # noqa: BLE001
        return {}
    return {name: a.default_value for name, a in schema.attributes.items()
            if a.default_value is not None and a.default_value.type != 0}


def schema_function(op_type: str, domain: str, version: int, node: NodeProto,
                    input_types: list | None = None) -> FunctionProto | None:
    """The FunctionProto ONNX defines for an op at this opset, if it has one."""
    try:
        schema = onnx.defs.get_schema(op_type, version, domain)
    except Exception:  # noqa: BLE001 - no such schema
        return None
    fn = None
    try:
        if schema.has_function:
            fn = schema.get_function_with_opset_version(version)
            if isinstance(fn, bytes):
                fn = FunctionProto.FromString(fn) if fn else None
            if fn is None or not fn.node:
                fn = schema.function_body if schema.function_body.node else None
        elif schema.has_context_dependent_function and input_types is not None:
            raw = schema.get_context_dependent_function_with_opset_version(
                version, node.SerializeToString(), [t.SerializeToString() for t in input_types])
            fn = FunctionProto.FromString(raw) if raw else None
    except Exception:  # noqa: BLE001 - ONNX could not build the body for these types
        return None
    if fn is None or not fn.node:
        return None
    return fn
