"""``jitort bench``'s measurement: jitort (and optionally onnxruntime) on one model, each runtime in
its own fresh process, alternated over rounds, outputs checked before a round's timings count.

Method (as benchmarks/e2e.py, in the package):

- The parent makes random feeds once (:func:`jitort.cli.random_inputs`) and saves them to a .npz,
  so every worker runs on the same data.
- Each round spawns one ``python -m jitort.bench --worker RUNTIME ...`` per runtime; odd rounds put
  onnxruntime first. A worker imports its runtime, then times session creation (jitort: only
  ``jitort.load(path, backend=B, num_threads=T, cache_dir=D)``, which compiles lazily; onnxruntime:
  an InferenceSession with ORT_ENABLE_ALL, T intra-op threads, 1 inter-op thread, sequential, CPU
  provider), the first call, W untimed warm-up calls, then N timed calls. It writes a JSON report
  and its outputs to the round's directory.
- The parent compares jitort's outputs with onnxruntime's (:func:`compare_outputs`); a round that
  mismatches is reported and not counted. A worker that fails stops the run (:class:`BenchError`
  with the worker's stderr tail): a crash is not noise.
- The summary is the median over counted rounds of every per-process figure, and the ratios
  jitort/onnxruntime of the median p50 and of the median create + first call.

``run_bench`` returns a JSON-ready dict; :func:`write_json` and :func:`plot` write it out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .errors import JitortError

RUNTIMES = ("jitort", "onnxruntime")
#: Per-process figures that the summary takes the median of.
FIGURES = ("create_ms", "first_call_ms", "create_first_ms", "p50_ms", "p90_ms", "mean_ms",
           "calls_per_s", "items_per_s")
RTOL = 1e-3  # float outputs: max |diff| <= RTOL * max(1, max |reference|)


class BenchError(JitortError):
    """A worker failed, or no round's outputs matched; the CLI prints it and exits with 1."""


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# -- the output check -----------------------------------------------------------------------------
def compare_outputs(got: list, want: list, names: list | None = None, rtol: float = RTOL) -> tuple[bool, float, str]:
    """(match, worst scaled diff, message) of ``got`` (jitort) against ``want`` (the reference).
    Same count, shapes and dtypes; floats: NaN where the reference has NaN, equal infinities,
    max |diff| <= rtol * max(1, max |want|); ints, bools and other dtypes: exact."""
    names = list(names) if names else [f"#{i}" for i in range(len(want))]
    if len(got) != len(want):
        return False, float("inf"), f"{len(got)} outputs vs {len(want)}"
    worst = 0.0
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        label = f"output {names[i]!r}" if i < len(names) else f"output #{i}"
        if g.shape != w.shape or g.dtype != w.dtype:
            return False, float("inf"), f"{label}: {g.dtype}{list(g.shape)} vs {w.dtype}{list(w.shape)}"
        if w.size == 0:
            continue
        if w.dtype.kind not in "fc":
            if not np.array_equal(g, w):
                bad = int(np.count_nonzero(g != w)) if w.dtype.kind in "iub" else -1
                what = f"{bad} of {w.size} elements differ" if bad >= 0 else "contents differ"
                return False, float("inf"), f"{label}: {what} (exact match required for {w.dtype})"
            continue
        g64, w64 = g.astype(np.complex128 if w.dtype.kind == "c" else np.float64), \
            w.astype(np.complex128 if w.dtype.kind == "c" else np.float64)
        finite = np.isfinite(w64)
        if not np.array_equal(np.isnan(g64), np.isnan(w64)) or not np.array_equal(g64[np.isinf(w64)],
                                                                                  w64[np.isinf(w64)]):
            return False, float("inf"), f"{label}: NaN/inf positions differ"
        if not finite.any():
            continue
        ref_max = float(np.max(np.abs(w64[finite])))
        diff = float(np.max(np.abs(g64[finite] - w64[finite])))
        scale = max(1.0, ref_max)
        err = diff / scale
        worst = max(worst, err)
        if not err <= rtol:  # also catches a NaN diff
            return False, err, (f"{label}: max |diff| {diff:.3g} > {rtol:g} * max(1, max |ref| = {ref_max:.3g}) "
                                f"(scaled diff {err:.3g})")
    return True, worst, ""


# -- the worker: one runtime, one fresh process ---------------------------------------------------
def _ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def worker(args) -> None:
    """Times one runtime on the saved feeds; writes ``RUNTIME.json`` and ``RUNTIME_outputs.npz``."""
    with np.load(args.inputs) as z:
        feeds = {k: z[k] for k in z.files}
    if args.worker == "jitort":
        import jitort

        t0 = time.perf_counter()
        m = jitort.load(args.model, backend=args.backend, num_threads=args.threads, cache_dir=args.cache_dir)
        create = time.perf_counter() - t0
        names = list(m.output_names)

        def call():
            return list(m(**feeds))
    else:
        import onnxruntime  # noqa: F401  (imported before the clock starts)

        t0 = time.perf_counter()
        sess = _ort_session(args.model, args.threads)
        create = time.perf_counter() - t0
        names = [o.name for o in sess.get_outputs()]

        def call():
            return sess.run(None, feeds)
    t0 = time.perf_counter()
    outs = call()
    first = time.perf_counter() - t0
    for _ in range(args.warmup):
        call()
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        outs = call()
        times.append((time.perf_counter() - t0) * 1e3)
    saved, unchecked = {}, []
    for i, o in enumerate(outs):
        a = np.asarray(o)
        if a.dtype == object:  # a sequence or map output: not compared
            unchecked.append(names[i] if i < len(names) else f"#{i}")
        else:
            saved[f"out{i}"] = a
    np.savez(os.path.join(args.outdir, f"{args.worker}_outputs.npz"), **saved)
    report = {"runtime": args.worker, "pid": os.getpid(), "create_ms": create * 1e3, "first_call_ms": first * 1e3,
              "times_ms": times, "output_names": names, "n_outputs": len(outs), "unchecked_outputs": unchecked}
    with open(os.path.join(args.outdir, f"{args.worker}.json"), "w") as f:
        json.dump(report, f)


def _worker_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jitort.bench", description="one jitort bench worker (internal)")
    ap.add_argument("--worker", choices=RUNTIMES, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--cache-dir", default=None)
    return ap


# -- the parent -----------------------------------------------------------------------------------
def _spawn(runtime: str, outdir: str, model: str, inputs: str, s: dict) -> dict:
    """Runs one worker; returns its report plus per-process statistics. Raises on a failed worker."""
    cmd = [sys.executable, "-m", "jitort.bench", "--worker", runtime, "--model", model, "--inputs", inputs,
           "--outdir", outdir, "--runs", str(s["runs"]), "--warmup", str(s["warmup"]), "--threads", str(s["threads"])]
    if s["backend"]:
        cmd += ["--backend", s["backend"]]
    if s["cache_dir"]:
        cmd += ["--cache-dir", s["cache_dir"]]
    p = subprocess.run(cmd, capture_output=True, text=True)
    report_path = os.path.join(outdir, f"{runtime}.json")
    if p.returncode != 0 or not os.path.exists(report_path):
        tail = "\n".join((p.stderr or p.stdout or "").strip().splitlines()[-25:])
        raise BenchError(f"the {runtime} worker failed (exit status {p.returncode}); its stderr ends with:\n"
                         f"{tail or '(nothing)'}")
    with open(report_path) as f:
        r = json.load(f)
    t = np.array(r["times_ms"])
    r["p50_ms"], r["p90_ms"] = (float(v) for v in np.percentile(t, [50, 90]))
    r["mean_ms"] = float(t.mean())
    r["create_first_ms"] = r["create_ms"] + r["first_call_ms"]
    r["calls_per_s"] = 1e3 / r["p50_ms"] if r["p50_ms"] > 0 else None
    r["items_per_s"] = s["batch"] * r["calls_per_s"] if r["calls_per_s"] else None
    return r


def _load_outputs(outdir: str, runtime: str, n: int) -> list:
    with np.load(os.path.join(outdir, f"{runtime}_outputs.npz")) as z:
        return [z[f"out{i}"] if f"out{i}" in z.files else None for i in range(n)]


def _check_round(outdir: str, got: dict) -> tuple[bool, float | None, str]:
    j, o = got["jitort"], got["onnxruntime"]
    if j["n_outputs"] != o["n_outputs"]:
        return False, float("inf"), f"jitort has {j['n_outputs']} outputs, onnxruntime {o['n_outputs']}"
    gj, go = _load_outputs(outdir, "jitort", j["n_outputs"]), _load_outputs(outdir, "onnxruntime", o["n_outputs"])
    keep = [i for i in range(len(go)) if gj[i] is not None and go[i] is not None]
    names = [o["output_names"][i] for i in keep]
    return compare_outputs([gj[i] for i in keep], [go[i] for i in keep], names)


def _median(values: list):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(rounds: list, runtimes: tuple) -> dict:
    """Per runtime: the median over counted rounds of each of :data:`FIGURES`; the ratios."""
    ok = [r for r in rounds if r["counted"]]
    out = {"counted_rounds": len(ok), "rounds": len(rounds)}
    for rt in runtimes:
        out[rt] = {k: _median([r[rt][k] for r in ok]) for k in FIGURES}
    if "onnxruntime" in runtimes:
        j, o = out["jitort"], out["onnxruntime"]
        div = lambda a, b: a / b if a is not None and b else None  # noqa: E731
        out["ratio_p50"] = div(j["p50_ms"], o["p50_ms"])
        out["ratio_create_first"] = div(j["create_first_ms"], o["create_first_ms"])
    return out


def run_bench(model: str, feeds: dict, *, vs: str | None = None, runs: int = 50, warmup: int = 5, rounds: int = 3,
              threads: int | None = None, backend: str | None = None, cache_dir: str | None = None,
              progress=None) -> dict:
    """Measures ``model`` on ``feeds``; returns {"settings", "machine", "rounds", "summary"}.
    ``progress(line)`` gets one line per round. Raises :class:`BenchError` when a worker fails
    or when no round's outputs match."""
    runtimes = ("jitort", "onnxruntime") if vs else ("jitort",)
    first = next(iter(feeds.values()), None)
    batch = int(first.shape[0]) if first is not None and first.ndim else 1
    settings = {"model": os.path.abspath(model), "runtimes": list(runtimes), "runs": runs, "warmup": warmup,
                "rounds": rounds, "threads": threads or usable_cores(), "backend": backend,
                "cache_dir": os.path.abspath(cache_dir) if cache_dir else None, "batch": batch,
                "inputs": {k: f"{v.dtype}{list(v.shape)}" for k, v in feeds.items()},
                "onnxruntime_options": "ORT_ENABLE_ALL, CPUExecutionProvider, sequential, 1 inter-op thread",
                "tolerance": f"max |diff| <= {RTOL:g} * max(1, max |onnxruntime|); ints and bools exact"}
    records = []
    with tempfile.TemporaryDirectory(prefix="jitort-bench-") as tmp:
        inputs = os.path.join(tmp, "inputs.npz")
        np.savez(inputs, **feeds)
        for r in range(rounds):
            order = runtimes if r % 2 == 0 else runtimes[::-1]
            outdir = os.path.join(tmp, f"round{r}")
            os.makedirs(outdir)
            got = {rt: _spawn(rt, outdir, settings["model"], inputs, settings) for rt in order}
            match, worst, problem = _check_round(outdir, got) if vs else (True, None, "")
            o50 = got["onnxruntime"]["p50_ms"] if vs else None
            ratio = got["jitort"]["p50_ms"] / o50 if o50 else None
            records.append({"round": r, "order": list(order), "counted": match, "max_scaled_diff": worst,
                            "problem": problem, "ratio_p50": ratio, **got})
            if progress:
                line = ", ".join(f"{rt} p50 {got[rt]['p50_ms']:.3f} ms" for rt in order)
                progress(f"[round {r + 1}/{rounds}] {line}" + ("" if match else f"  NOT COUNTED: {problem}"))
    if not any(r["counted"] for r in records):
        raise BenchError("the outputs of jitort and onnxruntime differ in every round:\n" +
                         "\n".join(f"  round {r['round'] + 1}: {r['problem']}" for r in records))
    return {"benchmark": "jitort bench", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "settings": settings,
            "machine": machine(), "rounds": records, "summary": summarize(records, runtimes)}


def machine() -> dict:
    from . import __version__

    info = {"platform": platform.platform(), "processor": cpu_name(), "cpus": os.cpu_count(),
            "usable_cores": usable_cores(), "python": platform.python_version(), "numpy": np.__version__,
            "jitort": __version__}
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# -- writing it out -------------------------------------------------------------------------------
def write_json(path: str, doc: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'jitort[bench]' (or pip install matplotlib)") from None


def plot(doc: dict, path: str) -> None:
    """A PNG: p50 per runtime with a whisker to p90; create and first call per runtime."""
    check_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = doc["summary"]
    runtimes = doc["settings"]["runtimes"]
    colors = {"jitort": "tab:blue", "onnxruntime": "tab:orange"}
    fig = Figure(figsize=(9, 3.8), dpi=100)
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no pyplot state
    ax1, ax2 = fig.subplots(1, 2)
    p50 = [s[rt]["p50_ms"] or 0.0 for rt in runtimes]
    up = [max(0.0, (s[rt]["p90_ms"] or 0.0) - (s[rt]["p50_ms"] or 0.0)) for rt in runtimes]
    ax1.bar(runtimes, p50, yerr=[[0.0] * len(runtimes), up], capsize=6,
            color=[colors.get(rt, "gray") for rt in runtimes])
    ax1.set_ylabel("ms per call")
    title = "warm latency p50 (whisker: p90)"
    if s.get("ratio_p50"):
        title += f"\njitort/onnxruntime {s['ratio_p50']:.2f}x"
    ax1.set_title(title, fontsize=10)
    x = np.arange(2)
    w = 0.8 / len(runtimes)
    for k, rt in enumerate(runtimes):
        vals = [s[rt]["create_ms"] or 0.0, s[rt]["first_call_ms"] or 0.0]
        ax2.bar(x + (k - (len(runtimes) - 1) / 2) * w, vals, w, label=rt, color=colors.get(rt, "gray"))
    ax2.set_xticks(x, ["session creation", "first call"])
    ax2.set_ylabel("ms")
    ax2.set_title("cold path", fontsize=10)
    ax2.legend(fontsize=8)
    fig.suptitle(f"{os.path.basename(doc['settings']['model'])}: {doc['settings']['threads']} thread(s), "
                 f"medians over {s['counted_rounds']} round(s)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")


if __name__ == "__main__":
    worker(_worker_parser().parse_args())
