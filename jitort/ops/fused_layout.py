"""Channels-last (NHWC) pooling ops made by the ``layout_nhwc`` pass (level 3).

Each takes and returns tensors laid out N D1.. C (the channel axis last) and otherwise has the
semantics and attributes of the ONNX op it replaces:

    jitort::MaxPoolNHWC(X) -> Y            attrs: as MaxPool (auto_pad, ceil_mode, dilations,
                                           kernel_shape, pads, storage_order, strides); no Indices
    jitort::AveragePoolNHWC(X) -> Y        attrs: as AveragePool (auto_pad, ceil_mode,
                                           count_include_pad, dilations, kernel_shape, pads, strides)
    jitort::GlobalAveragePoolNHWC(X) -> Y  Y = mean of X over D1.., keepdims: N 1.. C
    jitort::GlobalMaxPoolNHWC(X) -> Y      Y = max of X over D1.., keepdims: N 1.. C

The reference kernels run the registry's NCHW kernel on a channels-first *view* (no copy) and
return the result channels-last, so they equal the NCHW op exactly. The ONNX function bodies
wrap the ONNX op in Transposes.
"""

from __future__ import annotations

import numpy as np
from ..lazy import onnx_helper as helper

from ..ir.fused_export import onnx_body
from .conv import window_geometry
from .registry import KernelContext, find, op

JITORT = "jitort"
#: NHWC op -> the ONNX op (and a kernel version) it mirrors
NHWC_OPS = {
    "MaxPoolNHWC": ("MaxPool", 12),
    "AveragePoolNHWC": ("AveragePool", 19),
    "GlobalAveragePoolNHWC": ("GlobalAveragePool", 1),
    "GlobalMaxPoolNHWC": ("GlobalMaxPool", 1),
}


def to_first_perm(rank: int) -> list[int]:
    return [0, rank - 1, *range(1, rank - 1)]


def to_last_perm(rank: int) -> list[int]:
    return [0, *range(2, rank), 1]


def _run_nchw(op_type: str, version: int, x: np.ndarray, attrs: dict) -> np.ndarray:
    entry = find(op_type, "", version)
    xf = np.moveaxis(x, -1, 1)
    if entry.wants_ctx:
        y = entry.kernel(KernelContext(num_outputs=1, opset=version), xf, **attrs)
    else:
        y = entry.kernel(xf, **attrs)
    return np.ascontiguousarray(np.moveaxis(y, 1, -1))


def _pool_infer(ctx, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None,
                pads=None, strides=None, **_):
    from ..ir.types import TensorType

    spatial = list(x.shape[1:-1])
    if all(isinstance(d, int) for d in spatial):
        out = window_geometry(spatial, [int(k) for k in kernel_shape], strides, dilations, pads,
                              auto_pad, bool(ceil_mode))[0]
        out = [max(o, 0) for o in out]
    else:
        out = [None] * len(spatial)
    return [TensorType(x.dtype, (x.shape[0], *out, x.shape[-1]))]


def _global_infer(ctx, x):
    from ..ir.types import TensorType

    return [TensorType(x.dtype, (x.shape[0], *([1] * (len(x.shape) - 2)), x.shape[-1]))]


@op("MaxPoolNHWC", since=1, domain=JITORT, infer=_pool_infer)
def max_pool_nhwc(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None,
                  pads=None, storage_order=0, strides=None):
    """MaxPool over D1.. of an N D1.. C tensor."""
    return _run_nchw("MaxPool", 12, x, dict(auto_pad=auto_pad, ceil_mode=ceil_mode, dilations=dilations,
                                            kernel_shape=kernel_shape, pads=pads, strides=strides))


@op("AveragePoolNHWC", since=1, domain=JITORT, infer=_pool_infer)
def average_pool_nhwc(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                      kernel_shape=None, pads=None, strides=None):
    """AveragePool over D1.. of an N D1.. C tensor."""
    return _run_nchw("AveragePool", 19, x, dict(
        auto_pad=auto_pad, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
        dilations=dilations, kernel_shape=kernel_shape, pads=pads, strides=strides))


@op("GlobalAveragePoolNHWC", since=1, domain=JITORT, infer=_global_infer)
def global_average_pool_nhwc(x):
    """Mean over D1.. of an N D1.. C tensor, keepdims."""
    return _run_nchw("GlobalAveragePool", 1, x, {})


@op("GlobalMaxPoolNHWC", since=1, domain=JITORT, infer=_global_infer)
def global_max_pool_nhwc(x):
    """Max over D1.. of an N D1.. C tensor, keepdims."""
    return _run_nchw("GlobalMaxPool", 1, x, {})


def _nhwc_body(node) -> list:
    onnx_op = NHWC_OPS[node.op_type][0]
    ks = node.attrs.get("kernel_shape")
    rank = len(ks) + 2 if ks else 4  # global pools: the layout pass makes them for rank 4 only
    attrs = {k: v for k, v in node.attrs.items() if v is not None}
    if onnx_op == "MaxPool":
        attrs.pop("storage_order", None)
    mk = helper.make_node
    return [mk("Transpose", ["x0"], ["xt"], perm=to_first_perm(rank)),
            mk(onnx_op, ["xt"], ["p"], **attrs),
            mk("Transpose", ["p"], ["y0"], perm=to_last_perm(rank))]


for _name in NHWC_OPS:
    onnx_body(_name)(_nhwc_body)
