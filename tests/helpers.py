"""Small model builders shared by tests."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=(), opset=20, functions=(), **kw):
    """A ModelProto from node/value-info lists; ``inputs``/``outputs`` are (name, type, shape)."""
    g = helper.make_graph(
        nodes, kw.pop("name", "g"),
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()],
    )
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in kw.pop("extra_opsets", {}).items()]
    m = helper.make_model(g, opset_imports=opsets, functions=list(functions), **kw)
    m.ir_version = 10
    return m


def add_relu_model(shape=(2, 3)):
    return model(
        [helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
        [("x", F, list(shape))], [("y", F, list(shape))],
        inits={"b": np.linspace(-1, 1, shape[-1]).astype(np.float32)},
    )
