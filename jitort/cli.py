"""The ``jitort`` command line.

Subcommands: ``run`` and ``inspect`` here; ``warmup`` (cli_warmup.py), ``cache`` (cli_cache.py),
``bench`` (cli_bench.py) and ``tune`` (cli_tune.py) in their own modules.

``jitort run`` loads a model, feeds it random inputs of the given shapes, and prints its outputs
and timings (load, first call, warm latency). ``jitort inspect`` shows what the optimizer does for
one Signature: per-pass hits and node counts, op histograms, fused regions, near misses; ``--save``
writes the optimized model (fused nodes as ONNX functions), checked by onnx.checker."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .errors import JitortError


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'input_ids=1x128' -> ('input_ids', (1, 128)); 'x=' is a scalar."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=D1xD2x..., got {text!r}")
    name, dims = text.split("=", 1)
    try:
        shape = tuple(int(d) for d in dims.lower().split("x") if d != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"dims of {name!r} must be integers joined by 'x', got {dims!r}") from None
    return name, shape


def random_inputs(model, shapes: dict[str, tuple], seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds for every required input: declared shapes, symbolic dims from ``shapes`` or 1."""
    from .ir.types import TensorType

    rng = np.random.default_rng(seed)
    feeds = {}
    for v in model.graph.required_inputs():
        t = v.type
        if not isinstance(t, TensorType) or t.dtype is None:
            raise JitortError(f"input {v.name!r} is not a tensor ({t}); jitort run feeds tensors only")
        if v.name in shapes:
            shape = shapes[v.name]
        elif t.shape is None:
            raise JitortError(f"input {v.name!r} has unknown rank: pass --shape {v.name}=D1xD2...")
        else:
            shape = tuple(d if isinstance(d, int) else 1 for d in t.shape)
        dt = np.dtype(t.dtype)
        if dt.kind == "f" or dt.name.startswith(("bfloat", "float")):
            feeds[v.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            feeds[v.name] = rng.integers(0, 100, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[v.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise JitortError(f"input {v.name!r} has dtype {dt}; jitort run cannot make random data for it")
    return feeds


def cmd_run(args) -> int:
    from . import load
    from .examples import example_path

    path = example_path(args.example) if args.example else args.model
    if path is None:
        print("jitort run: give a MODEL path or --example NAME", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    model = load(path, backend=args.backend)
    t_load = time.perf_counter() - t0
    feeds = random_inputs(model, dict(args.shape or []), args.seed)
    t0 = time.perf_counter()
    outs = model(**feeds)
    t_first = time.perf_counter() - t0
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        model(**feeds)
        times.append(time.perf_counter() - t0)
    print(f"model: {path}")
    for name, a in feeds.items():
        print(f"  input  {name}: {a.dtype}{list(a.shape)}")
    for name, o in zip(outs.names, outs):
        if isinstance(o, np.ndarray):
            flat = o.reshape(-1)
            head = np.array2string(flat[:5], precision=4, separator=", ")
            print(f"  output {name}: {o.dtype}{list(o.shape)} first values {head}")
        else:
            print(f"  output {name}: {type(o).__name__}")
    print(f"load {t_load * 1e3:.1f} ms | first call {t_first * 1e3:.1f} ms", end="")
    if times:
        p50, p90 = np.percentile(np.array(times) * 1e3, [50, 90])
        print(f" | warm p50 {p50:.2f} ms, p90 {p90:.2f} ms over {len(times)} runs")
    else:
        print()
    return 0


def cmd_inspect(args) -> int:
    import json

    from .inspect import format_report, inspect_model, load_shapes_file, save_optimized

    shapes = load_shapes_file(args.shapes_from) if args.shapes_from else {}
    shapes.update(dict(args.shape or []))
    report, result, model = inspect_model(args.model, shapes, args.level)
    if args.kernels:
        from .inspect import kernel_summary

        report.kernels = kernel_summary(result.bound)
    if args.save:
        try:
            save_optimized(result, model, args.save)
        except Exception as exc:  # noqa: BLE001 - a model the checker rejects is a failure to report
            raise JitortError(f"--save {args.save}: {type(exc).__name__}: {exc}") from exc
        report.saved = args.save
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(format_report(report))
    return 0


def _level(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 3:
        raise argparse.ArgumentTypeError(f"level must be 0, 1, 2 or 3, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jitort", description="JIT-compiling runtime for ONNX models")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a model on random inputs and print outputs and timings")
    r.add_argument("model", nargs="?", help="path to an .onnx file")
    r.add_argument("--example", help="a bundled example instead of a path: resnet50 or mlp")
    r.add_argument("--shape", action="append", type=parse_shape, metavar="NAME=D1xD2...",
                   help="shape of an input (repeatable); symbolic dims default to 1")
    r.add_argument("--runs", type=int, default=10, help="timed warm runs (default 10)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--backend", default=None, help="execution backend: cpu (default) or reference")
    r.set_defaults(fn=cmd_run)
    i = sub.add_parser("inspect", help="show what the optimizer does to a model for given input shapes")
    i.add_argument("model", help="path to an .onnx file")
    i.add_argument("--shape", action="append", type=parse_shape, metavar="NAME=D1xD2...",
                   help="shape of an input (repeatable); symbolic dims not given default to 1")
    i.add_argument("--shapes-from", metavar="FILE.json",
                   help='input shapes from JSON: {"name": [1, 3, 224, 224]} or {"name": "1x3x224x224"}')
    i.add_argument("--level", type=_level, default=2, help="optimization level 0-3 (default 2)")
    i.add_argument("--save", metavar="OUT.onnx", help="write the optimized model and check it with onnx.checker")
    i.add_argument("--kernels", action="store_true",
                   help="also build the CPU plan (compiles its kernels) and show which kernel runs each node")
    i.add_argument("--json", action="store_true", help="print the report as JSON")
    i.set_defaults(fn=cmd_inspect)
    import importlib

    for mod in _SUBCOMMAND_MODULES:  # each adds its subcommand(s): register(subparsers)
        importlib.import_module(f".{mod}", __package__).register(sub)
    return p


#: Modules that add subcommands (one responsibility each): warmup, cache, bench, tune.
_SUBCOMMAND_MODULES = ("cli_warmup", "cli_cache", "cli_bench", "cli_tune")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except JitortError as exc:
        print(f"jitort: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
