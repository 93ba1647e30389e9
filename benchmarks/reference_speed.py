"""Reference-backend speed check: jitort's NumPy reference backend vs onnxruntime with every graph
optimization disabled. Target: jitort within 3x of onnxruntime (no-opt).

    python benchmarks/reference_speed.py                      # both models, 3 rounds
    python benchmarks/reference_speed.py --models bert --rounds 5 --runs 20

Models (exported at run time into the cache folder, never committed):

* ``bert``: transformers BERT-small (4 layers, hidden 256, 4 heads, intermediate 1024, random
  weights, eager attention), batch 8, sequence 128, exported with the TorchScript exporter
  (opset 17);
* ``resnet50``: the light ResNet-50 that ships in the onnx package, batch 1.

Method: each runtime runs in its own fresh subprocess (this script re-invokes itself with
``--worker RUNTIME MODEL``), the two runtimes alternate over R rounds, and each worker does its
warm-up calls and then N timed calls and reports its median. The parent compares both runtimes'
outputs of each round (saved as .npy in a temp folder; atol 1e-3 * max(1, max|onnxruntime|));
a round's timings count only when they match. The figure per runtime is the median of its
per-process medians. Results go to benchmarks/results/reference_speed.json (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from harness import worker_env  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

RUNTIMES = ("jitort", "onnxruntime")
MODELS = ("bert", "resnet50")
TARGET_RATIO = 3.0
OPSET = 17
BERT = dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024,
            vocab_size=30522, max_position_embeddings=512)
BERT_BATCH, BERT_SEQ = 8, 128


# -- model preparation (parent only) ------------------------------------------------------------
def prepare(model: str, cache_dir: str, work_dir: str) -> tuple[str, str]:
    """Returns (model path, inputs .npz path)."""
    rng = np.random.default_rng(0)
    if model == "bert":
        path = export_bert(cache_dir)
        ids = rng.integers(0, BERT["vocab_size"], (BERT_BATCH, BERT_SEQ), dtype=np.int64)
        mask = np.ones((BERT_BATCH, BERT_SEQ), dtype=np.int64)
        for row, length in enumerate(rng.integers(BERT_SEQ // 2, BERT_SEQ + 1, BERT_BATCH)):
            mask[row, length:] = 0  # some padded rows, as in a real batch
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    elif model == "resnet50":
        import onnx

        path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                            "light_resnet50.onnx")
        m = onnx.load(path)
        inits = {i.name for i in m.graph.initializer}
        feeds = {x.name: rng.standard_normal([d.dim_value for d in x.type.tensor_type.shape.dim]).astype(np.float32)
                 for x in m.graph.input if x.name not in inits}
    else:
        raise SystemExit(f"unknown model {model!r}; known: {MODELS}")
    inputs = os.path.join(work_dir, f"{model}_inputs.npz")
    np.savez(inputs, **feeds)
    return path, inputs


def export_bert(cache_dir: str) -> str:
    import torch
    import transformers

    tag = "bert_small_L{num_hidden_layers}_H{hidden_size}_A{num_attention_heads}_I{intermediate_size}".format(**BERT)
    path = os.path.join(cache_dir, f"{tag}_opset{OPSET}_torch{torch.__version__.split('+')[0]}"
                                   f"_tf{transformers.__version__}.onnx")
    if os.path.exists(path):
        return path
    import warnings

    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(**BERT, attn_implementation="eager")).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            o = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                       return_dict=True)
            return o.last_hidden_state, o.pooler_output

    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = tuple(torch.ones(BERT_BATCH, BERT_SEQ, dtype=torch.long) for _ in names)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    print(f"exporting BERT-small to {path}", file=sys.stderr)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapper(bert).eval(), args, tmp, input_names=names,
                          output_names=["last_hidden_state", "pooler_output"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
                          opset_version=OPSET, dynamo=False)
    os.replace(tmp, path)
    return path


# -- the worker: one runtime, one model, one fresh process --------------------------------------
def worker(runtime: str, model: str, args) -> None:
    feeds = dict(np.load(args.inputs))
    t0 = time.perf_counter()
    if runtime == "jitort":
        import jitort

        m = jitort.load(args.model_path, backend="reference", num_threads=args.threads,
                        opt_level=args.opt_level)
        names = m.output_names

        def call():
            return list(m(**feeds))
    elif runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        sess = ort.InferenceSession(args.model_path, so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]

        def call():
            return sess.run(None, feeds)
    else:
        raise SystemExit(f"unknown runtime {runtime!r}; known: {RUNTIMES}")
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    outs = call()
    first_s = time.perf_counter() - t0
    for _ in range(max(0, args.warmup - 1)):
        call()
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        outs = call()
        times.append(time.perf_counter() - t0)
    for i, o in enumerate(outs):
        np.save(os.path.join(args.outdir, f"{runtime}_{model}_out{i}.npy"), np.asarray(o))
    print(json.dumps({"runtime": runtime, "model": model, "load_ms": load_s * 1e3, "first_call_ms": first_s * 1e3,
                      "median_ms": statistics.median(times) * 1e3, "times_ms": [t * 1e3 for t in times],
                      "outputs": names}))


def run_worker(runtime, model, model_path, inputs, outdir, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", runtime, model, "--model-path", model_path,
           "--inputs", inputs, "--outdir", outdir, "--runs", str(args.runs), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--opt-level", str(args.opt_level)]
    p = subprocess.run(cmd, env=worker_env(args.threads), capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        return {"runtime": runtime, "model": model, "error": (p.stderr or p.stdout).strip()[-2000:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def compare_outputs(model: str, outdir: str, n: int) -> tuple[bool, float, str]:
    """(match, max |jitort - ort| / scale, message) over all outputs of one round."""
    worst = 0.0
    for i in range(n):
        got = np.load(os.path.join(outdir, f"jitort_{model}_out{i}.npy"))
        want = np.load(os.path.join(outdir, f"onnxruntime_{model}_out{i}.npy"))
        if got.shape != want.shape or got.dtype != want.dtype:
            return False, float("inf"), f"output {i}: {got.dtype}{got.shape} vs onnxruntime {want.dtype}{want.shape}"
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale if want.size else 0.0
        worst = max(worst, err)
        if not err <= 1e-3:
            return False, worst, f"output {i}: max |diff| / {scale:.3g} = {err:.3g} > 1e-3"
    return True, worst, ""


# -- the parent -------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the runtimes alternate within each")
    ap.add_argument("--runs", type=int, default=10, help="timed calls per worker")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per worker (the first compiles)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both runtimes")
    ap.add_argument("--opt-level", type=int, default=0,
                    help="jitort graph optimization level (default 0: like ORT's, all off)")
    ap.add_argument("--cache-dir", default=os.path.join(ROOT, "cache", "benchmarks"), help="exported models")
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "reference_speed.json"))
    ap.add_argument("--worker", nargs=2, metavar=("RUNTIME", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--outdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker, args)
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results = {}
    with tempfile.TemporaryDirectory(prefix="jitort-bench-") as tmp:
        for model in models:
            model_path, inputs = prepare(model, args.cache_dir, tmp)
            rounds = []
            for r in range(args.rounds):
                order = RUNTIMES if r % 2 == 0 else RUNTIMES[::-1]
                outdir = os.path.join(tmp, f"{model}_round{r}")
                os.makedirs(outdir)
                got = {rt: run_worker(rt, model, model_path, inputs, outdir, args) for rt in order}
                errors = {rt: g["error"] for rt, g in got.items() if "error" in g}
                if errors:
                    ok, diff, msg = False, None, "; ".join(f"{rt} failed: {e.splitlines()[-1]}" for rt, e in errors.items())
                else:
                    ok, diff, msg = compare_outputs(model, outdir, len(got["onnxruntime"]["outputs"]))
                rounds.append({"round": r, "order": list(order), "outputs_match": ok, "max_scaled_diff": diff,
                               "problem": msg, **{rt: got[rt] for rt in RUNTIMES}})
                line = ", ".join(f"{rt} {got[rt]['median_ms']:.1f} ms" if "median_ms" in got[rt] else f"{rt} FAILED"
                                 for rt in order)
                print(f"[{model} round {r + 1}/{args.rounds}] {line}" + ("" if ok else f"  NOT COUNTED: {msg}"),
                      file=sys.stderr, flush=True)
                if errors:
                    for rt, e in errors.items():
                        print(f"--- {rt} worker stderr (tail) ---\n{e}", file=sys.stderr)
            results[model] = summarize(model, model_path, rounds)
    report(results, args)
    return 0


def summarize(model, model_path, rounds) -> dict:
    counted = [r for r in rounds if r["outputs_match"]]
    out = {"model_path": os.path.relpath(model_path, ROOT) if model_path.startswith(ROOT) else model_path,
           "rounds": rounds, "counted_rounds": len(counted)}
    for rt in RUNTIMES:
        meds = [r[rt]["median_ms"] for r in counted]
        out[rt] = {"median_ms": statistics.median(meds) if meds else None,
                   "per_process_medians_ms": meds,
                   "first_call_ms": [r[rt]["first_call_ms"] for r in counted],
                   "load_ms": [r[rt]["load_ms"] for r in counted]}
    j, o = out["jitort"]["median_ms"], out["onnxruntime"]["median_ms"]
    out["ratio"] = j / o if j and o else None
    out["within_target"] = out["ratio"] is not None and out["ratio"] <= TARGET_RATIO
    return out


def report(results: dict, args) -> None:
    rows = [("model", "jitort ref (ms)", "ORT no-opt (ms)", "ratio", f"<= {TARGET_RATIO:g}x", "rounds ok")]
    for model, r in results.items():
        j, o = r["jitort"], r["onnxruntime"]

        def fmt(x):
            if x["median_ms"] is None:
                return "-"
            meds = x["per_process_medians_ms"]
            return f"{x['median_ms']:.1f} [{min(meds):.1f}-{max(meds):.1f}]"

        rows.append((model, fmt(j), fmt(o), f"{r['ratio']:.2f}x" if r["ratio"] else "-",
                     "yes" if r["within_target"] else "NO", f"{r['counted_rounds']}/{len(r['rounds'])}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\nmedian of per-process medians [range]; {args.runs} timed calls after {args.warmup} warm-up "
          f"per process, {args.threads} threads each")
    import onnxruntime

    doc = {"benchmark": "reference_speed", "target_ratio": TARGET_RATIO,
           "settings": {"rounds": args.rounds, "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
                        "bert": {**BERT, "batch": BERT_BATCH, "seq": BERT_SEQ}, "resnet50": {"batch": 1},
                        "onnxruntime": "ORT_DISABLE_ALL, CPUExecutionProvider, sequential",
                        "unset_env": ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]},
           "machine": {"platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count(),
                       "python": platform.python_version(), "numpy": np.__version__,
                       "onnxruntime": onnxruntime.__version__},
           "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"wrote {args.json}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
