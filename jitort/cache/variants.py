"""The session's view of the disk cache: model identity, interface records, compiled variants.

    vc = VariantCache.open(cache_dir, backend="cpu", options={...})
    digest = vc.known_digest(source)          # None: the model file must be read and hashed
    iface = vc.load_interface(digest)         # the inputs/outputs, without parsing the model
    key = vc.key(digest, signature)
    entry = vc.load(key)                      # {"bound": BoundGraph, "derived": {...}, "kernels": image}
                                              # or None
    fd = vc.acquire(key); ...                 # one compile per key across processes
    vc.save(key, bound, derived, info)

Model identity: the sha256 of the model file and its external data files. For a path, an index
(``models/index.json``) remembers each file's size, mtime, ctime and inode with the digest, as
git's index does: an unchanged file is not re-read, so a warm start skips reading and hashing a
large model. Any change to a file's stat signature re-hashes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import threading
import time
import warnings

from .. import config
from .fs import atomic_write, release_lock
from .key import CacheKey, make_key, source_hash
from .store import CacheStore, _stat_sig

_INDEX_LOCK = threading.Lock()


class VariantCache:
    def __init__(self, root: str, backend: str, options: dict):
        self.root = root
        self.store = CacheStore(root)
        self.backend = backend
        self.options = options

    @classmethod
    def open(cls, cache_dir: str | None, backend: str, options: dict) -> "VariantCache":
        return cls(config.cache_root(cache_dir), backend, options)

    # -- model identity --------------------------------------------------------------------------
    def known_digest(self, source) -> str | None:
        """The model's digest without reading it: bytes and ModelProtos are hashed (they are in
        memory); a path is looked up in the stat index. None: unknown, read the model."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return "sha256:" + hashlib.sha256(source).hexdigest()
        if not isinstance(source, (str, os.PathLike)):
            if hasattr(source, "SerializeToString"):
                return "sha256:" + hashlib.sha256(source.SerializeToString(deterministic=True)).hexdigest()
            return None
        rec = self._index().get(os.path.realpath(source))
        if not rec:
            return None
        try:
            if all(_stat_sig(f) == sig for f, sig in rec["files"]):
                return rec["digest"]
        except (OSError, TypeError, ValueError):
            pass
        return None

    def record_files(self, source, files: list) -> str:
        """The digest of a path-loaded model from what the importer read -- ``(path, sha256 or
        None, stat signature before the read or None)`` per file, see read_model_proto -- and
        an index record when no file changed while it was read."""
        h = hashlib.sha256()
        sigs = []
        for f, sha, sig in files:
            if sha is None:  # an external data file: read it here
                sig = _stat_sig(f)
                fh_hash = hashlib.sha256()
                with open(f, "rb") as fh:
                    while chunk := fh.read(8 << 20):
                        fh_hash.update(chunk)
                sha = fh_hash.hexdigest()
            h.update(f"{os.path.basename(f)}\0{sha}\0".encode())
            if _stat_sig(f) == sig:  # unchanged since it was read
                sigs.append([os.path.realpath(f), sig])
        digest = "sha256:" + h.hexdigest()
        if len(sigs) == len(files):
            with _INDEX_LOCK:
                index = self._index()
                index[os.path.realpath(source)] = {"files": sigs, "digest": digest}
                if len(index) > 1000:  # forget the oldest paths (insertion order)
                    for k in list(index)[: len(index) - 1000]:
                        del index[k]
                with contextlib.suppress(OSError):
                    atomic_write(self._index_path(), json.dumps(index))
        return digest

    def _index_path(self) -> str:
        return os.path.join(self.root, "models", "index.json")

    def _index(self) -> dict:
        try:
            with open(self._index_path()) as f:
                index = json.load(f)
            return index if isinstance(index, dict) else {}
        except (OSError, ValueError):
            return {}

    # -- interface records -----------------------------------------------------------------------
    def _interface_path(self, digest: str) -> str:
        name = hashlib.sha256(f"{digest} {source_hash()}".encode()).hexdigest()
        return os.path.join(self.root, "models", name + ".pkl")

    def load_interface(self, digest: str):
        """The ModelInterface recorded for ``digest`` by this jitort source; None if absent or
        unreadable (then the model is parsed and the record rewritten)."""
        path = self._interface_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        body, _, check = data.rpartition(b"\n#")
        if hashlib.sha256(body).hexdigest().encode() != check:
            warnings.warn(f"jitort cache: model record {path} fails its checksum; it is rebuilt",
                          RuntimeWarning, stacklevel=3)
            return None
        try:
            iface = pickle.loads(body)
        except Exception:  # noqa: BLE001
            return None
        return iface if getattr(iface, "digest", None) == digest else None

    def save_interface(self, digest: str, iface) -> None:
        iface.digest = digest
        body = pickle.dumps(iface, protocol=pickle.HIGHEST_PROTOCOL)
        with contextlib.suppress(OSError):
            atomic_write(self._interface_path(digest), body + b"\n#" + hashlib.sha256(body).hexdigest().encode())

    # -- variants --------------------------------------------------------------------------------
    def key(self, digest: str, signature, tuning: str = "") -> CacheKey:
        return make_key(model=digest, signature=signature, backend=self.backend,
                        options=self.options, tuning=tuning)

    def load(self, key: CacheKey):
        entry = self.store.load(key)
        return None if entry is None else entry.obj

    def acquire(self, key: CacheKey) -> int:
        """The key's lock as a descriptor (TimeoutError after JITORT_LOCK_TIMEOUT seconds)."""
        return self.store.acquire(key.digest)

    def save(self, key: CacheKey, bound, derived: dict, info: dict, kernels: bytes | None = None) -> None:
        """``kernels``: the backend's image of the plan's compiled kernels, if it makes one."""
        obj = {"bound": bound, "derived": derived}
        if kernels:
            obj["kernels"] = kernels
            info = {**info, "kernel_image_bytes": len(kernels)}
        try:
            self.store.save(key, obj, info)
        except (OSError, pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            warnings.warn(f"jitort cache: could not write the compiled variant to {self.root} "
                          f"({type(exc).__name__}: {exc}); it stays in memory only",
                          RuntimeWarning, stacklevel=3)

    def save_async(self, key: CacheKey, bound, derived: dict, info: dict, lock_fd: int | None,
                   first_run: threading.Event, kernels=None) -> None:
        """Write the entry in a background thread, off the first call's path (BERT-base: 780 MB,
        ~2.5 s), once ``first_run`` is set -- the plan's kernels are then compiled and in
        Numba's cache too, so a process that finds the entry (or waits on the key's lock,
        released after the write) loads everything and compiles nothing. The interpreter waits
        for the thread at exit; :func:`wait_for_saves` waits for it explicitly. ``kernels``: a
        callable that then gives the image of the plan's kernels (stored with the entry)."""
        def work():
            try:
                first_run.wait(timeout=3600)
                self.save(key, bound, derived, info, _image(kernels))
            finally:
                if lock_fd is not None:
                    release_lock(lock_fd)

        t = threading.Thread(target=work, name=f"jitort-cache-save-{key.digest[:8]}")
        with _PENDING_LOCK:
            _PENDING.add(t)
        t.start()


def _image(kernels) -> bytes | None:
    """``kernels()``, the image of a plan's kernels once they ran; None when it cannot be made."""
    if kernels is None:
        return None
    try:
        return kernels()
    except Exception as exc:  # noqa: BLE001 - the entry is still worth writing without it
        warnings.warn(f"jitort cache: the kernel image could not be made ({type(exc).__name__}: {exc}); "
                      f"the entry's kernels load from Numba's cache", RuntimeWarning, stacklevel=2)
        return None


_PENDING: set = set()
_PENDING_LOCK = threading.Lock()


def wait_for_saves(timeout: float | None = None) -> bool:
    """Wait until every entry this process is writing is on disk (and its lock released); True
    when none is left."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _PENDING_LOCK:
            alive = [t for t in _PENDING if t.is_alive()]
            _PENDING.intersection_update(alive)
        if not alive:
            return True
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        alive[0].join(left)
