"""The CPU backend: kernel groups lowered to Numba source, BLAS binding, memory planner, whole-plan module."""

from .numba_import import import_numba

import_numba()  # before any module of this package imports Numba (see numba_import.py)

from .numba_start import cache_on_first_use  # noqa: E402

try:
    cache_on_first_use()  # before the package's kernels are decorated (see numba_start.py)
except (ImportError, AttributeError):  # another Numba: its own behaviour, as prepare() does
    pass
