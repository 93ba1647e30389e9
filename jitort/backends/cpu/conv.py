"""NHWC float32 2-D convolution for ``jitort::FusedConv`` (channels_last=1):
Y = act(Conv(X, W) + B + Z).

    plan = ConvPlan((N, H, W, C), (O, C, KH, KW), strides=(1, 1), pads=(t, l, b, r),
                    dilations=(1, 1), group=1, activation="Relu", activation_params=(),
                    has_bias=True, has_residual=False, threads=2)
    packed = plan.pack_weights(W, B)         # once per weight (W in ONNX OIHW layout)
    y = plan(x_nhwc, packed, out=None, residual=None)   # y [N, OH, OW, O]

Three paths, chosen from the shapes (``plan.kind``):

* ``"gemm"``: 1x1 kernel, stride 1, no pads, group 1: one GEMM over [N*H*W, C] x [C, O], X read
  in place;
* ``"im2col"``: any other group-1 conv: a Numba kernel gathers the NHWC patches into a buffer
  owned by the plan ([N*OH*OW, KH*KW*C], tap-major, C innermost: each tap copies C contiguous
  floats, or, for C < 16 and dilation 1, a whole in-bounds row of KW taps at once, measured 1.6x
  faster on the 7x7x3 stem; pads are zeros), then one GEMM with W packed as [KH*KW*C, O];
* ``"depthwise"``: group == C == O: a generated Numba kernel over the KH*KW taps, vectorized
  along C (NHWC keeps C contiguous), with bias, residual and activation applied in the same loop
  while the output row is in L1.

Grouped convs with 1 < group and not depthwise raise NotImplementedError.

Epilogue on the GEMM paths: the GEMM's fused store (``gemm.Epilogue``) computes
act(acc + bias) + residual, so it carries the bias always, and the activation when it is one the
GEMM generates (Relu, Gelu exact/tanh) and there is no residual (FusedConv adds Z *before* the
activation). Otherwise the GEMM stores acc + bias and one generated vectorized pass over Y adds Z
and applies the activation (an extra read/write of Y).

Activations use ``vecmath`` (sigmoid, tanh, gelu_erf, gelu_tanh) in the generated kernels, which
compile with ``error_model='numpy'`` and ``fastmath=vecmath.FASTMATH``. Generated kernels are
exec'd (in-process cache by source text; no disk cache yet); ``im2col`` is a plain module
function compiled with ``cache=True``.

A plan owns its patch buffer: one plan must not be called from two threads at once.
"""

from __future__ import annotations

import math
import types as pytypes

import numba
import numpy as np

from jitort import config

from . import vecmath
from .gemm import Epilogue, GemmPlan

#: FusedConv activations (jitort/ops/fused_conv.py) this module generates.
ACTIVATIONS = ("", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "SiLU",
               "Gelu", "Tanh")
_N_PARAMS = {"Clip": 2, "LeakyRelu": 1, "HardSigmoid": 2, "Gelu": 1}
_JIT = dict(error_model="numpy", fastmath=vecmath.FASTMATH, nogil=True)


# -- im2col (shape-generic, disk-cached) ------------------------------------------------------
def _im2col_body(x, col, row0, row1, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW):
    N, H, W, C = x.shape
    xf = x.reshape(N * H * W * C)
    KWC = KW * C
    narrow = C < 16 and DW == 1  # few channels: copy a whole row of KW taps at once
    for r in range(row0, row1):  # r = n * OH + oh
        n = r // OH
        oh = r - n * OH
        for ow in range(OW):
            row = r * OW + ow
            iw0 = ow * SW - PL
            rowcopy = narrow and iw0 >= 0 and iw0 + KW <= W
            for i in range(KH):
                ih = oh * SH - PT + i * DH
                if rowcopy and 0 <= ih < H:  # the KW taps are side by side in x
                    src = ((n * H + ih) * W + iw0) * C
                    for q in range(KWC):
                        col[row, i * KWC + q] = xf[src + q]
                    continue
                for j in range(KW):
                    iw = iw0 + j * DW
                    base = (i * KW + j) * C
                    if 0 <= ih < H and 0 <= iw < W:
                        for c in range(C):
                            col[row, base + c] = x[n, ih, iw, c]
                    else:
                        for c in range(C):
                            col[row, base + c] = np.float32(0.0)


_im2col_1 = numba.njit(cache=True, **_JIT)(_im2col_body)


@numba.njit(cache=True, parallel=True, **_JIT)
def _im2col_par(x, col, threads, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW):
    rows = x.shape[0] * OH
    for t in numba.prange(threads):
        _im2col_1(x, col, rows * t // threads, rows * (t + 1) // threads,
                  OH, OW, KH, KW, SH, SW, PT, PL, DH, DW)


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


def _gemm_activation(activation: str, params) -> str | None:
    """The gemm.Epilogue activation equal to ``activation``, or None when the GEMM has none."""
    if activation == "":
        return "none"
    if activation == "Relu":
        return "relu"
    if activation == "Gelu":
        return "gelu_tanh" if params and params[0] else "gelu_erf"
    return None


_COMPILED: dict[str, object] = {}


def _compile(source: str, name: str):
    """exec + njit a generated kernel; one compile per distinct source in this process."""
    fn = _COMPILED.get(source)
    if fn is None:
        if config.DEBUG >= 2:
            print(source)
        mod = pytypes.ModuleType(f"jitort_generated_{name}")
        mod.np, mod.numba, mod.vecmath, mod.FASTMATH = np, numba, vecmath, vecmath.FASTMATH
        exec(compile(source, f"<{name}>", "exec"), mod.__dict__)  # noqa: S102 (our own source)
        fn = _COMPILED[source] = getattr(mod, name)
    return fn


def _decorator(parallel: bool) -> str:
    return (f"@numba.njit(error_model='numpy', fastmath=FASTMATH, nogil=True, "
            f"parallel={parallel})")


def _epilogue_source(act: list[str], residual: bool, threads: int) -> str:
    """y[M, O] (flat) = act(y + z): the pass after a GEMM that could not fuse it."""
    loop = "numba.prange" if threads > 1 else "range"
    L = ["# generated by jitort.backends.cpu.conv: post-GEMM epilogue", _decorator(threads > 1),
         "def conv_epilogue(y, z, threads):",
         "    n = y.size",
         f"    for t in {loop}(threads):",
         "        for i in range(n * t // threads, n * (t + 1) // threads):",
         "            x = y[i]"]
    if residual:
        L.append("            x = x + z[i]")
    L += ["            " + s for s in act] + ["            y[i] = x"]
    return "\n".join(L) + "\n"


def _depthwise_source(act: list[str], bias: bool, residual: bool, threads: int) -> str:
    """y[n, oh, ow, c] = act(sum_taps x * w + b + z), taps outer, C inner (vectorized)."""
    loop = "numba.prange" if threads > 1 else "range"
    L = ["# generated by jitort.backends.cpu.conv: depthwise NHWC conv with fused epilogue",
         _decorator(threads > 1),
         "def conv_depthwise(xin, w, b, z, y, threads, SH, SW, PT, PL, DH, DW):",
         "    N, H, W, C = xin.shape",
         "    KH, KW = w.shape[0], w.shape[1]",
         "    OH, OW = y.shape[1], y.shape[2]",
         "    rows = N * OH",
         f"    for t in {loop}(threads):",
         "        for r in range(rows * t // threads, rows * (t + 1) // threads):",
         "            n = r // OH",
         "            oh = r - n * OH",
         "            for ow in range(OW):",
         "                for c in range(C):",
         "                    y[n, oh, ow, c] = " + ("b[c]" if bias else "np.float32(0.0)"),
         "                for i in range(KH):",
         "                    ih = oh * SH - PT + i * DH",
         "                    if ih < 0 or ih >= H:",
         "                        continue",
         "                    for j in range(KW):",
         "                        iw = ow * SW - PL + j * DW",
         "                        if iw < 0 or iw >= W:",
         "                            continue",
         "                        for c in range(C):",
         "                            y[n, oh, ow, c] += xin[n, ih, iw, c] * w[i, j, c]"]
    if residual or act:
        body = (["x = y[n, oh, ow, c]"] + (["x = x + z[n, oh, ow, c]"] if residual else []) + act
                + ["y[n, oh, ow, c] = x"])
        L += ["                for c in range(C):"] + ["                    " + s for s in body]
    return "\n".join(L) + "\n"


class ConvPlan:
    """One NHWC float32 conv (+ bias, + residual, + activation) for one input shape, weight
    shape, geometry and thread count. See the module docstring."""

    def __init__(self, x_shape_nhwc, w_shape_oihw, strides=(1, 1), pads=(0, 0, 0, 0),
                 dilations=(1, 1), group=1, activation="", activation_params=(),
                 has_bias=False, has_residual=False, threads=1, cache_dir=None):
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
        act = activation_lines(activation, params)
        self._post = None
        if group > 1:
            if not (group == C == O and CG == 1):
                raise NotImplementedError(f"ConvPlan: grouped conv (group={group}, C={C}, O={O}) "
                                          f"that is not depthwise is not generated yet")
            self.kind = "depthwise"
            self._dw = _compile(_depthwise_source(act, self.has_bias, self.has_residual, threads),
                                "conv_depthwise")
            self.gemm = None
            return
        one = KH == KW == 1 and SH == SW == 1 and PT == PL == PB == PR == 0
        self.kind = "gemm" if one else "im2col"
        M, K = N * OH * OW, KH * KW * C
        gact = _gemm_activation(activation, params)
        fuse_act = gact is not None and (not self.has_residual or gact == "none")
        ep = Epilogue(bias=self.has_bias, activation=gact if fuse_act else "none",
                      residual=self.has_residual and fuse_act)
        self.gemm = GemmPlan(M, K, O, epilogue=ep, threads=threads, cache_dir=cache_dir)
        if not fuse_act:
            self._post = _compile(_epilogue_source(act, self.has_residual, threads), "conv_epilogue")
        self._col = None if one else np.empty((M, K), np.float32)  # reusable patch buffer

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
        if self.kind == "depthwise":  # [KH, KW, C]
            return np.ascontiguousarray(W[:, 0].transpose(1, 2, 0), np.float32), B
        O, C, KH, KW = self.w_shape
        return self.gemm.pack_b(W.transpose(2, 3, 1, 0).reshape(KH * KW * C, O)), B

    def __call__(self, x, packed, out=None, residual=None):
        N, H, W, C = self.x_shape
        _check("x", x, self.x_shape)
        if out is None:
            out = np.empty(self.y_shape, np.float32)
        _check("out", out, self.y_shape)
        if self.has_residual:
            _check("residual", residual, self.y_shape)
        elif residual is not None:
            raise ValueError("ConvPlan: the plan was built without a residual")
        wp, b = packed
        if self.kind == "depthwise":
            if out.size:
                z = residual if self.has_residual else out
                bb = b if self.has_bias else np.zeros(1, np.float32)
                self._dw(x, wp, bb, z, out, self.threads, *self.geometry)
            return out
        M, O = self.gemm.M, self.gemm.N
        if self.kind == "gemm":
            a = x.reshape(M, C)
        else:
            a = self._col
            if a.size:
                SH, SW, PT, PL, DH, DW = self.geometry
                _, OH, OW, _ = self.y_shape
                KH, KW = self.w_shape[2:]
                if self.threads > 1:
                    _im2col_par(x, a, self.threads, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW)
                else:
                    _im2col_1(x, a, 0, N * OH, OH, OW, KH, KW, SH, SW, PT, PL, DH, DW)
        y = out.reshape(M, O)
        ep = self.gemm.epilogue
        self.gemm(a, wp, y, bias=b if ep.bias else None,
                  residual=residual.reshape(M, O) if ep.residual else None)
        if self._post is not None and y.size:
            z = residual.reshape(-1) if self.has_residual else y.reshape(-1)
            self._post(y.reshape(-1), z, self.threads)
        return out


def _check(what, x, shape):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != tuple(shape) \
            or not x.flags.c_contiguous:
        got = f"{type(x).__name__} {getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}"
        raise ValueError(f"ConvPlan: {what} must be a C-contiguous float32 array of shape "
                         f"{tuple(shape)}, got {got}")
