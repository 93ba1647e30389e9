"""The one place jitort reads its environment variables."""

from __future__ import annotations

import os

#: 0 quiet, 1 log compiles, 2 also print generated source.
DEBUG = int(os.environ.get("JITORT_DEBUG", "0") or 0)
#: Where compiled variants are cached (used by the cache; default: the user cache dir).
CACHE_DIR = os.environ.get("JITORT_CACHE_DIR") or None
#: Default backend: "cpu" (generated Numba kernels, the reference path for the rest) or
#: "reference" (NumPy only).
BACKEND = os.environ.get("JITORT_BACKEND", "cpu")
#: A multi-threaded CPU plan drops to 1 thread for calls where that is faster (another process
#: holding a core); 0 pins every call to the plan's threads (backends/cpu/governor.py).
ADAPTIVE_THREADS = os.environ.get("JITORT_ADAPTIVE_THREADS", "1") != "0"


def cache_root(cache_dir: str | None = None) -> str:
    """The cache directory: ``cache_dir``, else ``JITORT_CACHE_DIR``, else the user's cache
    directory (``$XDG_CACHE_HOME/jitort`` or ``~/.cache/jitort``). Created 0700; refused (a
    :class:`jitort.cache.fs.CacheDirError`) when other users may write to it."""
    from .cache.fs import ensure_private_dir

    base = cache_dir or os.environ.get("JITORT_CACHE_DIR") or CACHE_DIR
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "jitort")
    return ensure_private_dir(base)


def kernel_dir(cache_dir: str | None = None) -> str:
    """Where generated kernel modules (and Numba's compiled code for them) are kept:
    ``kernels/`` in :func:`cache_root`."""
    path = os.path.join(cache_root(cache_dir), "kernels")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path
