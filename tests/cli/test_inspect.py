"""``jitort inspect``: run as a subprocess on a small model; --save, --shapes-from, --json, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.helpers import model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
F = TensorProto.FLOAT


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "jitort", "inspect", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """x[N,8] -> Add(b) -> Mul(s) -> Tanh -> (y, ReduceSum -> r) plus a MatMul: a region and the
    basic passes (a foldable Constant chain for the scale) have something to do."""
    n = helper.make_node
    nodes = [n("Constant", [], ["c"], value=helper.make_tensor("c", F, [], [0.5])),
             n("Mul", ["c", "two"], ["s"]),  # folds to a constant
             n("Add", ["x", "b"], ["a"]), n("Mul", ["a", "s"], ["m"]), n("Tanh", ["m"], ["t"]),
             n("ReduceSum", ["t", "ax"], ["r"], keepdims=1), n("MatMul", ["t", "w"], ["y"])]
    rng = np.random.default_rng(0)
    m = model(nodes, [("x", F, ["batch", 8])], [("y", F, ["batch", 3]), ("r", F, ["batch", 1])],
              inits={"b": rng.standard_normal(8).astype(np.float32), "two": np.float32(2),
                     "ax": np.array([1], np.int64), "w": rng.standard_normal((8, 3)).astype(np.float32)})
    path = tmp_path_factory.mktemp("inspect") / "small.onnx"
    onnx.save(m, str(path))
    return path


def test_text_report_mentions_passes_counts_regions(small_model):
    p = _cli(small_model, "--shape", "x=3x8")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for word in ("elementwise_regions", "constant_folding", "op histogram", "fused regions: 1",
                 "near misses", "x: float32[3,8]"):
        assert word in out, word
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("elementwise_regions"))
    assert line.split()[2] == "1"  # its hits column


def test_json_report_and_default_dim_note(small_model):
    p = _cli(small_model, "--json", "--level", "2")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["signature"] == {"x": {"dtype": "float32", "shape": [1, 8]}}
    assert any("not given: using 1" in n for n in r["notes"])
    hits = {p["name"]: p["hits"] for p in r["passes"]}
    assert hits["elementwise_regions"] == 1
    assert r["nodes_after"] < r["nodes_before"] == 7
    assert r["ops_before"]["Tanh"] == 1 and "Tanh" not in r["ops_after"]
    assert r["regions"][0]["ops"] == ["Add", "Mul", "Tanh", "ReduceSum"]
    assert r["ops_after"]["jitort::ElementwiseRegion"] == 1


def test_level_zero_changes_nothing(small_model):
    r = json.loads(_cli(small_model, "--json", "--level", "0", "--shape", "x=2x8").stdout)
    assert r["nodes_before"] == r["nodes_after"] == 7 and r["passes"] == [] and r["regions"] == []


def test_save_writes_a_checked_model_onnxruntime_runs(small_model, tmp_path):
    out = tmp_path / "opt.onnx"
    p = _cli(small_model, "--shape", "x=5x8", "--save", out)
    assert p.returncode == 0, p.stderr
    assert "saved:" in p.stdout
    saved = onnx.load(str(out))
    onnx.checker.check_model(saved)
    assert any(n.domain == "jitort.fn" for n in saved.graph.node)
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    want = ort.InferenceSession(str(small_model)).run(["y", "r"], {"x": x})
    got = ort.InferenceSession(str(out)).run(["y", "r"], {"x": x})
    for a, b in zip(want, got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_shapes_from_json_file(small_model, tmp_path):
    f = tmp_path / "shapes.json"
    f.write_text(json.dumps({"x": "4x8"}))
    r = json.loads(_cli(small_model, "--json", "--shapes-from", f).stdout)
    assert r["signature"]["x"]["shape"] == [4, 8] and r["notes"] == []
    f.write_text(json.dumps({"x": [6, 8]}))
    r = json.loads(_cli(small_model, "--json", "--shapes-from", f, "--shape", "x=7x8").stdout)
    assert r["signature"]["x"]["shape"] == [7, 8]  # --shape wins over the file


@pytest.mark.parametrize("args,words", [
    (["--shape", "x=3xq"], ["--shape", "integers"]),
    (["--shape", "nope=3x8"], ["unknown input", "nope"]),
    (["--shape", "x=3x8x2"], ["'x'", "rank 2"]),
    (["--shape", "x=3x9"], ["'x'", "dim 1 is 8"]),
    (["--level", "7"], ["level"]),
])
def test_bad_arguments_give_a_clear_error(small_model, args, words):
    p = _cli(small_model, *args)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in p.stderr, (w, p.stderr)


def test_bad_shapes_file(small_model, tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("{not json")
    p = _cli(small_model, "--shapes-from", f)
    assert p.returncode != 0 and "--shapes-from" in p.stderr and "Traceback" not in p.stderr


def test_pass_node_deltas_add_up():
    """Per-pass node counts from the pipeline: their deltas sum to the whole change."""
    from jitort.inspect import input_types
    from jitort.ir.infer import bind
    from jitort.ir.onnx_import import import_model
    from jitort.passes.pipeline import optimize
    from tests import exported as E

    m = import_model(E.bert())
    bound = bind(m.graph, input_types(m.graph, {"input_ids": (2, 9)}))
    for level in (1, 2, 3):
        res = optimize(bound, level)
        assert sum(p.delta for p in res.passes) == res.nodes_after - res.nodes_before
        assert res.rounds >= 1
        ran = [p for p in res.passes if p.nodes_before is not None]
        assert ran and all(p.nodes_after <= p.nodes_before or p.hits for p in ran)


def test_memory_plan_and_kernels(small_model):
    """The report carries the CPU memory plan (arena within the live peak and the naive sum);
    --kernels builds the CPU plan and says which kernel runs each node."""
    p = _cli(small_model, "--shape", "x=64x8", "--json", "--kernels")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    m = r["memory"]
    assert 0 < m["live_peak_bytes"] <= m["arena_bytes"] <= m["naive_bytes"]
    assert m["planned_values"] >= 2 and m["dynamic"] == 0
    counts = r["kernels"]["counts"]
    assert counts.get("jitort::ElementwiseRegion") == 1 and counts.get("MatMul") == 1, counts
    text = _cli(small_model, "--shape", "x=64x8", "--kernels").stdout
    assert "memory (CPU backend): arena" in text and "kernels (CPU backend):" in text
