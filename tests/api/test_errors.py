"""Every user mistake surfaces as a jitort error that says what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import jitort
from tests.helpers import F, add_relu_model, model


def test_missing_file(tmp_path):
    with pytest.raises(jitort.ModelLoadError, match="not found"):
        jitort.load(tmp_path / "nope.onnx")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(jitort.ModelLoadError, match="directory"):
        jitort.load(tmp_path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(jitort.ModelLoadError, match="empty"):
        jitort.load(p)


def test_not_onnx(tmp_path):
    p = tmp_path / "text.onnx"
    p.write_bytes(b"this is certainly not a protobuf \xff\xfe\x00 at all")
    with pytest.raises(jitort.ModelLoadError):
        jitort.load(p)


def test_truncated_protobuf(tmp_path):
    data = add_relu_model().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(jitort.ModelLoadError, match="truncated|not a valid|no graph"):
        jitort.load(p)


def test_wrong_source_type():
    with pytest.raises(jitort.ModelLoadError, match="expected a path"):
        jitort.load(12345)


def test_unsupported_op_names_op_domain_version_and_node():
    m = model([helper.make_node("FrobnicateTensor", ["x"], ["y"], name="frob1", domain="com.example")],
              [("x", F, [2])], [("y", F, [2])], extra_opsets={"com.example": 3})
    with pytest.raises(jitort.UnsupportedOpError) as ei:
        jitort.load(m)
    msg = str(ei.value)
    assert "com.example::FrobnicateTensor" in msg and "opset 3" in msg and "frob1" in msg
    assert ei.value.op_type == "FrobnicateTensor" and ei.value.domain == "com.example"


def test_unsupported_op_in_default_domain_suggests_close_names():
    m = model([helper.make_node("Reluu", ["x"], ["y"], name="n0")], [("x", F, [2])], [("y", F, [2])])
    with pytest.raises(jitort.UnsupportedOpError, match="did you mean.*Relu"):
        jitort.load(m)


@pytest.fixture
def sess():
    return jitort.InferenceSession(add_relu_model().SerializeToString())


def test_missing_input(sess):
    with pytest.raises(jitort.InputError, match=r"missing input\(s\) \['x'\].*x: tensor\(float\)\[2,3\]"):
        sess.run(None, {})


def test_extra_input(sess):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(jitort.InputError, match="unexpected input 'y'"):
        sess.run(None, {"x": x, "y": x})


def test_misspelled_input_suggests_closest(sess):
    with pytest.raises(jitort.InputError, match="unexpected input 'X'.*did you mean 'x'"):
        sess.run(None, {"X": np.zeros((2, 3), np.float32)})


def test_wrong_dtype(sess):
    with pytest.raises(jitort.InputDtypeError, match=r"'x' expects tensor\(float\), got tensor\(double\)"):
        sess.run(None, {"x": np.zeros((2, 3), np.float64)})


def test_wrong_rank(sess):
    with pytest.raises(jitort.InputShapeError, match="expects rank 2.*got rank 3"):
        sess.run(None, {"x": np.zeros((1, 2, 3), np.float32)})


def test_dim_contradicting_fixed_dim(sess):
    with pytest.raises(jitort.InputShapeError, match=r"dim 1 must be 3.*got shape \[2, 4\]"):
        sess.run(None, {"x": np.zeros((2, 4), np.float32)})


def test_symbolic_dims_accept_any_size():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, ["n", 3])], [("y", F, ["n", 3])])
    s = jitort.InferenceSession(m)
    for n in (0, 1, 5):
        assert s.run(None, {"x": np.ones((n, 3), np.float32)})[0].shape == (n, 3)


def test_unknown_output_name(sess):
    with pytest.raises(jitort.InputError, match="unknown output 'z'"):
        sess.run(["z"], {"x": np.zeros((2, 3), np.float32)})


def test_kernel_failure_names_the_node():
    # Reshape to an impossible shape: the data is fine for the model's types, the op fails.
    m = model([helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")],
              [("x", F, [2, 3]), ("s", TensorProto.INT64, [2])], [("y", F, None)])
    s = jitort.InferenceSession(m)
    with pytest.raises(jitort.ExecutionError, match="bad_reshape.*Reshape"):
        s.run(None, {"x": np.zeros((2, 3), np.float32), "s": np.array([4, 4], np.int64)})


def test_errors_are_jitort_errors():
    for cls in (jitort.ModelLoadError, jitort.UnsupportedOpError, jitort.InputError,
                jitort.InputDtypeError, jitort.InputShapeError, jitort.ExecutionError):
        assert issubclass(cls, jitort.JitortError)


def test_session_survives_a_bad_call(sess):
    x = np.array([[-2, 0, 2], [1, -1, 3]], np.float32)
    good = sess.run(None, {"x": x})[0]
    with pytest.raises(jitort.InputError):
        sess.run(None, {"x": x.astype(np.int32)})
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], good)
