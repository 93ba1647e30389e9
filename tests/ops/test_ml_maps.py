"""ZipMap / DictVectorizer / CastMap vs onnxruntime, and through jitort.InferenceSession.

onnxruntime's Python API can only feed maps with float values, so the other map types are
checked against hand-computed results.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

import jitort
from jitort.ops.attrs import node_attributes
from jitort.ops.registry import KernelContext, call, lookup

# ------------------------------------------------------------------ tolerances (per dtype)
# every op here copies values (float32 -> Python float is exact): compare exactly.
TOL = {np.float32: (0.0, 0.0), np.float64: (0.0, 0.0)}

ML = "ai.onnx.ml"
T = helper.make_tensor_type_proto
M = helper.make_map_type_proto
S = helper.make_sequence_type_proto


def _model(node, in_type, out_type) -> bytes:
    g = helper.make_graph([node], "g", [helper.make_value_info("X", in_type)],
                          [helper.make_value_info("Y", out_type)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                            helper.make_opsetid(ML, 3)])
    m.ir_version = 10
    return m.SerializeToString()


def run_ours(node, x, ctx=None):
    entry = lookup(node.op_type, node.domain, 3, node.name)
    return call(entry, [x], node_attributes(node), ctx or KernelContext())


def run_ort(model: bytes, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, {"X": x})


def same_maps(got, exp):
    assert isinstance(got, list) and len(got) == len(exp)
    for g, e in zip(got, exp):
        assert isinstance(g, dict)
        assert list(g) == list(e)  # same keys in the same (sorted) order
        for k in e:
            assert type(k) is type(next(iter(g))) and type(g[k]) is float
            assert g[k] == e[k]


def same_tensor(got, exp):
    exp = np.asarray(exp)
    assert isinstance(got, np.ndarray) and got.shape == exp.shape, (got, exp)
    if exp.dtype.kind in "OUS":
        assert got.dtype == object and got.tolist() == exp.astype(object).tolist()
    else:
        assert got.dtype == exp.dtype, (got.dtype, exp.dtype)
        rtol, atol = TOL.get(exp.dtype.type, (0.0, 0.0))
        np.testing.assert_allclose(got, exp, rtol=rtol, atol=atol)


# ------------------------------------------------------------------ ZipMap

ZIP_CASES = [
    ({"classlabels_strings": ["b", "a", "c"]}, TP.STRING),
    ({"classlabels_int64s": [5, -2, 9, 0]}, TP.INT64),
    ({"classlabels_int64s": [5, 2, 2]}, TP.INT64),  # repeated label: the last column wins
    ({"classlabels_strings": ["only"]}, TP.STRING),
]


@pytest.mark.parametrize("attrs,key", ZIP_CASES)
@pytest.mark.parametrize("rows", [None, 1, 6, 0])  # None: a 1-D input (one row)
def test_zipmap_vs_ort(attrs, key, rows):
    n_lab = len(next(iter(attrs.values())))
    shape = (n_lab,) if rows is None else (rows, n_lab)
    rng = np.random.default_rng(len(shape) * 7 + n_lab)
    x = rng.standard_normal(shape).astype(np.float32)
    node = helper.make_node("ZipMap", ["X"], ["Y"], domain=ML, **attrs)
    out = run_ours(node, x)
    assert len(out) == 1
    model = _model(node, T(TP.FLOAT, None), S(M(key, T(TP.FLOAT, []))))
    (exp,) = run_ort(model, x)
    same_maps(out[0], exp)
    (sess,) = jitort.InferenceSession(model).run(None, {"X": x})
    same_maps(sess, exp)


def test_zipmap_errors():
    node = helper.make_node("ZipMap", ["X"], ["Y"], domain=ML, classlabels_int64s=[1, 2])
    for bad in (np.zeros((2, 3), np.float32), np.zeros((1, 2, 2), np.float32),
                np.float32(1.0).reshape(())):
        with pytest.raises(ValueError):
            run_ours(node, bad)
    both = helper.make_node("ZipMap", ["X"], ["Y"], domain=ML, classlabels_int64s=[1],
                            classlabels_strings=["a"])
    with pytest.raises(ValueError):
        run_ours(both, np.zeros((1, 1), np.float32))


# ------------------------------------------------------------------ DictVectorizer


@pytest.mark.parametrize("key", ["string", "int64"])
def test_dict_vectorizer_vs_ort(key):
    rng = np.random.default_rng(0)
    if key == "string":
        vocab = {"string_vocabulary": ["a", "bb", "c", "a", "zz"]}
        feeds = [{"a": 1.5, "c": 2.0, "q": 3.0}, {}, {"zz": -1.25, "bb": 0.0}]
        ktype = TP.STRING
    else:
        vocab = {"int64_vocabulary": [7, -1, 3, 100]}
        feeds = [{3: 0.5, 7: 4.0, 8: 1.0}, {-1: float(rng.standard_normal())}]
        ktype = TP.INT64
    node = helper.make_node("DictVectorizer", ["X"], ["Y"], domain=ML, **vocab)
    model = _model(node, M(ktype, T(TP.FLOAT, [])), T(TP.FLOAT, None))
    sess = jitort.InferenceSession(model)
    for feed in feeds:
        (got,) = run_ours(node, feed)
        if feed:
            (exp,) = run_ort(model, feed)
        else:  # onnxruntime's Python API refuses an empty dict
            exp = np.zeros((1, len(next(iter(vocab.values())))), np.float32)
        same_tensor(got, exp)
        same_tensor(sess.run(None, {"X": feed})[0], exp)


def test_dict_vectorizer_other_value_types():
    node = helper.make_node("DictVectorizer", ["X"], ["Y"], domain=ML,
                            int64_vocabulary=[3, 1, 9, 1])
    same_tensor(run_ours(node, {1: "x", 9: "y", 4: "z"})[0],
                np.array([["", "x", "y", "x"]], dtype=object))
    same_tensor(run_ours(node, {1: 5, 3: -2})[0], np.array([[-2, 5, 0, 5]], np.int64))
    same_tensor(run_ours(node, {1: np.float64(0.1)})[0], np.array([[0, 0.1, 0, 0.1]]))
    ctx = KernelContext(output_dtypes=[np.dtype(np.float64)])  # the declared type wins
    same_tensor(run_ours(node, {9: 0.25}, ctx)[0], np.array([[0, 0, 0.25, 0]]))
    s = helper.make_node("DictVectorizer", ["X"], ["Y"], domain=ML, string_vocabulary=["u", "v"])
    same_tensor(run_ours(s, {"v": 7})[0], np.array([[0, 7]], np.int64))
    same_tensor(run_ours(s, np.array({"u": np.float32(2)}, dtype=object))[0],
                np.array([[2, 0]], np.float32))


# ------------------------------------------------------------------ CastMap

CAST_OUT = {"TO_FLOAT": TP.FLOAT, "TO_INT64": TP.INT64, "TO_STRING": TP.STRING}


@pytest.mark.parametrize("cast_to", list(CAST_OUT))
@pytest.mark.parametrize("form,max_map", [("DENSE", 1), ("SPARSE", 1), ("SPARSE", 7),
                                          ("SPARSE", 3)])
def test_cast_map_float_vs_ort(cast_to, form, max_map):
    rng = np.random.default_rng(max_map)
    vals = (rng.standard_normal(5) * 100).astype(np.float32)
    keys = [4, 0, 2, 5, 1]
    feed = {k: float(v) for k, v in zip(keys, vals)}
    node = helper.make_node("CastMap", ["X"], ["Y"], domain=ML, cast_to=cast_to, map_form=form,
                            max_map=max_map)
    model = _model(node, M(TP.INT64, T(TP.FLOAT, [])), T(CAST_OUT[cast_to], None))
    (exp,) = run_ort(model, feed)
    (got,) = run_ours(node, feed)
    same_tensor(got, exp)
    same_tensor(jitort.InferenceSession(model).run(None, {"X": feed})[0], exp)


def test_cast_map_strings():
    feed = {3: "1.5", 1: "  22abc", 0: "-7.9e1", 6: "0x10", 5: "inf"}
    dense = {
        "TO_FLOAT": np.array([[-79.0, 22.0, 1.5, np.inf, 16.0]], np.float32),
        "TO_INT64": np.array([[-7, 22, 1, None, 0]], object),
        "TO_STRING": np.array([["-7.9e1", "  22abc", "1.5", "inf", "0x10"]], object),
    }
    for cast_to, exp in dense.items():
        node = helper.make_node("CastMap", ["X"], ["Y"], domain=ML, cast_to=cast_to)
        if cast_to == "TO_INT64":  # "inf" has no integer prefix: std::stoll throws
            with pytest.raises(ValueError):
                run_ours(node, feed)
            feed_i = {k: v for k, v in feed.items() if v != "inf"}
            same_tensor(run_ours(node, feed_i)[0], np.array([[-7, 22, 1, 0]], np.int64))
        else:
            same_tensor(run_ours(node, feed)[0], exp)
    sparse = helper.make_node("CastMap", ["X"], ["Y"], domain=ML, cast_to="TO_STRING",
                              map_form="SPARSE", max_map=5)
    same_tensor(run_ours(sparse, {1: "a", 3: "b", 9: "c"})[0],
                np.array([["0.f", "a", "0.f", "b", "0.f"]], object))


def test_cast_map_edges():
    node = helper.make_node("CastMap", ["X"], ["Y"], domain=ML, cast_to="TO_FLOAT",
                            map_form="SPARSE", max_map=3)
    same_tensor(run_ours(node, {})[0], np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError):
        run_ours(node, {-1: 2.0, 1: 1.0})
    dense = helper.make_node("CastMap", ["X"], ["Y"], domain=ML, cast_to="TO_INT64")
    same_tensor(run_ours(dense, {})[0], np.zeros((1, 0), np.int64))
    same_tensor(run_ours(dense, {2: -2.7, 1: 2.7})[0], np.array([[2, -2]], np.int64))
    with pytest.raises(ValueError):
        run_ours(helper.make_node("CastMap", ["X"], ["Y"], domain=ML, cast_to="TO_BOOL"), {1: 1.0})
    with pytest.raises(ValueError):  # float32 overflow: std::stof throws out_of_range
        run_ours(helper.make_node("CastMap", ["X"], ["Y"], domain=ML), {1: "1e60"})


# ------------------------------------------------------------------ a classifier pipeline


def test_svm_zipmap_pipeline_session():
    """SVMClassifier -> ZipMap through the full session, as skl2onnx exports classifiers."""
    import onnxruntime as ort

    rng = np.random.default_rng(5)
    labels = ["x", "y", "z"]
    svm = helper.make_node(
        "SVMClassifier", ["X"], ["label", "prob"], domain=ML, classlabels_strings=labels,
        vectors_per_class=[2, 1, 2], support_vectors=rng.standard_normal(25).tolist(),
        coefficients=rng.standard_normal(10).tolist(), rho=[0.1, -0.2, 0.3],
        kernel_type="RBF", kernel_params=[0.3, 0.0, 0.0], prob_a=[-1.5, -2.0, -1.0],
        prob_b=[0.1, 0.0, -0.1])
    zm = helper.make_node("ZipMap", ["prob"], ["probs"], domain=ML, classlabels_strings=labels)
    g = helper.make_graph(
        [svm, zm], "g", [helper.make_tensor_value_info("X", TP.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("label", TP.STRING, [None]),
         helper.make_value_info("probs", S(M(TP.STRING, T(TP.FLOAT, []))))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                            helper.make_opsetid(ML, 3)])
    m.ir_version = 10
    x = rng.standard_normal((4, 5)).astype(np.float32)
    lab, probs = jitort.InferenceSession(m.SerializeToString()).run(None, {"X": x})
    elab, eprobs = ort.InferenceSession(m.SerializeToString(),
                                        providers=["CPUExecutionProvider"]).run(None, {"X": x})
    assert lab.tolist() == elab.tolist()
    assert isinstance(probs, list) and len(probs) == 4
    for g_, e_ in zip(probs, eprobs):
        assert list(g_) == list(e_)
        np.testing.assert_allclose([g_[k] for k in e_], [e_[k] for k in e_], rtol=1e-4, atol=2e-5)
