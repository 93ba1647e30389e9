"""What the benchmarks share: the workers' environment, and for the whole-model benchmarks
(reference_speed.py, e2e.py) the onnxruntime session, the timing loop, the output check, the
table and the machine description.

This machine's environment can set OPENBLAS_CORETYPE=Haswell (and an L2 size), which forces
OpenBLAS's AVX2 kernels on an AVX-512 CPU: about 1.6x slower GEMMs (shared/notes/
cpu-gemm-threads.md). numpy uses OpenBLAS and onnxruntime does not, so the workers run without
them. Benchmarks only: the library and the tests never touch these variables.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def worker_env(threads: int, blas_threads: int | None = None) -> dict:
    """The environment of one worker process: OpenBLAS overrides removed, thread counts set
    (``blas_threads``: numpy's OpenBLAS pool, default ``threads``), the repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OPENBLAS_NUM_THREADS=str(threads if blas_threads is None else blas_threads),
               OMP_NUM_THREADS=str(threads), NUMBA_THREADING_LAYER="omp",
               PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    return env


# -- in a worker ---------------------------------------------------------------------------------
def ort_session(path: str, threads: int, level: str):
    """onnxruntime on the CPU provider: ``level`` a GraphOptimizationLevel name, ``threads`` intra-op
    threads, one inter-op thread, sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def time_calls(call, runs: int, warmup: int) -> dict:
    """The first call (timed alone; it counts as the first of ``warmup`` untimed calls), the rest
    of the warm-up, then ``runs`` timed calls. Returns first_call_ms, times_ms, median_ms, p90_ms
    and the last call's outputs; cpu_to_first_result_ms is the process's CPU time (all threads,
    from its start) at the end of the first call, less moved by other jobs than wall time."""
    t0 = time.perf_counter()
    outs = call()
    first = time.perf_counter() - t0
    cpu_first = time.process_time()
    for _ in range(max(0, warmup - 1)):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        outs = call()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"first_call_ms": first * 1e3, "cpu_to_first_result_ms": cpu_first * 1e3, "times_ms": times,
            "median_ms": statistics.median(times) if times else None,
            "p90_ms": float(np.percentile(times, 90)) if times else None, "outputs": outs}


def save_outputs(outdir: str, tag: str, outs) -> int:
    for i, o in enumerate(outs):
        np.save(os.path.join(outdir, f"{tag}_out{i}.npy"), np.asarray(o))
    return len(outs)


# -- in the parent -------------------------------------------------------------------------------
def run_worker(cmd: list, env: dict) -> dict:
    """Runs one worker process; its last stdout line is its JSON report, else {"error": stderr tail}.
    The file data it wrote (a jitort cache entry: 100+ MB for a CNN compiled cold) is flushed to
    disk before the next worker starts, so no worker's time includes another's writeback (one run
    without it: the worker after a cold jitort run spent 144 ms to import numpy and read its
    inputs, onnxruntime's 117; with it, over three runs, 114-132 vs 103-110, on a noisy host)."""
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    os.sync()
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip()[-2000:] or f"exit status {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def compare_outputs(outdir: str, tag: str, want_tag: str, n: int) -> tuple[bool, float, str]:
    """(match, max |got - want| / scale, message) over the ``n`` outputs that two workers saved: same
    shape and dtype, max |diff| <= 1e-3 * max(1, max |want|)."""
    worst = 0.0
    for i in range(n):
        got = np.load(os.path.join(outdir, f"{tag}_out{i}.npy"))
        want = np.load(os.path.join(outdir, f"{want_tag}_out{i}.npy"))
        if got.shape != want.shape or got.dtype != want.dtype:
            return False, float("inf"), f"output {i}: {got.dtype}{got.shape} vs {want.dtype}{want.shape}"
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale if want.size else 0.0
        worst = max(worst, err)
        if not err <= 1e-3:
            return False, worst, f"output {i}: max |diff| / {scale:.3g} = {err:.3g} > 1e-3"
    return True, worst, ""


def run_rounds(label: str, tags: tuple, rounds: int, spawn, tmp: str, key: str = "median_ms",
               orders: tuple | None = None) -> list:
    """``rounds`` rounds of one fresh worker per tag, ``spawn(tag, outdir) -> report``; the last tag
    (the reference runtime, onnxruntime) goes last in even rounds and first in odd ones, or the
    rounds cycle through ``orders``. Each round's record says whether its timings count: every
    worker succeeded and every other tag's outputs match the reference's (:func:`compare_outputs`).
    Prints one progress line per round."""
    records = []
    for r in range(rounds):
        if orders:
            order = orders[r % len(orders)]
        else:
            order = tags if r % 2 == 0 else tags[-1:] + tags[:-1]
        outdir = os.path.join(tmp, f"{label}_round{r}")
        os.makedirs(outdir)
        got = {t: spawn(t, outdir) for t in order}
        records.append(_check_round(r, order, got, outdir, tags[-1]))
        line = ", ".join(f"{t} {got[t][key]:.1f} ms" if key in got[t] else f"{t} FAILED" for t in order)
        note = "" if records[-1]["outputs_match"] else f"  NOT COUNTED: {records[-1]['problem']}"
        print(f"[{label} round {r + 1}/{rounds}] {line}{note}", file=sys.stderr, flush=True)
    return records


def _check_round(r: int, order, got: dict, outdir: str, want: str) -> dict:
    errors = [f"{tag} failed: {g['error'].splitlines()[-1]}" for tag, g in got.items() if "error" in g]
    ok, worst, problems = not errors, 0.0, errors
    for tag in ([] if errors else [t for t in order if t != want]):
        n, n_want = len(got[tag]["outputs"]), len(got[want]["outputs"])
        match, diff, msg = (compare_outputs(outdir, tag, want, n) if n == n_want
                            else (False, float("inf"), f"{n} outputs vs {n_want}"))
        ok, worst = ok and match, max(worst, diff)
        problems += [] if match else [f"{tag} vs {want}: {msg}"]
    for tag, g in got.items():
        if "error" in g:
            print(f"--- {tag} worker stderr (tail) ---\n{g['error']}", file=sys.stderr)
    return {"round": r, "order": list(order), "outputs_match": ok, "max_scaled_diff": None if errors else worst,
            "problem": "; ".join(problems), **got}


def counted(rounds: list, tag: str, key: str) -> list:
    """``key`` of ``tag``'s report in every round that counts."""
    return [r[tag][key] for r in rounds if r["outputs_match"]]


def median(values: list):
    return statistics.median(values) if values else None


def relpath(path: str) -> str:
    return os.path.relpath(path, ROOT) if path.startswith(ROOT) else path


def fmt_median(values: list, digits: int = 1) -> str:
    """'median [min-max]' of per-process figures, or '-'."""
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def print_table(rows: list) -> None:
    """Left-aligned columns; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def machine() -> dict:
    import onnxruntime

    return {"platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
            "load_average": os.getloadavg()}


def write_json(path: str, doc: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"wrote {path}")


def _cpu_name() -> str:
    from jitort.bench import cpu_name

    return cpu_name()
