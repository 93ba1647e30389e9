"""End-to-end speed: jitort's CPU backend vs onnxruntime (every graph optimization on) on whole models.

    python benchmarks/e2e.py                                       # every model, 3 rounds
    python benchmarks/e2e.py --models mlp_b1,resnet50 --rounds 1 --runs 2
    python benchmarks/e2e.py --cold-start                          # bert_base, resnet50: process start to first result
    python benchmarks/e2e.py --backend reference ...               # another jitort backend

Models: ``benchmarks/models.py`` (exported at run time into cache/benchmarks/, random weights).

Method: for each model and each of R rounds, one fresh process per runtime (this script re-invokes
itself with ``--worker``), alternating which goes first. A worker creates its session (jitort:
``jitort.load(path, backend=B, num_threads=T, cache_dir=--cache-dir)``, compiled kernels kept
there between runs; onnxruntime:
ORT_ENABLE_ALL, T intra-op threads, 1 inter-op thread, sequential, CPU provider), times its first
call, makes the rest of its W warm-up calls, then N timed calls, and reports the median and p90.
The parent compares both runtimes' outputs of the round (same shape and dtype, max|diff| <=
1e-3 * max(1, max|onnxruntime|)); a round that mismatches or fails is reported and not counted.
Per model: the median of the per-process medians, their range, the ratio jitort/onnxruntime;
overall: the geometric mean of the ratios and the worst model. JSON: benchmarks/results/e2e.json.

``--cold-start [MODELS]`` (default bert_base,resnet50) measures the time from spawning a fresh
process to its first result (interpreter, imports, session creation, first call) for jitort with
an empty cache dir (NUMBA_CACHE_DIR inside it too, so even the package's own kernels compile;
``--keep-package-kernels`` leaves those in Numba's usual cache, as after a first run),
jitort again with that now-filled cache dir (the variant, its packed weights and every kernel
load from disk; the model file is not parsed), and onnxruntime, each in its own process,
alternated; the outputs are checked the same way. jitort's package is byte-compiled first, as a
pip install does. JSON: benchmarks/results/e2e_cold_start.json.
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import harness as H  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from models import MODELS, build, describe  # noqa: E402  (cheap: torch is imported only to export)

RUNTIMES = ("jitort", "onnxruntime")
COLD = ("jitort_cold", "jitort_warm", "onnxruntime")  # the warm run reuses the cold run's cache dir
#: The cold run goes first (the warm one needs its cache); the process right after it starts slower
#: (it wrote 100+ MB: measured 5-30 ms more for the same interpreter + numpy phase), so the warm run
#: and onnxruntime take that place in turn.
COLD_ORDERS = (COLD, ("jitort_cold", "onnxruntime", "jitort_warm"))


# -- the worker: one runtime, one model, one fresh process ----------------------------------------
def worker(args) -> None:
    feeds = dict(np.load(args.inputs))
    t_import = time.monotonic()
    if args.worker == "jitort":
        import jitort

        t_create = time.monotonic()
        m = jitort.load(args.model_path, backend=args.backend, num_threads=args.threads, cache_dir=args.jitort_cache)
        names = m.output_names

        def call():
            return m(**feeds)
    else:
        import onnxruntime  # noqa: F401  (timed as the import; ort_session's import is then free)

        t_create = time.monotonic()
        sess = H.ort_session(args.model_path, args.threads, "ORT_ENABLE_ALL")
        names = [o.name for o in sess.get_outputs()]

        def call():
            return sess.run(None, feeds)
    t_call = time.monotonic()
    r = H.time_calls(call, args.runs, args.warmup)
    H.save_outputs(args.outdir, args.tag, r.pop("outputs"))
    ms = lambda t: (t - args.spawned) * 1e3  # noqa: E731  (monotonic is system-wide: the parent's clock)
    print(json.dumps({**r, "outputs": names, "python_ms": ms(t_import), "import_ms": (t_create - t_import) * 1e3,
                      "create_ms": (t_call - t_create) * 1e3, "to_first_result_ms": ms(t_call) + r["first_call_ms"]}))


def spawn(tag: str, outdir: str, model_path: str, inputs: str, args, runs: int, warmup: int) -> dict:
    runtime = "jitort" if tag.startswith("jitort") else "onnxruntime"
    # --cold-start: a dir empty for the round's first jitort worker, then reused; otherwise the
    # persistent kernel cache (the steady state does not depend on it; the first call does)
    cache = os.path.join(outdir, "jitort_cache") if args.cold_start else args.cache_dir
    os.makedirs(cache, exist_ok=True)
    env = H.worker_env(args.threads)
    if runtime == "jitort":
        env["JITORT_CACHE_DIR"] = cache
        if args.cold_start and not args.keep_package_kernels:  # the package's own kernels too
            env["NUMBA_CACHE_DIR"] = os.path.join(cache, "numba")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", runtime, "--tag", tag, "--model-path", model_path,
           "--inputs", inputs, "--outdir", outdir, "--runs", str(runs), "--warmup", str(warmup),
           "--threads", str(args.threads), "--backend", args.backend, "--jitort-cache", cache,
           "--spawned", repr(time.monotonic())]
    return H.run_worker(cmd, env)


def run_rounds(model: str, tags: tuple, args, tmp: str, runs: int, warmup: int,
               orders: tuple | None = None) -> tuple[str, list]:
    model_path, feeds = build(model)
    inputs = os.path.join(tmp, f"{model}_inputs.npz")
    np.savez(inputs, **feeds)
    rounds = H.run_rounds(model, tags, args.rounds,
                          lambda tag, outdir: spawn(tag, outdir, model_path, inputs, args, runs, warmup),
                          tmp, "median_ms" if runs else "to_first_result_ms", orders)
    return model_path, rounds


# -- steady state ---------------------------------------------------------------------------------------
def bench(args, models: list, tmp: str) -> dict:
    results = {}
    for model in models:
        path, rounds = run_rounds(model, RUNTIMES, args, tmp, args.runs, args.warmup)
        res = {"description": describe(model), "model_path": H.relpath(path),
               "counted_rounds": sum(r["outputs_match"] for r in rounds), "rounds": rounds}
        for rt in RUNTIMES:
            meds = H.counted(rounds, rt, "median_ms")
            res[rt] = {"median_ms": H.median(meds), "per_process_medians_ms": meds,
                       "p90_ms": H.median(H.counted(rounds, rt, "p90_ms")),
                       "create_ms": H.median(H.counted(rounds, rt, "create_ms")),
                       "first_call_ms": H.median(H.counted(rounds, rt, "first_call_ms"))}
        j, o = res["jitort"]["median_ms"], res["onnxruntime"]["median_ms"]
        res["ratio"] = j / o if j and o else None
        results[model] = res
    ratios = {m: r["ratio"] for m, r in results.items() if r["ratio"]}
    worst = max(ratios, key=ratios.get) if ratios else None
    summary = {"geomean_ratio": math.exp(statistics.mean(math.log(x) for x in ratios.values())) if ratios else None,
               "worst_model": worst, "worst_ratio": ratios.get(worst), "models_without_ratio":
               [m for m in results if m not in ratios]}

    f = lambda x, d: "-" if x is None else f"{x:.{d}f}"  # noqa: E731
    rows = [("model", f"jitort {args.backend} ms", "onnxruntime ms", "jitort/ORT", "p90 ms (j / o)",
             "create ms (j / o)", "first call ms (j / o)", "rounds ok")]
    for model, r in results.items():
        j, o = r["jitort"], r["onnxruntime"]
        pair = lambda key, d: f"{f(j[key], d)} / {f(o[key], d)}"  # noqa: E731
        rows.append((model, H.fmt_median(j["per_process_medians_ms"], 2), H.fmt_median(o["per_process_medians_ms"], 2),
                     "-" if r["ratio"] is None else f"{r['ratio']:.2f}x", pair("p90_ms", 2), pair("create_ms", 0),
                     pair("first_call_ms", 0), f"{r['counted_rounds']}/{len(r['rounds'])}"))
    H.print_table(rows)
    print(f"\nmedian of per-process medians [range]; {args.runs} timed calls after {args.warmup} warm-up calls per "
          f"process, {args.threads} threads each; p90, create and first call: medians over processes.")
    if ratios:
        print(f"geometric mean of jitort/onnxruntime: {summary['geomean_ratio']:.2f}x; "
              f"worst: {worst} {ratios[worst]:.2f}x")
    if summary["models_without_ratio"]:
        print(f"no counted round: {', '.join(summary['models_without_ratio'])}")
    return {"models": results, **summary}


# -- cold start ----------------------------------------------------------------------------------------
def cold_start(args, model: str, tmp: str) -> dict:
    # As installed: pip byte-compiles the packages it installs (onnxruntime's .pyc are there);
    # an editable install of jitort has none, and these machines set PYTHONDONTWRITEBYTECODE=1.
    compileall.compile_dir(os.path.join(H.ROOT, "jitort"), quiet=1)
    path, rounds = run_rounds(model, COLD, args, tmp, 0, 1, COLD_ORDERS)
    res = {"description": describe(model), "model_path": H.relpath(path),
           "counted_rounds": sum(r["outputs_match"] for r in rounds), "rounds": rounds}
    wall = ("to_first_result_ms", "python_ms", "import_ms", "create_ms", "first_call_ms")
    for tag in COLD:
        res[tag] = {k: H.counted(rounds, tag, k) for k in wall + ("cpu_to_first_result_ms",)}
    ort, ort_cpu = (H.median(res["onnxruntime"][k]) for k in ("to_first_result_ms", "cpu_to_first_result_ms"))
    ratio = lambda x: "-" if x is None else f"{x:.2f}x"  # noqa: E731
    rows = [("runtime", "to first result ms", "python+inputs ms", "import ms", "create ms", "first call ms",
             "vs ORT", "CPU ms", "CPU vs ORT")]
    for tag in COLD:
        t, c = H.median(res[tag]["to_first_result_ms"]), H.median(res[tag]["cpu_to_first_result_ms"])
        res[tag]["ratio_to_onnxruntime"] = t / ort if t and ort else None
        res[tag]["cpu_ratio_to_onnxruntime"] = c / ort_cpu if c and ort_cpu else None
        rows.append((tag, *(H.fmt_median(res[tag][k], 0) for k in wall), ratio(res[tag]["ratio_to_onnxruntime"]),
                     H.fmt_median(res[tag]["cpu_to_first_result_ms"], 0), ratio(res[tag]["cpu_ratio_to_onnxruntime"])))
    H.print_table(rows)
    print(f"\n{model}: median [range] over {res['counted_rounds']} counted rounds; 'to first result' runs from "
          f"spawning the process to the end of the first call. jitort_cold starts with an empty cache dir, "
          f"jitort_warm reuses it. CPU: the process's CPU time (all its threads) at its first result, "
          f"less moved than wall time by other jobs on a shared machine.")
    return {"model": model, **res}


# -- the parent ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the runtimes alternate within each")
    ap.add_argument("--runs", type=int, default=20, help="timed calls per worker")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per worker, the first one timed alone")
    ap.add_argument("--threads", type=int, default=2, help="threads for both runtimes")
    ap.add_argument("--backend", default="cpu", help="jitort backend (default cpu)")
    ap.add_argument("--cold-start", nargs="?", const="bert_base,resnet50", metavar="MODELS",
                    help="measure process start to first result instead (default models: bert_base,resnet50)")
    ap.add_argument("--keep-package-kernels", action="store_true",
                    help="--cold-start: leave Numba's cache of jitort's own kernels (row kernels, attention, "
                         "pools) where it is, so 'cold' compiles only the model's generated kernels")
    ap.add_argument("--cache-dir", default=os.path.join(H.ROOT, "cache", "benchmarks", "jitort"),
                    help="jitort's cache dir for the steady-state runs (default cache/benchmarks/jitort)")
    ap.add_argument("--json", help="the JSON report (default benchmarks/results/e2e.json, "
                                   "e2e_cold_start.json with --cold-start)")
    for hidden in ("--worker", "--tag", "--model-path", "--inputs", "--outdir", "--jitort-cache"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    cold = [m.strip() for m in (args.cold_start or "").split(",") if m.strip()]
    unknown = [m for m in models + cold if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    with tempfile.TemporaryDirectory(prefix="jitort-e2e-") as tmp:
        if cold:
            doc = {"models": {m: cold_start(args, m, tmp) for m in cold}}
        else:
            doc = bench(args, models, tmp)
    name = "e2e_cold_start" if args.cold_start else "e2e"
    H.write_json(args.json or os.path.join(H.RESULTS, f"{name}.json"), {
        "benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": H.machine(),
        "settings": {"backend": args.backend, "threads": args.threads, "rounds": args.rounds,
                     **({} if args.cold_start else {"runs": args.runs, "warmup": args.warmup}),
                     "onnxruntime": "ORT_ENABLE_ALL, CPUExecutionProvider, sequential, 1 inter-op thread",
                     "unset_env": ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]},
        **doc})
    return 0


if __name__ == "__main__":
    sys.exit(main())
