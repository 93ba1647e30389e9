"""``jitort tune MODEL --shape NAME=1x128 ...``: tune the GEMM and conv kernels of a model's
Signature on this device and store the winners in the cache's tuning database (jitort/tune.py);
later compiles of any model with the same kernel shapes use them. Prints, per kernel, the
default and the chosen config, their times and the speedup (``--json``: the same as JSON)."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_tune(args) -> int:
    from . import config
    from .inspect import load_shapes_file
    from .tune import MAX_CANDIDATES, format_results, tune_model
    from .tuning_db import db_path

    shapes = load_shapes_file(args.shapes_from) if args.shapes_from else {}
    shapes.update(dict(args.shape or []))
    progress = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    results = tune_model(args.model, shapes, cache_dir=args.cache_dir, threads=args.threads,
                         budget_s=args.budget_s, progress=progress, force=args.force,
                         max_candidates=args.max_candidates or MAX_CANDIDATES)
    path = db_path(config.cache_root(args.cache_dir))
    if args.json:
        print(json.dumps({"database": path, "kernels": [r.to_json() for r in results]}, indent=1))
    else:
        print(format_results(results, path))
    return 0


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            v = 0
        if v <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return v
    return parse


def register(sub) -> None:
    from .cli import parse_shape

    t = sub.add_parser("tune", help="tune the GEMM/conv kernels of a model on this device "
                                    "(winners go to the cache's tuning database)")
    t.add_argument("model", help="path to an .onnx file")
    t.add_argument("--shape", action="append", type=parse_shape, metavar="NAME=D1xD2...",
                   help="shape of an input (repeatable); symbolic dims not given default to 1")
    t.add_argument("--shapes-from", metavar="FILE.json",
                   help='input shapes from JSON: {"name": [1, 128]} or {"name": "1x128"}')
    t.add_argument("--threads", type=_positive(int), default=None,
                   help="threads the kernels are tuned for (default: the cores available)")
    t.add_argument("--cache-dir", default=None, help="cache root holding the tuning database")
    t.add_argument("--budget-s", type=_positive(float), default=None,
                   help="stop tuning new kernels after this many seconds (largest kernels first)")
    t.add_argument("--max-candidates", type=_positive(int), default=None,
                   help="candidates per kernel, the default included (default 12)")
    t.add_argument("--force", action="store_true", help="re-tune kernels already in the database")
    t.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    t.add_argument("--json", action="store_true", help="print the results as JSON")
    t.set_defaults(fn=cmd_tune)
