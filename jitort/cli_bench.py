"""``jitort bench MODEL``: jitort's session creation, first call and warm latency on random inputs,
optionally against onnxruntime measured in the same run (``--vs onnxruntime``), each runtime in its
own fresh process, alternated over rounds; a table of medians, and optionally JSON and a PNG plot.
The measurement is in bench.py."""

from __future__ import annotations

import argparse
import os
import sys

from .cli import parse_shape
from .errors import JitortError


def _positive(minimum: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = minimum - 1
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return v
    return parse


def register(sub) -> None:
    b = sub.add_parser("bench", help="time jitort (optionally against onnxruntime) on a model, one process per run",
                       description=__doc__.split("The measurement")[0].strip().replace("``", ""))
    b.add_argument("model", nargs="?", help="path to an .onnx file")
    b.add_argument("--example", help="a bundled example instead of a path: resnet50 or mlp")
    b.add_argument("--shape", action="append", type=parse_shape, metavar="NAME=D1xD2...",
                   help="shape of an input (repeatable); symbolic dims not given default to 1")
    b.add_argument("--shapes-from", metavar="FILE.json",
                   help='input shapes from JSON: {"name": [1, 1024]} or {"name": "1x1024"}')
    b.add_argument("--vs", choices=["onnxruntime"], help="also measure onnxruntime, alternated with jitort")
    b.add_argument("--runs", type=_positive(1), default=50, help="timed warm calls per process (default 50)")
    b.add_argument("--warmup", type=_positive(0), default=5,
                   help="untimed calls after the first call, per process (default 5)")
    b.add_argument("--rounds", type=_positive(1), default=3,
                   help="rounds of one process per runtime; the order alternates (default 3)")
    b.add_argument("--threads", type=_positive(1), default=None,
                   help="threads for each runtime (default: the usable cores)")
    b.add_argument("--backend", choices=["cpu", "reference"], default=None, help="jitort backend (default cpu)")
    b.add_argument("--cache-dir", metavar="DIR", help="jitort's cache dir (default: JITORT_CACHE_DIR or the user's)")
    b.add_argument("--json", metavar="OUT.json", help="write every round's numbers and the summary")
    b.add_argument("--plot", metavar="OUT.png", help="write a bar chart (needs matplotlib)")
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    b.set_defaults(fn=cmd_bench)


def make_feeds(model_path: str, shapes: dict, seed: int) -> dict:
    """Random feeds for the model's required inputs; a --shape naming no input is an error."""
    from .cli import random_inputs
    from .ir.onnx_import import import_model

    m = import_model(model_path)
    names = [v.name for v in m.graph.required_inputs()]
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise JitortError(f"--shape names unknown input(s) {', '.join(map(repr, unknown))}; "
                          f"the model's inputs: {', '.join(names) or '(none)'}")
    return random_inputs(m, shapes, seed)


def cmd_bench(args) -> int:
    from . import bench
    from .inspect import load_shapes_file

    if args.example:
        from .examples import example_path

        args.model = str(example_path(args.example))
    if args.model is None:
        raise JitortError("give a MODEL path or --example NAME")
    if not os.path.isfile(args.model):
        raise JitortError(f"no such model file: {args.model}")
    if args.vs == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise JitortError("--vs onnxruntime needs onnxruntime: pip install 'jitort[bench]' "
                              "(or pip install onnxruntime)") from None
    if args.plot:
        bench.check_matplotlib()
    shapes = load_shapes_file(args.shapes_from) if args.shapes_from else {}
    shapes.update(dict(args.shape or []))
    feeds = make_feeds(args.model, shapes, args.seed)
    doc = bench.run_bench(args.model, feeds, vs=args.vs, runs=args.runs, warmup=args.warmup, rounds=args.rounds,
                          threads=args.threads, backend=args.backend, cache_dir=args.cache_dir,
                          progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(doc))
    if args.json:
        bench.write_json(args.json, doc)
        print(f"wrote {args.json}")
    if args.plot:
        bench.plot(doc, args.plot)
        print(f"wrote {args.plot}")
    return 0


def format_table(doc: dict) -> str:
    """One row per runtime (medians over counted rounds), then the ratios and the method."""
    s, st = doc["summary"], doc["settings"]
    f = lambda x, d=2: "-" if x is None else f"{x:,.{d}f}"  # noqa: E731
    rows = [("runtime", "create ms", "first call ms", "p50 ms", "p90 ms", "calls/s", "items/s")]
    for rt in st["runtimes"]:
        r = s[rt]
        rows.append((rt, f(r["create_ms"], 1), f(r["first_call_ms"], 1), f(r["p50_ms"], 3), f(r["p90_ms"], 3),
                     f(r["calls_per_s"], 1), f(r["items_per_s"], 1)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"model: {st['model']}",
             "inputs: " + ", ".join(f"{k} {v}" for k, v in st["inputs"].items()), ""]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    if "ratio_p50" in s:
        lines.append(f"jitort/onnxruntime: p50 {_ratio(s['ratio_p50'])}, "
                     f"create + first call {_ratio(s['ratio_create_first'])}  (below 1: jitort is faster)")
    skipped = s["rounds"] - s["counted_rounds"]
    lines.append(f"medians over {s['counted_rounds']} counted round(s) of one fresh process per runtime"
                 f"{f' ({skipped} not counted: outputs differ)' if skipped else ''}; {st['runs']} timed calls "
                 f"after the first and {st['warmup']} warm-up calls; {st['threads']} thread(s); "
                 f"items/s uses batch {st['batch']} (first dim of the first input).")
    return "\n".join(lines)


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}x"
