"""Lowerings of products: MatMul, Gemm and jitort::FusedMatMul to the generated GEMM (gemm.py),
jitort::FusedConv (channels-last, 2-D) to the NHWC convolution plans (conv.py).

A constant B (an initializer) is packed once, when the plan is built; a B fed at run time is
packed at every call. A is read in place; batched A [..., M, K] @ B [K, N] is one GEMM with
M = prod(leading dims). The bias, a GEMM activation (Relu, Gelu, GeluTanh), alpha and the
residual are fused into the tile store; other activations (Sigmoid, Tanh, LeakyRelu, Clip) run
as a NumPy pass over the output with the reference's formula.

Tile configs: ``gemm_plan`` and ``conv_plan`` take the winner from the tuning database of the
cache (jitort/tuning_db.py, written by ``jitort tune``) when it has the kernel's signature, else
the default (``gemm.choose_config``). Under ``collect_kernels()`` they record what they would
build and abort the lowering instead (``KernelRequest``): that is how the tuner finds the
kernels of a graph, through the lowerings themselves. Each step keeps its plan as ``fn.plan``.
"""

from __future__ import annotations

import contextlib
import threading
import warnings

import numpy as np

from ... import tuning_db
from ...ops.conv import window_geometry
from ...ops.fused_matmul import apply_activation
from .gemm import FUSED_MATMUL_ACTIVATIONS, VW, Epilogue, GemmPlan
from .lowering import F32, Unsupported, arg, attr, lowers, only_attrs, out_buffer, size

_PLANS: dict[tuple, GemmPlan] = {}
_COLLECT = threading.local()


class KernelRequest(Unsupported):
    """Raised by gemm_plan / conv_plan under ``collect_kernels()``: ``kind`` ("gemm" or "conv")
    and ``plan_args``, the arguments the plan would have been built with."""

    def __init__(self, kind: str, plan_args: dict):
        super().__init__(f"collected {kind} kernel")
        self.kind, self.plan_args = kind, plan_args


@contextlib.contextmanager
def collect_kernels():
    """While active (in this thread), gemm_plan and conv_plan raise KernelRequest."""
    prev = getattr(_COLLECT, "on", False)
    _COLLECT.on = True
    try:
        yield
    finally:
        _COLLECT.on = prev


def _tuned(key: str, cache_dir):
    try:
        return tuning_db.lookup(cache_dir, key)
    except Exception as exc:  # noqa: BLE001 - a database problem never breaks a compile
        warnings.warn(f"jitort: tuning database lookup failed ({type(exc).__name__}: {exc}); "
                      f"using the default config", RuntimeWarning, stacklevel=3)
        return None


def gemm_plan(M, K, N, epilogue, threads, cache_dir) -> GemmPlan:
    """One GemmPlan per (shape, epilogue, threads, tile config) in this process (compiling is the
    cost); the config is the tuning database's winner for the shape, else the default."""
    if getattr(_COLLECT, "on", False):
        raise KernelRequest("gemm", dict(M=M, K=K, N=N, epilogue=epilogue, threads=threads))
    cfg = _tuned(tuning_db.gemm_key(M, K, N, threads, VW), cache_dir)
    key = (M, K, N, epilogue, threads, cfg and (cfg.MR, cfg.NR, cfg.KC, cfg.MC))
    plan = _PLANS.get(key)
    if plan is None:
        try:
            plan = GemmPlan(M, K, N, epilogue=epilogue, threads=threads, cache_dir=cache_dir, config=cfg)
        except ValueError as exc:
            if cfg is None:
                raise
            warnings.warn(f"jitort: tuned config {cfg} for gemm {M}x{K}x{N} is unusable ({exc}); "
                          f"using the default", RuntimeWarning, stacklevel=2)
            return gemm_plan_default(M, K, N, epilogue, threads, cache_dir)
        _PLANS[key] = plan
    return plan


def gemm_plan_default(M, K, N, epilogue, threads, cache_dir) -> GemmPlan:
    key = (M, K, N, epilogue, threads, None)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = GemmPlan(M, K, N, epilogue=epilogue, threads=threads, cache_dir=cache_dir)
    return plan


def conv_plan(x_shape, w_shape, strides, pads, dilations, group, activation, activation_params,
              has_bias, has_residual, threads, cache_dir):
    """A ConvPlan; a group-1 conv takes the tuning database's tile config for its geometry."""
    args = dict(x_shape=tuple(x_shape), w_shape=tuple(w_shape), strides=tuple(strides),
                pads=tuple(pads), dilations=tuple(dilations), group=group, activation=activation,
                activation_params=tuple(activation_params), has_bias=has_bias,
                has_residual=has_residual, threads=threads)
    if getattr(_COLLECT, "on", False):
        raise KernelRequest("conv", args)
    cfg = None
    if group == 1:
        cfg = _tuned(tuning_db.conv_key(x_shape, w_shape, strides, pads, dilations, threads, VW), cache_dir)
    try:
        return build_conv_plan(args, cache_dir, cfg)
    except ValueError as exc:
        if cfg is None:
            raise
        warnings.warn(f"jitort: tuned config {cfg} for conv {x_shape} * {w_shape} is unusable "
                      f"({exc}); using the default", RuntimeWarning, stacklevel=2)
        return build_conv_plan(args, cache_dir, None)


def build_conv_plan(args: dict, cache_dir, config):
    """ConvPlan from conv_plan's argument dict (a KernelRequest's ``plan_args``)."""
    from .conv import ConvPlan

    rest = {k: v for k, v in args.items() if k not in ("x_shape", "w_shape")}
    return ConvPlan(args["x_shape"], args["w_shape"], **rest, cache_dir=cache_dir, config=config)


def _vector(ctx, name: str, n: int, what: str):
    """A bias of shape (n,), (1,) or () as a float32 (n,) array: constant, or a run-time getter."""
    if not name:
        return None
    shape = ctx.f32(name)
    if any(d != 1 for d in shape[:-1]) or (shape and shape[-1] not in (1, n)):
        raise Unsupported(f"{what} of shape {shape} does not broadcast along N={n} alone")
    c = ctx.const(name)
    if c is not None:
        vec = np.ascontiguousarray(np.broadcast_to(c.reshape(-1).astype(F32), (n,)))
        return lambda env: vec
    return lambda env: np.ascontiguousarray(np.broadcast_to(env[name].reshape(-1), (n,)), F32)


@lowers("", "MatMul")
@lowers("jitort", "FusedMatMul")
def _matmul(node, ctx):
    only_attrs(node, {"transA", "transB", "alpha", "activation", "activation_params"})
    a, b = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    res = node.inputs[3] if len(node.inputs) > 3 else ""
    if attr(node, "transA", 0):
        raise Unsupported("transA")
    sa, sb, sy = ctx.f32(a), ctx.f32(b), ctx.f32(node.outputs[0])
    trans_b = bool(attr(node, "transB", 0))
    if len(sa) < 2 or len(sb) < 2 or any(d != 1 for d in sb[:-2]):
        raise Unsupported(f"operand ranks A{sa} B{sb} (the kernel takes A [..., M, K] @ B [K, N])")
    K, N = (sb[-1], sb[-2]) if trans_b else (sb[-2], sb[-1])
    M = size(sa[:-1])
    if sa[-1] != K or size(sy) != M * N:
        raise Unsupported(f"shapes A{sa} B{sb} -> Y{sy}")
    act = attr(node, "activation", "")
    params = list(attr(node, "activation_params", []) or [])
    gact = FUSED_MATMUL_ACTIVATIONS.get(act)
    get_bias = _vector(ctx, bias, N, "bias")
    residual = bool(res)
    if residual and gact is None:
        raise Unsupported(f"residual after activation {act!r}")
    if residual and ctx.f32(res) != sy:
        get_res = lambda env: np.ascontiguousarray(np.broadcast_to(env[res], sy))  # noqa: E731
    else:
        get_res = lambda env: arg(env, res)  # noqa: E731
    ep = Epilogue(bias=get_bias is not None, activation=gact or "none", residual=residual,
                  alpha=float(attr(node, "alpha", 1.0)))
    plan = gemm_plan(M, K, N, ep, ctx.threads, ctx.cache_dir)
    cb = ctx.const(b)

    def pack(B):
        B = B.reshape(sb[-2:])
        return plan.pack_b(B.T if trans_b else B)

    packed = None if cb is None else ctx.derive(
        f"gemm_pack {b} {'T' if trans_b else 'N'} K={K} N={N} NR={plan.NR}", lambda: pack(cb))
    y = node.outputs[0]
    call = plan.bind()  # float32 C-contiguous operands of these shapes: checked above, once

    def run(env, bufs):
        out = out_buffer(bufs, y, sy)
        call(arg(env, a).reshape(M, K), packed if packed is not None else pack(env[b]),
             out.reshape(M, N), get_bias(env) if get_bias else None,
             get_res(env).reshape(M, N) if residual else None)
        if gact is None:
            out[...] = apply_activation(out, act, params)
        env[y] = out

    run.plan = plan
    return run


@lowers("", "Gemm")
def _gemm(node, ctx):
    """Gemm with beta = 1 and C a bias vector is a FusedMatMul (2-D operands)."""
    only_attrs(node, {"transA", "transB", "alpha", "beta"})
    if float(attr(node, "beta", 1.0)) != 1.0 and len(node.inputs) > 2 and node.inputs[2]:
        raise Unsupported("beta != 1")
    if len(node.inputs) > 2 and node.inputs[2]:
        c = ctx.f32(node.inputs[2])
        if len(c) == 2 and c[0] != 1:
            raise Unsupported(f"C of shape {c} (not a bias row)")
    return _matmul(_Node(node, {k: node.attrs.get(k) for k in ("transA", "transB", "alpha")}), ctx)


class _Node:
    """A node seen with other attributes (Gemm lowered as FusedMatMul)."""

    def __init__(self, node, attrs):
        self.inputs, self.outputs, self.attrs, self.name = node.inputs, node.outputs, attrs, node.name


@lowers("jitort", "FusedConv")
def _fused_conv(node, ctx):
    from .conv import ACTIVATIONS

    only_attrs(node, {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides",
                      "activation", "activation_params", "channels_last"})
    if not attr(node, "channels_last", 0):
        raise Unsupported("channels-first FusedConv (the kernel is NHWC: optimization level 3)")
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    z = node.inputs[3] if len(node.inputs) > 3 else ""
    sx, sw, sy = ctx.f32(x), ctx.f32(w), ctx.f32(node.outputs[0])
    if len(sx) != 4:
        raise Unsupported(f"rank-{len(sx)} convolution (the kernel is 2-D)")
    W = ctx.const(w)
    B = ctx.const(bias) if bias else None
    if W is None or (bias and B is None):
        raise Unsupported("weights or bias fed at run time")
    act = attr(node, "activation", "")
    if act not in ACTIVATIONS:
        raise Unsupported(f"activation {act!r}")
    _, pb, pe, _, strides, dil = window_geometry(
        list(sx[1:3]), list(sw[2:]), attr(node, "strides"), attr(node, "dilations"),
        attr(node, "pads"), attr(node, "auto_pad", "NOTSET"))
    group = int(attr(node, "group", 1))
    try:
        plan = conv_plan(sx, sw, strides=strides, pads=(pb[0], pb[1], pe[0], pe[1]), dilations=dil,
                         group=group, activation=act,
                         activation_params=attr(node, "activation_params", ()) or (),
                         has_bias=B is not None, has_residual=bool(z), threads=ctx.threads,
                         cache_dir=ctx.cache_dir)
    except KernelRequest:
        raise
    except NotImplementedError as exc:
        raise Unsupported(str(exc)) from None
    if plan.y_shape != sy or tuple(plan.x_shape) != tuple(sx):
        raise Unsupported(f"input {plan.x_shape} / output {plan.y_shape} against the bound {sx} / {sy}")
    if z and tuple(ctx.f32(z)) != tuple(sy):
        raise Unsupported(f"residual of shape {ctx.f32(z)} (the kernel adds one of the output's, {sy})")
    tag = f"conv_pack {w} {plan.kind} NR={getattr(plan, 'NR', 0)}"
    bvec = None if B is None else np.ascontiguousarray(B.reshape(-1), np.float32)
    packed = (ctx.derive(tag, lambda: plan.pack_weights(W, bvec)[0]), bvec)
    y = node.outputs[0]
    call = plan.bind(packed)  # float32 C-contiguous x / residual of the planned shapes, once

    def run(env, bufs):
        out = out_buffer(bufs, y, sy)
        call(arg(env, x), out, arg(env, z) if z else None)
        env[y] = out

    run.plan = plan
    return run
