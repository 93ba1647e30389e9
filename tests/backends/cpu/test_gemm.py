"""Generated GEMM (jitort.backends.cpu.gemm) against NumPy float64.

Every case compiles one plan (about 0.5-1 s each), so the cases are chosen to cover together:
each M-remainder height of the host tile (1..MR-1), N not a multiple of NR, K=1, K spanning
several KC blocks (and a last block of 1), MC blocking, M=1 (gemv), 0-sized dims, each
activation, bias, residual, alpha, 1 and 2 threads, and a vector width other than the host's.
"""

from __future__ import annotations

import ast
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import erf

from jitort.backends.cpu import gemm
from jitort.backends.cpu.gemm import ACTIVATIONS, Epilogue, GemmPlan, TileConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RTOL = 2e-5  # float32, per element, relative to the magnitude of the terms summed there


def reference(A, B, ep: Epilogue, bias, res):
    y = ep.alpha * (A.astype(np.float64) @ B.astype(np.float64))
    scale = abs(ep.alpha) * (np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64))
    if bias is not None:
        y = y + bias
        scale = scale + np.abs(bias)
    if ep.activation == "relu":
        y = np.maximum(y, 0)
    elif ep.activation == "gelu_erf":
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
    elif ep.activation == "gelu_tanh":
        y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))
    if res is not None:
        y = y + res
        scale = scale + np.abs(res)
    return y, scale + 1.0


def run_case(M, K, N, ep=None, threads=1, config=None, seed=0, **kw):
    ep = ep or Epilogue()
    rng = np.random.default_rng(seed)
    plan = GemmPlan(M, K, N, epilogue=ep, threads=threads, config=config, **kw)
    A = rng.standard_normal((M, K), dtype=np.float32)
    B = rng.standard_normal((K, N), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32) if ep.bias else None
    res = rng.standard_normal((M, N), dtype=np.float32) if ep.residual else None
    packed = plan.pack_b(B)
    out = np.full((M, N), np.nan, np.float32)  # every element must be written
    got = plan(A, packed, out, bias=bias, residual=res)
    assert got is out
    want, scale = reference(A, B, ep, bias, res)
    err = np.abs(out - want) / scale
    assert not np.isnan(out).any(), "unwritten or NaN elements"
    assert err.max(initial=0) <= RTOL, f"max scaled error {err.max():.3g} at {np.unravel_index(err.argmax(), err.shape)}"
    out2 = plan(A, packed, bias=bias, residual=res)  # a second call on a fresh buffer agrees
    np.testing.assert_array_equal(out2, out)
    return plan


MR = gemm.choose_config(64, 64, 64).MR  # the host's default tile height
CASES = [
    # M, K, N, epilogue, threads, config, what it covers
    (1, 7, 33, Epilogue(), 1, None),                                  # gemv, N edge
    (1, 257, 100, Epilogue(bias=True, activation="gelu_tanh"), 2, None),  # gemv, 2T over panels
    (7, 33, 37, Epilogue(), 1, None),                                 # remainder 1, N edge
    (100, 257, 100, Epilogue(True, "gelu_erf", True), 2, None),       # rem 4, KC blocks 256+1
    (33, 1, 70, Epilogue(activation="relu"), 2, None),                # K = 1, rem 3
    (257, 64, 16, Epilogue(bias=True), 2, None),                      # split over M tiles, rem 5
    (14, 50, 24, Epilogue(residual=True, alpha=0.5), 1, None),        # rem 2, alpha
    (200, 300, 48, Epilogue(bias=True, activation="relu"), 2, TileConfig(6, 16, 128, 36)),  # MC
]


@pytest.mark.parametrize("M,K,N,ep,threads,config", CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}-{c[4]}T" for c in CASES])
def test_gemm_matches_float64(M, K, N, ep, threads, config):
    plan = run_case(M, K, N, ep, threads, config)
    if config is None and M > 1 and plan.MR == MR == 6:
        assert M % MR in (0, *plan.heights)


@pytest.mark.parametrize("rem", range(1, MR + 1))
def test_every_remainder_height_of_the_host_tile(rem):
    """M = 2*MR + rem for every rem: each tile height the driver can meet is generated and right."""
    plan = run_case(2 * MR + rem, 19, 101, Epilogue(bias=True), 1 + rem % 2, None)  # N edge too
    assert plan.MR == MR
    assert rem % MR in (0, *plan.heights)


def test_other_vector_width():
    # 16-lane (AVX-512) IR on any host: LLVM legalizes it; correctness only
    vw = 16 if gemm.VW != 16 else 8
    plan = run_case(13, 40, 70, Epilogue(activation="gelu_tanh"), 2, None, vector_width=vw)
    assert plan.VW == vw and f", {vw})" in plan.source


@pytest.mark.parametrize("M,K,N", [(0, 5, 7), (5, 0, 7), (5, 7, 0)])
def test_zero_sized(M, K, N):
    run_case(M, K, N, Epilogue(bias=True, activation="relu"), 1, None)


def test_loops_cover_every_row_once():
    # the driver's loop structure (thread ranges, MC blocks, MR tiles) partitions [0, M) x panels
    rnd = random.Random(0)
    for _ in range(300):
        M, NP, MR = rnd.randint(1, 300), rnd.randint(1, 9), rnd.randint(1, 14)
        T, MC = rnd.randint(1, 4), MR * rnd.randint(1, 10)
        count = np.zeros((M, NP), int)
        for m_lo, m_hi, p_lo, p_hi in gemm._thread_ranges(M, NP, MR, T):
            for i0 in range(m_lo, m_hi, MC):
                i1 = min(i0 + MC, m_hi)
                for i in range(i0, i1, MR):
                    h = min(MR, i1 - i)
                    assert h in gemm.tile_heights(M, MR, MC, gemm._thread_ranges(M, NP, MR, T))
                    count[i:i + h, p_lo:p_hi] += 1
        assert (count == 1).all(), (M, NP, MR, T, MC)


def test_generated_source_parses_and_names_every_height():
    plan = GemmPlan.__new__(GemmPlan)  # generate only, no compile
    plan.M, plan.K, plan.N, plan.threads, plan.epilogue = 101, 64, 70, 2, Epilogue(True, "gelu_erf", True)
    plan.VW, plan.MR, plan.NR, plan.KC, plan.MC = 8, 6, 16, 32, 24
    plan.NP = 5
    plan.ranges = gemm._thread_ranges(101, 5, 6, 2)
    plan.heights = gemm.tile_heights(101, 6, 24, plan.ranges)
    plan.name = "gemm_test"
    src = plan._generate()
    ast.parse(src)
    for h in plan.heights:
        assert f"acc, {h}, 16, 64, 70, 16, 8)" in src and f"acc, {h}, 16, 64, 70, 6, 8)" in src


def test_math_error_bounds():
    """The activations as the driver compiles them (fastmath=True) against float64: vecmath's
    bound (ulps, or an absolute floor in the negative tails), and no subnormal results (each
    costs a microcode assist: the erf form used before returned them for x < -13)."""
    import numba

    from jitort.backends.cpu.vecmath import ERROR_BOUNDS

    @numba.njit(error_model="numpy", fastmath=True)
    def apply(x, out_ge, out_gt, out_re):
        for i in range(x.size):
            out_ge[i] = gemm.gelu_erf_f32(x[i])
            out_gt[i] = gemm.gelu_tanh_f32(x[i])
            out_re[i] = gemm.relu_f32(x[i])

    x = np.concatenate([np.linspace(-90, 90, 20001), np.linspace(-6, 6, 20001),
                        np.geomspace(1e-30, 1e4, 2001), -np.geomspace(1e-30, 1e4, 2001)]).astype(np.float32)
    ge, gt, re_ = (np.empty_like(x) for _ in range(3))
    apply(x, ge, gt, re_)
    x64 = x.astype(np.float64)
    want = {"gelu_erf": 0.5 * x64 * (1 + erf(x64 / np.sqrt(2))),
            "gelu_tanh": 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3)))}
    tiny = np.finfo(np.float32).tiny
    for name, got in (("gelu_erf", ge), ("gelu_tanh", gt)):
        abserr = np.abs(got - want[name])
        assert np.max(abserr / np.maximum(1, np.abs(x64))) < 1e-7, name  # measured 7.1e-8, 7.2e-8
        max_ulp, floor = ERROR_BOUNDS[name]
        ulp = abserr / np.spacing(np.abs(want[name]).astype(np.float32)).astype(np.float64)
        bad = ~((ulp <= max_ulp) | (abserr <= floor))
        assert not bad.any(), (name, x[bad][:5], got[bad][:5])
        assert not ((got != 0) & (np.abs(got) < tiny) & (np.abs(x) > 1e-30)).any(), name
    np.testing.assert_array_equal(re_, np.maximum(x, 0))


def _vector_ops(plan) -> int:
    """Packed float ops of the host's vector width in the driver's optimized LLVM IR."""
    plan(np.zeros((plan.M, plan.K), np.float32), plan.pack_b(np.zeros((plan.K, plan.N), np.float32)),
         bias=np.zeros(plan.N, np.float32) if plan.epilogue.bias else None)
    llvm = plan.kernel.inspect_llvm(plan.kernel.signatures[0])
    return len(re.findall(rf"= (?:fadd|fmul|fsub|fcmp|select|call)[^\n]*<{plan.VW} x float>", llvm))


@pytest.mark.parametrize("M", [13, 1])  # a tile path and the gemv path
def test_epilogue_loop_vectorizes(M):
    """Every epilogue adds packed ops of the full vector width (zmm on AVX-512): scalar code was
    32 vaddss per tile row for bias/relu (unrolled, then not SLP-vectorized: c and bias may
    alias), and gelu ran on ymm."""
    base = _vector_ops(GemmPlan(M, 16, 70))
    for act in ACTIVATIONS:
        plan = GemmPlan(M, 16, 70, Epilogue(bias=True, activation=act))
        assert _vector_ops(plan) > base, (M, act)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation"):
        Epilogue(activation="swish")
    plan = GemmPlan(3, 4, 5, Epilogue(bias=True))
    A, packed = np.zeros((3, 4), np.float32), plan.pack_b(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="A must be"):
        plan(A.astype(np.float64), packed, bias=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="bias must be"):
        plan(A, packed)
    with pytest.raises(ValueError, match="without a residual"):
        plan(A, packed, bias=np.zeros(5, np.float32), residual=np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="B must be"):
        plan.pack_b(np.zeros((5, 4), np.float32))


def test_disk_cache_is_hit_by_a_second_process(tmp_path):
    code = (
        "import numpy as np, sys\n"
        "from jitort.backends.cpu.gemm import GemmPlan, Epilogue\n"
        "p = GemmPlan(9, 20, 30, Epilogue(bias=True), cache_dir=sys.argv[1])\n"
        "A = np.ones((9, 20), np.float32); B = np.ones((20, 30), np.float32)\n"
        "out = p(A, p.pack_b(B), bias=np.ones(30, np.float32))\n"
        "assert (out == 21).all(), out\n"
        "print(sum(p.kernel.stats.cache_hits.values()))\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    hits = [subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True,
                           capture_output=True, text=True).stdout.strip() for _ in range(2)]
    assert hits == ["0", "1"]
    assert [f for f in os.listdir(tmp_path) if f.endswith(".py")]
