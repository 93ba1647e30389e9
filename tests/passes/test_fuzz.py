"""Pipeline fuzzer: random graphs run at opt_level 0, 2 and 3 must give the same outputs.

Graphs are built from a fixed list of seeds (deterministic) out of: elementwise ops with
broadcasting, MatMul, Reshape (constant targets and targets computed from Shape arithmetic),
Transpose (and cancelling pairs), Concat, Slice, Gather, reductions, Softmax, constants and
constant subgraphs, Identity/Cast/Dropout no-ops, Squeeze/Unsqueeze pairs and duplicated
subexpressions. Each graph also runs twice through the optimizer (the second must change nothing).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import jitort
from jitort.passes.pipeline import optimize

F = TensorProto.FLOAT
I64 = TensorProto.INT64
OPSET = 18
SEEDS = range(150)
UNARY = ["Relu", "Neg", "Abs", "Tanh", "Sigmoid", "Identity"]
BINARY = ["Add", "Sub", "Mul", "Max", "Min"]


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple] = {}  # float values only
        self.n = 0

    def name(self, prefix="v"):
        self.n += 1
        return f"{prefix}{self.n}"

    def node(self, op, inputs, shape=None, **attrs):
        out = self.name()
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        if shape is not None:
            self.shapes[out] = tuple(shape)
        return out

    def init(self, value, prefix="c"):
        name = self.name(prefix)
        self.inits[name] = np.asarray(value)
        return name

    def ints(self, values):
        return self.init(np.array(values, np.int64), "i")

    def constant(self, value):
        out = self.name("k")
        self.nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.asarray(value))))
        return out

    def pick(self):
        names = list(self.shapes)
        # prefer recent values so graphs get deep rather than wide
        w = np.arange(1, len(names) + 1, dtype=np.float64) ** 2
        return names[self.rng.choice(len(names), p=w / w.sum())]

    def dims(self, x):
        return self.shapes[x]


def _broadcast_operand(b: _Builder, shape):
    """A constant (initializer, Constant node, or a folded constant subgraph) broadcastable to shape."""
    rng = b.rng
    k = rng.integers(0, len(shape) + 1)
    sub = tuple(d if rng.random() < 0.7 else 1 for d in shape[len(shape) - k:])
    value = rng.standard_normal(sub).astype(np.float32)
    kind = rng.integers(0, 3)
    if kind == 0:
        return b.init(value)
    if kind == 1:
        return b.constant(value)
    half = b.constant(np.float32(0.5))
    return b.node("Mul", [b.init(value * 2), half])


def _step(b: _Builder):
    rng = b.rng
    x = b.pick()
    s = b.dims(x)
    r = len(s)
    op = rng.choice(["unary", "binary", "binary", "matmul", "reshape", "shape_reshape", "transpose",
                     "tpair", "concat", "slice", "gather", "reduce", "softmax", "noop", "squeeze_pair",
                     "dup", "flatten"])
    if op == "unary":
        return b.node(str(rng.choice(UNARY)), [x], s)
    if op == "binary":
        same = [v for v in b.shapes if b.shapes[v] == s and v != x]
        y = str(rng.choice(same)) if same and rng.random() < 0.5 else _broadcast_operand(b, s)
        ins = [x, y] if rng.random() < 0.5 else [y, x]
        return b.node(str(rng.choice(BINARY)), ins, s)
    if op == "matmul" and r >= 1:
        n = int(rng.integers(1, 6))
        w = b.init(rng.standard_normal((s[-1], n)).astype(np.float32) / np.sqrt(max(s[-1], 1)))
        return b.node("MatMul", [x, w], s[:-1] + (n,) if r >= 2 else (n,))
    if op in ("reshape", "flatten") and r >= 1:
        size = int(np.prod(s))
        if op == "flatten":
            axis = int(rng.integers(0, r + 1))
            return b.node("Flatten", [x], (int(np.prod(s[:axis])), int(np.prod(s[axis:]))), axis=axis)
        target = _factor(rng, size)
        spec = list(target)
        if len(spec) > 1 and rng.random() < 0.5:
            spec[int(rng.integers(0, len(spec)))] = -1
        return b.node("Reshape", [x, b.ints(spec)], target)
    if op == "shape_reshape" and r >= 2:
        # Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): folded for the Signature
        sh = b.node("Shape", [x])
        d0 = b.node("Gather", [sh, b.ints(0)], axis=0)
        d0u = b.node("Unsqueeze", [d0, b.ints([0])])
        tgt = b.node("Concat", [d0u, b.ints([-1])], axis=0)
        return b.node("Reshape", [x, tgt], (s[0], int(np.prod(s[1:]))))
    if op == "transpose" and r >= 2:
        perm = [int(p) for p in rng.permutation(r)]
        return b.node("Transpose", [x], tuple(s[p] for p in perm), perm=perm)
    if op == "tpair" and r >= 2:
        perm = [int(p) for p in rng.permutation(r)]
        t = b.node("Transpose", [x], tuple(s[p] for p in perm), perm=perm)
        return b.node("Transpose", [t], s, perm=[int(p) for p in np.argsort(perm)])
    if op == "concat" and r >= 1:
        axis = int(rng.integers(-r, r))
        other = x if rng.random() < 0.5 else _broadcast_full(b, s)
        out = list(s)
        out[axis] *= 2
        return b.node("Concat", [x, other], out, axis=axis)
    if op == "slice" and r >= 1:
        axis = int(rng.integers(0, r))
        d = s[axis]
        step = int(rng.choice([1, 1, 2, -1]))
        if step > 0:
            start, end = int(rng.integers(0, d)), int(rng.integers(1, d + 1))
            start, end = min(start, end - 1), max(end, start + 1)
            if rng.random() < 0.3:
                start, end = 0, 1 << 30  # the whole axis: a no-op
            n = len(range(start, min(end, d), step))
        else:
            start, end = -1, -(1 << 30)
            n = d
        out = list(s)
        out[axis] = n
        return b.node("Slice", [x, b.ints([start]), b.ints([end]), b.ints([axis]), b.ints([step])], out)
    if op == "gather" and r >= 1:
        axis = int(rng.integers(0, r))
        idx = rng.integers(-s[axis], s[axis], size=int(rng.integers(1, 4)))
        out = s[:axis] + (len(idx),) + s[axis + 1:]
        return b.node("Gather", [x, b.ints(idx)], out, axis=axis)
    if op == "reduce" and r >= 1:
        axes = sorted({int(a) for a in rng.integers(0, r, size=int(rng.integers(1, r + 1)))})
        keep = int(rng.integers(0, 2))
        out = tuple(1 if i in axes else d for i, d in enumerate(s)) if keep else \
            tuple(d for i, d in enumerate(s) if i not in axes)
        red = str(rng.choice(["ReduceSum", "ReduceMean", "ReduceMax"]))
        return b.node(red, [x, b.ints(axes)], out, keepdims=keep)
    if op == "softmax" and r >= 1:
        return b.node("Softmax", [x], s, axis=int(rng.integers(-r, r)))
    if op == "noop":
        kind = rng.integers(0, 4)
        if kind == 0:
            return b.node("Cast", [x], s, to=F)
        if kind == 1:
            return b.node("Dropout", [x, b.init(np.float32(0.3))], s)
        if kind == 2:
            return b.node("Reshape", [x, b.ints(list(s))], s)
        d = b.node("Cast", [x], None, to=TensorProto.DOUBLE)
        return b.node("Cast", [d], s, to=F)
    if op == "squeeze_pair":
        ax = int(rng.integers(0, r + 1))
        u = b.node("Unsqueeze", [x, b.ints([ax])], s[:ax] + (1,) + s[ax:])
        if rng.random() < 0.5:
            return u
        return b.node("Squeeze", [u, b.ints([ax])], s)
    if op == "dup" and b.nodes:
        # re-emit an earlier float-valued node with the same inputs and attributes
        cands = [n for n in b.nodes if n.output[0] in b.shapes and n.op_type != "Constant"]
        if cands:
            n = cands[int(rng.integers(0, len(cands)))]
            out = b.name()
            b.nodes.append(helper.make_node(n.op_type, list(n.input), [out]))
            b.nodes[-1].attribute.extend(n.attribute)
            b.shapes[out] = b.shapes[n.output[0]]
            return out
    return b.node("Relu", [x], s)


def _broadcast_full(b: _Builder, shape):
    return b.init(b.rng.standard_normal(shape).astype(np.float32))


def _factor(rng, size):
    dims = []
    rest = size
    for p in (2, 3, 5, 7):
        while rest % p == 0 and rng.random() < 0.6:
            dims.append(p)
            rest //= p
    dims.append(rest)
    rng.shuffle(dims)
    k = int(rng.integers(1, 4))
    out = [1] * k
    for i, d in enumerate(dims):
        out[i % k] *= d
    return tuple(out)


def random_model(seed: int):
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    inputs = []
    for i in range(int(rng.integers(1, 3))):
        shape = tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(1, 4))))
        if i == 0 and rng.random() < 0.5:
            shape = (int(rng.integers(1, 4)),) + shape  # a batch-like leading dim
        name = f"in{i}"
        b.shapes[name] = shape
        inputs.append((name, shape))
    for _ in range(int(rng.integers(4, 16))):
        _step(b)
    produced = [n.output[0] for n in b.nodes if n.output[0] in b.shapes]
    outs = {produced[-1]}
    for _ in range(int(rng.integers(0, 3))):
        outs.add(str(rng.choice(produced)))
    if rng.random() < 0.2:
        ident = b.node("Identity", [produced[-1]], b.shapes[produced[-1]])
        outs.add(ident)
    g = helper.make_graph(
        b.nodes, f"fuzz{seed}",
        [helper.make_tensor_value_info(n, F, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(o, F, list(b.shapes[o])) for o in sorted(outs)],
        [numpy_helper.from_array(v, k) for k, v in b.inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs}
    return m, feeds


@pytest.mark.parametrize("chunk", range(5))
def test_fuzz_pipeline(chunk):
    failures = []
    stats = {"nodes_before": 0, "nodes_after": 0}
    for seed in [s for s in SEEDS if s % 5 == chunk]:
        m, feeds = random_model(seed)
        ref = jitort.load(m, opt_level=0)(**feeds)
        for level in (2, 3):
            sess = jitort.load(m, opt_level=level)
            try:
                got = sess(**feeds)
                for r, g in zip(ref, got):
                    assert g.shape == r.shape and g.dtype == r.dtype, f"{g.shape} {g.dtype} vs {r.shape} {r.dtype}"
                    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(r).max(initial=0))))
                res = sess.optimization(sess.signatures()[0])
                again = optimize(res.bound, level)
                assert sum(again.hits.values()) == 0, f"not idempotent: {again.hits}"
            except Exception as exc:  # noqa: BLE001 - collect every failing seed, report all
                failures.append(f"seed {seed} level {level}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            if level == 2:
                stats["nodes_before"] += res.nodes_before
                stats["nodes_after"] += res.nodes_after
    assert not failures, "\n".join(failures)
    assert stats["nodes_after"] < stats["nodes_before"]  # the optimizer did something
