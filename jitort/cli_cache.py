"""``jitort cache list | info KEY | explain KEY [KEY2] | clear | prune --max-size SIZE |
export FILE | import FILE``: look at and manage the disk cache of compiled variants.

KEY may be any unique prefix of an entry's key (``jitort cache list`` shows 12 characters).
``explain KEY`` prints every part of the key; ``explain KEY KEY2`` prints the parts that differ
(why a model compiled again); ``explain KEY --model M --shape ...`` compares KEY with the key a
load of M with those shapes would use now.
"""

from __future__ import annotations

import datetime
import json
import os

from .errors import JitortError


def _store(args):
    from . import config
    from .cache.store import CacheStore

    return CacheStore(config.cache_root(args.cache_dir))


def _one(store, prefix: str) -> dict:
    found = store.find(prefix)
    if not found:
        raise JitortError(f"no cache entry with a key starting {prefix!r} in {store.root} "
                          f"(`jitort cache list` shows them)")
    if len(found) > 1:
        raise JitortError(f"{len(found)} entries start with {prefix!r}: give more characters "
                          f"({', '.join(e['key'][:16] for e in found[:5])})")
    return found[0]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def cmd_list(args) -> int:
    store = _store(args)
    entries = store.entries()
    if args.json:
        print(json.dumps([{k: e[k] for k in ("key", "size", "used")} | {
            "parts": (e["meta"] or {}).get("parts"), "info": (e["meta"] or {}).get("info")} for e in entries],
            indent=1))
        return 0
    print(f"cache: {store.root}  ({len(entries)} entries)")
    if entries:
        print(f"{'key':<13} {'size':>10}  {'last used':<19}  signature / model")
    for e in sorted(entries, key=lambda e: -e["used"]):
        meta = e["meta"]
        if meta is None:
            desc = "(unreadable metadata: rebuilt on next use)"
        else:
            info = meta.get("info", {})
            desc = f"{meta['parts'].get('signature', '')}  {os.path.basename(str(info.get('model', '')))}"
        print(f"{e['key'][:12]:<13} {_size(e['size']):>10}  {_when(e['used']):<19}  {desc}")
    return 0


def cmd_info(args) -> int:
    from .cache.store import CorruptEntry, read_meta, verify_files

    e = _one(_store(args), args.key)
    try:
        meta = read_meta(e["path"])
        verify_files(e["path"], meta)
        status = "ok (checksums verified)"
    except CorruptEntry as exc:
        meta, status = e["meta"], f"CORRUPT: {exc} (it is rebuilt on next use)"
    if args.json:
        print(json.dumps({"key": e["key"], "path": e["path"], "size": e["size"], "status": status,
                          "meta": meta}, indent=1))
        return 0
    from .cache.key import PART_ORDER

    rows = [("key", e["key"]), ("path", e["path"]), ("size", _size(e["size"])), ("status", status),
            ("used", _when(e["used"]))]
    if meta:
        rows.append(("created", _when(meta.get("created", 0))))
        rows += [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in meta.get("info", {}).items()]
        rows.append(("files", f"{len(meta['files'])} ({_size(sum(f['size'] for f in meta['files'].values()))})"))
    for k, v in rows:
        print(f"{k + ':':<16}{v}")
    if meta:
        print("key parts:")
        parts = meta["parts"]
        for k in [p for p in PART_ORDER if p in parts] + sorted(set(parts) - set(PART_ORDER)):
            print(f"  {k:<14}{parts[k]}")
    return 0


def cmd_explain(args) -> int:
    from .cache.key import PART_ORDER, explain

    store = _store(args)
    a = _one(store, args.key)
    if a["meta"] is None:
        raise JitortError(f"entry {a['key'][:16]} has unreadable metadata")
    mine = a["meta"]["parts"]
    if args.other is None and not args.model:
        print(f"key {a['key']} is the sha256 of these parts:")
        for p in PART_ORDER:
            print(f"  {p:<10} {mine.get(p)}")
        return 0
    if args.other is not None:
        b = _one(store, args.other)
        theirs, label = b["meta"]["parts"], b["key"][:12]
    else:
        theirs, label = _current_parts(args), "now"
    diff = explain(mine, theirs)
    if not diff:
        print(f"{a['key'][:12]} and {label}: same key")
        return 0
    print(f"{a['key'][:12]} and {label} differ in {len(diff)} part(s): {', '.join(d[0] for d in diff)}")
    for part, x, y in diff:
        print(f"  {part}:\n    {a['key'][:12]}: {x}\n    {label + ':':<13} {y}")
    return 0


def _current_parts(args) -> dict:
    """The key a load of --model with --shape now would use (compiles nothing)."""
    from . import load
    from .cli import random_inputs
    from .inputs import to_value
    from .ir.types import type_of
    from .session import Signature

    m = load(args.model, cache_dir=args.cache_dir, num_threads=args.threads, opt_level=args.level)
    if m._cache is None:
        raise JitortError("this backend does not use the disk cache")
    feeds = random_inputs(m, dict(args.shape or []))
    sig = Signature(tuple((n, type_of(to_value(feeds[n]))) for n in m.input_names if n in feeds))
    return m._cache.key(m.model_digest, sig, m._tuning_fingerprint()).parts


def cmd_clear(args) -> int:
    store = _store(args)
    n = store.clear()
    print(f"cleared {n} entries and the generated kernels from {store.root} (the tuning database stays)")
    return 0


def cmd_prune(args) -> int:
    from .cache.store import parse_size

    store = _store(args)
    try:
        cap = parse_size(args.max_size)
    except ValueError as exc:
        raise JitortError(str(exc)) from None
    removed = store.prune(max_size=cap)
    print(f"removed {len(removed)} least recently used entr{'y' if len(removed) == 1 else 'ies'}; "
          f"{len(store.entries())} remain in {store.root}")
    return 0


def cmd_export(args) -> int:
    from .cache.archive import export_cache

    store = _store(args)
    n = export_cache(store.root, args.file)
    print(f"exported {n} files from {store.root} to {args.file}")
    return 0


def cmd_import(args) -> int:
    from .cache.archive import import_cache

    store = _store(args)
    r = import_cache(store.root, args.file)
    print(f"imported {r['new_entries']} entries ({r['entries']} in the archive, all validated; "
          f"{r['files']} other new files) into {store.root}")
    return 0


def register(sub) -> None:
    from .cli import parse_shape

    c = sub.add_parser("cache", help="list, explain, prune, export or import the disk cache of compiled variants")
    c.add_argument("--cache-dir", default=None, help="the cache directory (default: JITORT_CACHE_DIR or ~/.cache/jitort)")
    cs = c.add_subparsers(dest="cache_command", required=True)
    p = cs.add_parser("list", help="entries: key, size, last use, signature")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)
    p = cs.add_parser("info", help="one entry: key parts, files, integrity")
    p.add_argument("key", help="a unique key prefix")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)
    p = cs.add_parser("explain", help="the parts of a key, or the parts two keys differ in")
    p.add_argument("key", help="a unique key prefix")
    p.add_argument("other", nargs="?", help="another key prefix to compare with")
    p.add_argument("--model", help="compare with the key a load of this model would use now")
    p.add_argument("--shape", action="append", type=parse_shape, metavar="NAME=D1xD2...")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--level", type=int, default=None)
    p.set_defaults(fn=cmd_explain)
    p = cs.add_parser("clear", help="delete every entry and generated kernel")
    p.set_defaults(fn=cmd_clear)
    p = cs.add_parser("prune", help="delete least recently used entries down to a size")
    p.add_argument("--max-size", required=True, metavar="SIZE", help="e.g. 500M, 2G")
    p.set_defaults(fn=cmd_prune)
    p = cs.add_parser("export", help="write the cache to one .tar.gz archive")
    p.add_argument("file")
    p.set_defaults(fn=cmd_export)
    p = cs.add_parser("import", help="add a cache archive's entries (validated; paths that escape are refused)")
    p.add_argument("file")
    p.set_defaults(fn=cmd_import)

