"""Tiny models for the tuner tests (every GEMM / conv compile costs ~0.5 s: keep them few)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tests.helpers import F, model


def mlp(path, d_in=32, d_h=48, d_out=20) -> str:
    """x [batch, d_in] -> MatMul + Add + Relu -> MatMul -> y: two GEMM kernels."""
    rng = np.random.default_rng(0)
    m = model([helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
               helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["y"])],
              [("x", F, ["batch", d_in])], [("y", F, ["batch", d_out])],
              inits={"W1": rng.standard_normal((d_in, d_h)).astype(np.float32),
                     "b1": rng.standard_normal(d_h).astype(np.float32),
                     "W2": rng.standard_normal((d_h, d_out)).astype(np.float32)}, opset=17)
    onnx.save(m, str(path))
    return str(path)


def mlp_reference(x):
    rng = np.random.default_rng(0)
    W1, b1, W2 = (rng.standard_normal(s).astype(np.float32) for s in ((32, 48), (48,), (48, 20)))
    return np.maximum(x @ W1 + b1, 0) @ W2


def conv(path, c=8, o=16, hw=10) -> str:
    """x [1, c, hw, hw] -> Conv 3x3 pads 1 + Relu: one im2col conv kernel at level 3."""
    rng = np.random.default_rng(0)
    m = model([helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
               helper.make_node("Relu", ["c"], ["y"])],
              [("x", F, [1, c, hw, hw])], [("y", F, [1, o, hw, hw])],
              inits={"W": rng.standard_normal((o, c, 3, 3)).astype(np.float32),
                     "B": rng.standard_normal(o).astype(np.float32)}, opset=17)
    onnx.save(m, str(path))
    return str(path)


def plans(compiled, kind):
    """The kernel plans (GemmPlan / ConvPlan) of a called jitort model's first Signature."""
    sig = compiled.signatures()[0]
    steps = compiled._variants[sig].plan.steps
    return [s.fn.plan for s in steps if getattr(s.fn, "plan", None) is not None
            and type(s.fn.plan).__name__ == kind]
