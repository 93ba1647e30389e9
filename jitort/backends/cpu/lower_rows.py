"""Lowerings of row-wise and fused nodes: LayerNorm / SkipLayerNorm / RMSNorm, Softmax /
LogSoftmax and GELU (row_kernels.py), jitort::Attention (attention.py), jitort::ElementwiseRegion
(codegen_elementwise.py), and the views (Reshape, Flatten, Squeeze, Unsqueeze, Identity).

Every row kernel works on a C-contiguous float32 [rows, width] view of its input: the axes
[axis, rank) are the width. Parameters (gamma, beta, bias) are made float32 vectors once when
they are constants.
"""

from __future__ import annotations

import numpy as np

from . import row_kernels as rk
from .lowering import F32, Unsupported, arg, attr, lowers, only_attrs, out_buffer, size


def _rows(shape, axis: int) -> tuple[int, int]:
    a = axis + len(shape) if axis < 0 else axis
    if not 0 <= a < len(shape):
        raise Unsupported(f"axis {axis} of a rank-{len(shape)} tensor")
    return size(shape[:a]), size(shape[a:])


def _param(ctx, name: str, width: int, fill: float):
    """A constant parameter as a float32 (width,) vector, or a run-time getter."""
    if not name:
        vec = np.full(width, fill, F32)
        return lambda env: vec
    shape = ctx.f32(name)
    if size(shape) != width:
        raise Unsupported(f"parameter {shape} for rows of width {width}")
    c = ctx.const(name)
    if c is not None:
        vec = np.ascontiguousarray(c.reshape(-1), F32)
        return lambda env: vec
    return lambda env: np.ascontiguousarray(env[name].reshape(-1), F32)


def _input(node, i: int) -> str:
    return node.inputs[i] if len(node.inputs) > i else ""


@lowers("jitort", "LayerNorm")
@lowers("", "LayerNormalization")
def _layer_norm(node, ctx):
    only_attrs(node, {"axis", "epsilon", "stash_type"})
    if any(node.outputs[1:]):
        raise Unsupported("Mean / InvStdDev outputs")
    x, y = node.inputs[0], node.outputs[0]
    shape = ctx.f32(x)
    rows, width = _rows(shape, int(attr(node, "axis", -1)))
    g, b = _param(ctx, _input(node, 1), width, 1.0), _param(ctx, _input(node, 2), width, 0.0)
    eps, nt = float(attr(node, "epsilon", 1e-5)), ctx.threads

    def run(env, bufs):
        out = out_buffer(bufs, y, shape)
        rk.layer_norm(arg(env, x).reshape(rows, width), g(env), b(env), eps,
                      out.reshape(rows, width), nt)
        env[y] = out

    return run


@lowers("jitort", "SkipLayerNorm")
def _skip_layer_norm(node, ctx):
    only_attrs(node, {"epsilon"})
    x, skip = node.inputs[0], node.inputs[1]
    y, s = node.outputs[0], (node.outputs[1] if len(node.outputs) > 1 else "")
    shape, sshape = ctx.f32(x), ctx.f32(skip)
    ss = list(sshape)
    while ss and ss[0] == 1 and len(ss) > 1:
        ss.pop(0)
    if len(ss) > len(shape) or tuple(ss) != tuple(shape[len(shape) - len(ss):]) or not ss:
        raise Unsupported(f"skip {sshape} does not tile X {shape} by rows")
    width = shape[-1]
    rows, srows = size(shape[:-1]), size(ss[:-1])
    g = _param(ctx, node.inputs[2], width, 1.0)
    b, bias = _param(ctx, _input(node, 3), width, 0.0), _param(ctx, _input(node, 4), width, 0.0)
    eps, nt = float(attr(node, "epsilon", 1e-5)), ctx.threads

    def run(env, bufs):
        out = out_buffer(bufs, y, shape)
        sm = out_buffer(bufs, s, shape).reshape(rows, width) if s else None
        rk.skip_layer_norm(arg(env, x).reshape(rows, width), arg(env, skip).reshape(srows, width),
                           g(env), b(env), bias(env), eps, out.reshape(rows, width), sm, nt)
        env[y] = out
        if s:
            env[s] = sm.reshape(shape)

    return run


@lowers("jitort", "RMSNorm")
def _rms_norm(node, ctx):
    only_attrs(node, {"axis", "epsilon"})
    x, y = node.inputs[0], node.outputs[0]
    shape = ctx.f32(x)
    rows, width = _rows(shape, int(attr(node, "axis", -1)))
    g = _param(ctx, _input(node, 1), width, 1.0)
    eps, nt = float(attr(node, "epsilon", 1e-5)), ctx.threads

    def run(env, bufs):
        out = out_buffer(bufs, y, shape)
        rk.rms_norm(arg(env, x).reshape(rows, width), g(env), eps, out.reshape(rows, width), nt)
        env[y] = out

    return run


@lowers("", "Softmax", "LogSoftmax")
def _softmax(node, ctx):
    """Opset 13+: over ``axis`` alone, a row kernel only when it is the last axis. Before 13:
    over the flattened axes [axis, rank), which is always a row view."""
    only_attrs(node, {"axis"})
    x, y = node.inputs[0], node.outputs[0]
    shape = ctx.f32(x)
    from ..reference import node_version

    v13 = node_version(node, ctx.graph.opsets) >= 13
    axis = int(attr(node, "axis", -1 if v13 else 1))
    rows, width = _rows(shape, axis)
    if v13 and axis not in (-1, len(shape) - 1):
        raise Unsupported(f"softmax over axis {axis} that is not the last")
    kernel, nt = (rk.softmax if node.op_type == "Softmax" else rk.log_softmax), ctx.threads

    def run(env, bufs):
        out = out_buffer(bufs, y, shape)
        kernel(arg(env, x).reshape(rows, width), out.reshape(rows, width), nt)
        env[y] = out

    return run


@lowers("jitort", "Gelu")
def _gelu(node, ctx):
    only_attrs(node, {"approximate"})
    x, y = node.inputs[0], node.outputs[0]
    shape = ctx.f32(x)
    rows, width = (size(shape[:-1]), shape[-1]) if shape else (1, 1)
    approx = attr(node, "approximate", "none")
    if approx not in ("none", "tanh"):
        raise Unsupported(f"approximate={approx!r}")
    nt = ctx.threads

    def run(env, bufs):
        out = out_buffer(bufs, y, shape)
        rk.bias_gelu(arg(env, x).reshape(rows, width), None, out.reshape(rows, width), approx, nt)
        env[y] = out

    return run


@lowers("jitort", "Attention")
def _attention(node, ctx):
    from .attention import AttentionPlan, supports

    names = [_input(node, i) for i in range(6)]
    q, k, v, pk, pv, mask = names
    kind, layout = attr(node, "mask_kind", "none"), attr(node, "layout", "bsd")
    dt = np.dtype(ctx.type(q).dtype)
    if dt != F32 or not supports(dt, layout, kind):
        raise Unsupported(f"dtype {dt}, layout {layout!r}, mask {kind!r}")
    shapes = {n: tuple(ctx.type(n).shape) for n in names if n}
    try:
        plan = AttentionPlan(shapes[q], shapes[k], shapes[v], shapes.get(pk), shapes.get(mask),
                             num_heads=int(attr(node, "num_heads", 0)),
                             kv_num_heads=int(attr(node, "kv_num_heads", 0)),
                             scale=float(attr(node, "scale", 1.0)), causal=int(attr(node, "causal", 0)),
                             causal_fill=float(attr(node, "causal_fill", -np.inf)), mask_kind=kind,
                             layout=layout, threads=ctx.threads, dtype=dt)
    except ValueError as exc:
        raise Unsupported(str(exc)) from None
    outs = list(node.outputs) + ["", ""]
    y, present_k, present_v = outs[:3]

    def run(env, bufs):
        res = plan(env[q], env[k], env[v], env[pk] if pk else None, env[pv] if pv else None,
                   env[mask] if mask else None, out=bufs.get(y),
                   present_key_out=bufs.get(present_k) if pk else None,
                   present_value_out=bufs.get(present_v) if pk else None)
        env[y] = res[0]
        for name, val in zip((present_k, present_v), res[1:]):
            if name:  # without a past, present is a view of K / V: give it its own bytes
                b = bufs.get(name)
                if b is None:
                    b = np.empty(val.shape, val.dtype)
                if b is not val:
                    np.copyto(b, val)
                env[name] = b

    return run


@lowers("jitort", "ElementwiseRegion")
def _region(node, ctx):
    from .codegen_elementwise import compile_region
    from .elementwise_emitters import LoweringError

    types = []
    for name in node.inputs:
        c = ctx.const(name) if name else None
        types.append(c if c is not None and c.size <= 64 else ctx.type(name))
    try:
        fn = compile_region(node, types, cache_dir=ctx.cache_dir)
    except LoweringError as exc:
        raise Unsupported(str(exc)) from None
    outs = [(o, t) for o, t in zip(node.outputs, fn.output_types)]
    f16 = np.dtype(np.float16)

    def run(env, bufs):
        args = []
        for name in node.inputs:
            a = arg(env, name)
            args.append(a.view(np.uint16) if a.dtype == f16 else a)
        results = []
        for name, t in outs:
            o = out_buffer(bufs, name, t.shape, t.dtype) if name else np.empty(t.shape, t.dtype)
            results.append(o)
            args.append(o.view(np.uint16) if o.dtype == f16 else o)
        fn(*args)
        for (name, _), o in zip(outs, results):
            if name:
                env[name] = o

    return run


@lowers("", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
def _view(node, ctx):
    """A C-order reinterpretation: a view of the input when the planner made the output one,
    else a copy into the output's own buffer (the input's bytes may be reused)."""
    x, y = node.inputs[0], node.outputs[0]
    tx, ty = ctx.type(x), ctx.type(y)
    if np.dtype(tx.dtype) != np.dtype(ty.dtype) or size(tx.shape) != size(ty.shape):
        raise Unsupported("not a reinterpretation of the input's bytes")
    shape = tuple(ty.shape)
    planned_view = ctx.memory.views.get(y) == x
    x_in_arena = x in ctx.memory.offsets

    def run(env, bufs):
        v = env[x].reshape(shape)
        if not planned_view:
            b = bufs.get(y)
            if b is not None:
                np.copyto(b, v)
                v = b
            elif x_in_arena:  # a dynamic output must not alias the arena
                v = v.copy()
        env[y] = v

    return run
