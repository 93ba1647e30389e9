"""NHWC float32 2-D convolution for ``jitort::FusedConv`` (channels_last=1):
Y = act(Conv(X, W) + B + Z).

    plan = ConvPlan((N, H, W, C), (O, C, KH, KW), strides=(1, 1), pads=(t, l, b, r),
                    dilations=(1, 1), group=1, activation="Relu", activation_params=(),
                    has_bias=True, has_residual=False, threads=2, cache_dir=None)
    packed = plan.pack_weights(W, B)         # once per weight (W in ONNX OIHW layout)
    y = plan(x_nhwc, packed, out=None, residual=None)   # y [N, OH, OW, O]

Every plan is one generated Numba function with the whole geometry baked in as constants
(``plan.source``; ``JITORT_DEBUG=2`` prints it). This file holds ConvPlan and the source
generators (the per-row-block gather and indirection lines are in ``conv_gather.py``, the work
items and scratch in ``conv_work.py``); the LLVM IR the generated code calls (the Numba
intrinsics ``copy_f32``, ``zero_f32``, ``prefetch_rows``, ``atomic_next``, ``conv_tile``,
``dw_tile`` and their epilogue flags) lives in ``conv_ir.py``. Four paths, chosen from the
shapes (``plan.kind``; the ``kind=`` argument forces "im2col" or "direct" where both apply, for
tests and benchmarks):

* ``"gemm"``: 1x1 kernel, stride 1, no pads, group 1: a GEMM over [N*H*W, C] x [C, O] with X
  read in place (row stride C);
* ``"im2col"``: any other group-1 conv, as an implicit GEMM: for each block of MC <= 96 output
  pixels and KC <= 512 reduction indices (k = (i*KW + j)*C + c: tap-major, C innermost) the
  patches are gathered into a per-thread scratch of MC*KC floats, and the register tiles run on it
  right away against W packed as [KH*KW*C, O]. Nothing of size M*K is materialized (the old
  plan-owned [M, K] buffer was 7.4 MB for the ResNet-50 stem, 30-40 MB over the model). K blocks
  hold whole taps, the same number in each (3x3x64: 3 blocks of one kernel row; 512 + 64 was 8%
  slower); the gather copies whole runs with unrolled vector moves (``copy_f32``): a kernel row
  of KW taps (KW*C floats) when its taps are in the image and dilation is 1 (the 7x7x3 stem: 7
  copies of 21 floats per pixel), else C floats per tap; out-of-image taps are zero-filled;
* ``"direct"``: what im2col would run, when C >= 16 (``_pick_kind``): ResNet-50's 3x3 convs
  and strided 1x1s. The same register tile reads the input in place (``igemm_tile``: an indirect
  GEMM), no patch is copied. Per row block of MC output pixels an indirection table holds, for
  every (pixel, tap), the address of the input pixel's first channel, or of a zero row when the
  tap is outside the image (so pads of any size, strides and dilations cost nothing extra, and
  tiles run over the flattened pixels, across output rows: MR rows are always full). K blocks
  (``_direct_blocks``): whole taps (all of K when it fits), else a tap's channel ranges in
  multiples of 16; the K loop is unrolled 4 times. Per tile a mask of the taps with a row in
  the image skips a block whose taps are all outside (the kernel rows above the first / below
  the last output row: 7x7x512 3x3 1.48 -> 1.42 ms); the FMAs of partly-outside taps still run
  on the zero row (2% of a 56x56 3x3, 18% of a 7x7). When the packed weights pass 1 MB the row
  blocks grow up to 1 MB of Y, so the weights are streamed from L3 once per call instead of once
  per 96 pixels (14x14x256->256 1T: 1.34 -> 1.23 ms). Against im2col (same tile, KC, MC <= 96)
  on ResNet-50's shapes, 1 thread: 6-15% faster on every 3x3 from 56x56 to 14x14 and on the
  strided 1x1s up to 28x28, equal (within 2%, noise) on 14x14x512 3x3/2, 7x7x512 3x3 (before
  the masks) and 14x14x1024 1x1/2. C < 16 (the 7x7x3 stem: 3 floats per tap) keeps im2col;
* ``"depthwise"``: group == C == O. Output rows are cut into segments (top/interior/bottom x
  left/interior/right) with the same in-image taps, so no tap is ever tested; in each, runs of 8
  then 4 then 1 pixels go to ``dw_tile`` (LLVM vector IR: all taps of a VW-channel block in
  registers, PU independent FMA chains, pixels outer so rows stream front to back), the C % VW
  tail channels to a Numba loop that LLVM vectorizes over C.

The GEMM paths use the register tile of ``llvm_tile.gemm_tile`` (tile and KC from
``gemm.choose_config``) in gemm.py's loop order (MC rows, KC, NR panels, MR tiles); the last K
block of a tile runs ``conv_tile``, the same K loop with the FusedConv epilogue applied in
registers before its one store: + bias, + Z (before the activation, as FusedConv says), and
Relu/Clip as a clamp. Other activations (``activation_lines``; Sigmoid, Tanh, Gelu, SiLU... through
``vecmath``) run as a Numba loop over the tile right after, while it is in L1. Before each tile,
software prefetches fetch the next tile's Y and Z lines and a slice of the next panel's weights
(in a model these come from L3: see ``_gemm_source``).

Threads: with threads=1 the function has no ``parallel`` and no pool. With more, the work items
(``conv_work.chunks``: MC row blocks, cut into groups of NR panels when there are fewer than 4 blocks per
thread; depthwise: runs of output rows) are taken from atomic counters inside
``prange(threads)``: each thread first runs its home range (the same rows in every layer, so it
reads what its own core wrote: ``conv_work.work_items``), then what is left of the others', so a late or
descheduled thread leaves its items to the others. That does not
remove the wait at the end of the parallel region: on 2 vCPUs shared with other jobs, GOMP's
default spinning workers made each region wait for a preempted worker, a multiple of the 4 ms
tick (3 convs: 20.7 ms; with OMP_WAIT_POLICY=passive 2.4 ms, but passive lost most of the 2T
speedup whenever the other vCPU was busy). The wait policy is process-wide and not set here.

Compile: ``error_model='numpy'``, ``fastmath=vecmath.FASTMATH``, ``nogil``; ``wide_vectors()``
lets LLVM use 512-bit vectors on AVX-512 Intel cores. Without ``cache_dir`` the source is exec'd
(one compile per distinct source in the process: 0.3-1 s at 1 thread, 1-2 s at 2, where the
parallel driver adds Numba's parfor passes); with it the module is written to
``cache_dir/jitort_conv_<hash>.py`` (hash of the source and of conv.py, conv_gather.py,
conv_ir.py, conv_work.py, gemm.py, llvm_tile.py, vecmath.py and the Numba version), registered
in ``sys.modules`` before ``exec_module`` and compiled with ``cache=True``, so later processes
load it from Numba's disk cache. The kernel allocates nothing: its scratch (gather blocks, indirection tables, the zero
row, the work counters: ``conv_work.Scratch``) is the plan's, lent to one call at a time; a call
made while another thread runs the plan gets its own, so one plan may run in two threads.

Speed (``benchmarks/conv.py``; 2 vCPUs of an AVX-512 Xeon shared with other jobs, load average
~1 (quiet) unless said; medians of per-process medians, ms; onnxruntime 1.32, ORT_ENABLE_ALL, the
same thread count; "ORT" per conv = its NCHWc conv node's kernel time from its profiler, reorders
excluded (for the +res convs its one-node graph leaves the Add unfused: compare those in a model)):

    per conv, jitort / ORT                1 thread             2 threads
    224x224x3->64 7x7/2 (stem)            1.51 / 1.39          0.85 / 0.71
    56x56x64->64 3x3                      1.50 / 1.24          0.81 / 0.68
    28x28x128->128 3x3                    1.46 / 1.25          0.81 / 0.66
    14x14x256->256 3x3                    1.51 / 1.24          0.92 / 0.68
    56x56x64->256 1x1                     0.69 / 0.61          0.36 / 0.40
    14x14x1024->256 1x1                   0.64 / 0.58          0.37 / 0.34
    112x112x32 depthwise 3x3 + Clip       0.17 / 0.17          0.10 / 0.09
    56x56x144 depthwise 3x3 + Clip        0.19 / 0.20          0.13 / 0.09
    14x14x576 depthwise 3x3 + Clip        0.041 / 0.053        0.028 / 0.033
    ResNet-50, all 53 convs (weighted)    54.3 / 51.5 (1.06x)  30.7 / 30.7 (1.00x)
    MobileNetV2, all 52 convs             5.03 / 5.40 (0.93x)  3.25 / 3.61 (0.90x)
      before this version (load 2-4)      ResNet-50 1T 1.13x (stem 1.79x, 56x56 3x3 1.42x,
                                          depthwise 1.3-3.6x); MobileNetV2 1T 1.75x; 2T: 8-24 ms
                                          per conv (the tick waits above; static halves)

    whole model (--e2e), call median      1 thread             2 threads
    ResNet-50 (light, batch 1)            60.2 / 50.8 (1.19x)  35.6 / 28.3 (1.26x)
      before                              75.2 / 52.8 (1.42x)  47.9 / 28.7 (1.67x)
      its conv steps / ORT Conv nodes     57.9 / 50.4 (1.15x)  33.5 / 28.9 (1.16x)
    MobileNetV2 (batch 1)                 5.73 / 5.97 (0.96x)  4.54 / 3.40 (1.34x)
      before                              10.5 / 5.75 (1.83x)  7.20 / 3.30 (2.18x)
      its conv steps / ORT Conv nodes     5.56 / 5.51 (1.01x)  4.26 / 3.42 (1.25x)
    at load ~2.5 (other jobs running)     ResNet-50 59.9 / 51.2, MobileNetV2 6.37 / 6.21 at 1T;
                                          at 2T 748 / 99 and 415 / 15: the tick waits above

    direct kind vs im2col, ResNet-50's 3x3 and strided 1x1 convs, 1 thread, load ~1.6
    (jitort direct / jitort im2col / ORT kernel, two runs of 3 rounds back to back)
    56x56x64->64 3x3        1.20 / 1.41 / 1.22-1.18     28x28x128->128 3x3    1.18 / 1.37 / 1.26-1.17
    56x56x128->128 3x3/2    1.26 / 1.38 / 1.24-1.26     28x28x256->256 3x3/2  1.26 / 1.39 / 1.35-1.33
    14x14x256->256 3x3      1.20 / 1.38 / 1.30-1.21     14x14x512->512 3x3/2  1.47 / 1.45 / 1.47-1.37
    7x7x512->512 3x3        1.37 / 1.45 / 1.54-1.46     56x56x256->512 1x1/2  1.15 / 1.19 / 1.46
    28x28x512->1024 1x1/2   1.13 / 1.34 / 1.32-1.26     14x14x1024->2048 1x1/2 1.54 / 1.50 / 1.42-1.38
    all 22 (count-weighted) 23.7 / 26.6 / 25.0-24.0 (0.95x ORT; im2col 1.11x)
    2 threads (load ~2, so ~1T figures for both runtimes): 24.5 / 28.1 / 23.9-22.9

The per-conv gap was in the 3x3 convs (the gather cost ~10% of a 56x56x64 3x3: ORT's NCHWc
kernel reads its input in place): the direct kind closed it standalone. What is left: inside a
model, cache misses on Y, Z and the weights that the standalone numbers do not see (ResNet-50 1T
--e2e, conv steps vs ORT's Conv nodes: 53.7 / 50.0 = 1.07x before, 52.9 / 51.5 = 1.03x with
direct, runs minutes apart at load 1.5-2.5: the in-model gain, ~0.8 ms, is well under the
standalone ~2.8 ms; not investigated), the tile itself (on this Xeon the bare GEMM tile reaches
~195 GFLOP/s in L1; a 56x56x64 3x3 runs at 190), FMAs on the zero row (18% of a 7x7 3x3) and, at
2T, the small MobileNetV2 convs that gain little from the second thread.

Grouped convs with 1 < group and not depthwise raise NotImplementedError.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import threading
import types as pytypes

import numpy as np

from jitort import config as _config

from .conv_ir import _EP_BIAS, _EP_HI, _EP_LO, _EP_RES
# the intrinsics the generated modules call (re-exported: they were defined here before conv_ir.py)
from .conv_ir import (addr_f32, atomic_next, conv_tile, copy_f32, dw_tile, igemm_tile,  # noqa: F401
                      prefetch_rows, zero_f32)
from .conv_gather import gather_lines, indirection_lines
from .conv_work import Scratch, chunks, decorator as _decorator, work_items
from .gemm import VW, _generator_hash as _gemm_generator_hash, choose_config, tile_heights
from .modules import hash_files, load_module, note

#: FusedConv activations (jitort/ops/fused_conv.py) this module generates.
ACTIVATIONS = ("", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "SiLU",
               "Gelu", "Tanh")
_N_PARAMS = {"Clip": 2, "LeakyRelu": 1, "HardSigmoid": 2, "Gelu": 1}
#: Largest K block (the gather scratch per thread is MC x KC floats, MC <= 96).
_MAX_KC = 512
#: Fewest input channels for which the direct kind replaces im2col.
_DIRECT_MIN_C = 16
#: Bytes of packed weights above which the direct kind uses larger row blocks (half of L2).
_DIRECT_L2 = 1 << 20
#: K-loop unroll of igemm_tile (when every block's channel count is a multiple of it).
_DIRECT_UNROLL = 4


# -- activation source -----------------------------------------------------------------------
def _f32(v: float) -> str:
    """A float32 constant as source text (inf spelled through np)."""
    if math.isinf(v):
        return "np.float32(np.inf)" if v > 0 else "np.float32(-np.inf)"
    return f"np.float32({float(v)!r})"


def activation_lines(activation: str, params) -> list[str]:
    """Source lines mapping float32 ``x`` to act(x) in place (empty for no activation)."""
    p = [float(v) for v in (params or [])]
    if activation == "":
        return []
    if activation == "Relu":
        return ["x = max(x, np.float32(0.0))"]
    if activation == "Clip":
        L = []
        if not math.isinf(p[0]):
            L.append(f"x = max(x, {_f32(p[0])})")
        if not math.isinf(p[1]):
            L.append(f"x = min(x, {_f32(p[1])})")
        return L
    if activation == "LeakyRelu":
        return [f"x = x if x >= np.float32(0.0) else x * {_f32(p[0])}"]
    if activation == "Sigmoid":
        return ["x = vecmath.sigmoid(x)"]
    if activation == "HardSigmoid":
        return [f"x = max(np.float32(0.0), min(np.float32(1.0), x * {_f32(p[0])} + {_f32(p[1])}))"]
    if activation == "HardSwish":
        return [f"x = x * max(np.float32(0.0), min(np.float32(1.0), x * {_f32(1 / 6)} + np.float32(0.5)))"]
    if activation == "SiLU":
        return ["x = x * vecmath.sigmoid(x)"]
    if activation == "Gelu":
        return ["x = vecmath.gelu_tanh(x)" if p and p[0] else "x = vecmath.gelu_erf(x)"]
    if activation == "Tanh":
        return ["x = vecmath.tanh(x)"]
    raise ValueError(f"ConvPlan: unknown activation {activation!r}; known: {ACTIVATIONS}")


# -- loading generated modules ---------------------------------------------------------------
_HEADER = """import numba
import numpy as np
from jitort.backends.cpu import vecmath
from jitort.backends.cpu.conv_ir import (addr_f32, atomic_next, conv_tile, copy_f32, dw_tile, igemm_tile,
                                         prefetch_rows, zero_f32)
from jitort.backends.cpu.llvm_tile import gemm_tile
from jitort.backends.cpu.vecmath import FASTMATH, wide_vectors
"""
_MODULES: dict[str, pytypes.ModuleType] = {}


@functools.cache
def _generator_hash() -> str:
    """Hash of everything the generated code depends on besides its own text: a changed
    generator, tile or vecmath function must not reuse a module compiled from the old one."""
    here = os.path.dirname(os.path.abspath(__file__))
    files = ("conv.py", "conv_gather.py", "conv_ir.py", "conv_work.py", "vecmath.py")
    return hash_files(_gemm_generator_hash(), [os.path.join(here, f) for f in files])


def _load(source: str, name: str, cache_dir: str | None):
    """Function ``name`` of the generated module ``source`` (one compile per source per process;
    with ``cache_dir`` a module file compiled with Numba's disk cache, see the module docstring)."""
    modname = "jitort_conv_" + hashlib.sha256((source + _generator_hash()).encode()).hexdigest()[:20]
    key = f"{modname}:{cache_dir is not None}"  # a module compiled in memory does not fill the cache
    mod = _MODULES.get(key)
    if mod is None:
        if _config.DEBUG >= 2:
            print(source)
        flag = "cache=True" if cache_dir is not None else "cache=False"
        mod = load_module(source.replace("cache=CACHE", flag), modname, cache_dir)
        _MODULES[key] = mod
    else:
        note(modname)
    return getattr(mod, name)


def _epilogue(act: list[str], bias: str | None, res: str | None, pad: str) -> list[str]:
    """x = act(x + bias + res), FusedConv's order (the residual before the activation)."""
    L = [f"x = x + {bias}"] if bias else []
    L += [f"x = x + {res}"] if res else []
    return [pad + s for s in L + act]


# -- geometry --------------------------------------------------------------------------------
def _segments(n_out: int, stride: int, pad: int, dil: int, k: int, n_in: int) -> list[tuple]:
    """Runs of output positions [a, b) whose in-image taps are the same range [lo, hi) of the k
    taps (input position = o * stride - pad + t * dil)."""
    segs: list[tuple] = []
    for o in range(n_out):
        valid = [t for t in range(k) if 0 <= o * stride - pad + t * dil < n_in]  # contiguous in t
        lo, hi = (valid[0], valid[-1] + 1) if valid else (0, 0)
        if segs and segs[-1][2:] == (lo, hi):
            segs[-1] = (segs[-1][0], o + 1, lo, hi)
        else:
            segs.append((o, o + 1, lo, hi))
    return segs


def _pick_kind(C: int) -> str:
    """"direct" or "im2col" for a group-1 conv with C input channels that is not a plain GEMM
    (see the module docstring for the measurements behind it)."""
    return "direct" if C >= _DIRECT_MIN_C else "im2col"


def _direct_blocks(NT: int, C: int, limit: int) -> list[tuple]:
    """K blocks of the direct kind, (k0, t0, nt, c0, kc): the same number of whole taps in each
    when C <= limit (all of K when it fits), else each tap cut into channel ranges of about equal
    size, multiples of 16 (C=1024, limit 384: 352, 352, 320; 341 each left the K loop not
    unrolled: 14x14x1024->2048 1x1/2 1T 1.54 ms vs 1.50 im2col)."""
    if NT * C <= limit:
        return [(0, 0, NT, 0, C)]
    if C <= limit:
        d = max(d for d in range(1, NT + 1) if NT % d == 0 and d * C <= limit)
        return [(t * C, t, d, 0, C) for t in range(0, NT, d)]
    per = -(-C // -(-C // limit))  # ceil(C / ranges)
    size = -(-per // 16) * 16
    return [(t * C + c0, t, 1, c0, min(size, C - c0)) for t in range(NT) for c0 in range(0, C, size)]


# -- the implicit-GEMM source ----------------------------------------------------------------
def _gemm_source(p, act: list[str]) -> str:
    """conv_gemm(xin, bp, y, bias, res, wsf, wsi): xin flat NHWC, y and res [M, O] (2-D
    indexing: LLVM did not vectorize the epilogue over flat y[r * O + j]), bp packed [NP, K, NR],
    wsf and wsi the plan's scratch (``_scratch``)."""
    N, H, W, C = p.x_shape
    O, _, KH, KW = p.w_shape
    SH, SW, PT, PL, DH, DW = p.geometry
    _, OH, OW, _ = p.y_shape
    M, K, MR, NR, KC, MC, NP, T = p.M, p.K, p.MR, p.NR, p.KC, p.MC, p.NP, p.threads
    gather, direct = p.kind == "im2col", p.kind == "direct"
    bias = "bias[j]" if p.has_bias else None
    res = "res[r, j]" if p.has_residual else None
    head = [f"# generated by jitort.backends.cpu.conv: {p.kind} x={p.x_shape} w={p.w_shape} "
            f"geometry={p.geometry} tile={MR}x{NR} KC={KC} MC={MC} VW={p.VW} threads={T} "
            f"act={p.activation}{p.activation_params} bias={p.has_bias} residual={p.has_residual}",
            _HEADER, f"_CHUNKS = {tuple(p.chunks)}"] + ([f"_KB = {tuple(p.kblocks)}"] if direct else []) + ["", ""]
    if K == 0:  # no reduction: Y = act(B + Z)
        L = head + [_decorator(False), "def conv_gemm(xin, bp, y, bias, res, wsf, wsi):",
                    f"    for r in range({M}):", f"        for j in range({O}):", "            x = np.float32(0.0)"]
        L += _epilogue(act, bias, res, " " * 12) + ["            y[r, j] = x"]
        return "\n".join(L) + "\n"
    clamp = _clamp(p.activation, p.activation_params)
    rest = [] if clamp is not None else act  # applied by a Numba loop after conv_tile's store
    lo, hi = clamp or (None, None)
    setup = [f"lo, hi = {_f32(lo if lo is not None else 0.0)}, {_f32(hi if hi is not None else 0.0)}"]
    ws = p.scratch  # the plan's (see _scratch)
    setup += [f"col = {ws.floats(MC * KC)}"] if gather else []
    NT, NKB = KH * KW, len(getattr(p, "kblocks", ()))
    if direct:  # the indirection table of a row block, the shared zero row for taps outside the image
        setup += [f"ind = {ws.ints(0, MC * NT)}", f"za = addr_f32({ws.floats(C, shared=True)}, 0)"]
        setup += [f"live = {ws.ints(MC * NT, -(-MC // MR))}"] if p.tap_masks else []
    L = [f"            for i0 in range(m_lo, m_hi, {MC}):",
          f"                i1 = min(i0 + {MC}, m_hi)"]
    if direct:
        L += indirection_lines(p, " " * 16)
        L += [f"                for kb in range({NKB}):",
              "                    k0, t0, ntap, c0, kc = _KB[kb]",
              "                    acc = k0 > 0",
              f"                    last = kb == {NKB - 1}"]
    else:
        L += [f"                for k0 in range(0, {K}, {KC}):",
              f"                    kc = min({KC}, {K} - k0)"]
        L += gather_lines(p, " " * 20) if gather else []
        L += ["                    acc = k0 > 0",
              f"                    last = k0 + {KC} >= {K}"]
    L += [
          "                    for p in range(p_lo, p_hi):",
          f"                        boff = p * {K * NR} + k0 * {NR}",
          f"                        j0 = p * {NR}"]
    nlast = O - (NP - 1) * NR
    a, aoff, lda = ("col", f"(i - i0) * {KC}", KC) if gather else ("xin", f"i * {C} + k0", C)
    call = (f"gemm_tile({a}, {aoff}, bp, boff, y, i * {O} + j0, kc, acc, {{h}}, {NR}, {lda}, {O}, "
            f"{{nv}}, {p.VW})")
    flags = (_EP_BIAS if p.has_bias else 0) | (_EP_RES if p.has_residual else 0) \
        | (_EP_LO if lo is not None else 0) | (_EP_HI if hi is not None else 0)
    last_call = (f"conv_tile({a}, {aoff}, bp, boff, y, i * {O} + j0, kc, acc, bias, j0, res, i * {O} + j0, "
                 f"lo, hi, {{h}}, {NR}, {lda}, {O}, {{nv}}, {p.VW}, {flags})")
    if direct:  # one tile kernel for every block: FLAGS 0 (a plain store or accumulate) before the last
        last_call = (f"igemm_tile(ind, (i - i0) * {NT} + t0, c0, bp, boff, y, i * {O} + j0, nta, kc, acc, bias, "
                     f"j0, res, i * {O} + j0, lo, hi, {{h}}, {NR}, {NT}, {C * NR}, {O}, {{nv}}, {p.VW}, {flags}, {p.unroll})")
        call = last_call.replace(f", {flags}, {p.unroll})", f", 0, {p.unroll})")

    def prefetch(nvalid, pad):
        """Software prefetches issued before each tile: the next tile's C lines (for the store)
        and residual lines, and a slice of the next panel's weights. In the models these come
        from L3 (Y and Z are written and read once, weights too) and their misses stalled the
        tile: with L2 flushed before each call, 56x56x64->256 +res 1.08 -> 0.94 ms,
        7x7x512->2048 +res 1.09 -> 0.93 ms (warm: within noise, up to 10% slower for the weights'
        prefetch). Prefetching the next tile's rows of an in-place X cost 12% warm and gained
        nothing cold: not done."""
        nl = -(-nvalid // 16)
        out = [pad + f"nxt = min({MR}, {M} - i - {MR})",
               pad + "if last and nxt > 0:",
               pad + f"    prefetch_rows(y, (i + {MR}) * {O} + j0, nxt, {O}, {nl}, 1)"]
        if p.has_residual:
            out.append(pad + f"    prefetch_rows(res, (i + {MR}) * {O} + j0, nxt, {O}, {nl}, 0)")
        return out + [pad + "if p + 1 < p_hi:",  # spread over this panel's tiles
                      pad + f"    nt = (i1 - i0 + {MR - 1}) // {MR}",
                      pad + f"    ti = (i - i0) // {MR}",
                      pad + f"    lines = {'ntap * ' if direct else ''}kc * {NR} // 16",
                      pad + "    l0 = lines * ti // nt",
                      pad + f"    prefetch_rows(bp, boff + {K * NR} + l0 * 16, lines * (ti + 1) // nt - l0, 16, 1, 0)"]

    def panel(nvalid, pad):
        out = [pad + f"for i in range(i0, i1, {MR}):", pad + f"    rows = min({MR}, i1 - i)"]
        if direct:  # skip the taps of this block when all are outside the image for every row
            out += [pad + f"    nta = ntap if (live[(i - i0) // {MR}] >> t0) & ((1 << ntap) - 1) else 0"
                    if p.tap_masks else pad + "    nta = ntap"]
        out += prefetch(nvalid, pad + "    ")
        def dispatch(fmt, ind):
            return [x for n, h in enumerate(p.heights) for x in
                    (ind + f"{'if' if n == 0 else 'elif'} rows == {h}:", ind + "    " + fmt.format(h=h, nv=nvalid))]

        if (NKB if direct else -(-K // KC)) == 1:  # one K block: always the last
            out += dispatch(last_call, pad + "    ")
        else:
            out += [pad + "    if last:"] + dispatch(last_call, pad + "        ")
            out += [pad + "    else:"] + dispatch(call, pad + "        ")
        if rest:
            out += [pad + "    if last:",
                    pad + "        for r in range(i, i + rows):",
                    pad + f"            for j in range(j0, j0 + {nvalid}):",
                    pad + "                x = y[r, j]"]
            out += _epilogue(rest, None, None, pad + " " * 16)
            out += [pad + "                y[r, j] = x"]
        return out

    if nlast == NR or NP == 1:
        L += panel(nlast if NP == 1 else NR, " " * 24)
    else:
        L += [f"                        if p == {NP - 1}:"] + panel(nlast, " " * 28)
        L += ["                        else:"] + panel(NR, " " * 28)
    # ``za`` is the zero row's address, an integer, so the row must outlive the kernel by other
    # means: it is in wsf, which the caller holds. (When the kernel allocated it, Numba freed it
    # after its last use while ``ind`` still pointed at it, and the taps outside the image read
    # whatever the next allocation wrote there: light VGG-19 at 2 threads, border pixels off by
    # up to 1e24, now and then inf -> NaN.)
    L = head + work_items("conv_gemm", "xin, bp, y, bias, res, wsf, wsi", T, len(p.chunks),
                           "m_lo, m_hi, p_lo, p_hi = _CHUNKS[wi]", setup, L)
    return "\n".join(L) + "\n"


# -- the depthwise source --------------------------------------------------------------------
def _depthwise_source(p, act: list[str]) -> str:
    """conv_depthwise(xin, w, y, b, z, wsf, wsi): xin, y, z flat NHWC, w [KH*KW*C], b [C], wsf
    and wsi the plan's scratch (only the counters, with threads > 1).

    Output rows are cut into row segments x column segments with the same in-image taps
    (``_segments``). In each, runs of 8, then 4, then single pixels go to ``dw_tile`` (weights in
    registers, bias, residual and a Relu/Clip clamp fused); the C % VW tail channels run a Numba
    loop over the channels (vectorized by LLVM) with the same epilogue. Other activations run over
    the finished output row, while it is in L1. (The leftover pixels of a segment first ran the
    Numba loop too: one per segment made the 56x56x144 plan take 1.3 s (1T) / 3.7 s (2T) to
    compile.)"""
    N, H, W, C = p.x_shape
    _, _, KH, KW = p.w_shape
    SH, SW, PT, PL, DH, DW = p.geometry
    _, OH, OW, _ = p.y_shape
    T, VW_ = p.threads, p.VW
    C16 = C // VW_ * VW_
    clamp = _clamp(p.activation, p.activation_params)
    fused = act if clamp is not None else []  # the clamp, also as Numba lines for the loops
    rest = [] if clamp is not None else act  # applied to the finished row
    lo, hi = clamp or (None, None)
    flags = (_EP_BIAS if p.has_bias else 0) | (_EP_RES if p.has_residual else 0) \
        | (_EP_LO if lo is not None else 0) | (_EP_HI if hi is not None else 0)
    lo_s, hi_s = _f32(lo if lo is not None else 0.0), _f32(hi if hi is not None else 0.0)
    R = N * OH
    rpc = R if T == 1 else max(1, -(-R // (4 * T)))  # output rows per work item
    head = [f"# generated by jitort.backends.cpu.conv: depthwise x={p.x_shape} w={p.w_shape} "
            f"geometry={p.geometry} VW={VW_} threads={T} act={p.activation}{p.activation_params} "
            f"bias={p.has_bias} residual={p.has_residual}",
            _HEADER, "", ""]
    L = [f"            n = r // {OH}",
         f"            oh = r - n * {OH}",
         f"            yb = r * {OW * C}",
         "            yr = y[yb:]"]
    if p.has_residual:
        L.append("            zr = z[yb:]")
    rows = _segments(OH, SH, PT, DH, KH, H)
    for si, (_, b, ilo, ihi) in enumerate(rows):
        L.append(f"            {'if' if si == 0 else 'elif'} oh < {b}:" if si < len(rows) - 1
                 else ("            else:" if si else "            if True:"))
        ind = " " * 16
        L.append(ind + "pass")
        if ihi > ilo:  # first in-image input row of this row's taps (>= 0)
            L += [ind + f"xb = n * {H * W * C} + (oh * {SH} - {PT} + {ilo * DH}) * {W * C}",
                  ind + "xr = xin[xb:]"]
        for ca, cb, jlo, jhi in _segments(OW, SW, PL, DW, KW, W):
            L += _dw_segment(p, ca, cb, ilo, ihi, jlo, jhi, C16, flags, fused, ind)
    if rest:
        L += [f"            for c in range({OW * C}):", "                x = yr[c]"]
        L += ["                " + a for a in rest] + ["                yr[c] = x"]
    body = [f"            for r in range(r0, min(r0 + {rpc}, {R})):"] + ["    " + x for x in L]
    L = head + work_items("conv_depthwise", "xin, w, y, b, z, wsf, wsi", T, -(-R // rpc), f"r0 = wi * {rpc}",
                           [f"lo, hi = {lo_s}, {hi_s}"], body)
    return "\n".join(L) + "\n"


def _dw_segment(p, ca, cb, ilo, ihi, jlo, jhi, C16, flags, fused, ind) -> list[str]:
    """The code of one row segment x column segment of ``_depthwise_source``."""
    N, H, W, C = p.x_shape
    _, _, KH, KW = p.w_shape
    SH, SW, PT, PL, DH, DW = p.geometry
    VW_ = p.VW
    npix = cb - ca
    n8 = npix // 8
    n4 = (npix - 8 * n8) // 4
    n1 = npix - 8 * n8 - 4 * n4
    taps = [(i, j) for i in range(ilo, ihi) for j in range(jlo, jhi)]
    L = []
    if C16:  # runs of 8, 4, then single pixels through dw_tile
        x0 = f"xb + {(ca * SW - PL + jlo * DW) * C}" if taps else "0"
        w0, y0 = (ilo * KW + jlo) * C, ca * C
        meta = f"{ihi - ilo}, {jhi - jlo}, {DH * W * C}, {DW * C}, {SW * C}, {KW * C}, {C}"
        for iters, pu, first in ((n8, 8, 0), (n4, 4, 8 * n8), (n1, 1, 8 * n8 + 4 * n4)):
            if iters:
                xo = f"{x0} + {first * SW * C}" if taps else "0"
                L.append(ind + f"dw_tile(xin, {xo}, w, {w0}, b, 0, z, yb + {y0 + first * C}, y, "
                         f"yb + {y0 + first * C}, {iters}, lo, hi, {meta}, {pu}, {C16 // VW_}, {VW_}, {flags})")
    if C16 < C:  # the C % VW tail channels (every channel when C < VW): a loop LLVM vectorizes
        terms = [f"xr[q * {SW * C} + {((i - ilo) * DH * W + ca * SW - PL + j * DW) * C} + c] * "
                 f"w[{(i * KW + j) * C} + c]" for i, j in taps]
        L += [ind + f"for q in range({npix}):",
              ind + f"    yo = (q + {ca}) * {C}",
              ind + f"    for c in range({C16}, {C}):",
              ind + "        x = " + " + ".join(["b[c]" if p.has_bias else "np.float32(0.0)"] + terms)]
        L += _epilogue(fused, None, "zr[yo + c]" if p.has_residual else None, ind + " " * 8)
        L.append(ind + "        yr[yo + c] = x")
    return L


def _clamp(activation: str, params) -> tuple | None:
    """(lo, hi) (None: unbounded) when the activation is a clamp dw_tile can fuse, else None."""
    if activation == "":
        return (None, None)
    if activation == "Relu":
        return (0.0, None)
    if activation == "Clip":
        lo, hi = params
        return (None if math.isinf(lo) else lo, None if math.isinf(hi) else hi)
    return None


def _pack_panels(B: np.ndarray, NR: int) -> np.ndarray:
    """B [K, N] -> [ceil(N/NR), K, NR] float32, zero-padded past N, 64-byte aligned (gemm.py's
    packed layout)."""
    K, N = B.shape
    NP = -(-N // NR)
    shape = (NP, K, NR)
    size = max(1, math.prod(shape))
    raw = np.empty(size + 16, np.float32)
    start = (-raw.ctypes.data % 64) // 4
    packed = raw[start:start + size][:math.prod(shape)].reshape(shape)
    full = N // NR
    packed[:full] = B[:, :full * NR].reshape(K, full, NR).transpose(1, 0, 2)
    if full < NP:
        packed[full, :, :N - full * NR] = B[:, full * NR:]
        packed[full, :, N - full * NR:] = 0
    return packed


class ConvPlan:
    """One NHWC float32 conv (+ bias, + residual, + activation) for one input shape, weight
    shape, geometry and thread count. See the module docstring."""

    def __init__(self, x_shape_nhwc, w_shape_oihw, strides=(1, 1), pads=(0, 0, 0, 0),
                 dilations=(1, 1), group=1, activation="", activation_params=(),
                 has_bias=False, has_residual=False, threads=1, cache_dir=None, config=None, kind=None):
        N, H, W, C = (int(d) for d in x_shape_nhwc)
        O, CG, KH, KW = (int(d) for d in w_shape_oihw)
        SH, SW = (int(s) for s in (strides or (1, 1)))
        PT, PL, PB, PR = (int(p) for p in (pads or (0, 0, 0, 0)))
        DH, DW = (int(d) for d in (dilations or (1, 1)))
        group, threads = int(group), int(threads)
        if min(N, H, W, C, O, CG, KH, KW, PT, PL, PB, PR) < 0 or min(SH, SW, DH, DW, group, threads) < 1:
            raise ValueError(f"ConvPlan: bad shapes/attributes x={x_shape_nhwc} w={w_shape_oihw} "
                             f"strides={strides} pads={pads} dilations={dilations} group={group}")
        if C != CG * group or O % group:
            raise ValueError(f"ConvPlan: x has {C} channels, w {w_shape_oihw} with group={group} "
                             f"needs {CG * group} and O divisible by the group")
        if activation not in ACTIVATIONS:
            raise ValueError(f"ConvPlan: unknown activation {activation!r}; known: {ACTIVATIONS}")
        params = tuple(float(p) for p in (activation_params or ()))
        if activation == "Gelu" and not params:
            params = (0.0,)
        if len(params) != _N_PARAMS.get(activation, 0):
            raise ValueError(f"ConvPlan: activation {activation!r} takes "
                             f"{_N_PARAMS.get(activation, 0)} params, got {params}")
        OH = (H + PT + PB - DH * (KH - 1) - 1) // SH + 1
        OW = (W + PL + PR - DW * (KW - 1) - 1) // SW + 1
        if OH < 0 or OW < 0 or (H and OH == 0 and KH) or (W and OW == 0 and KW):
            raise ValueError(f"ConvPlan: kernel {KH}x{KW} (dilations {DH},{DW}) does not fit the "
                             f"padded input {H}x{W} (pads {pads})")
        OH, OW = max(OH, 0), max(OW, 0)
        self.x_shape, self.w_shape = (N, H, W, C), (O, CG, KH, KW)
        self.y_shape = (N, OH, OW, O)
        self.geometry = (SH, SW, PT, PL, DH, DW)
        self.activation, self.activation_params = activation, params
        self.has_bias, self.has_residual, self.threads = bool(has_bias), bool(has_residual), threads
        self.M, self.K = N * OH * OW, KH * KW * CG
        act = activation_lines(activation, params)
        if group > 1:
            if not (group == C == O and CG == 1):
                raise NotImplementedError(f"ConvPlan: grouped conv (group={group}, C={C}, O={O}) "
                                          f"that is not depthwise is not generated yet")
            self.kind = "depthwise"
            self.VW = VW
            self.scratch = Scratch(threads)
            self.source = _depthwise_source(self, act)
            name = "conv_depthwise"
        else:
            one = KH == KW == 1 and SH == SW == 1 and PT == PL == PB == PR == 0
            self.kind = kind or ("gemm" if one else _pick_kind(C))
            if self.kind not in ("gemm", "im2col", "direct") or (self.kind == "gemm") != one:
                raise ValueError(f"ConvPlan: kind {kind!r} is not possible here (1x1 stride-1 unpadded: "
                                 f"'gemm'; other group-1 convs: 'im2col' or 'direct')")
            self._configure(config or choose_config(self.M, self.K, O), config.MC if config else None)
            self.source = _gemm_source(self, act)
            name = "conv_gemm"
        empty = self.M == 0 or O == 0
        self._kernel = None if empty else _load(self.source, name, cache_dir)
        self._zeros = np.zeros(1, np.float32)
        self._ws, self._ws_lock = self.scratch.buffers(), threading.Lock()

    def _configure(self, cfg, given_mc=None) -> None:
        """Tile, KC (whole taps when C <= KC), MC, work items and tile heights of the GEMM paths."""
        M, K, C, O = self.M, self.K, self.x_shape[3], self.w_shape[0]
        self.VW, self.MR, self.NR = VW, cfg.MR, cfg.NR
        limit = max(1, min(cfg.KC or K, _MAX_KC))
        if K <= limit:
            self.KC = max(K, 1)
        elif self.kind == "im2col" and C <= limit:  # whole taps, the same number in every block
            taps = K // C  # (measured: 512 + 64 for 3x3x64 was 8% slower than 576 or 3 x 192)
            self.KC = C * max(d for d in range(1, taps + 1) if taps % d == 0 and d * C <= limit)
        else:  # equal blocks
            self.KC = -(-K // -(-K // limit))
        # row blocks of <= 96 pixels, panels inside: Y and Z are then written and read one
        # contiguous block at a time (measured: 28x28x128->512 with a cold Y, 0.83 -> 0.71 ms
        # against one block of all 784 rows, where every panel pass strode over all of Y)
        mc = min(cfg.MC or M, 96 // self.MR * self.MR)
        if self.kind == "direct" and given_mc:
            mc = given_mc
        elif self.kind == "direct" and K * O * 4 > _DIRECT_L2:
            # weights past half of L2 are streamed from L3 once per row block: fewer, larger
            # blocks (Y stays in L2; A is read in place). 14x14x256->256 1T: 1.34 -> 1.23 ms
            mc = max(mc, _DIRECT_L2 // (4 * O) // self.MR * self.MR)
        self.MC = max(self.MR, -(-max(1, min(mc, M)) // self.MR) * self.MR)
        self.NP = -(-O // self.NR)
        if self.kind == "direct":  # (k0, first tap, taps, first channel, channels) per K block
            self.kblocks = _direct_blocks(self.w_shape[2] * self.w_shape[3], C, limit)
            self.KC = max(nt * kc for _, _, nt, _, kc in self.kblocks)
            self.unroll = _DIRECT_UNROLL if all(kc % _DIRECT_UNROLL == 0 for *_, kc in self.kblocks) else 1
            self.tap_masks = len(self.kblocks) > 1 and self.w_shape[2] * self.w_shape[3] <= 62
        self.chunks = chunks(M, self.NP, self.MC, self.threads, self.MR)
        self.heights = tile_heights(M, self.MR, self.MC, self.chunks)
        self.scratch = self._scratch()

    def _scratch(self) -> Scratch:
        """im2col: a gather block of MC x KC floats per thread; direct: a zero row of C floats
        for all threads, and per thread the row block's indirection table (MC x taps addresses)
        and its tap masks (one per MR rows)."""
        if self.kind == "im2col":
            return Scratch(self.threads, thread_f=self.MC * self.KC)
        if self.kind == "direct":
            taps = self.w_shape[2] * self.w_shape[3]
            masks = -(-self.MC // self.MR) if self.tap_masks else 0
            return Scratch(self.threads, shared_f=self.x_shape[3], thread_i=self.MC * taps + masks)
        return Scratch(self.threads)

    # -- public -------------------------------------------------------------------------
    def pack_weights(self, W, B=None):
        """W [O, C/group, KH, KW] (ONNX layout), B [O] or None -> the packed operand(s)
        ``plan.__call__`` takes."""
        W = np.asarray(W)
        if W.shape != self.w_shape:
            raise ValueError(f"ConvPlan: W must be {self.w_shape}, got {W.shape}")
        if self.has_bias:
            if B is None or np.shape(B) != (self.w_shape[0],):
                raise ValueError(f"ConvPlan: B must be ({self.w_shape[0]},), got "
                                 f"{None if B is None else np.shape(B)}")
            B = np.ascontiguousarray(B, np.float32)
        elif B is not None:
            raise ValueError("ConvPlan: the plan was built without a bias")
        if self.kind == "depthwise":  # [KH * KW * C]
            return np.ascontiguousarray(W[:, 0].transpose(1, 2, 0), np.float32).reshape(-1), B
        O, C, KH, KW = self.w_shape
        return _pack_panels(np.asarray(W, np.float32).transpose(2, 3, 1, 0).reshape(KH * KW * C, O),
                            self.NR), B

    def __call__(self, x, packed, out=None, residual=None):
        _check("x", x, self.x_shape)
        if out is None:
            out = np.empty(self.y_shape, np.float32)
        _check("out", out, self.y_shape)
        if self.has_residual:
            _check("residual", residual, self.y_shape)
        elif residual is not None:
            raise ValueError("ConvPlan: the plan was built without a residual")
        self.bind(packed)(x, out, residual)
        return out

    def bind(self, packed):
        """``run(x, out, residual)`` for a plan step: the kernel without ``__call__``'s checks,
        which the plan's lowering has made once (x, out and residual are float32 C-contiguous
        arrays of the planned shapes), and with its views and bias picked once. ~2 us a step.
        The plan's scratch serves one call at a time: a call made while another thread runs the
        plan gets its own."""
        kernel, (wp, b) = self._kernel, packed
        if kernel is None:
            return lambda x, out, residual=None: None
        shape = (-1,) if self.kind == "depthwise" else (self.M, self.w_shape[0])
        bias = b if self.has_bias else self._zeros
        (wsf, wsi), lock, scratch = self._ws, self._ws_lock, self.scratch

        def run(x, out, residual=None):
            y = out.reshape(shape)
            z = y if residual is None else residual.reshape(shape)
            if lock.acquire(False):
                try:
                    kernel(x.reshape(-1), wp, y, bias, z, wsf, wsi)
                finally:
                    lock.release()
            else:
                kernel(x.reshape(-1), wp, y, bias, z, *scratch.buffers())

        return run


def _check(what, x, shape):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != tuple(shape) \
            or not x.flags.c_contiguous:
        got = f"{type(x).__name__} {getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}"
        raise ValueError(f"ConvPlan: {what} must be a C-contiguous float32 array of shape "
                         f"{tuple(shape)}, got {got}")
