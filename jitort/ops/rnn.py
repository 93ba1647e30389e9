"""Recurrent networks: RNN, GRU, LSTM (all directions, sequence_lens, layouts, activations).

The input projection X @ W^T + Wb is one matmul over all timesteps; only the recurrence loops
over time. float16/bfloat16 compute in float32. A reverse direction runs forward over each batch
entry's reversed valid prefix (``sequence_lens``), and the outputs are un-reversed the same way.
"""

from __future__ import annotations

import numpy as np

from .registry import op


def _sigmoid(x):
    # split by sign to avoid overflow warnings in exp
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    return np.logaddexp(0, x)


# name -> (function(x, alpha, beta), default alpha, default beta); None = not used
_ACTS = {
    "relu": (lambda x, a, b: np.maximum(x, 0), None, None),
    "tanh": (lambda x, a, b: np.tanh(x), None, None),
    "sigmoid": (lambda x, a, b: _sigmoid(x), None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))), 1.0, None),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), None, None),
    "softplus": (lambda x, a, b: _softplus(x), None, None),
}


def _activations(names, alphas, betas, defaults, num_dir, dt):
    """Per direction, the list of activation callables (alpha/beta consumed in order)."""
    names = list(names) if names else []
    n = len(defaults)
    if not names:
        names = defaults * num_dir
    elif len(names) == n and num_dir == 2:
        names = names * 2
    if len(names) != n * num_dir:
        raise ValueError(f"expected {n * num_dir} activations, got {names}")
    alphas, betas = list(alphas or []), list(betas or [])
    fns = []
    for name in names:
        key = name.lower()
        if key not in _ACTS:
            raise ValueError(f"unsupported RNN activation {name!r}")
        f, da, db = _ACTS[key]
        a = alphas.pop(0) if (da is not None and alphas) else da
        b = betas.pop(0) if (db is not None and betas) else db
        a = None if a is None else dt.type(a)
        b = None if b is None else dt.type(b)
        fns.append(lambda x, f=f, a=a, b=b: f(x, a, b))
    return [fns[i * n:(i + 1) * n] for i in range(num_dir)]


def _reverse_idx(lens, seq):
    """Index (seq, batch) into time for per-entry reversal of the valid prefix (clamped)."""
    t = np.arange(seq)[:, None]
    return np.where(t < lens[None, :], lens[None, :] - 1 - t, t)


def _take_time(a, idx):
    """a: (seq, batch, ...) gathered as a[idx[t, b], b]."""
    return a[idx, np.arange(a.shape[1])[None, :]]


def _run(cell, x, w, r, b, seq_lens, init, hidden, direction, layout, ngates, nstates, acts):
    """Generic driver: cell(xp_t, states, r, rb, fns, d) -> new states (first is h)."""
    out_dt = x.dtype
    cdt = np.float64 if out_dt == np.float64 else np.float32
    if layout == 1:
        x = np.swapaxes(x, 0, 1)
        init = [None if s is None else np.swapaxes(s, 0, 1) for s in init]
    x = x.astype(cdt)
    seq, batch = x.shape[:2]
    num_dir = w.shape[0]
    lens = (np.full(batch, seq, np.int64) if seq_lens is None
            else np.minimum(seq_lens.astype(np.int64), seq))
    y = np.zeros((seq, num_dir, batch, hidden), cdt)
    finals = [np.zeros((num_dir, batch, hidden), cdt) for _ in range(nstates)]
    ridx = _reverse_idx(lens, seq)
    valid = np.arange(seq)[:, None] < lens[None, :]  # (seq, batch)
    for d in range(num_dir):
        rev = direction == "reverse" or (direction == "bidirectional" and d == 1)
        wd, rd = w[d].astype(cdt), r[d].astype(cdt)
        if b is not None:
            wb, rb = np.split(b[d].astype(cdt), 2)
        else:
            wb = rb = np.zeros(ngates * hidden, cdt)
        xs = _take_time(x, ridx) if rev else x
        xp = (xs.reshape(seq * batch, -1) @ wd.T).reshape(seq, batch, -1) + wb
        states = [np.zeros((batch, hidden), cdt) if s is None else s[d].astype(cdt) for s in init]
        all_valid = bool(valid.all())
        for t in range(seq):
            new = cell(xp[t], states, rd, rb, acts[d], d)
            if all_valid:
                states = new
                y[t, d] = new[0]
                continue
            m = valid[t][:, None]
            states = [np.where(m, n_, s) for n_, s in zip(new, states)]
            y[t, d] = np.where(m, new[0], 0)
        if rev:
            y[:, d] = np.where(valid[:, :, None], _take_time(y[:, d], ridx), 0)
        for k in range(nstates):  # a zero-length entry reports zero states (as onnxruntime)
            finals[k][d] = np.where((lens == 0)[:, None], 0, states[k])
    if layout == 1:
        y = np.transpose(y, (2, 0, 1, 3))
        finals = [np.swapaxes(f, 0, 1) for f in finals]
    return tuple(np.ascontiguousarray(a).astype(out_dt, copy=False) for a in [y] + finals)


def _clipper(clip):
    if clip is None:
        return lambda v: v
    c = float(clip)
    return lambda v: np.clip(v, -c, c)


def _num_dir(direction):
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"unknown direction {direction!r}")
    return 2 if direction == "bidirectional" else 1


def _rnn(X, W, R, B, sequence_lens, initial_h, *, activation_alpha, activation_beta, activations,
         clip, direction, hidden_size, layout):
    hidden = hidden_size or R.shape[-1]
    cdt = np.dtype(np.float64 if X.dtype == np.float64 else np.float32)
    acts = _activations(activations, activation_alpha, activation_beta, ["Tanh"], _num_dir(direction), cdt)
    cl = _clipper(clip)

    def cell(xp, states, r, rb, fns, d):
        return [fns[0](cl(xp + states[0] @ r.T + rb))]

    return _run(cell, X, W, R, B, sequence_lens, [initial_h], hidden, direction, layout, 1, 1, acts)


def _gru(X, W, R, B, sequence_lens, initial_h, *, activation_alpha, activation_beta, activations,
         clip, direction, hidden_size, layout, linear_before_reset):
    hidden = hidden_size or R.shape[-1]
    h_ = hidden
    cdt = np.dtype(np.float64 if X.dtype == np.float64 else np.float32)
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh"],
                        _num_dir(direction), cdt)
    cl = _clipper(clip)

    def cell(xp, states, r, rb, fns, d):
        f, g = fns
        h = states[0]
        hr = h @ r[:2 * h_].T + rb[:2 * h_]
        z = f(cl(xp[:, :h_] + hr[:, :h_]))
        rg = f(cl(xp[:, h_:2 * h_] + hr[:, h_:]))
        if linear_before_reset:
            hh = g(cl(xp[:, 2 * h_:] + rg * (h @ r[2 * h_:].T + rb[2 * h_:])))
        else:
            hh = g(cl(xp[:, 2 * h_:] + (rg * h) @ r[2 * h_:].T + rb[2 * h_:]))
        return [(1 - z) * hh + z * h]

    return _run(cell, X, W, R, B, sequence_lens, [initial_h], hidden, direction, layout, 3, 1, acts)


def _lstm(X, W, R, B, sequence_lens, initial_h, initial_c, P, *, activation_alpha, activation_beta,
          activations, clip, direction, hidden_size, layout, input_forget):
    hidden = hidden_size or R.shape[-1]
    h_ = hidden
    cdt = np.dtype(np.float64 if X.dtype == np.float64 else np.float32)
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh", "Tanh"],
                        _num_dir(direction), cdt)
    cl = _clipper(clip)
    num_dir = W.shape[0]
    peep = (np.zeros((num_dir, 3 * h_), cdt) if P is None else P.astype(cdt))

    def cell(xp, states, r, rb, fns, d):
        f, g, hf = fns
        h, c = states
        gates = xp + h @ r.T + rb  # order i, o, f, c
        pi, po, pf = peep[d, :h_], peep[d, h_:2 * h_], peep[d, 2 * h_:]
        i = f(cl(gates[:, :h_] + pi * c))
        if input_forget:
            fg = 1 - i
        else:
            fg = f(cl(gates[:, 2 * h_:3 * h_] + pf * c))
        cc = g(cl(gates[:, 3 * h_:]))
        c_new = fg * c + i * cc
        o = f(cl(gates[:, h_:2 * h_] + po * c_new))
        return [o * hf(c_new), c_new]

    return _run(cell, X, W, R, B, sequence_lens, [initial_h, initial_c], hidden, direction, layout,
                4, 2, acts)


@op("RNN", since=7)
def rnn_7(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
          activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None):
    return _rnn(X, W, R, B, sequence_lens, initial_h, activation_alpha=activation_alpha,
                activation_beta=activation_beta, activations=activations, clip=clip,
                direction=direction, hidden_size=hidden_size, layout=0)


@op("RNN", since=14)
def rnn_14(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
           activation_beta=None, activations=None, clip=None, direction="forward",
           hidden_size=None, layout=0):
    return _rnn(X, W, R, B, sequence_lens, initial_h, activation_alpha=activation_alpha,
                activation_beta=activation_beta, activations=activations, clip=clip,
                direction=direction, hidden_size=hidden_size, layout=layout)


@op("GRU", since=7)
def gru_7(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
          activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
          linear_before_reset=0):
    return _gru(X, W, R, B, sequence_lens, initial_h, activation_alpha=activation_alpha,
                activation_beta=activation_beta, activations=activations, clip=clip,
                direction=direction, hidden_size=hidden_size, layout=0,
                linear_before_reset=linear_before_reset)


@op("GRU", since=14)
def gru_14(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
           activation_beta=None, activations=None, clip=None, direction="forward",
           hidden_size=None, layout=0, linear_before_reset=0):
    return _gru(X, W, R, B, sequence_lens, initial_h, activation_alpha=activation_alpha,
                activation_beta=activation_beta, activations=activations, clip=clip,
                direction=direction, hidden_size=hidden_size, layout=layout,
                linear_before_reset=linear_before_reset)


@op("LSTM", since=7)
def lstm_7(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *,
           activation_alpha=None, activation_beta=None, activations=None, clip=None,
           direction="forward", hidden_size=None, input_forget=0):
    return _lstm(X, W, R, B, sequence_lens, initial_h, initial_c, P,
                 activation_alpha=activation_alpha, activation_beta=activation_beta,
                 activations=activations, clip=clip, direction=direction,
                 hidden_size=hidden_size, layout=0, input_forget=input_forget)


@op("LSTM", since=14)
def lstm_14(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *,
            activation_alpha=None, activation_beta=None, activations=None, clip=None,
            direction="forward", hidden_size=None, input_forget=0, layout=0):
    return _lstm(X, W, R, B, sequence_lens, initial_h, initial_c, P,
                 activation_alpha=activation_alpha, activation_beta=activation_beta,
                 activations=activations, clip=clip, direction=direction,
                 hidden_size=hidden_size, layout=layout, input_forget=input_forget)


# opset 22 only added bfloat16 to the allowed types
op("RNN", since=22)(rnn_14)
op("GRU", since=22)(gru_14)
op("LSTM", since=22)(lstm_14)
