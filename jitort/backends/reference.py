"""The NumPy reference backend: an interpreter over the op registry.

It is the oracle for every test and the fallback for anything a generated backend does not cover.
A plan is a list of steps prepared once per Signature (kernel lookup, attribute conversion,
liveness); running it is a loop of kernel calls over a name -> value dict, freeing each
intermediate after its last use. Nodes without a kernel whose ONNX schema defines a function body
run that body (built on first use for the input types seen, then cached).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ..lazy import onnx

from ..errors import ExecutionError, JitortError, UnsupportedOpError
from ..ir.functions import schema_defaults, schema_function
from ..ir.graph import Graph, Node, ValueInfo
from ..ops import registry
from ..ops.registry import KernelContext, attr_kwargs
from .base import register_backend


class _Step:
    __slots__ = ("node", "fn", "inputs", "outputs", "kwargs", "ctx", "wants_ctx", "has_graph")

    def __init__(self, node: Node, fn, wants_ctx: bool, kwargs: dict, ctx: KernelContext):
        self.node = node
        self.fn = fn
        self.inputs = list(node.inputs)
        while self.inputs and not self.inputs[-1]:
            self.inputs.pop()
        self.outputs = list(node.outputs)
        self.kwargs = kwargs
        self.ctx = ctx
        self.wants_ctx = wants_ctx
        self.has_graph = any(True for _ in node.subgraphs())

    def __call__(self, env: dict) -> None:
        """Run the kernel on ``env``'s values; store its outputs in ``env``."""
        args = [env[n] if n else None for n in self.inputs]
        if self.wants_ctx:
            if self.has_graph:
                self.ctx.outer = env
            out = self.fn(self.ctx, *args, **self.kwargs)
        else:
            out = self.fn(*args, **self.kwargs)
        if isinstance(out, (list, tuple)):  # several outputs (a sequence comes as (seq,))
            for name, v in zip(self.outputs, out):
                if name:
                    env[name] = v
        elif self.outputs and self.outputs[0]:
            env[self.outputs[0]] = out


def dead_after(steps, keep: set) -> list[tuple[str, ...]]:
    """Per step (anything with ``.node``), the values no later step reads, ``keep`` aside; a
    value a subgraph reads counts as read by the node that owns the subgraph."""
    last: dict[str, int] = {}
    for i, s in enumerate(steps):
        for name in s.node.inputs:
            if name:
                last[name] = i
        for sub in s.node.subgraphs():
            for name in sub.free_names():
                last[name] = i
    per: list[list[str]] = [[] for _ in steps]
    for name, i in last.items():
        if name not in keep:
            per[i].append(name)
    return [tuple(p) for p in per]


class _FunctionCall:
    """A node run through its ONNX schema's function body, one sub-plan per input-type key."""

    def __init__(self, node: Node, version: int, backend: "ReferenceBackend", opsets: dict):
        self.node, self.version, self.backend, self.opsets = node, version, backend, opsets
        self.plans: dict[tuple, ReferencePlan] = {}

    def __call__(self, ctx, *args):
        key = tuple(_type_key(a) for a in args)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = self._build(args)
        feeds = {n: a for n, a in zip(self.node.inputs, args) if n}
        return plan.run(feeds, outer=ctx.outer)

    def _build(self, args) -> "ReferencePlan":
        from ..ir.functions import inline_function
        from ..ir.onnx_export import node_proto, type_proto
        from ..ir.onnx_import import _Importer
        from ..ir.types import type_of

        proto = node_proto(self.node)
        types = [type_proto(type_of(a)) if a is not None else onnx.TypeProto() for a in args]
        fn = schema_function(self.node.op_type, self.node.domain, self.version, proto, types)
        if fn is None:
            raise UnsupportedOpError(self.node.op_type, self.node.domain, self.version, self.node.name,
                                     registry.registered_ops(self.node.domain))
        imp = _Importer(onnx.ModelProto())
        imp.opsets = dict(self.opsets)
        nodes, fn_opsets = inline_function(
            fn, proto, imp.graph, prefix="fn",
            defaults=schema_defaults(self.node.op_type, self.node.domain, self.version))
        g = Graph(name=f"{self.node.op_type}_body", nodes=nodes,
                  opsets={**self.opsets, **fn_opsets})
        g.inputs = [ValueInfo(n) for n in self.node.inputs if n]
        g.outputs = [ValueInfo(o) for o in self.node.outputs if o]
        return self.backend.compile_graph(g)


def _type_key(a) -> Any:
    if isinstance(a, np.ndarray):
        return (a.dtype, a.ndim)
    if isinstance(a, list):
        return ("seq", _type_key(a[0]) if a else None)
    return type(a).__name__


class ReferencePlan:
    """An ordered list of kernel calls over one graph."""

    def __init__(self, graph: Graph, steps: list[_Step], backend: "ReferenceBackend"):
        self.graph = graph
        self.steps = steps
        self.input_names = graph.input_names
        self.output_names = graph.output_names
        self.initializers = dict(graph.initializers)
        self.free_names = sorted(graph.free_names())
        self.dead_after = dead_after(steps, set(self.output_names) | set(self.initializers))
        self.backend = backend

    def run(self, feeds: dict[str, Any], outer: dict | None = None) -> list:
        env: dict[str, Any] = {}
        if outer is not None:
            for name in self.free_names:
                if name in outer:
                    env[name] = outer[name]
        env.update(self.initializers)
        env.update(feeds)
        with np.errstate(all="ignore"):
            for i, step in enumerate(self.steps):
                try:
                    step(env)
                except JitortError:
                    raise
                except KeyError as exc:
                    raise ExecutionError(f"{_where(step.node)}: value {exc} is not available") from exc
                except Exception as exc:  # noqa: BLE001 - any kernel failure names the node
                    raise ExecutionError(f"{_where(step.node)} failed: {type(exc).__name__}: {exc}") from exc
                for name in self.dead_after[i]:
                    env.pop(name, None)
        try:
            return [env[n] for n in self.output_names]
        except KeyError as exc:
            raise ExecutionError(f"graph output {exc} was never computed") from None


def _where(node: Node) -> str:
    dom = f"{node.domain}::" if node.domain else ""
    return f"node {node.name!r} ({dom}{node.op_type})" if node.name else f"{dom}{node.op_type} node"


@register_backend("reference")
class ReferenceBackend:
    """Runs every node through its NumPy reference kernel."""

    name = "reference"

    def __init__(self, seed: int | None = None, **_options):
        self.rng = np.random.default_rng(seed)
        self._subplans: dict[int, ReferencePlan] = {}

    # -- backend interface --------------------------------------------------------------------
    def supports(self, node: Node, opsets: dict | None = None) -> bool:
        version = node_version(node, opsets or {})
        return registry.find(node.op_type, node.domain, version) is not None or \
            _has_function_body(node, version)

    def lower(self, node: Node, opsets: dict) -> _Step:
        version = node_version(node, opsets)
        entry = registry.find(node.op_type, node.domain, version)
        ctx = KernelContext(num_outputs=len(node.outputs), opset=version, node_name=node.name,
                            run_graph=self.run_graph, rng=self.rng)
        if entry is None:
            if not _has_function_body(node, version):
                raise UnsupportedOpError(node.op_type, node.domain, version, node.name,
                                         registry.registered_ops(node.domain))
            call = _FunctionCall(node, version, self, opsets)
            return _Step(node, call, True, {}, ctx)
        kwargs = attr_kwargs(node.attrs)
        if not entry.var_kw:
            unknown = set(kwargs) - entry.params
            if unknown:
                raise JitortError(
                    f"{_where(node)}: attribute(s) {sorted(unknown)} are not supported by jitort's "
                    f"{node.op_type}-{entry.since} kernel (it takes {sorted(entry.params)})")
        return _Step(node, entry.kernel, entry.wants_ctx, kwargs, ctx)

    def compile(self, graph_and_steps) -> ReferencePlan:
        graph, steps = graph_and_steps
        return ReferencePlan(graph, steps, self)

    # -- conveniences --------------------------------------------------------------------------
    def compile_graph(self, graph: Graph) -> ReferencePlan:
        steps = [self.lower(n, graph.opsets) for n in graph.nodes]
        return self.compile((graph, steps))

    def build_plan(self, bound) -> ReferencePlan:
        return self.compile_graph(bound.graph if hasattr(bound, "graph") else bound)

    def run_graph(self, graph: Graph, inputs: list, outer: dict | None = None) -> list:
        """Run a subgraph (If/Loop/Scan body) with positional inputs and an outer scope."""
        plan = self._subplans.get(id(graph))
        if plan is None or plan.graph is not graph:
            plan = self._subplans[id(graph)] = self.compile_graph(graph)
        feeds = {n: v for n, v in zip(plan.input_names, inputs)}
        return plan.run(feeds, outer)


def node_version(node: Node, opsets: dict) -> int:
    if node.opset is not None:
        return node.opset
    v = opsets.get(node.domain)
    if v is None:
        v = opsets.get("ai.onnx" if node.domain == "" else node.domain, 1)
    return v


def _has_function_body(node: Node, version: int) -> bool:
    try:
        schema = onnx.defs.get_schema(node.op_type, version, node.domain)
    except Exception:  # noqa: BLE001
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)
