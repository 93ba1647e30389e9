"""Elementwise regions: maximal connected groups of elementwise/broadcast nodes, with at most one
trailing reduction, become one ``jitort::ElementwiseRegion`` node -- the unit a backend compiles
into one loop nest (one kernel).

    x[N,C]   b[C]             x, b, s                      (values entering the region)
      \\     /                   |
       Add                  +----------------------------+
        |      s[]          | ElementwiseRegion          |
        Mul ---/            |   body: Add -> Mul -> Tanh |
        |                   |                  \\         |
       Tanh ----------> ==> |         ReduceSum(axes=-1) |
        |  \\                +----------------------------+
        |   ReduceSum(axes)     |                 |
        v        |              t[N,C]            r[N,1]   (values leaving the region)
      (used       v
      elsewhere)  r

Members: unary/binary/variadic math, activations, comparisons and logic, Where, Cast/CastLike,
Identity, and ``jitort::Gelu``; every value they touch has a dtype and a static shape for the
Signature. A reduction (ReduceSum/Mean/Max/Min over constant axes) may join as the region's
last step: nothing inside reads its result.

Guards (each refusal is a near miss, never a wrong fusion):
  * the region's *domain* is the broadcast of its members' output shapes; a value leaving the
    region must have the domain's shape (one more store in the same loop, cheaper than splitting
    there). A smaller, broadcast intermediate read outside splits the region instead.
  * at most one reduction, and its input has the domain's shape;
  * no path leaves the region and comes back into it (the fused node would be its own ancestor);
  * never a data-dependent, nondeterministic or unknown-shaped node (Dropout, Random*, NonZero
    and anything whose shape the Signature does not fix are simply not members).

Nodes are visited in topological order; each joins the regions of its producers when the merged
region passes the guards (all of them at once, else one by one, largest first). Regions of one
node are left alone. Other fusions run earlier (orders < 900) and are never members, except
``jitort::Gelu``.
"""

from __future__ import annotations

import heapq

import numpy as np

from ..ir.fused_export import JITORT_DOMAIN
from ..ir.graph import Graph, Node, ValueInfo
from ..ir.types import TensorType
from .base import EXTENDED, PassContext, graph_pass
from .pattern import GraphView

NAME = "elementwise_regions"
PATTERN = "ElementwiseRegion"
FUSED_OP = "ElementwiseRegion"

UNARY = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "BitwiseNot", "Ceil", "Cos", "Cosh",
    "Erf", "Exp", "Floor", "Identity", "IsInf", "IsNaN", "Log", "Neg", "Not", "Reciprocal", "Round",
    "Sign", "Sin", "Sinh", "Sqrt", "Tan", "Tanh",
    # activations
    "Celu", "Clip", "Elu", "Gelu", "HardSigmoid", "HardSwish", "LeakyRelu", "Mish", "Relu", "Selu",
    "Shrink", "Sigmoid", "Softplus", "Softsign", "Swish", "ThresholdedRelu",
})
BINARY = frozenset({
    "Add", "And", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Div", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "Mod", "Mul", "Or", "Pow", "PRelu", "Sub", "Xor",
    "Max", "Mean", "Min", "Sum",  # variadic
    "Where", "Cast", "CastLike",
})
ELEMENTWISE = UNARY | BINARY
#: jitort-domain fused ops that are elementwise too (written by other passes).
JITORT_ELEMENTWISE = frozenset({"Gelu"})
REDUCTIONS = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"})
#: Attributes of pre-opset-7 forms (implicit broadcast flags, consumed_inputs) and Clip-6's
#: min/max attributes: not valid at the opset of exported function bodies, left alone.
_LEGACY_ATTRS = frozenset({"broadcast", "consumed_inputs", "axis", "min", "max"})


# -- pattern: which nodes may be members --------------------------------------------------------
def _static(t) -> bool:
    return (isinstance(t, TensorType) and t.dtype is not None and t.is_static
            and np.dtype(t.dtype).kind not in "OUS")


def _kind(node: Node) -> str | None:
    """'ew' for an elementwise op, 'reduce' for a candidate reduction, else None."""
    if node.domain in ("", "ai.onnx"):
        if node.op_type in ELEMENTWISE and not (_LEGACY_ATTRS & set(node.attrs)):
            return "ew"
        if node.op_type in REDUCTIONS:
            return "reduce"
    elif node.domain == JITORT_DOMAIN and node.op_type in JITORT_ELEMENTWISE:
        return "ew"
    return None


def reduce_axes(view: GraphView, node: Node) -> list[int] | None:
    """The constant axes of a reduction node ([] = all axes), or None when they are not constant."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and node.inputs[1]:
        c = view.const(node.inputs[1])
        return None if c is None else [int(a) for a in np.asarray(c).reshape(-1)]
    return []


class _Region:
    __slots__ = ("nodes", "ids", "last")

    def __init__(self, nodes: list[Node], last: int):
        self.nodes = nodes
        self.ids = {id(n) for n in nodes}
        self.last = last  # largest topological index among members


class _Finder:
    """Grows regions over one graph; ``regions`` maps id(node) -> its region."""

    def __init__(self, graph: Graph, ctx: PassContext):
        self.graph, self.ctx = graph, ctx
        self.view = GraphView(graph, ctx)
        self.index = {id(n): i for i, n in enumerate(graph.nodes)}
        self.kind: dict[int, str] = {}
        self.regions: dict[int, _Region] = {}

    # -- pattern ------------------------------------------------------------------------------
    def classify(self) -> None:
        for n in self.graph.nodes:
            k = _kind(n)
            if k is None:
                continue
            if k == "reduce":
                axes = reduce_axes(self.view, n)
                if axes is None:
                    self.ctx.near_miss(PATTERN, n, f"{n.op_type} axes are not constant")
                    continue
                if not axes and n.attrs.get("noop_with_empty_axes", 0):
                    continue
            names = [v for v in list(n.inputs) + list(n.outputs) if v]
            if not all(_static(self.ctx.types.get(v)) for v in names):
                if self._has_member_neighbour(n):
                    self.ctx.near_miss(PATTERN, n, "a shape or dtype is not fixed by the Signature "
                                                   "(data-dependent or unknown)")
                continue
            self.kind[id(n)] = k

    def _has_member_neighbour(self, n: Node) -> bool:
        near = [self.view.producer(i) for i in n.inputs if i]
        near += [u for o in n.outputs if o for u in self.view.consumers(o)]
        return any(m is not None and _kind(m) is not None for m in near)

    # -- growth -------------------------------------------------------------------------------
    def grow(self) -> list[_Region]:
        for i, n in enumerate(self.graph.nodes):
            k = self.kind.get(id(n))
            if k is None:
                continue
            own = _Region([n], i)
            data_inputs = n.inputs[:1] if k == "reduce" else n.inputs
            groups: list[_Region] = []
            for v in data_inputs:
                p = self.view.producer(v) if v else None
                r = self.regions.get(id(p)) if p is not None else None
                if r is not None and all(r is not g for g in groups):
                    groups.append(r)
            merged = self._merge(own, groups, n)
            for m in merged.nodes:
                self.regions[id(m)] = merged
        seen, out = set(), []
        for r in self.regions.values():
            if id(r) not in seen and len(r.nodes) > 1:
                seen.add(id(r))
                out.append(r)
        return out

    def _merge(self, own: _Region, groups: list[_Region], anchor: Node) -> _Region:
        if not groups:
            return own
        whole = self._union([own] + groups)
        if self.refusal(whole) is None:
            return whole
        cur = own
        for g in sorted(groups, key=lambda r: -len(r.nodes)):
            trial = self._union([cur, g])
            why = self.refusal(trial)
            if why is None:
                cur = trial
            else:
                self.ctx.near_miss(PATTERN, anchor, why)
        return cur

    @staticmethod
    def _union(parts: list[_Region]) -> _Region:
        nodes = [n for p in parts for n in p.nodes]
        return _Region(nodes, max(p.last for p in parts))

    # -- guard --------------------------------------------------------------------------------
    def refusal(self, r: _Region) -> str | None:
        """Why ``r`` cannot be one region (None: it can)."""
        types = self.ctx.types
        reds = [n for n in r.nodes if self.kind[id(n)] == "reduce"]
        red_ids = {id(n) for n in reds}
        if len(reds) > 1:
            return "a region holds at most one reduction (it would need two passes over the data)"
        shapes = [types[o].shape for n in r.nodes if id(n) not in red_ids for o in n.outputs if o]
        try:
            domain = tuple(np.broadcast_shapes(*shapes)) if shapes else ()
        except ValueError:
            return f"member shapes {sorted(set(shapes))} do not broadcast to one domain"
        for red in reds:
            if tuple(types[red.inputs[0]].shape) != domain:
                return (f"{red.op_type} input {red.inputs[0]!r} has shape {types[red.inputs[0]].shape}, "
                        f"not the region's domain {domain}")
            if any(id(u) in r.ids for o in red.outputs if o for u in self.view.consumers(o)):
                return (f"the result {red.outputs[0]!r} of {red.op_type} is read inside the region: "
                        "a reduction can only be its last step")
        for n in r.nodes:
            if id(n) in red_ids:
                continue
            for o in n.outputs:
                if o and self._escapes(o, r) and tuple(types[o].shape) != domain:
                    return (f"intermediate {o!r} {types[o].shape} is used outside the region and is "
                            f"smaller than its domain {domain}: split there")
        via = self._cycle_through(r)
        if via is not None:
            return f"fusing would create a cycle through {via.op_type} node {via.name!r}"
        return None

    def _escapes(self, name: str, r: _Region) -> bool:
        return self.view.is_output(name) or any(id(u) not in r.ids for u in self.view.consumers(name))

    def _cycle_through(self, r: _Region) -> Node | None:
        """A node outside ``r`` on a path from ``r`` back into ``r`` (regions found so far count
        as single nodes), or None. Every region found so far lies before ``r.last``; nodes after
        it cannot lead back."""
        stack = [(u, u) for n in r.nodes for o in n.outputs if o
                 for u in self.view.consumers(o) if id(u) not in r.ids]
        seen: set[int] = set()
        while stack:
            u, first = stack.pop()
            if id(u) in seen or self.index[id(u)] > r.last:
                continue
            group = self.regions.get(id(u))
            members = group.nodes if group is not None and group is not r else [u]
            seen.update(id(x) for x in members)
            for x in members:
                for o in x.outputs:
                    for c in (self.view.consumers(o) if o else ()):
                        if id(c) in r.ids:
                            return first
                        if id(c) not in seen:
                            stack.append((c, first))
        return None


# -- replacement ----------------------------------------------------------------------------------
def build_region_node(graph: Graph, ctx: PassContext, view: GraphView, members: list[Node]) -> Node | None:
    """The ElementwiseRegion node for ``members`` (in topological order), or None if nothing
    leaves the region (dead code: not this pass's business)."""
    ids = {id(n) for n in members}
    produced = {o for n in members for o in n.outputs if o}
    inputs: list[str] = []
    for n in members:
        for i in n.inputs:
            if i and i not in produced and i not in inputs:
                inputs.append(i)
    outputs = [o for n in members for o in n.outputs if o and
               (view.is_output(o) or any(id(u) not in ids for u in view.consumers(o)))]
    if not outputs:
        return None
    body = Graph(
        name=f"region_{len(members)}",
        nodes=members,
        inputs=[ValueInfo(v, ctx.types.get(v)) for v in inputs],
        outputs=[ValueInfo(v, ctx.types.get(v)) for v in outputs],
        types={v: ctx.types[v] for v in inputs + sorted(produced) if v in ctx.types},
        opsets=dict(graph.opsets),
    )
    return Node(FUSED_OP, inputs, outputs, {"body": body}, JITORT_DOMAIN, ctx.fresh(graph, "ElementwiseRegion"))


def _toposort(nodes: list[Node]) -> list[Node]:
    """Stable topological order (ties keep the given order)."""
    producer = {o: k for k, n in enumerate(nodes) for o in n.outputs if o}
    deps: list[set[int]] = []
    users: dict[int, list[int]] = {}
    for k, n in enumerate(nodes):
        reads = set(n.inputs)
        for g in n.subgraphs():
            reads |= g.free_names()
        d = {producer[i] for i in reads if i in producer and producer[i] != k}
        deps.append(d)
        for p in d:
            users.setdefault(p, []).append(k)
    waiting = [len(d) for d in deps]
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(nodes[k])
        for u in users.get(k, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    return order if len(order) == len(nodes) else nodes


@graph_pass(NAME, level=EXTENDED, order=900)
def elementwise_regions(graph: Graph, ctx: PassContext) -> bool:
    finder = _Finder(graph, ctx)
    finder.classify()
    regions = finder.grow()
    if not regions:
        return False
    view = finder.view
    fused: dict[int, Node] = {}  # id(last member) -> region node
    drop: set[int] = set()
    for r in regions:
        members = sorted(r.nodes, key=lambda n: finder.index[id(n)])
        node = build_region_node(graph, ctx, view, members)
        if node is None:
            continue
        fused[id(members[-1])] = node
        drop.update(id(n) for n in members)
        ctx.hit(NAME)
    if not fused:
        return False
    nodes = []
    for n in graph.nodes:
        if id(n) in fused:
            nodes.append(fused[id(n)])
        elif id(n) not in drop:
            nodes.append(n)
    graph.nodes = _toposort(nodes)
    graph.opsets.setdefault(JITORT_DOMAIN, 1)
    return True
