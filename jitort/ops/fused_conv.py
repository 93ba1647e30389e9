"""jitort::FusedConv: a convolution with its epilogue (residual add, activation), made by the
``fuse_conv`` pass (extended level) and switched to channels-last by ``layout_nhwc`` (level 3).

    jitort::FusedConv(X, W, [B], [Z]) -> Y
        attrs: the Conv attributes (auto_pad, dilations, group, kernel_shape, pads, strides),
               activation         "" | Relu | Clip | LeakyRelu | Sigmoid | HardSigmoid |
                                  HardSwish | SiLU | Gelu | Tanh        (default "": none)
               activation_params  floats: Clip [min, max] (+-inf: no bound), LeakyRelu [alpha],
                                  HardSigmoid [alpha, beta], Gelu [0 exact | 1 tanh]; else []
               channels_last      0: X, Z, Y are N C D1.. (ONNX layout)
                                  1: X, Z, Y are N D1.. C; W stays M C/group k1.. (ONNX layout)
        Y = activation(Conv(X, W, B) + Z), every step rounded in X's dtype as the unfused ONNX
        nodes round it. Z has Y's shape (no broadcasting). A BatchNormalization that followed
        the Conv is already folded into W and B by the pass.

The kernel reuses the registry's Conv and activation kernels, so it equals the unfused subgraph
exactly (BatchNormalization folding aside, which is a reassociation).
"""

from __future__ import annotations

import numpy as np
from ..lazy import onnx_helper as helper

from ..ir.fused_export import onnx_body
from .conv import window_geometry
from .registry import find, op

JITORT = "jitort"
CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")

#: activation name -> (op_type, domain, opset of the kernel used, params -> kernel attributes)
ACTIVATIONS = {
    "Relu": ("Relu", "", 14, lambda p: {}),
    "Clip": ("Clip", "", 13, None),  # bounds are inputs, see _activate
    "LeakyRelu": ("LeakyRelu", "", 16, lambda p: {"alpha": p[0]}),
    "Sigmoid": ("Sigmoid", "", 13, lambda p: {}),
    "HardSigmoid": ("HardSigmoid", "", 6, lambda p: {"alpha": p[0], "beta": p[1]}),
    "HardSwish": ("HardSwish", "", 14, lambda p: {}),
    "SiLU": None,  # Mul(y, Sigmoid(y))
    "Gelu": ("Gelu", "", 20, lambda p: {"approximate": "tanh" if p and p[0] else "none"}),
    "Tanh": ("Tanh", "", 13, lambda p: {}),
}
#: number of activation_params each activation takes
N_PARAMS = {"Clip": 2, "LeakyRelu": 1, "HardSigmoid": 2, "Gelu": 1}


def _kernel(op_type: str, version: int):
    return find(op_type, "", version).kernel


def activate(y: np.ndarray, activation: str, params) -> np.ndarray:
    """``activation`` applied with the same kernels the unfused nodes run."""
    if not activation:
        return y
    params = [float(p) for p in (params or [])]
    if activation == "SiLU":
        s = _kernel("Sigmoid", 13)(y)
        return _kernel("Mul", 14)(y, s)
    if activation == "Clip":
        lo, hi = params
        t = y.dtype.type
        return _kernel("Clip", 13)(y, None if lo == -np.inf else np.array(t(lo)),
                                   None if hi == np.inf else np.array(t(hi)))
    if activation not in ACTIVATIONS:
        raise ValueError(f"jitort::FusedConv: unknown activation {activation!r}; "
                         f"known: {sorted(ACTIVATIONS)}")
    op_type, _, version, attrs = ACTIVATIONS[activation]
    return _kernel(op_type, version)(y, **attrs(params))


def _to_first(x: np.ndarray) -> np.ndarray:
    """N D1.. C -> N C D1.. (a view)."""
    return np.moveaxis(x, -1, 1)


def _to_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1)


def _infer(ctx, x, w, b=None, z=None, *, auto_pad="NOTSET", dilations=None, group=1,
           kernel_shape=None, pads=None, strides=None, activation="", activation_params=None,
           channels_last=0):
    from ..ir.types import TensorType

    xs = list(x.shape)
    if channels_last:
        xs = [xs[0], xs[-1], *xs[1:-1]]
    spatial = xs[2:]
    kernel = list(kernel_shape) if kernel_shape else list(w.shape[2:])
    if all(isinstance(d, int) for d in spatial) and all(isinstance(k, int) for k in kernel):
        out = window_geometry(spatial, kernel, strides, dilations, pads, auto_pad)[0]
    else:
        out = [None] * len(spatial)
    shape = (xs[0], w.shape[0], *out)
    if channels_last:
        shape = (shape[0], *shape[2:], shape[1])
    return [TensorType(x.dtype, tuple(shape))]


@op("FusedConv", since=1, domain=JITORT, infer=_infer)
def fused_conv(x, w, b=None, z=None, *, auto_pad="NOTSET", dilations=None, group=1,
               kernel_shape=None, pads=None, strides=None, activation="", activation_params=None,
               channels_last=0):
    """Y = activation(Conv(X, W, B) + Z); channels_last=1: X, Z, Y are N D1.. C."""
    conv = _kernel("Conv", 11)
    xin = _to_first(x) if channels_last else x
    y = conv(xin, w, b, auto_pad=auto_pad, dilations=dilations, group=group,
             kernel_shape=kernel_shape, pads=pads, strides=strides)
    if channels_last:
        y = np.ascontiguousarray(_to_last(y))
    if z is not None:
        y = _kernel("Add", 14)(y, z)
    return activate(y, activation, activation_params)


# ---------------------------------------------------------------------------- ONNX function body


def _perms(rank: int):
    """(to channels-first, to channels-last) permutations for a tensor of ``rank``."""
    first = [0, rank - 1, *range(1, rank - 1)]
    last = [0, *range(2, rank), 1]
    return first, last


def activation_body(src: str, dst: str, activation: str, params, tag: str) -> list:
    """ONNX nodes computing ``dst = activation(src)`` (tag makes internal names unique)."""
    params = [float(p) for p in (params or [])]
    mk = helper.make_node
    if not activation:
        return [mk("Identity", [src], [dst])]
    if activation == "SiLU":
        return [mk("Sigmoid", [src], [f"{tag}_sig"]), mk("Mul", [src, f"{tag}_sig"], [dst])]
    if activation == "Clip":
        nodes, bounds = [], []
        for name, v in zip(("lo", "hi"), params):
            if np.isinf(v):
                bounds.append("")
                continue
            nodes += [mk("Constant", [], [f"{tag}_{name}f"], value_float=v),
                      mk("CastLike", [f"{tag}_{name}f", src], [f"{tag}_{name}"])]
            bounds.append(f"{tag}_{name}")
        while bounds and not bounds[-1]:
            bounds.pop()
        return nodes + [mk("Clip", [src, *bounds], [dst])]
    op_type, _, _, attrs = ACTIVATIONS[activation]
    return [mk(op_type, [src], [dst], **attrs(params))]


@onnx_body("FusedConv")
def _fused_conv_body(node) -> list:
    a = node.attrs
    mk = helper.make_node
    conv_attrs = {k: a[k] for k in CONV_ATTRS if k in a and a[k] is not None}
    has_b = len(node.inputs) > 2 and bool(node.inputs[2])
    has_z = len(node.inputs) > 3 and bool(node.inputs[3])
    nodes = []
    x = "x0"
    rank = len(a["kernel_shape"]) + 2 if a.get("kernel_shape") else None
    if a.get("channels_last"):
        if rank is None:
            raise ValueError("jitort::FusedConv body: channels_last needs kernel_shape")
        first, last = _perms(rank)
        nodes.append(mk("Transpose", ["x0"], ["xt"], perm=first))
        x = "xt"
    nodes.append(mk("Conv", [x, "x1"] + (["x2"] if has_b else []), ["c"], **conv_attrs))
    y = "c"
    if a.get("channels_last"):
        nodes.append(mk("Transpose", ["c"], ["ct"], perm=last))
        y = "ct"
    if has_z:
        nodes.append(mk("Add", [y, "x3"], ["s"]))
        y = "s"
    return nodes + activation_body(y, "y0", a.get("activation", ""), a.get("activation_params"), "act")
