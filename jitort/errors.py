"""The jitort error hierarchy. Every user-facing failure is one of these."""

from __future__ import annotations

import difflib


class JitortError(Exception):
    """Base class of every error jitort raises on purpose."""


class ModelLoadError(JitortError):
    """The model file is missing, unreadable, not ONNX, or structurally broken."""


class UnsupportedOpError(JitortError):
    """A node whose (domain, op_type, opset) has no kernel and no function body."""

    def __init__(self, op_type: str, domain: str, version: int, node_name: str = "", available=()):
        self.op_type, self.domain, self.version, self.node_name = op_type, domain, version, node_name
        dom = domain or "ai.onnx"
        msg = f"unsupported operator {dom}::{op_type} (opset {version})"
        if node_name:
            msg += f" at node {node_name!r}"
        close = difflib.get_close_matches(op_type, list(available), n=3)
        if close:
            msg += f"; did you mean {', '.join(close)}?"
        elif available:
            msg += f"; {len(available)} ops are registered for domain {dom!r}"
        super().__init__(msg)


class InputError(JitortError, ValueError):
    """A missing, extra, misspelled or malformed input."""


class InputDtypeError(InputError, TypeError):
    """An input whose element type differs from the model's."""


class InputShapeError(InputError):
    """An input whose rank or a fixed dim contradicts the model."""


class ShapeInferenceError(JitortError):
    """Types or shapes could not be propagated through the graph."""


class ExecutionError(JitortError, RuntimeError):
    """A kernel failed at run time; names the node that failed."""


def closest(name: str, candidates) -> str:
    """' (did you mean X?)' when a candidate is close to name, else ''."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return f" (did you mean {lowered[match[0]]!r}?)" if match else ""
