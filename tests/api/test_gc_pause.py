"""The garbage collector held off while jitort builds long-lived objects (jitort/gc_pause.py): no
collection runs inside a warm start's pauses, one runs inside a cold start's (a compile resumes
it), the collector's state is the caller's after every pause, nested or across threads."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading

import numpy as np
import onnx
from onnx import TensorProto, helper

from jitort import gc_pause

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r"""
import gc, json, sys
import numpy as np
path, cache, disable = sys.argv[1:4]
if disable == "1":
    gc.disable()
inside = []   # for each collection: whether a pause held the collector off (it must not run then)
def watch(phase, info):
    if phase == "start":
        mod = sys.modules.get("jitort.gc_pause")
        inside.append(bool(mod and mod._depth))
gc.callbacks.append(watch)
import jitort
m = jitort.load(path, cache_dir=cache, num_threads=1)
from jitort.cache.instrument import compile_counter  # imports Numba: after the load did
counter = compile_counter()
before = len(inside)
x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7
y = m(x=x)[0]
ok = bool(np.allclose(y, np.tanh(x * 2.0) + 1.0, atol=1e-5))
print(json.dumps({"in_pause": sum(inside), "collections": len(inside) - before, "enabled": gc.isenabled(),
                  "compiles": counter.numba, "ok": ok, "saved": jitort.cache.wait_for_saves()}))
"""


def _model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"]), helper.make_node("Tanh", ["a"], ["b"]),
             helper.make_node("Add", ["b", "one"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[two, one])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _run(path, cache, disable="0"):
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", WORKER, path, cache, disable], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_warm_start_collects_outside_pauses_only(tmp_path):
    path, cache = str(tmp_path / "m.onnx"), str(tmp_path / "cache")
    _model(path)
    cold = _run(path, cache)
    assert cold["ok"] and cold["enabled"] and cold["compiles"] > 0
    assert cold["in_pause"] > 0  # the compile resumed the collector inside the pause
    warm = _run(path, cache)
    assert warm["ok"] and warm["enabled"] and warm["compiles"] == 0
    # after the load, a collection walks what it built (2 here); held off nowhere, the first
    # call alone runs 28
    assert warm["in_pause"] == 0 and 0 < warm["collections"] <= 4
    off = _run(path, cache, disable="1")  # a process that turned it off keeps it off
    assert off["ok"] and not off["enabled"] and off["collections"] == 0


def test_nested_pauses_put_back_the_callers_state():
    assert gc.isenabled()
    with gc_pause.paused():
        assert gc_pause.active()
        with gc_pause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_pause.paused():
            gc_pause.resume()
            assert not gc.isenabled()  # resume gives back the caller's state: off
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_resume_ends_a_pause_and_the_end_keeps_it_on():
    with gc_pause.paused():
        with gc_pause.paused():
            gc_pause.resume()
            assert gc.isenabled() and not gc_pause.active()
        assert gc.isenabled()
    assert gc.isenabled()


def test_a_numba_compile_resumes_the_collector():
    import jitort.backends.cpu.backend  # noqa: F401 - installs the listener (numba_start.prepare)
    import numba

    @numba.njit
    def f(a):
        return a + 1

    with gc_pause.paused():
        assert not gc.isenabled()
        assert f(np.int64(1)) == 2
        assert gc.isenabled()
    assert gc.isenabled()


def test_overlapping_pauses_in_threads_end_enabled():
    start = threading.Barrier(4)
    errors = []

    def work():
        try:
            start.wait()
            for _ in range(200):
                with gc_pause.paused():
                    assert not gc.isenabled()  # whichever thread's pause ended first
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and gc.isenabled() and gc_pause._depth == 0
