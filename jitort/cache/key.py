"""The cache key of a compiled variant: every input that can change the generated code, kept as
named parts so ``jitort cache explain`` can say which one differs.

    key = make_key(model=digest, signature=sig, backend="cpu", options={...}, tuning=fp)
    key.digest                     # sha256 of the canonical JSON of the parts (the entry's name)
    key.parts["signature"]         # 'input_ids:int64[1,128] attention_mask:int64[1,128]'
    explain(key.parts, other)      # [(part, this value, that value), ...] for the parts that differ

Parts: ``format`` (the entry layout), ``model`` (sha256 of the model file and its external data),
``signature`` (names, dtypes, shapes), ``backend``, ``device`` (CPU name and LLVM feature
string), ``options`` (opt level, threads, seed, ...), ``tuning`` (fingerprint of this device's
tuning database), ``jitort`` (version and a hash of its source and templates), ``versions``
(python, numpy, numba, llvmlite, onnx, and ml_dtypes / triton / torch when installed; read from
the name of each package's .dist-info directory, never imported: see ``installed_version``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import platform
import re
import time
from dataclasses import dataclass

from .device import cpu_device

#: Bump when the entry layout or what it stores changes.
FORMAT = "jitort-variant-1"
PART_ORDER = ("format", "model", "signature", "backend", "device", "options", "tuning", "jitort", "versions")


@dataclass(frozen=True)
class CacheKey:
    parts: dict

    @functools.cached_property
    def digest(self) -> str:
        return digest_of(self.parts)

    def __str__(self) -> str:
        return self.digest


def digest_of(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def make_key(*, model: str, signature, backend: str, options: dict, tuning: str = "") -> CacheKey:
    parts = {
        "format": FORMAT,
        "model": model,
        "signature": signature_text(signature),
        "backend": backend,
        "device": device_text(),
        "options": json.dumps(options, sort_keys=True, default=str),
        "tuning": tuning or "none",
        "jitort": jitort_text(),
        "versions": versions_text(),
    }
    return CacheKey(parts)


def signature_text(signature) -> str:
    """'name:dtype[d0,d1] ...' in graph-input order (a Signature or its entries)."""
    entries = getattr(signature, "entries", signature)
    out = []
    for name, t in entries:
        dtype = getattr(t, "dtype", None)
        shape = getattr(t, "shape", None)
        if dtype is not None and shape is not None:
            out.append(f"{name}:{dtype}[{','.join(str(d) for d in shape)}]")
        else:
            out.append(f"{name}:{t}")
    return " ".join(out)


def explain(mine: dict, theirs: dict) -> list[tuple[str, str, str]]:
    """The parts whose values differ (missing parts show as '<absent>')."""
    names = [p for p in PART_ORDER if p in mine or p in theirs]
    names += sorted((set(mine) | set(theirs)) - set(names))
    return [(p, str(mine.get(p, "<absent>")), str(theirs.get(p, "<absent>")))
            for p in names if mine.get(p) != theirs.get(p)]


@functools.lru_cache(maxsize=None)
def device_text() -> str:
    d = cpu_device()
    feats = hashlib.sha256(d["features"].encode()).hexdigest()[:16]
    return f"{d['kind']} {d['arch']} {d['cpu']} features:{feats}"


@functools.lru_cache(maxsize=None)
def jitort_text() -> str:
    from .. import __version__

    return f"{__version__} source:{source_hash()[:16]}"


@functools.lru_cache(maxsize=None)
def source_hash() -> str:
    """sha256 over jitort's Python sources and templates (path and bytes of each, sorted): an edit
    anywhere in the package, a kernel generator or a template gives a new key. Remembered in the
    package's ``__pycache__`` (see :func:`tree_hash`), so a warm start stats the files instead of
    reading them (0.6 ms instead of 4.4 ms here for 136 files)."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    templates = os.path.join(os.path.dirname(pkg), "templates")
    roots = [pkg] + ([templates] if os.path.isdir(templates) else [])
    return tree_hash(roots, memo=os.path.join(pkg, "__pycache__", "jitort-source-hash.json"))


#: A file or directory changed this recently may change again within its timestamps' resolution
#: without its stats showing it (git's "racy" entries): it is hashed, never remembered.
_SETTLED_S = 2.0


def tree_hash(roots: list[str], memo: str | None = None) -> str:
    """sha256 of the .py / .j2 / .ll files under ``roots`` (relative path and bytes of each, in
    sorted order; __pycache__ skipped).

    With ``memo`` (a file path), the digest is written there with the stat signature (size, mtime,
    ctime, inode) of every file it read and every directory it listed, and a later call whose
    stats all still match returns it without reading anything. An edit moves the file's ctime
    (even when its mtime is put back), an added, removed or renamed file its directory's mtime;
    then, or when the memo is missing, unreadable or for other roots, everything is hashed again.
    Nothing is remembered while a file or directory is younger than ``_SETTLED_S`` seconds, nor
    when the memo's directory cannot be written."""
    roots = [os.path.abspath(r) for r in roots]
    if memo is not None:
        known = _remembered(memo, roots)
        if known is not None:
            return known
    h, stats = hashlib.sha256(), {}
    for root in roots:
        files = []
        for d, dirs, names in os.walk(root):
            stats[d] = _stat_sig(os.stat(d))  # a change since the listing made it young: not kept
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            files += [os.path.join(d, n) for n in names if n.endswith((".py", ".j2", ".ll"))]
        for f in sorted(files):
            h.update(os.path.relpath(f, root).encode() + b"\0")
            with open(f, "rb") as fh:
                stats[f] = _stat_sig(os.fstat(fh.fileno()))
                h.update(fh.read())
            h.update(b"\0")
    digest = h.hexdigest()
    if memo is not None:
        _remember(memo, roots, digest, stats)
    return digest


def _stat_sig(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _remembered(memo: str, roots: list[str]) -> str | None:
    try:
        with open(memo) as f:
            rec = json.load(f)
        if rec.get("format") != 1 or rec.get("roots") != roots or not isinstance(rec.get("stats"), dict):
            return None
        for path, sig in rec["stats"].items():
            if _stat_sig(os.stat(path)) != sig:
                return None
        digest = rec["digest"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def _remember(memo: str, roots: list[str], digest: str, stats: dict) -> None:
    young = time.time_ns() - int(_SETTLED_S * 1e9)
    if any(max(sig[1], sig[2]) > young for sig in stats.values()):
        return
    from .fs import atomic_write

    try:
        os.makedirs(os.path.dirname(memo), exist_ok=True)  # a __pycache__: the usual mode, not 0700
        atomic_write(memo, json.dumps({"format": 1, "roots": roots, "digest": digest, "stats": stats}))
    except OSError:
        pass


@functools.lru_cache(maxsize=None)
def versions_text() -> str:
    out = [f"python={platform.python_version()}"]
    for dist in ("numpy", "numba", "llvmlite", "onnx", "ml_dtypes", "triton", "torch"):
        v = installed_version(dist)
        if v is not None:
            out.append(f"{dist}={v}")
        elif dist in ("numpy", "numba", "llvmlite", "onnx"):
            out.append(f"{dist}=?")
    return " ".join(out)


def installed_version(dist: str) -> str | None:
    """The installed version of the distribution whose top-level package is ``dist``, None when
    that package cannot be found. Read from the one ``<dist>-<version>.dist-info`` directory next
    to the package, which is what importlib.metadata reads too, without its import and its scan of
    every sys.path entry (15 ms of a warm start); importlib.metadata when there is not exactly one
    such directory (an egg, a source checkout)."""
    try:
        spec = importlib.util.find_spec(dist)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    where = list(spec.submodule_search_locations or [])
    site = os.path.dirname(where[0] if where else (spec.origin or ""))
    want = _normalized(dist)
    try:
        found = [e[:-len(".dist-info")].rpartition("-") for e in os.listdir(site) if e.endswith(".dist-info")]
    except OSError:
        found = []
    versions = [v for name, _, v in found if name and _normalized(name) == want]
    if len(versions) == 1:
        return versions[0]
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()
