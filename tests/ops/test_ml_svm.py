"""SVMClassifier / SVMRegressor kernels vs onnxruntime (one-node ai.onnx.ml models)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from jitort.ops.attrs import node_attributes
from jitort.ops.registry import KernelContext, call, lookup

# ------------------------------------------------------------------ tolerances (per input dtype)
# onnxruntime computes in float32 (inputs cast to float); we compute in float64 and round once.
TOL = {np.float32: (1e-4, 1e-5), np.float64: (1e-4, 1e-5), np.int64: (1e-4, 1e-5),
       np.int32: (1e-4, 1e-5)}
PROBA_TOL = (1e-4, 2e-5)  # pairwise coupling iterates in float32 in onnxruntime
# onnxruntime's float32 erfinv approximation cancels badly near probability 0.5
PROBIT_TOL = (1e-4, 1e-4)

ML = "ai.onnx.ml"
CODES = {np.float32: TP.FLOAT, np.float64: TP.DOUBLE, np.int64: TP.INT64, np.int32: TP.INT32}


def _node(op_type, n_out, **attrs):
    return helper.make_node(op_type, ["X"], ["Y", "Z"][:n_out], domain=ML, **attrs)


def run_ours(node, x):
    entry = lookup(node.op_type, node.domain, 3, node.name)
    return call(entry, [x], node_attributes(node), KernelContext(num_outputs=len(node.output)))


def run_ort(node, x, strings=False):
    import onnxruntime as ort

    if node.op_type == "SVMRegressor":
        outs = [helper.make_tensor_value_info("Y", TP.FLOAT, None)]
    else:
        outs = [helper.make_tensor_value_info("Y", TP.STRING if strings else TP.INT64, None),
                helper.make_tensor_value_info("Z", TP.FLOAT, None)]
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", CODES[x.dtype.type],
                                                                      list(x.shape))], outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                            helper.make_opsetid(ML, 3)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": x})


def check(node, x, strings=False, tol=None):
    ours = run_ours(node, x)
    exp = run_ort(node, x, strings)
    assert len(ours) == len(exp)
    rtol, atol = tol or TOL[x.dtype.type]
    for g, e in zip(ours, exp):
        assert isinstance(g, np.ndarray)
        assert g.shape == e.shape, (g.shape, e.shape)
        if e.dtype.kind in "OUS":
            assert g.dtype == object
            assert g.tolist() == e.astype(object).tolist()
        elif e.dtype.kind == "i":
            assert g.dtype == e.dtype
            np.testing.assert_array_equal(g, e)
        else:
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    return ours


def _x(rng, n, f, dtype=np.float32):
    if np.dtype(dtype).kind == "i":
        return rng.integers(-3, 4, (n, f)).astype(dtype)
    return rng.standard_normal((n, f)).astype(dtype)


def _labels(n_cls, strings):
    if strings:
        return {"classlabels_strings": [f"c{i}" for i in range(n_cls)]}
    return {"classlabels_ints": [int(v) for v in (np.arange(n_cls) * 3 + 2)]}


def _svc_attrs(rng, n_cls, n_feat, kernel, proba, strings, post="NONE"):
    vpc = rng.integers(1, 4, n_cls)
    n_vec = int(vpc.sum())
    n_pairs = n_cls * (n_cls - 1) // 2
    attrs = dict(
        _labels(n_cls, strings),
        vectors_per_class=[int(v) for v in vpc],
        support_vectors=rng.standard_normal(n_vec * n_feat).astype(np.float32).tolist(),
        coefficients=rng.standard_normal((n_cls - 1) * n_vec).astype(np.float32).tolist(),
        rho=rng.standard_normal(n_pairs).astype(np.float32).tolist(),
        kernel_type=kernel,
        kernel_params=[0.3, 0.5, 3.0] if kernel != "SIGMOID" else [0.2, -0.1, 0.0],
        post_transform=post,
    )
    if proba:
        attrs["prob_a"] = (-rng.uniform(0.5, 3, n_pairs)).astype(np.float32).tolist()
        attrs["prob_b"] = rng.uniform(-0.5, 0.5, n_pairs).astype(np.float32).tolist()
    return attrs


# ------------------------------------------------------------------ SVMClassifier, SVC mode

KERNELS = ["LINEAR", "POLY", "RBF", "SIGMOID"]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n_cls", [2, 3, 5])
@pytest.mark.parametrize("strings", [False, True])
def test_svc_votes(kernel, n_cls, strings):
    rng = np.random.default_rng(hash((kernel, n_cls, strings)) % 2**32)
    for n, f in [(1, 4), (7, 3), (13, 1)]:
        node = _node("SVMClassifier", 2, **_svc_attrs(rng, n_cls, f, kernel, False, strings))
        check(node, _x(rng, n, f), strings)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n_cls", [2, 3, 4, 6])
def test_svc_proba(kernel, n_cls):
    rng = np.random.default_rng(10 * n_cls + KERNELS.index(kernel))
    for n, f in [(1, 3), (9, 5)]:
        node = _node("SVMClassifier", 2, **_svc_attrs(rng, n_cls, f, kernel, True, n_cls == 3))
        (_lab, z) = check(node, _x(rng, n, f), n_cls == 3, tol=PROBA_TOL)
        np.testing.assert_allclose(z.sum(axis=1), 1.0, atol=1e-3)


# binary PROBIT without probabilities: onnxruntime's output is ill-defined; ours raises (tested below)
POST_CASES = [(post, n_cls, proba) for post in ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"]
              for n_cls, proba in [(2, False), (2, True), (4, False), (3, True)]
              if not (post == "PROBIT" and n_cls == 2 and not proba)]


@pytest.mark.parametrize("post,n_cls,proba", POST_CASES)
def test_svc_post_transform(post, n_cls, proba):
    rng = np.random.default_rng(7)
    attrs = _svc_attrs(rng, n_cls, 4, "RBF", proba, False, post)
    if proba:  # moderate probabilities: PROBIT of p near 1e-7 is ill-conditioned in float32
        attrs["prob_a"] = [v * 0.2 for v in attrs["prob_a"]]
    check(_node("SVMClassifier", 2, **attrs), _x(rng, 11, 4) * 0.3,
          tol=PROBIT_TOL if post == "PROBIT" else PROBA_TOL)


def test_svc_binary_probit_raises():
    rng = np.random.default_rng(1)
    node = _node("SVMClassifier", 2, **_svc_attrs(rng, 2, 3, "RBF", False, False, "PROBIT"))
    with pytest.raises(NotImplementedError):
        run_ours(node, _x(rng, 2, 3))


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_svc_input_dtypes(dtype):
    rng = np.random.default_rng(3)
    node = _node("SVMClassifier", 2, **_svc_attrs(rng, 3, 4, "POLY", True, False))
    check(node, _x(rng, 6, 4, dtype), tol=PROBA_TOL)


def test_svc_one_dim_input_and_empty_batch():
    rng = np.random.default_rng(4)
    node = _node("SVMClassifier", 2, **_svc_attrs(rng, 3, 4, "RBF", False, True))
    check(node, rng.standard_normal(4).astype(np.float32), strings=True)
    lab, z = run_ours(node, np.zeros((0, 4), np.float32))
    assert lab.shape == (0,) and lab.dtype == object and z.shape == (0, 3)


def test_svc_sklearn_like_probability():
    """A well-separated 3-class problem: probabilities follow the votes."""
    sv = np.array([[0, 0], [0.2, 0], [5, 5], [5, 5.2], [-5, 5]], np.float32)
    attrs = {"classlabels_ints": [0, 1, 2], "vectors_per_class": [2, 2, 1],
             "support_vectors": sv.ravel().tolist(),
             "coefficients": [1.0, 1, -1, -1, -1, 1, 1, 1, 1, -1], "rho": [0.0, 0.0, 0.0],
             "kernel_type": "RBF", "kernel_params": [0.5, 0.0, 0.0],
             "prob_a": [-4.0, -4.0, -4.0], "prob_b": [0.0, 0.0, 0.0]}
    node = _node("SVMClassifier", 2, **attrs)
    x = np.array([[0.1, 0.0], [5, 5.1], [-5, 5], [2, 2]], np.float32)
    lab, z = check(node, x, tol=PROBA_TOL)
    assert lab[:3].tolist() == [0, 1, 2]
    assert (z[:3].argmax(axis=1) == [0, 1, 2]).all()


# ------------------------------------------------------------------ SVMClassifier, linear mode


@pytest.mark.parametrize("n_cls", [2, 3, 5])
@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"])
@pytest.mark.parametrize("sign", ["pos", "mixed"])
def test_linear_classifier(n_cls, post, sign):
    rng = np.random.default_rng(n_cls * 10 + len(post))
    f = 3
    coef = rng.standard_normal((n_cls, f)).astype(np.float32)
    if sign == "pos":
        coef = np.abs(coef) * 0.5
    attrs = dict(_labels(n_cls, n_cls == 3), coefficients=coef.ravel().tolist(), rho=[0.25],
                 kernel_params=[0.0, 0.0, 0.0], post_transform=post)
    if post == "PROBIT":
        x = rng.uniform(0.05, 0.3, (9, f)).astype(np.float32)  # scores inside (0, 1)
    else:
        x = _x(rng, 9, f)
    check(_node("SVMClassifier", 2, **attrs), x, n_cls == 3,
          tol=PROBIT_TOL if post == "PROBIT" else None)


def test_linear_classifier_binary_label_rules():
    x = np.array([[1, 0], [0, 1], [0.3, 0.2], [-1, -1], [0.2, 0.7], [0, -1]], np.float32)
    for coefs in ([1.0, 0, 0, 1], [0.8, 0.1, 0.1, 0.2], [-1.0, 0, 0, 1], [2.0, 0, 0, -1]):
        for post in ("NONE", "LOGISTIC"):
            attrs = {"classlabels_ints": [3, 7], "coefficients": coefs, "rho": [0.0],
                     "kernel_params": [0.0, 0.0, 0.0], "post_transform": post}
            check(_node("SVMClassifier", 2, **attrs), x)


def test_linear_classifier_with_proba_and_single_class():
    rng = np.random.default_rng(21)
    x = _x(rng, 7, 3)
    for n_cls in (2, 3):  # prob_a given: plain arg max labels, no probability estimate
        attrs = dict(_labels(n_cls, False), coefficients=rng.standard_normal(n_cls * 3).tolist(),
                     rho=[0.1], kernel_params=[0.0, 0.0, 0.0], prob_a=[-1.0], prob_b=[0.0])
        check(_node("SVMClassifier", 2, **attrs), x)
    for post in ("NONE", "LOGISTIC", "PROBIT"):  # one class: one score column
        attrs = {"classlabels_strings": ["only"], "coefficients": [0.1, 0.2, 0.05], "rho": [0.3],
                 "kernel_params": [0.0, 0.0, 0.0], "post_transform": post}
        check(_node("SVMClassifier", 2, **attrs), np.abs(x) * 0.3, strings=True,
              tol=PROBIT_TOL)


# ------------------------------------------------------------------ SVMRegressor


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("one_class", [0, 1])
def test_regressor_svc(kernel, one_class):
    rng = np.random.default_rng(KERNELS.index(kernel) + 5 * one_class)
    for n, f, nsv in [(1, 3, 1), (10, 4, 6), (5, 1, 3)]:
        attrs = {"n_supports": nsv, "support_vectors": rng.standard_normal(nsv * f).tolist(),
                 "coefficients": rng.standard_normal(nsv).tolist(), "rho": [0.3],
                 "kernel_type": kernel, "kernel_params": [0.4, 0.2, 2.0],
                 "one_class": one_class}
        check(_node("SVMRegressor", 1, **attrs), _x(rng, n, f))


def test_regressor_linear_and_1d():
    rng = np.random.default_rng(11)
    attrs = {"coefficients": [0.5, -1.0, 2.0], "rho": [0.1], "kernel_type": "RBF",
             "kernel_params": [0.1, 0.0, 0.0]}  # no support vectors: always linear
    node = _node("SVMRegressor", 1, **attrs)
    check(node, _x(rng, 8, 3))
    check(node, rng.standard_normal(3).astype(np.float32))
    (y,) = run_ours(node, np.zeros((0, 3), np.float32))
    assert y.shape == (0, 1) and y.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_regressor_input_dtypes(dtype):
    """onnxruntime only takes float; compare our dtype result with ours on float32 input."""
    rng = np.random.default_rng(12)
    attrs = {"n_supports": 4, "support_vectors": rng.standard_normal(12).tolist(),
             "coefficients": rng.standard_normal(4).tolist(), "rho": [0.3], "kernel_type": "RBF",
             "kernel_params": [0.4, 0.0, 0.0]}
    node = _node("SVMRegressor", 1, **attrs)
    x = _x(rng, 5, 3, dtype)
    (y,) = run_ours(node, x)
    (e,) = run_ort(node, x.astype(np.float32))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, e, *TOL[np.float32])


def test_regressor_post_transform_follows_spec():
    """onnxruntime ignores post_transform on SVMRegressor; we apply it as the spec says."""
    rng = np.random.default_rng(13)
    attrs = {"coefficients": [0.5, -1.0], "rho": [0.1], "kernel_params": [0.0, 0.0, 0.0]}
    x = _x(rng, 6, 2)
    (raw,) = run_ours(_node("SVMRegressor", 1, **attrs), x)
    (lg,) = run_ours(_node("SVMRegressor", 1, post_transform="LOGISTIC", **attrs), x)
    np.testing.assert_allclose(lg, 1 / (1 + np.exp(-raw.astype(np.float64))), rtol=1e-6)


def test_rbf_far_points_stable():
    """Large offsets: the expanded distance must not lose the small differences."""
    sv = np.array([[1000.0, 1000.0], [1000.5, 1000.0]], np.float32)
    attrs = {"n_supports": 2, "support_vectors": sv.ravel().tolist(), "coefficients": [1.0, 1.0],
             "rho": [0.0], "kernel_type": "RBF", "kernel_params": [1.0, 0.0, 0.0]}
    x = np.array([[1000.25, 1000.0], [1000.0, 1001.0]], np.float32)
    (y,) = run_ours(_node("SVMRegressor", 1, **attrs), x)
    exp = np.exp(-np.array([[0.0625, 0.0625], [1.0, 1.25]])).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(y, exp, rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError):  # feature count mismatch
        run_ours(_node("SVMRegressor", 1, coefficients=[1.0, 2.0], rho=[0.0]),
                 np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):  # no labels
        run_ours(_node("SVMClassifier", 2, coefficients=[1.0], rho=[0.0]),
                 np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError):
        run_ours(_node("SVMRegressor", 1, n_supports=1, support_vectors=[1.0],
                       coefficients=[1.0], rho=[0.0], kernel_type="CUBIC"),
                 np.zeros((2, 1), np.float32))
