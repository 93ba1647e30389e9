"""jitort.backends.cpu.vecmath: accuracy vs float64 references, special values, vectorization.

Run as a script to print the measured max errors per function (the table in vecmath's docstring):
    python tests/backends/cpu/test_vecmath.py
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import special

numba = pytest.importorskip("numba")
from jitort.backends.cpu import vecmath as vm

NAMES = list(vm.FUNCTIONS)
_C = np.sqrt(2.0 / np.pi)


def _host_features() -> dict:
    import llvmlite.binding as ll
    try:
        return dict(ll.get_host_cpu_features())
    except RuntimeError:
        return {}


_HOST_AVX512 = bool(_host_features().get("avx512f")) and numba.config.CPU_FEATURES is None


def _ref(name: str, x32: np.ndarray) -> np.ndarray:
    """float64 reference of ``name`` at the float32 points x32."""
    with np.errstate(all="ignore"):
        x = x32.astype(np.float64)
        if name == "exp":
            return np.exp(x)
        if name == "log":
            return np.log(x)
        if name == "erf":
            return special.erf(x)
        if name == "tanh":
            return np.tanh(x)
        if name == "sigmoid":
            return special.expit(x)
        if name == "softplus":
            return np.logaddexp(0.0, x)
        if name == "gelu_erf":
            y = 0.5 * x * special.erfc(-x / np.sqrt(2.0))
        elif name == "gelu_tanh":
            y = x * special.expit(2.0 * _C * (x + 0.044715 * x * x * x))
        else:
            raise KeyError(name)
        return np.where(x == -np.inf, 0.0, y)      # the limit, not -inf * 0


def _errors(y: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(error in float32 ulps of the reference, absolute error) per element; a non-finite
    expected or produced value counts 0 when it matches exactly and inf otherwise."""
    with np.errstate(all="ignore"):
        r32 = ref.astype(np.float32)
        y64 = y.astype(np.float64)
        abserr = np.abs(y64 - ref)
        ulp = abserr / np.spacing(np.abs(r32)).astype(np.float64)
        special_ = ~np.isfinite(r32) | ~np.isfinite(y)
        same = (y == r32) | (np.isnan(y) & np.isnan(r32))
    ulp = np.where(special_, np.where(same, 0.0, np.inf), ulp)
    abserr = np.where(special_, np.where(same, 0.0, np.inf), abserr)
    return ulp, abserr


def _bad(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    max_ulp, floor = vm.ERROR_BOUNDS[name]
    ulp, abserr = _errors(y, _ref(name, x))
    return ~((ulp <= max_ulp) | (abserr <= floor))


# -- samples ---------------------------------------------------------------------------------------

SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 1e-45, -1e-45, 1e-40, -1e-40,
                     1.1754944e-38, -1.1754944e-38, 3.4028235e38, -3.4028235e38, 88.7228, 88.7229,
                     88.72283, -87.33655, -103.9, -103.97, -104.0, -150.0, 0.921875, -0.921875,
                     3.99, 4.0, 4.01, 0.625, -0.625, 9.1, -9.1, 9.0, 20.0, -20.0, 1e20, -1e20,
                     0.5, 2.0, np.e, -5.66, -5.7, -14.0, 16.0, -16.0, 1e-8, -1e-8],
                    dtype=np.float32)


def _bit_sweep(step: int) -> np.ndarray:
    """Every step-th float32 bit pattern: both signs, every exponent, denormals, inf and nan."""
    return np.arange(0, 2**32, step, dtype=np.uint64).astype(np.uint32).view(np.float32)


def _dense(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [rng.uniform(-12, 12, 1 << 20), rng.uniform(-110, 95, 1 << 17),
             rng.uniform(0.5, 2.0, 1 << 17), rng.uniform(-1.5, 1.5, 1 << 17),
             np.exp(rng.uniform(-100, 88, 1 << 17)), rng.standard_normal(1 << 20) * 3]
    for s in (0.625, 0.921875, 4.0, 9.1, 2 * 0.921875 ** 0.5, 5.5, 5.66):   # the branch points
        parts.append(rng.uniform(s - 1e-2, s + 1e-2, 1 << 12) * rng.choice([-1, 1], 1 << 12))
    return np.concatenate(parts).astype(np.float32)


def _samples(step: int = 4097) -> np.ndarray:
    return np.concatenate([SPECIALS, _bit_sweep(step), _dense()])


# -- accuracy --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def samples():
    return _samples()


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_vs_float64(name, samples):
    y = vm.apply(name, samples)
    assert y.dtype == np.float32 and y.shape == samples.shape
    bad = _bad(name, samples, y)
    if bad.any():
        i = np.flatnonzero(bad)[:8]
        raise AssertionError(f"{name}: {bad.sum()} of {bad.size} beyond {vm.ERROR_BOUNDS[name]}: "
                             f"x={samples[i]} got={y[i]} ref={_ref(name, samples[i])}")


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("log", "softplus")])
def test_bounds_hold_in_callers_compiled_with_reassoc(name, samples):
    """Generated elementwise kernels (codegen_elementwise.FASTMATH) add reassoc, which vecmath
    advises against; exp and everything built on it except softplus (log's log1p correction)
    keep their bounds anyway: the magic-number rounding reads k from the bits, Cody-Waite is
    two fmuladds."""
    fm = {"nsz", "arcp", "contract", "afn", "reassoc"}
    fresh = numba.njit(error_model="numpy", fastmath=fm)(vm.FUNCTIONS[name][1].py_func)
    y = np.empty_like(samples)
    fresh(samples, y)
    bad = _bad(name, samples, y)
    assert not bad.any(), (name, samples[bad][:8], y[bad][:8])


@pytest.mark.parametrize("name", NAMES)
def test_special_values(name):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    y = vm.apply(name, x)
    assert np.isnan(y[0])
    expect = {
        "exp": [np.inf, 0.0, 1.0, 1.0], "log": [np.inf, np.nan, -np.inf, -np.inf],
        "erf": [1.0, -1.0, 0.0, 0.0], "tanh": [1.0, -1.0, 0.0, 0.0],
        "sigmoid": [1.0, 0.0, 0.5, 0.5], "softplus": [np.inf, 0.0, np.log(2), np.log(2)],
        "gelu_erf": [np.inf, 0.0, 0.0, 0.0], "gelu_tanh": [np.inf, 0.0, 0.0, 0.0],
    }[name]
    np.testing.assert_allclose(y[1:], np.array(expect, np.float32), rtol=1e-7, atol=0)


@numba.njit(error_model="numpy", fastmath=vm.FASTMATH)
def _map_exp_neg(x, out):
    vm.wide_vectors()
    for i in range(x.shape[0]):
        out[i] = vm.exp_neg(x[i])


def test_exp_neg_on_its_domain(samples):
    """exp_neg (softmax's exp of x - max): every x <= 0, denormal results, -inf, nan; and a
    few positive x it also gets right (overflow to inf up to x = 176 on every path)."""
    x = np.concatenate([samples[(samples <= 0) | np.isnan(samples)],
                        np.random.default_rng(3).uniform(-110, 0, 1 << 20).astype(np.float32),
                        np.array([-0.0, 0.0, -np.inf, np.nan, -87.3365, -103.97, -104.0, -1e30,
                                  1.0, 88.7, 88.8, 100.0, 176.0], np.float32)])
    y = np.empty_like(x)
    _map_exp_neg(x, y)
    max_ulp, _ = vm.ERROR_BOUNDS["exp_neg"]
    ulp, _ = _errors(y, _ref("exp", x))
    assert ulp.max() <= max_ulp, (ulp.max(), x[np.argmax(ulp)])
    assert y[-13] == 1.0 and y[-12] == 1.0 and y[-11] == 0.0 and np.isnan(y[-10])
    assert np.isfinite(y[-4]) and np.isinf(y[-3:]).all()


def test_exp_overflow_underflow_and_log_denormals():
    x = np.array([88.72, 88.7228, 88.7229, 89.0, 1e5, -87.3, -100.0, -103.9, -104.0, -1e5],
                 np.float32)
    y = vm.apply("exp", x)
    assert np.isfinite(y[:2]).all() and np.isinf(y[2:5]).all()
    assert (y[6:8] > 0).all() and (y[6:8] < np.finfo(np.float32).tiny).all()   # denormals
    assert (y[8:] == 0).all()
    d = np.array([1e-45, 1e-40, 1e-39, 1.17e-38], np.float32)
    assert not _bad("log", d, vm.apply("log", d)).any()


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 0, 5), (1, 1), (5, 17), (2, 3, 129)])
def test_shapes_and_out(shape):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float32) * 3
    for name in ("exp", "gelu_erf"):
        y = vm.apply(name, x)
        assert y.shape == x.shape and y.dtype == np.float32
        assert not _bad(name, x.reshape(-1), y.reshape(-1)).any()
        out = np.empty(shape, np.float32)
        assert vm.apply(name, x, out=out) is out
        np.testing.assert_array_equal(out, y)
    # float64 and strided input are cast/copied; results equal the float32 ones
    x64 = rng.standard_normal((4, 6))
    np.testing.assert_array_equal(vm.apply("tanh", x64[:, ::2]),
                                  vm.apply("tanh", x64[:, ::2].astype(np.float32)))


def test_bad_arguments():
    with pytest.raises(KeyError, match="available"):
        vm.apply("cosh", np.zeros(3, np.float32))
    with pytest.raises(ValueError):
        vm.apply("exp", np.zeros(3, np.float32), out=np.zeros(4, np.float32))


def test_checker_can_fail(samples):
    """The accuracy check rejects results a few ulps off (so the tests above can fail)."""
    x = samples[np.isfinite(samples) & (np.abs(samples) < 50) & (np.abs(samples) > 1e-3)]
    y = vm.apply("exp", x)
    assert not _bad("exp", x, y).any()
    off3 = y
    for _ in range(3):
        off3 = np.nextafter(off3, np.inf)                 # 3 ulps up
    assert _bad("exp", x, off3).mean() > 0.99
    assert _bad("tanh", x, np.tanh(x).astype(np.float32) * np.float32(1 + 4e-7)).any()


def test_scalar_use_in_kernel_and_float64_argument():
    @numba.njit(error_model="numpy", fastmath=vm.FASTMATH)
    def k(a):
        s = np.float32(0)
        for i in range(a.shape[0]):
            s += vm.gelu_tanh(a[i]) + vm.softplus(a[i]) - vm.log(vm.exp(a[i]))
        return s, vm.sigmoid(1.5)                       # a Python float argument

    a = np.linspace(-3, 3, 101).astype(np.float32)
    s, sg = k(a)
    x = a.astype(np.float64)
    want = np.sum(_ref("gelu_tanh", a) + _ref("softplus", a) - x)
    assert abs(s - want) < 1e-4 * np.sum(np.abs(x))
    assert abs(sg - special.expit(1.5)) < 1e-7


# -- vectorization ---------------------------------------------------------------------------------

_LIBM = re.compile(r"call[^\n]*@\"?(llvm\.)?(exp|exp2|expf|log|logf|log1p|erf|erff|erfc|tanh|tanhf"
                   r"|expm1)(\.f32|\.f64)?\"?\(")


@pytest.mark.parametrize("name", NAMES)
def test_loop_vectorizes_without_libm_calls(name):
    fresh = numba.njit(error_model="numpy", fastmath=vm.FASTMATH)(vm.FUNCTIONS[name][1].py_func)
    sig = (numba.float32[::1], numba.float32[::1])
    fresh.compile(sig)
    llvm = fresh.inspect_llvm(sig)
    asm = fresh.inspect_asm(sig)
    assert "<16 x float>" in llvm or "<8 x float>" in llvm, f"{name}: no float vector IR"
    assert re.search(r"\bv\w+ps\b[^\n]*%[zy]mm", asm), f"{name}: no packed zmm/ymm float ops"
    if _HOST_AVX512:   # wide_vectors(): 512-bit vectors although LLVM's Intel tuning prefers 256
        assert re.search(r"\bv\w+ps\b[^\n]*%zmm", asm), f"{name}: no zmm code on an AVX-512 host"
    assert not _LIBM.search(llvm), f"{name}: libm call: {_LIBM.search(llvm).group(0)}"
    assert not re.search(r"call[^\n]*\b(exp|log|erf|tanh)f?\b", asm), f"{name}: libm call in asm"


_PORTABLE_CHECK = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_vecmath import NAMES, _bad, _errors, _map_exp_neg, _ref, _samples
from jitort.backends.cpu import vecmath as vm
x = _samples(65537)
xn = x[x <= 0]
yn = np.empty_like(xn)
_map_exp_neg(xn, yn)
assert _errors(yn, _ref("exp", xn))[0].max() <= vm.ERROR_BOUNDS["exp_neg"][0]
for name in NAMES:
    y = vm.apply(name, x)
    bad = _bad(name, x, y)
    assert not bad.any(), (name, x[bad][:5], y[bad][:5])
    f = vm.FUNCTIONS[name][1]
    asm = f.inspect_asm(f.signatures[0])
    assert "zmm" not in asm and "vscalef" not in asm and "vrcp14" not in asm, name
print("PORTABLE OK", len(NAMES))
"""


@pytest.mark.skipif(not _HOST_AVX512, reason="the host itself runs the portable (non-AVX-512) path")
def test_portable_path_without_avx512(tmp_path):
    """The code for CPUs without AVX-512 (two-factor exponent scaling instead of vscalefps,
    vrcpps instead of vrcp14ps, 256-bit vectors) meets the same bounds: compiled here for
    haswell + the host's features minus AVX-512, in a subprocess with its own Numba cache."""
    import os
    import subprocess
    import sys

    feats = _host_features()
    for k in list(feats):
        if k.startswith(("avx512", "amx", "avx10", "evex512")):
            feats[k] = False
    flat = ",".join(("+" if v else "-") + k for k, v in feats.items())
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=flat,
               NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = _PORTABLE_CHECK.format(tests=os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert p.returncode == 0 and "PORTABLE OK" in p.stdout, p.stderr[-3000:]


def test_vectorization_check_can_fail():
    """The same check flags a loop that calls libm (math.exp does not vectorize here)."""
    import math

    @numba.njit(error_model="numpy", fastmath=vm.FASTMATH)
    def libm_loop(x, out):
        for i in range(x.shape[0]):
            out[i] = math.erf(x[i])

    sig = (numba.float32[::1], numba.float32[::1])
    libm_loop.compile(sig)
    assert _LIBM.search(libm_loop.inspect_llvm(sig))


# -- the measured table ----------------------------------------------------------------------------

def measure(step: int = 4097) -> None:
    x = _samples(step)
    print(f"{x.size} samples (bit sweep step {step} + dense + specials)")
    print(f"{'function':<10} {'max ulp':>9} {'at x':>14} {'max abs':>10} {'max ulp |ref|>=1e-6':>20}")
    for name in NAMES:
        y = vm.apply(name, x)
        ref = _ref(name, x)
        ulp, abserr = _errors(y, ref)
        i = int(np.nanargmax(ulp))
        big = np.abs(ref) >= 1e-6
        print(f"{name:<10} {ulp.max():9.3f} {x[i]:14.6g} {abserr.max():10.3g} "
              f"{ulp[big].max():20.3f}")
        for u in (2, 3, 4, 8, 16):
            over = ulp > u
            if over.any():
                j = np.flatnonzero(over)
                print(f"    ulp>{u}: {over.sum()} elems, max abs {abserr[over].max():.3g}, "
                      f"x in [{x[j].min():.4g}, {x[j].max():.4g}], max|ref| {np.abs(ref[j]).max():.3g}")


if __name__ == "__main__":
    import sys

    measure(int(sys.argv[1]) if len(sys.argv) > 1 else 4097)
