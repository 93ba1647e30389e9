"""com.microsoft contrib ops emitted by onnxruntime's transformer optimizer and exporters:
Gelu family, BiasAdd, (Skip)(Simplified)LayerNormalization, EmbedLayerNormalization,
FusedMatMul/TransposeMatMul, Inverse, BiasSoftmax, BiasDropout, Trilu.

Also the two ops onnxruntime registers in the *default* domain from opset 1 (so fused models with
opset < 17 load): LayerNormalization-1 and SimplifiedLayerNormalization-1.
Attention-like ops live in contrib_attention.py, quantized ones in contrib_quant.py.
"""

from __future__ import annotations

import numpy as np

from ..lazy import LazyObject
from .fastmath import erf
from .contrib_common import MS, bshape, dtype_of, like, matmul_shape, same_as, shape_of, tt, wide
from .registry import op

expit = LazyObject("scipy.special", "expit")  # scipy costs 0.25 s to import: only when called

_SQRT1_2 = 0.7071067811865476


def _gelu(x):
    return 0.5 * x * (1.0 + erf(x * _SQRT1_2))


def _fast_gelu(x):
    # onnxruntime's tanh approximation with its rounded constants (sqrt(2/pi), sqrt(2/pi) * 0.044715)
    return 0.5 * x * (1.0 + np.tanh(x * (0.797885 + 0.035677 * (x * x))))


def _bias_infer(ctx, x, bias=None, *_, **__):
    return [tt(dtype_of(x), bshape(shape_of(x), shape_of(bias)) if bias is not None else shape_of(x))]


@op("Gelu", domain=MS, infer=same_as(0))
def gelu(x):
    return like(_gelu(wide(x)), x.dtype)


@op("FastGelu", domain=MS, infer=_bias_infer)
def fast_gelu(x, bias=None):
    w = wide(x)
    if bias is not None:
        w = w + wide(bias)
    return like(_fast_gelu(w), x.dtype)


@op("BiasGelu", domain=MS, infer=_bias_infer)
def bias_gelu(a, b):
    return like(_gelu(wide(a) + wide(b)), a.dtype)


@op("QuickGelu", domain=MS, infer=same_as(0))
def quick_gelu(x, *, alpha=1.702):
    w = wide(x)
    return like(w * expit(w * w.dtype.type(np.float32(alpha))), x.dtype)  # alpha is a float32 attribute


def _bias_add_infer(ctx, x, bias, skip, **_):
    return [tt(dtype_of(x), bshape(shape_of(x), shape_of(bias), shape_of(skip)))]


@op("BiasAdd", domain=MS, infer=_bias_add_infer)
def bias_add(x, bias, skip):
    return like(wide(x) + wide(bias) + wide(skip), x.dtype)


# ------------------------------------------------------------------ layer normalizations

def _norm(x, axis, eps, simplified):
    """(normalized, mean, inv_std) over axes [axis, rank) in float32/float64; stats keep dims."""
    w = wide(x)
    axes = tuple(range(axis, w.ndim))
    if simplified:
        mean = np.zeros(w.shape[:axis] + (1,) * (w.ndim - axis), w.dtype)
        ms = np.mean(w * w, axis=axes, keepdims=True) if w.size else mean
        inv = 1.0 / np.sqrt(ms + w.dtype.type(eps))
        return w * inv, mean, inv
    mean = np.mean(w, axis=axes, keepdims=True)
    d = w - mean
    var = np.mean(d * d, axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + w.dtype.type(eps))
    return d * inv, mean, inv


def _axis(axis, rank):
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return a


def _stats_shape(shape, axis):
    if shape is None:
        return None
    a = _axis(axis, len(shape))
    return tuple(shape[:a]) + (1,) * (len(shape) - a)


def _ln_infer(simplified):
    def infer(ctx, x, scale=None, *_, axis=-1, **__):
        shape = shape_of(x)
        ydt = dtype_of(scale) or dtype_of(x)
        st = _stats_shape(shape, axis)
        outs = [tt(ydt, shape)] + [tt(np.float32, st)] * (1 if simplified else 2)
        return outs[: max(1, ctx.num_outputs or 1)]

    return infer


@op("LayerNormalization", since=1, infer=_ln_infer(False))
def layer_norm_ort(x, scale, b=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    """onnxruntime's pre-opset-17 LayerNormalization: Y has Scale's type, stats are float32."""
    a = _axis(axis, x.ndim)
    y, mean, inv = _norm(x, a, epsilon, False)
    y = y * wide(scale)
    if b is not None:
        y = y + wide(b)
    return like(y, scale.dtype), like(mean, np.float32), like(inv, np.float32)


@op("SimplifiedLayerNormalization", since=1, infer=_ln_infer(True))
def simplified_layer_norm(x, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    """RMS normalization: x / sqrt(mean(x^2) + eps) * scale; Y has scale's type."""
    a = _axis(axis, x.ndim)
    y, _, inv = _norm(x, a, epsilon, True)
    return like(y * wide(scale), scale.dtype), like(inv, np.float32)


def _skip_ln(x, skip, gamma, beta, bias, epsilon, simplified):
    s = wide(x) + wide(skip)
    if bias is not None:
        s = s + wide(bias)
    sum_t = like(s, x.dtype)
    y, mean, inv = _norm(s, s.ndim - 1, epsilon, simplified)
    y = y * wide(gamma)
    if beta is not None:
        y = y + wide(beta)
    return like(y, x.dtype), like(mean, np.float32), like(inv, np.float32), sum_t


def _skip_ln_infer(ctx, x, *_, **__):
    shape = shape_of(x)
    st = None if shape is None else tuple(shape[:-1]) + (1,)
    outs = [tt(dtype_of(x), shape), tt(np.float32, st), tt(np.float32, st), tt(dtype_of(x), shape)]
    return outs[: max(1, ctx.num_outputs or 1)]


@op("SkipLayerNormalization", domain=MS, infer=_skip_ln_infer)
def skip_layer_norm(x, skip, gamma, beta=None, bias=None, *, epsilon=1e-12):
    """LayerNorm(x + skip + bias) * gamma + beta over the last axis; skip may broadcast."""
    return _skip_ln(x, skip, gamma, beta, bias, epsilon, False)


@op("SkipSimplifiedLayerNormalization", domain=MS, infer=_skip_ln_infer)
def skip_simplified_layer_norm(x, skip, gamma, bias=None, *, epsilon=1e-12):
    """RMSNorm(x + skip + bias) * gamma; the mean output is zeros as in onnxruntime."""
    return _skip_ln(x, skip, gamma, None, bias, epsilon, True)


def _embed_ln_infer(ctx, ids, seg=None, word=None, pos=None, segemb=None, gamma=None, *_, **__):
    s = shape_of(ids)
    h = None if shape_of(word) is None else shape_of(word)[-1]
    out = None if s is None else tuple(s) + (h,)
    outs = [tt(dtype_of(word), out), tt(np.int32, None if s is None else s[:1]), tt(dtype_of(word), out)]
    return outs[: max(1, ctx.num_outputs or 1)]


def _take(table, idx, what):
    idx = np.asarray(idx).astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
        raise IndexError(f"EmbedLayerNormalization: {what} out of range [0, {table.shape[0]})")
    return wide(table)[idx]


@op("EmbedLayerNormalization", domain=MS, infer=_embed_ln_infer)
def embed_layer_norm(input_ids, segment_ids, word_embedding, position_embedding, segment_embedding=None,
                     gamma=None, beta=None, mask=None, position_ids=None, *, epsilon=1e-12, mask_index_type=1):
    """BERT embeddings: LN(word[ids] + position[pos] + segment[seg]); mask_index counts mask==1."""
    b, s = input_ids.shape
    if position_ids is None:
        position_ids = np.arange(s, dtype=np.int64)[None, :]
    e = _take(word_embedding, input_ids, "input_ids") + _take(position_embedding, position_ids, "position_ids")
    if segment_ids is not None and segment_embedding is not None:
        e = e + _take(segment_embedding, segment_ids, "segment_ids")
    y, _, _ = _norm(e, 2, epsilon, False)
    y = y * wide(gamma) + wide(beta)
    if mask is not None:
        mask_index = np.sum(mask == 1, axis=1).astype(np.int32)
    else:
        mask_index = np.zeros((b,), np.int32)
    dt = word_embedding.dtype
    return like(y, dt), mask_index, like(e, dt)


# ------------------------------------------------------------------ matmul family

def _batch_perm(rank):
    # transBatch: [1, ..., r-2, 0, r-1] (the leading dim becomes the row dim)
    return list(range(1, rank - 1)) + [0, rank - 1]


def _fm_operand(shape, trans, trans_batch):
    if shape is None:
        return None
    shape = tuple(shape)
    if trans_batch and len(shape) >= 3:
        shape = tuple(shape[i] for i in _batch_perm(len(shape)))
    if trans and len(shape) >= 2:
        shape = shape[:-2] + (shape[-1], shape[-2])
    return shape


def _fused_matmul_infer(ctx, a, b, *, transA=0, transB=0, transBatchA=0, transBatchB=0, **_):
    sa = _fm_operand(shape_of(a), transA, transBatchA)
    sb = _fm_operand(shape_of(b), transB, transBatchB)
    return [tt(dtype_of(a), matmul_shape(sa, sb))]


def _prep(x, trans, trans_batch):
    if trans_batch and x.ndim >= 3:
        x = np.transpose(x, _batch_perm(x.ndim))
    if trans and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    return x


def _fused_matmul(a, b, alpha, transA, transB, transBatchA, transBatchB):
    ea, eb = _prep(wide(a), transA, transBatchA), _prep(wide(b), transB, transBatchB)
    y = np.matmul(ea, eb)
    if alpha != 1.0:
        y = y * y.dtype.type(alpha)
    return like(y, a.dtype)


@op("FusedMatMul", domain=MS, infer=_fused_matmul_infer)
def fused_matmul(a, b, *, alpha=1.0, transA=0, transB=0, transBatchA=0, transBatchB=0):
    """alpha * matmul(op(A), op(B)); transBatch moves the leading dim next to the column dim."""
    return _fused_matmul(a, b, alpha, transA, transB, transBatchA, transBatchB)


@op("TransposeMatMul", domain=MS, infer=_fused_matmul_infer)
def transpose_matmul(a, b, *, alpha=1.0, transA=0, transB=0):
    return _fused_matmul(a, b, alpha, transA, transB, 0, 0)


@op("Inverse", domain=MS, infer=same_as(0))
def inverse(x):
    w = x.astype(np.float64) if x.dtype == np.float16 else x
    return like(np.linalg.inv(w), x.dtype)


# ------------------------------------------------------------------ softmax / dropout / trilu

@op("BiasSoftmax", domain=MS, infer=same_as(0))
def bias_softmax(data, bias, *, axis=1, is_inner_broadcast=0):
    """softmax(data + bias) over the dims [axis, rank) flattened (opset-11 Softmax semantics).

    bias of the data's rank broadcasts NumPy-style; a lower-rank bias is aligned to the leading
    dims when is_inner_broadcast (its broadcast dims sit just before ``axis``), else trailing."""
    w = wide(data)
    bw = wide(bias)
    a = axis + w.ndim if axis < 0 else axis
    if bw.ndim < w.ndim and is_inner_broadcast:
        lead = bw.ndim - (w.ndim - a)
        bw = bw.reshape(bw.shape[:lead] + (1,) * (w.ndim - bw.ndim) + bw.shape[lead:])
    z = (w + bw).reshape(w.shape[:a] + (-1,))
    z = z - np.max(z, axis=-1, keepdims=True) if z.size else z
    e = np.exp(z)
    y = e / np.sum(e, axis=-1, keepdims=True)
    return like(y.reshape(w.shape), data.dtype)


def _bias_dropout_infer(ctx, data, *_, **__):
    outs = [tt(dtype_of(data), shape_of(data)), tt(np.bool_, shape_of(data))]
    return outs[: max(1, ctx.num_outputs or 1)]


@op("BiasDropout", domain=MS, infer=_bias_dropout_infer)
def bias_dropout(ctx, data, bias, residual=None, ratio=None, training_mode=None, *, seed=0):
    """Dropout(data + bias) + residual; inference (training_mode false/absent) drops nothing."""
    x = wide(data) + wide(bias)
    training = training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0])
    r = 0.5 if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
    if training and r > 0:
        mask = ctx.random().random(x.shape) >= r
        x = np.where(mask, x / x.dtype.type(1.0 - r), x.dtype.type(0))
    else:
        mask = np.ones(x.shape, np.bool_)
    if residual is not None:
        x = x + wide(residual)
    return like(x, data.dtype), mask


@op("Trilu", domain=MS, infer=same_as(0))
def trilu_ms(x, k=None, *, upper=1):
    kk = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    if x.ndim < 2:
        raise ValueError("Trilu needs rank >= 2")
    n, m = x.shape[-2:]
    rows = np.arange(n)[:, None]
    cols = np.arange(m)[None, :]
    keep = (cols - rows >= kk) if upper else (cols - rows <= kk)
    return np.where(keep, x, np.zeros((), x.dtype))
