"""Row kernels (jitort/backends/cpu/row_kernels.py) vs onnxruntime's one-node ops, 1 and 2 threads.

    python benchmarks/row_kernels.py                       # 3 rounds, 30 timed runs
    python benchmarks/row_kernels.py --rounds 5 --runs 50 --threads 1,2

Kernels and shapes (float32):

    layer_norm       [1024, 768]   ORT LayerNormalization-17 (gamma, beta initializers)
    skip_layer_norm  [1024, 768]   ORT com.microsoft SkipLayerNormalization (x, skip, gamma, beta, bias)
    softmax          [1024, 768]   ORT Softmax-13 (axis -1)
    bias_gelu_erf    [1024, 3072]  ORT com.microsoft BiasGelu (bias initializer)
    bias_gelu_tanh   [1024, 3072]  ORT com.microsoft FastGelu (x, bias initializer; tanh form)

For each round and thread count, one fresh process per runtime, the order alternating; each
process runs every kernel (warmup calls first, the first one compiles / loads the Numba cache),
then ``--runs`` timed calls per kernel, and reports per-kernel medians. jitort calls the 2-D
API with preallocated outputs; ORT runs ``run_with_iobinding`` with the output bound to a
preallocated buffer (``intra_op_num_threads`` = threads, sequential, all optimizations on).
Outputs are checked first: every worker's outputs vs the registry's reference kernels, max
abs error scaled by max(1, max|ref|) <= 1e-4; a failing worker's figures are not counted.
The figure is the median of the per-process medians; ratio = ORT time / jitort time (> 1:
jitort faster). Worker environment: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, one BLAS
thread, NUMBA_NUM_THREADS = 2, NUMBA_THREADING_LAYER = omp. The load average is recorded:
other processes may share the cores. JSON: benchmarks/results/row_kernels.json.
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
H, FF, ROWS = 768, 3072, 8 * 128
EPS = 1e-5


def make_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    return {"x": f(ROWS, H), "skip": f(ROWS, H), "gamma": f(H), "beta": f(H), "bias": f(H),
            "xf": f(ROWS, FF) * np.float32(2), "biasf": f(FF), "xs": f(ROWS, H) * np.float32(3)}


def reference(k: str, d: dict) -> np.ndarray:
    from jitort.ops.registry import KernelContext, find
    if k == "layer_norm":
        return find("LayerNorm", "jitort", 1).kernel(d["x"], d["gamma"], d["beta"], epsilon=EPS)
    if k == "skip_layer_norm":
        return find("SkipLayerNorm", "jitort", 1).kernel(
            KernelContext(), d["x"], d["skip"], d["gamma"], d["beta"], d["bias"], epsilon=EPS)
    if k == "softmax":
        return find("Softmax", "", 13).kernel(d["xs"], axis=-1)
    w = d["xf"] + d["biasf"]
    return find("Gelu", "jitort", 1).kernel(w, approximate="none" if k == "bias_gelu_erf" else "tanh")


# -- workers ---------------------------------------------------------------------------------------

def _jitort_fns(d, threads):
    from jitort.backends.cpu import row_kernels as rk
    outs = {k: np.empty_like(d["xf"] if k.startswith("bias_gelu") else d["x"]) for k in KERNELS}
    return outs, {
        "layer_norm": lambda: rk.layer_norm(d["x"], d["gamma"], d["beta"], EPS, outs["layer_norm"],
                                            threads),
        "skip_layer_norm": lambda: rk.skip_layer_norm(d["x"], d["skip"], d["gamma"], d["beta"],
                                                      d["bias"], EPS, outs["skip_layer_norm"],
                                                      None, threads),
        "softmax": lambda: rk.softmax(d["xs"], outs["softmax"], threads),
        "bias_gelu_erf": lambda: rk.bias_gelu(d["xf"], d["biasf"], outs["bias_gelu_erf"], "none",
                                              threads),
        "bias_gelu_tanh": lambda: rk.bias_gelu(d["xf"], d["biasf"], outs["bias_gelu_tanh"], "tanh",
                                               threads),
    }


def _ort_model(k, d):
    from onnx import TensorProto, helper, numpy_helper
    init, ins, dom = [], [], ""
    xn = "xf" if k.startswith("bias_gelu") else ("xs" if k == "softmax" else "x")
    shape = list(d[xn].shape)
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
        init = [numpy_helper.from_array(d["biasf"], "bias")]
        op = "BiasGelu" if k == "bias_gelu_erf" else "FastGelu"
        node = helper.make_node(op, ["X", "bias"], ["Y"], domain="com.microsoft")
        dom = "com.microsoft"
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(dom, 1)] if dom else [])
    g = helper.make_graph([node], k, ins, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)],
                          initializer=init)
    return helper.make_model(g, opset_imports=opsets, ir_version=8).SerializeToString(), xn


def _ort_fns(d, threads):
    import onnxruntime as ort
    outs, fns = {}, {}
    for k in KERNELS:
        blob, xn = _ort_model(k, d)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        out = np.empty_like(d[xn])
        io = sess.io_binding()
        io.bind_cpu_input("X", d[xn])
        if k == "skip_layer_norm":
            io.bind_cpu_input("S", d["skip"])
        io.bind_output("Y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        outs[k] = out
        fns[k] = (lambda s=sess, b=io: s.run_with_iobinding(b))
    return outs, fns


def worker(runtime: str, threads: int, npz: str, outdir: str, warmup: int, runs: int) -> None:
    d = dict(np.load(npz))
    t0 = time.perf_counter()
    outs, fns = (_jitort_fns if runtime == "jitort" else _ort_fns)(d, threads)
    res = {"setup_s": time.perf_counter() - t0, "median_s": {}, "first_call_s": {}}
    for k in KERNELS:
        t = time.perf_counter()
        fns[k]()
        res["first_call_s"][k] = time.perf_counter() - t
        for _ in range(warmup):
            fns[k]()
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            fns[k]()
            ts.append(time.perf_counter() - t)
        res["median_s"][k] = float(np.median(ts))
        np.save(os.path.join(outdir, f"{runtime}_{threads}_{k}.npy"), outs[k])
    print("RESULT " + json.dumps(res))


# -- parent ----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json", default=DEFAULT_JSON)
    ap.add_argument("--worker", nargs=4, metavar=("RUNTIME", "THREADS", "NPZ", "OUTDIR"))
    a = ap.parse_args()
    if a.worker:
        rt, th, npz, od = a.worker
        worker(rt, int(th), npz, od, a.warmup, a.runs)
        return
    threads = [int(t) for t in a.threads.split(",")]
    d = make_inputs()
    refs = {k: reference(k, d) for k in KERNELS}
    per = {(rt, th, k): [] for rt in RUNTIMES for th in threads for k in KERNELS}
    first = {}
    errs = {}
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "in.npz")
        np.savez(npz, **d)
        for r in range(a.rounds):
            for th in threads:
                order = RUNTIMES if (r + th) % 2 == 0 else RUNTIMES[::-1]
                for rt in order:
                    od = os.path.join(tmp, f"r{r}")
                    os.makedirs(od, exist_ok=True)
                    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--runs", str(a.runs),
                                        "--warmup", str(a.warmup), "--worker", rt, str(th), npz, od],
                                       capture_output=True, text=True, env=worker_env(th, blas_threads=1), check=False)
                    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
                    if p.returncode or not line:
                        print(f"worker {rt} {th}T round {r} failed:\n{p.stderr[-2000:]}")
                        continue
                    res = json.loads(line[0][7:])
                    for k in KERNELS:
                        y = np.load(os.path.join(od, f"{rt}_{th}_{k}.npy"))
                        ref = refs[k]
                        e = float(np.max(np.abs(y.astype(np.float64) - ref)) / max(1.0, np.abs(ref).max()))
                        errs[(rt, k)] = max(errs.get((rt, k), 0.0), e)
                        if e <= 1e-4:
                            per[(rt, th, k)].append(res["median_s"][k])
                        else:
                            print(f"OUTPUT MISMATCH {rt} {th}T {k}: scaled err {e:.3g} (not counted)")
                    if r == 0:
                        first[(rt, th)] = res["first_call_s"]
            load.append(os.getloadavg())
    print(f"load average before/after rounds: {[round(x[0], 2) for x in load]}")
    print("max scaled output error vs reference: " +
          ", ".join(f"{rt}/{k} {e:.1e}" for (rt, k), e in sorted(errs.items())))
    print(f"\n{'kernel':16s} {'thr':>3s} {'jitort ms':>10s} {'ORT ms':>9s} {'ORT/jitort':>10s}")
    table = {}
    for k in KERNELS:
        for th in threads:
            j, o = per[("jitort", th, k)], per[("onnxruntime", th, k)]
            jm = float(np.median(j)) if j else float("nan")
            om = float(np.median(o)) if o else float("nan")
            table[f"{k}/{th}"] = {"jitort_ms": jm * 1e3, "ort_ms": om * 1e3, "ratio": om / jm,
                                  "jitort_per_process_ms": [v * 1e3 for v in j],
                                  "ort_per_process_ms": [v * 1e3 for v in o]}
            print(f"{k:16s} {th:3d} {jm * 1e3:10.3f} {om * 1e3:9.3f} {om / jm:10.2f}")
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"rounds": a.rounds, "runs": a.runs, "load_average": load, "results": table,
                   "max_err": {f"{rt}/{k}": e for (rt, k), e in errs.items()},
                   "first_call_s": {f"{rt}/{th}": v for (rt, th), v in first.items()}}, f, indent=1)
    print(f"\nJSON: {a.json}")


if __name__ == "__main__":
    main()
