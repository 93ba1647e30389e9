"""Fused attention kernel (jitort/backends/cpu/attention.py) against the registry's reference
kernel for jitort::Attention in float64: odd shapes, both layouts, GQA, each mask kind (with
broadcasting), causal with past and a finite causal_fill, fully masked rows, 0-sized dims,
float32 and float16, 1, 2 and 3 threads. Both inner paths are covered: the register-tile path
(>= 4 query rows; several key blocks, several units per head, Dv over several panels, D and Dv
not multiples of the vector width) and the rows path (decode steps, more keys than one rows
block, D > 256); the past read in place from a KV cache, overlapping and strided pasts; the
plan's scratch reused across calls and shared by two threads; the vector exp and its flush;
and the kernel built for the other vector widths (AVX2, SSE) in a subprocess."""

from __future__ import annotations

import numpy as np
import pytest

from jitort.backends.cpu import attention as A
from jitort.cache.variants import wait_for_saves
from jitort.ops.registry import KernelContext, find

REF = find("Attention", "jitort", 1).kernel
#: (rtol, atol) per dtype, relative to max |Y|
TOL = {np.float32: 1e-5, np.float16: 2e-3}


def _case(rng, *, b, sq, sk, p, h, hkv, d, dv, layout, mask_kind, mask_shape=None, dtype=np.float32):
    if layout == "bsd":
        q = rng.standard_normal((b, sq, h * d))
        k = rng.standard_normal((b, sk, hkv * d))
        v = rng.standard_normal((b, sk, hkv * dv))
    else:
        q = rng.standard_normal((b, h, sq, d))
        k = rng.standard_normal((b, hkv, sk, d))
        v = rng.standard_normal((b, hkv, sk, dv))
    pk = pv = None
    if p is not None:
        pk = rng.standard_normal((b, hkv, p, d))
        pv = rng.standard_normal((b, hkv, p, dv))
    mask = None
    if mask_kind != "none":
        shape = mask_shape or (b, 1, sq, (p or 0) + sk)
        mask = rng.standard_normal(shape) * 2 if mask_kind == "additive" else rng.random(shape) > 0.3
    cast = lambda x: None if x is None else (x if x.dtype == np.bool_ else x.astype(dtype))
    return [cast(x) for x in (q, k, v, pk, pv, mask)]


def _check(args, threads, **attrs):
    q = args[0]
    got = A.attention(*args, threads=threads, **attrs)
    f64 = [None if x is None else (x if x.dtype == np.bool_ else x.astype(np.float64)) for x in args]
    want = REF(KernelContext(num_outputs=3), *f64, **attrs)
    y, wy = got[0], want[0]
    assert y.dtype == q.dtype and y.shape == wy.shape, (y.dtype, y.shape, wy.shape)
    assert np.all(np.isfinite(y))
    scale = max(1.0, float(np.abs(wy).max())) if wy.size else 1.0
    err = float(np.abs(y.astype(np.float64) - wy).max()) / scale if wy.size else 0.0
    assert err <= TOL[q.dtype.type], err
    for g, w in zip(got[1:], want[1:]):
        assert g.shape == w.shape
        np.testing.assert_array_equal(np.asarray(g, np.float64), w)


SHAPES = [  # b, sq, sk, p, h, hkv, d, dv
    (1, 1, 1, None, 1, 1, 8, 8),
    (2, 7, 7, None, 3, 3, 24, 24),
    (1, 33, 33, 37, 4, 2, 64, 64),     # T = 70
    (2, 1, 1, 69, 4, 2, 24, 8),        # decode, T = 70
    (1, 33, 20, None, 2, 1, 8, 24),    # Sq > Sk (causal rows with no key)
    (1, 17, 70, None, 2, 2, 64, 64),
    (1, 40, 150, None, 2, 1, 24, 40),  # tiles: two key blocks, D and Dv not multiples of 16
    (1, 13, 13, 120, 3, 1, 72, 80),    # tiles with a past; Dv over two panels
    (1, 134, 134, None, 1, 1, 8, 8),   # two units per head, the last one of 2 rows (rows path)
    (1, 3, 3, 600, 2, 2, 16, 16),      # rows path over more keys than one rows block
    (1, 9, 9, None, 2, 2, 264, 24),    # D > 256: rows path for every unit
]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["bsd", "bhsd"])
def test_shapes_masks_causal(shape, layout, threads):
    b, sq, sk, p, h, hkv, d, dv = shape
    rng = np.random.default_rng(hash((shape, layout)) % 2**32)
    for mask_kind in ("none", "additive", "bool"):
        for causal in (0, 1):
            args = _case(rng, b=b, sq=sq, sk=sk, p=p, h=h, hkv=hkv, d=d, dv=dv, layout=layout,
                         mask_kind=mask_kind)
            _check(args, threads, num_heads=h, kv_num_heads=hkv, scale=1 / np.sqrt(d),
                   causal=causal, mask_kind=mask_kind, layout=layout)


@pytest.mark.parametrize("mask_shape", [(70,), (7, 70), (1, 4, 1, 70), (2, 1, 7, 1), (2, 4, 7, 70)])
def test_mask_broadcast(mask_shape):
    rng = np.random.default_rng(1)
    for kind in ("additive", "bool"):
        args = _case(rng, b=2, sq=7, sk=7, p=63, h=4, hkv=2, d=8, dv=8, layout="bsd",
                     mask_kind=kind, mask_shape=mask_shape)
        _check(args, 2, num_heads=4, kv_num_heads=2, scale=0.5, causal=1, mask_kind=kind)


@pytest.mark.parametrize("threads", [1, 2])
def test_fully_masked_rows_and_causal_fill(threads):
    rng = np.random.default_rng(2)
    q, k, v, _, _, mask = _case(rng, b=2, sq=7, sk=9, p=None, h=2, hkv=2, d=8, dv=8,
                                  layout="bhsd", mask_kind="bool", mask_shape=(2, 2, 7, 9))
    mask[0, 1, 3, :] = False        # one fully masked row
    mask[1, :, :, :] = False        # a fully masked batch
    _check([q, k, v, None, None, mask], threads, num_heads=2, mask_kind="bool", layout="bhsd")
    add = np.where(mask, 0.0, -np.inf).astype(np.float32)
    _check([q, k, v, None, None, add], threads, num_heads=2, mask_kind="additive", layout="bhsd")
    # finite causal_fill: excluded keys get that score (they take part in the softmax)
    for fill in (-1e4, -1.0):
        args = _case(rng, b=1, sq=33, sk=33, p=37, h=2, hkv=1, d=24, dv=24, layout="bsd",
                     mask_kind="additive")
        _check(args, threads, num_heads=2, kv_num_heads=1, scale=0.2, causal=1,
               causal_fill=fill, mask_kind="additive")


@pytest.mark.parametrize("shape", [(0, 5, 5, None), (1, 0, 5, None), (1, 3, 0, None),
                                   (1, 3, 0, 4), (1, 3, 4, 0)])
def test_zero_sized(shape):
    b, sq, sk, p = shape
    rng = np.random.default_rng(3)
    # the reference's bsd reshape(b, sq, -1) cannot take an empty Y: those cases run as bhsd
    for layout in (("bhsd",) if b * sq == 0 else ("bsd", "bhsd")):
        for causal in (0, 1):
            args = _case(rng, b=b, sq=sq, sk=sk, p=p, h=2, hkv=2, d=8, dv=8, layout=layout,
                         mask_kind="additive")
            attrs = {"num_heads": 2, "scale": 0.3, "causal": causal, "mask_kind": "additive", "layout": layout}
            if sk + (p or 0):
                _check(args, 2, **attrs)
            else:  # no keys at all: every row is fully masked -> zeros (the reference's max fails)
                y, pk, pv = A.attention(*args, threads=2, **attrs)
                assert y.shape == args[0].shape[:-1] + (8 * (2 if layout == "bsd" else 1),)
                assert not np.any(y) and pk.shape == (b, 2, 0, 8) == pv.shape


def test_float16():
    rng = np.random.default_rng(4)
    args = _case(rng, b=2, sq=33, sk=33, p=37, h=4, hkv=2, d=24, dv=24, layout="bsd",
                 mask_kind="additive", dtype=np.float16)
    _check(args, 1, num_heads=4, kv_num_heads=2, scale=0.2, causal=1, mask_kind="additive")


def test_plan_rejects_mismatch():
    plan = A.AttentionPlan((1, 4, 16), (1, 4, 16), (1, 4, 16), num_heads=2)
    x = np.zeros((1, 5, 16), np.float32)
    with pytest.raises(ValueError):
        plan(x, x, x)
    with pytest.raises(ValueError):
        A.AttentionPlan((1, 4, 16), (1, 4, 16), (1, 4, 16), num_heads=3)
    assert not A.supports(np.float64)


def test_preallocated_outputs():
    rng = np.random.default_rng(5)
    q, k, v, pk, pv, _ = _case(rng, b=1, sq=7, sk=7, p=9, h=2, hkv=2, d=8, dv=8, layout="bsd",
                                  mask_kind="none")
    plan = A.AttentionPlan(q.shape, k.shape, v.shape, pk.shape, num_heads=2, causal=1)
    y0, k0, v0 = plan(q, k, v, pk, pv)
    out, kb, vb = np.empty_like(y0), np.empty_like(k0), np.empty_like(v0)
    y1, k1, v1 = plan(q, k, v, pk, pv, out=out, present_key_out=kb, present_value_out=vb)
    assert y1 is out and k1 is kb and v1 is vb
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(k1, k0)
    with pytest.raises(ValueError):
        plan(q, k, v, pk, pv, out=np.empty((1, 7, 15), np.float32))


def _ref(args, **attrs):
    f64 = [None if x is None else (x if x.dtype == np.bool_ else x.astype(np.float64)) for x in args]
    return REF(KernelContext(num_outputs=3), *f64, **attrs)


def _close(y, want):
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    return float(np.abs(y.astype(np.float64) - want).max()) / scale <= TOL[np.float32] if want.size else True


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", ["bsd", "bhsd"])
@pytest.mark.parametrize("sq", [1, 2, 9])
def test_kv_cache_in_place(layout, threads, sq):
    """past_* are views of the first P rows of the present buffers: only the new rows are
    written, the result and the whole cache equal the reference's."""
    rng = np.random.default_rng(6 + sq)
    b, p, h, hkv, d = 2, 45, 4, 2, 24
    q, k, v, pk, pv, _ = _case(rng, b=b, sq=sq, sk=sq, p=p, h=h, hkv=hkv, d=d, dv=d, layout=layout,
                               mask_kind="none")
    ck = np.zeros((b, hkv, p + sq, d), np.float32)
    cv = np.zeros_like(ck)
    ck[:, :, :p], cv[:, :, :p] = pk, pv
    attrs = {"num_heads": h, "kv_num_heads": hkv, "scale": 0.3, "causal": 1, "layout": layout}
    want = _ref([q, k, v, ck[:, :, :p], cv[:, :, :p], None], **attrs)
    plan = A.AttentionPlan(q.shape, k.shape, v.shape, (b, hkv, p, d), threads=threads, **attrs)
    y, k1, v1 = plan(q, k, v, ck[:, :, :p], cv[:, :, :p], present_key_out=ck, present_value_out=cv)
    assert k1 is ck and v1 is cv
    assert _close(y, want[0])
    np.testing.assert_array_equal(ck, want[1])
    np.testing.assert_array_equal(cv, want[2])


@pytest.mark.parametrize("sq", [1, 9])
def test_past_overlapping_or_strided(sq):
    """A past that shares memory with the present buffers without being their prefix, and a
    past that is not contiguous: both give the reference's result."""
    rng = np.random.default_rng(7)
    b, p, h, d = 1, 30, 2, 16
    q, k, v, _, _, _ = _case(rng, b=b, sq=sq, sk=sq, p=None, h=h, hkv=h, d=d, dv=d, layout="bsd",
                             mask_kind="none")
    attrs = {"num_heads": h, "scale": 0.25, "causal": 1}
    plan = A.AttentionPlan(q.shape, k.shape, v.shape, (b, h, p, d), **attrs)
    ck = rng.standard_normal((b, h, p + sq, d)).astype(np.float32)
    cv = rng.standard_normal((b, h, p + sq, d)).astype(np.float32)
    pk, pv = ck[:, :, sq:], cv[:, :, sq:]  # the last P rows: overwritten by the result
    want = _ref([q, k, v, pk.copy(), pv.copy(), None], **attrs)
    y, k1, v1 = plan(q, k, v, pk, pv, present_key_out=ck, present_value_out=cv)
    assert _close(y, want[0])
    np.testing.assert_array_equal(k1, want[1])
    np.testing.assert_array_equal(v1, want[2])
    big = rng.standard_normal((b, h, p + 5, d)).astype(np.float32)
    pk, pv = big[:, :, :p], big[:, :, 5:]  # strided views
    want = _ref([q, k, v, pk, pv, None], **attrs)
    y, k1, v1 = plan(q, k, v, pk, pv)
    assert _close(y, want[0])
    np.testing.assert_array_equal(k1, want[1])
    np.testing.assert_array_equal(v1, want[2])


@pytest.mark.parametrize("threads", [1, 2])
def test_plan_reused_across_calls(threads):
    """One plan (its scratch reused) on three different inputs, writing into the same out
    buffers: each result equals the reference's (no state left over between calls)."""
    rng = np.random.default_rng(8)
    for shape, causal in (((1, 50, 50, None, 3, 3, 40, 40), 0), ((2, 1, 1, 40, 4, 2, 16, 16), 1),
                          ((1, 20, 20, 30, 2, 2, 32, 32), 1)):
        b, sq, sk, p, h, hkv, d, dv = shape
        attrs = {"num_heads": h, "kv_num_heads": hkv, "scale": 0.2, "causal": causal,
                 "mask_kind": "additive"}
        args = _case(rng, b=b, sq=sq, sk=sk, p=p, h=h, hkv=hkv, d=d, dv=dv, layout="bsd",
                     mask_kind="additive")
        plan = A.AttentionPlan(args[0].shape, args[1].shape, args[2].shape, None if p is None else args[3].shape,
                               args[5].shape, threads=threads, **attrs)
        out = np.empty(plan.y_shape, np.float32)
        bufs = {} if p is None else {"present_key_out": np.empty(plan.present_k, np.float32),
                                     "present_value_out": np.empty(plan.present_v, np.float32)}
        for _ in range(3):
            args = _case(rng, b=b, sq=sq, sk=sk, p=p, h=h, hkv=hkv, d=d, dv=dv, layout="bsd",
                         mask_kind="additive")
            want = _ref(args, **attrs)
            y, k1, v1 = plan(*args, out=out, **bufs)
            assert y is out and _close(y, want[0])
            np.testing.assert_array_equal(k1, want[1])


def test_out_path_allocates_nothing():
    """With out= and the present buffers, a call allocates no array (tracemalloc sees numpy's
    data allocations)."""
    import tracemalloc
    rng = np.random.default_rng(9)
    q, k, v, pk, pv, mask = _case(rng, b=1, sq=64, sk=64, p=200, h=4, hkv=4, d=32, dv=32, layout="bsd",
                                  mask_kind="additive")
    plan = A.AttentionPlan(q.shape, k.shape, v.shape, pk.shape, mask.shape, num_heads=4, causal=1,
                           mask_kind="additive")
    out = np.empty(plan.y_shape, np.float32)
    ko, vo = np.empty(plan.present_k, np.float32), np.empty(plan.present_v, np.float32)
    for _ in range(2):
        plan(q, k, v, pk, pv, mask, out=out, present_key_out=ko, present_value_out=vo)
    # tracemalloc sees every thread: an earlier test's cache entry still being written in the
    # background counted here once (12 KB in a full run)
    assert wait_for_saves(timeout=120), "an earlier test's cache entry is still being written"
    tracemalloc.start()
    try:
        plan(q, k, v, pk, pv, mask, out=out, present_key_out=ko, present_value_out=vo)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096 < out.nbytes, peak  # Python objects (views, tuples) only


def test_concurrent_calls_on_one_plan():
    """Two Python threads running one plan at once (the second call gets its own scratch)."""
    import threading
    rng = np.random.default_rng(10)
    attrs = {"num_heads": 4, "scale": 0.2}
    cases = [_case(rng, b=2, sq=30, sk=30, p=None, h=4, hkv=4, d=32, dv=32, layout="bsd", mask_kind="none")
             for _ in range(2)]
    wants = [_ref(c, **attrs)[0] for c in cases]
    plan = A.AttentionPlan(cases[0][0].shape, cases[0][1].shape, cases[0][2].shape, **attrs)
    bad = []

    def run(c, want):
        for _ in range(40):
            if not _close(plan(*c)[0], want):
                bad.append(1)

    ts = [threading.Thread(target=run, args=(c, w)) for c, w in zip(cases, wants)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_large_score_gaps():
    """Block maxima that jump by more than 64 (the old accumulator's weight flushes to 0),
    huge negative masks, a -inf in a row, and scores far below the row's maximum."""
    rng = np.random.default_rng(11)
    for sq in (1, 20):
        q, k, v, _, _, mask = _case(rng, b=1, sq=sq, sk=300, p=None, h=2, hkv=2, d=16, dv=16,
                                    layout="bhsd", mask_kind="additive", mask_shape=(1, 2, sq, 300))
        mask[...] = 0
        mask[:, 0, :, 140:] = 90.0        # head 0: the second key block dominates by 90
        mask[:, 1, :, :130] = 90.0        # head 1: the first one does
        mask[:, :, :, 7] = -1e30
        mask[:, :, 0, 9] = -np.inf
        attrs = {"num_heads": 2, "scale": 1.0, "mask_kind": "additive", "layout": "bhsd"}
        want = _ref([q, k, v, None, None, mask], **attrs)
        for threads in (1, 2):
            _check([q, k, v, None, None, mask], threads, **attrs)
            assert _close(A.attention(q, k, v, None, None, mask, threads=threads, **attrs)[0], want[0])


def test_row_softmax_exp_accuracy():
    """The vector exp inside the row softmax: P = exp(s - max) within 1.5 ulp of float64 for
    s - max >= -64 (float32 normal results), exactly 0 below (no denormals), 0 for -inf; the row
    sum and max are the state; a row of -inf returns 0 and leaves P = 0."""
    from numba import njit

    @njit
    def one(w, n):
        return A._vsoftmax(w, 0, 0, 1, n, w, -1, 0, 0, n, np.float32(0), n, n + 1, n + 2, 0, 1)

    x = np.concatenate([np.linspace(-70, 0, 200_003), [-64.0, -63.9999, -1e-30, 0.0, -np.inf, -1e30]])
    x = x.astype(np.float32)
    for n in (x.size, 37):  # with and without a masked tail
        w = np.zeros(x.size + 16, np.float32)
        w[:n] = x[:n] if n == x.size else np.concatenate([x[-6:], x[::5000][:n - 6]])
        xs = w[:n].copy()
        mx = xs.max()
        w[n], w[n + 1] = -np.inf, 0.0
        assert one(w, n) == 1
        want = np.exp(xs.astype(np.float64) - mx)
        p = w[:n]
        big = xs - mx >= -64
        ulp = np.spacing(want[big].astype(np.float32)).astype(np.float64)
        assert np.max(np.abs(p[big] - want[big]) / ulp) <= 1.5
        assert not np.any(p[~big])
        assert w[n] == mx and abs(w[n + 1] - p.astype(np.float64).sum()) <= 1e-6 * w[n + 1]
    w = np.full(40, -np.inf, np.float32)
    w[20], w[21] = -np.inf, 0.0
    assert one(w, 20) == 0 and not np.any(w[:20]) and w[21] == 0


_VW_SCRIPT = r"""
import sys
import numpy as np
import jitort.backends.cpu.gemm as g
g.host_vector_width = lambda: int(sys.argv[1])
from jitort.backends.cpu import attention as A
from jitort.ops.registry import KernelContext, find
assert A._VW == int(sys.argv[1])
ref = find("Attention", "jitort", 1).kernel
rng = np.random.default_rng(0)
for b, sq, sk, p, h, hkv, d, dv, causal, threads in [
        (1, 37, 150, None, 2, 1, 24, 40, 1, 1), (2, 9, 9, 40, 4, 2, 19, 33, 1, 2),
        (1, 1, 1, 600, 2, 2, 24, 8, 1, 1), (1, 20, 20, None, 1, 1, 8, 8, 0, 2)]:
    q = rng.standard_normal((b, sq, h * d)).astype(np.float32)
    k = rng.standard_normal((b, sk, hkv * d)).astype(np.float32)
    v = rng.standard_normal((b, sk, hkv * dv)).astype(np.float32)
    pk = pv = None
    if p:
        pk = rng.standard_normal((b, hkv, p, d)).astype(np.float32)
        pv = rng.standard_normal((b, hkv, p, dv)).astype(np.float32)
    m = (rng.standard_normal((b, 1, sq, (p or 0) + sk)) * 2).astype(np.float32)
    attrs = dict(num_heads=h, kv_num_heads=hkv, scale=0.3, causal=causal, mask_kind="additive")
    got = A.attention(q, k, v, pk, pv, m, threads=threads, **attrs)
    f64 = [None if x is None else x.astype(np.float64) for x in (q, k, v, pk, pv, m)]
    want = ref(KernelContext(num_outputs=3), *f64, **attrs)
    err = np.abs(got[0] - want[0]).max() / max(1.0, np.abs(want[0]).max())
    assert err <= 1e-5, (b, sq, sk, p, err)
    assert all(np.array_equal(x, y) for x, y in zip(got[1:], want[1:]))
print("ok")
"""


@pytest.mark.parametrize("vw", [8, 4])
def test_other_vector_widths(vw, tmp_path):
    """The kernel built for an AVX2 (8 lanes, 6 x 16 tiles) and an SSE host (4 lanes, rows path
    only) runs here too: a fresh process with the host's width patched and its own Numba cache
    (the cache key does not see the width)."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=root)
    r = subprocess.run([sys.executable, "-c", _VW_SCRIPT, str(vw)], env=env, capture_output=True, text=True,
                       cwd=root, check=False)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


@pytest.mark.parametrize("threads", [1, 2])
def test_read_only_and_unaligned_inputs(threads):
    """Inputs a caller cannot write (np.frombuffer of bytes) or at an odd address are other
    Numba types than the kernel's; they are copied, never rejected or misread."""
    rng = np.random.default_rng(7)
    args = _case(rng, b=1, sq=9, sk=9, p=None, h=2, hkv=2, d=16, dv=16, layout="bsd", mask_kind="additive")

    def read_only(x):
        return np.frombuffer(x.tobytes(), x.dtype).reshape(x.shape)

    def unaligned(x):  # writeable, one byte past an aligned address
        buf = bytearray(x.nbytes + 1)
        buf[1:] = x.tobytes()
        return np.frombuffer(buf, x.dtype, offset=1).reshape(x.shape)

    for make in (read_only, unaligned):
        made = [None if x is None else make(x) for x in args]
        assert not made[0].flags.writeable or not made[0].flags.aligned
        _check(made, threads, num_heads=2, kv_num_heads=2, scale=0.25, causal=0, mask_kind="additive")
