"""ai.onnx.ml support vector machines: SVMClassifier and SVMRegressor.

One kernel evaluation (a BLAS matmul, or the expanded squared distance for RBF) covers every
(sample, support vector) pair; the one-vs-one decision values of all class pairs are then one
more matmul against a (n_vectors, n_pairs) weight matrix built from the dual coefficients.
Where the spec is silent (label choice, binary score layout, probability coupling) we follow
onnxruntime, which is what exported models are validated with.
"""

from __future__ import annotations

import numpy as np

from .ml import ML, apply_post_transform
from .registry import op

_KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


def _features(X: np.ndarray, n_features: int | None) -> np.ndarray:
    """X as float64 [N, F]; a 1-D X is one sample."""
    x = np.asarray(X)
    if x.dtype == object or x.dtype.kind not in "fiub":
        raise TypeError(f"SVM: unsupported input dtype {x.dtype}")
    x = x.astype(np.float64)
    x = x.reshape(1, -1) if x.ndim <= 1 else x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"SVM: input has {x.shape[1]} features, the model expects {n_features}")
    return x


def _kernel_params(kernel_params):
    kp = [float(v) for v in (kernel_params or [])] + [0.0, 0.0, 0.0]
    return kp[0], kp[1], kp[2]  # gamma, coef0, degree


def _kernel(x: np.ndarray, sv: np.ndarray, kind: str, gamma: float, coef0: float,
            degree: float) -> np.ndarray:
    """[N, V] kernel values K(x_n, sv_v)."""
    if kind not in _KERNELS:
        raise ValueError(f"SVM: unknown kernel_type {kind!r}")
    if kind == "RBF":
        # ||x - s||^2 = ||x||^2 + ||s||^2 - 2 x.s, after centring both on the support vectors'
        # mean to keep the cancellation small.
        c = sv.mean(axis=0) if sv.shape[0] else 0.0
        xc, sc = x - c, sv - c
        d2 = np.einsum("nf,nf->n", xc, xc)[:, None] + np.einsum("vf,vf->v", sc, sc)[None, :]
        d2 -= 2.0 * (xc @ sc.T)
        return np.exp(-gamma * np.maximum(d2, 0.0))
    k = x @ sv.T
    if kind == "LINEAR":
        return k
    k = gamma * k + coef0
    if kind == "POLY":
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return np.power(k, degree)
    return np.tanh(k)


def _floats(v) -> np.ndarray:
    return np.asarray(v if v is not None else [], np.float32).astype(np.float64)


# ------------------------------------------------------------------ SVMRegressor


@op("SVMRegressor", since=1, domain=ML)
def svm_regressor(X, *, coefficients=None, kernel_params=None, kernel_type="LINEAR",
                  n_supports=0, one_class=0, post_transform="NONE", rho=None,
                  support_vectors=None):
    """[N, F] -> [N, 1] float32: sum_v coef_v K(x, sv_v) + rho (x . coef + rho without vectors)."""
    coef = _floats(coefficients)
    if coef.size == 0:
        raise ValueError("SVMRegressor: coefficients are empty")
    r = _floats(rho)
    bias = r[0] if r.size else 0.0
    if n_supports > 0:
        sv = _floats(support_vectors).reshape(n_supports, -1)
        x = _features(X, sv.shape[1])
        y = _kernel(x, sv, kernel_type, *_kernel_params(kernel_params)) @ coef[:n_supports] + bias
    else:  # liblinear form: the kernel is always linear
        x = _features(X, coef.size)
        y = x @ coef + bias
    y = y[:, None]
    if one_class:
        y = np.where(y > 0, 1.0, -1.0)
    y = apply_post_transform(y, post_transform)
    return np.asarray(y.astype(np.float32))


# ------------------------------------------------------------------ SVMClassifier


def _pair_weights(coef: np.ndarray, vpc: np.ndarray, pi: np.ndarray, pj: np.ndarray) -> np.ndarray:
    """[V, P] matrix W with decision(i, j) = K @ W[:, p] (+ rho[p]) for the pair p = (i, j).

    libsvm layout: coef is [C-1, V]; a vector of class i weighs in pair (i, j) with coef[j-1]
    when j > i, a vector of class j with coef[i].
    """
    n_vec = coef.shape[1]
    cls = np.repeat(np.arange(len(vpc)), vpc)[:, None]  # class of each support vector
    row = np.where(cls == pi[None, :], pj[None, :] - 1,
                   np.where(cls == pj[None, :], pi[None, :], -1))
    w = coef[np.maximum(row, 0), np.arange(n_vec)[:, None]]
    return np.where(row >= 0, w, 0.0)


def _logistic(s: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1 / (1 + e), e / (1 + e))


def _pairwise_coupling(r: np.ndarray) -> np.ndarray:
    """Class probabilities [N, C] from pairwise ones r[n, i, j] = P(i | i or j).

    Wu, Lin & Weng (2004) method 2, as libsvm's multiclass_probability and onnxruntime run it:
    at most 100 sweeps, stop when max_t |(Qp)_t - pQp| < 0.005 / C. Vectorized over samples;
    converged samples leave the active set.
    """
    n, k, _ = r.shape
    q = -r * np.swapaxes(r, 1, 2)
    diag = np.square(r).sum(axis=1)  # Q[t, t] = sum_{j != t} r[j, t]^2 (r's diagonal is 0)
    idx = np.arange(k)
    q[:, idx, idx] = diag
    p = np.full((n, k), 1.0 / k)
    eps = 0.005 / k
    act = np.arange(n)
    for _ in range(100):
        if act.size == 0:
            break
        qa, pa = q[act], p[act]
        qp = np.einsum("nij,nj->ni", qa, pa)
        pqp = np.einsum("ni,ni->n", pa, qp)
        done = np.abs(qp - pqp[:, None]).max(axis=1) < eps
        keep = ~done
        act, qa, pa, qp, pqp = act[keep], qa[keep], pa[keep], qp[keep], pqp[keep]
        for t in range(k):
            qtt = qa[:, t, t]
            diff = (pqp - qp[:, t]) / qtt
            pa[:, t] += diff
            d1 = 1 + diff
            pqp = (pqp + diff * (diff * qtt + 2 * qp[:, t])) / d1 / d1
            qp = (qp + diff[:, None] * qa[:, t, :]) / d1[:, None]
            pa /= d1[:, None]
        p[act] = pa
    return p


def _labels(classlabels_ints, classlabels_strings):
    if classlabels_strings:
        return np.array(classlabels_strings, dtype=object)
    if classlabels_ints:
        return np.asarray(classlabels_ints, np.int64)
    raise ValueError("SVMClassifier: one of classlabels_strings, classlabels_ints is required")


@op("SVMClassifier", since=1, domain=ML)
def svm_classifier(X, *, classlabels_ints=None, classlabels_strings=None, coefficients=None,
                   kernel_params=None, kernel_type="LINEAR", post_transform="NONE", prob_a=None,
                   prob_b=None, rho=None, support_vectors=None, vectors_per_class=None):
    """Returns (labels [N], scores [N, S] float32).

    SVC (vectors_per_class given): S = number of class pairs (2 columns for a binary model, C
    with prob_a/prob_b), label = most one-vs-one votes. Linear (no support vectors): S = C,
    scores = X @ coef^T + rho[0], label = arg max.
    """
    labels = _labels(classlabels_ints, classlabels_strings)
    coef = _floats(coefficients)
    if coef.size == 0:
        raise ValueError("SVMClassifier: coefficients are empty")
    r = _floats(rho)
    pa, pb = _floats(prob_a), _floats(prob_b)
    if pa.size != pb.size:
        raise ValueError("SVMClassifier: prob_a and prob_b differ in length")
    have_proba = pa.size > 0
    vpc = np.asarray(vectors_per_class or [], np.int64)
    n_vec = int(vpc.sum()) if vpc.size else 0
    if n_vec > 0:
        return _svc(X, labels, coef, r, pa, pb, vpc, n_vec, _floats(support_vectors),
                    kernel_type, kernel_params, post_transform, have_proba)
    return _linear(X, labels, coef, r, post_transform, have_proba)


def _linear(X, labels, coef, r, post_transform, have_proba):
    n_cls = len(labels)
    if coef.size % n_cls:
        raise ValueError("SVMClassifier: coefficients do not split into one row per class")
    w = coef.reshape(n_cls, -1)
    x = _features(X, w.shape[1])
    scores = x @ w.T + (r[0] if r.size else 0.0)
    n = x.shape[0]
    best = np.argmax(scores, axis=1) if n and n_cls else np.zeros(n, np.int64)
    lab = labels[best]
    if n_cls == 2 and not have_proba:  # onnxruntime's binary rule on the top score
        top = scores.max(axis=1) if n else np.zeros(0)
        if (coef >= 0).all():
            lab = np.where(top >= 0.5, labels[1], lab)
        else:
            lab = np.where(top > 0, labels[1], lab)
    if n_cls > 1 or post_transform == "PROBIT":
        scores = apply_post_transform(scores, post_transform)
    return np.asarray(lab, dtype=labels.dtype), np.asarray(scores.astype(np.float32))


def _svc(X, labels, coef, r, pa, pb, vpc, n_vec, sv, kernel_type, kernel_params, post_transform,
         have_proba):
    n_cls = len(labels)
    if len(vpc) != n_cls:
        raise ValueError("SVMClassifier: vectors_per_class and class labels differ in length")
    if n_cls < 2:
        raise ValueError("SVMClassifier: a support-vector model needs at least 2 classes")
    pi, pj = np.triu_indices(n_cls, 1)  # pairs (0,1), (0,2), ..., (1,2), ... in libsvm order
    n_pairs = len(pi)
    if coef.size < (n_cls - 1) * n_vec:
        raise ValueError("SVMClassifier: too few coefficients for the support vectors")
    if r.size < n_pairs or (have_proba and pa.size < n_pairs):
        raise ValueError("SVMClassifier: rho / prob_a / prob_b need one value per class pair")
    if sv.size % n_vec:
        raise ValueError("SVMClassifier: support_vectors do not split into vectors_per_class")
    sv = sv.reshape(n_vec, -1)
    x = _features(X, sv.shape[1])
    k = _kernel(x, sv, kernel_type, *_kernel_params(kernel_params))
    w = _pair_weights(coef[: (n_cls - 1) * n_vec].reshape(n_cls - 1, n_vec), vpc, pi, pj)
    dec = k @ w + r[:n_pairs]  # [N, P] one-vs-one decision values
    win_i = (dec > 0).astype(np.float64)
    onehot = np.eye(n_cls)
    votes = win_i @ onehot[pi] + (1.0 - win_i) @ onehot[pj]
    lab = labels[np.argmax(votes, axis=1)] if x.shape[0] else labels[:0]
    lab = np.asarray(lab, dtype=labels.dtype)
    if have_proba:
        # libsvm Platt scaling per pair, then pairwise coupling into C class probabilities
        p = 1.0 - _logistic(dec * pa[:n_pairs] + pb[:n_pairs])
        p = np.clip(p, 1e-7, 1 - 1e-7)
        rr = np.zeros((x.shape[0], n_cls, n_cls))
        rr[:, pi, pj] = p
        rr[:, pj, pi] = 1.0 - p
        scores = apply_post_transform(_pairwise_coupling(rr), post_transform)
    elif n_cls == 2:  # one decision value s; two columns as onnxruntime writes them
        s = dec[:, 0]
        if post_transform == "NONE":
            scores = np.stack([-s, s], axis=1)
        elif post_transform == "LOGISTIC":
            scores = np.stack([_logistic(-s), _logistic(s)], axis=1)
        elif post_transform in ("SOFTMAX", "SOFTMAX_ZERO"):  # left untransformed
            scores = np.stack([1.0 - s, s], axis=1)
        else:  # onnxruntime's output here is not well defined (a half-written buffer)
            raise NotImplementedError(
                f"SVMClassifier: post_transform {post_transform!r} on a binary model without "
                "prob_a/prob_b")
    else:
        scores = apply_post_transform(dec, post_transform)
    return lab, np.asarray(scores.astype(np.float32))
