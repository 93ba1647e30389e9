"""Example models for the demo and the CLI: found inside the onnx package or built at run time.

Nothing here is downloaded and no model file is committed to the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import JitortError

EXAMPLES = {
    "resnet50": "ResNet-50 (batch 1, 3x224x224) shipped inside the onnx package (light model)",
    "mlp": "a 4-layer 1024-wide MLP with GELU, built with onnx.helper (batch 1)",
}


def example_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of example ``name``, building it into ``cache_dir`` when it is built at run time."""
    if name == "resnet50":
        import onnx

        return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
    if name == "mlp":
        out = Path(cache_dir or _repo_cache()) / "examples" / "mlp_4x1024_gelu.onnx"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_bytes(build_mlp().SerializeToString())
            tmp.replace(out)
        return out
    raise JitortError(f"unknown example {name!r}; available: {', '.join(EXAMPLES)}")


def _repo_cache() -> Path:
    from . import config

    if config.CACHE_DIR:
        return Path(config.CACHE_DIR)
    return Path(__file__).resolve().parent.parent / "cache"


def build_mlp(width: int = 1024, layers: int = 4, seed: int = 0):
    """x[B,width] -> (MatMul + bias + Gelu) x layers, as an opset-20 ONNX model."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = (rng.standard_normal(width) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [cur, f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"]),
            helper.make_node("Gelu", [f"add{i}"], [f"h{i}"]),
        ]
        cur = f"h{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
