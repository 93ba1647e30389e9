"""ai.onnx.ml tree ensembles: TreeEnsemble (opset 5), TreeEnsembleRegressor, TreeEnsembleClassifier.

All three are lowered to one flat form: interior-node arrays (feature, threshold, mode, children)
where a child is a node index >= 0 or a leaf encoded as -(leaf + 1), and per-leaf (target, weight)
entries. Traversal advances every (sample, tree) pair one level per step, vectorized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ml import ML, apply_post_transform
from .registry import op

LEQ, LT, GTE, GT, EQ, NEQ, MEMBER = range(7)
_MODE_NAMES = {"BRANCH_LEQ": LEQ, "BRANCH_LT": LT, "BRANCH_GTE": GTE, "BRANCH_GT": GT,
               "BRANCH_EQ": EQ, "BRANCH_NEQ": NEQ, "BRANCH_MEMBER": MEMBER}
_AGG_NAMES = {"AVERAGE": 0, "SUM": 1, "MIN": 2, "MAX": 3}


@dataclass
class Forest:
    feat: np.ndarray  # (n_nodes,) int64
    thr: np.ndarray  # (n_nodes,) float64
    mode: np.ndarray  # (n_nodes,) int64
    true_: np.ndarray  # encoded child
    false_: np.ndarray
    miss_true: np.ndarray  # bool
    members: np.ndarray  # (n_nodes, width) float64 NaN-padded set values for MEMBER nodes
    roots: np.ndarray  # encoded root of each tree
    leaf_target: np.ndarray  # (n_entries,) target of each leaf entry
    leaf_weight: np.ndarray
    leaf_of_entry: np.ndarray  # (n_entries,) leaf index
    n_leaves: int


def _leaves(f: Forest, x: np.ndarray) -> np.ndarray:
    """(N, T) leaf index reached by each sample in each tree."""
    n = x.shape[0]
    cur = np.broadcast_to(f.roots, (n, len(f.roots))).copy()
    rows = np.broadcast_to(np.arange(n)[:, None], cur.shape)
    for _ in range(len(f.feat) + 1):
        act = cur >= 0
        if not act.any():
            break
        nid = cur[act]
        v = x[rows[act], f.feat[nid]]
        t = f.thr[nid]
        m = f.mode[nid]
        with np.errstate(invalid="ignore"):
            cond = np.select(
                [m == LEQ, m == LT, m == GTE, m == GT, m == EQ, m == NEQ],
                [v <= t, v < t, v >= t, v > t, v == t, v != t],
                default=False)
        if f.members.shape[1]:
            is_mem = m == MEMBER
            if is_mem.any():
                cond = np.where(is_mem, (f.members[nid] == v[:, None]).any(axis=1), cond)
        cond |= np.isnan(v) & f.miss_true[nid]
        cur[act] = np.where(cond, f.true_[nid], f.false_[nid])
    else:
        raise ValueError("tree ensemble has a cycle")
    return -cur - 1


def _aggregate(f: Forest, x: np.ndarray, n_targets: int, agg: int, base=None) -> np.ndarray:
    """(N, n_targets) float64 scores: SUM / AVERAGE / MIN / MAX of the reached leaves' weights.

    A target no reached leaf contributes to scores 0 and gets no base value (onnxruntime).
    """
    n = x.shape[0]
    n_trees = len(f.roots)
    hit = np.zeros((n, n_targets), bool)
    if n == 0 or n_trees == 0:
        out = np.zeros((n, n_targets))
    else:
        leaves = _leaves(f, x)  # (N, T)
        count = np.zeros((f.n_leaves, n_targets))
        np.add.at(count, (f.leaf_of_entry, f.leaf_target), 1.0)
        hit = count[leaves].sum(axis=1) > 0
        if agg in (0, 1):
            table = np.zeros((f.n_leaves, n_targets))
            np.add.at(table, (f.leaf_of_entry, f.leaf_target), f.leaf_weight)
            out = table[leaves].sum(axis=1)
            if agg == 0:
                out = out / n_trees
        else:
            fill = np.inf if agg == 2 else -np.inf
            table = np.full((f.n_leaves, n_targets), fill)
            (np.minimum if agg == 2 else np.maximum).at(table, (f.leaf_of_entry, f.leaf_target),
                                                        f.leaf_weight)
            out = table[leaves].min(axis=1) if agg == 2 else table[leaves].max(axis=1)
            out = np.where(hit, out, 0.0)
    if base is not None and len(base):
        out = np.where(hit, out + np.asarray(base, np.float64), 0.0)
    return out


def _features(X: np.ndarray) -> np.ndarray:
    x = X.astype(np.float64)
    return x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)


# ------------------------------------------------------------------ TreeEnsemble (opset 5)


def _members(modes, membership_values, n_nodes):
    count = int((modes == MEMBER).sum())
    if not count:
        return np.zeros((n_nodes, 0))
    vals = np.asarray(membership_values, np.float64).reshape(-1)
    sets, cur = [], []
    for v in vals:
        if np.isnan(v):
            sets.append(cur)
            cur = []
        else:
            cur.append(v)
    if cur or len(sets) < count:
        sets.append(cur)
    width = max(1, max(len(s) for s in sets))
    table = np.full((n_nodes, width), np.nan)
    for node, s in zip(np.flatnonzero(modes == MEMBER), sets):
        table[node, :len(s)] = s
    return table


@op("TreeEnsemble", since=5, domain=ML)
def tree_ensemble(X, *, aggregate_function=1, leaf_targetids, leaf_weights, membership_values=None,
                  n_targets=None, nodes_falseleafs, nodes_falsenodeids, nodes_featureids,
                  nodes_hitrates=None, nodes_missing_value_tracks_true=None, nodes_modes,
                  nodes_splits, nodes_trueleafs, nodes_truenodeids, post_transform=0, tree_roots):
    modes = np.asarray(nodes_modes).reshape(-1).astype(np.int64)
    nn = len(modes)

    def enc(ids, is_leaf):
        ids = np.asarray(ids, np.int64)
        return np.where(np.asarray(is_leaf, bool), -ids - 1, ids)

    miss = np.zeros(nn, bool) if not nodes_missing_value_tracks_true else \
        np.asarray(nodes_missing_value_tracks_true, bool)
    nleaf = len(leaf_targetids)
    f = Forest(
        feat=np.asarray(nodes_featureids, np.int64), thr=np.asarray(nodes_splits, np.float64).reshape(-1),
        mode=modes, true_=enc(nodes_truenodeids, nodes_trueleafs),
        false_=enc(nodes_falsenodeids, nodes_falseleafs), miss_true=miss,
        members=_members(modes, membership_values, nn), roots=np.asarray(tree_roots, np.int64),
        leaf_target=np.asarray(leaf_targetids, np.int64),
        leaf_weight=np.asarray(leaf_weights, np.float64).reshape(-1),
        leaf_of_entry=np.arange(nleaf), n_leaves=nleaf)
    nt = n_targets if n_targets else (int(f.leaf_target.max()) + 1 if nleaf else 1)
    scores = _aggregate(f, _features(X), nt, int(aggregate_function))
    return np.asarray(apply_post_transform(scores, post_transform).astype(X.dtype))


# ------------------------------------------------------------------ legacy regressor / classifier


def _legacy_forest(nodes_treeids, nodes_nodeids, nodes_featureids, nodes_modes, nodes_values,
                   nodes_truenodeids, nodes_falsenodeids, nodes_missing_value_tracks_true,
                   ent_treeids, ent_nodeids, ent_targets, ent_weights) -> Forest:
    """(treeid, nodeid)-addressed nodes with LEAF modes -> the flat Forest form."""
    tids = np.asarray(nodes_treeids, np.int64)
    nids = np.asarray(nodes_nodeids, np.int64)
    modes = [str(m) for m in nodes_modes]
    is_leaf = np.array([m == "LEAF" for m in modes], bool)
    # every node gets a code: interior index >= 0 or -(leaf + 1)
    interior = np.flatnonzero(~is_leaf)
    leaf_pos = np.flatnonzero(is_leaf)
    code = np.empty(len(tids), np.int64)
    code[interior] = np.arange(len(interior))
    code[leaf_pos] = -np.arange(len(leaf_pos)) - 1
    where = {(int(t), int(n)): i for i, (t, n) in enumerate(zip(tids.tolist(), nids.tolist()))}

    def child(ids):
        ids = np.asarray(ids, np.int64)[interior].tolist()
        return code[np.array([where[k] for k in zip(tids[interior].tolist(), ids)], np.int64)] \
            if len(interior) else np.zeros(0, np.int64)

    tt, ff = np.asarray(nodes_truenodeids, np.int64), np.asarray(nodes_falsenodeids, np.int64)
    it = tids[interior].tolist()
    children = set(zip(it, tt[interior].tolist())) | set(zip(it, ff[interior].tolist()))
    roots, seen = [], set()
    for i, (t, n) in enumerate(zip(tids.tolist(), nids.tolist())):
        if t not in seen and (t, n) not in children:
            seen.add(t)
            roots.append(code[i])
    miss = (np.asarray(nodes_missing_value_tracks_true, bool) if nodes_missing_value_tracks_true
            else np.zeros(len(tids), bool))
    ent_pos = np.array([where[(int(t), int(n))] for t, n in zip(ent_treeids, ent_nodeids)], np.int64)
    ent_leaf = -code[ent_pos] - 1 if len(ent_pos) else np.zeros(0, np.int64)
    return Forest(
        feat=np.asarray(nodes_featureids, np.int64)[interior],
        thr=np.asarray(nodes_values, np.float64).reshape(-1)[interior],
        mode=np.array([_MODE_NAMES[modes[i]] for i in interior], np.int64),
        true_=child(nodes_truenodeids), false_=child(nodes_falsenodeids), miss_true=miss[interior],
        members=np.zeros((len(interior), 0)), roots=np.array(roots, np.int64),
        leaf_target=np.asarray(ent_targets, np.int64), leaf_weight=np.asarray(ent_weights, np.float64),
        leaf_of_entry=ent_leaf, n_leaves=len(leaf_pos))


def _first(*vals):
    """The first given (non-empty) of several alternative attributes, else the last one."""
    for v in vals:
        if v is not None and (not hasattr(v, "__len__") or len(v)):
            return v
    return vals[-1]


@op("TreeEnsembleRegressor", since=1, domain=ML)
def tree_ensemble_regressor(X, *, aggregate_function="SUM", base_values=None, base_values_as_tensor=None,
                            n_targets=None, nodes_falsenodeids=None, nodes_featureids=None,
                            nodes_hitrates=None, nodes_hitrates_as_tensor=None,
                            nodes_missing_value_tracks_true=None, nodes_modes=None, nodes_nodeids=None,
                            nodes_treeids=None, nodes_truenodeids=None, nodes_values=None,
                            nodes_values_as_tensor=None, post_transform="NONE", target_ids=None,
                            target_nodeids=None, target_treeids=None, target_weights=None,
                            target_weights_as_tensor=None):
    f = _legacy_forest(nodes_treeids, nodes_nodeids, nodes_featureids, nodes_modes,
                       _first(nodes_values_as_tensor, nodes_values), nodes_truenodeids,
                       nodes_falsenodeids, nodes_missing_value_tracks_true, target_treeids or [],
                       target_nodeids or [], target_ids or [],
                       _first(target_weights_as_tensor, target_weights, []))
    nt = n_targets or (int(max(target_ids)) + 1 if target_ids else 1)
    scores = _aggregate(f, _features(X), nt, _AGG_NAMES[aggregate_function],
                        _first(base_values_as_tensor, base_values))
    return np.asarray(apply_post_transform(scores, post_transform).astype(np.float32))


op("TreeEnsembleRegressor", since=3, domain=ML)(tree_ensemble_regressor)


@op("TreeEnsembleClassifier", since=1, domain=ML)
def tree_ensemble_classifier(X, *, base_values=None, base_values_as_tensor=None, class_ids=None,
                             class_nodeids=None, class_treeids=None, class_weights=None,
                             class_weights_as_tensor=None, classlabels_int64s=None,
                             classlabels_strings=None, nodes_falsenodeids=None, nodes_featureids=None,
                             nodes_hitrates=None, nodes_hitrates_as_tensor=None,
                             nodes_missing_value_tracks_true=None, nodes_modes=None, nodes_nodeids=None,
                             nodes_treeids=None, nodes_truenodeids=None, nodes_values=None,
                             nodes_values_as_tensor=None, post_transform="NONE"):
    """Sums class weights; two labels with weights on a single class is onnxruntime's binary case."""
    labels = (np.array(classlabels_strings, dtype=object) if classlabels_strings
              else np.asarray(classlabels_int64s or [], np.int64))
    n_cls = len(labels)
    weights = np.asarray(_first(class_weights_as_tensor, class_weights, []), np.float64).reshape(-1)
    cids = np.asarray(class_ids or [], np.int64)
    f = _legacy_forest(nodes_treeids, nodes_nodeids, nodes_featureids, nodes_modes,
                       _first(nodes_values_as_tensor, nodes_values), nodes_truenodeids,
                       nodes_falsenodeids, nodes_missing_value_tracks_true, class_treeids or [],
                       class_nodeids or [], cids, weights)
    x = _features(X)
    k = max(n_cls, 1)
    raw = _aggregate(f, x, k, 1)
    hits = _aggregate(Forest(**{**f.__dict__, "leaf_weight": np.ones(len(cids))}), x, k, 1) > 0
    base = np.asarray(_first(base_values_as_tensor, base_values, []), np.float64).reshape(-1)
    if n_cls != 2:
        if len(base):
            raw, hits = raw + base, np.ones_like(hits)
        arg = np.argmax(np.where(hits, raw, -np.inf), axis=1) if n_cls else np.zeros(len(x), np.int64)
        scores = apply_post_transform(raw, post_transform)
        return labels[arg], np.asarray(scores.astype(np.float32))
    return _binary(raw, hits, base, labels, cids, weights, post_transform)


def _binary(raw, hits, base, labels, cids, weights, post_transform):
    """Two class labels, replicating onnxruntime's score layout and thresholds: base values are
    added only to classes some reached leaf scored, a lone scored class 0 becomes [1-s, s] (all
    weights >= 0) or [-s, s], and the label is the class-1 (else class-0) score past 0.5 / 0."""
    s0, s1 = raw[:, 0], raw[:, 1]
    h0, h1 = hits[:, 0], hits[:, 1]
    if len(base) == 2:
        s0 = np.where(h0, s0 + base[0], s0)
        s1 = np.where(h1, base[1] + s0, s1)  # onnxruntime adds class 0's score here, not class 1's
        two = np.ones(len(s0), bool)
    else:
        if len(base) == 1:
            s0 = np.where(h0, s0 + base[0], s0)
        two = h1
    pos = np.where(two & h1, s1, np.where(h0, s0, 0.0))
    single_class = len(set(cids.tolist())) == 1
    positive = bool((weights >= 0).all())
    thr = 0.5 if (single_class and positive) else 0.0
    lab = np.where(pos > thr, labels[1], labels[0])
    z2 = apply_post_transform(np.stack([s0, s1], axis=1), post_transform)
    if post_transform in ("LOGISTIC", "PROBIT"):
        p = apply_post_transform(s0, post_transform)
        z1 = np.stack([1 - p, p], axis=1)
    elif single_class and positive:
        z1 = np.stack([1 - s0, s0], axis=1)
    else:
        z1 = np.stack([-s0, s0], axis=1)
    scores = np.where(two[:, None], z2, z1)
    return np.asarray(lab, dtype=labels.dtype), np.asarray(scores.astype(np.float32))


op("TreeEnsembleClassifier", since=3, domain=ML)(tree_ensemble_classifier)
