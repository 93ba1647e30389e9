"""Shape-specialized float32 GEMM with a fused epilogue: C = act(alpha * A @ B + bias) + residual.

    plan = GemmPlan(M, K, N, epilogue=Epilogue(bias=True, activation="gelu_erf"), threads=2)
    packed = plan.pack_b(B)                  # once per weight: [N/NR][K][NR], zero-padded
    plan(A, packed, out, bias=b)             # A [M, K] row-major, read in place; out [M, N]

Pieces:

* the register tile ``llvm_tile.gemm_tile`` (LLVM vector IR, MR x NR accumulators in zmm
  registers; an N-edge tile stores only its NVALID columns, so N need not be a multiple of NR);
* a Numba driver generated per (M, K, N, tile, KC, MC, threads, epilogue): loops MC row blocks,
  KC blocks, NR panels, MR tiles (the order of notes/cpu-gemm-threads.md). Every tile height the
  loops can produce gets its own tile kernel: the heights are found by running the same loops in
  Python (``tile_heights``), never guessed;
* the epilogue runs on each tile right after its last K block is stored, while the tile is
  still in L1: one pass over C, a loop over each tile row that LLVM vectorizes (zmm on AVX-512:
  the driver calls ``vecmath.wide_vectors()``). Two details keep it vectorizable: the column
  index is a uint64 (Numba adds no negative-index wraparound select, which made the addresses
  non-affine), and the row's end is read from ``c.shape[1]`` (a constant trip count of NR let
  LLVM fully unroll a short body such as bias/relu before the loop vectorizer, and the SLP
  vectorizer cannot prove that ``c`` and ``bias`` do not alias: 32 scalar adds per row).
  Activations are vecmath's branch-free polynomial forms, with no libm call and no
  subnormal intermediate (error bounds tested in tests/backends/cpu/test_gemm.py too);
* M = 1 is the gemv path: a 1 x 64 tile over the whole K, no blocking;
* threads: the driver's outer loop is ``prange(threads)`` over halves (thirds...) of the NR
  panels, or of the MR tiles when there are fewer than 2 panels per thread or at least 256 rows
  per thread (``_thread_ranges``). threads=1 compiles
  without ``parallel`` and never touches a thread pool. No BLAS is called, so Numba's pool is
  the only pool (measured with the omp threading layer; see benchmarks/gemm.py).

Compile options: ``error_model='numpy'``, ``fastmath=True``, ``nogil=True``. With ``cache_dir``
the driver is written as a real module file (named by a hash of its source and of this package's
code generators), registered in ``sys.modules`` before ``exec_module``, and compiled with
``cache=True``: later processes load it from Numba's disk cache. Without it the source is exec'd
and compiled in memory each process (about 0.3-0.7 s).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import sys
from dataclasses import dataclass

import numba
import numpy as np

from jitort import config
from jitort.backends.cpu.vecmath import gelu_erf as gelu_erf_f32, gelu_tanh as gelu_tanh_f32  # noqa: F401

from .modules import hash_files, load_module, note


def host_vector_width() -> int:
    """float32 lanes of the widest FMA vector the host (as LLVM sees it) has: 16 with AVX-512F,
    8 with AVX2+FMA, else 4."""
    import llvmlite.binding as llb
    feats = llb.get_host_cpu_features()
    if feats.get("avx512f"):
        return 16
    return 8 if feats.get("avx2") and feats.get("fma") else 4


VW = host_vector_width()
ACTIVATIONS = ("none", "relu", "gelu_tanh", "gelu_erf")
#: jitort::FusedMatMul's activation attribute -> ours (others are not generated yet).
FUSED_MATMUL_ACTIVATIONS = {"": "none", "Relu": "relu", "GeluTanh": "gelu_tanh", "Gelu": "gelu_erf"}
_JIT = {"error_model": "numpy", "fastmath": True, "nogil": True}


# -- float32 activations (inlined into the epilogue loop) -------------------------------------
# gelu_erf_f32 and gelu_tanh_f32 are vecmath.gelu_erf / gelu_tanh (imported above): relu(x) -
# |x| Phi(-|x|) resp. relu(x) - |x| sigmoid(-|2u|), one polynomial and one 2^f each, branch-free,
# no libm call, no subnormal intermediate; 4 ulp, or 1e-7 absolute in the negative tails. The
# forms used before went subnormal on large |x|, and each subnormal operand or result costs a
# microcode assist (128x768x3072 with inputs of std 28, 1 thread: 14.1 ms instead of 3.9):
# gelu_erf's A&S 7.1.26 erfc, t P(t) exp(-a^2), for x < -13 (it also had up to 2.5e4 ulp of
# relative error near x = -5); gelu_tanh's x / (1 + exp(-2u)) for x < -10 once on zmm, where
# the reciprocal estimate vrcp14ps returns subnormals (vrcpps flushes them to 0).
_ZERO = np.float32(0)


@numba.njit(inline="always", cache=True, **_JIT)
def relu_f32(x):
    return max(x, _ZERO)


_ACT_FN = {"relu": "relu_f32", "gelu_tanh": "gelu_tanh_f32", "gelu_erf": "gelu_erf_f32"}


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Epilogue:
    """What is fused into the tile store: act(alpha * acc + bias) + residual."""
    bias: bool = False
    activation: str = "none"
    residual: bool = False
    alpha: float = 1.0

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"GEMM epilogue: unknown activation {self.activation!r}; known: {ACTIVATIONS}")

    @property
    def empty(self) -> bool:
        return not self.bias and not self.residual and self.activation == "none" and self.alpha == 1.0


@dataclass(frozen=True)
class TileConfig:
    """MR x NR register tile (NR a multiple of the vector width VW; MR * NR/VW accumulators plus
    NR/VW B vectors plus one broadcast must fit 32 zmm / 16 ymm registers), KC and MC blocks (None:
    the whole extent). ``why`` says where the candidate comes from."""
    MR: int
    NR: int
    KC: int | None = None
    MC: int | None = None
    why: str = ""


_TILES = {
    16: [(12, 32, "24 zmm acc; best on wide N (128x768x3072), AVX-512 sweep in the notes"),
         (8, 48, "24 zmm acc; best on 128x768x768"),
         (6, 64, "24 zmm acc; best on deep K (128x3072x768) and 64x1024x1024"),
         (4, 64, "16 zmm acc; fewer rows for small M"),
         (12, 16, "12 zmm acc; narrow N <= 16")],
    8: [(6, 16, "12 ymm acc + 2 B + 1 broadcast = 15 of 16 ymm (the classic AVX2 shape)"),
        (4, 24, "12 ymm acc + 3 B + 1 broadcast = 16 ymm"),
        (8, 8, "8 ymm acc; narrow N <= 8"),
        (3, 32, "12 ymm acc, 4 B vectors: wider panels")],
    4: [(6, 8, "12 xmm acc"), (4, 12, "12 xmm acc")],
}


def tile_configs(vw: int | None = None) -> list[TileConfig]:
    """The tunable candidates for vector width ``vw`` (default: the host's). A tuner times these;
    ``choose_config`` is the untuned default."""
    vw = vw or VW
    out = []
    for mr, nr, why in _TILES[vw]:
        for kc in (128, 256, 384, 512):
            for mc in (None, 96 // mr * mr):
                out.append(TileConfig(mr, nr, kc, mc, why))
    out.append(TileConfig(1, 4 * vw, None, 1, "gemv (M = 1): 4 accumulators over the whole K"))
    return out


def choose_config(M: int, K: int, N: int, vw: int | None = None) -> TileConfig:
    """The default config for a shape and vector width (AVX-512: the 1T sweep in
    notes/cpu-gemm-threads.md; AVX2: the sweep in benchmarks/gemm.py --sweep)."""
    vw = vw or VW
    if M == 1:
        return TileConfig(1, min(8 * vw, _round_up(max(N, 1), vw)), None, 1, "gemv")
    if vw == 8:
        mr, nr = (8, 8) if N <= 8 else (6, 16)
        kc = min(256, max(K, 1))
        mc = None if M * kc * 4 <= 256 * 1024 else 96
        return TileConfig(mr, nr, kc, mc, "default (AVX2)")
    if vw == 4:
        return TileConfig(6, 8, min(256, max(K, 1)), None if M <= 96 else 96, "default (SSE)")
    if N <= 16:
        mr, nr, kc = 12, 16, 512
    elif N <= 32:
        mr, nr, kc = 12, 32, 512
    elif N <= 48:
        mr, nr, kc = 8, 48, 512
    elif K >= 2048:
        mr, nr, kc = 6, 64, 128
    elif N >= 2048:
        mr, nr, kc = 12, 32, 384
    elif N % 48 == 0 and N % 64 != 0 and K <= 1024:
        mr, nr, kc = 8, 48, 512
    else:
        mr, nr, kc = 6, 64, 512
    kc = min(kc, max(K, 1))
    mc = None if M * kc * 4 <= 512 * 1024 else 96 // mr * mr
    return TileConfig(mr, nr, kc, mc, "default")


#: Software-prefetch (into L2) the next NR panel's slice of packed B while the tiles of this
#: one run, spread over them: in a model the weights come from L3 or DRAM at every call.
#: Measured with the caches flushed before each call (1 thread, interleaved A/B, medians):
#: 128x768x3072 4.53 -> 3.99 ms, 128x3072x768 3.92 -> 3.50, 128x768x768 1.00 -> 0.94,
#: 64x1024x1024 unchanged; BERT-base end to end 1.03x -> 0.98x onnxruntime. Only with at least
#: 4 tiles per panel to spread it over: gemv (M = 1: one tile) streams B in order, which the
#: hardware prefetcher follows, and the whole next slice at once made 1x768x3072 0.37 -> 0.53 ms.
_PREFETCH_B = True


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


# -- loop structure (shared by the source generator and tile_heights) -------------------------
#: Rows per thread from which the threads split M rather than N: each then streams all of B
#: but reads only its own rows of A -- the rows it wrote in the layer before (row kernels split
#: rows the same way), where an N split made every thread read all of A, half of it from the
#: other core's cache. In BERT-small (M = 8 x 128) at 2 threads: 26.4 -> 24.7 ms; BERT-base
#: (M = 128: B re-streamed for 64 rows) was 8% slower split by M.
_M_SPLIT_ROWS = 256


def _thread_ranges(M, NP, MR, threads):
    """Per thread: (m_lo, m_hi, p_lo, p_hi). Splits the MR tiles (boundaries at multiples of
    MR) when each thread gets >= _M_SPLIT_ROWS rows or there are fewer than 2 panels per
    thread, else the NR panels."""
    tiles = -(-M // MR)
    by_rows = M // max(threads, 1) >= _M_SPLIT_ROWS and tiles >= 2 * threads
    if threads == 1 or (NP >= 2 * threads and not by_rows):
        return [(0, M, NP * t // threads, NP * (t + 1) // threads) for t in range(threads)]
    return [(min(M, tiles * t // threads * MR), min(M, tiles * (t + 1) // threads * MR), 0, NP)
            for t in range(threads)]


def tile_heights(M, MR, MC, ranges) -> list[int]:
    """Every tile height the driver's M loops produce (each needs its own tile kernel)."""
    seen = set()
    for m_lo, m_hi, p_lo, p_hi in ranges:
        if p_lo >= p_hi:
            continue
        for i0 in range(m_lo, m_hi, MC):
            i1 = min(i0 + MC, m_hi)
            for i in range(i0, i1, MR):
                seen.add(min(MR, i1 - i))
    return sorted(seen, reverse=True)


# -- source generation -----------------------------------------------------------------------
class GemmPlan:
    """C[M, N] = act(alpha * A[M, K] @ B[K, N] + bias[N]) + residual[M, N], float32, generated
    for one shape, tile config, thread count and epilogue. See the module docstring."""

    def __init__(self, M: int, K: int, N: int, epilogue: Epilogue | None = None, threads: int = 1,
                 config: TileConfig | None = None, cache_dir: str | None = None,
                 vector_width: int | None = None):
        if min(M, K, N) < 0 or threads < 1:
            raise ValueError(f"GemmPlan: bad sizes M={M} K={K} N={N} threads={threads}")
        self.M, self.K, self.N, self.threads = int(M), int(K), int(N), int(threads)
        self.epilogue = epilogue or Epilogue()
        self.VW = vw = int(vector_width or VW)
        cfg = config or choose_config(M, K, N, vw)
        if vw not in (4, 8, 16) or cfg.NR % vw or cfg.MR < 1 or cfg.MR * cfg.NR // vw > 30:
            raise ValueError(f"GemmPlan: unsupported tile {cfg.MR}x{cfg.NR} at vector width {vw}")
        self.MR, self.NR = cfg.MR, cfg.NR
        self.KC = min(cfg.KC or max(K, 1), max(K, 1))
        self.MC = _round_up(max(1, min(cfg.MC or M, M)), self.MR)  # a multiple of MR
        self.NP = -(-N // self.NR)
        self.ranges = _thread_ranges(M, self.NP, self.MR, self.threads)
        self.heights = tile_heights(M, self.MR, self.MC, self.ranges)
        self.name = f"gemm_{M}x{K}x{N}"
        self.source = self._generate()
        self.kernel = self._compile(cache_dir) if M and N else None  # nothing to compute

    # -- public -------------------------------------------------------------------------
    def pack_b(self, B: np.ndarray) -> np.ndarray:
        """B [K, N] -> [NP, K, NR] float32, zero-padded past N, 64-byte aligned."""
        B = np.asarray(B)
        if B.shape != (self.K, self.N):
            raise ValueError(f"{self.name}: B must be {(self.K, self.N)}, got {B.shape}")
        shape = (self.NP, self.K, self.NR)
        size = max(1, math.prod(shape))
        raw = np.empty(size + 16, np.float32)
        start = (-raw.ctypes.data % 64) // 4
        packed = raw[start:start + size][:math.prod(shape)].reshape(shape)
        full, NR = self.N // self.NR, self.NR  # whole panels, then the zero-padded last one
        packed[:full] = B[:, :full * NR].reshape(self.K, full, NR).transpose(1, 0, 2)
        if full < self.NP:
            rem = self.N - full * NR
            packed[full, :, :rem] = B[:, full * NR:]
            packed[full, :, rem:] = 0
        return packed

    def __call__(self, A, packed, out=None, bias=None, residual=None):
        M, K, N, ep = self.M, self.K, self.N, self.epilogue
        if out is None:
            out = np.empty((M, N), np.float32)
        _check(self.name, "A", A, (M, K))
        _check(self.name, "packed B", packed, (self.NP, K, self.NR))
        _check(self.name, "out", out, (M, N))
        args = [A, packed, out]
        if ep.bias:
            _check(self.name, "bias", bias, (N,))
            args.append(bias)
        elif bias is not None:
            raise ValueError(f"{self.name}: the plan was built without a bias")
        if ep.residual:
            _check(self.name, "residual", residual, (M, N))
            args.append(residual)
        elif residual is not None:
            raise ValueError(f"{self.name}: the plan was built without a residual")
        if M and N:
            self.kernel(*args)
        return out

    def bind(self):
        """``run(A, packed, out, bias, residual)`` for a plan step: the kernel without
        ``__call__``'s checks, which the plan's lowering has made once (its arrays are the memory
        plan's or its own: float32, C-contiguous, these shapes; bias / residual None when the
        epilogue has none). ~2 us a step."""
        kernel, ep = self.kernel, self.epilogue
        if kernel is None:
            return lambda A, packed, out, bias, residual: None
        if ep.bias and ep.residual:
            return lambda A, packed, out, bias, residual: kernel(A, packed, out, bias, residual)
        if ep.bias:
            return lambda A, packed, out, bias, residual: kernel(A, packed, out, bias)
        if ep.residual:
            return lambda A, packed, out, bias, residual: kernel(A, packed, out, residual)
        return lambda A, packed, out, bias, residual: kernel(A, packed, out)

    # -- codegen ------------------------------------------------------------------------
    def _generate(self) -> str:
        M, K, N, MR, NR, KC, MC, NP, T = (self.M, self.K, self.N, self.MR, self.NR, self.KC, self.MC,
                                          self.NP, self.threads)
        ep = self.epilogue
        params = "a, bp, c" + (", bias" if ep.bias else "") + (", res" if ep.residual else "")
        nlast = N - (NP - 1) * NR
        loop = "numba.prange" if T > 1 else "range"
        L = [(f"# generated by jitort.backends.cpu.gemm: M={M} K={K} N={N} tile={MR}x{NR} KC={KC} "
              f"MC={MC} VW={self.VW} threads={T} epilogue={ep}"),
             "import numba", "import numpy as np",
             "from jitort.backends.cpu.llvm_tile import gemm_tile",
             "from jitort.backends.cpu.conv_ir import prefetch_rows_l2",
             "from jitort.backends.cpu.gemm import relu_f32, gelu_tanh_f32, gelu_erf_f32",
             "from jitort.backends.cpu.vecmath import wide_vectors", "",
             f"_RANGES = {tuple(self.ranges)}", f"_ALPHA = np.float32({ep.alpha!r})", "", ""]
        L.append(f"@numba.njit(error_model='numpy', fastmath=True, nogil=True, parallel={T > 1}, "
                 f"cache=CACHE)")
        L.append(f"def {self.name}({params}):")
        if K == 0:  # no product: C = epilogue(0)
            L += [f"    for i in range({M}):", f"        for j in range({N}):", "            x = np.float32(0.0)"]
            L += ["            " + s for s in self._epilogue_lines("i", "j")]
            L += ["            c[i, j] = x"]
            return "\n".join(L) + "\n"
        L += [f"    for t in {loop}({T}):",
              "        wide_vectors()  # zmm epilogue on AVX-512 (inside the prange body: its own function)",
              "        m_lo, m_hi, p_lo, p_hi = _RANGES[t]",
              f"        for i0 in range(m_lo, m_hi, {MC}):",
              f"            i1 = min(i0 + {MC}, m_hi)",
              f"            for k0 in range(0, {K}, {KC}):",
              f"                kc = min({KC}, {K} - k0)",
              "                acc = k0 > 0",
              f"                last = k0 + {KC} >= {K}",
              "                for p in range(p_lo, p_hi):",
              f"                    boff = p * {K * NR} + k0 * {NR}",
              f"                    j0 = p * {NR}"]
        if nlast == NR:
            L += self._panel_lines(NR, indent=20)
        elif NP == 1:
            L += self._panel_lines(nlast, indent=20)
        else:
            L += [f"                    if p == {NP - 1}:"] + self._panel_lines(nlast, indent=24)
            L += ["                    else:"] + self._panel_lines(NR, indent=24)
        return "\n".join(L) + "\n"

    def _panel_lines(self, nvalid: int, indent: int) -> list[str]:
        K, N, MR, NR = self.K, self.N, self.MR, self.NR
        pad = " " * indent
        L = [pad + f"for i in range(i0, i1, {MR}):"]
        if _PREFETCH_B and -(-min(self.M, self.MC) // MR) >= 4:  # a share of the next B slice per tile
            L += [pad + "    if p + 1 < p_hi:",
                  pad + f"        nt = (i1 - i0 + {MR - 1}) // {MR}",
                  pad + f"        ti = (i - i0) // {MR}",
                  pad + f"        lines = kc * {NR} // 16",
                  pad + "        l0 = lines * ti // nt",
                  pad + f"        prefetch_rows_l2(bp, boff + {K * NR} + l0 * 16, lines * (ti + 1) // nt - l0, 16, 1, 0)"]
        call = f"gemm_tile(a, i * {K} + k0, bp, boff, c, i * {N} + j0, kc, acc, {{h}}, {NR}, {K}, {N}, {nvalid}, {self.VW})"
        if self.heights == [MR]:
            L.append(pad + "    " + call.format(h=MR))
        else:
            L.append(pad + f"    rows = min({MR}, i1 - i)")
            for n, h in enumerate(self.heights):
                kw = "if" if n == 0 else "elif"
                L += [pad + f"    {kw} rows == {h}:", pad + "        " + call.format(h=h)]
        if not self.epilogue.empty:  # uint64 column, runtime row end: see the module docstring
            rows = f"min({MR}, i1 - i)"
            L += [pad + "    if last:",
                  pad + f"        for r in range(i, i + {rows}):",
                  pad + f"            for j in range(j0, min(j0 + {nvalid}, c.shape[1])):",
                  pad + "                u = np.uint64(j)",
                  pad + "                x = c[r, u]"]
            L += [pad + "                " + s for s in self._epilogue_lines("r", "u")]
            L += [pad + "                c[r, u] = x"]
        return L

    def _epilogue_lines(self, i: str, j: str) -> list[str]:
        ep, L = self.epilogue, []
        if ep.alpha != 1.0:
            L.append("x = x * _ALPHA")
        if ep.bias:
            L.append(f"x = x + bias[{j}]")
        if ep.activation != "none":
            L.append(f"x = {_ACT_FN[ep.activation]}(x)")
        if ep.residual:
            L.append(f"x = x + res[{i}, {j}]")
        return L

    def _compile(self, cache_dir):
        if config.DEBUG >= 2:
            print(self.source)
        key = hashlib.sha256((self.source + _generator_hash()).encode()).hexdigest()[:20]
        modname = f"jitort_gemm_{key}"
        if cache_dir is None:  # compiled in memory, again in every process
            return getattr(load_module(self.source.replace("cache=CACHE", "cache=False"), modname, None),
                           self.name)
        mod = sys.modules.get(modname)  # one compile per process, whichever cache dir asked first
        if mod is None:
            mod = load_module(self.source.replace("cache=CACHE", "cache=True"), modname, cache_dir)
        else:
            note(modname)
        return getattr(mod, self.name)


def _check(name, what, x, shape):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != shape or not x.flags.c_contiguous:
        got = (f"{type(x).__name__} {getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}"
               + ("" if getattr(x, "flags", None) is None or x.flags.c_contiguous else " non-contiguous"))
        raise ValueError(f"{name}: {what} must be a C-contiguous float32 array of shape {shape}, got {got}")


@functools.cache
def _generator_hash() -> str:
    """Hash of the code generators: a changed tile or driver generator, or a changed activation
    (vecmath's are inlined), must not reuse old modules."""
    here = os.path.dirname(os.path.abspath(__file__))
    return hash_files(numba.__version__, [os.path.join(here, f) for f in ("gemm.py", "llvm_tile.py", "vecmath.py",
                                                                   "conv_ir.py")])
