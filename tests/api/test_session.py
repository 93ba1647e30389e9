"""The lazy session: one plan per Signature, reuse, data-dependent shapes, the decorator."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import jitort
from tests.helpers import F, add_relu_model, model


def test_one_compile_per_signature():
    m = jitort.load(model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, ["n"])], [("y", F, ["n"])]))
    for _ in range(3):
        m(x=np.ones(4, np.float32))
    assert m.stats.compiles == 1 and m.stats.calls == 3
    m(x=np.ones(5, np.float32))
    assert m.stats.compiles == 2
    m(np.ones(4, np.float32))  # positional, same signature as the first calls
    assert m.stats.compiles == 2
    assert [str(s) for s in m.signatures()] == ["x: float32[4]", "x: float32[5]"]


def test_bound_types_are_inferred_for_every_value():
    m = jitort.load(add_relu_model((2, 5)), opt_level=0)  # fusions would remove 's'

    m(x=np.zeros((2, 5), np.float32))
    bound = m.bound_graph(m.signatures()[0])
    assert str(bound.types["s"]) == "float32[2,5]"
    assert str(bound.output_types()[0]) == "float32[2,5]"


def test_data_dependent_shapes_are_not_frozen():
    m = jitort.load(model([helper.make_node("NonZero", ["x"], ["y"])],
                          [("x", F, [6])], [("y", TensorProto.INT64, [1, 6])]))  # declared shape is wrong
    a = m(x=np.array([1, 0, 0, 2, 0, 3], np.float32))[0]
    b = m(x=np.array([0, 0, 0, 0, 0, 7], np.float32))[0]
    assert a.tolist() == [[0, 3, 5]] and b.tolist() == [[5]]
    assert m.stats.compiles == 1


def test_reshape_from_shape_arithmetic_follows_the_signature():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Concat", ["b", "minus1"], ["t"], axis=0),
        helper.make_node("Reshape", ["x", "t"], ["y"]),
    ]
    m = jitort.load(model(nodes, [("x", F, ["b", 2, 3])], [("y", F, None)],
                          inits={"zero": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}))
    for batch in (1, 4):
        y = m(x=np.arange(batch * 6, dtype=np.float32).reshape(batch, 2, 3))[0]
        assert y.shape == (batch, 6)
        bound = m.bound_graph(m.signatures()[-1])
        assert str(bound.types["y"]) == f"float32[{batch},6]"


def test_outputs_by_index_and_name():
    out = jitort.load(add_relu_model())(x=np.ones((2, 3), np.float32))
    assert out[0] is out["y"]
    assert list(out.as_dict()) == ["y"]
    with pytest.raises(KeyError, match="no output 'z'"):
        out["z"]


def test_decorator_keeps_name_and_doc_and_loads_lazily(tmp_path):
    path = tmp_path / "m.onnx"

    @jitort.model(path)
    def forward(model, x):
        """Forward pass."""
        return model(x=x)[0]

    assert forward.__name__ == "forward" and forward.__doc__ == "Forward pass."
    path.write_bytes(add_relu_model().SerializeToString())  # exists only after decoration
    x = np.array([[-1, 0, 1], [2, -2, 0.5]], np.float32)
    b = np.linspace(-1, 1, 3).astype(np.float32)
    np.testing.assert_allclose(forward(x), np.maximum(x + b, 0))


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="unknown option"):
        jitort.load(add_relu_model(), bogus=1)


def test_torch_and_ml_dtypes_inputs():
    m = model([helper.make_node("Add", ["x", "x"], ["y"])], [("x", TensorProto.BFLOAT16, [3])],
              [("y", TensorProto.BFLOAT16, [3])])
    s = jitort.load(m)
    t = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    y = s(x=t)[0]
    assert y.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(y.astype(np.float32), [3.0, -4.0, 6.5])
    y2 = s(x=np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16))[0]
    np.testing.assert_array_equal(y2.astype(np.float32), [3.0, -4.0, 6.5])
    f = jitort.load(add_relu_model())(x=torch.ones(2, 3))[0]
    assert isinstance(f, np.ndarray) and f.dtype == np.float32


def test_initializer_backed_input_is_optional_and_overridable():
    m = add_relu_model()
    m.graph.input.append(helper.make_tensor_value_info("b", F, [3]))  # IR<4 style default
    s = jitort.InferenceSession(m)
    assert [i.name for i in s.get_inputs()] == ["x"]
    assert [i.name for i in s.get_overridable_initializers()] == ["b"]
    x = np.zeros((2, 3), np.float32)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], [[0, 0, 1]] * 2)
    np.testing.assert_allclose(s.run(None, {"x": x, "b": np.full(3, 2, np.float32)})[0], [[2, 2, 2]] * 2)


def test_inference_session_surface_matches_onnxruntime():
    m = model([helper.make_node("MatMul", ["a", "w"], ["y"]), helper.make_node("Shape", ["y"], ["s"])],
              [("a", F, ["batch", 4])], [("y", F, ["batch", 2]), ("s", TensorProto.INT64, [2])],
              inits={"w": np.ones((4, 2), np.float32)}, producer_name="unit", doc_string="a doc")
    m.metadata_props.add(key="k", value="v")
    data = m.SerializeToString()
    ours, theirs = jitort.InferenceSession(data), ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for a, b in zip(ours.get_inputs() + ours.get_outputs(), theirs.get_inputs() + theirs.get_outputs()):
        assert (a.name, a.shape, a.type) == (b.name, b.shape, b.type)
    mo, mt = ours.get_modelmeta(), theirs.get_modelmeta()
    for field in ("producer_name", "graph_name", "description", "version", "custom_metadata_map"):
        assert getattr(mo, field) == getattr(mt, field), field
    assert ours.get_providers() == ["CPUExecutionProvider"]
    feed = {"a": np.arange(12, dtype=np.float32).reshape(3, 4)}
    for got, want in zip(ours.run(None, feed), theirs.run(None, feed)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ours.run(["s"], feed)[0], [3, 2])


def test_session_options_are_accepted():
    so = jitort.SessionOptions()
    so.graph_optimization_level = jitort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    s = jitort.InferenceSession(add_relu_model().SerializeToString(), sess_options=so,
                                providers=["CPUExecutionProvider"])
    assert s.get_session_options() is so
    with pytest.raises(ValueError, match="unknown provider"):
        jitort.InferenceSession(add_relu_model(), providers=["NoSuchProvider"])
