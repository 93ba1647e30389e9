"""Reference-backend speed check: jitort's NumPy reference backend vs onnxruntime with every graph
optimization disabled. Target: jitort within 3x of onnxruntime (no-opt).

    python benchmarks/reference_speed.py                      # both models, 3 rounds
    python benchmarks/reference_speed.py --models bert --rounds 5 --runs 20

Models (``benchmarks/models.py``; exported at run time into the cache folder, never committed):

* ``bert``: its ``bert_small``: transformers BERT-small (4 layers, hidden 256, 4 heads,
  intermediate 1024, random weights, eager attention), batch 8, sequence 128, some rows padded,
  exported with the TorchScript exporter (opset 17);
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
import sys
import tempfile
import time

import numpy as np

import harness as H  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
import models  # noqa: E402

RUNTIMES = ("jitort", "onnxruntime")
MODELS = {"bert": models.bert_small, "resnet50": models.resnet50}
TARGET_RATIO = 3.0


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
        sess = H.ort_session(args.model_path, args.threads, "ORT_DISABLE_ALL")
        names = [o.name for o in sess.get_outputs()]

        def call():
            return sess.run(None, feeds)
    else:
        raise SystemExit(f"unknown runtime {runtime!r}; known: {RUNTIMES}")
    load_s = time.perf_counter() - t0
    r = H.time_calls(call, args.runs, args.warmup)
    H.save_outputs(args.outdir, runtime, r.pop("outputs"))
    print(json.dumps({"runtime": runtime, "model": model, "load_ms": load_s * 1e3, **r, "outputs": names}))


def run_worker(runtime, model, model_path, inputs, outdir, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", runtime, model, "--model-path", model_path,
           "--inputs", inputs, "--outdir", outdir, "--runs", str(args.runs), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--opt-level", str(args.opt_level)]
    return {"runtime": runtime, "model": model, **H.run_worker(cmd, H.worker_env(args.threads))}


# -- the parent -------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the runtimes alternate within each")
    ap.add_argument("--runs", type=int, default=10, help="timed calls per worker")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per worker (the first compiles)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both runtimes")
    ap.add_argument("--opt-level", type=int, default=0,
                    help="jitort graph optimization level (default 0: like ORT's, all off)")
    ap.add_argument("--cache-dir", default=models.CACHE_DIR, help="exported models")
    ap.add_argument("--json", default=os.path.join(H.RESULTS, "reference_speed.json"))
    ap.add_argument("--worker", nargs=2, metavar=("RUNTIME", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--outdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker, args)
        return 0

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="jitort-bench-") as tmp:
        for model in names:
            model_path, feeds = MODELS[model](args.cache_dir)
            inputs = os.path.join(tmp, f"{model}_inputs.npz")
            np.savez(inputs, **feeds)
            rounds = H.run_rounds(model, RUNTIMES, args.rounds,
                                  lambda rt, outdir: run_worker(rt, model, model_path, inputs, outdir, args), tmp)
            results[model] = summarize(model_path, rounds)
    report(results, args)
    return 0


def summarize(model_path, rounds) -> dict:
    out = {"model_path": H.relpath(model_path), "rounds": rounds,
           "counted_rounds": sum(r["outputs_match"] for r in rounds)}
    for rt in RUNTIMES:
        meds = H.counted(rounds, rt, "median_ms")
        out[rt] = {"median_ms": H.median(meds), "per_process_medians_ms": meds,
                   "first_call_ms": H.counted(rounds, rt, "first_call_ms"), "load_ms": H.counted(rounds, rt, "load_ms")}
    j, o = out["jitort"]["median_ms"], out["onnxruntime"]["median_ms"]
    out["ratio"] = j / o if j and o else None
    out["within_target"] = out["ratio"] is not None and out["ratio"] <= TARGET_RATIO
    return out


def report(results: dict, args) -> None:
    rows = [("model", "jitort ref (ms)", "ORT no-opt (ms)", "ratio", f"<= {TARGET_RATIO:g}x", "rounds ok")]
    for model, r in results.items():
        rows.append((model, H.fmt_median(r["jitort"]["per_process_medians_ms"]),
                     H.fmt_median(r["onnxruntime"]["per_process_medians_ms"]),
                     f"{r['ratio']:.2f}x" if r["ratio"] else "-", "yes" if r["within_target"] else "NO",
                     f"{r['counted_rounds']}/{len(r['rounds'])}"))
    H.print_table(rows)
    print(f"\nmedian of per-process medians [range]; {args.runs} timed calls after {args.warmup} warm-up "
          f"per process, {args.threads} threads each")
    H.write_json(args.json, {
        "benchmark": "reference_speed", "target_ratio": TARGET_RATIO,
        "settings": {"rounds": args.rounds, "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
                     "bert": models.describe("bert_small"), "resnet50": models.describe("resnet50"),
                     "onnxruntime": "ORT_DISABLE_ALL, CPUExecutionProvider, sequential",
                     "unset_env": ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]},
        "machine": H.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results})


if __name__ == "__main__":
    sys.exit(main())
