"""Lowerings of the layout level's NHWC pools (jitort::MaxPoolNHWC, AveragePoolNHWC,
GlobalAveragePoolNHWC, GlobalMaxPoolNHWC) to the kernels of pool.py: 2-D, float32."""

from __future__ import annotations

from ...ops.conv import window_geometry
from . import pool
from .lowering import Unsupported, arg, attr, lowers, only_attrs, out_buffer


def _shapes(node, ctx):
    sx, sy = ctx.f32(node.inputs[0]), ctx.f32(node.outputs[0])
    if len(sx) != 4 or len(sy) != 4:
        raise Unsupported(f"rank-{len(sx)} pooling (the kernel is 2-D)")
    return sx, sy


@lowers("jitort", "MaxPoolNHWC", "AveragePoolNHWC")
def _pool(node, ctx):
    only_attrs(node, {"auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape",
                      "pads", "storage_order", "strides"})
    if len(node.outputs) > 1 and node.outputs[1]:
        raise Unsupported("Indices output")
    sx, sy = _shapes(node, ctx)
    kernel = list(attr(node, "kernel_shape", []))
    if len(kernel) != 2:
        raise Unsupported(f"kernel_shape {kernel}")
    out, pb, pe, pe_exp, s, d = window_geometry(list(sx[1:3]), kernel, attr(node, "strides"),
                                                attr(node, "dilations"), attr(node, "pads"),
                                                attr(node, "auto_pad", "NOTSET"),
                                                bool(attr(node, "ceil_mode", 0)))
    if tuple(out) != tuple(sy[1:3]):
        raise Unsupported(f"output {out} against the bound {sy}")
    geometry = (kernel[0], kernel[1], s[0], s[1], pb[0], pb[1], d[0], d[1])
    x, y, nt = node.inputs[0], node.outputs[0], ctx.threads
    if node.op_type == "MaxPoolNHWC":
        def run(env, bufs):
            env[y] = pool.max_pool(arg(env, x), out_buffer(bufs, y, sy), geometry, nt)

        return run
    if attr(node, "count_include_pad", 0):
        cnt = [pool.axis_counts(out[i], s[i], d[i], kernel[i], -pb[i], sx[1 + i] + pe_exp[i], pb[i])
               for i in range(2)]
    else:
        cnt = [pool.axis_counts(out[i], s[i], d[i], kernel[i], 0, sx[1 + i], pb[i]) for i in range(2)]

    def run_avg(env, bufs):
        env[y] = pool.average_pool(arg(env, x), out_buffer(bufs, y, sy), geometry, cnt[0], cnt[1], nt)

    return run_avg


@lowers("jitort", "GlobalAveragePoolNHWC", "GlobalMaxPoolNHWC")
def _global_pool(node, ctx):
    only_attrs(node, set())
    sx, sy = _shapes(node, ctx)
    if sx[1] * sx[2] == 0:
        raise Unsupported("an empty spatial extent")
    x, y, is_max = node.inputs[0], node.outputs[0], node.op_type == "GlobalMaxPoolNHWC"

    def run(env, bufs):
        env[y] = pool.global_pool(arg(env, x), out_buffer(bufs, y, sy), is_max)

    return run
