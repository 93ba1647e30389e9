"""``jitort::ElementwiseRegion``: a fused group of elementwise/broadcast nodes with at most one
trailing reduction (made by ``passes/elementwise_regions.py``), the unit a backend compiles into
one kernel.

    ElementwiseRegion(x0, x1, ...) -> (y0, y1, ...)
      attribute body: Graph -- the region's original nodes, unchanged; its inputs are the values
                      entering the region (x0.. in order), its outputs the values leaving it
                      (y0.. in order). No initializers, no free names.

Semantics: exactly those of running ``body`` on the inputs (the reference kernel does just that),
so it equals the unfused subgraph bit for bit. Every non-reduction output has the region's domain
shape (the broadcast of the members' shapes); a reduction output is that domain reduced.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from ..lazy import onnx_helper as helper

from ..ir import fused_export
from ..ir.fused_export import JITORT_DOMAIN, onnx_body
from ..ir.graph import Graph, Node
from .registry import op

OP = "ElementwiseRegion"


def _infer(ctx, *input_types, body: Graph):
    from ..ir.infer import bind

    if any(t is None for t in input_types):
        raise ValueError("ElementwiseRegion: an input type is unknown")
    # inputs known at bind time (a reduction's axes) are constants of the body too
    known = {v.name: c for k, v in enumerate(body.inputs)
             if isinstance(c := ctx.const(k), np.ndarray)}
    g = replace(body, initializers={**body.initializers, **known}) if known else body
    bound = bind(g, {v.name: t for v, t in zip(body.inputs, input_types) if v.name not in known})
    return [bound.types.get(o) for o in body.output_names]


@op(OP, since=1, domain=JITORT_DOMAIN, infer=_infer)
def elementwise_region(ctx, *inputs, body: Graph):
    """Runs ``body`` on the inputs (through the backend's subgraph runner when there is one)."""
    if ctx.run_graph is not None:
        return list(ctx.run_graph(body, list(inputs), None))
    from ..backends.reference import ReferenceBackend

    return ReferenceBackend().run_graph(body, list(inputs), None)


# -- ONNX function body ---------------------------------------------------------------------------
_AXES_INPUT_SINCE = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18}


@onnx_body(OP)
def _region_body(node: Node) -> list:
    """The body's nodes over the formals x*/y*; internal values become t*; a jitort-domain member
    (jitort::Gelu) is inlined from its own @onnx_body; reduction axes attributes become inputs."""
    body: Graph = node.attrs["body"]
    names = {v.name: f"x{i}" for i, v in enumerate(body.inputs)}
    names.update({v.name: f"y{j}" for j, v in enumerate(body.outputs)})

    def name(v: str) -> str:
        if not v:
            return ""
        if v not in names:
            names[v] = f"t{len(names)}"
        return names[v]

    protos = []
    for k, member in enumerate(body.nodes):
        ins, outs = [name(i) for i in member.inputs], [name(o) for o in member.outputs]
        if member.domain == JITORT_DOMAIN:
            protos += _inline(member, ins, outs, f"m{k}_")
            continue
        attrs = dict(member.attrs)
        if member.op_type in _AXES_INPUT_SINCE and "axes" in attrs:
            axes = np.asarray(attrs.pop("axes"), dtype=np.int64)
            const = f"m{k}_axes"
            protos.append(helper.make_node("Constant", [], [const],
                                           value=helper.make_tensor(const, 7, axes.shape, axes.tolist())))
            ins = (ins + [""])[:1] + [const]
        p = helper.make_node(member.op_type, ins, outs, domain=member.domain or None)
        p.attribute.extend(helper.make_attribute(a, v) for a, v in attrs.items())
        protos.append(p)
    return protos


def _inline(member: Node, ins: list[str], outs: list[str], prefix: str) -> list:
    """A fused member's own function body with its formals renamed onto the region's names."""
    if not fused_export.has_body(member.op_type):
        raise NotImplementedError(f"no ONNX function body for jitort::{member.op_type}")
    builder = fused_export.body_for(member.op_type)
    formals = {f"x{i}": v for i, v in enumerate(ins)}
    formals.update({f"y{j}": v for j, v in enumerate(outs)})
    out = []
    for p in builder(member):
        q = type(p)()
        q.CopyFrom(p)
        q.input[:] = [formals.get(v, prefix + v) if v else "" for v in p.input]
        q.output[:] = [formals.get(v, prefix + v) if v else "" for v in p.output]
        q.name = ""
        out.append(q)
    return out
