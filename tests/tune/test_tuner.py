"""The tuner: every candidate is checked against the reference before it can win; results go to
the database; ``jitort tune`` prints the per-kernel table. Candidates are few (compiles cost)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import jitort
from jitort import tune, tuning_db
from jitort.backends.cpu.gemm import VW, Epilogue, TileConfig, choose_config
from jitort.cli import main
from tests.tune.models import conv, mlp, plans


def _bound(path, root, **feeds):
    m = jitort.load(path, num_threads=1, cache_dir=root)
    m(**feeds)
    return m.bound_graph(m.signatures()[0])


def test_collect_finds_the_kernels_the_backend_generates(tmp_path):
    bound = _bound(mlp(tmp_path / "m.onnx"), str(tmp_path), x=np.ones((6, 32), np.float32))
    specs = tune.collect(bound, 1)
    assert [s.key for s in specs] == [tuning_db.gemm_key(6, 32, 48, 1, VW), tuning_db.gemm_key(6, 48, 20, 1, VW)]
    assert specs[0].args["epilogue"] == Epilogue(bias=True, activation="relu")


@pytest.mark.parametrize("corrupt", [True, False])
def test_a_wrong_candidate_never_wins(tmp_path, monkeypatch, corrupt):
    """A 'candidate' that returns a stored result at once is far faster than any kernel: when its
    output is right it wins (so the test can tell), when one element is off it is rejected
    before it is timed, and a checked candidate wins instead."""
    root = str(tmp_path / "cache")
    bound = _bound(mlp(tmp_path / "m.onnx"), root, x=np.ones((6, 32), np.float32))
    fake = TileConfig(4, VW, None, None, "fake")
    real_build = tune.build_runner

    def build(spec, cfg, data):
        fn = real_build(spec, cfg, data)
        if cfg.why != "fake":
            return fn
        out = fn().copy()
        if corrupt:
            out.flat[out.size // 2] += 0.5
        return lambda: out

    monkeypatch.setattr(tune, "build_runner", build)
    other = lambda spec: [fake, TileConfig(12, VW, None, None, "real")]  # noqa: E731
    results = tune.tune_bound(bound, 1, root, candidates=other, max_candidates=3)
    db = tuning_db.TuningDB(root).entries()
    for r in results:
        fake_text = tune.describe(tune.KernelSpec(r.kind, r.key, {"M": 6, "K": r.default.KC, "N": 0}), fake)
        if corrupt:
            assert r.chosen.why != "fake" and db[r.key]["config"] != tuning_db.config_to_json(fake)
            assert [c for c, why in r.rejected] == [fake_text]
            assert "wrong output" in r.rejected[0][1] and fake_text not in r.timings
        else:
            assert r.chosen.why == "fake" and r.status == "tuned" and not r.rejected
            assert db[r.key]["config"] == tuning_db.config_to_json(fake)


def test_a_candidate_that_fails_to_build_is_rejected():
    spec = tune.KernelSpec("gemm", tuning_db.gemm_key(5, 20, 30, 1, VW),
                           dict(M=5, K=20, N=30, epilogue=Epilogue(), threads=1))
    bad = TileConfig(5, VW + 1, None, None, "NR not a multiple of the vector width")
    r = tune.tune_kernel(spec, candidates=lambda s: [bad])
    assert r.chosen == choose_config(5, 20, 30) and r.tried == 2
    assert len(r.rejected) == 1 and "failed: ValueError" in r.rejected[0][1]


def test_check_uses_a_float32_tolerance():
    spec = tune.KernelSpec("gemm", "k", dict(M=3, K=500, N=7, epilogue=Epilogue(bias=True, activation="gelu_erf"),
                                             threads=1))
    data = tune._Data(spec)
    got = (data.want + 3e-6 * data.scale).astype(np.float32)  # within float32 reassociation error
    assert tune.check(got, data) == ""
    got[1, 2] += 1e-3 * data.scale[1, 2]
    assert "1 of 21 elements" in tune.check(got, data)
    got[0, 0] = np.nan
    assert "2 of 21 elements" in tune.check(got, data)


def test_candidates_are_pruned_and_distinct():
    spec = tune.KernelSpec("gemm", "k", dict(M=128, K=768, N=3072, epilogue=Epilogue(), threads=1))
    d = choose_config(128, 768, 3072)
    s1 = tune._stage1(spec, d)
    assert (d.MR, d.NR) in [(c.MR, c.NR) for c in s1] and len(s1) <= 5
    s2 = tune._stage2(spec, s1)
    effs = {tune.effective(spec, c) for c in [d, *s1, *s2]}
    assert len(s1) + len(s2) + 1 <= 20 and len(effs) >= 10
    narrow = tune.KernelSpec("gemm", "k", dict(M=4, K=64, N=10, epilogue=Epilogue(), threads=1))
    assert [(c.MR, c.NR) for c in tune._stage1(narrow, choose_config(4, 64, 10))] == [(12, 16)]
    gemv = tune.KernelSpec("gemm", "k", dict(M=1, K=768, N=768, epilogue=Epilogue(), threads=1))
    assert [c.NR for c in tune._stage1(gemv, choose_config(1, 768, 768))] == [2 * VW, 4 * VW, 8 * VW]


def test_conv_kernels_are_tuned_and_used(tmp_path):
    root = str(tmp_path / "cache")
    x = np.random.default_rng(0).standard_normal((1, 8, 10, 10)).astype(np.float32)
    path = conv(tmp_path / "c.onnx")
    bound = _bound(path, root, x=x)
    (spec,) = tune.collect(bound, 1)
    assert spec.key == tuning_db.conv_key((1, 10, 10, 8), (16, 8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, VW)
    cand = TileConfig(4, VW, 24, None, "two K blocks of 3 taps")
    (r,) = tune.tune_bound(bound, 1, root, candidates=lambda s: [cand])
    assert r.tried == 2 and not r.rejected and r.status.startswith(("tuned", "default kept"))
    # whatever won, a compile in a new model object uses the database's config
    tuning_db.TuningDB(root).update({spec.key: tuning_db.make_entry("conv", cand, r.default, 2.0, 1.0, 2, 0)})
    m = jitort.load(path, num_threads=1, cache_dir=root)
    y = m(x=x)[0]
    (p,) = plans(m, "ConvPlan")
    assert (p.MR, p.NR, p.KC) == (4, VW, 24)
    want = jitort.load(path, backend="reference")(x=x)[0]
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_cli_tune_prints_the_table_and_writes_the_database(tmp_path, capsys):
    path = mlp(tmp_path / "m.onnx")
    root = str(tmp_path / "cache")
    args = ["tune", path, "--shape", "x=8x32", "--cache-dir", root, "--threads", "1",
            "--max-candidates", "2", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    keys = [tuning_db.gemm_key(8, 32, 48, 1, VW), tuning_db.gemm_key(8, 48, 20, 1, VW)]
    header = out.splitlines()[0].split()
    assert header[:3] == ["kernel", "nodes", "default"] and "speedup" in header
    for k in keys:
        (line,) = [ln for ln in out.splitlines() if ln.startswith(k)]  # a row per kernel
        assert re.search(r" \d+\.\d{3}x ", line) and ("tuned" in line or "default kept" in line)
    db_file = tuning_db.db_path(root)
    assert f"tuning database: {db_file}" in out
    with open(db_file) as f:
        entries = json.load(f)["entries"]
    assert sorted(entries) == sorted(keys)
    assert all(1 <= e["candidates"] <= 2 and e["speedup"] > 0 for e in entries.values())
    # a second run finds them in the database; --json
    assert main(args + ["--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["database"] == db_file and [k["status"] for k in rep["kernels"]] == ["in database"] * 2
    assert os.path.exists(db_file)
