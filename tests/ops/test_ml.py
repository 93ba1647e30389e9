"""ai.onnx.ml kernels vs onnxruntime (one-node models). Also hosts the one-node oracle helpers
(run_ours / run_ort / assert_close) that test_quant.py and test_rnn.py import."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from jitort.dtypes import onnx_code
from jitort.ops.attrs import node_attributes
from jitort.ops.registry import KernelContext, call, lookup



def make_node(op_type, inputs, outputs, domain="", **attrs):
    return helper.make_node(op_type, inputs, outputs, domain=domain, **attrs)


def run_ours(node, feeds: list, opset: int):
    entry = lookup(node.op_type, node.domain, opset, node.name)
    ctx = KernelContext(num_outputs=len(node.output), opset=opset)
    args = [None if n == "" else a for n, a in zip(node.input, feeds)]
    got = call(entry, list(args), node_attributes(node), ctx)
    return [g for n, g in zip(node.output, got) if n]


def run_ort(node, feeds: list, opset: int, out_types: list, ml_opset: int | None = None):
    """out_types: (elem_type code, shape or None) per non-empty output."""
    import onnxruntime as ort

    ins = [helper.make_tensor_value_info(n, onnx_code(a.dtype), list(a.shape))
           for n, a in zip(node.input, feeds) if n]
    outs = [helper.make_tensor_value_info(n, t, s) for n, (t, s) in zip([o for o in node.output if o], out_types)]
    g = helper.make_graph([node], "g", ins, outs)
    imports = [helper.make_opsetid("", opset if node.domain in ("", "ai.onnx") else 21)]
    if node.domain not in ("", "ai.onnx"):
        imports.append(helper.make_opsetid(node.domain, ml_opset or opset))
    m = helper.make_model(g, opset_imports=imports)
    m.ir_version = min(m.ir_version, 10)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a for n, a in zip(node.input, feeds) if n})


def assert_close(got, exp, rtol, atol, exact_dtype=True):
    exp = np.asarray(exp)
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == exp.shape, (got.shape, exp.shape)
    if exact_dtype and not (got.dtype == object and exp.dtype.kind in "OUS"):
        assert got.dtype == exp.dtype, (got.dtype, exp.dtype)
    if exp.dtype.kind in "OUS" or got.dtype == object:
        assert got.astype(object).tolist() == exp.astype(object).tolist()
    elif exp.dtype.kind in "iub":
        np.testing.assert_array_equal(got, exp)
    else:
        np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64), rtol=rtol, atol=atol)


# ------------------------------------------------------------------ tolerances (per dtype)

TOL = {np.float32: (1e-5, 1e-5), np.float64: (1e-12, 1e-12)}
ML = "ai.onnx.ml"
RNG = np.random.default_rng(0)


def check(node, feeds, out_types, opset=3, tol=TOL[np.float32], exact_dtype=True):
    ours = run_ours(node, feeds, opset)
    exp = run_ort(node, feeds, 21, out_types, ml_opset=opset)
    assert len(ours) == len(exp)
    for g, e in zip(ours, exp):
        assert_close(g, e, *tol, exact_dtype=exact_dtype)
    return ours


F, D, I64, I32, S = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64,
                     onnx.TensorProto.INT32, onnx.TensorProto.STRING)


# ------------------------------------------------------------------ simple ops


def test_binarizer_scaler_normalizer_float():
    x = (RNG.standard_normal((5, 3)) * 4).astype(np.float32)
    check(make_node("Binarizer", ["x"], ["y"], ML, threshold=0.5), [x], [(F, None)], 1)
    check(make_node("Scaler", ["x"], ["y"], ML, offset=[0.5, -1.0, 2.0], scale=[2.0, 0.5, -1.0]),
          [x], [(F, None)], 1)
    check(make_node("Scaler", ["x"], ["y"], ML, offset=[0.25], scale=[3.0]), [x], [(F, None)], 1)
    for norm in ["MAX", "L1", "L2"]:
        check(make_node("Normalizer", ["x"], ["y"], ML, norm=norm), [x], [(F, None)], 1)


@pytest.mark.parametrize("dt", [np.float64, np.int64, np.int32])
def test_binarizer_scaler_normalizer_other_types(dt):
    """onnxruntime implements these for float only: a NumPy oracle for the other types."""
    x = (RNG.standard_normal((5, 3)) * 4).astype(dt)
    xf = x.astype(np.float64)
    y = run_ours(make_node("Binarizer", ["x"], ["y"], ML, threshold=0.5), [x], 1)[0]
    assert_close(y, (xf > 0.5).astype(dt), 0, 0)
    y = run_ours(make_node("Scaler", ["x"], ["y"], ML, offset=[0.5, -1.0, 2.0], scale=[2.0, 0.5, -1.0]),
                 [x], 1)[0]
    assert_close(y, ((xf - [0.5, -1.0, 2.0]) * [2.0, 0.5, -1.0]).astype(np.float32), *TOL[np.float32])
    y = run_ours(make_node("Normalizer", ["x"], ["y"], ML, norm="L2"), [x], 1)[0]
    n = np.sqrt((xf ** 2).sum(1, keepdims=True))
    assert_close(y, (xf / np.where(n == 0, 1, n)).astype(np.float32), *TOL[np.float32])
    y = run_ours(make_node("Normalizer", ["x"], ["y"], ML, norm="MAX"), [x], 1)[0]
    m = xf.max(1, keepdims=True)
    assert_close(y, (xf / np.where(m == 0, 1, m)).astype(np.float32), *TOL[np.float32])


def test_normalizer_1d_and_zero_row():
    x = np.array([[0, 0, 0], [1, -2, 3]], np.float32)
    for norm in ["MAX", "L1", "L2"]:
        check(make_node("Normalizer", ["x"], ["y"], ML, norm=norm), [x], [(F, None)], 1)


@pytest.mark.parametrize("shape,idx", [((4, 5), [0, 4, 2]), ((2, 3, 6), [5, 0]), ((7,), [3, 3])])
def test_array_feature_extractor(shape, idx):
    x = RNG.standard_normal(shape).astype(np.float32)
    check(make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], ML), [x, np.array(idx, np.int64)],
          [(F, None)], 1)
    xs = np.array([str(v) for v in range(int(np.prod(shape)))], dtype=object).reshape(shape)
    check(make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], ML), [xs, np.array(idx, np.int64)],
          [(S, None)], 1)


def test_array_feature_extractor_out_of_range():
    node = make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], ML)
    with pytest.raises(IndexError):
        run_ours(node, [np.zeros((2, 3), np.float32), np.array([3], np.int64)], 1)


def test_one_hot_encoder():
    node = make_node("OneHotEncoder", ["x"], ["y"], ML, cats_int64s=[3, 1, 7], zeros=1)
    check(node, [np.array([[1, 3, 5], [7, 7, 1]], np.int64)], [(F, None)], 1)
    check(node, [np.array([1.0, 3.0, 9.0], np.float32)], [(F, None)], 1)
    node = make_node("OneHotEncoder", ["x"], ["y"], ML, cats_strings=["a", "b"], zeros=1)
    check(node, [np.array([["a", "c"], ["b", "a"]], dtype=object)], [(F, None)], 1)
    node = make_node("OneHotEncoder", ["x"], ["y"], ML, cats_int64s=[3, 1], zeros=0)
    with pytest.raises(ValueError):
        run_ours(node, [np.array([2], np.int64)], 1)


def test_imputer():
    x = np.array([[1, np.nan, 3], [np.nan, 5, np.nan]], np.float32)
    check(make_node("Imputer", ["x"], ["y"], ML, imputed_value_floats=[9.0, 8.0, 7.0],
                    replaced_value_float=float("nan")), [x], [(F, None)], 1)
    check(make_node("Imputer", ["x"], ["y"], ML, imputed_value_floats=[-1.0], replaced_value_float=3.0),
          [x], [(F, None)], 1)
    xi = np.array([[0, 2, 0], [4, 0, 6]], np.int64)
    check(make_node("Imputer", ["x"], ["y"], ML, imputed_value_int64s=[7, 8, 9], replaced_value_int64=0),
          [xi], [(I64, None)], 1)


def test_feature_vectorizer():
    a = RNG.standard_normal((3, 2)).astype(np.float32)
    b = np.arange(12, dtype=np.int64).reshape(3, 4)
    c = RNG.standard_normal((3, 1)).astype(np.float32)
    node = make_node("FeatureVectorizer", ["a", "b", "c"], ["y"], ML, inputdimensions=[2, 3, 1])
    ours = run_ours(node, [a, b, c], 1)[0]
    exp = np.concatenate([a, b[:, :3].astype(np.float32), c.astype(np.float32)], axis=1)
    assert_close(ours, exp, *TOL[np.float32])
    check(make_node("FeatureVectorizer", ["a", "c"], ["y"], ML, inputdimensions=[2, 1]), [a, c],
          [(F, None)], 1)


def test_category_mapper():
    kw = dict(cats_int64s=[1, 5, 9], cats_strings=["x", "y", "z"], default_int64=-7, default_string="??")
    node = make_node("CategoryMapper", ["x"], ["y"], ML, **kw)
    check(node, [np.array([["y", "q"], ["z", "x"]], dtype=object)], [(I64, None)], 1)
    check(node, [np.array([5, 2, 9, 1], np.int64)], [(S, None)], 1)


# ------------------------------------------------------------------ LabelEncoder


def test_label_encoder_v1():
    node = make_node("LabelEncoder", ["x"], ["y"], ML, classes_strings=["a", "b", "c"], default_int64=42)
    check(node, [np.array(["b", "z", "a"], dtype=object)], [(I64, None)], 1)
    node = make_node("LabelEncoder", ["x"], ["y"], ML, classes_strings=["a", "b"], default_string="?")
    check(node, [np.array([1, 0, 5, -1], np.int64)], [(S, None)], 1)


@pytest.mark.parametrize("opset", [2, 4])
def test_label_encoder_v2(opset):
    node = make_node("LabelEncoder", ["x"], ["y"], ML, keys_floats=[0.5, float("nan"), -2.0],
                     values_int64s=[1, 2, 3], default_int64=-9)
    check(node, [np.array([0.5, np.nan, 7, -2.0], np.float32)], [(I64, None)], opset)
    node = make_node("LabelEncoder", ["x"], ["y"], ML, keys_int64s=[4, 2], values_strings=["four", "two"])
    check(node, [np.array([[2, 3], [4, 4]], np.int64)], [(S, None)], opset)
    node = make_node("LabelEncoder", ["x"], ["y"], ML, keys_strings=["u", "v"], values_floats=[1.5, 2.5])
    check(node, [np.array(["v", "w", "u"], dtype=object)], [(F, None)], opset)


def test_label_encoder_v4_tensors():
    keys = helper.make_tensor("k", I32, [3], [3, 1, 2])
    vals = helper.make_tensor("v", D, [3], [0.1, 0.2, 0.3])
    dflt = helper.make_tensor("d", D, [1], [-1.5])
    node = make_node("LabelEncoder", ["x"], ["y"], ML, keys_tensor=keys, values_tensor=vals,
                     default_tensor=dflt)
    y = run_ours(node, [np.array([[1, 2], [9, 3]], np.int32)], 4)[0]  # onnxruntime lacks int32 keys
    assert_close(y, np.array([[0.2, 0.3], [-1.5, 0.1]]), *TOL[np.float64])
    keys = helper.make_tensor("k", S, [2], [b"a", b"b"])
    vals = helper.make_tensor("v", onnx.TensorProto.INT16, [2], [7, -3])
    node = make_node("LabelEncoder", ["x"], ["y"], ML, keys_tensor=keys, values_tensor=vals)
    y = run_ours(node, [np.array(["b", "a", "c"], dtype=object)], 4)[0]
    assert_close(y, np.array([-3, 7, -1], np.int16), 0, 0)
    node = make_node("LabelEncoder", ["x"], ["y"], ML, keys_int64s=[5, 6], values_strings=["five", "six"],
                     default_string="none")
    check(node, [np.array([6, 7, 5], np.int64)], [(S, None)], 4)


# ------------------------------------------------------------------ linear models


@pytest.mark.parametrize("pt", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
def test_linear_regressor(pt):
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    node = make_node("LinearRegressor", ["x"], ["y"], ML, coefficients=RNG.standard_normal(8).tolist(),
                     intercepts=[0.5, -0.25], targets=2, post_transform=pt)
    check(node, [x], [(F, None)], 1)


@pytest.mark.parametrize("pt", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("n_rows,labels", [(3, [4, 5, 6]), (1, [0, 1]), (2, ["a", "b"]), (1, ["n", "p"])])
def test_linear_classifier(pt, n_rows, labels):
    x = RNG.standard_normal((7, 3)).astype(np.float32)
    kw = {"classlabels_strings" if isinstance(labels[0], str) else "classlabels_ints": labels}
    node = make_node("LinearClassifier", ["x"], ["y", "z"], ML,
                     coefficients=RNG.standard_normal(3 * n_rows).tolist(),
                     intercepts=RNG.standard_normal(n_rows).tolist(), post_transform=pt, **kw)
    check(node, [x], [(S if isinstance(labels[0], str) else I64, None), (F, None)], 1)


# ------------------------------------------------------------------ trees


def _random_tree_nodes(n_trees, depth, n_feat, rng, modes=("BRANCH_LEQ",)):
    """Legacy (treeid, nodeid) encoding of complete binary trees."""
    t_ids, n_ids, feats, vals, mds, tr, fa, miss = [], [], [], [], [], [], [], []
    leaves = []
    for t in range(n_trees):
        n_nodes = 2 ** (depth + 1) - 1
        for n in range(n_nodes):
            t_ids.append(t)
            n_ids.append(n)
            if n >= 2 ** depth - 1:
                feats.append(0), vals.append(0.0), mds.append("LEAF"), tr.append(0), fa.append(0)
                miss.append(0)
                leaves.append((t, n))
            else:
                feats.append(int(rng.integers(n_feat)))
                vals.append(float(np.float32(rng.standard_normal())))
                mds.append(str(rng.choice(modes)))
                tr.append(2 * n + 1), fa.append(2 * n + 2)
                miss.append(int(rng.integers(2)))
    return dict(nodes_treeids=t_ids, nodes_nodeids=n_ids, nodes_featureids=feats, nodes_values=vals,
                nodes_modes=mds, nodes_truenodeids=tr, nodes_falsenodeids=fa,
                nodes_missing_value_tracks_true=miss), leaves


MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ")


def _x(n, f):
    x = RNG.standard_normal((n, f)).astype(np.float32)
    x[0, 0] = np.nan
    x[1, :] = np.nan
    return x


@pytest.mark.parametrize("agg", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("pt", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_tree_ensemble_regressor(agg, pt):
    rng = np.random.default_rng(1)
    nodes, leaves = _random_tree_nodes(4, 3, 5, rng, MODES)
    tgt = dict(target_treeids=[t for t, _ in leaves], target_nodeids=[n for _, n in leaves],
               target_ids=[int(rng.integers(2)) for _ in leaves],
               target_weights=rng.standard_normal(len(leaves)).astype(np.float32).tolist())
    node = make_node("TreeEnsembleRegressor", ["x"], ["y"], ML, n_targets=2, aggregate_function=agg,
                     post_transform=pt, base_values=[0.5, -1.0], **nodes, **tgt)
    check(node, [_x(20, 5)], [(F, None)], 3)


@pytest.mark.parametrize("labels", [[10, 20, 30], ["a", "b", "c", "d"]])
@pytest.mark.parametrize("pt", ["NONE", "SOFTMAX", "LOGISTIC"])
def test_tree_ensemble_classifier_multiclass(labels, pt):
    rng = np.random.default_rng(2)
    nodes, leaves = _random_tree_nodes(3, 3, 4, rng, MODES)
    ent = [(t, n, c) for t, n in leaves for c in range(len(labels))]
    kw = dict(class_treeids=[e[0] for e in ent], class_nodeids=[e[1] for e in ent],
              class_ids=[e[2] for e in ent],
              class_weights=rng.standard_normal(len(ent)).astype(np.float32).tolist())
    lab = {"classlabels_strings" if isinstance(labels[0], str) else "classlabels_int64s": labels}
    node = make_node("TreeEnsembleClassifier", ["x"], ["y", "z"], ML, post_transform=pt, **nodes, **kw, **lab)
    check(node, [_x(25, 4)], [(S if isinstance(labels[0], str) else I64, None), (F, None)], 3)


@pytest.mark.parametrize("cls", [0, 1])
@pytest.mark.parametrize("positive", [True, False])
@pytest.mark.parametrize("base", [[], [0.1], [0.2, 0.3]])
@pytest.mark.parametrize("pt", ["NONE", "LOGISTIC"])
def test_tree_ensemble_classifier_binary(cls, positive, base, pt):
    rng = np.random.default_rng(3)
    nodes, leaves = _random_tree_nodes(3, 2, 3, rng)
    w = rng.uniform(0, 0.4, len(leaves)) if positive else rng.standard_normal(len(leaves))
    kw = dict(class_treeids=[t for t, _ in leaves], class_nodeids=[n for _, n in leaves],
              class_ids=[cls] * len(leaves), class_weights=w.astype(np.float32).tolist())
    if base:
        kw["base_values"] = base
    node = make_node("TreeEnsembleClassifier", ["x"], ["y", "z"], ML, post_transform=pt,
                     classlabels_int64s=[0, 1], **nodes, **kw)
    check(node, [_x(30, 3)], [(I64, None), (F, None)], 3)


def test_tree_ensemble_v5_matches_regressor():
    """TreeEnsemble (opset 5) against ORT, including a BRANCH_MEMBER node and a single-leaf tree."""
    modes = helper.make_tensor("m", onnx.TensorProto.UINT8, [4], [0, 6, 3, 0])
    splits = helper.make_tensor("s", F, [4], [0.5, 0.0, -1.0, 9.0])
    leaf_w = helper.make_tensor("w", F, [6], [1.0, 2.0, 3.0, 4.0, 5.0, 10.0])
    membership = helper.make_tensor("mv", F, [4], [1.0, 2.0, 3.5, float("nan")])
    kw = dict(nodes_featureids=[0, 1, 2, 0], nodes_modes=modes, nodes_splits=splits,
              nodes_truenodeids=[1, 0, 2, 5], nodes_trueleafs=[0, 1, 1, 1],
              nodes_falsenodeids=[2, 1, 3, 5], nodes_falseleafs=[0, 1, 1, 1],
              nodes_missing_value_tracks_true=[1, 0, 0, 0], leaf_targetids=[0, 1, 0, 1, 0, 1],
              leaf_weights=leaf_w, tree_roots=[0, 3], membership_values=membership, n_targets=2)
    x = np.array([[0.0, 1.0, 0.0], [1.0, 3.5, -2.0], [np.nan, 7.0, 5.0], [2.0, 2.0, np.nan]], np.float32)
    for agg in range(4):
        node = make_node("TreeEnsemble", ["x"], ["y"], ML, aggregate_function=agg, **kw)
        check(node, [x], [(F, None)], 5)
