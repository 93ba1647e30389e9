"""Row kernels (jitort/backends/cpu/row_kernels.py) vs onnxruntime's one-node ops, 1 and 2 threads.

    python benchmarks/row_kernels.py                       # 3 rounds, 30 timed runs
    python benchmarks/row_kernels.py --rounds 5 --runs 50 --threads 1,2
    python benchmarks/row_kernels.py --cases softmax:1536x128,bias_gelu_erf:1024x3072
    python benchmarks/row_kernels.py --floor               # also a scale-copy per shape

Kernels (float32) and the onnxruntime op each is compared with:

    layer_norm       ORT LayerNormalization-17 (gamma, beta initializers)
    skip_layer_norm  ORT com.microsoft SkipLayerNormalization (x, skip, gamma, beta, bias)
    softmax          ORT Softmax-13 (axis -1)
    bias_gelu_erf    ORT com.microsoft BiasGelu (bias initializer)
    bias_gelu_tanh   ORT com.microsoft FastGelu (x, bias initializer; tanh form)

Default cases (``kernel:RxN``): BERT-base rows at batch 1 and 8 (128 and 1024 tokens, hidden 768,
FFN 3072), a narrow model's [1024, 256], and attention-probability softmax rows [B*H*S, S] for
B=1 and 8, H=12, S=128, plus [1024, 768]. ``--floor`` adds, per shape, a Numba loop that reads
x and writes 1.5 * x (512-bit vectors): the memory traffic every row kernel pays at least.

For each round and thread count, one fresh process per runtime, the order alternating; each
process runs every case (warmup calls first, the first one compiles / loads the Numba cache),
then ``--runs`` timed calls per case, and reports per-case medians. jitort calls the 2-D
API with preallocated outputs; ORT runs ``run_with_iobinding`` with the output bound to a
preallocated buffer (``intra_op_num_threads`` = threads, sequential, all optimizations on).
Outputs are checked first: every worker's outputs vs the registry's reference kernels, max
abs error scaled by max(1, max|ref|) <= 1e-4; a failing worker's figures are not counted.
The figure is the median of the per-process medians (the per-process range is printed too);
ratio = ORT time / jitort time (> 1: jitort faster). "best" is the median over processes of
each process's fastest call: on a machine whose cores other jobs share, 2-thread medians can be
scheduler ticks (a parallel region waits for its second thread to get a core), and the best
call shows what the kernel does when it has both. Worker environment: OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE unset, one BLAS thread, OMP_NUM_THREADS = threads, NUMBA_THREADING_LAYER =
omp. The load average is recorded: other processes may share the cores. JSON:
benchmarks/results/row_kernels.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from harness import worker_env  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

KERNELS = ("layer_norm", "skip_layer_norm", "softmax", "bias_gelu_erf", "bias_gelu_tanh")
RUNTIMES = ("jitort", "onnxruntime")
DEFAULT_JSON = os.path.join(ROOT, "benchmarks", "results", "row_kernels.json")
DEFAULT_CASES = ("layer_norm:1024x256,layer_norm:128x768,layer_norm:1024x768,"
                 "skip_layer_norm:128x768,skip_layer_norm:1024x768,"
                 "softmax:1536x128,softmax:12288x128,softmax:1024x768,"
                 "bias_gelu_erf:128x3072,bias_gelu_erf:1024x3072,"
                 "bias_gelu_tanh:128x3072,bias_gelu_tanh:1024x3072")
EPS = 1e-5


def parse_cases(spec: str) -> list[tuple[str, int, int]]:
    cases = []
    for item in spec.split(","):
        k, shape = item.strip().split(":")
        if k not in KERNELS:
            raise SystemExit(f"unknown kernel {k!r}; available: {KERNELS}")
        r, n = (int(v) for v in shape.lower().split("x"))
        cases.append((k, r, n))
    return cases


def case_name(k: str, r: int, n: int) -> str:
    return f"{k}[{r}x{n}]"


def make_inputs(k: str, r: int, n: int) -> dict[str, np.ndarray]:
    """The inputs of one case (the same in every process: a fixed seed per shape)."""
    rng = np.random.default_rng([1234, r, n])
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    scale = {"softmax": 3.0, "bias_gelu_erf": 2.0, "bias_gelu_tanh": 2.0}.get(k, 1.0)
    return {"x": f(r, n) * np.float32(scale), "skip": f(r, n), "gamma": f(n), "beta": f(n),
            "bias": f(n)}


def reference(k: str, d: dict) -> np.ndarray:
    from jitort.ops.registry import KernelContext, find
    if k == "layer_norm":
        return find("LayerNorm", "jitort", 1).kernel(d["x"], d["gamma"], d["beta"], epsilon=EPS)
    if k == "skip_layer_norm":
        return find("SkipLayerNorm", "jitort", 1).kernel(
            KernelContext(), d["x"], d["skip"], d["gamma"], d["beta"], d["bias"], epsilon=EPS)
    if k == "softmax":
        return find("Softmax", "", 13).kernel(d["x"], axis=-1)
    w = d["x"] + d["bias"]
    return find("Gelu", "jitort", 1).kernel(w, approximate="none" if k == "bias_gelu_erf" else "tanh")


# -- workers ---------------------------------------------------------------------------------------

def _jitort_fn(k, d, threads):
    from jitort.backends.cpu import row_kernels as rk
    out = np.empty_like(d["x"])
    fn = {
        "layer_norm": lambda: rk.layer_norm(d["x"], d["gamma"], d["beta"], EPS, out, threads),
        "skip_layer_norm": lambda: rk.skip_layer_norm(d["x"], d["skip"], d["gamma"], d["beta"],
                                                      d["bias"], EPS, out, None, threads),
        "softmax": lambda: rk.softmax(d["x"], out, threads),
        "bias_gelu_erf": lambda: rk.bias_gelu(d["x"], d["bias"], out, "none", threads),
        "bias_gelu_tanh": lambda: rk.bias_gelu(d["x"], d["bias"], out, "tanh", threads),
    }[k]
    return out, fn


def _ort_model(k, d):
    from onnx import TensorProto, helper, numpy_helper
    init, ins, dom = [], [], ""
    shape = list(d["x"].shape)
    ins.append(helper.make_tensor_value_info("X", TensorProto.FLOAT, shape))
    if k == "layer_norm":
        init = [numpy_helper.from_array(d["gamma"], "g"), numpy_helper.from_array(d["beta"], "b")]
        node = helper.make_node("LayerNormalization", ["X", "g", "b"], ["Y"], axis=-1, epsilon=EPS)
    elif k == "skip_layer_norm":
        ins.append(helper.make_tensor_value_info("S", TensorProto.FLOAT, shape))
        init = [numpy_helper.from_array(d[n], n) for n in ("gamma", "beta", "bias")]
        node = helper.make_node("SkipLayerNormalization", ["X", "S", "gamma", "beta", "bias"], ["Y"],
                                domain="com.microsoft", epsilon=EPS)
        dom = "com.microsoft"
    elif k == "softmax":
        node = helper.make_node("Softmax", ["X"], ["Y"], axis=-1)
    else:
        init = [numpy_helper.from_array(d["bias"], "bias")]
        op = "BiasGelu" if k == "bias_gelu_erf" else "FastGelu"
        node = helper.make_node(op, ["X", "bias"], ["Y"], domain="com.microsoft")
        dom = "com.microsoft"
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(dom, 1)] if dom else [])
    g = helper.make_graph([node], k, ins, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)],
                          initializer=init)
    return helper.make_model(g, opset_imports=opsets, ir_version=8).SerializeToString()


def _ort_fn(k, d, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(_ort_model(k, d), so, providers=["CPUExecutionProvider"])
    out = np.empty_like(d["x"])
    io = sess.io_binding()
    io.bind_cpu_input("X", d["x"])
    if k == "skip_layer_norm":
        io.bind_cpu_input("S", d["skip"])
    io.bind_output("Y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
    return out, (lambda: sess.run_with_iobinding(io))


def _floor_fn(k, d, threads):
    """out = 1.5 * x with 512-bit vectors (prange over `threads` row chunks): the traffic floor."""
    import numba
    from jitort.backends.cpu import vecmath as vm

    if not _FLOOR:
        def rows(x, out, lo, hi):
            vm.wide_vectors()
            for i in range(lo, hi):
                for j in range(x.shape[1]):
                    out[i, j] = x[i, j] * np.float32(1.5)

        jit = dict(error_model="numpy", fastmath=vm.FASTMATH)
        rows_ = numba.njit(inline="always", **jit)(rows)

        @numba.njit(**jit)
        def serial(x, out):
            rows_(x, out, 0, x.shape[0])

        @numba.njit(parallel=True, **jit)
        def par(x, out, nt):
            r = x.shape[0]
            for t in numba.prange(nt):
                rows_(x, out, t * r // nt, (t + 1) * r // nt)

        _FLOOR.update(serial=serial, par=par)
    out = np.empty_like(d["x"])
    if threads == 1:
        return out, (lambda: _FLOOR["serial"](d["x"], out))
    return out, (lambda: _FLOOR["par"](d["x"], out, threads))


_FLOOR: dict = {}


def worker(runtime: str, threads: int, spec: str, outdir: str, warmup: int, runs: int) -> None:
    res = {"median_s": {}, "min_s": {}, "first_call_s": {}}
    make = {"jitort": _jitort_fn, "onnxruntime": _ort_fn, "floor": _floor_fn}[runtime]
    for k, r, n in parse_cases(spec):
        name = case_name(k, r, n)
        d = make_inputs(k, r, n)
        out, fn = make(k, d, threads)
        t = time.perf_counter()
        fn()
        res["first_call_s"][name] = time.perf_counter() - t
        for _ in range(warmup):
            fn()
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        res["median_s"][name] = float(np.median(ts))
        res["min_s"][name] = float(np.min(ts))
        if runtime != "floor":
            np.save(os.path.join(outdir, f"{runtime}_{threads}_{name}.npy"), out)
    print("RESULT " + json.dumps(res))


# -- parent ----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cases", default=DEFAULT_CASES, help="kernel:RxN,... (default: %(default)s)")
    ap.add_argument("--floor", action="store_true", help="also time a scale-copy per shape")
    ap.add_argument("--json", default=DEFAULT_JSON)
    ap.add_argument("--worker", nargs=4, metavar=("RUNTIME", "THREADS", "CASES", "OUTDIR"))
    a = ap.parse_args()
    if a.worker:
        rt, th, spec, od = a.worker
        worker(rt, int(th), spec, od, a.warmup, a.runs)
        return
    threads = [int(t) for t in a.threads.split(",")]
    cases = parse_cases(a.cases)
    names = [case_name(*c) for c in cases]
    runtimes = RUNTIMES + (("floor",) if a.floor else ())
    refs = {case_name(k, r, n): reference(k, make_inputs(k, r, n)) for k, r, n in cases}
    per = {(rt, th, c): [] for rt in runtimes for th in threads for c in names}
    best = {(rt, th, c): [] for rt in runtimes for th in threads for c in names}
    first = {}
    errs = {}
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(a.rounds):
            for th in threads:
                order = runtimes if (rnd + th) % 2 == 0 else runtimes[::-1]
                for rt in order:
                    od = os.path.join(tmp, f"r{rnd}")
                    os.makedirs(od, exist_ok=True)
                    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--runs", str(a.runs),
                                        "--warmup", str(a.warmup), "--worker", rt, str(th), a.cases, od],
                                       capture_output=True, text=True, env=worker_env(th, blas_threads=1),
                                       check=False)
                    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
                    if p.returncode or not line:
                        print(f"worker {rt} {th}T round {rnd} failed:\n{p.stderr[-2000:]}")
                        continue
                    res = json.loads(line[0][7:])
                    for c in names:
                        if rt != "floor":
                            y = np.load(os.path.join(od, f"{rt}_{th}_{c}.npy"))
                            ref = refs[c]
                            e = float(np.max(np.abs(y.astype(np.float64) - ref), initial=0.0)
                                      / max(1.0, np.abs(ref).max(initial=0.0)))
                            errs[(rt, c)] = max(errs.get((rt, c), 0.0), e)
                            if e > 1e-4:
                                print(f"OUTPUT MISMATCH {rt} {th}T {c}: scaled err {e:.3g} (not counted)")
                                continue
                        per[(rt, th, c)].append(res["median_s"][c])
                        best[(rt, th, c)].append(res["min_s"][c])
                    if rnd == 0:
                        first[(rt, th)] = res["first_call_s"]
            load.append(os.getloadavg())
    print(f"load average (1 min) before/after each round: {[round(x[0], 2) for x in load]}")
    print("max scaled output error vs reference: " +
          ", ".join(f"{rt}/{c} {e:.1e}" for (rt, c), e in sorted(errs.items())))
    fl = "  floor ms" if a.floor else ""
    print(f"\n{'case':26s} {'thr':>3s} {'jitort ms':>10s} {'(range)':>15s} {'ORT ms':>9s} "
          f"{'(range)':>15s} {'ORT/jitort':>10s} {'best: jit':>9s} {'ORT':>7s} {'ratio':>6s}{fl}")
    table = {}
    med = lambda v: float(np.median(v)) if v else float("nan")
    rng_ = lambda v: f"{min(v) * 1e3:.3f}-{max(v) * 1e3:.3f}" if v else "-"
    for c in names:
        for th in threads:
            j, o = per[("jitort", th, c)], per[("onnxruntime", th, c)]
            jm, om = med(j), med(o)
            jb, ob = med(best[("jitort", th, c)]), med(best[("onnxruntime", th, c)])
            row = {"jitort_ms": jm * 1e3, "ort_ms": om * 1e3, "ratio": om / jm,
                   "jitort_per_process_ms": [v * 1e3 for v in j],
                   "ort_per_process_ms": [v * 1e3 for v in o],
                   "jitort_best_ms": jb * 1e3, "ort_best_ms": ob * 1e3, "best_ratio": ob / jb}
            extra = ""
            if a.floor:
                f_ = per[("floor", th, c)]
                row["floor_ms"] = med(f_) * 1e3
                extra = f" {med(f_) * 1e3:9.3f}"
            table[f"{c}/{th}"] = row
            print(f"{c:26s} {th:3d} {jm * 1e3:10.3f} {rng_(j):>15s} {om * 1e3:9.3f} {rng_(o):>15s} "
                  f"{om / jm:10.2f} {jb * 1e3:9.3f} {ob * 1e3:7.3f} {ob / jb:6.2f}{extra}")
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"rounds": a.rounds, "runs": a.runs, "cases": a.cases, "load_average": load,
                   "results": table, "max_err": {f"{rt}/{c}": e for (rt, c), e in errs.items()},
                   "first_call_s": {f"{rt}/{th}": v for (rt, th), v in first.items()}}, f, indent=1)
    print(f"\nJSON: {a.json}")


if __name__ == "__main__":
    main()
