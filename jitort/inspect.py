"""What the optimizer does to a model for one Signature: ``jitort inspect`` and its JSON.

    report = inspect_model("bert.onnx", {"input_ids": (1, 128), ...}, level=2)
    print(format_report(report))

The report holds, per pass: its hits and the whole graph's node count around it; the op
histogram before and after; every fused region with the op types inside; the near misses
(pattern, node, reason); and notes (symbolic dims that were not given and defaulted to 1).
``save_optimized`` writes the optimized graph with each jitort-domain node as an ONNX function
(``export_optimized``) and checks it with onnx.checker.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import JitortError
from .ir.graph import Graph, Model
from .ir.types import TensorType

REGION_OP = "ElementwiseRegion"


@dataclass
class Report:
    model: str
    level: int
    signature: dict  # name -> {"dtype", "shape"}
    notes: list = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    rounds: int = 0
    passes: list = field(default_factory=list)  # pipeline.PassReport
    ops_before: dict = field(default_factory=dict)
    ops_after: dict = field(default_factory=dict)
    regions: list = field(default_factory=list)  # {"name", "ops", "inputs", "outputs"}
    near_misses: list = field(default_factory=list)  # {"pattern", "node", "reason"}
    memory: dict = field(default_factory=dict)  # the CPU backend's memory plan (bytes)
    kernels: dict = field(default_factory=dict)  # {"counts": {kind: n}, "reference": {why: n}}
    saved: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


# -- the Signature ------------------------------------------------------------------------------
def input_types(graph: Graph, shapes: dict[str, tuple], notes: list | None = None) -> dict[str, TensorType]:
    """Concrete types of the inputs to feed: ``shapes`` where given, else the declared shape with
    each symbolic dim set to its value in a given shape that names the same symbol, or else to 1
    (recorded in ``notes``). Raises JitortError naming the input for an
    unknown name, a rank or dim that contradicts the model, or an input of unknown rank."""
    notes = [] if notes is None else notes
    declared = {v.name: v for v in graph.inputs}
    unknown = [n for n in shapes if n not in declared]
    if unknown:
        raise JitortError(f"--shape names unknown input(s) {unknown}; the model's inputs are "
                          f"{graph.input_names}")
    symbols = {}  # a symbolic dim fixed by a given shape holds for every input naming it
    for name, dims in shapes.items():
        t = declared[name].type
        if isinstance(t, TensorType) and t.shape is not None and len(t.shape) == len(dims):
            for d, n in zip(t.shape, dims):
                if isinstance(d, str) and d:
                    symbols.setdefault(d, (int(n), name))
    out = {}
    for v in graph.inputs:
        if v.name in graph.initializers and v.name not in shapes:
            continue  # an input with a default: the initializer is used
        t = v.type
        if not isinstance(t, TensorType) or t.dtype is None:
            raise JitortError(f"input {v.name!r} is not a tensor of known dtype ({t}); inspect binds tensors only")
        if v.name in shapes:
            shape = tuple(int(d) for d in shapes[v.name])
            if t.shape is not None:
                if len(shape) != len(t.shape):
                    raise JitortError(f"input {v.name!r} has rank {len(t.shape)} (shape {_dims(t.shape)}), "
                                      f"but --shape gives {len(shape)} dims {list(shape)}")
                for k, (want, got) in enumerate(zip(t.shape, shape)):
                    if isinstance(want, int) and want != got:
                        raise JitortError(f"input {v.name!r} dim {k} is {want} in the model, "
                                          f"but --shape gives {got}")
            if any(d < 0 for d in shape):
                raise JitortError(f"input {v.name!r}: dims must be >= 0, got {list(shape)}")
        elif t.shape is None:
            raise JitortError(f"input {v.name!r} has unknown rank: give --shape {v.name}=D1xD2...")
        else:
            shape = []
            for k, d in enumerate(t.shape):
                if isinstance(d, int):
                    shape.append(d)
                elif d in symbols:
                    shape.append(symbols[d][0])
                else:
                    notes.append(f"input {v.name!r} dim {k} ({d or '?'}) not given: using 1")
                    shape.append(1)
            shape = tuple(shape)
        out[v.name] = TensorType(np.dtype(t.dtype), shape)
    return out


def _dims(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def load_shapes_file(path: str) -> dict[str, tuple]:
    """``{"name": [1, 3, 224, 224]}`` or ``{"name": "1x3x224x224"}`` from a JSON file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise JitortError(f"--shapes-from {path}: {exc}") from None
    if not isinstance(data, dict):
        raise JitortError(f"--shapes-from {path}: expected a JSON object name -> shape")
    shapes = {}
    for name, dims in data.items():
        try:
            if isinstance(dims, str):
                dims = [d for d in dims.lower().split("x") if d != ""]
            shapes[name] = tuple(int(d) for d in dims)
        except (TypeError, ValueError):
            raise JitortError(f"--shapes-from {path}: shape of {name!r} must be a list of ints "
                              f"or 'D1xD2...', got {dims!r}") from None
    return shapes


# -- tracing the optimizer ------------------------------------------------------------------------
def op_histogram(graph: Graph) -> dict[str, int]:
    c = Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in graph.nodes)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def inspect_model(path_or_model, shapes: dict[str, tuple] | None = None, level: int = 2):
    """Optimize a model for the given input shapes; returns (Report, OptimizeResult, Model)."""
    from .ir.infer import bind
    from .ir.onnx_import import import_model
    from .passes.pipeline import optimize

    model: Model = import_model(path_or_model)
    notes: list[str] = []
    types = input_types(model.graph, dict(shapes or {}), notes)
    bound = bind(model.graph, types)
    result = optimize(bound, level)
    report = Report(
        model=str(path_or_model) if isinstance(path_or_model, str) else "<model>",
        level=level,
        signature={n: {"dtype": np.dtype(t.dtype).name, "shape": list(t.shape)} for n, t in types.items()},
        notes=notes, nodes_before=result.nodes_before, nodes_after=result.nodes_after, rounds=result.rounds,
        passes=result.passes, ops_before=op_histogram(model.graph), ops_after=op_histogram(result.graph),
        regions=[{"name": n.name, "ops": [m.op_type for m in n.attrs["body"].nodes],
                  "inputs": len(n.inputs), "outputs": len(n.outputs)}
                 for n in result.graph.nodes if n.domain == "jitort" and n.op_type == REGION_OP],
        near_misses=[{"pattern": m.pattern, "node": m.node, "reason": m.reason} for m in result.near_misses],
        memory=memory_summary(result.bound),
    )
    return report, result, model


def memory_summary(bound) -> dict:
    """The CPU backend's memory plan of the optimized graph: arena, naive and live-peak bytes."""
    from .backends.cpu.memory import plan_memory

    mp = plan_memory(bound)
    return {"arena_bytes": mp.arena_bytes, "naive_bytes": mp.naive_bytes,
            "live_peak_bytes": mp.live_peak_bytes, "planned_values": len(mp.offsets),
            "views": len(mp.views), "inplace": sum(len(d) for d in mp.inplace.values()),
            "dynamic": len(mp.dynamic)}


def kernel_summary(bound, threads: int | None = None) -> dict:
    """Which kernel runs each node on the CPU backend (this compiles them): counts per kind and,
    for the nodes left on the reference path, why."""
    from .backends import get_backend

    plan = get_backend("cpu", num_threads=threads).build_plan(bound)
    why: Counter = Counter(f"{s.node.domain + '::' if s.node.domain else ''}{s.node.op_type}: {s.why}"
                           for s in plan.steps if s.kind == "reference")
    return {"counts": plan.kernel_counts(), "reference": dict(why.most_common())}


def save_optimized(result, model: Model, path: str) -> None:
    """Write the optimized graph (jitort-domain nodes as ONNX functions, inputs and outputs typed
    for the Signature it was specialized to) and check it with onnx.checker."""
    import onnx

    from .ir.fused_export import export_optimized

    proto = export_optimized(result.graph, base=model, types=result.bound.types)
    onnx.save(proto, path)
    onnx.checker.check_model(path)


# -- text -----------------------------------------------------------------------------------------
def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def format_report(r: Report) -> str:
    from .passes.base import LEVEL_NAMES

    out = [f"model: {r.model}",
           "signature: " + ", ".join(f"{n}: {s['dtype']}[{','.join(map(str, s['shape']))}]"
                                     for n, s in r.signature.items())]
    out += [f"note: {n}" for n in r.notes]
    out.append(f"level {r.level} ({LEVEL_NAMES.get(r.level, '?')}): {r.nodes_before} -> {r.nodes_after} nodes"
               f" in {r.rounds} round(s)")
    if r.passes:
        w = max(len(p.name) for p in r.passes)
        out += ["", "passes (node counts: whole graph around the first run; delta: all rounds)",
                f"  {'pass':<{w}}  level  hits  nodes before -> after   delta"]
        for p in r.passes:
            b = "-" if p.nodes_before is None else p.nodes_before
            a = "-" if p.nodes_after is None else p.nodes_after
            out.append(f"  {p.name:<{w}}  {p.level:>5}  {p.hits:>4}  {b:>12} -> {a:<6}  {p.delta:>+6}")
    ops = sorted(set(r.ops_before) | set(r.ops_after),
                 key=lambda o: (-max(r.ops_before.get(o, 0), r.ops_after.get(o, 0)), o))
    if ops:
        w = max(len(o) for o in ops)
        out += ["", "op histogram", f"  {'op':<{w}}  before  after"]
        out += [f"  {o:<{w}}  {r.ops_before.get(o, 0):>6}  {r.ops_after.get(o, 0):>5}" for o in ops]
    out += ["", f"fused regions: {len(r.regions)}"]
    out += [f"  {g['name']}: {', '.join(g['ops'])} ({g['inputs']} in, {g['outputs']} out)" for g in r.regions]
    out += ["", f"near misses: {len(r.near_misses)}"]
    out += [f"  {m['pattern']} at {m['node']}: {m['reason']}" for m in r.near_misses]
    if r.memory:
        m = r.memory
        out += ["", f"memory (CPU backend): arena {_mib(m['arena_bytes'])} for {m['planned_values']} "
                    f"values (one buffer each: {_mib(m['naive_bytes'])}; live peak "
                    f"{_mib(m['live_peak_bytes'])}); {m['views']} views, {m['inplace']} in place, "
                    f"{m['dynamic']} allocated at run time"]
    if r.kernels:
        out += ["", "kernels (CPU backend): " + ", ".join(f"{k} {v}" for k, v in sorted(r.kernels["counts"].items()))]
        out += [f"  reference x{n}: {why}" for why, n in r.kernels["reference"].items()]
    if r.saved:
        out += ["", f"saved: {r.saved} (onnx.checker: ok)"]
    return "\n".join(out)
