"""``jitort.load(..., tune=True)``: the first call of a Signature tunes its kernels, the winners
land in the tuning database, the variant's cache key carries the database's fingerprint, and a
later process loads that variant without tuning again."""

from __future__ import annotations

import numpy as np

import jitort
import jitort.cache
from jitort import tuning_db
from tests.tune.models import mlp, mlp_reference


def test_tune_at_first_call(tmp_path):
    path = mlp(tmp_path / "m.onnx")
    cache = str(tmp_path / "c")
    x = np.random.default_rng(1).standard_normal((7, 32)).astype(np.float32)
    assert tuning_db.tuning_fingerprint(cache) == ""
    m = jitort.load(path, cache_dir=cache, num_threads=1, tune=True)
    np.testing.assert_allclose(m(x=x)[0], mlp_reference(x), rtol=1e-4, atol=1e-4)
    fp = tuning_db.tuning_fingerprint(cache)
    assert fp != ""  # both GEMMs have a database entry now (a winner or the default kept)
    keys = tuning_db.TuningDB(jitort.config.cache_root(cache)).entries()
    assert any(k.startswith("gemm M=7 K=32 N=48") for k in keys), keys
    variant = next(iter(m._variants.values()))
    assert variant.key.parts["tuning"] == fp
    jitort.cache.wait_for_saves()  # the entry is written in the background after the first run
    again = jitort.load(path, cache_dir=cache, num_threads=1, tune=True)
    np.testing.assert_allclose(again(x=x)[0], mlp_reference(x), rtol=1e-4, atol=1e-4)
    assert again.stats.cache_hits == 1 and again.stats.optimized == 0  # no second tuning run
