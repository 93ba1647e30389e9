"""jitort: a JIT-compiling runtime for ONNX models.

    model = jitort.load("bert.onnx")
    logits = model(input_ids=ids, attention_mask=mask)[0]
"""

from __future__ import annotations

import functools

from .gc_pause import paused as _paused

with _paused():  # what the imports build lives as long as the process (gc_pause.py)
    from .errors import (  # noqa: F401
        ExecutionError,
        InputDtypeError,
        InputError,
        InputShapeError,
        JitortError,
        ModelLoadError,
        ShapeInferenceError,
        UnsupportedOpError,
    )
    from .inference_session import (  # noqa: F401
        ExecutionMode,
        GraphOptimizationLevel,
        InferenceSession,
        NodeArg,
        SessionOptions,
    )
    from .session import CompiledModel, Outputs, Signature  # noqa: F401

__version__ = "0.1.0"


def load(source, **options) -> CompiledModel:
    """Load an ONNX model (path, bytes or ModelProto); compiles lazily on each new Signature."""
    return CompiledModel(source, **options)


def warmup(source, signatures, *, jobs: int = 1, progress: bool = False, **options):
    """Compile ``signatures`` ([{input name: shape}, ...]) of a model into the disk cache ahead
    of time (see :mod:`jitort.warmups`); returns one result per signature."""
    from .warmups import warmup as _warmup

    return _warmup(source, signatures, jobs=jobs, progress=progress, **options)


def model(source, **options):
    """Decorator: pass the loaded model as the first argument of the decorated function.

        @jitort.model("bert.onnx")
        def embed(model, input_ids, attention_mask):
            return model(input_ids=input_ids, attention_mask=attention_mask)[0]

    The model is loaded on the first call, not at decoration time.
    """

    def deco(fn):
        state: dict = {}

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            m = state.get("model")
            if m is None:
                m = state["model"] = load(source, **options)
            return fn(m, *args, **kwargs)

        wrapper.jitort_model = lambda: state.get("model") or state.setdefault("model", load(source, **options))
        return wrapper

    return deco


__all__ = [
    "load", "model", "warmup", "InferenceSession", "SessionOptions", "GraphOptimizationLevel", "ExecutionMode",
    "CompiledModel", "Outputs", "Signature", "JitortError", "ModelLoadError", "UnsupportedOpError",
    "InputError", "InputDtypeError", "InputShapeError", "ExecutionError", "ShapeInferenceError",
]
