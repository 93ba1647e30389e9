"""The one place jitort reads its environment variables."""

from __future__ import annotations

import os

#: 0 quiet, 1 log compiles, 2 also print generated source.
DEBUG = int(os.environ.get("JITORT_DEBUG", "0") or 0)
#: Where compiled variants are cached (used by the cache; default: the user cache dir).
CACHE_DIR = os.environ.get("JITORT_CACHE_DIR") or None
#: Default backend: "reference" until the compiled backends land.
BACKEND = os.environ.get("JITORT_BACKEND", "reference")
