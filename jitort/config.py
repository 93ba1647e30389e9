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


def kernel_dir(cache_dir: str | None = None) -> str:
    """Where generated kernel modules (and Numba's compiled code for them) are kept:
    ``cache_dir``, else ``JITORT_CACHE_DIR``, else the user's cache directory; ``kernels/`` in it."""
    base = cache_dir or CACHE_DIR
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "jitort")
    path = os.path.join(base, "kernels")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path
