"""ONNX import/export: external data, local functions, sparse initializers, subgraphs, round trips."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import jitort
from jitort.ir.onnx_export import export_model
from jitort.ir.onnx_import import import_model
from tests.helpers import F, add_relu_model, model

I64 = TensorProto.INT64


def _ort(m, feed):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_external_data_is_loaded_from_the_model_directory(tmp_path):
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", F, [2, 64])], [("y", F, [2, 32])],
              inits={"w": w})
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(jitort.load(path)(x=x)[0], x @ w, rtol=1e-5)
    with pytest.raises(jitort.ModelLoadError, match="external"):
        jitort.load(path.read_bytes())
    (tmp_path / "ext.data").unlink()
    with pytest.raises(jitort.ModelLoadError, match="external data"):
        jitort.load(path)


def _local_function_model():
    # MyScaleAdd(x, b) = x * alpha + b, alpha an attribute with default 2.0 given by reference.
    fn = helper.make_function(
        "custom.fns", "MyScaleAdd", ["x", "b"], ["y"],
        [helper.make_node("Constant", [], ["a"], value_float=0.0),
         helper.make_node("Constant", [], ["alpha"]),
         helper.make_node("Mul", ["x", "alpha"], ["t"]),
         helper.make_node("Add", ["t", "b"], ["y"])],
        [helper.make_opsetid("", 18)], attributes=[],
    )
    const_alpha = fn.node[1]
    const_alpha.attribute.append(onnx.AttributeProto(name="value_float", ref_attr_name="alpha",
                                                     type=onnx.AttributeProto.FLOAT))
    fn.attribute_proto.append(helper.make_attribute("alpha", 2.0))
    nodes = [helper.make_node("MyScaleAdd", ["x", "b"], ["y1"], domain="custom.fns"),
             helper.make_node("MyScaleAdd", ["y1", "b"], ["y"], domain="custom.fns", alpha=-1.0)]
    return model(nodes, [("x", F, [3]), ("b", F, [3])], [("y", F, [3])], opset=18,
                 functions=[fn], extra_opsets={"custom.fns": 1})


def test_model_local_functions_are_inlined_with_attribute_references():
    m = _local_function_model()
    x, b = np.array([1, 2, 3], np.float32), np.array([0.5, 0, -1], np.float32)
    got = jitort.load(m)(x=x, b=b)[0]
    np.testing.assert_allclose(got, (x * 2 + b) * -1 + b)
    np.testing.assert_allclose(got, _ort(m, {"x": x, "b": b})[0])
    ir = import_model(m)
    assert {n.op_type for n in ir.graph.nodes} == {"Constant", "Mul", "Add"}


def test_sparse_initializer_is_densified():
    vals = numpy_helper.from_array(np.array([5.0, -1.0], np.float32), "s")
    idx = numpy_helper.from_array(np.array([1, 4], np.int64), "s_idx")
    m = model([helper.make_node("Add", ["x", "s"], ["y"])], [("x", F, [2, 3])], [("y", F, [2, 3])])
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(vals, idx, [2, 3]))
    got = jitort.load(m)(x=np.zeros((2, 3), np.float32))[0]
    np.testing.assert_array_equal(got, [[0, 5, 0], [0, -1, 0]])


def _loop_with_if_model():
    """sum over i < n of (i if i is even else -x), reading x from the outer scope two levels up."""
    then_g = helper.make_graph([helper.make_node("Cast", ["i"], ["ti"], to=TensorProto.FLOAT)], "then",
                               [], [helper.make_tensor_value_info("ti", F, [])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["nx"])], "else",
                               [], [helper.make_tensor_value_info("nx", F, [])])
    body = helper.make_graph(
        [helper.make_node("Mod", ["i", "two"], ["r"]),
         helper.make_node("Equal", ["r", "zero"], ["even"]),
         helper.make_node("If", ["even"], ["v"], then_branch=then_g, else_branch=else_g),
         helper.make_node("Add", ["acc", "v"], ["acc_out"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", F, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", F, []), helper.make_tensor_value_info("v", F, [])],
    )
    return model([helper.make_node("Loop", ["n", "", "acc0"], ["acc", "vs"], body=body)],
                 [("n", I64, []), ("x", F, []), ("acc0", F, [])], [("acc", F, []), ("vs", F, [None])],
                 inits={"two": np.array(2, np.int64), "zero": np.array(0, np.int64)})


def test_nested_subgraphs_read_outer_scope():
    m = _loop_with_if_model()
    feed = {"n": np.array(5, np.int64), "x": np.array(10, np.float32), "acc0": np.array(0, np.float32)}
    acc, vs = jitort.load(m)(**feed)
    np.testing.assert_allclose(vs, [0, -10, 2, -10, 4])
    np.testing.assert_allclose(acc, -14)
    for got, want in zip((acc, vs), _ort(m, feed)):
        np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("build", [add_relu_model, _local_function_model, _loop_with_if_model])
def test_export_round_trip_is_valid_and_equivalent(build):
    m = build()
    exported = export_model(import_model(m))
    onnx.checker.check_model(exported, full_check=True)
    rng = np.random.default_rng(0)
    feed = {}
    for vi in m.graph.input:
        if vi.name in {t.name for t in m.graph.initializer}:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        dt = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feed[vi.name] = (rng.integers(1, 6, shape) if dt.kind == "i" else rng.standard_normal(shape)).astype(dt)
    for got, want in zip(jitort.load(exported)(**feed), _ort(m, feed)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_export_round_trip_of_light_resnet50_graph():
    import os

    path = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_resnet50.onnx")
    ir = import_model(path)
    exported = export_model(ir)
    onnx.checker.check_model(exported)
    assert len(exported.graph.node) == len(ir.graph.nodes) == len(onnx.load(path).graph.node)


def test_opsets_per_domain_are_kept():
    m = _local_function_model()
    ir = import_model(m)
    assert ir.graph.opsets[""] == 18 and ir.graph.opsets["custom.fns"] == 1
