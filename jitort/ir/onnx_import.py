"""ONNX ModelProto -> jitort IR.

Handles paths, bytes and ModelProtos; external data; opset imports per domain; nested subgraphs;
model-local functions (inlined); sparse initializers (densified); IR<4 style graph inputs that
carry an initializer (they become optional inputs with a default).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import GraphProto, ModelProto, TypeProto

from .. import dtypes
from ..errors import ModelLoadError
from ..ops.attrs import attribute_value, sparse_value, tensor_value
from .functions import inline_function
from .graph import Graph, Model, Node, ValueInfo, rename_free
from .types import MapType, OptionalType, SequenceType, TensorType, ValueType


def read_model_proto(source, files: list | None = None) -> ModelProto:
    """Parse ``source`` (path, bytes or ModelProto) with clear errors for every failure. With
    ``files`` (a list), what was read is appended to it as ``(path, sha256 or None, stat
    signature or None)``: the model file (hashed as read), then each external data file (what a
    cache key must hash)."""
    if isinstance(source, ModelProto):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse(bytes(source), "<bytes>", None)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ModelLoadError(f"model file not found: {str(path)!r}")
        if path.is_dir():
            raise ModelLoadError(f"model path is a directory, expected an .onnx file: {str(path)!r}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read model file {str(path)!r}: {exc}") from exc
        if files is not None:  # the digest of exactly the bytes parsed, and the file's stat before
            import hashlib

            files.append((str(path), hashlib.sha256(data).hexdigest(), _stat_sig(path)))
        return _parse(data, str(path), path.parent, files)
    raise ModelLoadError(
        f"expected a path, bytes or onnx.ModelProto, got {type(source).__name__}")


def _stat_sig(path) -> list:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _parse(data: bytes, label: str, base_dir: Path | None, files: list | None = None) -> ModelProto:
    if not data:
        raise ModelLoadError(f"{label} is empty, not an ONNX model")
    m = ModelProto()
    try:
        m.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelLoadError(
            f"{label} is not a valid ONNX model (truncated or not a protobuf): {exc}") from exc
    if not m.HasField("graph") or (m.ir_version == 0 and not m.opset_import):
        raise ModelLoadError(f"{label} does not contain an ONNX model (no graph / ir_version)")
    if _uses_external_data(m.graph):
        if base_dir is None:
            raise ModelLoadError(
                f"{label} stores tensors in external files; load it from its path so they can be found")
        if files is not None:  # onnx reads these itself: hashed by the caller
            files.extend((f, None, None) for f in sorted({str(base_dir / t.location)
                                                           for t in _external_tensors(m.graph)}))
        try:
            onnx.external_data_helper.load_external_data_for_model(m, str(base_dir))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot load external data of {label}: {exc}") from exc
    return m


def _external_tensors(g: GraphProto):
    """(location of) every tensor of ``g`` and its subgraphs stored in an external file."""
    from onnx.external_data_helper import ExternalDataInfo

    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            yield ExternalDataInfo(t)
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == onnx.TensorProto.EXTERNAL:
                yield ExternalDataInfo(a.t)
            if a.g.node:
                yield from _external_tensors(a.g)


def _uses_external_data(g: GraphProto) -> bool:
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            return True
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == onnx.TensorProto.EXTERNAL:
                return True
            if a.g.node and _uses_external_data(a.g):
                return True
    return False


def value_type(tp: TypeProto) -> ValueType:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type" or kind == "sparse_tensor_type":
        tt = getattr(tp, kind)
        dt = dtypes.ONNX_TO_NP.get(tt.elem_type) if tt.elem_type else None
        if not tt.HasField("shape"):
            return TensorType(dt, None)
        dims = []
        for d in tt.shape.dim:
            k = d.WhichOneof("value")
            dims.append(int(d.dim_value) if k == "dim_value" else (d.dim_param or None) if k == "dim_param" else None)
        return TensorType(dt, tuple(dims))
    if kind == "sequence_type":
        return SequenceType(value_type(tp.sequence_type.elem_type))
    if kind == "optional_type":
        return OptionalType(value_type(tp.optional_type.elem_type))
    if kind == "map_type":
        return MapType(dtypes.ONNX_TO_NP.get(tp.map_type.key_type), value_type(tp.map_type.value_type))
    return None


class _Importer:
    def __init__(self, model: ModelProto):
        self.functions = {(f.domain, f.name, getattr(f, "overload", "")): f for f in model.functions}
        self.opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}

    def graph(self, gp: GraphProto, rename: dict | None = None, tag: str | None = None) -> Graph:
        g = Graph(name=gp.name or "graph", doc=gp.doc_string, opsets=dict(self.opsets))
        for t in gp.initializer:
            g.initializers[t.name] = tensor_value(t)
        for sp in gp.sparse_initializer:
            g.initializers[sp.values.name] = sparse_value(sp)
        for vi in gp.input:
            g.inputs.append(ValueInfo(vi.name, value_type(vi.type), vi.doc_string))
            g.types[vi.name] = g.inputs[-1].type
        for vi in gp.output:
            g.outputs.append(ValueInfo(vi.name, value_type(vi.type), vi.doc_string))
        for n in gp.node:
            g.nodes.extend(self.node(n))
        if rename:
            rename_free(g, rename)
        return g

    def node(self, n) -> list[Node]:
        domain = "" if n.domain == "ai.onnx" else n.domain
        fn = self.functions.get((n.domain, n.op_type, getattr(n, "overload", "")))
        if fn is not None:
            nodes, fn_opsets = inline_function(fn, n, self.graph)
            out = []
            for sub in nodes:
                out.extend(self._expand_local(sub, fn_opsets))
            return out
        attrs = {a.name: attribute_value(a, self.graph) for a in n.attribute}
        return [Node(n.op_type, list(n.input), list(n.output), attrs, domain, n.name)]

    def _expand_local(self, node: Node, fn_opsets: dict) -> list[Node]:
        """A body node of an inlined function: pin its opset when the function's differs."""
        v = fn_opsets.get(node.domain)
        if v is not None and v != self.opsets.get(node.domain):
            node.opset = v
        key = (node.domain, node.op_type, "")
        if key in self.functions:  # nested local function: re-run through node()
            proto = _node_proto(node)
            return self.node(proto)
        return [node]


def _node_proto(node: Node):
    from .onnx_export import node_proto  # local import: export depends on nothing here

    return node_proto(node)


def import_model(source, files: list | None = None) -> Model:
    """Load ``source`` (path, bytes or ModelProto) into a :class:`Model` (``files``: see
    :func:`read_model_proto`)."""
    proto = read_model_proto(source, files)
    try:
        g = _Importer(proto).graph(proto.graph)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed proto deep inside
        raise ModelLoadError(f"malformed ONNX model: {type(exc).__name__}: {exc}") from exc
    if "" not in g.opsets and proto.ir_version and proto.ir_version < 3:
        g.opsets[""] = 1
    return Model(
        graph=g,
        ir_version=proto.ir_version,
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        domain=proto.domain,
        model_version=proto.model_version if proto.HasField("model_version") else None,
        doc=proto.doc_string,
        metadata={p.key: p.value for p in proto.metadata_props},
    )
