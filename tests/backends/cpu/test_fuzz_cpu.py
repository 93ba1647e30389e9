"""The optimizer's random graphs (tests/passes/test_fuzz.py) through the CPU backend at level 3,
1 and 2 threads, against the reference backend on the unoptimized graph: generated region
kernels, GEMMs, row kernels, views and reference steps sharing one arena."""

from __future__ import annotations

import numpy as np
import pytest

import jitort
from tests.passes.test_fuzz import random_model

SEEDS = range(0, 150, 5)  # 30 of the optimizer fuzzer's 150 graphs (compiling is the cost)


@pytest.mark.parametrize("threads", [1, 2])
def test_fuzz_graphs_through_the_cpu_backend(threads):
    failures, generated = [], 0
    for seed in SEEDS:
        m, feeds = random_model(seed)
        want = jitort.load(m, backend="reference", opt_level=0)(**feeds)
        sess = jitort.load(m, backend="cpu", opt_level=3, num_threads=threads)
        try:
            got = sess(**feeds)
            for r, g in zip(want, got):
                assert g.shape == r.shape and g.dtype == r.dtype, f"{g.shape} {g.dtype} vs {r.shape} {r.dtype}"
                np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(r).max(initial=0))))
            got2 = sess(**feeds)  # the arena is reused: a second call gives the same
            for a, b in zip(got, got2):
                np.testing.assert_array_equal(a, b)
        except Exception as exc:  # noqa: BLE001 - collect every failing seed, report all
            failures.append(f"seed {seed}: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        (variant,) = sess._variants.values()
        generated += sum(n for k, n in variant.plan.kernel_counts().items() if k != "reference")
    assert not failures, "\n".join(failures)
    assert generated >= len(SEEDS)  # the graphs did reach generated kernels
