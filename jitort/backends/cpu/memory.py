"""Memory planning for the CPU backend: every intermediate of one Signature in one arena.

Input: an optimized :class:`~jitort.ir.infer.BoundGraph` (nodes in execution order, a static
``TensorType`` for every value the Signature fixes). Output: a :class:`MemoryPlan`.

    node index   0    1    2    3    4    5   END
    a = Relu     [=========]                        a lives from its producer (0)
    b = Add(a)        [====]                        to its last consumer (2) ...
    c = Gelu(b)            [=========]  in place    ... c writes into b (b dies at 2)
    y = Reshape(c)              [==============]   a view: shares c's storage; a graph
                                                    output lives to END

Rules
- Liveness: a value lives from its producer's index to its last consumer's (inclusive, so an
  output never shares bytes with an input of its own node); a value a subgraph reads (a free name
  of an If/Loop/Scan body) counts as used by the owning node; a value nobody reads lives at its
  producer only; graph outputs live to the end (index ``num_nodes``).
- Storage groups: a view (``VIEW_OPS``: C-order reinterpretations) and an in-place output join
  the storage group of the value they alias; a group lives from its root's producer to the last
  use of any member. Groups, not values, are what the allocator places.
- In place: a node whose op is in ``INPLACE_OPS`` may write output ``y`` into input ``x`` when
  ``x``'s whole group dies at that node, ``x`` has ``y``'s exact dtype and shape, and no other input
  of the node shares ``x``'s storage. Exposed as a hint, ``plan.inplace[node_index] = {y: x}``:
  a kernel may ignore it (its output buffer is then still the same bytes, so it must be written
  only after the inputs are read -- the elementwise kernels listed do exactly that).
- Graph outputs: at most one graph output per storage group; a graph output is never a view of a
  graph input or initializer (it gets its own buffer: the kernel copies). So the caller can take
  each output's bytes without another output or its own inputs aliasing them.
- Graph inputs and initializers are external: never planned, never written. Views of them are
  listed in ``views`` but have no offset.
- Dynamic values (unknown dtype or dims, sequences, optionals, strings/objects: data-dependent)
  are listed in ``dynamic`` and allocated at run time; so are views of them. Values inside
  subgraphs belong to the subgraph's own plan.
- Allocation: a greedy best-fit offset allocator over one arena (groups placed largest first, each
  into the smallest gap among the already-placed groups whose lifetimes overlap it; a
  time-ordered variant is tried too and the smaller arena kept). Every size is rounded up to and
  every offset is a multiple of ``ALIGN`` (64) bytes; ``allocate()`` returns a 64-byte-aligned
  arena. ``naive_bytes`` is the sum of the aligned sizes of every planned value that is not a
  view (one allocation each); ``live_peak_bytes`` (the largest total of simultaneously-live
  groups) is a lower bound for any allocator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir.types import TensorType

ALIGN = 64

#: ONNX-domain ops whose output is a C-order reinterpretation of their first input's bytes.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})

#: (domain, op_type) whose kernels are elementwise: output element i reads input elements at i
#: (or broadcast positions of *other* inputs) only, so the output may overwrite a dying input of
#: the same shape. Kept to ops whose every output has the broadcast shape; ElementwiseRegion
#: only with one output and no reduction in its body (checked in ``_inplace_safe``).
INPLACE_OPS = frozenset(
    [("", op) for op in (
        # unary
        "Abs", "Neg", "Reciprocal", "Sqrt", "Exp", "Log", "Erf", "Sign", "Floor", "Ceil", "Round",
        "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
        "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
        "ThresholdedRelu", "Softplus", "Softsign", "Shrink", "Mish", "Gelu", "Clip", "Not",
        "BitwiseNot",
        # binary / variadic with broadcasting
        "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "PRelu", "Where",
        "And", "Or", "Xor", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitShift",
    )]
    + [("jitort", "Gelu"), ("jitort", "ElementwiseRegion")]
)

_REDUCTIONS = ("Reduce", "ArgMax", "ArgMin")


def aligned_zeros(n: int, dtype) -> np.ndarray:
    """A zero-filled 1-D array of ``n`` items whose data starts on an ``ALIGN``-byte boundary."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n + ALIGN // item, dtype)
    start = (-raw.ctypes.data % ALIGN) // item
    return raw[start:start + n]


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _planned_type(t) -> TensorType | None:
    """``t`` when it is a tensor whose bytes are fixed for the Signature, else None (dynamic)."""
    if not isinstance(t, TensorType) or t.dtype is None or not t.is_static:
        return None
    if np.dtype(t.dtype).kind in "OUSV":  # strings, objects, records: not fixed-size storage
        return None
    return t


def _nbytes(t: TensorType) -> int:
    return int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize


@dataclass
class Buffer:
    """One storage group: a root value and the views / in-place outputs sharing its bytes."""

    root: str
    members: list[str]
    nbytes: int  # the root's exact size
    size: int  # rounded up to ALIGN
    start: int  # producer index of the root
    end: int  # last use of any member (num_nodes for graph outputs)
    offset: int = 0
    has_output: bool = False


@dataclass
class MemoryPlan:
    num_nodes: int
    arena_bytes: int
    naive_bytes: int
    live_peak_bytes: int
    offsets: dict[str, int]  # every arena-resident value (roots, views, in-place outputs)
    types: dict[str, TensorType]  # their dtype and shape
    views: dict[str, str]  # view -> the value whose storage it shares (may be external)
    storage: dict[str, str]  # arena-resident or view value -> root of its storage group
    inplace: dict[int, dict[str, str]]  # node index -> {output: input it overwrites}
    dynamic: list[str]  # allocated at run time
    external: frozenset  # graph inputs and initializers: not planned
    intervals: dict[str, tuple[int, int]]  # every arena-resident value: (producer, last use)
    buffers: list[Buffer] = field(default_factory=list)
    strategy: str = ""

    def nbytes(self, name: str) -> int:
        return _nbytes(self.types[name])

    def allocate(self, arena: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A 64-byte-aligned uint8 arena of ``arena_bytes`` (new, or ``arena`` checked and reused)
        and a C-contiguous ndarray view into it for every arena-resident value. (An empty arena's
        address is whatever NumPy gives a zero-length slice: nothing is ever read through it.)"""
        if arena is None:
            raw = np.empty(self.arena_bytes + ALIGN, dtype=np.uint8)
            shift = (-raw.ctypes.data) % ALIGN
            arena = raw[shift:shift + self.arena_bytes]
        elif arena.dtype != np.uint8 or arena.ndim != 1 or arena.nbytes < self.arena_bytes \
                or (self.arena_bytes and arena.ctypes.data % ALIGN) or not arena.flags.c_contiguous:
            raise ValueError(f"arena must be a contiguous, {ALIGN}-byte-aligned uint8 vector of at "
                             f"least {self.arena_bytes} bytes")
        out = {}
        for name, off in self.offsets.items():
            t = self.types[name]
            out[name] = arena[off:off + _nbytes(t)].view(t.dtype).reshape(t.shape)
        return arena, out

    def describe(self) -> str:
        """A short report (for ``jitort inspect``)."""
        saved = 1 - self.arena_bytes / self.naive_bytes if self.naive_bytes else 0.0
        ext_views = sum(1 for v in self.views if v not in self.offsets and v not in self.dynamic)
        n_inplace = sum(len(d) for d in self.inplace.values())
        n_buffers = sum(1 for b in self.buffers if b.size)
        lines = [
            (f"memory plan: {self.num_nodes} nodes, {len(self.offsets)} planned values in "
             f"{n_buffers} buffers ({self.strategy})"),
            (f"  arena {_human(self.arena_bytes)} (naive {_human(self.naive_bytes)}, {saved:.0%} saved; "
             f"live-peak lower bound {_human(self.live_peak_bytes)}), {ALIGN}-byte aligned"),
            (f"  views {len(self.views)} ({ext_views} on graph inputs/initializers), "
             f"in-place {n_inplace}, dynamic {len(self.dynamic)}"),
        ]
        if self.dynamic:
            shown = ", ".join(self.dynamic[:8]) + (" ..." if len(self.dynamic) > 8 else "")
            lines.append(f"  allocated at run time: {shown}")
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# -- liveness and storage groups ------------------------------------------------------------------
def _inplace_safe(node) -> bool:
    if (node.domain, node.op_type) not in INPLACE_OPS:
        return False
    if node.op_type == "ElementwiseRegion":
        body = node.attrs.get("body")
        if body is None or len([o for o in node.outputs if o]) != 1:
            return False
        return not any(n.op_type.startswith(_REDUCTIONS) for n in body.walk())
    return True


def plan_memory(bound) -> MemoryPlan:
    """Plan every intermediate buffer of ``bound`` (a BoundGraph, or an OptimizeResult)."""
    bound = getattr(bound, "bound", bound)
    graph, types = bound.graph, bound.types
    nodes = graph.nodes
    end = len(nodes)
    external = frozenset(graph.input_names) | frozenset(graph.initializers)
    outputs = set(graph.output_names)

    producer: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for x in node.inputs:
            if x:
                last_use[x] = i
        for g in node.subgraphs():
            for x in g.free_names():
                last_use[x] = i
        for o in node.outputs:
            if o and o not in external:
                producer[o] = i
    for o in outputs:
        last_use[o] = end

    def last(name: str) -> int:
        return last_use.get(name, producer.get(name, 0))

    groups: dict[str, Buffer] = {}  # root -> group
    storage: dict[str, str] = {}  # value -> root (arena groups and external roots)
    views: dict[str, str] = {}
    inplace: dict[int, dict[str, str]] = {}
    dynamic: list[str] = []
    planned: dict[str, TensorType] = {}
    for x in external:
        storage[x] = x

    def new_group(name: str, t: TensorType, i: int) -> None:
        n = _nbytes(t)
        groups[name] = Buffer(name, [name], n, _align(n), i, last(name), has_output=name in outputs)
        storage[name] = name
        planned[name] = t

    def join(name: str, t: TensorType, root: str) -> None:
        storage[name] = root
        if root in groups:
            g = groups[root]
            g.members.append(name)
            g.end = max(g.end, last(name))
            g.has_output |= name in outputs
            planned[name] = t

    for i, node in enumerate(nodes):
        claimed: set[str] = set()  # groups an output of this node already writes into
        safe = _inplace_safe(node)
        ins = [x for x in node.inputs if x]
        for k, o in enumerate(node.outputs):
            if not o or o in external:
                continue
            t = _planned_type(types.get(o))
            if t is None:
                dynamic.append(o)
                continue
            # -- a view of its first input ----------------------------------------------------
            if k == 0 and not node.domain and node.op_type in VIEW_OPS and node.inputs and node.inputs[0]:
                x = node.inputs[0]
                tx = types.get(x)
                root = storage.get(x)
                same = isinstance(tx, TensorType) and tx.dtype is not None and \
                    np.dtype(tx.dtype) == np.dtype(t.dtype) and _planned_type(tx) is not None and \
                    _nbytes(tx) == _nbytes(t)
                if root is not None and same:
                    g = groups.get(root)
                    if o not in outputs or (g is not None and not g.has_output):
                        views[o] = x
                        join(o, t, root)
                        continue
            # -- in place into a dying input ----------------------------------------------------
            if safe:
                for x in ins:
                    root = storage.get(x)
                    g = groups.get(root) if root is not None else None
                    tx = types.get(x)
                    if g is None or root in claimed or g.has_output or g.end != i:
                        continue
                    if not (isinstance(tx, TensorType) and tx.dtype is not None and
                            np.dtype(tx.dtype) == np.dtype(t.dtype) and tx.shape == t.shape):
                        continue
                    if any(y != x and storage.get(y) == root for y in ins):
                        continue
                    inplace.setdefault(i, {})[o] = x
                    claimed.add(root)
                    join(o, t, root)
                    break
                else:
                    new_group(o, t, i)
                    claimed.add(o)
                continue
            new_group(o, t, i)
            claimed.add(o)

    buffers = list(groups.values())
    arena, strategy = _allocate(buffers)
    offsets = {name: groups[storage[name]].offset for name in planned}
    naive = sum(_align(_nbytes(t)) for name, t in planned.items() if name not in views)
    intervals = {name: (producer[name], last(name)) for name in planned}
    return MemoryPlan(
        num_nodes=end, arena_bytes=arena, naive_bytes=naive, live_peak_bytes=_live_peak(buffers, end),
        offsets=offsets, types=planned, views=views,
        storage={n: r for n, r in storage.items() if n not in external or n in views},
        inplace=inplace, dynamic=dynamic, external=external, intervals=intervals,
        buffers=buffers, strategy=strategy)


# -- offset allocation ----------------------------------------------------------------------------
def _best_fit(buffers: list[Buffer], order: list[int]) -> tuple[int, list[int]]:
    """Place ``buffers`` in ``order``: each into the smallest gap between already-placed buffers
    whose lifetimes overlap its own (else after the highest of them). Returns (arena, offsets)."""
    offsets = [0] * len(buffers)
    placed: list[int] = []
    top = 0
    for j in order:
        b = buffers[j]
        if b.size == 0:
            continue
        busy = sorted((offsets[p], buffers[p].size) for p in placed
                      if buffers[p].start <= b.end and b.start <= buffers[p].end)
        best, best_gap, prev = None, None, 0
        for off, size in busy:
            gap = off - prev
            if gap >= b.size and (best_gap is None or gap < best_gap):
                best, best_gap = prev, gap
            prev = max(prev, off + size)
        offsets[j] = prev if best is None else best
        placed.append(j)
        top = max(top, offsets[j] + b.size)
    return top, offsets


def _allocate(buffers: list[Buffer]) -> tuple[int, str]:
    idx = range(len(buffers))
    orders = {
        "best-fit, largest first": sorted(idx, key=lambda j: (-buffers[j].size, buffers[j].start - buffers[j].end,
                                                              buffers[j].start)),
        "best-fit, in time order": sorted(idx, key=lambda j: (buffers[j].start, -buffers[j].size)),
    }
    best = None
    for name, order in orders.items():
        top, offsets = _best_fit(buffers, order)
        if best is None or top < best[0]:
            best = (top, offsets, name)
    top, offsets, name = best
    for b, off in zip(buffers, offsets):
        b.offset = off
    return top, name


def _live_peak(buffers: list[Buffer], end: int) -> int:
    delta = [0] * (end + 2)
    for b in buffers:
        delta[b.start] += b.size
        delta[b.end + 1] -= b.size
    peak = cur = 0
    for d in delta:
        cur += d
        peak = max(peak, cur)
    return peak
