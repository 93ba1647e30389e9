"""Attention fusion (extended, order 100): scaled dot-product attention -> one jitort::Attention.

The decomposed form torch.onnx.export writes for eager attention (transformers' BERT, GPT-2 with
and without past, ViT), after the binder has folded the Shape/Gather/Concat chains that compute
the Reshape targets into constants for the Signature::

      q3 [B,S,H*D]          k3 [B,S,H*D]                 v3 [B,S,H*D]
        |                     |                            |
     Reshape [B,S,H,D]     Reshape [B,S,H,D]            Reshape [B,S,H,D]
        |                     |                            |
     Transpose 0213        Transpose 0213 --------+     Transpose 0213
        |                     |  past_key         |        |  past_value
     (Mul/Div c)?          (Concat axis 2)? -> present_key (Concat axis 2)? -> present_value
        |                  Transpose 0132         |        |
        |                  (BERT, ViT: one Transpose 0231 of the Reshape)
        |                     |                            |
        +------ MatMul -------+                            |
                  |                                        |
             (Mul|Div c)*            scale: constant scalars, also on Q/K
                  |
             (Add mask)?             additive mask [.., Sq, Sk] (transformers' Where(And(..),0,min)
                  |                  builder; a constant Trilu / buffer-slice mask)
             (Where causal)?         Where(tri, S, fill) / Where(~tri, fill, S), tri constant
                  |
               Softmax(-1)
                  |
              (Cast same)?
                  |
                MatMul ------------------------------------+
                  |
              Transpose 0213 -> Reshape [B,S,H*Dv] -> Y

    ==>   Y, present_key?, present_value? = jitort::Attention(q3, k3, v3, past_key?,
                past_value?, mask?; num_heads, kv_num_heads, scale, causal, causal_fill,
                mask_kind, layout="bsd")

Without a complete head split/merge (or when one of its intermediates is read elsewhere) the node
takes Q, K, V as [B,H,S,D] (layout="bhsd") and the split nodes stay. Causality is recognized
from a constant triangular Where condition, from a constant additive mask, or from the causal
term of transformers' mask builder (the And-tree leaf that evaluates to the triangle); the fill
of an additive mask must absorb any score (<= -1e30) for ``causal`` to be exact.

Also: the ONNX ``Attention`` op (opset 23/24) -> jitort::Attention when it has no softcap, no
qk_matmul_output, no nonpad_kv_seqlen, a softmax_precision of its own compute type, a mask that
covers every key, and (if causal) as many new keys as queries.

Guards (near misses, left unfused): the probabilities or another intermediate read elsewhere
(``output_attentions=True``), a scale that is not a constant scalar, a mask whose shape does not
broadcast into the scores, two additive biases, a causal Where before the mask, an unknown
head count or score shape.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import np_dtype
from ..ir.graph import Graph, Node
from ..ir.types import TensorType
from .attention_match import (
    ConstEval,
    Core,
    Miss,
    causal_in_mask,
    is_onnx,
    match_core,
    match_merge,
    match_past,
    match_split,
    peel_scales,
    perm_of,
)
from .base import EXTENDED, PassContext, graph_pass
from .pattern import GraphView

PASS = "fuse_attention"
PATTERN = "attention"


@graph_pass(PASS, level=EXTENDED, order=100)
def fuse_attention(graph: Graph, ctx: PassContext) -> bool:
    view = GraphView(graph, ctx)
    ev = ConstEval(view)
    changed = False
    for node in list(graph.nodes):
        if not any(n is node for n in view.graph.nodes):
            continue  # removed by an earlier rewrite in this run
        if is_onnx(node, "Softmax"):
            changed |= _fuse_decomposed(view, ev, node)
        elif is_onnx(node, "Attention"):
            changed |= _convert_op(view, node)
    return changed


# -- decomposed attention -----------------------------------------------------------------------
def _fuse_decomposed(view: GraphView, ev: ConstEval, softmax: Node) -> bool:
    ctx = view.ctx
    core = match_core(view, ev, softmax)
    if core is None:
        return False
    if isinstance(core, Miss):
        ctx.near_miss(PATTERN, softmax, core.reason)
        return False
    why = _guard_mask(view, ev, core)
    if why:
        ctx.near_miss(PATTERN, softmax, why)
        return False
    plan = _plan_inputs(view, core)
    if isinstance(plan, Miss):
        ctx.near_miss(PATTERN, softmax, plan.reason)
        return False
    inputs, outputs, attrs, region, merge = plan
    node = Node("Attention", _trim(inputs), outputs, attrs, domain="jitort",
                name=ctx.fresh(view.graph, "Attention"))
    if merge is not None and not merge.exact:  # the kept Reshape reads the fused [B, S, H*Dv]
        b, h, sq, _ = core.scores_shape
        dv = view.shape(core.pv.outputs[0])[3]
        node.outputs[0] = ctx.fresh(view.graph, f"{outputs[0]}_bsd")
        ctx.types[node.outputs[0]] = TensorType(view.dtype(core.pv.outputs[0]), (b, sq, h * dv))
        merge.reshape.inputs[0] = node.outputs[0]
    _rewrite(view, region, node)
    ctx.hit(PASS)
    return True


def _guard_mask(view: GraphView, ev: ConstEval, core: Core) -> str | None:
    _b, _h, sq, sk = core.scores_shape
    if core.mask is not None:
        ms, mdt = view.shape(core.mask), view.dtype(core.mask)
        if ms is None or len(ms) > 4:
            return f"the mask {core.mask!r} has shape {ms}: not broadcastable to [B, H, Sq, Sk]"
        for md, sd in zip(ms[::-1], core.scores_shape[::-1]):
            if md != 1 and md != sd:
                return f"the mask shape {ms} does not broadcast into the scores {core.scores_shape}"
        if mdt is None or mdt != view.dtype(core.qk.outputs[0]):
            return f"the mask {core.mask!r} is {mdt}, the scores {view.dtype(core.qk.outputs[0])}"
        if core.causal is None:
            core.causal = causal_in_mask(view, ev, core.mask, sq, sk)
            if core.causal is not None and core.causal.drop_mask:
                core.mask, core.mask_kind = None, "none"
    return None


def _plan_inputs(view: GraphView, core: Core):
    """(inputs, outputs, attrs, region) of the fused node, or a Miss."""
    _b, h, _sq, _sk = core.scores_shape
    qk, pv = core.qk, core.pv
    # -- K: K^T = Transpose(0,1,3,2)(K) with K maybe Concat(past, new), or one Transpose(0,2,3,1)
    kt_src, kf, k_nodes = peel_scales(view, qk.inputs[1])
    t = view.producer(kt_src)
    k_split = k4 = k_past = None
    if is_onnx(t, "Transpose") and perm_of(t) == (0, 2, 3, 1):
        k_split = match_split(view, kt_src, (0, 2, 3, 1))
    elif is_onnx(t, "Transpose") and perm_of(t) == (0, 1, 3, 2):
        k_nodes = k_nodes + [t]
        k4 = t.inputs[0]
        k_past = match_past(view, k4)
        k_split = match_split(view, k_past.new if k_past else k4, (0, 2, 1, 3))
    else:
        return Miss(f"K^T {qk.inputs[1]!r} is not a Transpose of K")
    v_past = match_past(view, pv.inputs[1])
    if (k_past is None) != (v_past is None):
        k_past = v_past = None
        if k4 is not None:
            k_split = match_split(view, k4, (0, 2, 1, 3))
    v_new = v_past.new if v_past else pv.inputs[1]
    v_split = match_split(view, v_new, (0, 2, 1, 3), scales=False)
    q_split = match_split(view, qk.inputs[0], (0, 2, 1, 3))
    merge = match_merge(view, pv.outputs[0])

    past_nodes = [k_past.node, v_past.node] if k_past else []
    keep = [pv.outputs[0]] + ([k_past.present, v_past.present] if k_past else [])
    attrs = {"scale": core.scale * kf}
    if core.causal is not None:
        attrs.update(causal=1, causal_fill=float(core.causal.fill))
    attrs["mask_kind"] = core.mask_kind if core.mask is not None else "none"
    past_in = [k_past.past, v_past.past] if k_past else ["", ""]
    outputs = [pv.outputs[0]] + ([k_past.present, v_past.present] if k_past else [])
    why = None

    # -- layout "bsd": every split and the merge are fused
    if q_split and k_split and v_split and merge and q_split.heads == h:
        region = core.nodes + q_split.nodes + k_nodes + k_split.nodes + v_split.nodes + past_nodes \
            + merge.nodes
        y = merge.reshape.outputs[0] if merge.exact else merge.transpose.outputs[0]
        why = view.escapes(region, [y] + keep[1:])
        if why is None:
            hkv = k_split.heads
            if hkv != v_split.heads or hkv == 0 or h % hkv:
                return Miss(f"{h} query heads and {hkv}/{v_split.heads} key/value heads")
            attrs["scale"] *= q_split.scale * k_split.scale
            attrs.update(num_heads=h, kv_num_heads=hkv, layout="bsd")
            inputs = [q_split.x3, k_split.x3, v_split.x3] + past_in + [core.mask or ""]
            return inputs, [y] + outputs[1:], _ordered(attrs), region, merge

    # -- layout "bhsd": Q, K, V as the 4-D values the matmuls read
    if k4 is None:
        return Miss(why or "K^T comes from Transpose(0,2,3,1) but the head split is not fusable")
    q4, qf, q_nodes = peel_scales(view, qk.inputs[0])
    region = core.nodes + q_nodes + k_nodes + past_nodes
    why = view.escapes(region, keep)
    if why:
        return Miss(why)
    k_in = k_past.new if k_past else k4
    v_in = v_new
    shapes = [view.shape(x) for x in (q4, k_in, v_in)]
    if any(s is None or len(s) != 4 for s in shapes):
        return Miss(f"Q/K/V shapes {shapes} are not [B, H, S, D]")
    hq, hkv = shapes[0][1], shapes[1][1]
    if not isinstance(hq, int) or not isinstance(hkv, int) or hq != h or shapes[2][1] != hkv \
            or hkv == 0 or h % hkv:
        return Miss(f"head count not derivable from Q/K/V shapes {shapes}")
    if not (shapes[0][0] == shapes[1][0] == shapes[2][0]):
        return Miss(f"Q/K/V batch dims differ: {shapes}")
    attrs["scale"] *= qf
    attrs.update(num_heads=h, kv_num_heads=hkv, layout="bhsd")
    inputs = [q4, k_in, v_in] + past_in + [core.mask or ""]
    return inputs, outputs, _ordered(attrs), region, None


def _ordered(attrs: dict) -> dict:
    order = ["num_heads", "kv_num_heads", "scale", "causal", "causal_fill", "mask_kind", "layout"]
    out = {k: attrs[k] for k in order if k in attrs}
    out["scale"] = float(out["scale"])
    return out


def _trim(inputs: list[str]) -> list[str]:
    while inputs and not inputs[-1]:
        inputs = inputs[:-1]
    return inputs


# -- the ONNX Attention op (opset 23/24) ---------------------------------------------------------
_OP_ATTRS = frozenset({"is_causal", "kv_num_heads", "q_num_heads", "qk_matmul_output_mode", "scale",
                       "softcap", "softmax_precision", "left_window_size", "right_window_size"})


def _convert_op(view: GraphView, node: Node) -> bool:
    ctx = view.ctx
    why = None
    a = node.attrs
    ins = list(node.inputs) + [""] * (7 - len(node.inputs))
    q, k, v, mask, pk, pvv, nonpad = ins[:7]
    unknown = set(a) - _OP_ATTRS
    windows = {k: a[k] for k in ("left_window_size", "right_window_size") if a.get(k, -1) != -1}
    if unknown:
        why = f"attribute(s) {sorted(unknown)} not supported"
    elif windows:
        why = f"sliding window {windows} not supported"
    elif len(node.outputs) > 3 and node.outputs[3]:
        why = "qk_matmul_output is requested"
    elif a.get("softcap", 0.0):
        why = "softcap is not supported"
    elif nonpad:
        why = "nonpad_kv_seqlen is not supported"
    elif bool(pk) != bool(pvv):
        why = "past_key without past_value"
    if why:
        ctx.near_miss(PATTERN, node, why)
        return False
    shapes = [view.shape(x) for x in (q, k, v)]
    dt = view.dtype(q)
    if any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1 or len(shapes[0]) not in (3, 4):
        ctx.near_miss(PATTERN, node, f"Q/K/V shapes {shapes} are not all 3-D or all 4-D")
        return False
    bsd = len(shapes[0]) == 3
    if bsd:
        h, hkv = a.get("q_num_heads"), a.get("kv_num_heads")
        d = shapes[0][2] // h if isinstance(h, int) and h and isinstance(shapes[0][2], int) else None
        sq, sk_new = shapes[0][1], shapes[1][1]
    else:
        h, hkv, d = shapes[0][1], shapes[1][1], shapes[0][3]
        sq, sk_new = shapes[0][2], shapes[1][2]
    if not all(isinstance(x, int) and x > 0 for x in (h, hkv, d)) or h % hkv:
        ctx.near_miss(PATTERN, node, f"head count not derivable (heads {h}/{hkv}, head size {d})")
        return False
    sp = a.get("softmax_precision")
    if sp is not None and np_dtype(int(sp)) != (np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)):
        ctx.near_miss(PATTERN, node, f"softmax_precision {np_dtype(int(sp))} differs from the compute type")
        return False
    total = sk_new
    if pk:
        ps = view.shape(pk)
        total = ps[2] + sk_new if ps and isinstance(ps[2], int) and isinstance(sk_new, int) else None
    kind = "none"
    if mask:
        ms, mdt = view.shape(mask), view.dtype(mask)
        if mdt is None or ms is None or len(ms) > 4 or ms[-1] not in (1, total):
            ctx.near_miss(PATTERN, node, f"the mask {mask!r} ({mdt}{ms}) does not cover all {total} keys")
            return False
        kind = "bool" if mdt == np.bool_ else "additive"
    if a.get("is_causal", 0) and sq != sk_new:
        ctx.near_miss(PATTERN, node, f"causal with {sq} queries and {sk_new} new keys "
                                     "(the op aligns that mask top-left)")
        return False
    scale = a.get("scale")
    attrs = {"num_heads": h, "kv_num_heads": hkv,
             "scale": float(1.0 / np.sqrt(d) if scale is None else scale)}
    if a.get("is_causal", 0):
        attrs.update(causal=1, causal_fill=float("-inf"))
    attrs.update(mask_kind=kind, layout="bsd" if bsd else "bhsd")
    fused = Node("Attention", _trim([q, k, v, pk, pvv, mask]), list(node.outputs[:3]), attrs,
                 domain="jitort", name=ctx.fresh(view.graph, "Attention"))
    while len(fused.outputs) > 1 and not fused.outputs[-1]:
        fused.outputs.pop()
    _rewrite(view, [node], fused)
    ctx.hit(PASS)
    return True


# -- rewriting ----------------------------------------------------------------------------------
def _rewrite(view: GraphView, region: list[Node], node: Node) -> None:
    """Replace ``region`` by ``node``, drop what only the region read, keep topological order."""
    fed = set(node.inputs)
    loose = [i for n in region for i in n.inputs if i and i not in fed]
    view.replace(region, [node])
    _prune(view, loose)
    _restore_order(view)


def _prune(view: GraphView, names: list[str]) -> None:
    """Remove producers of ``names`` (and upward) whose outputs nobody reads any more."""
    dead: list[Node] = []
    ids: set[int] = set()
    stack = list(names)
    while stack:
        p = view.producer(stack.pop())
        if p is None or id(p) in ids:
            continue
        if any(o and (view.is_output(o) or any(id(u) not in ids for u in view.consumers(o)))
               for o in p.outputs):
            continue
        dead.append(p)
        ids.add(id(p))
        stack.extend(i for i in p.inputs if i)
    if dead:
        view.replace(dead, [])


def _restore_order(view: GraphView) -> None:
    """A stable topological sort, only when a fused node's outputs are read before it."""
    g = view.graph
    produced = _produced(g)
    seen: set[str] = set()
    ok = True
    for n in g.nodes:
        if any(i and i in produced and i not in seen for i in n.inputs):
            ok = False
            break
        seen.update(o for o in n.outputs if o)
    if ok:
        return
    placed: set[str] = set(g.input_names) | set(g.initializers)
    pending, order = list(g.nodes), []
    while pending:
        rest = []
        for n in pending:
            if all(not i or i in placed or i not in produced for i in n.inputs):
                order.append(n)
                placed.update(o for o in n.outputs if o)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle: leave the graph as it is (the binder will say)
            return
        pending = rest
    g.nodes = order
    view.invalidate()


def _produced(g: Graph) -> set[str]:
    return {o for n in g.nodes for o in n.outputs if o}
