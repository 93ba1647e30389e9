"""Numba's start-up, without the SciPy BLAS import it does not need for jitort's kernels.

The first compile or cache load of a process imports ``numba.np.arraymath``, whose module body
runs ``_HAVE_BLAS = _check_blas()``: ``import scipy.linalg.cython_blas``, 0.15-0.18 s here
(scipy.linalg and its array-API layer), a fifth of a warm start. No jitort kernel calls a BLAS
(backend.py), and the flag only picks np.convolve/np.correlate's inner product; every
linear-algebra implementation of Numba runs the same check itself when it is compiled. So
``prepare()`` imports that module with the check answered from the package metadata (SciPy is
installed, whose ``cython_blas`` is then imported when something needs it), and puts Numba's
own function back right after. Anything unexpected (an older or newer Numba without these names,
no SciPy) and it is a plain import.

    numba = prepare()        # once, before the first kernel is compiled or loaded
"""

from __future__ import annotations

import importlib.util
import sys


def prepare():
    import numba

    if "numba.np.arraymath" not in sys.modules:
        _import_arraymath()
    return numba


def _import_arraymath() -> None:
    try:
        from numba.np import linalg
        real = linalg.ensure_blas
        scipy_linalg = importlib.util.find_spec("scipy.linalg") is not None
    except (ImportError, AttributeError, ValueError):
        return
    if not scipy_linalg:  # Numba's own check then fails: let it run
        return
    linalg.ensure_blas = _blas_is_installed
    try:
        import numba.np.arraymath as arraymath
    finally:
        linalg.ensure_blas = real
    if getattr(arraymath, "ensure_blas", None) is _blas_is_installed:
        arraymath.ensure_blas = real


def _blas_is_installed() -> None:
    """``ensure_blas`` for arraymath's import-time probe: SciPy's spec was found."""
