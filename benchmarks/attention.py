"""Fused attention: jitort's Numba kernel vs onnxruntime's com.microsoft MultiHeadAttention
(one-node model) vs jitort's NumPy reference kernel.

    python benchmarks/attention.py                       # both cases x {1, 2} threads, 3 rounds
    python benchmarks/attention.py --cases gpt2 --threads 2 --rounds 5

Cases (float32, layout bsd, 12 heads, D 64):
    bert   B1 Sq=Sk=128, additive mask [1, 1, 128, 128] (ORT: attention_bias)
    gpt2   decode: 1 query, past_key/past_value [1, 12, 1023, 64], causal; present outputs included
           (the concat of the past is part of every runtime's work)

jitort writes into preallocated Y / present buffers (as the memory planner will); onnxruntime
uses its own arena; the reference allocates.

Method as benchmarks/gemm.py: every (runtime, case, threads) in its own fresh process (``--worker``),
runtimes alternated per round; each worker first checks Y against the float64 reference kernel
(max error / max |Y| <= 1e-4, else it fails and its timing is dropped), warms up, and reports the
median of R repeats of a batch of calls. The figure is the median of the per-process medians.
Worker environment: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, NUMBA_THREADING_LAYER=omp,
OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads for numpy (1 for jitort: it calls no BLAS).
Results: printed, and JSON in benchmarks/results/attention.json (ignored by git).
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

RUNTIMES = ("jitort", "onnxruntime", "numpy-ref")
CASES = ("bert", "gpt2")
H, D = 12, 64


def _inputs(case):
    import numpy as np
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s, dtype=np.float32)
    if case == "bert":
        q, k, v = f(1, 128, H * D), f(1, 128, H * D), f(1, 128, H * D)
        mask = np.where(rng.random((1, 1, 128, 128)) < 0.9, 0.0, -10000.0).astype(np.float32)
        return {"q": q, "k": k, "v": v, "mask": mask}, {"num_heads": H, "scale": D ** -0.5, "mask_kind": "additive"}
    q, k, v = f(1, 1, H * D), f(1, 1, H * D), f(1, 1, H * D)
    pk, pv = f(1, H, 1023, D), f(1, H, 1023, D)
    return ({"q": q, "k": k, "v": v, "past_key": pk, "past_value": pv},
            {"num_heads": H, "scale": D ** -0.5, "causal": 1})


def _ort_session(case, feeds, attrs, threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper
    names = {"q": "query", "k": "key", "v": "value", "mask": "attention_bias",
             "past_key": "past_key", "past_value": "past_value"}
    order = ["query", "key", "value", "bias", "key_padding_mask", "attention_bias", "past_key", "past_value"]
    given = {names[n]: n for n in feeds}
    inputs = [given.get(o, "") for o in order]
    while inputs and not inputs[-1]:
        inputs.pop()
    outs = ["y", "present_key", "present_value"] if "past_key" in feeds else ["y"]
    node = helper.make_node("MultiHeadAttention", inputs, outs, domain="com.microsoft",
                            num_heads=H, scale=float(attrs["scale"]),
                            **({"unidirectional": 1} if attrs.get("causal") else {}))
    vi = lambda n, a: helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
    graph = helper.make_graph([node], "mha", [vi(n, a) for n, a in feeds.items()],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def worker(runtime: str, case: str, threads: int, batch: int, repeats: int) -> dict:
    import numpy as np

    from jitort.ops.registry import KernelContext, find
    feeds, attrs = _inputs(case)
    args = [feeds.get(n) for n in ("q", "k", "v", "past_key", "past_value", "mask")]
    ref = find("Attention", "jitort", 1).kernel
    t0 = time.perf_counter()
    if runtime == "jitort":
        from jitort.backends.cpu.attention import AttentionPlan
        plan = AttentionPlan(*[None if a is None else a.shape for a in args[:3]],
                             None if args[3] is None else args[3].shape,
                             None if args[5] is None else args[5].shape, threads=threads, **attrs)
        bufs = {"out": np.empty(plan.y_shape, np.float32)}
        if args[3] is not None:  # the memory planner's present buffers
            bufs["present_key_out"] = np.empty((1, H, plan.T, D), np.float32)
            bufs["present_value_out"] = np.empty((1, H, plan.T, D), np.float32)
        call = lambda: plan(*args, **bufs)[0]
    elif runtime == "onnxruntime":
        sess = _ort_session(case, feeds, attrs, threads)
        call = lambda: sess.run(None, feeds)[0]
    else:
        ctx = KernelContext(num_outputs=3)
        call = lambda: ref(ctx, *args, **attrs)[0]
    y = call()
    first = time.perf_counter() - t0
    want = ref(KernelContext(num_outputs=1), *[None if a is None else a.astype(np.float64) for a in args],
               **attrs)[0]
    err = float(np.abs(y - want).max() / np.abs(want).max())
    if not err <= 1e-4:
        raise SystemExit(f"{runtime} {case}: wrong result, relative error {err:.3g}")
    for _ in range(max(3, batch // 4)):
        call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batch):
            call()
        times.append((time.perf_counter() - t) / batch)
    return {"ms": 1e3 * statistics.median(times), "first_call_s": first, "err": err}


def _env(runtime: str, threads: int) -> dict:
    return worker_env(threads, blas_threads=1 if runtime == "jitort" else threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "attention.json"))
    ap.add_argument("--worker", nargs=3, metavar=("RUNTIME", "CASE", "THREADS"))
    args = ap.parse_args()
    if args.worker:
        rt, case, t = args.worker
        print(json.dumps(worker(rt, case, int(t), args.batch, args.repeats)))
        return
    cases, runtimes = args.cases.split(","), args.runtimes.split(",")
    thread_counts = [int(t) for t in args.threads.split(",")]
    results: dict = {}
    load0 = os.getloadavg()
    for rnd in range(args.rounds):
        order = runtimes if rnd % 2 == 0 else runtimes[::-1]
        for case in cases:
            for t in thread_counts:
                for rt in order:
                    cmd = [sys.executable, os.path.abspath(__file__), "--worker", rt, case, str(t),
                           "--batch", str(args.batch), "--repeats", str(args.repeats)]
                    p = subprocess.run(cmd, env=_env(rt, t), capture_output=True, text=True, check=False)
                    key = f"{case}|{t}|{rt}"
                    if p.returncode:
                        print(f"  {key}: FAILED\n{p.stderr[-2000:]}", file=sys.stderr)
                        continue
                    results.setdefault(key, []).append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    load1 = os.getloadavg()
    rows = []
    print(f"\nload average before {load0[0]:.2f}, after {load1[0]:.2f} (other processes share the cores)")
    print(f"{'case':>6} {'T':>2} | " + " | ".join(f"{rt + ' ms':>22}" for rt in runtimes)
          + " | ORT/jitort  ref/jitort")
    for case in cases:
        for t in thread_counts:
            med, cells = {}, []
            for rt in runtimes:
                runs = results.get(f"{case}|{t}|{rt}", [])
                if not runs:
                    cells.append(f"{'-':>22}")
                    continue
                ms = [r["ms"] for r in runs]
                med[rt] = statistics.median(ms)
                cells.append(f"{med[rt]:8.3f} ({min(ms):.3f}-{max(ms):.3f})".rjust(22))
                rows.append({"case": case, "threads": t, "runtime": rt, "median_ms": med[rt], "runs": runs})
            ratios = [f"{med[rt] / med['jitort']:10.2f}" if rt in med and "jitort" in med else f"{'-':>10}"
                      for rt in ("onnxruntime", "numpy-ref")]
            print(f"{case:>6} {t:>2} | " + " | ".join(cells) + " | " + " ".join(ratios))
    print("(ratios > 1: jitort is faster)")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"load_before": load0, "load_after": load1, "rounds": args.rounds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
