"""Node counts before and after graph optimization, per level, on the model suite.

    python benchmarks/node_reduction.py                 # base-size transformers, the CNNs
    python benchmarks/node_reduction.py --small         # 2-layer transformers (quick)
    python benchmarks/node_reduction.py --models bert,vit

Models (built from configs with random weights and exported at run time by ``tests/exported.py``,
cached in its temp folder; nothing downloaded or committed):

* ``bert``: transformers BertModel, BERT-base structure (12 layers, hidden 768, 12 heads,
  intermediate 3072) with a 1000-token vocabulary; batch 1, sequence 128;
* ``gpt2_past``: GPT2LMHeadModel with past key/values (12 layers, 12 heads, n_embd 768), one
  decode step: batch 1, 1 new token, 32 past tokens;
* ``vit``: ViTModel, ViT-base structure (12 layers, 768, 12 heads, 3072, 224x224, patch 16);
* ``resnet50``: the light ResNet-50 shipped in the onnx package, batch 1;
* ``mobilenetish``: the depthwise-separable test CNN, 1x3x224x224.

For each level 0-3 the graph is bound to the Signature and optimized (``passes.pipeline``); the
figure is the number of top-level nodes (a fused region counts as one node). The table is printed
and written with the per-level op histograms and pass hits to
``benchmarks/results/node_reduction.json``. Counting only: nothing is timed or run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LEVELS = (0, 1, 2, 3)
MODELS = ("bert", "gpt2_past", "vit", "resnet50", "mobilenetish")
DEFAULT_JSON = os.path.join(ROOT, "benchmarks", "results", "node_reduction.json")


def suite(small: bool) -> dict:
    """name -> (model path, {input: shape}, description)."""
    import onnx

    from tests import exported as E

    layers, hidden, heads, inter = (2, 64, 2, 128) if small else (12, 768, 12, 3072)
    size = "2-layer small" if small else "base"
    seq, past = (16, 8) if small else (128, 32)
    head = hidden // heads
    r50 = onnx.load(E.RESNET50, load_external_data=False).graph.input[0]
    r50_shape = tuple(d.dim_value or 1 for d in r50.type.tensor_type.shape.dim)
    gpt_shapes = {"input_ids": (1, 1), "attention_mask": (1, past + 1)}
    gpt_shapes.update({n: (1, heads, past, head) for n in E.past_names(layers)})
    return {
        "bert": (lambda: E.bert(layers, hidden, heads, inter),
                 {n: (1, seq) for n in E.BERT_INPUTS}, f"BERT {size}, vocab {E.VOCAB}, 1x{seq}"),
        "gpt2_past": (lambda: E.gpt2_past(layers, heads, hidden),
                      gpt_shapes, f"GPT-2 {size} with past, 1 token + {past} past"),
        "vit": (lambda: E.vit(layers, hidden, heads, inter, *((32, 8) if small else (224, 16))),
                {"pixel_values": (1, 3) + ((32, 32) if small else (224, 224))}, f"ViT {size}"),
        "resnet50": (lambda: E.RESNET50, {r50.name: r50_shape}, "light ResNet-50 (onnx package)"),
        "mobilenetish": (E.mobilenetish, {"image": (1, 3, 224, 224)}, "MobileNet-ish, 1x3x224x224"),
    }


def count(path: str, shapes: dict) -> dict:
    from jitort.inspect import input_types, op_histogram
    from jitort.ir.infer import bind
    from jitort.ir.onnx_import import import_model
    from jitort.passes.pipeline import optimize

    model = import_model(path)
    bound = bind(model.graph, input_types(model.graph, shapes))
    out = {}
    for level in LEVELS:
        t0 = time.perf_counter()
        r = optimize(bound, level)
        out[level] = {"nodes": len(r.graph.nodes), "optimize_s": round(time.perf_counter() - t0, 3),
                      "ops": op_histogram(r.graph), "hits": {k: v for k, v in r.hits.items() if v},
                      "near_misses": len(r.near_misses)}
    return out


def table(results: dict) -> str:
    head = f"{'model':<14} " + " ".join(f"{'L' + str(lv):>6}" for lv in LEVELS) + "   L2 vs L0   L3 vs L0"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        n = [r["levels"][lv]["nodes"] for lv in LEVELS]
        pct = [f"{100 * (1 - n[k] / n[0]):>8.1f}%" if n[0] else "       -" for k in (2, 3)]
        lines.append(f"{name:<14} " + " ".join(f"{x:>6}" for x in n) + "  " + "  ".join(pct))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--small", action="store_true", help="2-layer small transformers instead of base size")
    p.add_argument("--json", default=DEFAULT_JSON, help="where to write the JSON results")
    args = p.parse_args(argv)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    models = suite(args.small)
    results = {}
    for name in wanted:
        build, shapes, desc = models[name]
        t0 = time.perf_counter()
        path = build()
        print(f"{name}: {desc} ({time.perf_counter() - t0:.1f} s to export/load)", file=sys.stderr)
        results[name] = {"description": desc, "shapes": {k: list(v) for k, v in shapes.items()},
                         "levels": count(path, shapes)}
    print(table(results))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"small": args.small, "numpy": np.__version__, "models": results}, f, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
