"""Fused attention kernel for ``jitort::Attention`` (streaming softmax, float32, Numba).

    plan = AttentionPlan(q.shape, k.shape, v.shape, past_shape=None, mask_shape=m.shape,
                         num_heads=12, mask_kind="additive", layout="bsd", threads=2)
    y, present_key, present_value = plan(q, k, v, mask=m)

Semantics are exactly those of ``jitort/ops/fused_attention.py`` (layouts bsd/bhsd, GQA via
``kv_num_heads``, ``scale``, ``causal`` with the past offset ``T - Sq``, ``causal_fill``, additive
or bool mask broadcast to [B, H, Sq, T], past concat -> present outputs, fully masked rows -> 0).

Algorithm (one work unit = (batch, head, block of QB query rows)):

    for each block of KB keys (only up to the causal frontier when causal_fill is -inf):
        Kt  <- K[block]^T                 (D x KB scratch: the QK^T inner loop runs over keys,
                                           contiguous, so it vectorizes without ``reassoc``)
        S   <- (Q*scale) Kt  + mask ; causal positions <- causal_fill      (QB x KB scratch)
        online softmax per row: m' = max(m, max S); alpha = exp(m - m'); P = exp(S - m')
        l   <- l*alpha + sum P ;  acc <- acc*alpha + P V[block]
    Y = acc / l  (l == 0, i.e. every score -inf: Y = 0)

Two inner paths, chosen per work unit at run time:

* tiled (AVX-512 host, 1 <= D, Dv <= 256, a unit of >= 4 query rows): S = Qs Kt by
  ``llvm_tile.gemm_tile`` 4x64 register tiles (Kt is exactly the packed-B layout [D][KB]), and
  acc += P V by 8x32 tiles over V packed in 32-wide zero-padded panels. Tile rows past the unit's
  last query row and columns past the block's last key compute on finite scratch and are never
  read.
* loops (decode steps, D or Dv > 256, AVX2 hosts): row-at-a-time vectorized loops; P V four keys
  per pass over the accumulator row. Every inner loop indexes a row *view* with the loop
  variable: an index ``base + j`` keeps Numba's negative-index wraparound and LLVM then emits
  scalar code (measured 5x slower here).

Never more than one QB x KB block of scores exists. Max and sum over a row use 8 independent
partial results (without ``reassoc`` a single running reduction is a serial chain). ``exp`` is vecmath's vectorizable float32 exp;
the kernel compiles with ``error_model='numpy'`` and ``fastmath=vecmath.FASTMATH`` (no reassoc:
it would break exp's range reduction). All shapes and strides are runtime values packed in one
int64 array, so there are exactly two compiled kernels (serial / ``prange``), both cached on disk
(``cache=True``: they live in this real module). Q, K, V, mask and Y are passed as flat 1-D
float32 buffers with element strides (bsd is read in place, no head transposes).

Threads: ``threads=1`` calls the serial kernel and never touches a pool; ``threads=T > 1`` runs
``prange(T)`` over T contiguous ranges of work units (Numba's pool is the only pool: no BLAS).

Dtypes: float32 and float16 (float16 is computed in float32 and rounded once, as the reference).
float64 is not supported (``supports`` says so): the reference computes it in float64.
"""

# ruff: noqa: FURB136  (a if a > b else b: one fcmp + select that LLVM vectorizes, as in vecmath)
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import vecmath
from .gemm import host_vector_width
from .llvm_tile import gemm_tile

__all__ = ["KB", "QB", "TILED", "AttentionPlan", "attention", "supports"]

QB = 16   # query rows per work unit
KB = 64   # keys per score block

_F32 = np.float32
_DP = 256  # tile path: row stride of the Q and accumulator scratch (D, Dv <= _DP)
_VW = host_vector_width()
#: the register-tile path: AVX-512 (32 zmm): QK 4x64, PV 8x32 tiles; AVX2 (16 ymm): 4x16, 4x16
TILED = _VW in (8, 16)
_QNR = 64 if _VW == 16 else 16   # QK tile width (keys): Kt packed as [KB/_QNR][D][_QNR]
_PMR = 8 if _VW == 16 else 4     # PV tile rows
_PNR = 32 if _VW == 16 else 16   # PV tile width: V block packed as [Dv/_PNR][KB][_PNR]
_NEG_INF = np.float32(-np.inf)

# p (int64 parameters)
_B, _H, _HKV, _SQ, _T, _D, _DV, _CAUSAL, _HASM, _QB, _KB, _NT, _FILLINF, _TILE = range(14)
# st (int64 element strides): q b,h,s | k b,h,s | v b,h,s | mask b,h,i,j | y b,h,s


def _rmax(x, n):
    """max(x[:n]) (-inf when n == 0) with 8 independent partial maxima: without ``reassoc`` a
    single running max is a serial dependency chain."""
    ninf = _F32(-np.inf)
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = ninf
    j = 0
    while j + 8 <= n:
        a = x[j]
        m0 = a if a > m0 else m0
        a = x[j + 1]
        m1 = a if a > m1 else m1
        a = x[j + 2]
        m2 = a if a > m2 else m2
        a = x[j + 3]
        m3 = a if a > m3 else m3
        a = x[j + 4]
        m4 = a if a > m4 else m4
        a = x[j + 5]
        m5 = a if a > m5 else m5
        a = x[j + 6]
        m6 = a if a > m6 else m6
        a = x[j + 7]
        m7 = a if a > m7 else m7
        j += 8
    while j < n:
        a = x[j]
        m0 = a if a > m0 else m0
        j += 1
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    m4 = m5 if m5 > m4 else m4
    m6 = m7 if m7 > m6 else m6
    m0 = m2 if m2 > m0 else m0
    m4 = m6 if m6 > m4 else m4
    return m4 if m4 > m0 else m0


def _rsum(x, n):
    """sum(x[:n]) with 8 independent partial sums (see _rmax)."""
    z = _F32(0.0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
    j = 0
    while j + 8 <= n:
        s0 += x[j]
        s1 += x[j + 1]
        s2 += x[j + 2]
        s3 += x[j + 3]
        s4 += x[j + 4]
        s5 += x[j + 5]
        s6 += x[j + 6]
        s7 += x[j + 7]
        j += 8
    while j < n:
        s0 += x[j]
        j += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


def _body(q, k, v, m, y, st, p, scale, fill, kt, s, acc, mx, lsum, qs, vp, ktp, t):
    """One thread's share of the work units (inlined into both kernels). Scratch (this thread's):
    kt [D, KB], s [QB, KB], acc [QB, DV], mx/lsum [QB], qs [QB, D]. Every inner loop indexes a
    row *view* with the loop variable, so no negative-index wraparound blocks vectorization."""
    B = p[_B]
    H = p[_H]
    SQ = p[_SQ]
    T = p[_T]
    D = p[_D]
    DV = p[_DV]
    QBk = p[_QB]
    KBk = p[_KB]
    NT = p[_NT]
    causal = p[_CAUSAL] != 0
    hasm = p[_HASM] != 0
    skip_causal = causal and p[_FILLINF] != 0
    tile = p[_TILE] != 0
    rep = H // p[_HKV]
    nqb = (SQ + QBk - 1) // QBk
    units = B * H * nqb
    lo = units * t // NT
    hi = units * (t + 1) // NT
    ninf = _F32(-np.inf)
    zero = _F32(0.0)
    for u in range(lo, hi):
        qb = u % nqb
        bh = u // nqb
        h = bh % H
        b = bh // H
        g = h // rep
        i0 = qb * QBk
        nq = min(QBk, SQ - i0)
        # -- load the scaled query block --------------------------------------------------------
        for i in range(nq):
            qr = b * st[0] + h * st[1] + (i0 + i) * st[2]
            qrow = q[qr:qr + D]
            qsi = qs[i]
            for d in range(D):
                qsi[d] = qrow[d] * scale
            mx[i] = ninf
            lsum[i] = zero
            acc[i, :] = zero
        jend = T
        if skip_causal:  # keys past the last row's frontier are never seen
            jend = max(0, min(T, i0 + nq + T - SQ))
        kb0 = b * st[3] + g * st[4]
        vb0 = b * st[6] + g * st[7]
        tl = tile and nq >= 4  # register tiles pay off from 4 query rows up
        for j0 in range(0, jend, KBk):
            nk = min(KBk, jend - j0)
            # -- scores S = (Q*scale) Kt ---------------------------------------------------------
            if tl:  # K block packed in _QNR-key panels [D][_QNR]
                nkp = (nk + _QNR - 1) // _QNR
                for j in range(nk):
                    kr = kb0 + (j0 + j) * st[5]
                    krow = k[kr:kr + D]
                    ktj = ktp[j // _QNR]
                    jj = j % _QNR
                    for d in range(D):
                        ktj[d, jj] = krow[d]
                for i in range(0, nq, 4):
                    for jp in range(nkp):
                        gemm_tile(qs, i * 256, ktp, jp * D * _QNR, s, i * 64 + jp * _QNR, D, False,
                                  4, _QNR, 256, 64, _QNR, _VW)
            else:  # K block transposed into Kt[d, j]
                for j in range(nk):
                    kr = kb0 + (j0 + j) * st[5]
                    krow = k[kr:kr + D]
                    for d in range(D):
                        kt[d, j] = krow[d]
                for i in range(nq):
                    srow = s[i]
                    qsi = qs[i]
                    for j in range(nk):
                        srow[j] = zero
                    for d in range(D):
                        qv = qsi[d]
                        ktd = kt[d]
                        for j in range(nk):
                            srow[j] += qv * ktd[j]
            for i in range(nq):
                srow = s[i]
                # -- mask, causal --------------------------------------------------------------
                if hasm:
                    mb = b * st[9] + h * st[10] + (i0 + i) * st[11] + j0 * st[12]
                    if st[12] == 1:
                        mrow = m[mb:mb + nk]
                        for j in range(nk):
                            srow[j] += mrow[j]
                    else:  # broadcast along the keys
                        mv = m[mb]
                        for j in range(nk):
                            srow[j] += mv
                if causal:
                    lim = i0 + i + T - SQ - j0
                    for j in range(nk):
                        if j > lim:
                            srow[j] = fill
                # -- online softmax ------------------------------------------------------------
                bm = _rmax(srow, nk)
                if bm == ninf:  # nothing to attend in this block: P row = 0
                    for j in range(nk):
                        srow[j] = zero
                    continue
                mo = mx[i]
                mn = bm if bm > mo else mo
                alpha = vecmath.exp(mo - mn)
                for j in range(nk):  # no reduction in this loop: it vectorizes
                    srow[j] = vecmath.exp(srow[j] - mn)
                tot = _rsum(srow, nk)
                lsum[i] = lsum[i] * alpha + tot
                mx[i] = mn
                arow = acc[i]
                for e in range(DV):
                    arow[e] *= alpha
                if tl:
                    continue
                j = 0
                while j + 4 <= nk:  # four keys per pass over the accumulator row
                    vr = vb0 + (j0 + j) * st[8]
                    v0 = v[vr:vr + DV]
                    v1 = v[vr + st[8]:vr + st[8] + DV]
                    v2 = v[vr + 2 * st[8]:vr + 2 * st[8] + DV]
                    v3 = v[vr + 3 * st[8]:vr + 3 * st[8] + DV]
                    p0, p1, p2, p3 = srow[j], srow[j + 1], srow[j + 2], srow[j + 3]
                    for e in range(DV):
                        arow[e] += p0 * v0[e] + p1 * v1[e] + p2 * v2[e] + p3 * v3[e]
                    j += 4
                while j < nk:
                    vr = vb0 + (j0 + j) * st[8]
                    v0 = v[vr:vr + DV]
                    p0 = srow[j]
                    for e in range(DV):
                        arow[e] += p0 * v0[e]
                    j += 1
            if tl:
                # -- acc += P V: V block packed in _PNR-wide panels, _PMR x _PNR tiles ---------
                npv = (DV + _PNR - 1) // _PNR
                for j in range(nk):
                    vr = vb0 + (j0 + j) * st[8]
                    vrow = v[vr:vr + DV]
                    for pn in range(npv):
                        lo_e = pn * _PNR
                        w = min(_PNR, DV - lo_e)
                        dst = vp[pn, j]
                        for e in range(w):
                            dst[e] = vrow[lo_e + e]
                for i in range(0, nq, _PMR):
                    for pn in range(npv):
                        gemm_tile(s, i * 64, vp, pn * 64 * _PNR, acc, i * 256 + pn * _PNR, nk, True,
                                  _PMR, _PNR, 64, 256, _PNR, _VW)
        # -- normalize and store ---------------------------------------------------------------
        for i in range(nq):
            li = lsum[i]
            inv = _F32(1.0) / li if li > zero else zero
            yr = b * st[13] + h * st[14] + (i0 + i) * st[15]
            yrow = y[yr:yr + DV]
            arow = acc[i]
            for e in range(DV):
                yrow[e] = arow[e] * inv


_JIT = {"error_model": "numpy", "fastmath": vecmath.FASTMATH, "cache": True, "nogil": True}
_rmax = njit(inline="always", **_JIT)(_rmax)
_rsum = njit(inline="always", **_JIT)(_rsum)
_body_jit = njit(inline="always", **_JIT)(_body)


@njit(inline="always", **_JIT)
def _scratch(p, NT):
    D, DV, QBk, KBk = p[_D], p[_DV], p[_QB], p[_KB]
    # zeros: padded rows/columns of the tiles must hold finite values
    return (np.zeros((NT, D, KBk), _F32), np.zeros((NT, QBk, KBk), _F32),
            np.zeros((NT, QBk, max(DV, _DP)), _F32), np.zeros((NT, QBk), _F32),
            np.zeros((NT, QBk), _F32), np.zeros((NT, QBk, max(D, _DP)), _F32),
            np.zeros((NT, (DV + _PNR - 1) // _PNR if p[_TILE] else 1, KBk, _PNR), _F32),
            np.zeros((NT, KBk // _QNR if p[_TILE] else 1, D, _QNR), _F32))


@njit(**_JIT)
def _attn_serial(q, k, v, m, y, st, p, scale, fill):
    kt, s, acc, mx, lsum, qs, vp, ktp = _scratch(p, 1)
    _body_jit(q, k, v, m, y, st, p, scale, fill, kt[0], s[0], acc[0], mx[0], lsum[0], qs[0], vp[0], ktp[0], 0)


@njit(parallel=True, **_JIT)
def _attn_parallel(q, k, v, m, y, st, p, scale, fill):
    NT = p[_NT]
    kt, s, acc, mx, lsum, qs, vp, ktp = _scratch(p, NT)  # per-thread rows, allocated outside prange
    for t in prange(NT):
        _body_jit(q, k, v, m, y, st, p, scale, fill, kt[t], s[t], acc[t], mx[t], lsum[t], qs[t], vp[t], ktp[t], t)


# -- host side -----------------------------------------------------------------------------------
def supports(dtype, layout: str = "bsd", mask_kind: str = "none") -> bool:
    """True when this kernel handles Q of ``dtype`` with these attributes (else use the reference)."""
    return (np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float16))
            and layout in ("bsd", "bhsd") and mask_kind in ("none", "additive", "bool"))


def _split(shape, heads, layout, name):
    """(B, heads, S, D) of a Q/K/V shape."""
    shape = tuple(int(x) for x in shape)
    if layout == "bsd":
        if len(shape) != 3 or heads <= 0 or shape[2] % heads:
            raise ValueError(f"jitort::Attention kernel: {name} shape {shape} does not split into {heads} heads")
        return shape[0], heads, shape[1], shape[2] // heads
    if len(shape) != 4 or shape[1] != heads:
        raise ValueError(f"jitort::Attention kernel: {name} shape {shape} is not [B, {heads}, S, D]")
    return shape


def _strides4(b4, layout):
    """Element strides (b, h, s) of a C-contiguous Q/K/V/Y buffer of logical shape b4 (B, H, S, D)."""
    _, H, S, D = b4
    if layout == "bsd":
        return (S * H * D, D, H * D)
    return (H * S * D, S * D, D)


class AttentionPlan:
    """The fused attention kernel for one set of shapes and attributes (see the module docstring).

    ``past_shape`` is the shape of past_key (past_value has the same P); ``mask_shape`` must
    broadcast to [B, H, Sq, P + Sk]. ``__call__`` returns (y, present_key, present_value) like the
    reference kernel: present_* are the concatenated caches when a past is given, else K/V viewed
    as [B, Hkv, Sk, D]."""

    def __init__(self, q_shape, k_shape, v_shape, past_shape=None, mask_shape=None, *,
                 num_heads=0, kv_num_heads=0, scale=1.0, causal=0, causal_fill=-np.inf,
                 mask_kind="none", layout="bsd", threads=1, dtype=np.float32):
        if layout not in ("bsd", "bhsd"):
            raise ValueError(f"jitort::Attention kernel: layout {layout!r}")
        if mask_kind not in ("none", "additive", "bool"):
            raise ValueError(f"jitort::Attention kernel: mask_kind {mask_kind!r}")
        if not supports(dtype, layout, mask_kind):
            raise ValueError(f"jitort::Attention kernel: dtype {np.dtype(dtype)} unsupported")
        if threads < 1:
            raise ValueError(f"jitort::Attention kernel: threads={threads}")
        h = int(num_heads) or (int(q_shape[1]) if layout == "bhsd" else 0)
        hkv = int(kv_num_heads) or h
        if h <= 0 or hkv <= 0 or h % hkv:
            raise ValueError(f"jitort::Attention kernel: num_heads={h} kv_num_heads={hkv}")
        self.layout, self.mask_kind, self.threads, self.dtype = layout, mask_kind, int(threads), np.dtype(dtype)
        self.q4 = _split(q_shape, h, layout, "Q")
        self.k4 = _split(k_shape, hkv, layout, "K")
        self.v4 = _split(v_shape, hkv, layout, "V")
        B, _, SQ, D = self.q4
        SK, DV = self.k4[2], self.v4[3]
        if self.k4[0] != B or self.v4[0] != B or self.k4[3] != D or self.v4[2] != SK:
            raise ValueError(f"jitort::Attention kernel: Q {q_shape}, K {k_shape}, V {v_shape} disagree")
        P = 0
        if past_shape is not None:
            past_shape = tuple(int(x) for x in past_shape)
            if len(past_shape) != 4 or past_shape[:2] != (B, hkv) or past_shape[3] != D:
                raise ValueError(f"jitort::Attention kernel: past shape {past_shape}")
            P = past_shape[2]
        self.past_shape, self.P = past_shape, P
        T = P + SK
        self.T = T
        self.y4 = (B, h, SQ, DV)
        self.y_shape = (B, SQ, h * DV) if layout == "bsd" else self.y4
        self.mask_shape = None if mask_kind == "none" or mask_shape is None else tuple(int(x) for x in mask_shape)
        mst = (0, 0, 0, 0)
        if self.mask_shape is not None:
            ms = self.mask_shape
            if len(ms) > 4:
                raise ValueError(f"jitort::Attention kernel: rank-{len(ms)} mask")
            m4 = (1,) * (4 - len(ms)) + ms
            full = (B, h, SQ, T)
            if any(a not in (1, f) for a, f in zip(m4, full)):
                raise ValueError(f"jitort::Attention kernel: mask {ms} does not broadcast to {full}")
            self._m4 = m4
            cs = np.cumprod((1,) + m4[::-1])[:4][::-1]  # C strides of m4
            mst = tuple(int(c) if a != 1 else 0 for c, a in zip(cs, m4))
        fill = np.float32(causal_fill)
        self.fill = fill
        self.scale = np.float32(scale)
        kst = (hkv * T * D, T * D, D) if past_shape is not None else _strides4(self.k4, layout)
        vst = (hkv * T * DV, T * DV, DV) if past_shape is not None else _strides4(self.v4, layout)
        self.st = np.array(_strides4(self.q4, layout) + kst + vst + mst
                           + _strides4(self.y4, layout), np.int64)
        self.p = np.array([B, h, hkv, SQ, T, D, DV, int(bool(causal)), int(self.mask_shape is not None),
                           QB, KB, self.threads, int(fill == -np.inf),
                           int(TILED and 1 <= D <= _DP and 1 <= DV <= _DP)], np.int64)
        self._fn = _attn_serial if self.threads == 1 else _attn_parallel

    def _f32(self, x, name, shape):
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"jitort::Attention kernel: {name} has shape {x.shape}, planned {shape}")
        return np.ascontiguousarray(x, dtype=_F32).reshape(-1)

    def __call__(self, q, k, v, past_key=None, past_value=None, mask=None, *, out=None,
                 present_key_out=None, present_value_out=None):
        """-> (y, present_key, present_value). ``out`` (float32 of Y's shape; Y's dtype when that is
        float32) and the present_*_out buffers ([B, Hkv, T, D], past's dtype) are optional
        preallocated outputs, as a memory planner would pass them."""
        L = self.layout
        B, H, SQ, D = self.q4
        hkv = self.k4[1]
        qf = self._f32(q, "Q", (B, SQ, H * D) if L == "bsd" else self.q4)
        kshape = (B, self.k4[2], hkv * D) if L == "bsd" else self.k4
        vshape = (B, self.v4[2], hkv * self.v4[3]) if L == "bsd" else self.v4
        if tuple(k.shape) != tuple(kshape) or tuple(v.shape) != tuple(vshape):
            raise ValueError(f"jitort::Attention kernel: K {k.shape} / V {v.shape}, planned {kshape} / {vshape}")
        kh = k if L == "bhsd" else k.reshape(B, self.k4[2], hkv, D).transpose(0, 2, 1, 3)
        vh = v if L == "bhsd" else v.reshape(B, self.v4[2], hkv, self.v4[3]).transpose(0, 2, 1, 3)
        if (past_key is None) != (self.past_shape is None) or (past_key is None) != (past_value is None):
            raise ValueError("jitort::Attention kernel: past_key/past_value given or missing against the plan")
        if past_key is not None:
            pk = np.concatenate([past_key, kh.astype(past_key.dtype, copy=False)], axis=2,
                                out=present_key_out)
            pv = np.concatenate([past_value, vh.astype(past_value.dtype, copy=False)], axis=2,
                                out=present_value_out)
            kf = np.ascontiguousarray(pk, dtype=_F32).reshape(-1)
            vf = np.ascontiguousarray(pv, dtype=_F32).reshape(-1)
        else:
            pk, pv = kh, vh
            kf, vf = self._f32(k, "K", kshape), self._f32(v, "V", vshape)
        if self.mask_shape is not None:
            if mask is None:
                raise ValueError("jitort::Attention kernel: the plan has a mask, none given")
            if self.mask_kind == "bool":
                mk = np.where(mask.astype(bool, copy=False), _F32(0), _NEG_INF)
            else:
                mk = mask
            mf = self._f32(mk, "mask", self.mask_shape)
        else:
            mf = np.zeros(1, _F32)
        if out is not None and (out.shape != self.y_shape or out.dtype != _F32 or not out.flags.c_contiguous):
            raise ValueError(f"jitort::Attention kernel: out must be C-contiguous float32 {self.y_shape}")
        y = np.empty(self.y_shape, _F32) if out is None else out
        if y.size:
            self._fn(qf, kf, vf, mf, y.reshape(-1), self.st, self.p, self.scale, self.fill)
        if self.dtype != _F32:
            y = y.astype(self.dtype)
        return y, pk, pv


def attention(q, k, v, past_key=None, past_value=None, mask=None, *, threads=1, **attrs):
    """One-shot call with the node's attributes (builds an ``AttentionPlan`` each time)."""
    plan = AttentionPlan(q.shape, k.shape, v.shape,
                         None if past_key is None else past_key.shape,
                         None if mask is None else mask.shape, threads=threads, dtype=q.dtype, **attrs)
    return plan(q, k, v, past_key, past_value, mask)
