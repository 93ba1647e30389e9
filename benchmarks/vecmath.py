"""Throughput of jitort's vectorizable float32 math (jitort/backends/cpu/vecmath.py), 1 thread.

    python benchmarks/vecmath.py                    # 8x128x3072 float32, 3 rounds
    python benchmarks/vecmath.py --rounds 5 --runs 30 --shape 8,128,3072

Each function runs over one float32 tensor (standard normal * 3; |x| + 1e-3 for log) in three
runtimes, each in its own fresh process, the order alternating per round:

* jitort: ``vecmath.apply(name, x, out=)`` (the cached Numba map kernel; compile not timed);
* numpy: the ufunc or the NumPy/SciPy expression (``np.exp``, ``scipy.special.erf``,
  ``scipy.special.expit``, ``np.logaddexp(0, x)``, GELU as its formula), float32, with out=;
* onnxruntime: a one-node model (Exp, Log, Erf, Tanh, Sigmoid, Softplus, Gelu opset 20
  approximate none/tanh), ``intra_op_num_threads=1``, sequential, output bound by IOBinding
  into a preallocated buffer.

Outputs are checked first (every runtime's round-0 outputs vs a float64 reference: the max
abs error, scaled by max(1, |ref|), must stay below 1e-5; jitort's must meet vecmath's own
ERROR_BOUNDS), then the figure per runtime is the median of its per-process medians, printed
as ns/element with ratios vs onnxruntime. Worker environment: one thread everywhere
(OMP/OPENBLAS/NUMBA/MKL), OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset. The JSON goes to
benchmarks/results/vecmath.json.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

NAMES = ("exp", "log", "erf", "tanh", "sigmoid", "softplus", "gelu_erf", "gelu_tanh")
RUNTIMES = ("jitort", "numpy", "onnxruntime")
DEFAULT_JSON = os.path.join(ROOT, "benchmarks", "results", "vecmath.json")


def make_input(name: str, shape: tuple[int, ...]) -> np.ndarray:
    x = np.random.default_rng(1234).standard_normal(shape).astype(np.float32) * np.float32(3)
    return np.abs(x) + np.float32(1e-3) if name == "log" else x


# -- runtimes (workers) ----------------------------------------------------------------------------

def _numpy_fn(name: str):
    from scipy import special

    f32 = np.float32
    c, k = f32(np.sqrt(2 / np.pi)), f32(0.044715)

    def gelu_erf(x, out):
        special.erf(x * f32(np.sqrt(0.5)), out=out)
        out += f32(1)
        out *= x
        out *= f32(0.5)

    def gelu_tanh(x, out):
        np.tanh(c * (x + k * x * x * x), out=out)
        out += f32(1)
        out *= x
        out *= f32(0.5)

    return {
        "exp": lambda x, out: np.exp(x, out=out), "log": lambda x, out: np.log(x, out=out),
        "erf": lambda x, out: special.erf(x, out=out), "tanh": lambda x, out: np.tanh(x, out=out),
        "sigmoid": lambda x, out: special.expit(x, out=out),
        "softplus": lambda x, out: np.logaddexp(f32(0), x, out=out),
        "gelu_erf": gelu_erf, "gelu_tanh": gelu_tanh,
    }[name]


def _ort_fn(name: str, shape: tuple[int, ...]):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    op, attrs = {"exp": ("Exp", {}), "log": ("Log", {}), "erf": ("Erf", {}), "tanh": ("Tanh", {}),
                 "sigmoid": ("Sigmoid", {}), "softplus": ("Softplus", {}),
                 "gelu_erf": ("Gelu", {"approximate": "none"}),
                 "gelu_tanh": ("Gelu", {"approximate": "tanh"})}[name]
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    g = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def run(x, out):
        io = sess.io_binding()
        io.bind_input("x", "cpu", 0, np.float32, list(x.shape), x.ctypes.data)
        io.bind_output("y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        sess.run_with_iobinding(io)

    return run


def worker(runtime: str, shape: tuple[int, ...], runs: int, warmup: int, outdir: str | None) -> dict:
    res = {}
    for name in NAMES:
        x = make_input(name, shape)
        out = np.empty_like(x)
        if runtime == "jitort":
            from jitort.backends.cpu import vecmath

            fn = lambda x, out, name=name: vecmath.apply(name, x, out=out)
        elif runtime == "numpy":
            fn = _numpy_fn(name)
        else:
            fn = _ort_fn(name, shape)
        t0 = time.perf_counter()
        fn(x, out)
        first = time.perf_counter() - t0
        for _ in range(warmup):
            fn(x, out)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x, out)
            ts.append(time.perf_counter() - t0)
        res[name] = {"median_s": float(np.median(ts)), "first_s": first}
        if outdir:
            np.save(os.path.join(outdir, f"{runtime}_{name}.npy"), out)
    return res


# -- parent ----------------------------------------------------------------------------------------

def _reference(name: str, x: np.ndarray) -> np.ndarray:
    sys.path.insert(0, os.path.join(ROOT, "tests", "backends", "cpu"))
    from test_vecmath import _ref  # the tests' float64 references

    return _ref(name, x)


def check(outdir: str, shape) -> dict:
    from jitort.backends.cpu import vecmath

    sys.path.insert(0, os.path.join(ROOT, "tests", "backends", "cpu"))
    from test_vecmath import _bad

    report = {}
    for name in NAMES:
        x = make_input(name, shape).reshape(-1)
        ref = _reference(name, x)
        for rt in RUNTIMES:
            y = np.load(os.path.join(outdir, f"{rt}_{name}.npy")).reshape(-1)
            err = float(np.max(np.abs(y.astype(np.float64) - ref) / np.maximum(1.0, np.abs(ref))))
            ok = err < 1e-5
            if rt == "jitort":
                ok = ok and not _bad(name, x, y).any()
            report[f"{rt}/{name}"] = {"max_scaled_err": err, "ok": bool(ok)}
            if not ok:
                print(f"OUTPUT CHECK FAILED: {rt} {name}: max scaled error {err:.3g}"
                      + (f" (vecmath bounds {vecmath.ERROR_BOUNDS[name]})" if rt == "jitort" else ""))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="8,128,3072")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=DEFAULT_JSON)
    ap.add_argument("--worker", choices=RUNTIMES)
    ap.add_argument("--outdir")
    a = ap.parse_args()
    shape = tuple(int(s) for s in a.shape.split(","))
    if a.worker:
        print(json.dumps(worker(a.worker, shape, a.runs, a.warmup, a.outdir)))
        return

    env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(k, None)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    n = int(np.prod(shape))
    per = {rt: {name: [] for name in NAMES} for rt in RUNTIMES}
    firsts = {rt: {} for rt in RUNTIMES}
    checks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(a.rounds):
            order = RUNTIMES[rnd % 3:] + RUNTIMES[:rnd % 3]
            for rt in order:
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", rt, "--shape", a.shape,
                       "--runs", str(a.runs), "--warmup", str(a.warmup)]
                if rnd == 0:
                    cmd += ["--outdir", tmp]
                p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if p.returncode:
                    print(f"worker {rt} failed:\n{p.stderr[-2000:]}")
                    continue
                res = json.loads(p.stdout.strip().splitlines()[-1])
                for name, r in res.items():
                    per[rt][name].append(r["median_s"])
                    firsts[rt].setdefault(name, r["first_s"])
            if rnd == 0:
                checks = check(tmp, shape)
                for f in os.listdir(tmp):
                    os.remove(os.path.join(tmp, f))
    load = os.getloadavg()
    print(f"shape {shape} = {n} float32 elements, 1 thread, {a.rounds} rounds x {a.runs} runs; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'function':<10} {'jitort ns/el':>12} {'numpy ns/el':>12} {'ort ns/el':>10} "
          f"{'jitort/ort':>11} {'numpy/ort':>10} {'numpy/jitort':>13}  output check (max scaled err)")
    table = {}
    for name in NAMES:
        med = {rt: (float(np.median(per[rt][name])) if per[rt][name] else float("nan"))
               for rt in RUNTIMES}
        ns = {rt: med[rt] / n * 1e9 for rt in RUNTIMES}
        ok = " ".join(f"{rt[:3]}:{'ok' if checks.get(f'{rt}/{name}', {}).get('ok') else 'FAIL'}"
                      f"({checks.get(f'{rt}/{name}', {}).get('max_scaled_err', float('nan')):.1e})"
                      for rt in RUNTIMES)
        print(f"{name:<10} {ns['jitort']:12.3f} {ns['numpy']:12.3f} {ns['onnxruntime']:10.3f} "
              f"{ns['jitort'] / ns['onnxruntime']:11.2f} {ns['numpy'] / ns['onnxruntime']:10.2f} "
              f"{ns['numpy'] / ns['jitort']:13.2f}  {ok}")
        table[name] = {"ns_per_element": ns, "per_process_s": {rt: per[rt][name] for rt in RUNTIMES},
                       "first_call_s": {rt: firsts[rt].get(name) for rt in RUNTIMES}}
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump({"shape": shape, "rounds": a.rounds, "runs": a.runs, "load_average": load,
                   "checks": checks, "results": table}, fh, indent=1)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
