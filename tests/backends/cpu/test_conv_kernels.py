"""NHWC conv kernels (jitort.backends.cpu.conv) against the registry's FusedConv reference
kernel (channels_last=1) evaluated in float64.

Every case builds one plan (one generated kernel to compile), so the cases are chosen to cover
together: the four paths (1x1 GEMM, implicit-GEMM im2col, direct, depthwise), H/W of 1, 7, 13, C of 3
and 17, O of 1, 5, 33, strides 1-2, asymmetric pads, dilation 2, every activation, bias,
residual, 1 and 2 threads, 0-sized dims; and the code paths inside each:

* im2col gather: one K block with rows of KW taps copied whole (and taps cut by the border),
  several K blocks of whole taps (C <= KC < K), blocks that cut a tap's channels (C > KC), several
  MC blocks with every remainder tile height, work items over row blocks and over groups of NR
  panels (then each item gathers its own patches), N not a multiple of the panel width;
* direct (``igemm_tile`` through the indirection table): one K block of all taps, blocks of
  whole taps and blocks of a tap's channel range with per-tile tap masks (tiles whose taps in a
  block are all outside the image: ntaps = 0, including the first and the last block), pads past
  the kernel's reach, a 1x1 image, stride 2 with odd sizes, a strided 1x1, the K loop unrolled or
  not (C % 4), 0-sized N, H, O and C;
* the tile epilogue: ``conv_tile`` on the last K block (after ``gemm_tile`` on the others) with
  bias, residual and a Relu/Clip clamp in registers, other activations in a loop after it;
* depthwise: runs of 8 and 4 pixels through ``dw_tile`` (C a multiple of the vector width, and
  with a tail of C % 16 channels), the 1-3 leftover pixels, clamps fused (Relu, Clip with one
  infinite bound) and other activations applied to the finished row, border segments of several
  kinds (pads 0-2, stride 2, dilation 2), a row segment with no in-image tap.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jitort.backends.cpu.conv import ConvPlan
from jitort.ops.registry import find

REF = find("FusedConv", "jitort", 1).kernel
RTOL = 3e-5  # float32, per element, relative to the magnitude of the terms summed there
INF = math.inf

# x NHWC, w OIHW, strides, pads (t, l, b, r), dilations, group, activation, params, bias, residual, threads
CASES = [
    ((2, 7, 13, 3), (5, 3, 3, 3), (1, 2), (1, 0, 2, 1), (2, 1), 1, "Sigmoid", (), True, True, 1),
    ((1, 13, 7, 17), (33, 17, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "Relu", (), True, False, 2),
    ((1, 13, 13, 17), (33, 17, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, "Gelu", (0,), True, False, 2),
    ((3, 1, 1, 3), (1, 3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "", (), False, True, 1),
    ((1, 7, 7, 3), (5, 3, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, "Clip", (0, 6), True, True, 1),
    ((1, 7, 13, 17), (5, 17, 3, 1), (1, 1), (0, 2, 1, 0), (2, 2), 1, "LeakyRelu", (0.1,), False, True, 2),
    ((1, 13, 7, 3), (33, 3, 2, 3), (1, 2), (0, 1, 1, 0), (1, 1), 1, "HardSigmoid", (0.2, 0.5), True, False, 1),
    ((2, 7, 7, 17), (5, 17, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "Tanh", (), True, True, 2),
    ((1, 13, 13, 3), (33, 3, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, "SiLU", (), True, False, 2),
    ((1, 13, 7, 3), (33, 3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "Gelu", (1,), False, True, 1),
    ((1, 7, 7, 17), (1, 17, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Clip", (-INF, 0.5), True, False, 1),
    ((1, 1, 1, 3), (5, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "HardSwish", (), True, True, 1),
    # depthwise
    ((1, 13, 7, 17), (17, 1, 3, 3), (2, 1), (1, 1, 0, 2), (1, 2), 17, "HardSwish", (), True, True, 2),
    ((2, 7, 13, 3), (3, 1, 3, 3), (1, 1), (1, 1, 1, 1), (2, 2), 3, "Gelu", (0,), False, False, 1),
    ((1, 1, 1, 17), (17, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 17, "Sigmoid", (), True, False, 1),
    ((1, 13, 13, 33), (33, 1, 5, 5), (2, 2), (2, 1, 2, 2), (1, 1), 33, "Relu", (), True, True, 2),
    ((1, 7, 7, 17), (17, 1, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 17, "", (), False, False, 1),
    # 0-sized dims
    ((0, 7, 7, 3), (5, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Relu", (), True, True, 1),
    ((1, 0, 7, 3), (5, 3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "Tanh", (), True, False, 1),
    ((1, 7, 7, 3), (0, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "", (), True, False, 1),
    ((1, 7, 7, 0), (5, 0, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Sigmoid", (), True, False, 1),
    ((0, 7, 7, 3), (3, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3, "Relu", (), True, False, 2),
    # implicit GEMM: whole K in one block, stem-like (C=3, 7x7/2), MC blocks, split over pixels
    ((1, 45, 39, 3), (20, 3, 7, 7), (2, 2), (3, 2, 3, 1), (1, 1), 1, "Relu", (), True, False, 2),
    # C <= KC < K: 3 K blocks of 3 taps (K=1152 -> KC=384); MC blocks; residual + Clip
    ((1, 23, 17, 128), (40, 128, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Clip", (0, 6), True, True, 1, "im2col"),
    # C > KC: blocks cut the taps' channels (C=600 -> 2 blocks of 300); split over NR panels
    ((1, 5, 6, 600), (200, 600, 3, 3), (1, 1), (1, 0, 1, 2), (1, 2), 1, "SiLU", (), True, False, 2, "im2col"),
    # strided 1x1 through the gather, C > KC; O not a multiple of the panel
    ((1, 9, 8, 1030), (70, 1030, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, "LeakyRelu", (0.2,), False, True, 2,
     "im2col"),
    # 1x1 in place: M < O splits the panels; K blocks (K=2048)
    ((1, 7, 7, 2048), (150, 2048, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "Relu", (), True, True, 2),
    # direct (C >= 16 picks it): one K block of all 9 taps (no tap masks); O=70 not a multiple
    # of the panel; MC blocks with a remainder tile; residual + Relu fused
    ((1, 23, 17, 32), (70, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Relu", (), True, True, 1),
    # direct: 3 blocks of 3 whole taps (tap masks: tiles in the top/bottom output rows skip a
    # kernel row), 2 threads over row blocks and panel groups, Clip
    ((1, 23, 17, 128), (40, 128, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Clip", (0, 6), True, True, 2),
    # direct: taps cut into channel ranges (C=600 > KC), dilation 2, asymmetric pads
    ((1, 5, 6, 600), (200, 600, 3, 3), (1, 1), (1, 0, 1, 2), (1, 2), 1, "SiLU", (), True, False, 2),
    # direct on a 1x1 image (C=128, 3 tap-row blocks): the first and the last block have no
    # in-image tap (ntaps = 0: a zero store, then the epilogue alone); residual
    ((1, 1, 1, 128), (20, 128, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Relu", (), True, True, 1),
    # direct: pads beyond the kernel's reach on a 2x3 image (output pixels with no in-image
    # tap), 9 one-tap blocks (C=200) with masks, and one 9-tap block (C=64, no masks)
    ((1, 2, 3, 200), (9, 200, 3, 3), (1, 1), (3, 2, 3, 2), (1, 1), 1, "Tanh", (), True, True, 2),
    ((1, 2, 3, 64), (9, 64, 3, 3), (1, 1), (3, 2, 3, 2), (1, 1), 1, "", (), False, False, 1),
    # direct: stride 2, odd sizes, batch 2, an activation applied after the tile
    ((2, 13, 11, 48), (33, 48, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, "LeakyRelu", (0.1,), True, False, 2),
    # direct: strided 1x1 (one tap), C=18 (K loop not unrolled: 18 % 4), O=1
    ((1, 9, 8, 18), (1, 18, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, "Clip", (-INF, 0.5), True, True, 1),
    # direct, 0-sized dims: no pixel, no output channel, no input channel (forced)
    ((0, 7, 7, 32), (5, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Relu", (), True, True, 2),
    ((1, 0, 7, 32), (5, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Relu", (), True, False, 1),
    ((1, 7, 7, 32), (0, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "", (), True, False, 1),
    ((1, 7, 7, 0), (5, 0, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "Relu", (), True, True, 1, "direct"),
    # depthwise: dw_tile runs (8 and 4 pixels), no channel tail
    ((1, 9, 31, 32), (32, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 32, "Relu", (), True, True, 2),
    # depthwise: channel tail (C=40), stride 2, Clip with an infinite lower bound
    ((2, 11, 30, 40), (40, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 40, "Clip", (-INF, 6), True, False, 1),
    # depthwise: 5x5 dilation 2, pads 2, an activation applied to the finished row, residual
    ((1, 12, 27, 48), (48, 1, 5, 5), (1, 1), (2, 2, 2, 2), (2, 2), 48, "Tanh", (), False, True, 1),
    # depthwise: rows whose taps are all outside the image (pads 3 > kernel reach)
    ((1, 2, 21, 16), (16, 1, 3, 3), (1, 1), (3, 1, 3, 1), (1, 1), 16, "Clip", (0, INF), True, False, 2),
]


def _ref(x, w, b, z, plan, ws, strides, pads, dil, group, act, params):
    kw = dict(dilations=list(dil), group=group, kernel_shape=list(ws[2:]), pads=list(pads),
              strides=list(strides), channels_last=1)
    f64 = [None if a is None else a.astype(np.float64) for a in (x, w, b, z)]
    y = REF(*f64, activation=act, activation_params=list(params), **kw)
    a64 = [None if a is None else np.abs(a) for a in f64]
    scale = REF(*a64, activation="", activation_params=[], **kw)  # magnitude of the summed terms
    return y, scale


def _plan(case) -> ConvPlan:
    """The case's plan (an optional 12th field forces the kind)."""
    xs, ws, strides, pads, dil, group, act, params, has_b, has_z, threads, *kind = case
    return ConvPlan(xs, ws, strides, pads, dil, group, act, params, has_b, has_z, threads,
                    kind=kind[0] if kind else None)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-g{c[5]}-{c[6] or 'none'}-t{c[10]}"
                         + (f"-{c[11]}" if len(c) > 11 else ""))
def test_conv_matches_reference(case):
    xs, ws, strides, pads, dil, group, act, params, has_b, has_z, threads = case[:11]
    rng = np.random.default_rng(CASES.index(case))
    plan = _plan(case)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if has_b else None
    z = rng.standard_normal(plan.y_shape).astype(np.float32) if has_z else None
    packed = plan.pack_weights(w, b)
    want, scale = _ref(x, w, b, z, plan, ws, strides, pads, dil, group, act, params)
    assert plan.y_shape == want.shape
    for _ in range(2):  # a second call must give the same result
        got = plan(x, packed, residual=z)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_array_less(np.abs(got - want), RTOL * scale + 1e-6)
    out = np.full(plan.y_shape, np.nan, np.float32)
    assert plan(x, packed, out=out, residual=z) is out
    np.testing.assert_array_equal(out, got)


def test_paths():
    assert ConvPlan((1, 7, 7, 3), (5, 3, 1, 1)).kind == "gemm"
    assert ConvPlan((1, 7, 7, 3), (5, 3, 1, 1), strides=(2, 2)).kind == "im2col"
    assert ConvPlan((1, 7, 7, 3), (5, 3, 3, 3), pads=(1, 1, 1, 1)).kind == "im2col"  # C < 16
    assert ConvPlan((1, 7, 7, 16), (5, 16, 3, 3), pads=(1, 1, 1, 1)).kind == "direct"
    assert ConvPlan((1, 7, 7, 16), (5, 16, 1, 1), strides=(2, 2)).kind == "direct"
    assert ConvPlan((1, 7, 7, 16), (5, 16, 3, 3), kind="im2col").kind == "im2col"
    assert ConvPlan((1, 7, 7, 3), (3, 1, 3, 3), group=3).kind == "depthwise"
    with pytest.raises(ValueError, match="kind"):
        ConvPlan((1, 7, 7, 16), (5, 16, 1, 1), kind="direct")
    with pytest.raises(ValueError, match="kind"):
        ConvPlan((1, 7, 7, 16), (5, 16, 3, 3), kind="gemm")


def _cases(*first_fields):
    return [c for c in CASES if c[:2] in first_fields]


@pytest.mark.parametrize("case", _cases(((1, 23, 17, 32), (70, 32, 3, 3)), ((1, 23, 17, 128), (40, 128, 3, 3)),
                                        ((1, 5, 6, 600), (200, 600, 3, 3)), ((1, 1, 1, 128), (20, 128, 3, 3)),
                                        ((1, 2, 3, 200), (9, 200, 3, 3)), ((1, 9, 8, 18), (1, 18, 1, 1))),
                         ids=lambda c: f"{c[0]}-{c[1]}-t{c[10]}-{c[11] if len(c) > 11 else 'auto'}")
def test_blocking_of_the_direct_cases(case):
    """The direct cases above exercise what they claim (guards the test, not the kernel)."""
    plan = _plan(case)
    if plan.kind != "direct":
        return  # the im2col twins: test_blocking_of_the_gemm_cases
    C, NT = case[0][3], case[1][2] * case[1][3]
    kb = plan.kblocks
    assert sum(nt * kc for _, _, nt, _, kc in kb) == plan.K and kb[0][0] == 0
    if C == 32:
        assert kb == [(0, 0, 9, 0, 32)] and not plan.tap_masks and plan.MC < plan.M and plan.w_shape[0] % plan.NR
    elif C in (128, 200):
        assert len(kb) > 1 and all(c0 == 0 and kc == C for _, _, _, c0, kc in kb) and plan.tap_masks
    elif C == 600:
        per_tap = [[(c0, kc) for _, t, _, c0, kc in kb if t == tap] for tap in range(NT)]
        assert all(len(r) == len(per_tap[0]) > 1 and r[0][0] == 0 and sum(kc for _, kc in r) == C
                   and all(kc % 16 == 0 for _, kc in r[:-1]) for r in per_tap) and plan.tap_masks
    if C == 18:
        assert plan.unroll == 1
    else:
        assert plan.unroll == 4
    if C == 128 and case[10] > 1:
        assert len(plan.chunks) > 2


@pytest.mark.parametrize("case", [c for c in CASES if len(c) > 11 and c[11] == "im2col"] + _cases(
    ((1, 45, 39, 3), (20, 3, 7, 7)), ((1, 7, 7, 2048), (150, 2048, 1, 1))), ids=lambda c: f"{c[0]}-{c[1]}")
def test_blocking_of_the_gemm_cases(case):
    """The GEMM cases above exercise what they claim (guards the test, not the kernel)."""
    xs, ws = case[:2]
    plan = _plan(case)
    C, K = xs[3], plan.K
    whole_panels = all(p_lo == 0 and p_hi == plan.NP for _, _, p_lo, p_hi in plan.chunks)
    if ws[2] == 7:  # work items: row blocks, every panel
        assert plan.KC == K and len(plan.heights) > 1 and plan.MC < plan.M
        assert len(plan.chunks) > 2 and whole_panels
    elif C == 128:
        assert plan.KC % C == 0 and C < plan.KC < K and plan.MC < plan.M
    elif C == 600:  # work items: panel groups (each gathers the patches itself)
        assert plan.KC < C and not whole_panels
    elif C == 1030:
        assert plan.kind == "im2col" and plan.KC < C and ws[0] % plan.NR
    else:
        assert plan.kind == "gemm" and plan.KC < K and not whole_panels


def test_depthwise_case_runs_8_and_4_pixel_tiles():
    """31 output columns: an interior segment of 29 = 3 x 8 + 4 + 1 (guards the case above)."""
    plan = ConvPlan((1, 9, 31, 32), (32, 1, 3, 3), (1, 1), (1, 1, 1, 1), group=32)
    runs = re.findall(rf"dw_tile\(.*, (\d+), \d+, {plan.VW}, \d+\)$", plan.source, re.M)
    assert {"8", "4"} <= set(runs)


def test_one_plan_in_two_threads():
    """A plan lends its scratch to one call at a time: concurrent calls (nogil) give the same
    result, the one that finds the scratch taken running on its own."""
    import threading

    rng = np.random.default_rng(0)
    plan = ConvPlan((1, 30, 30, 16), (24, 16, 3, 3), (1, 1), (1, 1, 1, 1), activation="Relu",
                    has_bias=True)
    packed = plan.pack_weights(rng.standard_normal((24, 16, 3, 3)).astype(np.float32),
                               rng.standard_normal(24).astype(np.float32))
    xs = [rng.standard_normal((1, 30, 30, 16)).astype(np.float32) for _ in range(2)]
    want = [plan(x, packed) for x in xs]
    got = [None, None]

    def work(i):
        for _ in range(20):
            got[i] = plan(xs[i], packed)
            assert np.array_equal(got[i], want[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert plan._ws_lock.acquire(False)  # held: this call runs on a scratch of its own
    try:
        before = [w.copy() for w in plan._ws]
        x = xs[0].copy()  # at an address no earlier call's indirection table held
        assert np.array_equal(plan(x, packed), want[0])
        assert all(np.array_equal(w, b) for w, b in zip(plan._ws, before))
    finally:
        plan._ws_lock.release()


_NO_ALLOCATION = textwrap.dedent("""
    import sys
    import numpy as np
    from jitort.backends.cpu import backend  # noqa: F401  (prepare(): cache loads without Numba's refresh)
    from jitort.backends.cpu.conv import ConvPlan
    from jitort.backends.cpu.pool import global_pool

    rng = np.random.default_rng(0)
    out = []
    for x, w, kw in [((1, 9, 9, 16), (24, 16, 3, 3), dict(pads=(1, 1, 1, 1), threads=2)),       # direct
                     ((1, 9, 9, 3), (8, 3, 3, 3), dict(pads=(1, 1, 1, 1))),                    # im2col
                     ((1, 9, 9, 16), (24, 16, 1, 1), dict(threads=2)),                          # gemm
                     ((1, 9, 9, 16), (16, 1, 3, 3), dict(pads=(1, 1, 1, 1), group=16, threads=2))]:
        plan = ConvPlan(x, w, cache_dir=sys.argv[1], **kw)
        out.append(plan(rng.standard_normal(x).astype(np.float32),
                        plan.pack_weights(rng.standard_normal(w).astype(np.float32))))
    y = np.empty((1, 1, 1, 16), np.float32)
    out.append(global_pool(rng.standard_normal((1, 9, 9, 16)).astype(np.float32), y, False))
    np.savez(sys.argv[2], *out)
    print("numba.np.arrayobj" in sys.modules)
""")


def test_cached_kernels_allocate_nothing_so_loading_them_imports_no_array_implementations(tmp_path):
    """np.empty inside a kernel brings Numba's implementation of it along, and loading such a
    kernel from the cache imports numba.np.arrayobj (~25 ms of a warm start): the conv kernels
    take their scratch from the plan and the global pool its accumulators from its caller."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = [subprocess.run([sys.executable, "-c", _NO_ALLOCATION, str(tmp_path), str(tmp_path / f"{i}.npz")],
                           capture_output=True, text=True, timeout=600, env=env) for i in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stdout + r.stderr
    assert runs[1].stdout.split()[-1] == "False"  # loaded: nothing imported the array implementations
    first, second = (np.load(tmp_path / f"{i}.npz") for i in range(2))
    assert all(np.array_equal(first[k], second[k]) for k in first.files)


@pytest.mark.parametrize("C,MR,MC", [(16, 6, 48), (16, 4, 32), (24, 6, 72)])
def test_direct_zero_row_outlives_the_work_loop(C, MR, MC):
    """The taps outside the image read a row of zeros through its address in the indirection
    table. Numba frees an array after its last use, which was taking that address: the zero row
    went back to the allocator, and with these blocks (zrow's C floats and live's MC/MR int64s
    the same size) the very next allocation, the tap masks, landed on it. x = 0 and huge weights:
    every output must be exactly 0 (it was up to 4e-11 at 1 thread; at 2 threads light VGG-19's
    border pixels came out 1e24 too large, sometimes inf -> NaN)."""
    from jitort.backends.cpu.gemm import TileConfig

    x = np.zeros((1, 9, 9, C), np.float32)
    w = np.full((64, C, 3, 3), 1e30, np.float32)
    plan = ConvPlan(x.shape, w.shape, (1, 1), (1, 1, 1, 1), kind="direct",
                    config=TileConfig(MR=MR, NR=64, KC=2 * C, MC=MC))
    assert plan.tap_masks and len(plan.kblocks) > 1  # the masks are allocated after the zero row
    y = plan(x, plan.pack_weights(w))
    assert np.count_nonzero(y) == 0

def test_errors():
    with pytest.raises(NotImplementedError, match="grouped"):
        ConvPlan((1, 7, 7, 4), (4, 2, 3, 3), group=2)
    with pytest.raises(ValueError, match="channels"):
        ConvPlan((1, 7, 7, 4), (4, 3, 3, 3))
    with pytest.raises(ValueError, match="activation"):
        ConvPlan((1, 7, 7, 3), (5, 3, 1, 1), activation="Elu")
    with pytest.raises(ValueError, match="params"):
        ConvPlan((1, 7, 7, 3), (5, 3, 1, 1), activation="Clip", activation_params=(0,))
    with pytest.raises(ValueError, match="does not fit"):
        ConvPlan((1, 2, 2, 3), (5, 3, 3, 3))
    plan = ConvPlan((1, 7, 7, 3), (5, 3, 1, 1), has_bias=True)
    with pytest.raises(ValueError, match="B must be"):
        plan.pack_weights(np.zeros((5, 3, 1, 1), np.float32))
    packed = plan.pack_weights(np.zeros((5, 3, 1, 1), np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="float32"):
        plan(np.zeros((1, 7, 7, 3)), packed)
    with pytest.raises(ValueError, match="residual"):
        plan(np.zeros((1, 7, 7, 3), np.float32), packed, residual=np.zeros((1, 7, 7, 5), np.float32))


def test_cache_dir_writes_the_generated_module(tmp_path):
    """With cache_dir the kernel is a module file there (Numba's disk cache needs a real file)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 9, 9, 16)).astype(np.float32)
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    for group, ws in ((16, w), (1, rng.standard_normal((8, 16, 3, 3)).astype(np.float32))):
        mem = ConvPlan(x.shape, ws.shape, (1, 1), (1, 1, 1, 1), group=group, activation="Relu")
        disk = ConvPlan(x.shape, ws.shape, (1, 1), (1, 1, 1, 1), group=group, activation="Relu",
                        cache_dir=str(tmp_path))
        assert disk.source == mem.source
        np.testing.assert_array_equal(disk(x, disk.pack_weights(ws)), mem(x, mem.pack_weights(ws)))
    files = sorted(p.name for p in tmp_path.glob("jitort_conv_*.py"))
    assert len(files) == 2


@pytest.mark.parametrize("M,NP,MC,T,MR", [(49, 3, 54, 2, 6), (196, 1, 96, 2, 6), (784, 1, 96, 2, 12),
                                         (49, 15, 54, 2, 6), (5, 3, 12, 2, 12), (1, 3, 6, 2, 6),
                                         (0, 2, 6, 2, 6), (97, 2, 96, 3, 8), (49, 1, 49, 1, 6)])
def test_work_items_cover_every_tile_once(M, NP, MC, T, MR):
    """conv_work.chunks: every (row, panel) in exactly one item; rows cut at multiples of MR (the tile
    heights stay those of the one-thread plan); at least 4 items per thread when the rows allow
    it, so a late thread's share can be taken over (7x7x960->160 was 3 items for 2 threads)."""
    from jitort.backends.cpu.conv_work import chunks

    items = chunks(M, NP, MC, T, MR)
    seen = np.zeros((M, NP), int)
    for m_lo, m_hi, p_lo, p_hi in items:
        assert m_lo % MR == 0 and (m_hi % MR == 0 or m_hi == M)
        seen[m_lo:m_hi, p_lo:p_hi] += 1
    assert (seen == 1).all()
    if T > 1 and M >= 4 * T * MR:
        assert len(items) >= 4 * T
