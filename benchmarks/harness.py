"""What every benchmark's worker processes share: their environment.

This machine's environment can set OPENBLAS_CORETYPE=Haswell (and an L2 size), which forces
OpenBLAS's AVX2 kernels on an AVX-512 CPU: about 1.6x slower GEMMs (shared/notes/
cpu-gemm-threads.md). numpy uses OpenBLAS and onnxruntime does not, so the workers run without
them. Benchmarks only: the library and the tests never touch these variables.
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_env(threads: int, blas_threads: int | None = None) -> dict:
    """The environment of one worker process: OpenBLAS overrides removed, thread counts set
    (``blas_threads``: numpy's OpenBLAS pool, default ``threads``), the repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OPENBLAS_NUM_THREADS=str(threads if blas_threads is None else blas_threads),
               OMP_NUM_THREADS=str(threads), NUMBA_THREADING_LAYER="omp",
               PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    return env
