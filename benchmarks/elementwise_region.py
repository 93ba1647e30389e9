"""Generated elementwise-region kernels (jitort/backends/cpu/codegen_elementwise.py) vs onnxruntime.

    python benchmarks/elementwise_region.py [--rounds 3] [--reps 300]

Cases (float32): ``bias_gelu`` x[128,3072] + b -> erf-GELU (fused to jitort::Gelu, then a region);
``tanh_rowsum`` (x * s + b) -> Tanh -> y and ReduceSum(last axis) [128,768];
``mask_where`` Where(And(m1[1,128,128], m2[12,1,128]), x[12,128,128], -1e4) -> Add(x) -> Exp.

Runtimes, each in its own fresh process, alternated over rounds; figure = median over processes of
the per-process median (ms):
  ``ort1``/``ort2``  onnxruntime, ORT_ENABLE_ALL, 1 / 2 intra-op threads (timed through run());
  ``cg``             the generated kernel, FUNCS at its math.* defaults (kernel call, outputs
                     preallocated: what a plan would do);
  ``cg_vec``         same with FUNCS["*_f32"] pointed at jitort/backends/cpu/vecmath.py.
Each worker first checks its outputs against the reference backend (opt_level=0). The generated
kernels are serial, so ``ort1`` is the like-for-like comparison. OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are unset in the workers' environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

CASES = ("bias_gelu", "tanh_rowsum", "mask_where")
RUNTIMES = ("ort1", "ort2", "cg", "cg_vec")


def build(case):
    import numpy as np
    from onnx import TensorProto as TP
    from onnx import helper

    from tests.helpers import model

    N, F = helper.make_node, TP.FLOAT
    rng = np.random.default_rng(0)
    if case == "bias_gelu":
        nodes = [N("Add", ["x", "b"], ["a"]), N("Div", ["a", "sq2"], ["d"]), N("Erf", ["d"], ["e"]),
                 N("Add", ["e", "one"], ["p"]), N("Mul", ["a", "p"], ["ap"]), N("Mul", ["ap", "half"], ["y"])]
        m = model(nodes, [("x", F, [128, 3072]), ("b", F, [3072])], [("y", F, [128, 3072])],
                  inits={"sq2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)})
        feeds = {"x": rng.standard_normal((128, 3072)).astype(np.float32),
                 "b": rng.standard_normal(3072).astype(np.float32)}
    elif case == "tanh_rowsum":
        nodes = [N("Mul", ["x", "s"], ["m"]), N("Add", ["m", "b"], ["a"]), N("Tanh", ["a"], ["y"]),
                 N("ReduceSum", ["y", "ax"], ["r"], keepdims=1)]
        m = model(nodes, [("x", F, [128, 768]), ("s", F, [1]), ("b", F, [768])],
                  [("y", F, [128, 768]), ("r", F, [128, 1])], inits={"ax": np.array([-1], np.int64)})
        feeds = {"x": rng.standard_normal((128, 768)).astype(np.float32), "s": np.float32([0.7]),
                 "b": rng.standard_normal(768).astype(np.float32)}
    else:
        nodes = [N("And", ["m1", "m2"], ["k"]), N("Where", ["k", "x", "neg"], ["w"]), N("Add", ["w", "x"], ["a"]),
                 N("Exp", ["a"], ["y"])]
        m = model(nodes, [("m1", TP.BOOL, [1, 128, 128]), ("m2", TP.BOOL, [12, 1, 128]), ("x", F, [12, 128, 128])],
                  [("y", F, [12, 128, 128])], inits={"neg": np.float32(-1e4)})
        feeds = {"m1": rng.random((1, 128, 128)) < 0.9, "m2": rng.random((12, 1, 128)) < 0.9,
                 "x": rng.standard_normal((12, 128, 128)).astype(np.float32)}
    return m.SerializeToString(), feeds


def worker(case, runtime, reps):
    import numpy as np

    import jitort

    data, feeds = build(case)
    expected = jitort.load(data, opt_level=0)(**feeds)
    if runtime.startswith("ort"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(runtime[-1])
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        run = lambda: sess.run(names, feeds)
        got = run()
        compile_s = 0.0
    else:
        from jitort.backends.cpu import codegen_elementwise as CG

        if runtime == "cg_vec":
            for name in ("exp", "erf", "tanh", "log", "sigmoid"):
                CG.FUNCS[f"{name}_f32"] = f"jitort.backends.cpu.vecmath:{name}"
        s = jitort.load(data, opt_level=2)
        s(**feeds)
        res = s.optimization(s.signatures()[0])
        [reg] = [n for n in res.graph.nodes if n.op_type == "ElementwiseRegion"]
        vals = {**res.graph.initializers, **res.bound.consts, **feeds}
        ins = [np.ascontiguousarray(vals[i]) for i in reg.inputs]
        t0 = time.perf_counter()
        fn = CG.compile_region(reg, ins)
        got = CG.call_region(fn, *ins)  # compiles
        compile_s = time.perf_counter() - t0
        outs = [np.empty(t.shape, t.dtype) for t in fn.output_types]
        run = lambda: fn(*ins, *outs)
        order = {n: k for k, n in enumerate(reg.outputs)}
        m_out = [o.name for o in __import__("onnx").load_from_string(data).graph.output]
        got = [got[order[n]] for n in m_out]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-5)
    for _ in range(20):
        run()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t)
    return {"ms": float(np.median(ts) * 1e3), "compile_s": compile_s}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--worker", nargs=2)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(*a.worker, a.reps)))
        return
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    results = {(c, r): [] for c in CASES for r in RUNTIMES}
    comp = {}
    for rnd in range(a.rounds):
        for c in CASES:
            for r in (RUNTIMES if rnd % 2 == 0 else RUNTIMES[::-1]):
                out = subprocess.run([sys.executable, __file__, "--worker", c, r, "--reps", str(a.reps)],
                                     env=env, capture_output=True, text=True, check=True)
                d = json.loads(out.stdout.strip().splitlines()[-1])
                results[(c, r)].append(d["ms"])
                comp.setdefault((c, r), []).append(d["compile_s"])
    import numpy as np

    print(f"load average at end: {os.getloadavg()}")
    print(f"{'case':<12} " + " ".join(f"{r:>9}" for r in RUNTIMES) + "   cg/ort1  cg_vec/ort1  compile_s(cg)")
    for c in CASES:
        med = {r: float(np.median(results[(c, r)])) for r in RUNTIMES}
        print(f"{c:<12} " + " ".join(f"{med[r]:9.4f}" for r in RUNTIMES)
              + f"   {med['cg'] / med['ort1']:7.2f}  {med['cg_vec'] / med['ort1']:11.2f}"
              + f"  {np.median(comp[(c, 'cg')]):8.2f}")


if __name__ == "__main__":
    main()
