"""Real models for tests, built from configs with random weights and exported at test time.

No downloads and nothing committed: each builder exports once per configuration into a
per-user temp folder (``$TMPDIR/jitort-test-exports``, atomic writes) and returns the path.
The TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) at opset 17 is used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx

OPSET = 17
VOCAB = 1000
EXPORT_DIR = Path(tempfile.gettempdir()) / f"jitort-test-exports-{os.getuid()}"


def _cached(key: str, build) -> str:
    path = EXPORT_DIR / f"{key}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.onnx"
    if not path.exists():
        EXPORT_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
        build(tmp)
        tmp.replace(path)
    return str(path)


def export(module, args, path, input_names, output_names, dynamic_axes=None, opset=OPSET) -> str:
    import torch

    module = module.eval()  # export restores the wrapper's own mode afterwards: keep it eval
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(args), str(path), input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes or {},
                          opset_version=opset, dynamo=False)
    onnx.checker.check_model(str(path))
    return str(path)


def token_feeds(rng, batch, seq, pad_from=None, with_token_types=True, vocab=VOCAB):
    ids = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    if pad_from is not None and batch > 1:
        mask[-1, pad_from:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if with_token_types:
        tt = np.zeros((batch, seq), dtype=np.int64)
        tt[:, seq // 2:] = 1
        feeds["token_type_ids"] = tt
    return feeds


# -- BERT ----------------------------------------------------------------------------------------
BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def bert(layers=2, hidden=64, heads=2, intermediate=128, vocab=VOCAB, opset=OPSET) -> str:
    """transformers BertModel (eager attention) -> (last_hidden_state, pooler_output)."""

    def build(path):
        import torch
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        cfg = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=intermediate, vocab_size=vocab, max_position_embeddings=512,
                         attn_implementation="eager")
        model = BertModel(cfg).eval()

        class Wrapper(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                o = self.m(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, return_dict=True)
                return o.last_hidden_state, o.pooler_output

        f = token_feeds(np.random.default_rng(0), 2, 16, pad_from=10, vocab=vocab)
        export(Wrapper(model), [torch.from_numpy(f[n]) for n in BERT_INPUTS], path, BERT_INPUTS,
               ["last_hidden_state", "pooler_output"], {n: {0: "batch", 1: "seq"} for n in BERT_INPUTS}, opset)

    return _cached(f"bert-l{layers}-h{hidden}-a{heads}-i{intermediate}-v{vocab}-o{opset}", build)


# -- GPT-2 ---------------------------------------------------------------------------------------
def _gpt2_model(layers, heads, embd, vocab):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=embd, n_layer=layers, n_head=heads, n_inner=2 * embd, vocab_size=vocab,
                     n_positions=512, bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    return GPT2LMHeadModel(cfg).eval()


def gpt2_model(layers=2, heads=2, embd=64, vocab=VOCAB):
    return _gpt2_model(layers, heads, embd, vocab)


def gpt2(layers=2, heads=2, embd=64, vocab=VOCAB) -> str:
    """GPT2LMHeadModel without past: (input_ids, attention_mask) -> logits."""

    def build(path):
        import torch

        class NoPast(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                              return_dict=True).logits

        names = ["input_ids", "attention_mask"]
        f = token_feeds(np.random.default_rng(0), 2, 16, with_token_types=False, vocab=vocab)
        export(NoPast(_gpt2_model(layers, heads, embd, vocab)), [torch.from_numpy(f[n]) for n in names],
               path, names, ["logits"], {n: {0: "batch", 1: "seq"} for n in names})

    return _cached(f"gpt2-l{layers}-a{heads}-e{embd}-v{vocab}", build)


def past_names(layers):
    return [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers):
    return [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def past_feeds(rng, batch, seq, past, layers=2, heads=2, embd=64, vocab=VOCAB):
    head = embd // heads
    feeds = {"input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64),
             "attention_mask": np.ones((batch, past + seq), dtype=np.int64)}
    for n in past_names(layers):
        feeds[n] = rng.standard_normal((batch, heads, past, head)).astype(np.float32)
    return feeds


def gpt2_past(layers=2, heads=2, embd=64, vocab=VOCAB) -> str:
    """GPT2LMHeadModel with past key/values inputs and present outputs (one decode step)."""

    def build(path):
        import torch
        from transformers.cache_utils import DynamicCache

        class WithPast(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, *past):
                cache = DynamicCache()
                for i in range(layers):
                    cache.update(past[2 * i], past[2 * i + 1], i)
                o = self.m(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                           use_cache=True, return_dict=True)
                outs = [o.logits]
                for layer in o.past_key_values.layers[:layers]:
                    outs += [layer.keys, layer.values]
                return tuple(outs)

        names = ["input_ids", "attention_mask"] + past_names(layers)
        f = past_feeds(np.random.default_rng(0), 2, 1, 5, layers, heads, embd, vocab)
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"}}
        axes.update({n: {0: "batch", 2: "past"} for n in past_names(layers)})
        axes.update({n: {0: "batch", 2: "total"} for n in present_names(layers)})
        export(WithPast(_gpt2_model(layers, heads, embd, vocab)), [torch.from_numpy(f[n]) for n in names],
               path, names, ["logits"] + present_names(layers), axes)
        got = [i.name for i in onnx.load(str(path)).graph.input]
        assert got == names, f"the export did not keep the past inputs: {got}"

    return _cached(f"gpt2past-l{layers}-a{heads}-e{embd}-v{vocab}", build)


# -- ViT -----------------------------------------------------------------------------------------
def vit(layers=2, hidden=64, heads=2, intermediate=128, image=32, patch=8) -> str:
    """transformers ViTModel (eager attention): pixel_values -> last_hidden_state."""

    def build(path):
        import torch
        from transformers import ViTConfig, ViTModel

        torch.manual_seed(0)
        cfg = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, image_size=image, patch_size=patch,
                        attn_implementation="eager")
        model = ViTModel(cfg, add_pooling_layer=False).eval()

        class Wrapper(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, pixel_values):
                return self.m(pixel_values=pixel_values, return_dict=True).last_hidden_state

        export(Wrapper(model), [torch.randn(1, 3, image, image)], path, ["pixel_values"],
               ["last_hidden_state"], {"pixel_values": {0: "batch"}})

    return _cached(f"vit-l{layers}-h{hidden}-a{heads}-i{intermediate}-s{image}-p{patch}", build)


# -- MobileNet-style ------------------------------------------------------------------------------
def mobilenetish() -> str:
    """Depthwise-separable convs, inverted residuals, BatchNorm, ReLU6, Hardswish, a linear head."""

    def build(path):
        import torch

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
                    *conv_bn(16, 16, 3, 1, groups=16), *conv_bn(16, 24, 1),
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
        export(net.eval(), [torch.randn(1, 3, 64, 64)], path, ["image"], ["logits"],
               {"image": {0: "batch", 2: "height", 3: "width"}})

    return _cached("mobilenetish", build)


RESNET50 = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_resnet50.onnx")
