"""``jitort bench``: the table, JSON and PNG on a tiny model against onnxruntime; the output check
(crafted arrays, and a model whose outputs genuinely differ); errors. Never asserts a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from jitort import bench
from jitort.cli import main
from tests.helpers import model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
F = TensorProto.FLOAT


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "jitort", "bench", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _save(m, path) -> str:
    onnx.save(m, str(path))
    return str(path)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def mlp(tmp):
    """x[batch,16] -> MatMul -> Add -> Relu -> y[batch,8]."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    m = model([n("MatMul", ["x", "w"], ["m"]), n("Add", ["m", "b"], ["a"]), n("Relu", ["a"], ["y"])],
              [("x", F, ["batch", 16])], [("y", F, ["batch", 8])], opset=17,
              inits={"w": rng.standard_normal((16, 8)).astype(np.float32),
                     "b": rng.standard_normal(8).astype(np.float32)})
    return _save(m, tmp / "mlp.onnx")


@pytest.fixture(scope="module")
def vs_run(mlp, tmp):
    """One CLI run against onnxruntime, shared by the table, JSON and PNG tests."""
    p = _cli(mlp, "--shape", "x=4x16", "--vs", "onnxruntime", "--runs", 3, "--warmup", 1, "--rounds", 2,
             "--threads", 1, "--cache-dir", tmp / "cache", "--json", tmp / "out.json", "--plot", tmp / "out.png")
    return p


# -- the command, end to end ----------------------------------------------------------------------
def test_table_has_both_runtimes_and_ratios(vs_run):
    assert vs_run.returncode == 0, vs_run.stderr
    lines = vs_run.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("runtime"))
    for col in ("create ms", "first call ms", "p50 ms", "p90 ms", "calls/s", "items/s"):
        assert col in header
    assert any(ln.startswith("jitort ") for ln in lines)
    assert any(ln.startswith("onnxruntime ") for ln in lines)
    ratio = next(ln for ln in lines if ln.startswith("jitort/onnxruntime"))
    assert "p50" in ratio and "create + first call" in ratio and ratio.count("x") >= 2
    assert "x float32[4, 16]" in vs_run.stdout
    assert "2 counted round(s)" in vs_run.stdout
    # one progress line per round on stderr; round 2 starts with onnxruntime
    rounds = [ln for ln in vs_run.stderr.splitlines() if ln.startswith("[round")]
    assert len(rounds) == 2 and rounds[1].split("] ")[1].startswith("onnxruntime")


def test_json_has_rounds_and_summary(vs_run, tmp):
    assert vs_run.returncode == 0, vs_run.stderr
    doc = json.loads((tmp / "out.json").read_text())
    assert doc["settings"]["runtimes"] == ["jitort", "onnxruntime"]
    assert doc["settings"]["threads"] == 1 and doc["settings"]["runs"] == 3 and doc["settings"]["batch"] == 4
    assert len(doc["rounds"]) == 2
    assert [r["order"][0] for r in doc["rounds"]] == ["jitort", "onnxruntime"]
    for r in doc["rounds"]:
        assert r["counted"] and r["max_scaled_diff"] <= bench.RTOL
        for rt in ("jitort", "onnxruntime"):
            assert len(r[rt]["times_ms"]) == 3
            for key in bench.FIGURES:
                assert r[rt][key] > 0, (rt, key)
            assert r[rt]["output_names"] == ["y"]
    s = doc["summary"]
    assert s["counted_rounds"] == 2
    for rt in ("jitort", "onnxruntime"):
        assert set(bench.FIGURES) <= set(s[rt])
        assert s[rt]["p90_ms"] >= s[rt]["p50_ms"] > 0
    assert s["ratio_p50"] > 0 and s["ratio_create_first"] > 0
    assert "onnxruntime" in doc["machine"]


def test_plot_is_a_png(vs_run, tmp):
    assert vs_run.returncode == 0, vs_run.stderr
    data = (tmp / "out.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_without_vs_measures_jitort_only(mlp, tmp):
    p = _cli(mlp, "--runs", 2, "--warmup", 0, "--rounds", 1, "--threads", 1, "--cache-dir", tmp / "cache",
             "--json", tmp / "solo.json")
    assert p.returncode == 0, p.stderr
    assert any(ln.startswith("jitort ") for ln in p.stdout.splitlines())
    assert "onnxruntime" not in p.stdout
    doc = json.loads((tmp / "solo.json").read_text())
    assert doc["settings"]["runtimes"] == ["jitort"] and "ratio_p50" not in doc["summary"]
    assert doc["settings"]["inputs"] == {"x": "float32[1, 16]"}  # the symbolic batch defaults to 1


def test_outputs_that_differ_in_every_round_fail_and_name_the_output(tmp):
    """RandomUniformLike with a seed: onnxruntime and jitort draw different numbers (both valid)."""
    n = helper.make_node
    m = model([n("RandomUniformLike", ["x"], ["r"], seed=1.0), n("Add", ["x", "r"], ["noisy"])],
              [("x", F, [64])], [("noisy", F, [64])], opset=17)
    path = _save(m, tmp / "random.onnx")
    p = _cli(path, "--vs", "onnxruntime", "--runs", 1, "--warmup", 0, "--rounds", 2, "--threads", 1,
             "--cache-dir", tmp / "cache")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "NOT COUNTED" in p.stderr
    assert "differ in every round" in p.stderr
    assert "output 'noisy'" in p.stderr and "max |diff|" in p.stderr


def test_a_crashing_worker_reports_its_stderr(tmp):
    m = model([helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.custom")],
              [("x", F, [2])], [("y", F, [2])], extra_opsets={"example.custom": 1})
    path = _save(m, tmp / "crash.onnx")
    p = _cli(path, "--runs", 1, "--rounds", 1, "--threads", 1, "--cache-dir", tmp / "cache")
    assert p.returncode == 1
    assert "jitort worker failed" in p.stderr and "NoSuchOp" in p.stderr
    assert "Traceback" in p.stderr  # the worker's own stderr tail


# -- argument errors (in-process: they fail before any worker starts) ------------------------------
def test_malformed_shape_is_an_argparse_error(mlp, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", mlp, "--shape", "x=4xa"])
    assert e.value.code == 2
    assert "must be integers joined by 'x'" in capsys.readouterr().err


def test_unknown_input_name_is_an_error(mlp, capsys):
    assert main(["bench", mlp, "--shape", "nope=4x16"]) == 1
    err = capsys.readouterr().err
    assert "'nope'" in err and "inputs: x" in err


@pytest.mark.parametrize("bad", [["--runs", "0"], ["--rounds", "-1"], ["--threads", "two"]])
def test_bad_counts_are_argparse_errors(mlp, bad):
    with pytest.raises(SystemExit) as e:
        main(["bench", mlp, *bad])
    assert e.value.code == 2


def test_missing_onnxruntime_or_matplotlib_says_what_to_install(mlp, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    assert main(["bench", mlp, "--vs", "onnxruntime"]) == 1
    assert "pip install 'jitort[bench]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", mlp, "--plot", "out.png"]) == 1
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install 'jitort[bench]'" in err


def test_missing_model_file(tmp, capsys):
    assert main(["bench", str(tmp / "absent.onnx")]) == 1
    assert "no such model file" in capsys.readouterr().err


# -- the output check on crafted arrays -----------------------------------------------------------
def test_compare_outputs_floats_within_and_beyond_tolerance():
    want = [np.array([[100.0, -3.0]], np.float32)]
    ok, worst, msg = bench.compare_outputs([want[0] + np.float32(0.05)], want, ["y"])
    assert ok and 0 < worst <= 1e-3 and msg == ""  # 0.05 <= 1e-3 * 100
    ok, worst, msg = bench.compare_outputs([want[0] + np.float32(0.5)], want, ["y"])
    assert not ok and worst == pytest.approx(0.005, rel=1e-3)
    assert "output 'y'" in msg and "max |diff| 0.5" in msg
    small = [np.array([0.001, 0.002], np.float64)]  # scale is max(1, max |ref|): absolute 1e-3 here
    assert bench.compare_outputs([small[0] + 5e-4], small)[0]
    assert not bench.compare_outputs([small[0] + 5e-3], small)[0]


def test_compare_outputs_ints_bools_exact_and_shapes_dtypes():
    ints = [np.arange(6, dtype=np.int64)]
    assert bench.compare_outputs([ints[0].copy()], ints)[0]
    bumped = ints[0].copy()
    bumped[3] += 1
    ok, _, msg = bench.compare_outputs([bumped], ints, ["idx"])
    assert not ok and "'idx'" in msg and "1 of 6 elements differ" in msg
    assert not bench.compare_outputs([np.array([True, False])], [np.array([True, True])])[0]
    ok, _, msg = bench.compare_outputs([np.zeros((2, 3), np.float32)], [np.zeros((3, 2), np.float32)], ["y"])
    assert not ok and "[2, 3]" in msg and "[3, 2]" in msg
    ok, _, msg = bench.compare_outputs([np.zeros(3, np.float64)], [np.zeros(3, np.float32)])
    assert not ok and "float64" in msg
    ok, _, msg = bench.compare_outputs([np.zeros(3)], [np.zeros(3), np.zeros(3)])
    assert not ok and "1 outputs vs 2" in msg


def test_compare_outputs_nan_and_inf_positions():
    want = [np.array([np.nan, np.inf, 1.0], np.float32)]
    assert bench.compare_outputs([want[0].copy()], want)[0]
    assert not bench.compare_outputs([np.array([0.0, np.inf, 1.0], np.float32)], want)[0]
    assert not bench.compare_outputs([np.array([np.nan, -np.inf, 1.0], np.float32)], want)[0]
    assert not bench.compare_outputs([np.array([np.nan, np.inf, np.nan], np.float32)], want)[0]


def test_summary_is_the_median_of_counted_rounds():
    def rec(counted, j, o):
        mk = lambda v: {k: v for k in bench.FIGURES}  # noqa: E731
        return {"counted": counted, "jitort": mk(j), "onnxruntime": mk(o)}

    s = bench.summarize([rec(True, 2.0, 1.0), rec(False, 100.0, 1.0), rec(True, 4.0, 2.0), rec(True, 3.0, 1.0)],
                        ("jitort", "onnxruntime"))
    assert s["counted_rounds"] == 3 and s["rounds"] == 4
    assert s["jitort"]["p50_ms"] == 3.0 and s["onnxruntime"]["p50_ms"] == 1.0
    assert s["ratio_p50"] == 3.0 and s["ratio_create_first"] == 3.0
