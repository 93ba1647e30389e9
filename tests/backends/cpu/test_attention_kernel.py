"""Fused attention kernel (jitort/backends/cpu/attention.py) against the registry's reference
kernel for jitort::Attention in float64: odd shapes, both layouts, GQA, each mask kind (with
broadcasting), causal with past and a finite causal_fill, fully masked rows, 0-sized dims,
float32 and float16, 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from jitort.backends.cpu import attention as A
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
    (1, 33, 33, 37, 4, 2, 64, 64),   # T = 70
    (2, 1, 1, 69, 4, 2, 24, 8),      # decode, T = 70
    (1, 33, 20, None, 2, 1, 8, 24),  # Sq > Sk (causal rows with no key)
    (1, 17, 70, None, 2, 2, 64, 64),
]


@pytest.mark.parametrize("threads", [1, 2])
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
