"""``jitort warmup MODEL --shape NAME=DIMS ... [--shapes-from FILE.json] [--jobs N]``: compile
signatures into the disk cache ahead of time (see jitort/warmups.py)."""

from __future__ import annotations

import json
import sys

from .errors import JitortError


def cmd_warmup(args) -> int:
    from .warmups import load_signatures_file, warmup

    if args.example:
        from .examples import example_path

        args.model = str(example_path(args.example))
    if args.model is None:
        raise JitortError("give a MODEL path or --example NAME")
    sigs = load_signatures_file(args.shapes_from) if args.shapes_from else []
    if args.shape:
        sigs.append(dict(args.shape))
    if not sigs:
        sigs = [{}]  # the declared shapes, symbolic dims as 1
    options = {k: v for k, v in (("cache_dir", args.cache_dir), ("num_threads", args.threads),
                                 ("opt_level", args.level), ("device", args.device)) if v is not None}
    results = warmup(args.model, sigs, jobs=args.jobs, progress=not args.quiet and sys.stderr.isatty(), **options)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=1))
    else:
        for r in results:
            print(f"{r.status:<9} {r.seconds:7.2f} s  {r.key[:12]:<12}  {r.signature}"
                  + (f"  ({r.numba_compiles} Numba compiles)" if r.numba_compiles else ""))
    failed = [r for r in results if r.status.startswith("failed")]
    return 1 if failed else 0


def register(sub) -> None:
    from .cli import parse_shape

    w = sub.add_parser("warmup", help="compile signatures of a model into the disk cache ahead of time")
    w.add_argument("model", nargs="?", help="path to an .onnx file")
    w.add_argument("--example", help="a bundled example instead of a path: resnet50 or mlp")
    w.add_argument("--shape", action="append", type=parse_shape, metavar="NAME=D1xD2...",
                   help="shape of an input (repeatable; together they form one signature)")
    w.add_argument("--shapes-from", metavar="FILE.json",
                   help='signatures from JSON: {"name": "1x128"} or a list of such objects')
    w.add_argument("--device", default=None, choices=("cpu", "cuda"), help="cpu (default); cuda is not built yet")
    w.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    w.add_argument("--threads", type=int, default=None, help="num_threads the plans are built for")
    w.add_argument("--level", type=int, default=None, help="optimization level (default: the backend's)")
    w.add_argument("--cache-dir", default=None)
    w.add_argument("--json", action="store_true")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.set_defaults(fn=cmd_warmup)

