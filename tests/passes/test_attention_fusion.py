"""Attention fusion (passes/fuse_attention.py, ops/fused_attention.py).

Real exports (tests/exported.py, transformers eager attention, TorchScript exporter, opset 17):
a BERT with BERT-base *structure* (12 layers, hidden 768, 12 heads, intermediate 3072) but a
vocabulary of 1000 to keep the export small; GPT-2 with past key/values (12 layers, small
embedding) for a decode step, a chunk and an empty past; GPT-2 without past; ViT. Hand-built
graphs cover each form of the pattern (scale on the scores or on Q/K, additive masks, causal
Where / constant masks, past concat, [B,H,S,D] inputs, the ONNX Attention op) and each guard.
Every case compares opt_level 0 with opt_level 2 outputs, counts hits, checks idempotence, and
runs the exported optimized model in onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import jitort
from jitort.ir.fused_export import export_optimized
from jitort.ops import registry
from jitort.ops.fused_attention import causal_allowed
from jitort.ops.registry import KernelContext
from jitort.passes.pipeline import optimize
from tests import exported
from tests.helpers import F, model

PASS = "fuse_attention"
N = helper.make_node
BOOL = TensorProto.BOOL


# -- helpers -------------------------------------------------------------------------------------
def run_both(m, feeds, level=2, rtol=1e-5, atol=1e-5):
    """opt_level 0 and ``level`` agree on ``feeds``; returns (OptimizeResult, level-0 outputs)."""
    m0, m2 = jitort.load(m, opt_level=0), jitort.load(m, opt_level=level)
    o0, o2 = m0.run_feeds(feeds), m2.run_feeds(feeds)
    assert len(o0) == len(o2)
    for name, a, b in zip(m0.output_names, o0, o2):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, err_msg=name)
    return m2.optimization(m2.signatures()[0]), o0


def attention_nodes(res):
    return [n for n in res.graph.nodes if n.domain == "jitort" and n.op_type == "Attention"]


def misses(res):
    return [m for m in res.near_misses if m.pattern == "attention"]


def assert_idempotent(res, level=2):
    again = optimize(res.bound, level)
    assert again.hits[PASS] == 0


def assert_ort(res, feeds, expected, rtol=1e-4, atol=1e-5):
    proto = export_optimized(res.graph)
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, {k: v for k, v in feeds.items() if k in names})
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)


def attn_model(b=2, sq=5, sk=5, h=3, d=4, layout="bsd", scale="mul", mask=None, causal=None,
               past=0, probs_out=False, opset=17):
    """A decomposed attention. ``mask``: None, "additive" ([B,1,1,T] input), "wide" ([B,2,Sq,T]
    input over scores with one head), "two" (two additive inputs). ``causal``: None, "where"
    (constant triangle, after the mask), "where_first" (before the mask), "inverted"
    (Where(~tri, fill, S)), "trilu" (Trilu of ones), "const_mask" (constant additive mask)."""
    nodes, inputs, outputs, inits = [], [], [], {}
    hd = h * d
    total = past + sk
    if layout == "bsd":
        inputs += [("q", F, [b, sq, hd]), ("k", F, [b, sk, hd]), ("v", F, [b, sk, hd])]
        inits["split"] = np.array([0, 0, h, d], np.int64)
        qsrc = "q"
        if scale == "q_and_k":
            inits["s4"] = np.float32(d ** -0.25)
            nodes.append(N("Mul", ["q", "s4"], ["qs"]))
            qsrc = "qs"
        for x, src in (("q", qsrc), ("k", "k"), ("v", "v")):
            nodes += [N("Reshape", [src, "split"], [x + "r"]),
                      N("Transpose", [x + "r"], [x + "4"], perm=[0, 2, 1, 3])]
    else:
        inputs += [("q4", F, [b, h, sq, d]), ("k4", F, [b, h, sk, d]), ("v4", F, [b, h, sk, d])]
        if scale == "q_and_k":
            inits["s4"] = np.float32(d ** -0.25)
            nodes.append(N("Mul", ["q4", "s4"], ["q4s"]))
    kk, vv = "k4", "v4"
    if past:
        inputs += [("past_key", F, [b, h, past, d]), ("past_value", F, [b, h, past, d])]
        nodes += [N("Concat", ["past_key", "k4"], ["present_key"], axis=2),
                  N("Concat", ["past_value", "v4"], ["present_value"], axis=2)]
        kk, vv = "present_key", "present_value"
    nodes.append(N("Transpose", [kk], ["kt"], perm=[0, 1, 3, 2]))
    kt = "kt"
    if scale == "q_and_k":
        nodes.append(N("Mul", ["kt", "s4"], ["kts"]))
        kt = "kts"
    qq = "q4s" if layout == "bhsd" and scale == "q_and_k" else "q4"
    nodes.append(N("MatMul", [qq, kt], ["s0"]))
    s = "s0"
    if scale == "mul":
        inits["sc"] = np.float32(1 / np.sqrt(d))
        nodes.append(N("Mul", [s, "sc"], ["s1"]))
        s = "s1"
    elif scale == "div":
        inits["sc"] = np.float32(np.sqrt(d))
        nodes.append(N("Div", [s, "sc"], ["s1"]))
        s = "s1"
    elif scale == "input":
        inputs.append(("scale_in", F, []))
        nodes.append(N("Mul", [s, "scale_in"], ["s1"]))
        s = "s1"
    tri = causal_allowed(sq, total)
    inits["fill"] = np.float32(-np.inf)

    def where(s_in, out):
        if causal == "inverted":
            inits["tri"] = ~tri
            nodes.append(N("Where", ["tri", "fill", s_in], [out]))
        elif causal == "trilu":
            inits["ones"] = np.ones((sq, total), np.float32)
            inits["tk"] = np.array(total - sq, np.int64)
            nodes.extend([N("Trilu", ["ones", "tk"], ["tri_f"], upper=0),
                          N("Cast", ["tri_f"], ["tri"], to=BOOL), N("Where", ["tri", s_in, "fill"], [out])])
        else:
            inits["tri"] = tri
            nodes.append(N("Where", ["tri", s_in, "fill"], [out]))

    if causal == "where_first":
        where(s, "sw")
        s = "sw"
    if mask == "additive":
        inputs.append(("mask", F, [b, 1, 1, total]))
    elif mask == "wide":
        inputs.append(("mask", F, [b, 2, sq, total]))
    elif mask == "chain":  # transformers 4.x BERT: (1 - mask[:, None, None, :]) * finfo.min
        inputs.append(("attention_mask", TensorProto.INT64, [b, total]))
        inits.update(axes=np.array([1, 2], np.int64), one=np.float32(1.0),
                     fmin=np.float32(np.finfo(np.float32).min))
        nodes.extend([N("Unsqueeze", ["attention_mask", "axes"], ["m4"]), N("Cast", ["m4"], ["mf"], to=F),
                      N("Sub", ["one", "mf"], ["inv"]), N("Mul", ["inv", "fmin"], ["mask"])])
    elif mask == "two":
        inputs += [("mask", F, [b, 1, 1, total]), ("bias2", F, [1, h, sq, total])]
        nodes.append(N("Add", [s, "bias2"], ["sb"]))
        s = "sb"
    if mask:
        nodes.append(N("Add", [s, "mask"], ["sm"]))
        s = "sm"
    if causal == "const_mask":
        inits["cmask"] = np.where(tri, 0, np.finfo(np.float32).min).astype(np.float32)
        nodes.append(N("Add", [s, "cmask"], ["sc2"]))
        s = "sc2"
    if causal in ("where", "inverted", "trilu"):
        where(s, "sw")
        s = "sw"
    nodes += [N("Softmax", [s], ["p"], axis=-1), N("MatMul", ["p", vv], ["o4"])]
    hh = 2 if mask == "wide" else h
    if layout == "bsd":
        inits["merge"] = np.array([0, 0, hd], np.int64)
        nodes += [N("Transpose", ["o4"], ["ot"], perm=[0, 2, 1, 3]), N("Reshape", ["ot", "merge"], ["y"])]
        outputs.insert(0, ("y", F, [b, sq, hd]))
    else:
        outputs.insert(0, ("o4", F, [b, hh, sq, d]))
    if probs_out:
        outputs.append(("p", F, [b, hh, sq, total]))
    return model(nodes, inputs, outputs, inits, opset=opset)


def feeds_for(m, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for i in m.graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        if i.name == "attention_mask":
            out[i.name] = np.ones(shape, np.int64)
            out[i.name][-1, shape[1] // 2:] = 0
        elif i.type.tensor_type.elem_type == BOOL:
            out[i.name] = rng.random(shape) > 0.3
        elif i.name in ("mask", "bias2"):
            out[i.name] = np.where(rng.random(shape) > 0.25, 0, -1e4).astype(np.float32)
        elif i.name == "scale_in":
            out[i.name] = np.float32(0.5)
        else:
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


# -- hand-built forms ----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["bsd", "bhsd"])
@pytest.mark.parametrize("scale", ["mul", "div", "q_and_k"])
@pytest.mark.parametrize("b,sq,sk", [(1, 7, 7), (3, 5, 9)])
def test_forms_fuse_and_agree(layout, scale, b, sq, sk):
    m = attn_model(b=b, sq=sq, sk=sk, layout=layout, scale=scale, mask="additive")
    feeds = feeds_for(m)
    res, expected = run_both(m, feeds)
    (node,) = attention_nodes(res)
    assert res.hits[PASS] == 1
    assert "Softmax" not in res.op_counts()
    assert node.attrs["layout"] == layout and node.attrs["num_heads"] == 3
    assert node.attrs["mask_kind"] == "additive" and "causal" not in node.attrs
    assert node.attrs["scale"] == pytest.approx(0.5)
    assert_idempotent(res)
    assert_ort(res, feeds, expected)


@pytest.mark.parametrize("causal", ["where", "inverted", "trilu", "const_mask"])
@pytest.mark.parametrize("past", [0, 3])
def test_causal_forms(causal, past):
    sq = 4
    m = attn_model(b=2, sq=sq, sk=sq, causal=causal, past=past)
    feeds = feeds_for(m, seed=1)
    res, expected = run_both(m, feeds)
    (node,) = attention_nodes(res)
    assert node.attrs["causal"] == 1
    assert node.attrs["mask_kind"] == "none"  # a constant causal mask is dropped, not added
    assert (len(node.inputs) > 3) == bool(past) and len(node.outputs) == (3 if past else 1)
    assert misses(res) == []
    assert_idempotent(res)
    assert_ort(res, feeds, expected)


@pytest.mark.parametrize("layout", ["bsd", "bhsd"])
def test_past_concat_with_mask_and_causal(layout):
    m = attn_model(b=2, sq=3, sk=3, past=5, layout=layout, mask="additive", causal="where")
    feeds = feeds_for(m, seed=2)
    res, expected = run_both(m, feeds)
    (node,) = attention_nodes(res)
    assert node.outputs[1:] == ["present_key", "present_value"]
    assert node.inputs[3:] == ["past_key", "past_value", "mask"]
    assert node.attrs["causal"] == 1 and node.attrs["mask_kind"] == "additive"
    assert_idempotent(res)
    assert_ort(res, feeds, expected)


def test_bert_4x_extended_mask_chain():
    m = attn_model(b=2, sq=6, sk=6, mask="chain")
    feeds = feeds_for(m, seed=11)
    res, expected = run_both(m, feeds)
    (node,) = attention_nodes(res)
    assert node.attrs["mask_kind"] == "additive" and node.inputs[5] == "mask"
    assert_ort(res, feeds, expected)


# -- guards --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,kwargs,reason", [
    ("probabilities escape", {"probs_out": True, "mask": "additive"}, "also used"),
    ("scale not constant", {"scale": "input"}, "not a constant scalar"),
    ("mask wider than the scores", {"layout": "bhsd", "h": 1, "mask": "wide"}, "does not broadcast"),
    ("two additive biases", {"mask": "two"}, "more than one additive bias"),
    ("causal before the mask", {"mask": "additive", "causal": "where_first"}, "before the additive mask"),
])
def test_near_misses(kind, kwargs, reason):
    m = attn_model(**kwargs)
    res, _ = run_both(m, feeds_for(m, seed=3))
    assert res.hits[PASS] == 0, kind
    assert attention_nodes(res) == []
    assert any(reason in mm.reason for mm in misses(res)), (kind, res.near_misses)


def test_not_a_causal_triangle_is_a_near_miss():
    m = attn_model(causal="where")
    for init in m.graph.initializer:
        if init.name == "tri":
            arr = onnx.numpy_helper.to_array(init).copy()
            arr[0, 2] = True  # one future key visible: not causal, must stay unfused
            init.CopyFrom(onnx.numpy_helper.from_array(arr, "tri"))
    res, _ = run_both(m, feeds_for(m))
    assert res.hits[PASS] == 0
    assert any("not a causal triangle" in mm.reason for mm in misses(res))


def test_k_transposed_input_is_a_near_miss():
    """K^T fed directly ([B,H,D,S]): no K to give the fused node."""
    nodes = [N("MatMul", ["q", "kt"], ["s"]), N("Softmax", ["s"], ["p"], axis=-1),
             N("MatMul", ["p", "v"], ["y"])]
    m = model(nodes, [("q", F, [1, 2, 3, 4]), ("kt", F, [1, 2, 4, 5]), ("v", F, [1, 2, 5, 4])],
              [("y", F, [1, 2, 3, 4])], opset=17)
    res, _ = run_both(m, feeds_for(m))
    assert res.hits[PASS] == 0
    assert any("not a Transpose of K" in mm.reason for mm in misses(res))


def _bhsd_model(hq, hkv):
    nodes = [N("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), N("MatMul", ["q", "kt"], ["s"]),
             N("Softmax", ["s"], ["p"], axis=-1), N("MatMul", ["p", "v"], ["y"])]
    h = max(hq, hkv)
    return model(nodes, [("q", F, [2, hq, 3, 4]), ("k", F, [2, hkv, 5, 4]), ("v", F, [2, hkv, 5, 4])],
                 [("y", F, [2, h, 3, 4])], opset=17)


def test_multi_query_by_broadcasting_fuses():
    m = _bhsd_model(hq=4, hkv=1)
    feeds = feeds_for(m)
    res, expected = run_both(m, feeds)
    (node,) = attention_nodes(res)
    assert node.attrs["num_heads"] == 4 and node.attrs["kv_num_heads"] == 1
    assert node.attrs["scale"] == 1.0 and node.attrs["layout"] == "bhsd"
    assert_ort(res, feeds, expected)


def test_query_broadcast_over_heads_is_a_near_miss():
    """One query head against three key heads: no head count the kernel can take."""
    m = _bhsd_model(hq=1, hkv=3)
    res, _ = run_both(m, feeds_for(m))
    assert res.hits[PASS] == 0
    assert any("head count not derivable" in mm.reason for mm in misses(res))


# -- the ONNX Attention op -----------------------------------------------------------------------
def onnx_attention_model(b=2, sq=3, p=4, hq=4, hkv=2, d=5, causal=1, mask="bool", softcap=0.0):
    t = p + sq
    inputs = [("q", F, [b, sq, hq * d]), ("k", F, [b, sq, hkv * d]), ("v", F, [b, sq, hkv * d])]
    ins = ["q", "k", "v", "mask" if mask else "", "pk", "pv"]
    if mask:
        inputs.append(("mask", BOOL if mask == "bool" else F, [b, 1, sq, t]))
    inputs += [("pk", F, [b, hkv, p, d]), ("pv", F, [b, hkv, p, d])]
    attrs = {"q_num_heads": hq, "kv_num_heads": hkv, "is_causal": causal}
    if softcap:
        attrs["softcap"] = softcap
    node = N("Attention", ins, ["y", "present_key", "present_value"], **attrs)
    outs = [("y", F, [b, sq, hq * d]), ("present_key", F, [b, hkv, t, d]), ("present_value", F, [b, hkv, t, d])]
    return model([node], inputs, outs, opset=23)


@pytest.mark.parametrize("mask,causal", [("bool", 1), ("additive", 0), (None, 1)])
def test_onnx_attention_op(mask, causal):
    m = onnx_attention_model(mask=mask, causal=causal)
    feeds = feeds_for(m, seed=4)
    if mask == "bool":
        feeds["mask"][..., 0] = True  # no row without a visible key
    res, expected = run_both(m, feeds)
    (node,) = attention_nodes(res)
    assert node.attrs["num_heads"] == 4 and node.attrs["kv_num_heads"] == 2
    assert node.attrs.get("causal", 0) == causal and node.attrs["mask_kind"] == (mask or "none")
    assert_idempotent(res)
    assert_ort(res, feeds, expected)


def test_onnx_attention_softcap_is_a_near_miss():
    m = onnx_attention_model(softcap=30.0)
    res, _ = run_both(m, feeds_for(m))
    assert res.hits[PASS] == 0
    assert any("softcap" in mm.reason for mm in misses(res))


# -- the kernel on its own -----------------------------------------------------------------------
@pytest.mark.parametrize("b,h,hkv,sq,p,sk,d", [(1, 1, 1, 1, 0, 1, 1), (2, 4, 2, 3, 5, 3, 7),
                                              (3, 2, 2, 6, 0, 6, 3), (1, 3, 1, 1, 9, 1, 4)])
def test_kernel_matches_onnx_attention(b, h, hkv, sq, p, sk, d):
    rng = np.random.default_rng(5)
    q = rng.standard_normal((b, sq, h * d)).astype(np.float32)
    k = rng.standard_normal((b, sk, hkv * d)).astype(np.float32)
    v = rng.standard_normal((b, sk, hkv * d)).astype(np.float32)
    pk = rng.standard_normal((b, hkv, p, d)).astype(np.float32)
    pv = rng.standard_normal((b, hkv, p, d)).astype(np.float32)
    mask = rng.standard_normal((b, 1, 1, p + sk)).astype(np.float32)
    ref = registry.find("Attention", "", 23)
    ctx = KernelContext(num_outputs=3, opset=23)
    want = registry.call(ref, [q, k, v, mask, pk, pv],
                         {"q_num_heads": h, "kv_num_heads": hkv, "is_causal": 1}, ctx)
    fused = registry.find("Attention", "jitort", 1)
    got = registry.call(fused, [q, k, v, pk, pv, mask],
                        {"num_heads": h, "kv_num_heads": hkv, "scale": d ** -0.5, "causal": 1,
                         "mask_kind": "additive", "layout": "bsd"}, ctx)
    for a, g in zip(want, got):
        np.testing.assert_allclose(g, a, rtol=1e-5, atol=1e-6)


# -- real exports --------------------------------------------------------------------------------
def test_bert_base_structure_fuses_12_layers():
    """BERT-base structure (12 x 768, 12 heads, 3072), vocabulary 1000."""
    path = exported.bert(layers=12, hidden=768, heads=12, intermediate=3072)
    feeds = exported.token_feeds(np.random.default_rng(6), 2, 9, pad_from=5)
    res, _ = run_both(path, feeds, rtol=1e-4, atol=1e-4)
    nodes = attention_nodes(res)
    assert len(nodes) == 12 and res.hits[PASS] == 12
    assert "Softmax" not in res.op_counts()
    assert all(n.attrs["num_heads"] == 12 and n.attrs["layout"] == "bsd" for n in nodes)
    assert all(n.attrs["mask_kind"] == "additive" and "causal" not in n.attrs for n in nodes)
    assert misses(res) == []


@pytest.mark.parametrize("batch,seq,pad_from", [(1, 5, None), (3, 11, 4)])
def test_small_bert_with_padding(batch, seq, pad_from):
    path = exported.bert()
    feeds = exported.token_feeds(np.random.default_rng(7), batch, seq, pad_from=pad_from)
    if batch > 1:
        feeds["attention_mask"][0, :2] = 0  # left padding too
    res, expected = run_both(path, feeds)
    assert len(attention_nodes(res)) == 2 and "Softmax" not in res.op_counts()
    assert_idempotent(res)
    assert_ort(res, feeds, expected)


@pytest.fixture(scope="module")
def gpt2_past_12():
    return exported.gpt2_past(layers=12, heads=2, embd=32)


@pytest.mark.parametrize("batch,seq,past", [(2, 1, 6), (1, 4, 3), (2, 5, 0)],
                         ids=["decode-step", "chunk", "empty-past"])
def test_gpt2_past_12_layers(gpt2_past_12, batch, seq, past):
    feeds = exported.past_feeds(np.random.default_rng(8), batch, seq, past, layers=12, heads=2, embd=32)
    if batch > 1:
        feeds["attention_mask"][1, :1] = 0
    res, expected = run_both(gpt2_past_12, feeds)
    nodes = attention_nodes(res)
    assert len(nodes) == 12 and "Softmax" not in res.op_counts()
    assert all(n.attrs.get("causal") == 1 and len(n.outputs) == 3 for n in nodes)
    assert {o for n in nodes for o in n.outputs[1:]} == set(exported.present_names(12))
    assert misses(res) == []
    if past == 3:
        assert_idempotent(res)
        assert_ort(res, feeds, expected)


def test_gpt2_without_past():
    path = exported.gpt2()
    feeds = exported.token_feeds(np.random.default_rng(9), 3, 6, pad_from=3, with_token_types=False)
    res, expected = run_both(path, feeds)
    nodes = attention_nodes(res)
    assert len(nodes) == 2 and all(n.attrs.get("causal") == 1 for n in nodes)
    assert "Softmax" not in res.op_counts()
    assert_ort(res, feeds, expected)


@pytest.mark.parametrize("batch", [1, 2])
def test_vit(batch):
    path = exported.vit()
    feeds = {"pixel_values": np.random.default_rng(10).standard_normal((batch, 3, 32, 32)).astype(np.float32)}
    res, expected = run_both(path, feeds)
    nodes = attention_nodes(res)
    assert len(nodes) == 2 and all(n.attrs["mask_kind"] == "none" for n in nodes)
    assert "Softmax" not in res.op_counts()
    assert_idempotent(res)
    assert_ort(res, feeds, expected)


def _bert_with_attentions() -> str:
    """A 1-layer BERT exported with output_attentions=True: the probabilities are an output."""

    def build(path):
        import torch
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        cfg = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=exported.VOCAB, attn_implementation="eager")
        bert = BertModel(cfg).eval()

        class Wrapper(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                o = self.m(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True,
                           return_dict=True)
                return o.last_hidden_state, o.attentions[0]

        names = ["input_ids", "attention_mask"]
        f = exported.token_feeds(np.random.default_rng(0), 2, 8, with_token_types=False)
        exported.export(Wrapper(bert), [torch.from_numpy(f[n]) for n in names], path, names,
                        ["last_hidden_state", "attentions"], {n: {0: "batch", 1: "seq"} for n in names})

    return exported._cached("bert-output-attentions-l1-h32", build)


def test_bert_output_attentions_is_a_near_miss():
    path = _bert_with_attentions()
    feeds = exported.token_feeds(np.random.default_rng(12), 2, 7, pad_from=4, with_token_types=False)
    res, _ = run_both(path, feeds)
    assert res.hits[PASS] == 0 and attention_nodes(res) == []
    assert any("probabilities" in mm.reason for mm in misses(res)), res.near_misses
