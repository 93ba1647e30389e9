"""The on-disk store of compiled variants.

Layout under the cache root (``config.cache_root``)::

    entries/<k[:2]>/<key>/meta.json      parts of the key, files with sizes and sha256, what the
                                         entry holds (readable); a checksum of itself
                         graph.pkl       the optimized graph (pickle; big arrays are files below)
                         arrays/<i>.bin  raw bytes of big constants and derived arrays (packed
                                         weights), memory-mapped copy-on-write when loaded
                         verified.json   stat signatures of files whose checksums were verified
                         used            its mtime is the last use (LRU pruning)
    locks/<key>.lock                     one compile per key across processes
    kernels/                             generated kernel modules + Numba's cache of them
    models/                              path -> model digest index, model interface records
    tuning/<device>.json                 the tuning database

Writes are atomic: an entry is written into a temporary directory next to its final place and
renamed into it whole. A reader verifies every file's sha256 against meta.json the first time it
sees the file (and again whenever its size, mtime, ctime or inode change); an entry that fails
any check is deleted with a warning and rebuilt, never used. A cache dir other users can write
to is refused (fs.ensure_private_dir).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .fs import acquire_lock, atomic_write, release_lock, tree_size
from .key import FORMAT, CacheKey, digest_of

#: Arrays at least this big are stored as their own file and memory-mapped on load.
BIG_ARRAY = 64 * 1024
#: Default size cap of the whole cache (bytes); JITORT_CACHE_MAX_SIZE overrides (e.g. "20G").
DEFAULT_MAX_SIZE = 20 << 30
_CHUNK = 8 << 20


class CorruptEntry(Exception):
    """An entry failed an integrity check (the message says which)."""


@dataclass
class Entry:
    """What a loaded entry gives back: the pickled object and the metadata."""

    key: str
    obj: object
    meta: dict
    path: str


@dataclass
class Stats:
    """Counters of this process (tests assert on them; ``jitort`` never reads them)."""

    loaded: int = 0
    saved: int = 0
    corrupt: int = 0
    waited: int = 0


STATS = Stats()


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    t = str(text).strip().upper().rstrip("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMGT" else t
    try:
        return int(float(num) * mult)
    except ValueError:
        raise ValueError(f"size must look like 500M, 2G or a byte count, got {text!r}") from None


class CacheStore:
    """Entries under ``root`` (already checked by ``config.cache_root``)."""

    def __init__(self, root: str, max_size: int | None = None):
        self.root = root
        env = os.environ.get("JITORT_CACHE_MAX_SIZE")
        self.max_size = max_size if max_size is not None else (parse_size(env) if env else DEFAULT_MAX_SIZE)

    # -- paths ---------------------------------------------------------------------------------
    def entry_dir(self, key: str) -> str:
        return os.path.join(self.root, "entries", key[:2], key)

    def lock_path(self, key: str) -> str:
        return os.path.join(self.root, "locks", key + ".lock")

    def acquire(self, key: str, timeout: float | None = None) -> int:
        """The per-key lock (a descriptor for :func:`release_lock`); waits at most ``timeout``
        seconds (default JITORT_LOCK_TIMEOUT or 900), then raises TimeoutError: a stuck compiler
        elsewhere must not hang this process."""
        if timeout is None:
            timeout = float(os.environ.get("JITORT_LOCK_TIMEOUT", "900"))
        t0 = time.monotonic()
        fd = acquire_lock(self.lock_path(key), timeout)
        if time.monotonic() - t0 > 0.05:
            STATS.waited += 1
        return fd

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float | None = None):
        fd = self.acquire(key, timeout)
        try:
            yield
        finally:
            release_lock(fd)

    # -- reading ---------------------------------------------------------------------------------
    def load(self, key: CacheKey) -> Entry | None:
        """The entry of ``key``; None when absent. A corrupt or stale entry is deleted with a
        warning and None is returned (the caller rebuilds it)."""
        d = self.entry_dir(key.digest)
        if not os.path.isdir(d):
            return None
        try:
            meta = read_meta(d)
            if meta["parts"] != key.parts:
                diff = [p for p in key.parts if meta["parts"].get(p) != key.parts[p]]
                raise CorruptEntry(f"its metadata describes another variant (parts {diff} differ)")
            verify_files(d, meta)
            obj = _unpickle(d, meta)
        except CorruptEntry as exc:
            self._discard(d, key.digest, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - unreadable pickle, bad array file...
            self._discard(d, key.digest, f"{type(exc).__name__}: {exc}")
            return None
        with contextlib.suppress(OSError):
            os.utime(os.path.join(d, "used"))
        STATS.loaded += 1
        return Entry(key.digest, obj, meta, d)

    def _discard(self, d: str, key: str, why: str) -> None:
        STATS.corrupt += 1
        warnings.warn(f"jitort cache: entry {key[:16]} in {self.root} is unusable ({why}); "
                      f"it is deleted and will be rebuilt", RuntimeWarning, stacklevel=4)
        remove_tree(d)

    # -- writing ---------------------------------------------------------------------------------
    def save(self, key: CacheKey, obj, info: dict | None = None) -> str:
        """Write ``obj`` (pickled; big numpy arrays as separate files) as the entry of ``key``."""
        final = self.entry_dir(key.digest)
        parent = os.path.dirname(final)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        tmp = os.path.join(parent, f".{key.digest}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        os.mkdir(tmp, 0o700)
        os.mkdir(os.path.join(tmp, "arrays"), 0o700)
        try:
            files = _pickle_into(tmp, obj)
            meta = {"format": FORMAT, "key": key.digest, "parts": key.parts, "created": time.time(),
                    "info": info or {}, "files": files}
            meta["checksum"] = _meta_checksum(meta)
            atomic_write(os.path.join(tmp, "meta.json"), json.dumps(meta, indent=1, sort_keys=True))
            open(os.path.join(tmp, "used"), "wb").close()
            if os.path.isdir(final):  # a stale or corrupt one (load() already said why)
                remove_tree(final)
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        _record_verified(final, meta)  # we just hashed what we wrote
        STATS.saved += 1
        if _due_for_prune(self.root, sum(f["size"] for f in files.values()), self.max_size):
            self.prune(keep={key.digest})
        return final

    # -- listing and pruning ----------------------------------------------------------------------
    def entries(self) -> list[dict]:
        """Every entry: key, path, size, last use, and its meta (None when unreadable)."""
        out = []
        base = os.path.join(self.root, "entries")
        if not os.path.isdir(base):
            return out
        for shard in sorted(os.listdir(base)):
            sd = os.path.join(base, shard)
            if not os.path.isdir(sd):
                continue
            for name in sorted(os.listdir(sd)):
                d = os.path.join(sd, name)
                if name.startswith(".") or not os.path.isdir(d):
                    continue
                try:
                    meta = read_meta(d)
                except Exception:  # noqa: BLE001
                    meta = None
                try:
                    used = os.stat(os.path.join(d, "used")).st_mtime
                except OSError:
                    used = 0.0
                out.append({"key": name, "path": d, "size": tree_size(d), "used": used, "meta": meta})
        return out

    def find(self, prefix: str) -> list[dict]:
        return [e for e in self.entries() if e["key"].startswith(prefix)]

    def prune(self, max_size: int | None = None, keep: set | None = None) -> list[str]:
        """Delete least recently used entries until the cache (entries + kernels) fits in
        ``max_size`` bytes; returns the deleted keys. Leftover temp dirs of dead writers go too."""
        cap = self.max_size if max_size is None else max_size
        entries = self.entries()
        total = sum(e["size"] for e in entries) + tree_size(os.path.join(self.root, "kernels"))
        removed = []
        for e in sorted(entries, key=lambda e: e["used"]):
            if total <= cap:
                break
            if keep and e["key"] in keep:
                continue
            try:
                with self.lock(e["key"], timeout=0):  # one being rebuilt right now is skipped
                    remove_tree(e["path"])
            except TimeoutError:
                continue
            total -= e["size"]
            removed.append(e["key"])
        self._sweep_temp()
        return removed

    def _sweep_temp(self, older_than: float = 3600.0) -> None:
        base = os.path.join(self.root, "entries")
        now = time.time()
        for shard in os.listdir(base) if os.path.isdir(base) else ():
            sd = os.path.join(base, shard)
            for name in os.listdir(sd) if os.path.isdir(sd) else ():
                p = os.path.join(sd, name)
                if name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        if now - os.stat(p).st_mtime > older_than:
                            remove_tree(p)

    def clear(self) -> int:
        """Delete every entry and generated kernel (the tuning database stays); returns how many
        entries were deleted."""
        n = len(self.entries())
        for sub in ("entries", "kernels", "models", "locks"):
            remove_tree(os.path.join(self.root, sub))
        return n


# The size cap is checked (a walk over every entry) at a process's first save into a cache root,
# then after every max_size/64 bytes it writes there: the cache may overshoot its cap by that
# much between checks. Per root and process, not per store object: sessions come and go.
_WRITTEN: dict[str, list] = {}
_WRITTEN_LOCK = threading.Lock()


def _due_for_prune(root: str, nbytes: int, cap: int) -> bool:
    with _WRITTEN_LOCK:
        state = _WRITTEN.setdefault(root, [0, 0])  # [bytes written, next check at]
        state[0] += nbytes
        if state[0] < state[1]:
            return False
        state[1] = state[0] + max(cap // 64, 1)
        return True


# -- entry files ---------------------------------------------------------------------------------
def read_meta(d: str) -> dict:
    path = os.path.join(d, "meta.json")
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read())
    except FileNotFoundError:
        raise CorruptEntry("meta.json is missing") from None
    except ValueError as exc:
        raise CorruptEntry(f"meta.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("checksum") != _meta_checksum(meta):
        raise CorruptEntry("meta.json fails its checksum (edited or damaged)")
    if meta.get("format") != FORMAT:
        raise CorruptEntry(f"format {meta.get('format')!r}, this jitort writes {FORMAT!r}")
    if meta.get("key") != os.path.basename(d) or digest_of(meta.get("parts", {})) != meta.get("key"):
        raise CorruptEntry("meta.json's key does not match its parts or its directory")
    return meta


def _meta_checksum(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _stat_sig(path: str) -> list:
    st = os.lstat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def verify_files(d: str, meta: dict) -> None:
    """Every file meta.json lists exists, is a regular file inside the entry, has its size and
    (unless unchanged since it was last verified) its sha256."""
    vpath = os.path.join(d, "verified.json")
    try:
        with open(vpath) as f:
            verified = json.load(f)
    except (OSError, ValueError):
        verified = {}
    changed = False
    for rel, want in meta["files"].items():
        path = safe_join(d, rel)
        try:
            sig = _stat_sig(path)
        except FileNotFoundError:
            raise CorruptEntry(f"{rel} is missing") from None
        if os.path.islink(path) or not os.path.isfile(path):
            raise CorruptEntry(f"{rel} is not a regular file")
        if sig[0] != want["size"]:
            raise CorruptEntry(f"{rel} has {sig[0]} bytes, expected {want['size']} (truncated?)")
        if verified.get(rel) == sig:
            continue
        if file_sha256(path) != want["sha256"]:
            raise CorruptEntry(f"{rel} fails its sha256 check (altered or damaged)")
        verified[rel] = sig
        changed = True
    if changed:
        with contextlib.suppress(OSError):
            atomic_write(vpath, json.dumps(verified))


def _record_verified(d: str, meta: dict) -> None:
    sigs = {rel: _stat_sig(os.path.join(d, rel)) for rel in meta["files"]}
    with contextlib.suppress(OSError):
        atomic_write(os.path.join(d, "verified.json"), json.dumps(sigs))


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def safe_join(root: str, rel: str) -> str:
    """``root/rel``, refusing absolute paths and any that leave ``root``."""
    if os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise CorruptEntry(f"path {rel!r} is absolute")
    path = os.path.normpath(os.path.join(root, rel))
    if os.path.commonpath([path, os.path.normpath(root)]) != os.path.normpath(root):
        raise CorruptEntry(f"path {rel!r} leaves the entry")
    return path


def remove_tree(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


# -- pickling with big arrays as files ------------------------------------------------------------
class _Pickler(pickle.Pickler):
    def __init__(self, f, d: str, files: dict):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.d, self.files, self.ids = d, files, {}

    def persistent_id(self, obj):
        if type(obj) is not np.ndarray and not isinstance(obj, np.memmap):
            return None
        if obj.nbytes < BIG_ARRAY or obj.dtype.hasobject:
            return None
        known = self.ids.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1]
        rel = f"arrays/{len(self.ids)}.bin"
        data = np.ascontiguousarray(obj)
        h = hashlib.sha256()
        with open(os.path.join(self.d, rel), "wb") as f:
            mv = memoryview(data.reshape(-1).view(np.uint8))
            for i in range(0, len(mv), _CHUNK):
                h.update(mv[i:i + _CHUNK])
                f.write(mv[i:i + _CHUNK])
        self.files[rel] = {"size": data.nbytes, "sha256": h.hexdigest()}
        pid = ("array", rel, data.dtype, data.shape)
        self.ids[id(obj)] = (obj, pid)
        return pid


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, d: str, files: dict):
        super().__init__(f)
        self.d, self.files, self.memo_arrays = d, files, {}

    def persistent_load(self, pid):
        kind, rel, dtype, shape = pid
        got = self.memo_arrays.get(rel)
        if got is None:
            got = self.memo_arrays[rel] = self._array(kind, rel, dtype, shape)
        return got

    def _array(self, kind, rel, dtype, shape):
        if kind != "array" or rel not in self.files:
            raise CorruptEntry(f"graph.pkl refers to {rel!r}, which meta.json does not list")
        path = safe_join(self.d, rel)
        if int(np.prod(shape)) * np.dtype(dtype).itemsize != self.files[rel]["size"]:
            raise CorruptEntry(f"{rel}: size does not match its shape {shape} and dtype {dtype}")
        if self.files[rel]["size"] == 0:
            return np.zeros(shape, dtype)
        # copy-on-write: writable for kernels that want it, never written back
        return np.memmap(path, dtype=dtype, mode="c", shape=tuple(shape)).view(np.ndarray)


def _pickle_into(d: str, obj) -> dict:
    files: dict = {}
    path = os.path.join(d, "graph.pkl")
    with open(path, "wb") as f:
        _Pickler(f, d, files).dump(obj)
    files["graph.pkl"] = {"size": os.path.getsize(path), "sha256": file_sha256(path)}
    return files


def _unpickle(d: str, meta: dict):
    with open(os.path.join(d, "graph.pkl"), "rb") as f:
        return _Unpickler(f, d, meta["files"]).load()
