"""The tuning database: the winning tile config per kernel signature, one JSON file per device.

    <cache root>/tuning/<device_tag()>.json
    {"format": 1, "device": {...cpu_device()}, "entries": {
        "gemm M=128 K=768 N=3072 threads=1 vw=16": {
            "kind": "gemm", "config": {"MR": 6, "NR": 64, "KC": 256, "MC": null},
            "default": {...}, "default_us": 5012.3, "best_us": 4710.8, "speedup": 1.064,
            "candidates": 11, "rejected": 0, "epilogue": "...", "date": "2025-..."}}}

Keys name the kernel, never the model, so a winner transfers to any model with the same kernel
shape (``gemm_key``, ``conv_key``). The epilogue (bias, activation, residual, alpha) is not in the
key: it runs once per tile on data in L1, after the K loop the tile shape decides, so it changes
what is stored but hardly which tile is best; one entry then serves every epilogue of a shape.
The device is in the file name (the CPU name and feature set hash: a winner on AVX-512 says
nothing about AVX2) and the vector width and thread count are in the key.

Writers read-modify-write under ``file_lock`` with ``atomic_write``; readers never lock (they see
the old or the new file whole). A file that does not parse is ignored with one warning (every
kernel then uses its default) and replaced by the next write. Compiles look entries up through
``lookup``: the file is read once per process per cache root and re-read when its mtime changes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings

FORMAT = 1
_CONFIG_FIELDS = ("MR", "NR", "KC", "MC")


# -- keys --------------------------------------------------------------------------------------
def gemm_key(M: int, K: int, N: int, threads: int, vw: int) -> str:
    return f"gemm M={M} K={K} N={N} threads={threads} vw={vw}"


def conv_key(x_shape, w_shape, strides, pads, dilations, threads: int, vw: int) -> str:
    """A group-1 NHWC conv (the GEMM and im2col kinds; depthwise has nothing to tune)."""
    j = lambda s, sep="x": sep.join(str(int(d)) for d in s)  # noqa: E731
    return (f"conv x={j(x_shape)} w={j(w_shape)} stride={j(strides, ',')} pads={j(pads, ',')} "
            f"dil={j(dilations, ',')} threads={threads} vw={vw}")


# -- configs as JSON ---------------------------------------------------------------------------
def config_to_json(cfg) -> dict:
    return {f: getattr(cfg, f) for f in _CONFIG_FIELDS}


def config_from_json(d):
    """A TileConfig from an entry's dict (ValueError when malformed)."""
    from .backends.cpu.gemm import TileConfig

    if not isinstance(d, dict):
        raise ValueError(f"config must be an object, got {d!r}")
    vals = {}
    for f in _CONFIG_FIELDS:
        v = d.get(f)
        if v is None and f in ("KC", "MC"):
            vals[f] = None
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            vals[f] = v
        else:
            raise ValueError(f"config field {f} must be a positive int{' or null' if f in ('KC', 'MC') else ''}, "
                             f"got {v!r}")
    return TileConfig(vals["MR"], vals["NR"], vals["KC"], vals["MC"], "tuned")


# -- the file ------------------------------------------------------------------------------------
def db_path(root: str) -> str:
    from .cache.device import device_tag

    return os.path.join(root, "tuning", f"{device_tag()}.json")


_WARNED: set = set()


def _warn_once(path: str, stamp, msg: str) -> None:
    if (path, stamp) not in _WARNED:
        _WARNED.add((path, stamp))
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _stamp(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read(path: str) -> dict:
    """The entries of the file at ``path``; {} when missing, unreadable or corrupt (warned)."""
    stamp = _stamp(path)
    if stamp is None:
        return {}
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode())
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise ValueError("not a jitort tuning database (no 'entries' object)")
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this jitort reads format {FORMAT}")
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        _warn_once(path, stamp, f"jitort: ignoring the tuning database {path} ({type(exc).__name__}: "
                                f"{exc}); kernels use their default configs until it is rewritten")
        return {}
    entries = {}
    for key, e in data["entries"].items():
        try:
            config_from_json(e.get("config") if isinstance(e, dict) else None)
        except ValueError as exc:
            _warn_once(path, (stamp, key), f"jitort: ignoring tuning entry {key!r} in {path}: {exc}")
            continue
        entries[key] = e
    return entries


class TuningDB:
    """This device's tuning database under cache root ``root`` (the directory ``cache_root``
    returns, not its ``kernels/``)."""

    def __init__(self, root: str):
        self.root = root
        self.path = db_path(root)

    def entries(self) -> dict:
        return _read(self.path)

    def get(self, key: str) -> dict | None:
        return self.entries().get(key)

    def update(self, new: dict[str, dict]) -> None:
        """Merge ``new`` (key -> entry) into the file: read-modify-write under the lock."""
        from .cache.device import cpu_device
        from .cache.fs import atomic_write, file_lock

        with file_lock(self.path + ".lock"):
            entries = _read(self.path)  # corrupt: warned and dropped, replaced below
            entries.update(new)
            data = {"format": FORMAT, "device": cpu_device(), "entries": dict(sorted(entries.items()))}
            atomic_write(self.path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def make_entry(kind: str, config, default, default_us: float, best_us: float, candidates: int,
               rejected: int, **extra) -> dict:
    return {"kind": kind, "config": config_to_json(config), "default": config_to_json(default),
            "default_us": round(default_us, 2), "best_us": round(best_us, 2),
            "speedup": round(default_us / best_us, 4) if best_us > 0 else 1.0,
            "candidates": candidates, "rejected": rejected,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **extra}


# -- lookups at compile time -------------------------------------------------------------------
_LOADED: dict[str, tuple] = {}  # db path -> (stamp, entries)


def _entries_for_root(root: str) -> dict:
    path = db_path(root)
    stamp = _stamp(path)
    hit = _LOADED.get(path)
    if hit is None or hit[0] != stamp:
        hit = _LOADED[path] = (stamp, _read(path) if stamp is not None else {})
    return hit[1]


def root_of_kernel_dir(kernel_dir: str | None) -> str | None:
    """The cache root of a backend's kernel directory (``<root>/kernels``); None otherwise."""
    if not kernel_dir:
        return None
    kernel_dir = os.path.normpath(kernel_dir)
    if os.path.basename(kernel_dir) != "kernels":
        return None
    return os.path.dirname(kernel_dir)


def lookup(kernel_dir: str | None, key: str):
    """The tuned TileConfig for ``key`` in the database of the cache that holds ``kernel_dir``
    (the lowering context's ``cache_dir``), or None (untuned: use the default)."""
    root = root_of_kernel_dir(kernel_dir)
    if root is None:
        return None
    e = _entries_for_root(root).get(key)
    return None if e is None else config_from_json(e["config"])


def tuning_fingerprint(cache_dir: str | None = None) -> str:
    """A hash of what this device's database makes compiles choose (key -> config), "" when it
    is empty or missing: part of the compiled-variant cache key, so a changed winner recompiles
    while re-tuning that confirms the same winners does not. ``cache_dir`` as given to
    ``jitort.load`` (None: the default cache root)."""
    from . import config as _config

    entries = _entries_for_root(_config.cache_root(cache_dir))
    if not entries:
        return ""
    canon = json.dumps({k: e["config"] for k, e in sorted(entries.items())}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
