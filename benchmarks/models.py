"""The whole-model benchmark suite: each builder returns (ONNX path, feeds).

    path, feeds = build("bert_small")          # exports on first use

Models are built from configs with random weights (seeded) and exported at run time into
``cache/benchmarks/`` (ignored by git; atomic writes; the file name carries the torch and
transformers versions). Nothing is downloaded. Exports use the TorchScript exporter at opset 17
(``tests/exported.py:export``) and are checked once, when written: onnxruntime's outputs on the
benchmark's feeds must equal torch's within 1e-4 * max(1, max|torch|). Importing this module is
cheap (numpy only); torch, transformers and onnx are imported when a model is built.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from harness import ROOT, ort_session  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

CACHE_DIR = os.path.join(ROOT, "cache", "benchmarks")
OPSET = 17
BERT_SMALL = dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024,
                  vocab_size=30522, max_position_embeddings=512)
BERT_BASE = dict(BERT_SMALL, num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)
BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
RESNET50 = os.path.join(os.path.dirname(importlib.util.find_spec("onnx").origin), "backend", "test", "data", "light",
                        "light_resnet50.onnx")
# MobileNetV2 (Sandler et al. 2018, table 2): expansion t, channels c, repeats n, first stride s.
MOBILENETV2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1)]


def build(name: str, cache_dir: str = CACHE_DIR) -> tuple[str, dict]:
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](cache_dir)


def describe(name: str) -> str:
    return MODELS[name].__doc__.strip().splitlines()[0]


# -- the suite ------------------------------------------------------------------------------------
def mlp_b1(cache_dir: str = CACHE_DIR):
    """MLP, 4 x (Linear 1024->1024 + GELU (erf)), float32, batch 1."""
    return _mlp(1, cache_dir)


def mlp_b64(cache_dir: str = CACHE_DIR):
    """MLP, 4 x (Linear 1024->1024 + GELU (erf)), float32, batch 64."""
    return _mlp(64, cache_dir)


def bert_small(cache_dir: str = CACHE_DIR):
    """BERT-small (BertModel: 4 layers, hidden 256, 4 heads, FFN 1024, vocab 30522), 8 x 128, some rows padded."""
    rng = np.random.default_rng(0)
    batch, seq = 8, 128
    ids = rng.integers(0, BERT_SMALL["vocab_size"], (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for row, length in enumerate(rng.integers(seq // 2, seq + 1, batch)):
        mask[row, length:] = 0  # some padded rows, as in a real batch
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return _bert("bert_small", BERT_SMALL, feeds, cache_dir), feeds


def bert_base(cache_dir: str = CACHE_DIR):
    """BERT-base (BertModel: 12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522), 1 x 128."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, BERT_BASE["vocab_size"], (1, 128), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return _bert("bert_base", BERT_BASE, feeds, cache_dir), feeds


def gpt2_prefill(cache_dir: str = CACHE_DIR):
    """GPT-2 small (GPT2Model: 12 layers, 768, 12 heads, vocab 50257), prefill 1 x 128, no past, no LM head."""
    import transformers

    rng = np.random.default_rng(0)
    ids = rng.integers(0, GPT2_SMALL["vocab_size"], (1, 128), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    def module():
        import torch
        from transformers import GPT2Config, GPT2Model

        class NoPast(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                              return_dict=True).last_hidden_state

        torch.manual_seed(0)
        return NoPast(GPT2Model(GPT2Config(**GPT2_SMALL, attn_implementation="eager")))

    key = f"gpt2_small_tf{transformers.__version__}"
    return _export(key, module, feeds, ["last_hidden_state"], cache_dir, seq_axes=True), feeds


def resnet50(cache_dir: str = CACHE_DIR):
    """ResNet-50, the light model shipped in the onnx package, batch 1."""
    import onnx

    graph = onnx.load(RESNET50).graph
    inits = {i.name for i in graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {x.name: rng.standard_normal([d.dim_value for d in x.type.tensor_type.shape.dim]).astype(np.float32)
             for x in graph.input if x.name not in inits}
    return RESNET50, feeds


def mobilenetv2(cache_dir: str = CACHE_DIR):
    """MobileNetV2 (width 1.0, torch.nn: inverted residuals, depthwise 3x3, ReLU6, BatchNorm), 1x3x224x224."""
    feeds = {"image": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    return _export("mobilenetv2", _mobilenetv2, feeds, ["logits"], cache_dir), feeds


MODELS = {f.__name__: f for f in (mlp_b1, mlp_b64, bert_small, bert_base, gpt2_prefill, resnet50, mobilenetv2)}


# -- builders -----------------------------------------------------------------------------------------
def _mlp(batch: int, cache_dir: str):
    feeds = {"x": np.random.default_rng(0).standard_normal((batch, 1024)).astype(np.float32)}

    def module():
        import torch

        torch.manual_seed(0)
        layers = []
        for _ in range(4):
            layers += [torch.nn.Linear(1024, 1024), torch.nn.GELU()]
            torch.nn.init.kaiming_normal_(layers[-2].weight)  # activations stay O(1): a meaningful output check
        return torch.nn.Sequential(*layers)

    return _export("mlp4x1024_gelu", module, feeds, ["y"], cache_dir), feeds  # one file: batch is a dynamic axis


def _bert(name: str, config: dict, feeds: dict, cache_dir: str) -> str:
    import transformers

    def module():
        import torch
        from transformers import BertConfig, BertModel

        class Wrapper(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                o = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           return_dict=True)
                return o.last_hidden_state, o.pooler_output

        torch.manual_seed(0)
        return Wrapper(BertModel(BertConfig(**config, attn_implementation="eager")))

    tag = "{}_L{num_hidden_layers}_H{hidden_size}_A{num_attention_heads}_I{intermediate_size}_V{vocab_size}"
    key = tag.format(name, **config) + f"_tf{transformers.__version__}"
    return _export(key, module, feeds, ["last_hidden_state", "pooler_output"], cache_dir, seq_axes=True)


def _mobilenetv2():
    import torch

    nn = torch.nn

    def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + [nn.ReLU6()] if act else layers

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = cin * t
            expand = conv_bn(cin, hidden, 1) if t != 1 else []
            self.body = nn.Sequential(*expand, *conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                      *conv_bn(hidden, cout, 1, act=False))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        def __init__(self, classes=1000):
            super().__init__()
            layers, cin = conv_bn(3, 32, 3, 2), 32
            for t, c, n, s in MOBILENETV2_BLOCKS:
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            self.features = nn.Sequential(*layers, *conv_bn(cin, 1280, 1))
            self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

        def forward(self, x):
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    torch.manual_seed(0)
    net = MobileNetV2()
    for m in net.modules():  # torchvision's conv initialization; random BatchNorm affine parameters
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.momentum = None  # running statistics: the plain average over the calibration batch
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, m.in_features ** -0.5)  # logits O(1): a meaningful output check
    with torch.no_grad():  # BatchNorm statistics from one random batch keep activations O(1) in eval mode
        net.train()(torch.randn(8, 3, 224, 224))
    return net


def _export(key: str, module, feeds: dict, output_names: list, cache_dir: str, seq_axes: bool = False) -> str:
    """Exports ``module()`` (a torch module factory) once into ``cache_dir`` (temp file + rename),
    with dynamic batch (and sequence) axes, then checks onnxruntime against torch on ``feeds``."""
    import torch

    path = os.path.join(cache_dir, f"{key}_opset{OPSET}_torch{torch.__version__.split('+')[0]}.onnx")
    if os.path.exists(path):
        return path
    from tests.exported import export

    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    names = list(feeds)
    axes = {n: {0: "batch", 1: "seq"} if seq_axes else {0: "batch"} for n in names}
    print(f"exporting {key} to {path}", file=sys.stderr, flush=True)
    m = module().eval()
    args = [torch.from_numpy(v) for v in feeds.values()]
    try:
        export(m, args, tmp, names, output_names, axes, OPSET)
        with torch.no_grad():
            want = m(*args)
        want = [want] if isinstance(want, torch.Tensor) else list(want)
        got = ort_session(tmp, 2, "ORT_ENABLE_ALL").run(None, feeds)
        for name, g, w in zip(output_names, got, want):
            w = w.numpy()
            err = float(np.max(np.abs(g - w))) / max(1.0, float(np.max(np.abs(w))))
            if g.shape != w.shape or not err <= 1e-4:
                raise RuntimeError(f"{key}: onnxruntime's {name} {g.shape} differs from torch's {w.shape} "
                                   f"by {err:.3g} (scaled) > 1e-4")
            print(f"  {name}: onnxruntime vs torch, max |diff| / max(1, max |torch|) = {err:.2g}", file=sys.stderr)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
