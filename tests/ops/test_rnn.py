"""RNN / GRU / LSTM kernels vs torch.nn (copied weights) and onnxruntime one-node models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from .test_ml import assert_close, make_node, run_ort, run_ours

TOL = {np.float32: (1e-4, 1e-5), np.float64: (1e-10, 1e-12), np.float16: (1e-2, 1e-2)}
FT = onnx.TensorProto.FLOAT
RNG = np.random.default_rng(0)
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _weights(kind, nd, h, i, dt=np.float32):
    g = GATES[kind]
    w = (RNG.standard_normal((nd, g * h, i)) * 0.5).astype(dt)
    r = (RNG.standard_normal((nd, g * h, h)) * 0.5).astype(dt)
    b = (RNG.standard_normal((nd, 2 * g * h)) * 0.5).astype(dt)
    return w, r, b


def _reorder(a, kind, h):
    """ONNX gate blocks -> torch gate blocks along axis 0."""
    if kind == "LSTM":  # onnx i o f c -> torch i f g o
        i, o, f, c = np.split(a, 4)
        return np.concatenate([i, f, c, o])
    if kind == "GRU":  # onnx z r h -> torch r z n
        z, r, n = np.split(a, 3)
        return np.concatenate([r, z, n])
    return a


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_vs_torch(kind, direction, dt):
    seq, batch, inp, h = 5, 3, 4, 6
    nd = 2 if direction == "bidirectional" else 1
    w, r, b = _weights(kind, nd, h, inp, dt)
    x = RNG.standard_normal((seq, batch, inp)).astype(dt)
    h0 = RNG.standard_normal((nd, batch, h)).astype(dt)
    c0 = RNG.standard_normal((nd, batch, h)).astype(dt)
    mod = {"RNN": torch.nn.RNN, "GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}[kind](
        inp, h, bidirectional=nd == 2, dtype=torch.float64 if dt == np.float64 else torch.float32)
    with torch.no_grad():
        for d in range(nd):
            sfx = "_reverse" if d else ""
            g = GATES[kind] * h
            getattr(mod, f"weight_ih_l0{sfx}").copy_(torch.from_numpy(_reorder(w[d], kind, h)))
            getattr(mod, f"weight_hh_l0{sfx}").copy_(torch.from_numpy(_reorder(r[d], kind, h)))
            getattr(mod, f"bias_ih_l0{sfx}").copy_(torch.from_numpy(_reorder(b[d, :g], kind, h)))
            getattr(mod, f"bias_hh_l0{sfx}").copy_(torch.from_numpy(_reorder(b[d, g:], kind, h)))
        state = (torch.from_numpy(h0), torch.from_numpy(c0)) if kind == "LSTM" else torch.from_numpy(h0)
        ty, tstate = mod(torch.from_numpy(x), state)
    attrs = dict(hidden_size=h, direction=direction)
    if kind == "GRU":
        attrs["linear_before_reset"] = 1  # torch's GRU formulation
    ins = ["x", "w", "r", "b", "", "h0"] + (["c0"] if kind == "LSTM" else [])
    outs = ["y", "yh"] + (["yc"] if kind == "LSTM" else [])
    node = make_node(kind, ins, outs, **attrs)
    feeds = [x, w, r, b, None, h0] + ([c0] if kind == "LSTM" else [])
    got = run_ours(node, feeds, 14)
    exp_y = ty.numpy().reshape(seq, batch, nd, h).transpose(0, 2, 1, 3)
    assert_close(got[0], exp_y, *TOL[dt])
    if kind == "LSTM":
        assert_close(got[1], tstate[0].numpy(), *TOL[dt])
        assert_close(got[2], tstate[1].numpy(), *TOL[dt])
    else:
        assert_close(got[1], tstate.numpy(), *TOL[dt])


def _ort_check(kind, attrs, feeds_named, opset=14, tol=TOL[np.float32], n_out=None):
    names = ["x", "w", "r", "b", "seq", "h0", "c0", "p"][: len(feeds_named)]
    ins = [n if feeds_named[i] is not None else "" for i, n in enumerate(names)]
    n_out = n_out or (3 if kind == "LSTM" else 2)
    outs = ["y", "yh", "yc"][:n_out]
    node = make_node(kind, ins, outs, **attrs)
    feeds = list(feeds_named)
    got = run_ours(node, feeds, opset)
    code = onnx.helper.np_dtype_to_tensor_dtype(feeds[0].dtype)
    exp = run_ort(node, feeds, opset, [(code, None)] * n_out)
    for g, e in zip(got, exp):
        assert_close(g, e, *tol)


def _case(kind, direction="forward", layout=0, seq=4, batch=3, inp=5, h=3, lens=None, dt=np.float32,
          init=True, peep=False):
    nd = 2 if direction == "bidirectional" else 1
    w, r, b = _weights(kind, nd, h, inp, dt)
    x = RNG.standard_normal((seq, batch, inp) if layout == 0 else (batch, seq, inp)).astype(dt)
    st = (nd, batch, h) if layout == 0 else (batch, nd, h)
    h0 = RNG.standard_normal(st).astype(dt) if init else None
    feeds = [x, w, r, b, None if lens is None else np.array(lens, np.int32), h0]
    if kind == "LSTM":
        feeds += [RNG.standard_normal(st).astype(dt) if init else None]
        if peep:
            feeds += [RNG.standard_normal((nd, 3 * h)).astype(dt)]
    return feeds


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_directions_seq_lens(kind, direction):
    feeds = _case(kind, direction, 0, seq=5, batch=4, lens=[5, 2, 1, 4])
    _ort_check(kind, dict(hidden_size=3, direction=direction), feeds)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_layout_1(kind):
    """onnxruntime lacks layout=1: it must equal layout 0 on transposed inputs/outputs."""
    feeds = _case(kind, "bidirectional", 0, seq=4, batch=3, lens=[4, 1, 3])
    n = 3 if kind == "LSTM" else 2
    ins = ["x", "w", "r", "b", "seq", "h0"] + (["c0"] if kind == "LSTM" else [])
    outs = ["y", "yh", "yc"][:n]
    ref = run_ours(make_node(kind, ins, outs, hidden_size=3, direction="bidirectional"), feeds, 14)
    f1 = list(feeds)
    f1[0] = np.ascontiguousarray(feeds[0].transpose(1, 0, 2))
    for k in range(5, len(f1)):
        f1[k] = np.ascontiguousarray(feeds[k].transpose(1, 0, 2))
    got = run_ours(make_node(kind, ins, outs, hidden_size=3, direction="bidirectional", layout=1), f1, 14)
    assert_close(got[0], ref[0].transpose(2, 0, 1, 3), 0, 0)
    for g, e in zip(got[1:], ref[1:]):
        assert_close(g, e.transpose(1, 0, 2), 0, 0)


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset(lbr):
    feeds = _case("GRU", "bidirectional", seq=3, batch=2, init=False)
    _ort_check("GRU", dict(hidden_size=3, direction="bidirectional", linear_before_reset=lbr), feeds)


def test_lstm_peepholes_input_forget_clip():
    feeds = _case("LSTM", "bidirectional", seq=4, batch=2, peep=True)
    _ort_check("LSTM", dict(hidden_size=3, direction="bidirectional", clip=0.7), feeds)
    _ort_check("LSTM", dict(hidden_size=3, direction="forward", input_forget=1),
               _case("LSTM", "forward", seq=4, batch=2, peep=True))


@pytest.mark.parametrize("acts", [
    (["Relu"], [], []), (["LeakyRelu"], [0.2], []), (["HardSigmoid"], [0.3], [0.4]),
    (["Affine"], [0.5], [0.1]), (["ScaledTanh"], [1.5], [0.5]), (["ThresholdedRelu"], [0.2], []),
    (["Elu"], [0.7], []), (["Softsign"], [], []), (["Softplus"], [], [])])
def test_rnn_activations(acts):
    names, alpha, beta = acts
    attrs = dict(hidden_size=3, activations=names)
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    _ort_check("RNN", attrs, _case("RNN", seq=3, batch=2))


def test_lstm_gru_custom_activations():
    _ort_check("LSTM", dict(hidden_size=3, activations=["HardSigmoid", "Tanh", "Softsign"],
                            activation_alpha=[0.25], activation_beta=[0.45]), _case("LSTM"))
    _ort_check("GRU", dict(hidden_size=3, direction="bidirectional",
                           activations=["Sigmoid", "Relu", "HardSigmoid", "Tanh"]),
               _case("GRU", "bidirectional"))


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_no_initial_state(kind):
    feeds = _case(kind, "bidirectional", init=False)[:4]
    _ort_check(kind, dict(hidden_size=3, direction="bidirectional"), feeds)


def test_float16_computes_in_float32():
    feeds = _case("LSTM", "forward", dt=np.float16)
    got = run_ours(make_node("LSTM", ["x", "w", "r", "b", "", "h0", "c0"], ["y", "yh", "yc"], hidden_size=3),
                   feeds, 22)
    ref = run_ours(make_node("LSTM", ["x", "w", "r", "b", "", "h0", "c0"], ["y", "yh", "yc"], hidden_size=3),
                   [None if f is None else f.astype(np.float32) for f in feeds], 22)
    for g, e in zip(got, ref):
        assert g.dtype == np.float16
        assert_close(g.astype(np.float32), e.astype(np.float16).astype(np.float32), *TOL[np.float16])


def test_zero_length_and_y_only():
    """A batch entry with sequence length 0 keeps its initial state and outputs zeros."""
    feeds = _case("GRU", "forward", seq=3, batch=2, lens=[0, 3])
    _ort_check("GRU", dict(hidden_size=3), feeds)
