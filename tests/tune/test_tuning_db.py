"""The tuning database: survives restarts, is used by the next compile, tolerates corruption."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jitort
from jitort import tuning_db
from jitort.backends.cpu.gemm import VW, TileConfig, choose_config
from jitort.tuning_db import TuningDB, db_path, gemm_key, make_entry, tuning_fingerprint
from tests.tune.models import mlp, mlp_reference, plans

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Not the default of 6x32x48 (8x48, whole K): a narrow tile and two K blocks.
ODD = TileConfig(4, VW, 16, None)


def _entry(cfg):
    return make_entry("gemm", cfg, choose_config(6, 32, 48), 10.0, 9.0, 3, 0)


def _run(code: str, *args) -> str:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, capture_output=True,
                          text=True, cwd=ROOT).stdout.strip()


WRITE = """
import sys
from jitort.backends.cpu.gemm import VW, TileConfig, choose_config
from jitort.tuning_db import TuningDB, gemm_key, make_entry
TuningDB(sys.argv[1]).update({gemm_key(6, 32, 48, 1, VW): make_entry(
    "gemm", TileConfig(4, VW, 16, None), choose_config(6, 32, 48), 10.0, 9.0, 3, 0)})
"""

COMPILE = """
import sys, numpy as np, jitort
from tests.tune.models import mlp_reference, plans
m = jitort.load(sys.argv[2], num_threads=1, cache_dir=sys.argv[1])
x = np.random.default_rng(1).standard_normal((6, 32)).astype(np.float32)
y = m(x=x)[0]
assert np.allclose(y, mlp_reference(x), rtol=1e-4, atol=1e-3)
print(*[f"{p.M}x{p.K}x{p.N}:{p.MR},{p.NR},{p.KC}" for p in plans(m, "GemmPlan")])
"""


def test_database_survives_a_restart_and_the_next_compile_uses_it(tmp_path):
    model = mlp(tmp_path / "mlp.onnx")
    root = str(tmp_path / "cache")
    _run(WRITE, root)  # one process writes the database...
    assert os.path.exists(db_path(root))
    got = _run(COMPILE, root, model).split()  # ...a new one compiles the model with it
    assert f"6x32x48:4,{VW},16" in got  # the tuned kernel
    d = choose_config(6, 48, 20)
    assert f"6x48x20:{d.MR},{d.NR},{min(d.KC, 48)}" in got  # not in the database: the default
    other = _run(COMPILE, str(tmp_path / "other"), model).split()  # another cache: the default
    d = choose_config(6, 32, 48)
    assert f"6x32x48:{d.MR},{d.NR},{min(d.KC, 32)}" in other


def test_a_changed_database_is_reloaded_in_the_same_process(tmp_path):
    model = mlp(tmp_path / "mlp.onnx")
    root = str(tmp_path / "cache")
    x = np.ones((6, 32), np.float32)
    for cfg in (ODD, TileConfig(12, VW, 8, None)):
        TuningDB(root).update({gemm_key(6, 32, 48, 1, VW): _entry(cfg)})
        m = jitort.load(model, num_threads=1, cache_dir=root)
        np.testing.assert_allclose(m(x=x)[0], mlp_reference(x), rtol=1e-4, atol=1e-3)
        (p,) = [p for p in plans(m, "GemmPlan") if p.N == 48]
        assert (p.MR, p.NR, p.KC) == (cfg.MR, cfg.NR, cfg.KC)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"format": 1, "entries": []}', b"[]"])
def test_a_corrupt_database_warns_and_compiles_with_the_default(tmp_path, content):
    model = mlp(tmp_path / "mlp.onnx")
    root = str(tmp_path / "cache")
    path = db_path(root)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(content)
    m = jitort.load(model, num_threads=1, cache_dir=root)
    x = np.ones((6, 32), np.float32)
    with pytest.warns(RuntimeWarning, match="ignoring the tuning database"):
        y = m(x=x)[0]
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-4, atol=1e-3)
    d = choose_config(6, 32, 48)
    (p,) = [p for p in plans(m, "GemmPlan") if p.N == 48]
    assert (p.MR, p.NR) == (d.MR, d.NR)
    assert tuning_fingerprint(root) == ""
    # the next write replaces it (the file was warned about once already: no second warning)
    TuningDB(root).update({gemm_key(6, 32, 48, 1, VW): _entry(ODD)})
    with open(path) as f:
        assert list(json.load(f)["entries"]) == [gemm_key(6, 32, 48, 1, VW)]
    assert tuning_fingerprint(root) != ""


def test_a_malformed_entry_is_ignored_with_a_warning(tmp_path):
    root = str(tmp_path)
    good, bad = gemm_key(6, 32, 48, 1, VW), gemm_key(6, 48, 20, 1, VW)
    TuningDB(root).update({good: _entry(ODD), bad: {**_entry(ODD), "config": {"MR": "x"}}})
    with pytest.warns(RuntimeWarning, match="ignoring tuning entry"):
        entries = TuningDB(root).entries()
    assert list(entries) == [good]
    assert tuning_db.lookup(os.path.join(root, "kernels"), good) == TileConfig(4, VW, 16, None, "tuned")
    assert tuning_db.lookup(os.path.join(root, "kernels"), bad) is None
    assert tuning_db.lookup(None, good) is None


def test_fingerprint_follows_the_chosen_configs(tmp_path):
    root = str(tmp_path)
    assert tuning_fingerprint(root) == ""
    key = gemm_key(6, 32, 48, 1, VW)
    TuningDB(root).update({key: _entry(ODD)})
    fp = tuning_fingerprint(root)
    assert fp
    TuningDB(root).update({key: {**_entry(ODD), "default_us": 11.0}})  # same winner: same key
    assert tuning_fingerprint(root) == fp
    TuningDB(root).update({key: _entry(TileConfig(12, VW, 8, None))})
    assert tuning_fingerprint(root) not in ("", fp)


def test_keys_do_not_name_the_model():
    assert gemm_key(128, 768, 3072, 1, 16) == "gemm M=128 K=768 N=3072 threads=1 vw=16"
    assert tuning_db.conv_key((1, 56, 56, 64), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, 16) == \
        "conv x=1x56x56x64 w=64x64x3x3 stride=1,1 pads=1,1,1,1 dil=1,1 threads=2 vw=16"
