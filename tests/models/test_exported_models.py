"""Real exported models, jitort vs onnxruntime.

Models come from tests/exported.py (built from configs with random weights, exported at test
time): a small BERT, a small GPT-2 without and with past key/values, a MobileNet-style net, and
the light ResNet-50 that ships in the onnx package. Each output must match onnxruntime's
(default options) within atol 1e-4 * max(1, max|ort output|), with the same shape and dtype.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import jitort
from tests import exported
from tests.exported import VOCAB, past_feeds, token_feeds

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

GPT2_LAYERS = 2
PAST_NAMES = exported.past_names(GPT2_LAYERS)


def assert_matches_ort(path: str, *feed_sets: dict) -> None:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    sess = jitort.InferenceSession(path)
    names = [o.name for o in onnx.load(path, load_external_data=False).graph.output]
    for k, feeds in enumerate(feed_sets):
        want = ref.run(None, feeds)
        got = sess.run(None, feeds)
        assert len(got) == len(want), f"{len(got)} outputs, onnxruntime gives {len(want)}"
        for name, g, w in zip(names, got, want):
            where = f"feeds #{k}, {name}"
            assert isinstance(g, np.ndarray), f"{where}: got {type(g).__name__}"
            assert g.shape == w.shape, f"{where}: shape {g.shape} != onnxruntime's {w.shape}"
            assert g.dtype == w.dtype, f"{where}: dtype {g.dtype} != onnxruntime's {w.dtype}"
            if w.size == 0:
                continue
            atol = 1e-4 * max(1.0, float(np.max(np.abs(w))))
            np.testing.assert_allclose(g, w, rtol=0, atol=atol, err_msg=where)


@pytest.fixture(scope="session")
def bert_path():
    return exported.bert()


@pytest.mark.parametrize("batch,seq,pad_from", [(2, 16, 10), (1, 16, None), (3, 9, 4)])
def test_bert(bert_path, batch, seq, pad_from):
    assert_matches_ort(bert_path, token_feeds(np.random.default_rng(seq), batch, seq, pad_from))


@pytest.fixture(scope="session")
def gpt2_path():
    return exported.gpt2()


@pytest.fixture(scope="session")
def gpt2_past_path():
    return exported.gpt2_past()


@pytest.mark.parametrize("batch,seq", [(2, 16), (1, 5)])
def test_gpt2(gpt2_path, batch, seq):
    assert_matches_ort(gpt2_path, token_feeds(np.random.default_rng(seq), batch, seq, with_token_types=False))


@pytest.mark.parametrize("batch,seq,past", [(2, 1, 5), (1, 3, 7), (2, 4, 0)],
                         ids=["decode-step", "chunk", "empty-past"])
def test_gpt2_with_past(gpt2_past_path, batch, seq, past):
    assert_matches_ort(gpt2_past_path, past_feeds(np.random.default_rng(past), batch, seq, past))


def test_gpt2_past_export_is_consistent(gpt2_past_path):
    """The with-past export decodes the same next-token logits as the full forward (checks the
    export, through jitort)."""
    model = exported.gpt2_model()
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, VOCAB, (2, 6), dtype=np.int64)
    with torch.no_grad():
        full = model(input_ids=torch.from_numpy(tokens), use_cache=False).logits[:, -1:].numpy()
        prefix = model(input_ids=torch.from_numpy(tokens[:, :5]), use_cache=True).past_key_values
        past = [t.numpy() for layer in prefix.layers[:GPT2_LAYERS] for t in (layer.keys, layer.values)]
    feeds = {"input_ids": tokens[:, 5:], "attention_mask": np.ones((2, 6), np.int64), **dict(zip(PAST_NAMES, past))}
    got = jitort.InferenceSession(gpt2_past_path).run(["logits"], feeds)[0]
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-4 * max(1.0, float(np.abs(full).max())))


@pytest.fixture(scope="session")
def mobilenet_path():
    return exported.mobilenetish()


@pytest.mark.parametrize("batch,size", [(1, 64), (3, 48)])
def test_mobilenetish(mobilenet_path, batch, size):
    x = np.random.default_rng(size).standard_normal((batch, 3, size, size)).astype(np.float32)
    assert_matches_ort(mobilenet_path, {"image": x})


def test_mobilenetish_has_depthwise_conv(mobilenet_path):
    m = onnx.load(mobilenet_path)
    groups = [a.i for n in m.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert any(g > 1 for g in groups), "the export lost its depthwise convolutions"


def test_light_resnet50():
    """Inputs: onnx's runner dummy data (an arange ramp) and a seeded standard normal."""
    from onnx.backend.test.runner import Runner

    model = onnx.load(exported.RESNET50)
    inits = {i.name for i in model.graph.initializer}
    (x,) = [x for x in model.graph.input if x.name not in inits]
    dummy = Runner.generate_dummy_data(x, seed=0, name="resnet50", random=False)
    normal = np.random.default_rng(0).standard_normal(dummy.shape).astype(np.float32)
    assert_matches_ort(exported.RESNET50, {x.name: dummy}, {x.name: normal})


def test_vit():
    path = exported.vit()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert_matches_ort(path, {"pixel_values": x})
