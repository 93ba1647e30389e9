"""numba_start.prepare: Numba's arraymath without its SciPy BLAS probe, cache loads of jitort's
kernels without the registry refresh or the bitcode parse, their caches made at first use -- and
nothing else changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from jitort.backends.cpu.numba_start import elf_defined_symbols


def test_a_plan_runs_without_importing_scipy_linalg_and_numba_blas_still_works():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from onnx import TensorProto, helper
        import jitort

        g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        m = jitort.load(model, backend="cpu", cache=False)
        x = np.arange(10, dtype=np.float32).reshape(2, 5)
        y = m(x=x)[0]
        want = np.exp(x - x.max(1, keepdims=True)); want /= want.sum(1, keepdims=True)
        assert np.allclose(y, want, rtol=1e-5)
        plan = next(iter(m._variants.values())).plan
        assert plan.steps[0].kind != "reference"       # a Numba kernel ran (compiled or loaded)
        assert "scipy.linalg" not in sys.modules, "the BLAS probe imported scipy.linalg"

        import numba

        @numba.njit
        def add(a):                                     # compiles: the registries, arraymath
            return a + 1

        assert add(1) == 2 and "numba.np.arraymath" in sys.modules
        assert "scipy.linalg" not in sys.modules, "the BLAS probe imported scipy.linalg"
        import numba.np.arraymath as arraymath
        import numba.np.linalg as linalg
        assert arraymath._HAVE_BLAS is True
        assert arraymath.ensure_blas is linalg.ensure_blas  # Numba's own function is back

        @numba.njit
        def dot(a, b):
            return np.dot(a, b)

        assert dot(np.ones((3, 4)), np.ones((4, 2))).tolist() == [[4.0, 4.0]] * 3
        assert "scipy.linalg" in sys.modules             # imported when linear algebra needed it
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr


# Run twice with one NUMBA_CACHE_DIR: the first process compiles (and caches) the kernel, the second
# loads it. Prints "loaded" when the load skipped the refresh and the bitcode parse.
_CACHED_KERNEL = textwrap.dedent("""
    import sys
    import numpy as np
    import numba.core.codegen as codegen
    from jitort.backends.cpu import backend  # noqa: F401  (prepare() runs)
    from jitort.backends.cpu.row_kernels import _ln_1

    parsed = []
    real_parse = codegen.ll.parse_bitcode
    codegen.ll.parse_bitcode = lambda data: parsed.append(1) or real_parse(data)

    rng = np.random.default_rng(0)
    x, g, b = (rng.standard_normal(s).astype(np.float32) for s in ((5, 7), 7, 7))
    out = np.empty_like(x)
    _ln_1(x, g, b, 1e-5, out)
    mu, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    assert np.allclose(out, (x - mu) / np.sqrt(var + 1e-5) * g + b, atol=1e-5)
    if _ln_1.stats.cache_hits:
        assert "numba.typed.dictimpl" not in sys.modules, "the load refreshed the registries"
        assert not parsed, "the load parsed the linking bitcode"
        lib = next(iter(_ln_1.overloads.values())).library
        assert "_linking_bitcode" in vars(lib)

        import numba

        @numba.njit  # links the loaded kernel into a caller: its bitcode is parsed now
        def caller(x, g, b, out):
            _ln_1(x, g, b, 1e-5, out)
            return out.sum()

        out2 = np.zeros_like(x)
        assert np.isclose(caller(x, g, b, out2), out.sum(), rtol=1e-5) and np.array_equal(out2, out)
        assert parsed and lib._shared_module is not None
        print("loaded")
    else:
        print("compiled")
""")


def test_a_cached_kernel_loads_without_refresh_or_bitcode_and_still_links(tmp_path):
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", _CACHED_KERNEL], capture_output=True, text=True, timeout=300,
                           env=env) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stdout + r.stderr
    assert [r.stdout.split()[-1] for r in runs] == ["compiled", "loaded"]


def test_a_jitort_kernel_s_numba_cache_is_made_at_its_first_use_and_others_at_once(tmp_path):
    (tmp_path / "user_mod.py").write_text("import numba\n\n@numba.njit(cache=True)\ndef inc(x):\n    return x + 1\n")
    code = textwrap.dedent("""
        import numpy as np
        from numba.core.caching import FunctionCache
        from jitort.backends.cpu import backend  # noqa: F401
        from jitort.backends.cpu.numba_start import _CacheOnFirstUse
        from jitort.backends.cpu.row_kernels import _ln_1
        import user_mod
        assert type(user_mod.inc._cache) is FunctionCache, "another package's function: Numba's own"
        assert type(_ln_1._cache) is _CacheOnFirstUse and _ln_1._cache._real is None
        x = np.ones((3, 4), np.float32)
        _ln_1(x, x[0], x[0], 1e-5, np.empty_like(x))   # compiles and saves, or loads
        assert type(_ln_1._cache._real) is FunctionCache
        assert _ln_1._cache.cache_path == _ln_1._cache._real.cache_path
        print(user_mod.inc(1), _ln_1.stats.cache_hits and "loaded" or "compiled")
    """)
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path / "nc"), "PYTHONPATH": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env=env, cwd=str(tmp_path)) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stdout + r.stderr
    assert [r.stdout.split()[-2:] for r in runs] == [["2", "compiled"], ["2", "loaded"]]


def test_elf_symbols_match_the_modules_defined_symbols():
    import llvmlite.binding as ll
    import numba
    from jitort.backends.cpu import backend  # noqa: F401

    @numba.njit
    def f(x):
        return np.sum(x * 2.0)

    import numpy as np

    f(np.ones(3))
    lib = next(iter(f.overloads.values())).library
    mod = ll.parse_bitcode(lib._get_module_for_linking().as_bitcode())
    want = {v.name for vs in (mod.functions, mod.global_variables) for v in vs if not v.is_declaration}
    assert elf_defined_symbols(lib._get_compiled_object()) == want


@pytest.mark.parametrize("blob", [b"", b"\x7fELF", b"\x7fELF\x02\x01" + b"\xff" * 80, b"MZ" + b"\0" * 100,
                                  b"\x7fELF\x01\x01" + b"\0" * 80])
def test_elf_symbols_of_anything_else_is_none(blob):
    assert elf_defined_symbols(blob) is None



_NRT_RUN = textwrap.dedent("""
    import numpy as np
    from numba.core.runtime import nrt
    from jitort.backends.cpu import backend  # noqa: F401  (prepare() runs)
    from jitort.backends.cpu.row_kernels import _ln_1

    x, g, b = np.ones((2, 3), np.float32), np.ones(3, np.float32), np.zeros(3, np.float32)
    x[:, 0] = 4.0
    out = np.empty_like(x)
    _ln_1(x, g, b, 0.0, out)
    assert np.allclose(out, [[2 ** 0.5, -(0.5 ** 0.5), -(0.5 ** 0.5)]] * 2, atol=1e-5), out
    a = nrt.rtsys.meminfo_alloc(64)  # the runtime's functions work (allocation, reference counts)
    del a
    print("loaded" if "_linking_bitcode" in vars(nrt.rtsys.library) else "compiled")
""")


def test_the_runtime_functions_load_from_their_object_code_and_a_bad_file_is_rebuilt(tmp_path):
    from jitort.backends.cpu.numba_start import read_checked

    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run():
        r = subprocess.run([sys.executable, "-c", _NRT_RUN], capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout.split()[-1]

    assert run() == "compiled"
    (path,) = (tmp_path / "jitort_nrt").glob("nrt-*.o")
    good = path.read_bytes()
    assert read_checked(str(path)) is not None
    assert run() == "loaded"
    for bad in (good[:len(good) // 2], good[:-100] + bytes([good[-100] ^ 1]) + good[-99:], b""):
        path.write_bytes(bad)
        assert run() == "compiled"               # never used: compiled again ...
        assert read_checked(str(path)) is not None  # ... and written back whole
        assert run() == "loaded"


def test_checked_blobs_round_trip_and_refuse_any_change(tmp_path):
    from jitort.backends.cpu.numba_start import read_checked, write_checked

    path = str(tmp_path / "x.o")
    assert read_checked(path) is None
    write_checked(path, b"abc", b"", b"\0" * 1000)
    assert read_checked(path) == (b"abc", b"", b"\0" * 1000)
    data = open(path, "rb").read()
    for i in range(len(data)):
        open(path, "wb").write(data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1:])
        assert read_checked(path) is None, i
    open(path, "wb").write(data + b"x")
    assert read_checked(path) is None
    assert [p.name for p in tmp_path.iterdir()] == ["x.o"]  # no temp file left behind


def test_array_arguments_are_typed_without_importing_numpy_ma_and_as_numba_types_them():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from numba.core import errors
        from numba.core.typing import typeof as T
        from jitort.backends.cpu import backend  # noqa: F401  (prepare() runs)
        from jitort.backends.cpu.row_kernels import _ln_1

        x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
        out = np.empty_like(x)
        _ln_1(x, np.ones(7, np.float32), np.zeros(7, np.float32), 1e-5, out)   # typed, then run
        assert abs(out.mean()) < 1e-5
        assert "numpy.ma" not in sys.modules, "typing an array argument imported numpy.ma"

        ro = np.arange(6.0).reshape(2, 3)
        ro.flags.writeable = False
        arrays = [x, np.asfortranarray(x), x[:, ::2], x[1], np.array(1.0), ro,
                  np.zeros((0, 3), np.int8), np.ones(4, bool), np.ones(3, np.complex64),
                  np.zeros(2, "datetime64[s]"), np.zeros((2, 1, 3), np.uint16)[:, :, 1:],
                  np.array([None]), np.zeros(3, np.float16)]
        c = T._TypeofContext(T.Purpose.argument)
        ours = [T.typeof_impl(a, c) for a in arrays]
        with np.testing.assert_raises(errors.NumbaValueError):
            T.typeof_impl(np.zeros(2, np.longdouble), c)                       # no such Numba dtype
        assert "numpy.ma" not in sys.modules
        numba_own = T._typeof_ndarray                                          # imports numpy.ma
        assert ours == [numba_own(a, c) for a in arrays] and all(ours)
        with np.testing.assert_raises(errors.NumbaValueError):
            numba_own(np.zeros(2, np.longdouble), c)
        assert "numpy.ma" in sys.modules
        with np.testing.assert_raises(errors.NumbaTypeError):                  # refused, as before
            T.typeof_impl(np.ma.masked_array(x), c)
        import numba

        @numba.njit
        def total(a):
            return a.sum()

        with np.testing.assert_raises(errors.NumbaTypeError):                  # a first call too
            total(np.ma.masked_array(x))
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
