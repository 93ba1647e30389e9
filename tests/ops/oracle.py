"""Shared helpers of the kernel tests: run a registry kernel, compare against a float64 oracle
with a per-dtype tolerance table, and run one ONNX node in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper

from jitort.ops.registry import KernelContext, call, lookup


def kernel_runner(default_opset: int, domain: str = ""):
    """``run(name, *inputs, opset=default, nout=1, **attrs)``: one output, or a list of nout."""

    def run(name, *inputs, opset=default_opset, nout=1, **attrs):
        out = call(lookup(name, domain, opset), list(inputs), attrs,
                   KernelContext(num_outputs=nout, opset=opset))
        return out[0] if nout == 1 else out

    return run


def checker(tol: dict):
    """``check(got, expected, dtype)`` with ``tol[dtype] = (rtol, atol)`` against float64."""

    def check(got, expected, dtype):
        dtype = np.dtype(dtype)
        assert isinstance(got, np.ndarray) and got.dtype == dtype, (type(got), getattr(got, "dtype", None))
        expected = np.asarray(expected, np.float64)
        assert got.shape == expected.shape, (got.shape, expected.shape)
        rtol, atol = tol[dtype]
        np.testing.assert_allclose(got.astype(np.float64), expected, rtol=rtol, atol=atol)

    return check


def t64(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a).astype(np.float64))


def ort_run(op_type, inputs, attrs, opset=19, nout=1, out_elems=None, initializers=False):
    """Run one node in onnxruntime (graph optimizations off). ``inputs`` are arrays or None (an
    omitted optional input); with ``initializers`` every input after the first is a constant."""
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
    feeds = [(n, a) for n, a in zip(names, inputs) if a is not None]
    consts = feeds[1:] if initializers else []
    fed = feeds[:1] if initializers else feeds
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in fed]
    elems = out_elems or [helper.np_dtype_to_tensor_dtype(inputs[0].dtype)] * nout
    outs = [helper.make_tensor_value_info(f"y{k}", elems[k], None) for k in range(nout)]
    node = helper.make_node(op_type, names, [o.name for o in outs], **attrs)
    m = helper.make_model(helper.make_graph([node], "g", vis, outs, [numpy_helper.from_array(a, n) for n, a in consts]),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    res = s.run(None, dict(fed))
    return res[0] if nout == 1 else res


# -- the (op_type, opset, inputs) calling convention of the data-movement tests ---------------
def run_all(op_type, opset, inputs, num_outputs=1, **attrs) -> list:
    """Every output of one registry kernel."""
    return call(lookup(op_type, "", opset), list(inputs), attrs,
                KernelContext(num_outputs=num_outputs, opset=opset))


def run1(op_type, opset, *inputs, **attrs):
    """The first output of one registry kernel."""
    return run_all(op_type, opset, inputs, **attrs)[0]


def ort_outputs(op_type, opset, inputs, n_out=1, **attrs) -> list:
    """Every output of a one-node onnxruntime model (None inputs are omitted, all others fed)."""
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype)
                                         if v.dtype != object else 8, v.shape)
           for n, v in zip(names, inputs) if n]
    outs = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op_type, names, outs, **attrs)
    g = helper.make_graph([node], "g", vis, [helper.make_empty_tensor_value_info(o) for o in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {n: v for n, v in zip(names, inputs) if n})
