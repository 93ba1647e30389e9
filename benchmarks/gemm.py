"""GEMM throughput: jitort's generated GEMM vs onnxruntime's one-node MatMul vs numpy (OpenBLAS).

    python benchmarks/gemm.py                       # 5 shapes x {1, 2} threads, 3 rounds
    python benchmarks/gemm.py --rounds 5 --threads 2 --shapes 128x768x768
    python benchmarks/gemm.py --runtimes jitort --threads 1 --epilogues none,bias,bias+gelu_erf

Method: every (runtime, shape, threads) runs in its own fresh process (this script re-invokes
itself with ``--worker``); within a round the runtimes' order alternates. Each worker first checks
its output against a NumPy float64 product (max error scaled by |A|@|B| must be <= 1e-4, else the
worker fails and its timing is dropped), then does warm-up calls and R repeats of a batch of
calls, and reports the median per-call time. The figure per configuration is the median of the
per-process medians. Worker environment: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset,
NUMBA_THREADING_LAYER=omp, OPENBLAS_NUM_THREADS / OMP_NUM_THREADS = threads (jitort: 1, it calls
no BLAS). jitort: B packed once (not timed), A read in place, ``plan(A, packed, out)``. onnxruntime:
a one-node MatMul with B as an initializer, ``InferenceSession.run``, intra_op_num_threads =
threads. numpy: ``np.matmul(A, B, out=C)`` (M=1: a 1-D vector, so the call goes to gemv).
``--epilogues`` (jitort only; the other runtimes run the plain product): ``bias``, ``relu``,
``gelu_erf``, ``gelu_tanh`` joined by ``+`` (``none``: no epilogue), fused into the plan and
checked against float64 after the same epilogue. A and B are standard normal, so the products
have a standard deviation of sqrt(K) (activations see large |x|: their tails are exercised).
Results: printed, and JSON in benchmarks/results/gemm.json (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from harness import worker_env  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

RUNTIMES = ("jitort", "onnxruntime", "numpy")
SHAPES = ("128x768x768", "128x768x3072", "128x3072x768", "64x1024x1024", "1x1024x1024")


# -- worker ----------------------------------------------------------------------------------
def _epilogue(spec: str):
    from jitort.backends.cpu.gemm import Epilogue
    parts = set(spec.split("+")) - {"none"}
    acts = parts - {"bias"}
    if len(acts) > 1:
        raise SystemExit(f"epilogue {spec!r}: one activation at most")
    return Epilogue(bias="bias" in parts, activation=acts.pop() if acts else "none")


def worker(runtime: str, shape: str, threads: int, batch: int, repeats: int, epilogue: str = "none") -> dict:
    import numpy as np
    M, K, N = map(int, shape.split("x"))
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K), dtype=np.float32)
    B = rng.standard_normal((K, N), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32)
    out = np.empty((M, N), np.float32)
    ep = _epilogue(epilogue if runtime == "jitort" else "none")
    t0 = time.perf_counter()
    if runtime == "jitort":
        from jitort.backends.cpu.gemm import GemmPlan
        plan = GemmPlan(M, K, N, epilogue=ep, threads=threads)
        packed = plan.pack_b(B)
        b = bias if ep.bias else None
        call = lambda: plan(A, packed, out, bias=b)
        info = f"tile {plan.MR}x{plan.NR} KC {plan.KC} MC {plan.MC} VW {plan.VW}"
    elif runtime == "onnxruntime":
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm",
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, [M, K])],
            [helper.make_tensor_value_info("C", TensorProto.FLOAT, [M, N])],
            [numpy_helper.from_array(B, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = {"A": A}

        def call():
            out[...] = sess.run(None, feeds)[0]
        run_only = lambda: sess.run(None, feeds)
        info = ""
    else:
        if M == 1:
            a1, o1 = A[0], out[0]
            call = lambda: np.matmul(a1, B, out=o1)
        else:
            call = lambda: np.matmul(A, B, out=out)
        info = ""
    call()
    first = time.perf_counter() - t0
    want = A.astype(np.float64) @ B.astype(np.float64)
    scale = np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64) + 1
    if ep.bias:
        want, scale = want + bias, scale + np.abs(bias)
    if ep.activation == "relu":
        want = np.maximum(want, 0)
    elif ep.activation == "gelu_erf":
        from scipy.special import erf
        want = 0.5 * want * (1 + erf(want / np.sqrt(2)))
    elif ep.activation == "gelu_tanh":
        want = 0.5 * want * (1 + np.tanh(np.sqrt(2 / np.pi) * (want + 0.044715 * want ** 3)))
    err = float((np.abs(out - want) / scale).max())
    if not err <= 1e-4:
        raise SystemExit(f"{runtime} {shape}: wrong result, scaled error {err:.3g}")
    timed = run_only if runtime == "onnxruntime" else call
    for _ in range(max(3, batch // 4)):
        timed()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batch):
            timed()
        times.append((time.perf_counter() - t) / batch)
    return {"ms": 1e3 * statistics.median(times), "first_call_s": first, "err": err, "info": info}


# -- parent ----------------------------------------------------------------------------------
def _env(runtime: str, threads: int) -> dict:
    return worker_env(threads, blas_threads=1 if runtime == "jitort" else threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--epilogues", default="none",
                    help="jitort's fused epilogues, comma-separated: e.g. none,bias,bias+gelu_erf,bias+relu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=20, help="calls per timed repeat (x20 for M=1)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "gemm.json"))
    ap.add_argument("--worker", nargs=3, metavar=("RUNTIME", "SHAPE", "THREADS"))
    args = ap.parse_args()
    if args.worker:
        rt, shape, t = args.worker
        print(json.dumps(worker(rt, shape, int(t), args.batch, args.repeats, args.epilogues)))
        return
    shapes, runtimes, epilogues = args.shapes.split(","), args.runtimes.split(","), args.epilogues.split(",")
    for e in epilogues:
        _epilogue(e)  # fail early on a bad spec
    thread_counts = [int(t) for t in args.threads.split(",")]
    results: dict = {}
    load0 = os.getloadavg()
    for rnd in range(args.rounds):
        order = runtimes if rnd % 2 == 0 else runtimes[::-1]
        for shape in shapes:
            batch = args.batch * (20 if shape.startswith("1x") else 1)
            for t in thread_counts:
                for epi in (epilogues if rnd % 2 == 0 else epilogues[::-1]):
                    for rt in order:
                        if rt != "jitort" and epi != epilogues[0]:
                            continue  # the other runtimes run the plain product once per round
                        cmd = [sys.executable, os.path.abspath(__file__), "--worker", rt, shape, str(t),
                               "--batch", str(batch), "--repeats", str(args.repeats), "--epilogues", epi]
                        p = subprocess.run(cmd, env=_env(rt, t), capture_output=True, text=True, check=False)
                        key = f"{shape}|{t}|{rt}" + (f"|{epi}" if rt == "jitort" else "")
                        if p.returncode:
                            print(f"  {key}: FAILED\n{p.stderr[-2000:]}", file=sys.stderr)
                            continue
                        results.setdefault(key, []).append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    load1 = os.getloadavg()
    rows = []
    print(f"\nload average before {load0[0]:.2f}, after {load1[0]:.2f} (other processes share the cores)")
    print(f"{'shape':>14} {'T':>2} {'epilogue':>15} | " + " | ".join(f"{rt:>22}" for rt in runtimes)
          + " | ORT/jitort  np/jitort")
    for shape in shapes:
        M, K, N = map(int, shape.split("x"))
        for t in thread_counts:
            for n, epi in enumerate(epilogues):
                med = {}
                cells = []
                for rt in runtimes:
                    runs = results.get(f"{shape}|{t}|{rt}" + (f"|{epi}" if rt == "jitort" else ""), [])
                    if not runs or (rt != "jitort" and n > 0):
                        cells.append(f"{'-':>22}")
                        continue
                    med[rt] = statistics.median(r["ms"] for r in runs)
                    lo, hi = min(r["ms"] for r in runs), max(r["ms"] for r in runs)
                    cells.append(f"{med[rt]:7.3f} ms {2 * M * K * N / med[rt] / 1e6:5.0f} GF/s".rjust(22))
                    rows.append({"shape": shape, "threads": t, "runtime": rt,
                                 "epilogue": epi if rt == "jitort" else "none", "median_ms": med[rt], "min_ms": lo,
                                 "max_ms": hi, "gflops": 2 * M * K * N / med[rt] / 1e6, "runs": runs})
                ratios = [f"{med[rt] / med['jitort']:10.2f}" if rt in med and "jitort" in med else f"{'-':>10}"
                          for rt in ("onnxruntime", "numpy")]
                print(f"{shape:>14} {t:>2} {epi:>15} | " + " | ".join(cells) + " | " + " ".join(ratios))
    print("(ratios > 1: jitort is faster)")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"load_before": load0, "load_after": load1, "rounds": args.rounds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
