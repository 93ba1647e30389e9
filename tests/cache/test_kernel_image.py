"""The kernel image of a cache entry (jitort/backends/cpu/kernel_image.py): a warm process gives the
dispatchers of the generated modules, the elementwise regions and the package's own kernels
(pools, transposes, attention, even in a module the plan imports after the install) their
overloads from the entry instead of Numba's cache, counted (not timed), with outputs equal to the
compiling process's; made from compiled or from
Numba-cached kernels; ignored when made for another codegen, unreadable, failing to install, or
already loaded."""

from __future__ import annotations

import json
import operator
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r"""
import json, sys
import numpy as np
path, cache, out, threads, probe, feeds = sys.argv[1:7]
import jitort, jitort.cache
from jitort.cache.instrument import compile_counter
from numba.core import caching
from jitort.backends.cpu import kernel_image
counter = compile_counter()
loads = []  # every lookup in Numba's disk cache (index file name: module.function-line...)
real = caching.IndexDataCacheFile.load
def load(self, *a, **k):
    loads.append(self._index_name)
    return real(self, *a, **k)
caching.IndexDataCacheFile.load = load
m = jitort.load(path, cache_dir=cache, num_threads=int(threads))
if feeds != "-":
    y = m(**dict(np.load(feeds)))[0]
else:
    x = np.random.default_rng(3).standard_normal((2, 5, 11, 9)).astype(np.float32)
    y = m(x=x)[0]
np.save(out, y)
again = None
if probe == "second-session":  # the same variant again in this process: nothing added twice
    again = jitort.load(path, cache_dir=cache, num_threads=int(threads))(x=x)[0].tolist() == y.tolist()
refused = None
if probe == "wrong-types":  # a dispatcher given its overload still types its arguments
    import numba
    mods = [v for k, v in sys.modules.items() if k.startswith("jitort_conv_")]
    fn = mods[0].conv_gemm
    try:
        fn(*[np.zeros(4) for _ in range(7)])
    except numba.core.errors.TypingError:
        refused = True
print(json.dumps({"attached": kernel_image.STATS.attached, "compiles": counter.numba,
                  "generated_loads": sum(n.startswith("jitort_") for n in loads),
                  "loads": loads, "saved": jitort.cache.wait_for_saves(), "again": again,
                  "refused": refused}))
"""


def make_cnn(path):
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 5, 3, 3)) * 0.3).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32)
    w2 = (rng.standard_normal((8, 8, 1, 1)) * 0.3).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2"], ["c2"]),
         helper.make_node("Add", ["c2", "r1"], ["s"]),
         helper.make_node("GlobalAveragePool", ["s"], ["p"]),
         helper.make_node("Sigmoid", ["p"], ["q"]),  # an elementwise region
         helper.make_node("Mul", ["q", "p"], ["y"])],
        "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 11, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 1, 1])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return str(path)


def run(model, cache, out, threads=1, probe="-", feeds="-") -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", WORKER, model, str(cache), str(out), str(threads), probe,
                        str(feeds)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def reference(model):
    import jitort

    x = np.random.default_rng(3).standard_normal((2, 5, 11, 9)).astype(np.float32)
    return jitort.load(model, backend="reference")(x=x)[0]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_warm_process_takes_the_generated_kernels_from_the_image(tmp_path, threads):
    model, cache = make_cnn(tmp_path / "cnn.onnx"), tmp_path / "cache"
    first = run(model, cache, tmp_path / "a.npy", threads)
    assert first["attached"] == 0 and first["compiles"] > 0 and first["saved"]
    second = run(model, cache, tmp_path / "b.npy", threads)
    # no lookup in Numba's cache at all: the package's pool and the elementwise region too
    assert second["compiles"] == 0 and second["loads"] == [], second
    assert second["attached"] >= 4, second  # both convolutions', the pool's, the region's
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(b, reference(model), rtol=1e-4, atol=1e-5)


def test_a_package_module_the_plan_imports_later_gets_its_kernels(tmp_path):
    """Attention's kernels live in a package module the backend imports only when a plan has an
    attention node: the install imports it and gives them their overloads."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((1, 2, 7, 8)).astype(np.float32) for _ in range(3))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 7, 8]) for n in "qkv"]
    g = helper.make_graph([helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)], "att", io,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 7, 8])])
    model = str(tmp_path / "att.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)]), model)
    feeds, cache = str(tmp_path / "feeds.npz"), tmp_path / "cache"
    np.savez(feeds, q=q, k=k, v=v)
    first = run(model, cache, tmp_path / "a.npy", feeds=feeds)
    assert first["saved"]
    second = run(model, cache, tmp_path / "b.npy", feeds=feeds)
    assert second["compiles"] == 0 and second["loads"] == [] and second["attached"] >= 1, second
    import jitort

    want = jitort.load(model, backend="reference")(q=q, k=k, v=v)[0]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), want, rtol=1e-4, atol=1e-5)


def test_an_image_is_made_from_kernels_numba_s_cache_loaded(tmp_path):
    model, cache = make_cnn(tmp_path / "cnn.onnx"), tmp_path / "cache"
    run(model, cache, tmp_path / "a.npy")
    shutil.rmtree(cache / "entries")  # Numba's cache of the generated modules stays
    rebuilt = run(model, cache, tmp_path / "b.npy")
    assert rebuilt["compiles"] == 0 and rebuilt["generated_loads"] >= 2 and rebuilt["attached"] == 0
    third = run(model, cache, tmp_path / "c.npy")
    assert third["generated_loads"] == 0 and third["attached"] >= 2, third
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "c.npy"))


def test_the_same_variant_twice_in_one_process_and_a_wrongly_typed_call(tmp_path):
    model, cache = make_cnn(tmp_path / "cnn.onnx"), tmp_path / "cache"
    run(model, cache, tmp_path / "a.npy")
    twice = run(model, cache, tmp_path / "b.npy", probe="second-session")
    assert twice["again"] is True and twice["compiles"] == 0 and twice["generated_loads"] == 0
    typed = run(model, cache, tmp_path / "c.npy", probe="wrong-types")
    assert typed["refused"] is True and typed["attached"] >= 2


def test_an_image_for_another_codegen_or_version_or_unreadable_is_not_used(tmp_path):
    from jitort.backends.cpu import kernel_image
    from jitort.cache.store import CacheStore, _unpickle

    model, cache = make_cnn(tmp_path / "cnn.onnx"), tmp_path / "cache"
    run(model, cache, tmp_path / "a.npy")
    store = CacheStore(str(cache))
    (entry,) = store.entries()
    image = _unpickle(entry["path"], entry["meta"])["kernels"]
    rec = pickle.loads(image)
    assert rec["modules"] and all(k["object"][:4] == b"\x7fELF" for ks in rec["modules"].values() for k in ks)
    for field, value in (("magic", "('x86_64-unknown-linux-gnu', 'another-cpu', '')"), ("numba", "0.1"),
                         ("llvmlite", "0.1"), ("format", 0)):
        altered = pickle.dumps({**rec, field: value})
        assert kernel_image.install(altered) == 0, field
    with pytest.warns(RuntimeWarning, match="kernel image cannot be read"):
        assert kernel_image.install(image[: len(image) // 2]) == 0
    failing = {m: [{**k, "init": pickle.dumps((operator.truediv,))} for k in ks]  # raises when run
               for m, ks in rec["modules"].items()}
    with pytest.warns(RuntimeWarning, match="kernel image could not be installed"):
        assert kernel_image.install(pickle.dumps({**rec, "modules": failing})) == 0
    assert kernel_image.install(None) == 0 and kernel_image.install(b"") == 0
