"""Fused attention kernel for ``jitort::Attention`` (streaming softmax, float32, Numba).

    plan = AttentionPlan(q.shape, k.shape, v.shape, past_shape=None, mask_shape=m.shape,
                         num_heads=12, mask_kind="additive", layout="bsd", threads=2)
    y, present_key, present_value = plan(q, k, v, mask=m, out=y_buf)

Semantics are exactly those of ``jitort/ops/fused_attention.py`` (layouts bsd/bhsd, GQA via
``kv_num_heads``, ``scale``, ``causal`` with the past offset ``T - Sq``, ``causal_fill``, additive
or bool mask broadcast to [B, H, Sq, T], past concat -> present outputs, fully masked rows -> 0),
up to float32 rounding: probabilities below e^-64 times the row's largest are 0 (see
``attention_vec._V.exp``).

Algorithm (one work unit = (batch, head, block of up to QB query rows)):

    for each block of keys (only up to the causal frontier when causal_fill is -inf):
        S   <- (Q*scale) K[block]^T + mask ; causal positions <- causal_fill
        online softmax per row: m' = max(m, max S); alpha = exp(m - m'); P = exp(S - m')
        l   <- l*alpha + sum P ;  acc <- acc*alpha + P V[block]
    Y = acc / l  (l == 0, i.e. every score -inf: Y = 0)

Two inner paths, chosen per work unit:

* tiled (AVX2/AVX-512 host, 1 <= D, Dv <= 256, >= 4 query rows): a unit holds up to QB_MAX
  (132) query rows, a whole head of BERT, so each K/V block of KB (128) keys is packed once per
  unit: K transposed in registers into _NR-key panels [D][_NR] (the packed-B layout of
  ``llvm_tile.gemm_tile``), V copied into _NR-wide panels [KB][_NR]. Per micro-block of MR (6)
  query rows: S = Qs Kt by MR x _NR register tiles (AVX-512: 6 x 64, 24 zmm accumulators; AVX2:
  6 x 16), the online softmax of the MR rows together, then acc += P V by MR x _NR tiles with
  kc = the block's keys. Causal: micro-blocks past the frontier are skipped, and panels / keys
  past a micro-block's last row are never computed. Tile padding rows (past the unit's last
  query row) compute on zero queries in scratch and are never stored.
* rows (decode steps, < 4 query rows, D or Dv > 256, SSE-only hosts): per query row and block
  of _KBR (512) keys: the scores VW keys at a time (one accumulator vector per key, then one
  transpose-and-add tree: ``_vdots``), the row softmax, and acc += P V with 4 VW columns of acc
  in registers over all the keys (``_vaxpy``).

Every inner loop is LLVM vector IR, written in ``attention_vec.py`` (``_V`` and the ``_v*``
intrinsics): whole <VW x float> vectors with one masked tail, no Numba array views. Both matter,
measured on the AVX-512 host: a view costs an atomic incref/decref pair (~20% of the time when
the loops were Numba code), LLVM's own vectorizer stops at 256-bit vectors on these Intel cores,
and a denormal exp result costs a microcode assist (~half of the exp loop's time before the flush).
The row softmax does two passes over a row block: (mask, causal fill, max) and (exp, sum); the
exp is vecmath's float32 polynomial (1.3 ulp) in IR. Never more than MR x KB scores exist.

Past: the kernel reads K/V rows < P from past_key/past_value and the rest from K/V directly,
and writes present_key/present_value itself from the registers that already hold each row (in
``_vdots``/``_vaxpy``/``_vktrans``): one unit per kv head (its last query block, which sees every
key) copies. No concat, no temporary. When past_* are the first P rows of the present buffers
(a KV cache: ``past_key = present_key_out[:, :, :P]``) only the new rows are written. A past that
overlaps the present buffers otherwise is copied first; a float16 or strided past is
concatenated by NumPy first.

Memory: all shapes, strides and the per-thread unit ranges are runtime values in one int64
array; the scratch (one 64-byte aligned float32 row per thread, laid out by ``_offsets``) and
the parameters are owned by the plan, so a call with ``out=`` (and the present buffers)
allocates no array. There are exactly two compiled kernels (serial / ``prange``), both cached on
disk (``cache=True``). Q, K, V, mask and Y are flat 1-D float32 buffers with element strides
(bsd is read in place, no transposes). A plan called from two Python threads at once gives the
second call its own scratch.

Threads: ``threads=1`` calls the serial kernel and never touches a pool; ``threads=T > 1`` runs
``prange(T)`` over T contiguous ranges of work units, split by estimated cost (causal units
differ); when there are fewer than 4 T units, a head's rows are split into several units.
Numba's pool is the only pool: no BLAS.

Dtypes: float32 and float16 (float16 is computed in float32 and rounded once, as the reference).
float64 is not supported (``supports`` says so): the reference computes it in float64.

Compile flags: ``error_model='numpy'``, ``fastmath=vecmath.FASTMATH`` (no reassoc).

Speed (``python benchmarks/attention.py``; AVX-512 host, 2 vCPUs shared with other jobs, load
2-3; ms per call, onnxruntime's faster form in brackets; the full table in benchmarks/README.md):

    case                             1 thread (CPU time)      2 threads (best batch)
    BERT-base  B1 S128 H12, mask     0.451 (0.837)  1.86x     0.222 (0.382)  1.72x
    BERT-small B8 S128 H4, mask      1.29  (2.10)   1.63x     0.619 (0.977)  1.58x
    GPT-2 prefill S128 H12, causal   0.307 (1.12)   3.65x     0.143 (0.516)  3.62x
    GPT-2 decode, past 1023          0.490 (0.730)  1.49x     0.239 (0.357)  1.49x

Decode is bound by the 6.3 MB read and 6.3 MB write of the past/present copy (0.425 ms as a plain
copy); with the KV cache in place it takes 0.27 ms. Two threads on a loaded machine wait for the
second core at the end of the ``prange`` region (medians of 1-7 ms there; see the README).
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit, prange, types
from numba.core.types.function_type import CompileResultWAP
from numba.extending import typeof_impl

from . import vecmath
from .attention_vec import (MR, _NR, _VW, _vaxpy, _vcopy, _vdots, _vfill, _vktrans, _vscale,
                            _vsoftmax, _vsoftmax_mr)
from .llvm_tile import gemm_tile
from .memory import aligned_zeros

__all__ = ["KB", "MR", "QB_MAX", "TILED", "AttentionPlan", "attention", "supports"]

_F32 = np.float32
# _VW (host vector width), MR (tile height) and _NR (tile width) live in attention_vec, whose
# intrinsics bake them in
#: the register-tile path: AVX-512 (32 zmm): MR x NR = 6 x 64; AVX2 (16 ymm): 6 x 16
TILED = _VW in (8, 16)
KB = 128                            # keys per block (a multiple of _NR, <= _SLD)
_SLD = 128                          # row stride of the score scratch (>= KB)
_KBR = 4 * _SLD                     # keys per block on the rows path (<= MR * _SLD)
_DP = 256                           # row stride of the Q and accumulator scratch (D, Dv <= _DP)
QB_MAX = 22 * MR                    # query rows per unit (132: BERT's 128 rows in one unit)
_TMIN = 4                           # fewest query rows for the tiled path

# ip[0:_NP]: parameters. _WRITE: 0 no present output from the kernel, 1 write every present row,
# 2 only rows >= P (the past is in place); _QDP/_ADP: Q / accumulator scratch row strides;
# _WS: floats of scratch per thread
(_B, _H, _HKV, _SQ, _T, _P, _D, _DV, _CAUSAL, _HASM, _NT, _FILLINF, _TILE, _WRITE, _QB, _KBK,
 _QDP, _ADP, _WS) = range(19)
_NP = 19
# ip[_ST:_ST + 28]: element strides q b,h,s | pk b,h,s | k b,h,s | pv b,h,s | v b,h,s |
# mask b,h,i,j | y b,h,s | present k b,h,s | present v b,h,s
_ST = _NP
_BND = _ST + 28                     # ip[_BND:_BND + NT + 1]: unit range of each thread


# -- the kernel -----------------------------------------------------------------------------------
def _body(q, pk, k, pv, v, m, y, ko, vo, ip, w, scale, fill, t):
    """One thread's share of the work units (the one-thread kernel; the parallel one calls it by
    address); w is its scratch row."""
    H = ip[_H]
    SQ = ip[_SQ]
    T = ip[_T]
    P = ip[_P]
    D = ip[_D]
    DV = ip[_DV]
    QB = ip[_QB]
    KBk = ip[_KBK]
    QDP = ip[_QDP]
    ADP = ip[_ADP]
    causal = ip[_CAUSAL] != 0
    hasm = ip[_HASM] != 0
    skip_causal = causal and ip[_FILLINF] != 0
    tile = ip[_TILE] != 0
    write = ip[_WRITE] != 0
    wpast = ip[_WRITE] == 1  # 2: the past rows are already in place in the present buffers
    rep = H // ip[_HKV]
    S = _ST
    pks, ks, pvs, vs, kos, vos = ip[S + 5], ip[S + 8], ip[S + 11], ip[S + 14], ip[S + 24], ip[S + 27]
    nqb = (SQ + QB - 1) // QB
    o_qs, o_acc, o_mx, o_ls, o_s, o_kt, o_vp, _ = _offsets(ip)
    npv = (DV + _NR - 1) // _NR
    zero = _F32(0.0)
    ninf = _F32(-np.inf)
    for u in range(ip[_BND + t], ip[_BND + t + 1]):
        qb = u % nqb
        bh = u // nqb
        h = bh % H
        b = bh // H
        g = h // rep
        i0 = qb * QB
        nq = min(QB, SQ - i0)
        writer = write and qb == nqb - 1 and h % rep == 0  # this unit writes the present rows
        wp = writer and wpast
        tl = tile and nq >= _TMIN
        nqr = (nq + MR - 1) // MR * MR if tl else nq
        # -- scaled query rows (tile padding rows: zeros, so their scores and P are 0) ---------
        for i in range(nqr):
            if i < nq:
                _vscale(w, o_qs + i * QDP, q, b * ip[S] + h * ip[S + 1] + (i0 + i) * ip[S + 2], D, scale)
            else:
                _vfill(w, o_qs + i * QDP, D, zero)
            _vfill(w, o_acc + i * ADP, DV, zero)
            w[o_mx + i] = ninf
            w[o_ls + i] = zero
        jend = T
        if skip_causal:  # keys past the last row's frontier are never seen
            jend = max(0, min(T, i0 + nq + T - SQ))
        pkb = b * ip[S + 3] + g * ip[S + 4]
        kb0 = b * ip[S + 6] + g * ip[S + 7] - P * ks  # key j >= P is at kb0 + j * ks
        pvb = b * ip[S + 9] + g * ip[S + 10]
        vb0 = b * ip[S + 12] + g * ip[S + 13] - P * vs
        kob = b * ip[S + 22] + g * ip[S + 23]
        vob = b * ip[S + 25] + g * ip[S + 26]
        mb0 = b * ip[S + 15] + h * ip[S + 16]
        msi = ip[S + 17]
        msj = ip[S + 18]
        step = KBk if tl else _KBR
        for j0 in range(0, jend, step):
            nk = min(step, jend - j0)
            if tl:
                # -- pack K transposed into _NR-key panels (segments split at P and panels) ----
                jj = 0
                while jj < nk:
                    j = j0 + jj
                    je = min(nk, (jj // _NR + 1) * _NR)
                    dst = o_kt + jj // _NR * D * _NR + jj % _NR
                    if j < P:
                        je = min(je, P - j0)
                        _vktrans(w, dst, pk, pkb + j * pks, pks, je - jj, D, ko, kob + j * kos, kos, wp)
                    else:
                        _vktrans(w, dst, k, kb0 + j * ks, ks, je - jj, D, ko, kob + j * kos, kos, writer)
                    jj = je
                # -- pack V into _NR-wide panels [KB][_NR] (and the present rows) ----------------
                for jj in range(nk):  # (no array-valued variables: each assignment costs an
                    j = j0 + jj          # atomic incref/decref pair)
                    for pn in range(npv):
                        lo = pn * _NR
                        if j < P:
                            _vcopy(w, o_vp + (pn * KBk + jj) * _NR, pv, pvb + j * pvs + lo, min(_NR, DV - lo))
                        else:
                            _vcopy(w, o_vp + (pn * KBk + jj) * _NR, v, vb0 + j * vs + lo, min(_NR, DV - lo))
                    if writer:
                        if j < P:
                            if wpast:
                                _vcopy(vo, vob + j * vos, pv, pvb + j * pvs, DV)
                        else:
                            _vcopy(vo, vob + j * vos, v, vb0 + j * vs, DV)
                for r0 in range(0, nq, MR):
                    nkm = nk
                    if skip_causal:  # keys past the micro-block's last row
                        nkm = min(nk, i0 + min(r0 + MR, nq) - 1 + T - SQ - j0 + 1)
                        if nkm <= 0:
                            continue
                    # -- S = Qs Kt -------------------------------------------------------------
                    for jp in range((nkm + _NR - 1) // _NR):
                        gemm_tile(w, o_qs + r0 * _DP, w, o_kt + jp * D * _NR, w, o_s + jp * _NR, D,
                                  False, MR, _NR, _DP, _SLD, _NR, _VW)
                    _vsoftmax_mr(w, o_s, _SLD, min(MR, nq - r0), nkm, m,
                                 mb0 + (i0 + r0) * msi + j0 * msj if hasm else -1, msi, msj,
                                 i0 + r0 + T - SQ - j0 if causal else nkm, fill, o_mx + r0, o_ls + r0,
                                 o_acc + r0 * _DP, _DP, DV)
                    # -- acc += P V ------------------------------------------------------------
                    for pn in range(npv):
                        gemm_tile(w, o_s, w, o_vp + pn * KBk * _NR, w, o_acc + r0 * _DP + pn * _NR, nkm,
                                  True, MR, _NR, _SLD, _DP, _NR, _VW)
            else:
                for i in range(nq):
                    nki = nk
                    if skip_causal:
                        nki = min(nk, i0 + i + T - SQ - j0 + 1)
                        if nki <= 0:
                            continue
                    # the writer's last row sees every key of the block: it copies the present rows
                    cp = writer and i == nq - 1
                    # -- scores, P, acc += P V (segments split at P) ------------------------------
                    np_ = min(nki, max(P - j0, 0))  # keys of this block from the past
                    qo = o_qs + i * QDP
                    j1 = j0 + np_
                    if np_ > 0:
                        _vdots(w, o_s, w, qo, pk, pkb + j0 * pks, pks, np_, D,
                               ko, kob + j0 * kos, kos, cp and wpast)
                    if np_ < nki:
                        _vdots(w, o_s + np_, w, qo, k, kb0 + j1 * ks, ks, nki - np_, D,
                               ko, kob + j1 * kos, kos, cp)
                    ao = o_acc + i * ADP
                    mbi = mb0 + (i0 + i) * msi + j0 * msj if hasm else -1
                    lim = i0 + i + T - SQ - j0 if causal else nki
                    if _vsoftmax(w, o_s, 0, 1, nki, m, mbi, 0, msj, lim, fill, o_mx + i, o_ls + i, ao, 0, DV) == 0:
                        if cp:  # P = 0: V is not read, copy its rows alone
                            for j in range(j0, j0 + nki):
                                if j < P:
                                    if wpast:
                                        _vcopy(vo, vob + j * vos, pv, pvb + j * pvs, DV)
                                else:
                                    _vcopy(vo, vob + j * vos, v, vb0 + j * vs, DV)
                        continue
                    if np_ > 0:
                        _vaxpy(w, ao, w, o_s, pv, pvb + j0 * pvs, pvs, np_, DV,
                               vo, vob + j0 * vos, vos, cp and wpast)
                    if np_ < nki:
                        _vaxpy(w, ao, w, o_s + np_, v, vb0 + j1 * vs, vs, nki - np_, DV,
                               vo, vob + j1 * vos, vos, cp)
        # -- normalize and store ---------------------------------------------------------------
        for i in range(nq):
            li = w[o_ls + i]
            _vscale(y, b * ip[S + 19] + h * ip[S + 20] + (i0 + i) * ip[S + 21], w, o_acc + i * ADP, DV,
                    _F32(1.0) / li if li > zero else zero)


def _offsets(ip):
    """A thread's scratch row (floats, each region 16-aligned): scaled Q rows [QBr][QDP] |
    accumulators [QBr][ADP] | row maxima [QBr] | row sums [QBr] | scores [MR][_SLD] | packed K
    panels [KB/_NR][D][_NR] | packed V panels [Dv/_NR][KB][_NR] (QBr = QB rounded up to MR; the
    panels only on the tiled path). -> the 7 offsets and the row's length. Called by the kernel
    and, unjitted, by the plan."""
    qbr = (ip[_QB] + MR - 1) // MR * MR
    D, DV = ip[_D], ip[_DV]
    tile = ip[_TILE] != 0
    o_qs = 0
    o_acc = o_qs + (qbr * ip[_QDP] + 15) // 16 * 16
    o_mx = o_acc + (qbr * ip[_ADP] + 15) // 16 * 16
    o_ls = o_mx + (qbr + 15) // 16 * 16
    o_s = o_ls + (qbr + 15) // 16 * 16
    o_kt = o_s + (MR * _SLD + 15) // 16 * 16
    o_vp = o_kt + ((KB * D + 15) // 16 * 16 if tile else 0)
    end = o_vp + (((DV + _NR - 1) // _NR * KB * _NR + 15) // 16 * 16 if tile else 0)
    return o_qs, o_acc, o_mx, o_ls, o_s, o_kt, o_vp, end


_offsets_py = _offsets
_JIT = {"error_model": "numpy", "fastmath": vecmath.FASTMATH, "cache": True, "nogil": True}
_offsets = njit(inline="always", **_JIT)(_offsets)
_body_jit = njit(**_JIT)(_body)  # compiled once: the one-thread kernel and the parallel one's body
_F32C = types.float32[::1]
#: What the kernels pass the body: flat C-contiguous float32 tensors, the int64 parameter block,
#: the thread's scratch row, scale, fill and the thread index.
_BODY_SIG = types.void(*(_F32C,) * 9, types.int64[::1], _F32C, types.float32, types.float32, types.int64)
_BODY_FN: list = []  # the body as a first-class function, made at the first parallel call


def _attn_serial(q, pk, k, pv, v, m, y, ko, vo, ip, ws, scale, fill):
    """One thread: the body itself. A jitted wrapper would link the body's IR into a second
    library and generate all its machine code again (1.8 s of BERT-base's cold start)."""
    _body_jit(q, pk, k, pv, v, m, y, ko, vo, ip, ws[0], scale, fill, 0)


def _attn_parallel(q, pk, k, pv, v, m, y, ko, vo, ip, ws, scale, fill):
    """Threads: each runs the body on its share of the work units. The body is passed by address
    (a first-class function) rather than called by name, which would link its IR
    into the parfor's function and again into the kernel: LLVM spent 9.8 s of BERT-base's cold
    start at 2 threads on this kernel alone (13.6 s in all, now the body's ~4 s once)."""
    if not _BODY_FN:
        _BODY_FN.append(_BodyFunction(_body_jit.get_compile_result(_BODY_SIG)))
    _attn_threads(_BODY_FN[0], q, pk, k, pv, v, m, y, ko, vo, ip, ws, scale, fill)


class _BodyFunction(CompileResultWAP):
    """The compiled body's address, with its Numba type made once: Numba's own typing of a
    first-class function builds the type (and its name, from 14 argument types) at every call."""

    def __init__(self, cres):
        super().__init__(cres)
        self.numba_type = types.FunctionType(cres.signature)


@typeof_impl.register(_BodyFunction)
def _typeof_body(val, c):
    return val.numba_type


@njit(parallel=True, **_JIT)
def _attn_threads(body, q, pk, k, pv, v, m, y, ko, vo, ip, ws, scale, fill):
    for t in prange(ip[_NT]):
        body(q, pk, k, pv, v, m, y, ko, vo, ip, ws[t], scale, fill, np.int64(t))


@njit(**_JIT)
def _bool_to_additive(mb, out):
    """out = where(mb, 0, -inf) for a uint8 view of a bool mask (flat)."""
    z = _F32(0.0)
    ninf = _F32(-np.inf)
    for i in range(mb.shape[0]):
        out[i] = z if mb[i] != 0 else ninf


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


def _aligned_zeros(rows, cols):
    """float32 zeros [rows, cols], the data 64-byte aligned (cols is a multiple of 16)."""
    return aligned_zeros(rows * cols, _F32).reshape(rows, cols)


_EMPTY = np.zeros(1, _F32)


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
        self.kshape = (B, SK, hkv * D) if layout == "bsd" else self.k4
        self.vshape = (B, SK, hkv * DV) if layout == "bsd" else self.v4
        self.qshape = (B, SQ, h * D) if layout == "bsd" else self.q4
        self.present_k = (B, hkv, T, D)
        self.present_v = (B, hkv, T, DV)
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
            cs = np.cumprod((1,) + m4[::-1])[:4][::-1]  # C strides of m4
            mst = tuple(int(c) if a != 1 else 0 for c, a in zip(cs, m4))
        self.fill = np.float32(causal_fill)
        self.scale = np.float32(scale)
        tile = bool(TILED and 1 <= D <= _DP and 1 <= DV <= _DP)
        nt = self.threads
        if tile and SQ >= _TMIN:
            qb = min(-(-SQ // MR) * MR, QB_MAX)
            if nt > 1:  # enough units to balance the threads: split the heads' rows
                per_head = -(-4 * nt // max(B * h, 1))
                if -(-SQ // qb) < per_head:
                    rows = -(-SQ // per_head)
                    qb = max(MR, -(-rows // MR) * MR)
        else:
            qb = max(1, min(SQ, 16))
        self.QB = qb
        qdp, adp = max(_DP, -(-D // 16) * 16), max(_DP, -(-DV // 16) * 16)  # Q / acc row strides
        pk_st = (hkv * P * D, P * D, D)
        pv_st = (hkv * P * DV, P * DV, DV)
        ko_st = (hkv * T * D, T * D, D)
        vo_st = (hkv * T * DV, T * DV, DV)
        st = (_strides4(self.q4, layout) + pk_st + _strides4(self.k4, layout) + pv_st
              + _strides4(self.v4, layout) + mst + _strides4(self.y4, layout) + ko_st + vo_st)
        # cost-balanced contiguous unit ranges per thread
        nqb = -(-SQ // qb) if SQ else 0
        units = B * h * nqb
        i0 = np.arange(nqb) * qb
        nq = np.minimum(qb, SQ - i0)
        keys = np.full(nqb, T) if not (causal and self.fill == -np.inf) else np.clip(i0 + nq + T - SQ, 0, T)
        cost = np.tile(nq * (keys + 16) + 64, B * h).astype(np.float64)
        cum = np.concatenate([[0.0], np.cumsum(cost)])
        bounds = [0] + [int(np.searchsorted(cum, cum[-1] * t / nt)) for t in range(1, nt)] + [units]
        bounds = np.maximum.accumulate(np.minimum(bounds, units))
        params = [B, h, hkv, SQ, T, P, D, DV, int(bool(causal)), int(self.mask_shape is not None), nt,
                  int(self.fill == -np.inf), int(tile), 0, qb, KB, qdp, adp, 0]
        params[_WS] = wsz = int(_offsets_py(params)[-1])
        self._ip = np.array(params + list(st) + list(bounds), np.int64)
        if past_shape is not None:  # float16 past: concatenated first, read as a past of T rows
            cat = list(params)
            cat[_P], cat[_WRITE] = T, 0
            cst = list(st)
            cst[3:6] = ko_st
            cst[9:12] = vo_st
            self._ip_cat = np.array(cat + cst + list(bounds), np.int64)
            self._ip[_WRITE] = 1
            # past_* are the first P rows of the present buffers (a KV cache): write rows >= P only
            self._ip_inplace = np.array(cat + cst + list(bounds), np.int64)
            self._ip_inplace[_P], self._ip_inplace[_WRITE] = P, 2
        self._ws = _aligned_zeros(nt, wsz)
        self._lock = threading.Lock()
        self._fn = _attn_serial if nt == 1 else _attn_parallel

    def _f32(self, x, name, shape):
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"jitort::Attention kernel: {name} has shape {x.shape}, planned {shape}")
        a = np.ascontiguousarray(x, dtype=_F32).reshape(-1)
        # the body's compiled signature takes writeable, aligned arrays (a read-only input is
        # another Numba type, which the parallel kernel's call by address would not accept)
        return a if a.flags.writeable and a.flags.aligned else a.copy()

    def __call__(self, q, k, v, past_key=None, past_value=None, mask=None, *, out=None,
                 present_key_out=None, present_value_out=None):
        """-> (y, present_key, present_value). ``out`` (float32 of Y's shape; Y's dtype when that is
        float32) and the present_*_out buffers ([B, Hkv, T, D], past's dtype) are optional
        preallocated outputs, as a memory planner would pass them."""
        qf = self._f32(q, "Q", self.qshape)
        if tuple(k.shape) != tuple(self.kshape) or tuple(v.shape) != tuple(self.vshape):
            raise ValueError(f"jitort::Attention kernel: K {k.shape} / V {v.shape}, planned "
                             f"{self.kshape} / {self.vshape}")
        if (past_key is None) != (self.past_shape is None) or (past_key is None) != (past_value is None):
            raise ValueError("jitort::Attention kernel: past_key/past_value given or missing against the plan")
        kf, vf = self._f32(k, "K", self.kshape), self._f32(v, "V", self.vshape)
        ip = self._ip
        if past_key is not None:
            if past_key.shape != self.past_shape or past_value.shape != self.past_shape[:3] + (self.v4[3],):
                raise ValueError(f"jitort::Attention kernel: past {past_key.shape} / {past_value.shape}, "
                                 f"planned {self.past_shape}")
            f32 = past_key.dtype == _F32 and past_value.dtype == _F32
            for buf, shape in ((present_key_out, self.present_k), (present_value_out, self.present_v)):
                if buf is not None and (buf.shape != shape or not buf.flags.c_contiguous):
                    raise ValueError(f"jitort::Attention kernel: present buffer {buf.shape}, planned {shape}")
                f32 = f32 and (buf is None or buf.dtype == _F32)
            if f32 and _prefix(past_key, present_key_out) and _prefix(past_value, present_value_out):
                pk, pv = present_key_out, present_value_out  # a KV cache: the past is already there
                pkf = kof = pk.reshape(-1)
                pvf = vof = pv.reshape(-1)
                ip = self._ip_inplace
            elif f32 and past_key.flags.c_contiguous and past_value.flags.c_contiguous:
                pk = np.empty(self.present_k, _F32) if present_key_out is None else present_key_out
                pv = np.empty(self.present_v, _F32) if present_value_out is None else present_value_out
                if (present_key_out is not None or present_value_out is not None) and (
                        np.may_share_memory(past_key, pk) or np.may_share_memory(past_key, pv)
                        or np.may_share_memory(past_value, pk) or np.may_share_memory(past_value, pv)):
                    past_key, past_value = past_key.copy(), past_value.copy()  # read before written
                pkf, pvf, kof, vof = past_key.reshape(-1), past_value.reshape(-1), pk.reshape(-1), pv.reshape(-1)
            else:
                kh, vh = self._heads(k, v)
                pk = np.concatenate([past_key, kh.astype(past_key.dtype, copy=False)], axis=2,
                                    out=present_key_out)
                pv = np.concatenate([past_value, vh.astype(past_value.dtype, copy=False)], axis=2,
                                    out=present_value_out)
                pkf = np.ascontiguousarray(pk, dtype=_F32).reshape(-1)
                pvf = np.ascontiguousarray(pv, dtype=_F32).reshape(-1)
                kof = vof = _EMPTY
                ip = self._ip_cat
        else:
            pk, pv = self._heads(k, v)
            if present_key_out is not None:
                np.copyto(present_key_out, pk)
                pk = present_key_out
            if present_value_out is not None:
                np.copyto(present_value_out, pv)
                pv = present_value_out
            pkf = pvf = kof = vof = _EMPTY
        if self.mask_shape is not None:
            if mask is None:
                raise ValueError("jitort::Attention kernel: the plan has a mask, none given")
            if self.mask_kind == "bool":
                if tuple(mask.shape) != self.mask_shape:
                    raise ValueError(f"jitort::Attention kernel: mask has shape {mask.shape}, "
                                     f"planned {self.mask_shape}")
                mf = np.empty(mask.size, _F32)
                _bool_to_additive(np.ascontiguousarray(mask, dtype=np.bool_).reshape(-1).view(np.uint8), mf)
            else:
                mf = self._f32(mask, "mask", self.mask_shape)
        else:
            mf = _EMPTY
        if out is not None and (out.shape != self.y_shape or out.dtype != _F32 or not out.flags.c_contiguous):
            raise ValueError(f"jitort::Attention kernel: out must be C-contiguous float32 {self.y_shape}")
        y = np.empty(self.y_shape, _F32) if out is None else out
        if y.size:
            if self._lock.acquire(blocking=False):
                try:
                    self._fn(qf, pkf, kf, pvf, vf, mf, y.reshape(-1), kof, vof, ip, self._ws,
                             self.scale, self.fill)
                finally:
                    self._lock.release()
            else:  # another thread runs this plan: own scratch
                ws = _aligned_zeros(self.threads, int(ip[_WS]))
                self._fn(qf, pkf, kf, pvf, vf, mf, y.reshape(-1), kof, vof, ip, ws, self.scale, self.fill)
        elif past_key is not None and ip is not self._ip_cat:  # no query rows: the kernel copies nothing
            P = self.P
            kh, vh = self._heads(k, v)
            if ip is self._ip:
                pk[:, :, :P], pv[:, :, :P] = past_key, past_value
            pk[:, :, P:], pv[:, :, P:] = kh, vh
        if self.dtype != _F32:
            y = y.astype(self.dtype)
        return y, pk, pv

    def _heads(self, k, v):
        """K, V as [B, Hkv, Sk, D] views."""
        if self.layout == "bhsd":
            return k, v
        B, hkv, SK, D = self.k4
        return (k.reshape(B, SK, hkv, D).transpose(0, 2, 1, 3),
                v.reshape(B, SK, hkv, self.v4[3]).transpose(0, 2, 1, 3))


def _prefix(past, present):
    """True when ``past`` is the view present[:, :, :P] (same memory, same strides)."""
    return (present is not None and past.strides == present.strides  # (cheap tests first)
            and past.shape[:2] == present.shape[:2] and past.ctypes.data == present.ctypes.data)


def attention(q, k, v, past_key=None, past_value=None, mask=None, *, threads=1, **attrs):
    """One-shot call with the node's attributes (builds an ``AttentionPlan`` each time)."""
    plan = AttentionPlan(q.shape, k.shape, v.shape,
                         None if past_key is None else past_key.shape,
                         None if mask is None else mask.shape, threads=threads, dtype=q.dtype, **attrs)
    return plan(q, k, v, past_key, past_value, mask)
