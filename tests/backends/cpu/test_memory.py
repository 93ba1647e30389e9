"""Memory planner (jitort/backends/cpu/memory.py).

Two oracles, both independent of the planner's own bookkeeping:
- ``check_plan`` recomputes liveness from the graph and checks the layout: no two values of
  different storage groups overlap in bytes while both are live, 64-byte alignment, views and
  in-place hints consistent, graph outputs never sharing storage, dynamic values listed.
- ``run_planned`` executes the graph writing every result into its planned buffer, in order,
  with the arena pre-filled with garbage and every storage group poisoned right after its last
  use; the outputs must equal an unplanned run. A value freed too early is read back as garbage.
Random DAGs (several dtypes, 0/1-sized dims, views of inputs and outputs, in-place chains,
data-dependent shapes, If bodies reading outer values) and the real BERT / GPT-2 / ResNet-50
exports at level 2 go through both.
"""

from __future__ import annotations

import numpy as np
import pytest

from jitort.backends.cpu.memory import ALIGN, INPLACE_OPS, VIEW_OPS, MemoryPlan, plan_memory
from jitort.ir.graph import Graph, Node, ValueInfo
from jitort.ir.infer import BoundGraph
from jitort.ir.types import TensorType

POISON = 0xFF  # NaN for floats, -1 for ints, True for bool


# -- independent oracle 1: layout invariants ------------------------------------------------------
def _liveness(graph: Graph):
    end = len(graph.nodes)
    producer, last = {}, {}
    for i, n in enumerate(graph.nodes):
        for x in n.inputs:
            if x:
                last[x] = i
        for g in n.subgraphs():
            for x in g.free_names():
                last[x] = i
        for o in n.outputs:
            if o:
                producer[o] = i
    for o in graph.output_names:
        last[o] = end
    return producer, {o: last.get(o, p) for o, p in producer.items()}


def _groups(plan: MemoryPlan) -> dict[str, str]:
    """value -> group representative, from the plan's public aliasing (views and in-place)."""
    parent: dict[str, str] = {}

    def find(a):
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    for v, base in plan.views.items():
        parent[find(v)] = find(base)
    for pairs in plan.inplace.values():
        for o, x in pairs.items():
            parent[find(o)] = find(x)
    return {n: find(n) for n in set(plan.offsets) | set(plan.views) | set(parent)}


def check_plan(plan: MemoryPlan, bound: BoundGraph) -> None:
    graph, types = bound.graph, bound.types
    producer, last = _liveness(graph)
    end = len(graph.nodes)
    external = set(graph.input_names) | set(graph.initializers)
    group = _groups(plan)
    outputs = set(graph.output_names)

    # every node output is planned, dynamic, or a view of external storage
    for name in producer:
        placed = [name in plan.offsets, name in plan.dynamic,
                  name in plan.views and name not in plan.offsets]
        assert sum(placed) == 1, (name, placed)
    for name in plan.dynamic:
        t = types.get(name)
        assert not (isinstance(t, TensorType) and t.is_static and t.dtype is not None), name
    # alignment, bounds, intervals
    assert plan.arena_bytes % ALIGN == 0
    assert plan.live_peak_bytes <= plan.arena_bytes <= max(plan.naive_bytes, plan.arena_bytes)
    assert plan.arena_bytes <= plan.naive_bytes
    for name, off in plan.offsets.items():
        t = types[name]
        assert plan.types[name] == t
        assert off % ALIGN == 0 and 0 <= off and off + plan.nbytes(name) <= plan.arena_bytes
        assert plan.intervals[name] == (producer[name], last[name]), name
    # no two values of different groups overlap in time and bytes
    names = [n for n in plan.offsets if plan.nbytes(n)]
    for a_i, a in enumerate(names):
        pa, ua = producer[a], last[a]
        oa, ea = plan.offsets[a], plan.offsets[a] + plan.nbytes(a)
        for b in names[a_i + 1:]:
            if group[a] == group[b]:
                continue
            if pa <= last[b] and producer[b] <= ua:
                ob, eb = plan.offsets[b], plan.offsets[b] + plan.nbytes(b)
                assert ea <= ob or eb <= oa, f"{a} and {b} are live together and overlap"
    # views: same bytes as their base, made by a view op from that base
    for v, base in plan.views.items():
        node = graph.nodes[producer[v]]
        assert node.op_type in VIEW_OPS and not node.domain and node.inputs[0] == base
        if v in plan.offsets:
            assert plan.offsets[v] == plan.offsets[base] and plan.nbytes(v) == plan.nbytes(base)
        else:
            assert v in plan.dynamic or group[v] in external, v
            assert v not in outputs, f"graph output {v} is a view of external storage"
    # in place: the overwritten input's whole group is dead after the node
    for i, pairs in plan.inplace.items():
        node = graph.nodes[i]
        assert (node.domain, node.op_type) in INPLACE_OPS
        for o, x in pairs.items():
            assert o in node.outputs and x in node.inputs
            assert types[o] == types[x] and plan.offsets[o] == plan.offsets[x]
            for m in group:
                if group[m] == group[x] and m in producer and producer[m] < i:
                    assert last[m] <= i, f"{m} is still live after node {i} wrote {o} over it"
            others = [y for y in node.inputs if y and y != x and group.get(y, y) == group[x]]
            assert not others
    # graph outputs live to the end and never share storage with another output
    seen = {}
    for o in dict.fromkeys(graph.output_names):
        if o in external or o in plan.dynamic:
            continue
        assert o in plan.offsets and last[o] == end
        assert group[o] not in seen, f"outputs {o} and {seen.get(group[o])} share storage"
        assert group[o] not in external
        seen[group[o]] = o


# -- independent oracle 2: execution in the planned buffers ---------------------------------------
def run_planned(plan: MemoryPlan, bound: BoundGraph, feeds: dict, kernel) -> list:
    """Run ``kernel(i, node, args, env) -> [results]`` node by node, each result copied into its
    planned buffer; poison every storage group right after its last use."""
    graph = bound.graph
    _, last = _liveness(graph)
    group = _groups(plan)
    group_end: dict[str, int] = {}
    for name in plan.offsets:
        group_end[group[name]] = max(group_end.get(group[name], -1), last[name])
    dies_at: dict[int, list[str]] = {}
    for name in plan.offsets:
        if last[name] == group_end[group[name]] and name not in graph.output_names:
            dies_at.setdefault(last[name], []).append(name)
    arena, bufs = plan.allocate()
    assert arena.nbytes == plan.arena_bytes and (arena.ctypes.data % ALIGN == 0 or not arena.nbytes)
    arena.fill(POISON)
    env = dict(graph.initializers)
    env.update(feeds)
    for i, node in enumerate(graph.nodes):
        args = [env[x] if x else None for x in node.inputs]
        results = kernel(i, node, args, env)
        for name, r in zip(node.outputs, results):
            if not name:
                continue
            if name in plan.offsets:
                buf = bufs[name]
                r = np.asarray(r)
                assert r.dtype == buf.dtype and r.shape == buf.shape, (name, r.dtype, r.shape, buf.shape)
                if name not in plan.views:  # a view's bytes are its base's: nothing to write
                    np.copyto(buf, r)
                env[name] = buf
            else:
                env[name] = r
        for name in dies_at.get(i, ()):
            bufs[name].view(np.uint8).reshape(-1).fill(POISON)
    return [np.array(env[o]) for o in graph.output_names]


# -- random DAGs ----------------------------------------------------------------------------------
_UNARY = {"Relu": lambda x: np.maximum(x, x.dtype.type(0)), "Neg": np.negative, "Abs": np.abs}
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum}
_DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64]


def _shape(rng, rank=None):
    rank = int(rng.integers(1, 4)) if rank is None else rank
    return tuple(int(rng.choice([0, 1, 1, 2, 3, 5, 7, 16])) if rng.random() < 0.3 else
                 int(rng.choice([1, 2, 3, 4, 5, 6, 9, 17])) for _ in range(rank))


def random_graph(rng, n_nodes):
    dt = np.dtype(rng.choice(_DTYPES))
    g = Graph(name="rand", opsets={"": 17})
    types: dict[str, TensorType] = {}
    feeds = {}
    pool: list[str] = []  # static tensors of dtype dt
    k = iter(range(10 ** 6))

    def fresh(prefix="v"):
        return f"{prefix}{next(k)}"

    def add(op, ins, out_types, **attrs):
        outs = [fresh() for _ in out_types]
        g.nodes.append(Node(op, list(ins), outs, attrs))
        for o, t in zip(outs, out_types):
            types[o] = t
            if t.dtype == dt and t.is_static:
                pool.append(o)
        return outs

    def init(arr):
        name = fresh("w")
        g.initializers[name] = arr
        types[name] = TensorType(arr.dtype, arr.shape)
        return name

    for _ in range(int(rng.integers(1, 3))):
        name = fresh("x")
        shape = _shape(rng)
        g.inputs.append(ValueInfo(name))
        types[name] = TensorType(dt, shape)
        feeds[name] = (rng.standard_normal(shape) * 4).astype(dt)
        pool.append(name)
    for _ in range(n_nodes):
        x = pool[int(rng.integers(len(pool)))] if rng.random() < 0.5 else pool[-1]
        tx = types[x]
        r = rng.random()
        if r < 0.22:
            add(str(rng.choice(list(_UNARY))), [x], [tx])
        elif r < 0.42:
            same = [v for v in pool if types[v] == tx]
            choice = rng.random()
            if choice < 0.2:
                y = x
            elif choice < 0.5 and tx.shape:
                y = init((rng.standard_normal(tx.shape[-1:]) * 2).astype(dt))
            else:
                y = same[int(rng.integers(len(same)))]
            ins = [x, y] if rng.random() < 0.7 else [y, x]
            add(str(rng.choice(list(_BINARY))), ins, [tx])
        elif r < 0.62:  # a view
            size = int(np.prod(tx.shape))
            kind = rng.choice(["Reshape", "Flatten", "Identity", "Unsqueeze", "Squeeze"])
            if kind == "Reshape":
                target = (size,) if rng.random() < 0.5 else (1,) + tx.shape
                add("Reshape", [x, init(np.array(target, np.int64))], [TensorType(dt, target)])
            elif kind == "Flatten":
                add("Flatten", [x], [TensorType(dt, (tx.shape[0], size // tx.shape[0] if tx.shape[0] else
                                                     int(np.prod(tx.shape[1:]))))], axis=1)
            elif kind == "Unsqueeze":
                add("Unsqueeze", [x, init(np.array([0], np.int64))], [TensorType(dt, (1,) + tx.shape)])
            elif kind == "Squeeze" and 1 in tx.shape and len(tx.shape) > 1:
                ax = tx.shape.index(1)
                add("Squeeze", [x, init(np.array([ax], np.int64))],
                    [TensorType(dt, tx.shape[:ax] + tx.shape[ax + 1:])])
            else:
                add("Identity", [x], [tx])
        elif r < 0.72:  # MatMul against a weight: new shapes
            n = int(rng.choice([0, 1, 3, 8, 17]))
            w = init((rng.standard_normal((tx.shape[-1], n)) * 2).astype(dt))
            add("MatMul", [x, w], [TensorType(dt, tx.shape[:-1] + (n,))])
        elif r < 0.78:  # ReduceSum over the last axis, keepdims
            axes = init(np.array([-1], np.int64))
            add("ReduceSum", [x, axes], [TensorType(dt, tx.shape[:-1] + (1,))], keepdims=1)
        elif r < 0.83:  # Concat with itself on axis 0
            add("Concat", [x, x], [TensorType(dt, (2 * tx.shape[0],) + tx.shape[1:])], axis=0)
        elif r < 0.88:  # bool mask, Where (in-place candidate over x)
            (m,) = add("Greater", [x, init(np.zeros((), dt))], [TensorType(np.dtype(bool), tx.shape)])
            same = [v for v in pool if types[v] == tx]
            add("Where", [m, x, same[int(rng.integers(len(same)))]], [tx])
        elif r < 0.93:  # data-dependent: NonZero (dynamic) then its Shape (static, planned)
            (nz,) = add("NonZero", [x], [TensorType(np.dtype(np.int64), (len(tx.shape), None))])
            if rng.random() < 0.6:
                (idn,) = add("Identity", [nz], [TensorType(np.dtype(np.int64), (len(tx.shape), None))])
                add("Shape", [idn], [TensorType(np.dtype(np.int64), (2,))])
        else:  # If whose bodies read outer values
            same = [v for v in pool if types[v] == tx]
            other = same[int(rng.integers(len(same)))]
            then_g = Graph("then", nodes=[Node("Relu", [x], ["t_out"])], outputs=[ValueInfo("t_out")])
            else_g = Graph("else", nodes=[Node("Neg", [other], ["e_out"])], outputs=[ValueInfo("e_out")])
            cond = init(np.array(bool(rng.random() < 0.5)))
            add("If", [cond], [tx], then_branch=then_g, else_branch=else_g)
    produced = [o for n in g.nodes for o in n.outputs]
    outs = list(rng.choice(produced, size=min(len(produced), int(rng.integers(1, 4))), replace=False))
    if rng.random() < 0.3:
        outs.append(g.input_names[0])  # an input passed straight through
    if rng.random() < 0.3:  # two outputs that are views of one value, one of an input
        base = pool[int(rng.integers(len(pool)))]
        for src in (base, g.input_names[0]):
            (o,) = add("Identity", [src], [types[src]])
            outs.append(o)
    g.outputs = [ValueInfo(o) for o in outs]
    return BoundGraph(g, types, fed=frozenset(g.input_names)), feeds


def _numpy_kernel(i, node, args, env):
    op = node.op_type
    if op in _UNARY:
        return [_UNARY[op](args[0])]
    if op in _BINARY:
        return [_BINARY[op](args[0], args[1])]
    if op in ("Reshape",):
        return [args[0].reshape(tuple(args[1]))]
    if op == "Flatten":
        return [args[0].reshape(args[0].shape[0], -1) if args[0].shape[0] else
                args[0].reshape(0, int(np.prod(args[0].shape[1:])))]
    if op == "Identity":
        return [args[0]]
    if op == "Unsqueeze":
        return [np.expand_dims(args[0], tuple(args[1]))]
    if op == "Squeeze":
        return [np.squeeze(args[0], tuple(args[1]))]
    if op == "MatMul":
        return [np.matmul(args[0], args[1])]
    if op == "ReduceSum":
        return [np.sum(args[0], axis=-1, keepdims=True, dtype=args[0].dtype)]
    if op == "Concat":
        return [np.concatenate(args, axis=0)]
    if op == "Greater":
        return [args[0] > args[1]]
    if op == "Where":
        return [np.where(*args)]
    if op == "NonZero":
        return [np.array(np.nonzero(args[0]), dtype=np.int64).reshape(args[0].ndim, -1)]
    if op == "Shape":
        return [np.array(args[0].shape, np.int64)]
    if op == "If":
        body = node.attrs["then_branch" if bool(args[0]) else "else_branch"]
        (inner,) = body.nodes
        return [_UNARY[inner.op_type](env[inner.inputs[0]])]
    raise AssertionError(op)


def _run_plain(bound, feeds):
    env = dict(bound.graph.initializers)
    env.update(feeds)
    for i, node in enumerate(bound.graph.nodes):
        for name, r in zip(node.outputs, _numpy_kernel(i, node, [env[x] for x in node.inputs], env)):
            env[name] = np.asarray(r)
    return [env[o] for o in bound.graph.output_names]


def _run_inplace_kernel(plan):
    """A kernel that honours the in-place hints for real: writes with out= into the aliased input."""
    def kernel(i, node, args, env):
        hint = plan.inplace.get(i, {})
        if hint and node.op_type in _BINARY:
            (_, x) = next(iter(hint.items()))
            out = env[x]  # the planned buffer of x, which o shares
            _BINARY[node.op_type](args[0], args[1], out=out)
            return [out]
        if hint and node.op_type in ("Neg", "Abs"):
            (_, x) = next(iter(hint.items()))
            out = env[x]
            {"Neg": np.negative, "Abs": np.abs}[node.op_type](args[0], out=out)
            return [out]
        return _numpy_kernel(i, node, args, env)
    return kernel


@pytest.mark.parametrize("seed", range(6))
def test_random_dags(seed):
    rng = np.random.default_rng(seed)
    stats = {"views": 0, "inplace": 0, "dynamic": 0, "zero": 0}
    for _ in range(40):
        bound, feeds = random_graph(rng, int(rng.integers(3, 30)))
        plan = plan_memory(bound)
        check_plan(plan, bound)
        want = _run_plain(bound, feeds)
        with np.errstate(all="ignore"):
            got = run_planned(plan, bound, feeds, _run_inplace_kernel(plan))
        for w, g_ in zip(want, got):
            assert w.dtype == g_.dtype and w.shape == g_.shape
            np.testing.assert_array_equal(g_, w)
        stats["views"] += len(plan.views)
        stats["inplace"] += len(plan.inplace)
        stats["dynamic"] += len(plan.dynamic)
        stats["zero"] += sum(1 for n in plan.offsets if plan.nbytes(n) == 0)
        assert plan.describe()
    assert all(stats.values()), stats  # the generator exercised every feature


# -- the oracles can fail ---------------------------------------------------------------------------
def _tiny():
    """a = Relu(x); b = Neg(x); c = Add(a, b): a and b are live together."""
    g = Graph(name="tiny", opsets={"": 17}, inputs=[ValueInfo("x")], outputs=[ValueInfo("c")],
              nodes=[Node("Relu", ["x"], ["a"]), Node("Neg", ["x"], ["b"]), Node("Add", ["a", "b"], ["c"])])
    t = TensorType(np.dtype(np.float32), (3, 5))
    return BoundGraph(g, {n: t for n in "xabc"}, fed=frozenset("x"))


def test_tiny_plan_and_oracles_catch_overlap():
    bound = _tiny()
    plan = plan_memory(bound)
    assert plan.inplace == {2: {"c": "a"}}  # c overwrites a (first input that dies at node 2)
    assert plan.offsets["a"] != plan.offsets["b"]
    assert plan.naive_bytes == 3 * 64 and plan.arena_bytes == 2 * 64 == plan.live_peak_bytes
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    check_plan(plan, bound)
    arena, bufs = plan.allocate()
    arena2, bufs2 = plan.allocate(arena)  # reuse a caller's arena
    assert arena2 is arena and bufs2["c"].ctypes.data == bufs["c"].ctypes.data == bufs["a"].ctypes.data
    with pytest.raises(ValueError, match="aligned"):
        plan.allocate(np.empty(plan.arena_bytes - 1, np.uint8))
    np.testing.assert_array_equal(run_planned(plan, bound, {"x": x}, _numpy_kernel)[0], np.maximum(x, 0) - x)
    plan.offsets["b"] = plan.offsets["a"]  # corrupt: two live values in one slot
    with pytest.raises(AssertionError, match="live together"):
        check_plan(plan, bound)
    got = run_planned(plan, bound, {"x": x}, _numpy_kernel)[0]
    assert not np.array_equal(got, np.maximum(x, 0) - x)


def test_outputs_views_and_subgraph_reads():
    """Two graph outputs viewing one value get separate storage; an output viewing an input is
    not a view; a value read only by an If body lives until the If; views of inputs are external."""
    f = np.dtype(np.float32)
    then_g = Graph("then", nodes=[Node("Relu", ["h"], ["t"])], outputs=[ValueInfo("t")])
    else_g = Graph("else", nodes=[Node("Neg", ["h"], ["e"])], outputs=[ValueInfo("e")])
    g = Graph(name="g", opsets={"": 17}, inputs=[ValueInfo("x")],
              initializers={"c": np.array(True), "s": np.array([8], np.int64)},
              nodes=[Node("Relu", ["x"], ["h"]),              # 0: h read by the If body only
                     Node("Reshape", ["x", "s"], ["xv"]),     # 1: view of an input
                     Node("Neg", ["xv"], ["n"]),              # 2
                     Node("Identity", ["n"], ["o1"]),         # 3: output view of n
                     Node("Reshape", ["n", "s"], ["o2"]),     # 4: second output view of n
                     Node("Identity", ["x"], ["o3"]),         # 5: output 'view' of an input
                     Node("Abs", ["n"], ["m"]),               # 6
                     Node("If", ["c"], ["o4"], {"then_branch": then_g, "else_branch": else_g})],  # 7
              outputs=[ValueInfo(o) for o in ("o1", "o2", "o3", "o4", "m")])
    t8, t24 = TensorType(f, (8,)), TensorType(f, (2, 4))
    types = {"x": t24, "h": t24, "xv": t8, "n": t8, "o1": t8, "o2": t8, "o3": t24, "m": t8, "o4": t24,
             "c": TensorType(np.dtype(bool), ()), "s": TensorType(np.dtype(np.int64), (1,))}
    bound = BoundGraph(g, types, fed=frozenset("x"))
    plan = plan_memory(bound)
    check_plan(plan, bound)
    assert plan.views["xv"] == "x" and "xv" not in plan.offsets
    assert plan.views.get("o1") == "n" and "o2" not in plan.views and "o3" not in plan.views
    assert plan.intervals["h"] == (0, 7)
    x = np.arange(-4, 4, dtype=np.float32).reshape(2, 4)
    got = run_planned(plan, bound, {"x": x}, _numpy_kernel)
    for w, g_ in zip(_run_plain(bound, {"x": x}), got):
        np.testing.assert_array_equal(g_, w)


# -- real models --------------------------------------------------------------------------------------
def _real(name):
    import onnx
    from onnx.backend.test.runner import Runner

    from tests import exported

    rng = np.random.default_rng(0)
    if name == "bert":
        return exported.bert(), exported.token_feeds(rng, 2, 16, pad_from=11)
    if name == "gpt2":
        return exported.gpt2(), exported.token_feeds(rng, 2, 16, pad_from=11, with_token_types=False)
    model = onnx.load(exported.RESNET50)
    inits = {i.name for i in model.graph.initializer}
    (x,) = [x for x in model.graph.input if x.name not in inits]
    shape = Runner.generate_dummy_data(x, seed=0, name="resnet50", random=False).shape
    return exported.RESNET50, {x.name: rng.standard_normal(shape).astype(np.float32)}


def _reference_kernel(graph):
    from jitort.backends.reference import ReferenceBackend

    backend = ReferenceBackend(seed=0)
    steps = [backend.lower(n, graph.opsets) for n in graph.nodes]

    def kernel(i, node, args, env):
        s = steps[i]
        args = args[:len(s.inputs)]
        if s.wants_ctx:
            if s.has_graph:
                s.ctx.outer = env
            out = s.fn(s.ctx, *args, **s.kwargs)
        else:
            out = s.fn(*args, **s.kwargs)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    return kernel


@pytest.mark.parametrize("name", ["bert", "gpt2", "resnet50"])
def test_real_models_level2(name, capsys):
    import jitort
    from jitort.ir.infer import bind
    from jitort.ir.onnx_import import import_model
    from jitort.ir.types import type_of
    from jitort.passes.pipeline import optimize

    path, feeds = _real(name)
    bound = optimize(bind(import_model(path).graph, {k: type_of(v) for k, v in feeds.items()}), 2).bound
    plan = plan_memory(bound)
    check_plan(plan, bound)
    assert not plan.dynamic
    assert plan.arena_bytes < plan.naive_bytes
    with np.errstate(all="ignore"):
        got = run_planned(plan, bound, feeds, _reference_kernel(bound.graph))
    want = jitort.load(path, backend="reference", opt_level=2)(**feeds)
    for w, g_ in zip(want, got):
        assert w.dtype == g_.dtype and w.shape == g_.shape
        np.testing.assert_array_equal(g_, w)
    with capsys.disabled():
        print(f"\n[{name}] arena {plan.arena_bytes} B, naive {plan.naive_bytes} B, "
              f"live peak {plan.live_peak_bytes} B\n{plan.describe()}")
