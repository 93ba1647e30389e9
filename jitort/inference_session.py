"""``jitort.InferenceSession``: a drop-in for ``onnxruntime.InferenceSession``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import InputError, closest
from .inputs import type_str
from .ir.types import TensorType
from .session import CompiledModel


class GraphOptimizationLevel(enum.IntEnum):
    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


class SessionOptions:
    """The commonly used fields of onnxruntime's SessionOptions."""

    def __init__(self):
        self.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.execution_mode = ExecutionMode.ORT_SEQUENTIAL
        self.enable_profiling = False
        self.enable_mem_pattern = True
        self.enable_cpu_mem_arena = True
        self.log_severity_level = 2
        self.log_verbosity_level = 0
        self.logid = ""
        self.optimized_model_filepath = ""
        self.use_deterministic_compute = False
        self._config: dict[str, str] = {}

    def add_session_config_entry(self, key: str, value: str) -> None:
        self._config[key] = value

    def get_session_config_entry(self, key: str) -> str:
        return self._config[key]


@dataclass
class NodeArg:
    """Mirrors onnxruntime.NodeArg: name, shape (ints, dim names or None) and type string."""

    name: str
    shape: list = field(default_factory=list)
    type: str = ""


@dataclass
class ModelMetadata:
    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict


_PROVIDERS = {"CPUExecutionProvider": "cpu", "JitortReferenceExecutionProvider": "reference"}


class InferenceSession:
    def __init__(self, path_or_bytes, sess_options: SessionOptions | None = None,
                 providers: Sequence | None = None, provider_options=None, **kwargs):
        self._sess_options = sess_options or SessionOptions()
        names = [p[0] if isinstance(p, tuple) else p for p in (providers or ["CPUExecutionProvider"])]
        for p in names:
            if p not in _PROVIDERS and p != "CUDAExecutionProvider":
                raise ValueError(f"unknown provider {p!r}; available: {list(_PROVIDERS)}")
        self._providers = [p for p in names if p in _PROVIDERS] or ["CPUExecutionProvider"]
        level = int(self._sess_options.graph_optimization_level)
        opts = {"opt_level": None if level == GraphOptimizationLevel.ORT_ENABLE_ALL else level,
                "backend": _PROVIDERS[self._providers[0]]}
        if self._sess_options.intra_op_num_threads:
            opts["num_threads"] = self._sess_options.intra_op_num_threads
        self._model = CompiledModel(path_or_bytes, **opts)

    # -- onnxruntime's surface ---------------------------------------------------------------
    def run(self, output_names, input_feed: dict[str, Any], run_options=None) -> list:
        outs = self._model.run_feeds(dict(input_feed))
        if not output_names:
            return list(outs)
        all_names = self._model.output_names
        idx = []
        for n in output_names:
            if n not in all_names:
                raise InputError(f"unknown output {n!r}{closest(n, all_names)}; outputs are {all_names}")
            idx.append(all_names.index(n))
        return [outs[i] for i in idx]

    def get_inputs(self) -> list[NodeArg]:
        g = self._model.interface
        return [_node_arg(v) for v in g.inputs if v.name not in g.initializers]

    def get_overridable_initializers(self) -> list[NodeArg]:
        g = self._model.interface
        return [_node_arg(v) for v in g.inputs if v.name in g.initializers]

    def get_outputs(self) -> list[NodeArg]:
        return [_node_arg(v) for v in self._model.interface.outputs]

    def get_modelmeta(self) -> ModelMetadata:
        m = self._model.ir
        version = m.model_version if m.model_version is not None else 2**63 - 1  # as onnxruntime
        return ModelMetadata(m.producer_name, m.graph.name, m.domain, m.doc, m.graph.doc,
                             version, dict(m.metadata))

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def get_provider_options(self) -> dict:
        return {p: {} for p in self._providers}

    def get_session_options(self) -> SessionOptions:
        return self._sess_options

    @property
    def model(self) -> CompiledModel:
        return self._model


def _node_arg(v) -> NodeArg:
    t = v.type
    shape = list(t.shape) if isinstance(t, TensorType) and t.shape is not None else []
    return NodeArg(v.name, shape, type_str(t))
