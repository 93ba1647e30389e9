"""Convolution speed: jitort's NHWC conv plans (jitort/backends/cpu/conv.py) against onnxruntime, on
the conv shapes of ResNet-50 and MobileNetV2 (batch 1), per conv and inside the whole models.

    python benchmarks/conv.py                                   # per conv, both models, 1 and 2 threads
    python benchmarks/conv.py --models mobilenetv2 --threads 1 --rounds 2 --only dw
    python benchmarks/conv.py --e2e                             # whole models: step profiles
    python benchmarks/conv.py --models resnet50 --only 3x3 --kind im2col   # the old path, for A/B

Per conv (default). Every distinct conv of the model (input NHWC, weight OIHW, stride, pads,
group, activation, residual; the list below was read from jitort's optimized plans, i.e. the
``jitort::FusedConv`` nodes with BatchNorm folded and Add/Relu/Clip fused) is timed in one worker
process per (runtime, threads); R rounds, the runtimes' order alternating. jitort: ``ConvPlan``
with weights packed once (not timed), ``plan(x, packed, out=, residual=)``; its disk cache lives in
a temp dir shared by the run's workers, so only the first worker compiles. onnxruntime: a graph
Conv(X, W, B) [-> Add(Z)] [-> Relu | Clip(0, 6)] with NCHW inputs, W and B initializers,
ORT_ENABLE_ALL (so its NCHWc transformer runs: the figure includes the NCHW <-> NCHWc reorders of
input and output, which a whole model pays once), T intra-op threads. Per shape: warm-up, then the
median of ``--repeats`` batches. Two onnxruntime figures: "run" (``session.run``, reorders and
call overhead included) and "kernel" (the profiler's kernel times of every node but the
reorders). For the ``+res`` convs its one-node graph does not fuse the Add into the conv (its
kernel figure includes a separate Add over Y, about 2x a model's fused conv): compare those with
``--e2e``. The parent checks that both runtimes' outputs agree (harness.
compare_outputs; a round that disagrees is not counted) and prints, per shape, the median of the
per-process medians [range], jitort / onnxruntime, and the count-weighted totals.

``--e2e``: per model and thread count, one process per runtime and round: jitort (``jitort.load``,
then ``plan.profile(feeds, 7)``: the median seconds of each step) and onnxruntime (ORT_ENABLE_ALL,
``enable_profiling``: the median kernel time of each node). Prints the call median, the sum of the
step (node) medians, and the sums per kind (jitort) / op type (onnxruntime).

Environment: harness.worker_env (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, omp threading
layer, OMP_NUM_THREADS = T), plus ``--env KEY=VALUE`` for the jitort workers. On a loaded
machine jitort at 2 threads needs ``--env OMP_WAIT_POLICY=passive``: with GOMP's default spinning
workers every parallel region waited for a preempted worker, a multiple of the 4 ms scheduler tick
(measured 8-24 ms per conv). Results: printed, and benchmarks/results/conv.json (conv_e2e.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import harness as H  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

if H.ROOT not in sys.path:
    sys.path.insert(0, H.ROOT)

# count, (H, W, C), O, kernel, stride, pad (all sides), group, activation, residual
CONVS = {
    "resnet50": [
        (1, (224, 224, 3), 64, 7, 2, 3, 1, "Relu", False),
        (1, (56, 56, 64), 64, 1, 1, 0, 1, "Relu", False),
        (3, (56, 56, 64), 64, 3, 1, 1, 1, "Relu", False),
        (1, (56, 56, 64), 256, 1, 1, 0, 1, "", False),
        (3, (56, 56, 64), 256, 1, 1, 0, 1, "Relu", True),
        (2, (56, 56, 256), 64, 1, 1, 0, 1, "Relu", False),
        (1, (56, 56, 256), 128, 1, 1, 0, 1, "Relu", False),
        (1, (56, 56, 128), 128, 3, 2, 1, 1, "Relu", False),
        (1, (56, 56, 256), 512, 1, 2, 0, 1, "", False),
        (4, (28, 28, 128), 512, 1, 1, 0, 1, "Relu", True),
        (3, (28, 28, 512), 128, 1, 1, 0, 1, "Relu", False),
        (3, (28, 28, 128), 128, 3, 1, 1, 1, "Relu", False),
        (1, (28, 28, 512), 256, 1, 1, 0, 1, "Relu", False),
        (1, (28, 28, 256), 256, 3, 2, 1, 1, "Relu", False),
        (1, (28, 28, 512), 1024, 1, 2, 0, 1, "", False),
        (6, (14, 14, 256), 1024, 1, 1, 0, 1, "Relu", True),
        (5, (14, 14, 1024), 256, 1, 1, 0, 1, "Relu", False),
        (5, (14, 14, 256), 256, 3, 1, 1, 1, "Relu", False),
        (1, (14, 14, 1024), 512, 1, 1, 0, 1, "Relu", False),
        (1, (14, 14, 512), 512, 3, 2, 1, 1, "Relu", False),
        (1, (14, 14, 1024), 2048, 1, 2, 0, 1, "", False),
        (3, (7, 7, 512), 2048, 1, 1, 0, 1, "Relu", True),
        (2, (7, 7, 2048), 512, 1, 1, 0, 1, "Relu", False),
        (2, (7, 7, 512), 512, 3, 1, 1, 1, "Relu", False),
    ],
    "mobilenetv2": [
        (1, (224, 224, 3), 32, 3, 2, 1, 1, "Clip", False),
        (1, (112, 112, 32), 32, 3, 1, 1, 32, "Clip", False),
        (1, (112, 112, 32), 16, 1, 1, 0, 1, "", False),
        (1, (112, 112, 16), 96, 1, 1, 0, 1, "Clip", False),
        (1, (112, 112, 96), 96, 3, 2, 1, 96, "Clip", False),
        (1, (56, 56, 96), 24, 1, 1, 0, 1, "", False),
        (2, (56, 56, 24), 144, 1, 1, 0, 1, "Clip", False),
        (1, (56, 56, 144), 144, 3, 1, 1, 144, "Clip", False),
        (1, (56, 56, 144), 24, 1, 1, 0, 1, "", True),
        (1, (56, 56, 144), 144, 3, 2, 1, 144, "Clip", False),
        (1, (28, 28, 144), 32, 1, 1, 0, 1, "", False),
        (3, (28, 28, 32), 192, 1, 1, 0, 1, "Clip", False),
        (2, (28, 28, 192), 192, 3, 1, 1, 192, "Clip", False),
        (2, (28, 28, 192), 32, 1, 1, 0, 1, "", True),
        (1, (28, 28, 192), 192, 3, 2, 1, 192, "Clip", False),
        (1, (14, 14, 192), 64, 1, 1, 0, 1, "", False),
        (4, (14, 14, 64), 384, 1, 1, 0, 1, "Clip", False),
        (4, (14, 14, 384), 384, 3, 1, 1, 384, "Clip", False),
        (3, (14, 14, 384), 64, 1, 1, 0, 1, "", True),
        (1, (14, 14, 384), 96, 1, 1, 0, 1, "", False),
        (3, (14, 14, 96), 576, 1, 1, 0, 1, "Clip", False),
        (2, (14, 14, 576), 576, 3, 1, 1, 576, "Clip", False),
        (2, (14, 14, 576), 96, 1, 1, 0, 1, "", True),
        (1, (14, 14, 576), 576, 3, 2, 1, 576, "Clip", False),
        (1, (7, 7, 576), 160, 1, 1, 0, 1, "", False),
        (3, (7, 7, 160), 960, 1, 1, 0, 1, "Clip", False),
        (3, (7, 7, 960), 960, 3, 1, 1, 960, "Clip", False),
        (2, (7, 7, 960), 160, 1, 1, 0, 1, "", True),
        (1, (7, 7, 960), 320, 1, 1, 0, 1, "", False),
        (1, (7, 7, 320), 1280, 1, 1, 0, 1, "Clip", False),
    ],
}
CLIP = (0.0, 6.0)


def conv_name(spec) -> str:
    _, (h, w, c), o, k, s, p, g, act, res = spec
    kind = " dw" if g > 1 else ""
    return f"{h}x{w}x{c}->{o} {k}x{k}/{s}{kind}{' +res' if res else ''} {act.lower() or 'none'}"


def _operands(spec, rng):
    _, (h, w, c), o, k, s, p, g, act, res = spec
    x = rng.standard_normal((1, h, w, c), dtype=np.float32)
    wt = (rng.standard_normal((o, c // g, k, k)) * np.sqrt(2.0 / (c // g * k * k))).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) * np.float32(0.1)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    z = rng.standard_normal((1, oh, ow, o), dtype=np.float32) if res else None
    return x, wt, b, z


# -- per-conv worker -----------------------------------------------------------------------------
def _jitort_call(spec, x, wt, b, z, threads, cache, kind=None):
    from jitort.backends.cpu.conv import ConvPlan

    _, _, o, k, s, p, g, act, res = spec
    kind = kind if g == 1 and (k, s, p) != (1, 1, 0) else None  # --kind: only where there is a choice
    plan = ConvPlan(x.shape, wt.shape, (s, s), (p,) * 4, (1, 1), g, act, CLIP if act == "Clip" else (),
                    True, res, threads, cache_dir=cache, kind=kind)
    packed = plan.pack_weights(wt, b)
    out = np.empty(plan.y_shape, np.float32)
    return lambda: plan(x, packed, out=out, residual=z), lambda: out


def _ort_call(spec, x, wt, b, z, threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    _, _, o, k, s, p, g, act, res = spec
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["C"], strides=[s, s], pads=[p] * 4, group=g,
                              kernel_shape=[k, k])]
    last, inits = "C", [numpy_helper.from_array(wt, "W"), numpy_helper.from_array(b, "B")]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.transpose(0, 3, 1, 2).shape))]
    feeds = {"X": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}
    if res:
        nodes.append(helper.make_node("Add", ["C", "Z"], ["S"]))
        inputs.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, list(z.transpose(0, 3, 1, 2).shape)))
        feeds["Z"] = np.ascontiguousarray(z.transpose(0, 3, 1, 2))
        last = "S"
    if act == "Relu":
        nodes.append(helper.make_node("Relu", [last], ["Y"]))
    elif act == "Clip":
        inits += [numpy_helper.from_array(np.float32(v), n) for v, n in zip(CLIP, ("lo", "hi"))]
        nodes.append(helper.make_node("Clip", [last, "lo", "hi"], ["Y"]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["Y"]))
    graph = helper.make_graph(nodes, "conv", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    box = {}

    def call():
        box["y"] = sess.run(None, feeds)[0]

    def kernel_ms(runs: int) -> float:
        """The median over ``runs`` calls of the summed kernel times of the nodes that are not
        NCHW <-> NCHWc reorders (onnxruntime's profiler)."""
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"jitort_conv_ort_{os.getpid()}")
        prof = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(runs + 3):
            prof.run(None, feeds)
        path = prof.end_profiling()
        with open(path) as f:
            events = json.load(f)
        os.remove(path)
        per_run: dict = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") \
                    and not e["args"].get("op_name", "").startswith("Reorder"):
                per_run.setdefault(e["name"], []).append(e["dur"] / 1e3)
        sums = [sum(v) for v in zip(*(t[3:] for t in per_run.values()))]
        return statistics.median(sums)

    call.kernel_ms = kernel_ms
    return call, lambda: box["y"].transpose(0, 2, 3, 1)


def conv_worker(args) -> None:
    rng = np.random.default_rng(0)
    specs = _selected(args)
    medians, kernel, outs, first = {}, {}, [], {}
    for spec in specs:
        x, wt, b, z = _operands(spec, rng)
        t0 = time.perf_counter()
        call, result = (_jitort_call(spec, x, wt, b, z, args.threads, args.jitort_cache, args.kind)
                        if args.worker == "jitort"
                        else _ort_call(spec, x, wt, b, z, args.threads))
        call()
        first[conv_name(spec)] = (time.perf_counter() - t0) * 1e3
        outs.append(np.array(result()))
        batch = max(1, int(2e-3 / max(_time_one(call), 1e-6)))  # ~2 ms per timed batch
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(batch):
                call()
            times.append((time.perf_counter() - t0) / batch * 1e3)
        medians[conv_name(spec)] = statistics.median(times)
        if hasattr(call, "kernel_ms"):
            kernel[conv_name(spec)] = call.kernel_ms(max(9, args.repeats * batch // 4))
    H.save_outputs(args.outdir, args.tag, outs)
    total = sum(spec[0] * medians[conv_name(spec)] for spec in specs)
    ktotal = sum(spec[0] * kernel[conv_name(spec)] for spec in specs) if kernel else total
    print(json.dumps({"total_ms": total, "shapes": medians, "kernel_total_ms": ktotal, "kernel": kernel or medians,
                      "setup_ms": first, "outputs": [conv_name(s) for s in specs]}))


def _time_one(call) -> float:
    for _ in range(2):
        call()
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def _selected(args) -> list:
    specs = [s for m in args.models.split(",") for s in CONVS[m]]
    return [s for s in specs if not args.only or any(w in conv_name(s) for w in args.only.split(","))]


# -- whole-model worker ----------------------------------------------------------------------------
def e2e_worker(args) -> None:
    from models import build

    path, feeds = build(args.models)
    if args.worker == "jitort":
        import jitort

        m = jitort.load(path, num_threads=args.threads, cache_dir=args.jitort_cache)
        call = lambda: m(**feeds)  # noqa: E731
        call()
        plan = next(iter(m._variants.values())).plan
        kinds: dict = {}
        for step, sec in plan.profile(feeds, 7):
            kinds[step.kind] = kinds.get(step.kind, 0.0) + sec * 1e3
        outs = call()
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(args.outdir, "ort_profile")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(10):
            outs = sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
        per_node: dict = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                per_node.setdefault((e["name"], e["args"].get("op_name")), []).append(e["dur"] / 1e3)
        kinds = {}
        for (_, op), v in per_node.items():
            kinds[op] = kinds.get(op, 0.0) + statistics.median(v[3:])
        so.enable_profiling = False
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        call = lambda: sess.run(None, feeds)  # noqa: E731
    r = H.time_calls(call, args.repeats, 3)
    H.save_outputs(args.outdir, args.tag, outs)
    print(json.dumps({"median_ms": r["median_ms"], "steps_ms": sum(kinds.values()), "kinds": kinds,
                      "outputs": [str(i) for i in range(len(outs))]}))


# -- the parent ------------------------------------------------------------------------------------
def spawn(tag, outdir, args, threads, model=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", tag, "--tag", tag, "--outdir", outdir,
           "--threads", str(threads), "--models", model or args.models, "--repeats", str(args.repeats),
           "--jitort-cache", args.jitort_cache] + (["--only", args.only] if args.only else []) \
        + (["--kind", args.kind] if args.kind else []) \
        + (["--e2e"] if args.e2e else [])
    env = H.worker_env(threads, blas_threads=1)
    if tag == "jitort":
        env.update(kv.split("=", 1) for kv in args.env or [])
    return H.run_worker(cmd, env)


def per_conv(args, tmp) -> dict:
    doc = {}
    for t in args.thread_counts:
        rounds = H.run_rounds(f"conv {t}T", ("jitort", "onnxruntime"), args.rounds,
                              lambda tag, outdir: spawn(tag, outdir, args, t), tmp, "total_ms")
        specs = _selected(args)
        rows = [("conv", "n", f"jitort ms {t}T", f"ORT kernel ms {t}T", "jitort/ORT kernel", f"ORT run ms {t}T",
                 "jitort/ORT run")]
        shapes = {}
        ok = [r for r in rounds if r["outputs_match"]]
        for spec in specs + [None]:
            name = conv_name(spec) if spec else "total (count-weighted)"
            def get(r, rt, k, name=name, spec=spec):
                return r[rt][k][name] if spec else r[rt]["kernel_total_ms" if k == "kernel" else "total_ms"]

            j = [get(r, "jitort", "shapes") for r in ok]
            o = [get(r, "onnxruntime", "shapes") for r in ok]
            ok_k = [get(r, "onnxruntime", "kernel") for r in ok]
            ratio = H.median(j) / H.median(ok_k) if j and ok_k else None
            ratio_run = H.median(j) / H.median(o) if j and o else None
            shapes[name] = {"count": spec[0] if spec else None, "jitort_ms": j, "onnxruntime_kernel_ms": ok_k,
                            "onnxruntime_run_ms": o, "ratio_kernel": ratio, "ratio_run": ratio_run}
            f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
            rows.append((name, str(spec[0]) if spec else "", H.fmt_median(j, 3), H.fmt_median(ok_k, 3), f(ratio),
                         H.fmt_median(o, 3), f(ratio_run)))
        H.print_table(rows)
        print(f"median of per-process medians [range], {sum(r['outputs_match'] for r in rounds)}/{len(rounds)} "
              f"rounds counted; load average now {os.getloadavg()[0]:.2f}")
        doc[f"{t}T"] = {"shapes": shapes, "rounds": rounds}
    return doc


def e2e(args, tmp) -> dict:
    doc = {}
    for model in args.models.split(","):
        for t in args.thread_counts:
            label = f"{model} {t}T"
            rounds = H.run_rounds(label, ("jitort", "onnxruntime"), args.rounds,
                                  lambda tag, outdir: spawn(tag, outdir, args, t, model), tmp, "median_ms")
            rows = [("", "jitort", "onnxruntime")]
            for key in ("median_ms", "steps_ms"):
                rows.append((key, *(H.fmt_median(H.counted(rounds, rt, key), 2) for rt in ("jitort", "onnxruntime"))))
            for rt in ("jitort", "onnxruntime"):
                kinds = sorted({k for r in rounds if r["outputs_match"] for k in r[rt]["kinds"]})
                for k in kinds:
                    v = [r[rt]["kinds"].get(k, 0.0) for r in rounds if r["outputs_match"]]
                    if H.median(v) >= 0.05:
                        rows.append((f"  {k}", H.fmt_median(v, 2) if rt == "jitort" else "",
                                     H.fmt_median(v, 2) if rt != "jitort" else ""))
            print(f"\n{label}:")
            H.print_table(rows)
            print(f"load average now {os.getloadavg()[0]:.2f}")
            doc[label] = rounds
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet50,mobilenetv2", help=f"comma list of {', '.join(CONVS)}")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=9, help="timed batches per shape (per-conv) / calls (--e2e)")
    ap.add_argument("--only", help="comma list of substrings of conv names (e.g. 'dw,7x7')")
    ap.add_argument("--e2e", action="store_true", help="whole models: step profiles (see the docstring)")
    ap.add_argument("--kind", choices=("im2col", "direct"),
                    help="per conv: force ConvPlan's kind for the convs that have a choice (default: its pick)")
    ap.add_argument("--env", action="append", metavar="KEY=VALUE",
                    help="extra environment of the jitort workers (e.g. OMP_WAIT_POLICY=passive)")
    ap.add_argument("--json", help="default benchmarks/results/conv.json (conv_e2e.json with --e2e)")
    for hidden in ("--worker", "--tag", "--outdir", "--jitort-cache"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.thread_counts = [int(t) for t in str(args.threads).split(",")]
    if args.worker:
        args.threads = args.thread_counts[0]
        (e2e_worker if args.e2e else conv_worker)(args)
        return 0
    unknown = [m for m in args.models.split(",") if m not in CONVS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(CONVS)}")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="jitort-conv-") as tmp:
        args.jitort_cache = os.path.join(tmp, "jitort_cache")  # shared: only the first worker compiles
        doc = e2e(args, tmp) if args.e2e else per_conv(args, tmp)
    name = "conv_e2e" if args.e2e else "conv"
    H.write_json(args.json or os.path.join(H.RESULTS, f"{name}.json"), {
        "benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": H.machine(),
        "load_average_before": load0, "load_average_after": os.getloadavg(),
        "settings": {"models": args.models, "threads": args.thread_counts, "rounds": args.rounds,
                     "repeats": args.repeats, "only": args.only, "kind": args.kind, "jitort_env": args.env or []},
        "results": doc})
    return 0


if __name__ == "__main__":
    sys.exit(main())
