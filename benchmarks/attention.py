"""Fused attention: jitort's Numba kernel vs onnxruntime (two ways) vs jitort's NumPy reference.

    python benchmarks/attention.py                       # 4 cases x {1, 2} threads, 3 rounds
    python benchmarks/attention.py --cases gpt2-decode --threads 2 --rounds 5

Cases (float32, layout bsd, D 64):
    bert         B1 Sq=Sk=128, 12 heads, additive mask [1, 1, 128, 128] (BERT-base padding mask)
    bert-small   B8 Sq=Sk=128, 4 heads, additive mask [8, 1, 128, 128]
    gpt2         prefill: B1 Sq=Sk=128, 12 heads, causal
    gpt2-decode  1 query, past_key/past_value [1, 12, 1023, 64], causal; present outputs included
                 (the concat of the past is part of every runtime's work)

Runtimes:
    jitort       AttentionPlan, writing into preallocated Y / present buffers (as the memory
                 planner will)
    ort-mha      onnxruntime's com.microsoft MultiHeadAttention, one node (mask -> attention_bias,
                 causal -> unidirectional=1)
    ort-unfused  the decomposed subgraph (Reshape/Transpose, [Concat past], MatMul, Mul scale,
                 Add mask, Softmax, MatMul, Transpose/Reshape) with ORT_ENABLE_ALL; causal as an
                 additive -inf triangle initializer
    numpy-ref    jitort's reference kernel (allocates)
The ratio column compares jitort with the faster of the two onnxruntime forms (per case/threads).

Method as benchmarks/gemm.py: every (runtime, case, threads) in its own fresh process (``--worker``),
runtimes alternated per round; each worker first checks Y against the float64 reference kernel
(max error / max |Y| <= 1e-4, else it fails and its timing is dropped), warms up, and reports the
median of R repeats of a batch of calls, the best batch, and (one thread) the calling thread's CPU
time per call (it excludes the time the process waited for a core). The figure is the median of
the per-process figures (per-process range in brackets), one table per figure. The load average
is printed before every round and at the end. On a shared 2-core machine the two-thread figures
depend on how often another process takes a core: a parallel region ends only when both
threads have run (see the tables' ranges).
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

RUNTIMES = ("jitort", "ort-mha", "ort-unfused", "numpy-ref")
ORT = ("ort-mha", "ort-unfused")
#: (per-process figure, table title): the median over rounds of each, per-process range in brackets
METRICS = (("ms", "median of the batch means (ms per call, wall)"),
           ("ms_best", "best batch mean (ms per call, wall; least disturbed by other processes)"),
           ("cpu_ms", "CPU time of the calling thread (ms per call, 1 thread only: load-independent)"))
#: case -> (B, S, heads, past, causal, mask)
CASES = {"bert": (1, 128, 12, 0, 0, True), "bert-small": (8, 128, 4, 0, 0, True),
         "gpt2": (1, 128, 12, 0, 1, False), "gpt2-decode": (1, 1, 12, 1023, 1, False)}
D = 64


def _inputs(case):
    import numpy as np
    B, S, H, P, causal, has_mask = CASES[case]
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s, dtype=np.float32)
    feeds = {"q": f(B, S, H * D), "k": f(B, S, H * D), "v": f(B, S, H * D)}
    if P:
        feeds["past_key"], feeds["past_value"] = f(B, H, P, D), f(B, H, P, D)
    if has_mask:  # padding mask: the last keys of some batch rows masked
        keep = np.arange(S)[None, :] < (S - rng.integers(0, S // 4, (B, 1)))
        feeds["mask"] = np.where(keep, 0.0, -10000.0).astype(np.float32)[:, None, None, :].repeat(S, 2)
    attrs = {"num_heads": H, "scale": D ** -0.5}
    if causal:
        attrs["causal"] = 1
    if has_mask:
        attrs["mask_kind"] = "additive"
    return feeds, attrs


def _vi(n, a):
    from onnx import TensorProto, helper
    return helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))


def _session(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _ort_mha(feeds, attrs, threads):
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
                            num_heads=attrs["num_heads"], scale=float(attrs["scale"]),
                            **({"unidirectional": 1} if attrs.get("causal") else {}))
    graph = helper.make_graph([node], "mha", [_vi(n, a) for n, a in feeds.items()],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return _session(model, threads)


def _ort_unfused(feeds, attrs, threads):
    """The decomposed attention subgraph, as an exporter writes it."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    H = attrs["num_heads"]
    B, S, _ = feeds["q"].shape
    T = S + (feeds["past_key"].shape[2] if "past_key" in feeds else 0)
    inits = [numpy_helper.from_array(np.array([0, 0, H, D], np.int64), "split"),
             numpy_helper.from_array(np.array([0, 0, H * D], np.int64), "merge"),
             numpy_helper.from_array(np.array(attrs["scale"], np.float32), "scale")]
    nodes = []
    for x in ("q", "k", "v"):
        nodes += [helper.make_node("Reshape", [x, "split"], [x + "4"]),
                  helper.make_node("Transpose", [x + "4"], [x + "h"], perm=[0, 2, 1, 3])]
    k, v, outs = "kh", "vh", ["y"]
    if "past_key" in feeds:
        nodes += [helper.make_node("Concat", ["past_key", "kh"], ["present_key"], axis=2),
                  helper.make_node("Concat", ["past_value", "vh"], ["present_value"], axis=2)]
        k, v, outs = "present_key", "present_value", ["y", "present_key", "present_value"]
    nodes += [helper.make_node("Transpose", [k], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["qh", "kt"], ["s0"]),
              helper.make_node("Mul", ["s0", "scale"], ["s1"])]
    s = "s1"
    if "mask" in feeds:
        nodes.append(helper.make_node("Add", [s, "mask"], ["s2"]))
        s = "s2"
    if attrs.get("causal"):
        tri = np.where(np.arange(T)[None, :] <= np.arange(S)[:, None] + (T - S), 0.0, -np.inf)
        inits.append(numpy_helper.from_array(tri.astype(np.float32), "causal"))
        nodes.append(helper.make_node("Add", [s, "causal"], ["s3"]))
        s = "s3"
    nodes += [helper.make_node("Softmax", [s], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", v], ["yh"]),
              helper.make_node("Transpose", ["yh"], ["y4"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["y4", "merge"], ["y"])]
    graph = helper.make_graph(nodes, "attn", [_vi(n, a) for n, a in feeds.items()],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                              initializer=inits)
    return _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), threads)


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
            bufs["present_key_out"] = np.empty(args[3].shape[:2] + (plan.T, D), np.float32)
            bufs["present_value_out"] = np.empty(args[4].shape[:2] + (plan.T, D), np.float32)
        call = lambda: plan(*args, **bufs)[0]
    elif runtime in ORT:
        sess = (_ort_mha if runtime == "ort-mha" else _ort_unfused)(feeds, attrs, threads)
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
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.thread_time()
        for _ in range(batch):
            call()
        times.append((time.perf_counter() - t) / batch)
        cpu.append((time.thread_time() - c) / batch)
    return {"ms": 1e3 * statistics.median(times), "ms_best": 1e3 * min(times),
            "cpu_ms": 1e3 * min(cpu), "first_call_s": first, "err": err}


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
    loads = [os.getloadavg()]
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}/{args.rounds}: load average {loads[-1][0]:.2f}", file=sys.stderr)
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
        loads.append(os.getloadavg())
    rows = []
    print("\nload average (1 min) per round: " + " ".join(f"{ld[0]:.2f}" for ld in loads)
          + " (other processes share the cores)")
    for metric, what in METRICS:
        print(f"\n{what}\n{'case':>11} {'T':>2} | " + " | ".join(f"{rt + ' ms':>22}" for rt in runtimes)
              + " | ORT/jitort (best ORT)  ref/jitort")
        for case in cases:
            for t in thread_counts:
                if metric == "cpu_ms" and t != 1:
                    continue
                med, cells = {}, []
                for rt in runtimes:
                    runs = results.get(f"{case}|{t}|{rt}", [])
                    if not runs:
                        cells.append(f"{'-':>22}")
                        continue
                    ms = [r[metric] for r in runs]
                    med[rt] = statistics.median(ms)
                    cells.append(f"{med[rt]:8.3f} ({min(ms):.3f}-{max(ms):.3f})".rjust(22))
                    if metric == "ms":
                        rows.append({"case": case, "threads": t, "runtime": rt, "median_ms": med[rt],
                                     "runs": runs})
                ort_best = min((rt for rt in ORT if rt in med), key=med.get, default=None)
                r_ort = (f"{med[ort_best] / med['jitort']:6.2f} ({ort_best})" if ort_best and "jitort" in med
                         else "-")
                r_ref = (f"{med['numpy-ref'] / med['jitort']:6.2f}" if "numpy-ref" in med and "jitort" in med
                         else "-")
                print(f"{case:>11} {t:>2} | " + " | ".join(cells) + f" | {r_ort:>22} {r_ref:>10}")
    print("(ratios > 1: jitort is faster)")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"loads": loads, "rounds": args.rounds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
