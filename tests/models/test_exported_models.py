"""Real exported models, jitort vs onnxruntime.

Models are built from configs with random weights (no downloads) and exported once per test
session into a temporary folder with the TorchScript exporter (``torch.onnx.export(...,
dynamo=False, opset_version=17)``):

* a small BERT (transformers ``BertModel``, eager attention),
* a small GPT-2 (``GPT2LMHeadModel``) without past, and a second export that takes and returns
  the past key/values (one decode step and a prompt with an empty past),
* a MobileNet-style depthwise-separable conv net built with torch.nn,
* plus the light ResNet-50 that ships in the onnx package.

Each output must match onnxruntime's (default options) within atol 1e-4 * max(1, max|ort output|),
with the same shape and dtype.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest

import jitort

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

OPSET = 17
VOCAB = 1000


# -- helpers ---------------------------------------------------------------------------------
def export(module, args, path, input_names, output_names, dynamic_axes=None) -> str:
    module = module.eval()  # export restores the wrapper's own mode afterwards: keep it eval
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(args), str(path), input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes or {},
                          opset_version=OPSET, dynamo=False)
    onnx.checker.check_model(str(path))
    return str(path)


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


def _token_feeds(rng, batch, seq, pad_from=None, with_token_types=True):
    ids = rng.integers(0, VOCAB, (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    if pad_from is not None and batch > 1:
        mask[-1, pad_from:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if with_token_types:
        tt = np.zeros((batch, seq), dtype=np.int64)
        tt[:, seq // 2:] = 1
        feeds["token_type_ids"] = tt
    return feeds


# -- BERT --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def bert_path(tmp_path_factory):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                     vocab_size=VOCAB, max_position_embeddings=128, attn_implementation="eager")
    bert = BertModel(cfg).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            o = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                       return_dict=True)
            return o.last_hidden_state, o.pooler_output

    names = ["input_ids", "attention_mask", "token_type_ids"]
    f = _token_feeds(np.random.default_rng(0), 2, 16, pad_from=10)
    return export(Wrapper(bert), [torch.from_numpy(f[n]) for n in names],
                  tmp_path_factory.mktemp("bert") / "bert.onnx", names, ["last_hidden_state", "pooler_output"],
                  {n: {0: "batch", 1: "seq"} for n in names})


@pytest.mark.parametrize("batch,seq,pad_from", [(2, 16, 10), (1, 16, None), (3, 9, 4)])
def test_bert(bert_path, batch, seq, pad_from):
    assert_matches_ort(bert_path, _token_feeds(np.random.default_rng(seq), batch, seq, pad_from))


# -- GPT-2 -------------------------------------------------------------------------------------
GPT2_LAYERS, GPT2_HEADS, GPT2_EMBD = 2, 2, 64
PAST_NAMES = [f"past_key_values.{i}.{kv}" for i in range(GPT2_LAYERS) for kv in ("key", "value")]
PRESENT_NAMES = [f"present.{i}.{kv}" for i in range(GPT2_LAYERS) for kv in ("key", "value")]


@pytest.fixture(scope="session")
def gpt2_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=GPT2_EMBD, n_layer=GPT2_LAYERS, n_head=GPT2_HEADS, n_inner=128, vocab_size=VOCAB,
                     n_positions=128, bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="session")
def gpt2_path(gpt2_model, tmp_path_factory):
    class NoPast(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          return_dict=True).logits

    names = ["input_ids", "attention_mask"]
    f = _token_feeds(np.random.default_rng(0), 2, 16, with_token_types=False)
    return export(NoPast(gpt2_model), [torch.from_numpy(f[n]) for n in names],
                  tmp_path_factory.mktemp("gpt2") / "gpt2.onnx", names, ["logits"],
                  {n: {0: "batch", 1: "seq"} for n in names})


def _past_feeds(rng, batch, seq, past):
    head = GPT2_EMBD // GPT2_HEADS
    feeds = {"input_ids": rng.integers(0, VOCAB, (batch, seq), dtype=np.int64),
             "attention_mask": np.ones((batch, past + seq), dtype=np.int64)}
    for n in PAST_NAMES:
        feeds[n] = rng.standard_normal((batch, GPT2_HEADS, past, head)).astype(np.float32)
    return feeds


@pytest.fixture(scope="session")
def gpt2_past_path(gpt2_model, tmp_path_factory):
    from transformers.cache_utils import DynamicCache

    class WithPast(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, *past):
            cache = DynamicCache()
            for i in range(GPT2_LAYERS):
                cache.update(past[2 * i], past[2 * i + 1], i)
            o = self.m(input_ids=input_ids, attention_mask=attention_mask, cache=cache, use_cache=True,
                       return_dict=True)
            outs = [o.logits]
            for layer in o.past_key_values.layers[:GPT2_LAYERS]:
                outs += [layer.keys, layer.values]
            return tuple(outs)

    names = ["input_ids", "attention_mask"] + PAST_NAMES
    f = _past_feeds(np.random.default_rng(0), 2, 1, 5)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"}}
    axes.update({n: {0: "batch", 2: "past"} for n in PAST_NAMES})
    axes.update({n: {0: "batch", 2: "total"} for n in PRESENT_NAMES})
    path = export(WithPast(gpt2_model), [torch.from_numpy(f[n]) for n in names],
                  tmp_path_factory.mktemp("gpt2_past") / "gpt2_past.onnx", names, ["logits"] + PRESENT_NAMES, axes)
    graph_inputs = [i.name for i in onnx.load(path).graph.input]
    assert graph_inputs == names, f"the export did not keep the past inputs: {graph_inputs}"
    return path


@pytest.mark.parametrize("batch,seq", [(2, 16), (1, 5)])
def test_gpt2(gpt2_path, batch, seq):
    assert_matches_ort(gpt2_path, _token_feeds(np.random.default_rng(seq), batch, seq, with_token_types=False))


@pytest.mark.parametrize("batch,seq,past", [(2, 1, 5), (1, 3, 7), (2, 4, 0)],
                         ids=["decode-step", "chunk", "empty-past"])
def test_gpt2_with_past(gpt2_past_path, batch, seq, past):
    assert_matches_ort(gpt2_past_path, _past_feeds(np.random.default_rng(past), batch, seq, past))


def test_gpt2_past_export_is_consistent(gpt2_model, gpt2_past_path):
    """The with-past export decodes the same next-token logits as the full forward (checks the
    export, through jitort)."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, VOCAB, (2, 6), dtype=np.int64)
    with torch.no_grad():
        full = gpt2_model(input_ids=torch.from_numpy(tokens), use_cache=False).logits[:, -1:].numpy()
        prefix = gpt2_model(input_ids=torch.from_numpy(tokens[:, :5]), use_cache=True).past_key_values
        past = [t.numpy() for layer in prefix.layers[:GPT2_LAYERS] for t in (layer.keys, layer.values)]
    feeds = {"input_ids": tokens[:, 5:], "attention_mask": np.ones((2, 6), np.int64), **dict(zip(PAST_NAMES, past))}
    got = jitort.InferenceSession(gpt2_past_path).run(["logits"], feeds)[0]
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-4 * max(1.0, float(np.abs(full).max())))


# -- MobileNet-style depthwise-separable conv net ----------------------------------------------
@pytest.fixture(scope="session")
def mobilenet_path(tmp_path_factory):
    nn = torch.nn

    def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + ([nn.ReLU6()] if act else [])

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            self.res = stride == 1 and cin == cout
            self.body = nn.Sequential(*conv_bn(cin, hidden, 1), *conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                      *conv_bn(hidden, cout, 1, act=False))

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    class MobileNetish(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *conv_bn(3, 16, 3, 2),
                *conv_bn(16, 16, 3, 1, groups=16), *conv_bn(16, 24, 1),   # depthwise separable
                InvertedResidual(24, 24, 1, 4),
                InvertedResidual(24, 32, 2, 4),
                InvertedResidual(32, 32, 1, 6),
                *conv_bn(32, 64, 1),
                nn.Hardswish(),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 10))

        def forward(self, x):
            return self.head(torch.flatten(self.pool(self.features(x)), 1))

    torch.manual_seed(0)
    net = MobileNetish()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return export(net.eval(), [torch.randn(1, 3, 64, 64)], tmp_path_factory.mktemp("mobilenet") / "mobilenetish.onnx",
                  ["image"], ["logits"], {"image": {0: "batch", 2: "height", 3: "width"}})


@pytest.mark.parametrize("batch,size", [(1, 64), (3, 48)])
def test_mobilenetish(mobilenet_path, batch, size):
    x = np.random.default_rng(size).standard_normal((batch, 3, size, size)).astype(np.float32)
    assert_matches_ort(mobilenet_path, {"image": x})


def test_mobilenetish_has_depthwise_conv(mobilenet_path):
    m = onnx.load(mobilenet_path)
    groups = [a.i for n in m.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert any(g > 1 for g in groups), "the export lost its depthwise convolutions"


# -- light ResNet-50 from the onnx package ------------------------------------------------------
RESNET50 = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")


def test_light_resnet50():
    """Inputs: onnx's runner dummy data (an arange ramp) and a seeded standard normal."""
    from onnx.backend.test.runner import Runner

    model = onnx.load(RESNET50)
    inits = {i.name for i in model.graph.initializer}
    (x,) = [x for x in model.graph.input if x.name not in inits]
    dummy = Runner.generate_dummy_data(x, seed=0, name="resnet50", random=False)
    normal = np.random.default_rng(0).standard_normal(dummy.shape).astype(np.float32)
    assert_matches_ort(RESNET50, {x.name: dummy}, {x.name: normal})
