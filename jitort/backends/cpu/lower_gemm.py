"""Lowerings of products: MatMul, Gemm and jitort::FusedMatMul to the generated GEMM (gemm.py),
jitort::FusedConv (channels-last, 2-D) to the NHWC convolution plans (conv.py).

A constant B (an initializer) is packed once, when the plan is built; a B fed at run time is
packed at every call. A is read in place; batched A [..., M, K] @ B [K, N] is one GEMM with
M = prod(leading dims). The bias, a GEMM activation (Relu, Gelu, GeluTanh), alpha and the
residual are fused into the tile store; other activations (Sigmoid, Tanh, LeakyRelu, Clip) run
as a NumPy pass over the output with the reference's formula.
"""

from __future__ import annotations

import numpy as np

from ...ops.conv import window_geometry
from ...ops.fused_matmul import apply_activation
from .gemm import FUSED_MATMUL_ACTIVATIONS, Epilogue, GemmPlan
from .lowering import F32, Unsupported, arg, attr, lowers, only_attrs, out_buffer, size

_PLANS: dict[tuple, GemmPlan] = {}


def gemm_plan(M, K, N, epilogue, threads, cache_dir) -> GemmPlan:
    """One GemmPlan per (shape, epilogue, threads) in this process (compiling is the cost)."""
    key = (M, K, N, epilogue, threads)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = GemmPlan(M, K, N, epilogue=epilogue, threads=threads, cache_dir=cache_dir)
    return plan


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

    packed = pack(cb) if cb is not None else None
    y = node.outputs[0]

    def run(env, bufs):
        out = out_buffer(bufs, y, sy)
        plan(arg(env, a).reshape(M, K), packed if packed is not None else pack(env[b]),
             out.reshape(M, N), bias=get_bias(env) if get_bias else None,
             residual=get_res(env).reshape(M, N) if residual else None)
        if gact is None:
            out[...] = apply_activation(out, act, params)
        env[y] = out

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
    from .conv import ACTIVATIONS, ConvPlan

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
        plan = ConvPlan(sx, sw, strides=strides, pads=(pb[0], pb[1], pe[0], pe[1]), dilations=dil,
                        group=group, activation=act,
                        activation_params=attr(node, "activation_params", ()) or (),
                        has_bias=B is not None, has_residual=bool(z), threads=ctx.threads,
                        cache_dir=ctx.cache_dir)
    except NotImplementedError as exc:
        raise Unsupported(str(exc)) from None
    if plan.y_shape != sy:
        raise Unsupported(f"output {plan.y_shape} against the bound {sy}")
    packed = plan.pack_weights(W, None if B is None else B.reshape(-1))
    y = node.outputs[0]

    def run(env, bufs):
        out = out_buffer(bufs, y, sy)
        plan(arg(env, x), packed, out=out, residual=arg(env, z) if z else None)
        env[y] = out

    return run
