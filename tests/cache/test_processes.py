"""The disk cache across processes: a second process loads the first one's variant without
compiling anything (counted, not timed); four processes warming one model compile each key once;
a changed model file, shape, option or jitort source gives a new key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r"""
import json, os, sys, time
import numpy as np
path, cache, shape, out, go = sys.argv[1:6]
extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
while go != "-" and not os.path.exists(go):
    time.sleep(0.005)
import jitort
import jitort.cache
from jitort.cache.instrument import compile_counter
from jitort.cache.store import STATS
counter = compile_counter()
m = jitort.load(path, cache_dir=cache, num_threads=1, **extra)
x = np.random.default_rng(7).standard_normal([int(d) for d in shape.split("x")]).astype(np.float32)
y = m(x=x)[0]
np.save(out, y)
print(json.dumps({"optimized": m.stats.optimized, "cache_hits": m.stats.cache_hits,
                  "numba_compiles": counter.numba, "compiled": counter.names,
                  "parsed": m._ir is not None, "saved": STATS.saved if jitort.cache.wait_for_saves() else -1,
                  "waited": STATS.waited,
                  "key": next(iter(m._variants.values())).key.digest}))
"""


def make_model(path, scale=1.0):
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((48, 80)) * scale).astype(np.float32)
    b = rng.standard_normal(80).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["h2"]),
         helper.make_node("Relu", ["h2"], ["r"]),
         helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["n"], axis=-1),
         helper.make_node("Softmax", ["n"], ["y"], axis=-1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 48])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 80])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(np.ones(80, np.float32), "gamma"),
         numpy_helper.from_array(np.zeros(80, np.float32), "beta")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return str(path)


def spawn(model, cache, shape, out, go="-", **extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", WORKER, model, str(cache), shape, str(out), go,
                             json.dumps(extra)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def result(p):
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def reference(model, shape):
    import jitort

    x = np.random.default_rng(7).standard_normal([int(d) for d in shape.split("x")]).astype(np.float32)
    return jitort.load(model, backend="reference")(x=x)[0]


def test_second_process_loads_without_compiling(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    cache = tmp_path / "cache"
    first = result(spawn(model, cache, "5x48", tmp_path / "a.npy"))
    assert first["optimized"] == 1 and first["cache_hits"] == 0 and first["saved"] == 1
    second = result(spawn(model, cache, "5x48", tmp_path / "b.npy"))
    assert second["key"] == first["key"]
    assert second["optimized"] == 0 and second["cache_hits"] == 1 and second["saved"] == 0
    assert second["numba_compiles"] == 0, second["compiled"]
    assert not second["parsed"]  # inputs/outputs came from the model record: the file was not parsed
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(b, reference(model, "5x48"), rtol=1e-4, atol=1e-5)


def test_four_processes_compile_one_key_once(tmp_path):
    model = make_model(tmp_path / "m.onnx", scale=0.5)
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    procs = [spawn(model, cache, "7x48", tmp_path / f"o{i}.npy", str(go)) for i in range(4)]
    time.sleep(0.5)
    go.write_text("")
    res = [result(p) for p in procs]
    assert sorted(r["optimized"] for r in res) == [0, 0, 0, 1], res
    assert sorted(r["cache_hits"] for r in res) == [0, 1, 1, 1], res
    assert sum(r["saved"] for r in res) == 1 and len({r["key"] for r in res}) == 1
    # the compiling process holds the key until its first run has compiled (and cached) every
    # kernel: the three that waited load everything from disk
    assert all(r["numba_compiles"] == 0 for r in res if r["cache_hits"]), res
    ref = reference(model, "7x48")
    for i in range(4):
        np.testing.assert_allclose(np.load(tmp_path / f"o{i}.npy"), ref, rtol=1e-4, atol=1e-5)


def test_changes_give_new_keys(tmp_path):
    from jitort.cache.key import explain
    from jitort.cache.store import CacheStore

    model = make_model(tmp_path / "m.onnx")
    cache = tmp_path / "cache"
    base = result(spawn(model, cache, "2x48", tmp_path / "o.npy"))
    other_dim = result(spawn(model, cache, "3x48", tmp_path / "o.npy"))
    other_opt = result(spawn(model, cache, "2x48", tmp_path / "o.npy", opt_level=2))
    time.sleep(0.01)
    make_model(tmp_path / "m.onnx", scale=2.0)  # same path, new weights
    other_model = result(spawn(model, cache, "2x48", tmp_path / "o.npy"))
    assert other_model["parsed"] and other_model["optimized"] == 1
    keys = [base["key"], other_dim["key"], other_opt["key"], other_model["key"]]
    assert len(set(keys)) == 4
    parts = {e["key"]: e["meta"]["parts"] for e in CacheStore(str(cache)).entries()}
    assert [d[0] for d in explain(parts[keys[0]], parts[keys[1]])] == ["signature"]
    assert [d[0] for d in explain(parts[keys[0]], parts[keys[2]])] == ["options"]
    assert [d[0] for d in explain(parts[keys[0]], parts[keys[3]])] == ["model"]


@pytest.mark.parametrize("source", ["bytes", "proto"])
def test_in_memory_models_are_cached_too(tmp_path, source):
    import jitort

    path = make_model(tmp_path / "m.onnx")
    proto = onnx.load(path)
    src = proto.SerializeToString() if source == "bytes" else proto
    x = np.ones((2, 48), np.float32)
    a = jitort.load(src, cache_dir=str(tmp_path / "c"), num_threads=1)
    ya = a(x=x)[0]
    b = jitort.load(src, cache_dir=str(tmp_path / "c"), num_threads=1)
    yb = b(x=x)[0]
    assert a.stats.optimized == 1 and b.stats.cache_hits == 1 and b._ir is None
    np.testing.assert_array_equal(ya, yb)
    c = jitort.load(src, cache_dir=str(tmp_path / "c"), num_threads=1, cache=False)
    c(x=x)
    assert c.stats.optimized == 1 and c.stats.cache_hits == 0


def test_model_file_changed_under_a_warm_session(tmp_path):
    import jitort

    path = make_model(tmp_path / "m.onnx")
    cache = str(tmp_path / "c")
    jitort.load(path, cache_dir=cache, num_threads=1)(x=np.ones((2, 48), np.float32))
    warm = jitort.load(path, cache_dir=cache, num_threads=1)
    assert warm._ir is None  # nothing parsed yet
    time.sleep(0.01)
    make_model(tmp_path / "m.onnx", scale=3.0)
    with pytest.raises(jitort.JitortError, match="changed on disk"):
        warm(x=np.ones((5, 48), np.float32))  # a new Signature needs the graph: refuse the new file
    fresh = jitort.load(path, cache_dir=cache, num_threads=1)
    y = fresh(x=np.ones((5, 48), np.float32))[0]
    ref = jitort.load(path, backend="reference")(x=np.ones((5, 48), np.float32))[0]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_a_stuck_compile_elsewhere_does_not_hang(tmp_path, monkeypatch):
    import jitort
    from jitort.cache.fs import file_lock

    path = make_model(tmp_path / "m.onnx")
    cache = str(tmp_path / "c")
    m = jitort.load(path, cache_dir=cache, num_threads=1)
    from jitort.inputs import to_value
    from jitort.ir.types import type_of
    from jitort.session import Signature
    x = np.ones((4, 48), np.float32)
    key = m._cache.key(m.model_digest, Signature((("x", type_of(to_value(x))),)), m._tuning_fingerprint())
    monkeypatch.setenv("JITORT_LOCK_TIMEOUT", "0.3")
    with file_lock(m._cache.store.lock_path(key.digest)):  # "another process" holds the key
        with pytest.warns(RuntimeWarning, match="without waiting"):
            y = m(x=x)[0]
    assert m.stats.optimized == 1
    ref = jitort.load(path, backend="reference")(x=x)[0]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_four_warmup_commands_compile_each_signature_once(tmp_path):
    """`jitort warmup` in 4 processes at once, two signatures each: every key is compiled by
    exactly one of them; the others wait on its lock and load it."""
    model = make_model(tmp_path / "m.onnx", scale=0.25)
    cache = tmp_path / "cache"
    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps([{"x": "3x48"}, {"x": "6x48"}]))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "jitort", "warmup", model, "--shapes-from", str(shapes),
           "--cache-dir", str(cache), "--threads", "1", "--json", "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        results += json.loads(out)
    by_sig: dict = {}
    for r in results:
        by_sig.setdefault(r["signature"], []).append(r["status"])
    assert sorted(by_sig) == ["x=3x48", "x=6x48"]
    for sig, statuses in by_sig.items():
        assert sorted(statuses) == ["cached", "cached", "cached", "compiled"], (sig, statuses)
    import jitort

    for n in (3, 6):
        x = np.random.default_rng(n).standard_normal((n, 48)).astype(np.float32)
        m = jitort.load(model, cache_dir=str(cache), num_threads=1)
        y = m(x=x)[0]
        assert m.stats.cache_hits == 1
        np.testing.assert_allclose(y, jitort.load(model, backend="reference")(x=x)[0], rtol=1e-4, atol=1e-5)
