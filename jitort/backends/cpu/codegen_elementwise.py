"""Lowering of a ``jitort::ElementwiseRegion`` to Numba source: one fused loop nest per region.

    source = lower_region(node, input_types)   # a module defining kernel(in0, .., out0, ..)
    fn = compile_region(node, input_types)     # that kernel, njit(error_model='numpy', fastmath)
    outs = call_region(fn, *arrays)            # allocates outputs, passes float16 as uint16

``input_types`` has one entry per node input: a ``TensorType``, a ``(dtype, shape)`` pair, or an
``np.ndarray`` -- a value known at compile time (a reduction's axes must come that way unless the
body holds it). Shapes are concrete; the kernel is specialized to them.

What the nest looks like (``templates/numba/elementwise.py.j2``): the region's *domain* (the
broadcast of its members' shapes) with size-1 dims dropped and neighbouring dims collapsed where
every operand walks them contiguously; each operand indexed through a flat view with constant
element strides (0 where it is broadcast); every member's value a scalar local in the innermost
body; outputs stored there; a trailing reduction accumulated in a scalar (reduced loops innermost)
or in an array the size of its output (otherwise), then finished (Mean divides, casts back).

Types: every value is computed in its ONNX dtype (ints wrap, integer Div truncates toward zero,
Mod follows ``fmod``) except float16, which is held in float32 between members and rounded only
where it is stored or explicitly Cast to float16 (the reference rounds after every op: results
agree to float16 precision, not bit for bit). float64 -> float16 goes through float32.

Safety: nothing from the model reaches the source as text. Values are ``in{k}``, ``out{k}``,
``v{k}``; op types only select an emitter from our own table; numeric attributes are converted
with ``float``/``int`` and printed by ``repr``; string attributes only select code paths.

What it refuses (``LoweringError``, a ``NotImplementedError``: run the group on the reference
path): ml_dtypes (bfloat16, float8, int4), strings, Cast to/from those, a non-static shape, reduction
axes unknown at compile time, ``noop_with_empty_axes``, float-only ops on ints (Erf/Sqrt/...).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llvmlite import ir as llir
from numba import njit
from numba.core import types as nbtypes
from numba.extending import intrinsic, overload

from ...ir.types import TensorType
from .elementwise_emitters import (  # noqa: F401  (LoweringError, SUPPORTED_DTYPES re-exported)
    _BOOL, _F16, _F32, _REDUCE, EMITTERS, SUPPORTED_DTYPES, LoweringError, _compute, _ctor, reduce_parts,
)
from . import kernel_image
from .modules import hash_files, load_module, note

#: Scalar functions the generated code calls, as "module:attribute" (importable and callable
#: from Numba code on float32 and float64). One dict: point entries at vectorizable versions
#: (jitort/backends/cpu/vecmath.py) to change every generated kernel. An entry "<name>_f32"
#: (e.g. FUNCS["exp_f32"] = "jitort.backends.cpu.vecmath:exp") is used for float32/float16
#: values only, so float32-only implementations leave float64 on the general entry.
FUNCS: dict[str, str] = {
    "exp": "math:exp", "erf": "math:erf", "tanh": "math:tanh", "log": "math:log",
    "sigmoid": "jitort.backends.cpu.codegen_elementwise:sigmoid",
    "expm1": "math:expm1", "log1p": "math:log1p", "sqrt": "math:sqrt",
    "sin": "math:sin", "cos": "math:cos", "tan": "math:tan", "asin": "math:asin",
    "acos": "math:acos", "atan": "math:atan", "sinh": "math:sinh", "cosh": "math:cosh",
    "asinh": "math:asinh", "acosh": "math:acosh", "atanh": "math:atanh", "fmod": "math:fmod",
}
#: LLVM fast-math flags: everything but nnan/ninf, so NaN/Inf tests and propagation stay exact.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
TEMPLATE = Path(__file__).resolve().parents[3] / "templates" / "numba" / "elementwise.py.j2"

# -- scalar helpers the generated code calls (real module: Numba can cache them) ----------------
@intrinsic
def _u32_as_f32(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], llir.FloatType())
    return nbtypes.float32(nbtypes.uint32), codegen


@intrinsic
def _f32_as_u32(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], llir.IntType(32))
    return nbtypes.uint32(nbtypes.float32), codegen


_JIT = dict(error_model="numpy", fastmath=set(FASTMATH), cache=True)


@njit(**_JIT)
def h2f(u):
    """float16 bits (uint16) -> float32, exact (subnormals, inf, nan included)."""
    h = np.uint32(u)
    s = (h & np.uint32(0x8000)) << np.uint32(16)
    e = (h >> np.uint32(10)) & np.uint32(0x1F)
    m = h & np.uint32(0x3FF)
    normal = s | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))
    special = s | np.uint32(0x7F800000) | (m << np.uint32(13))
    sub = s | _f32_as_u32(np.float32(m) * np.float32(5.960464477539063e-08))  # m * 2^-24, exact
    bits = sub if e == np.uint32(0) else (special if e == np.uint32(31) else normal)
    return _u32_as_f32(bits)


@njit(**_JIT)
def f2h(f):
    """float32 -> float16 bits (uint16), round to nearest even; overflow to inf, nan stays nan."""
    x = _f32_as_u32(np.float32(f))
    s = (x >> np.uint32(16)) & np.uint32(0x8000)
    a = x & np.uint32(0x7FFFFFFF)
    nan = np.uint32(0x7E00)
    inf = np.uint32(0x7C00)
    normal = (a - np.uint32(0x38000000) + np.uint32(0xFFF) + ((a >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
    sub = np.uint32(np.rint(_u32_as_f32(a) * np.float32(16777216.0)))  # |f| * 2^24, ties to even
    r = nan if a > np.uint32(0x7F800000) else (
        inf if a >= np.uint32(0x477FF000) else (normal if a >= np.uint32(0x38800000) else sub))
    return np.uint16(r | s)


@njit(**_JIT)
def r16(f):
    """f rounded to float16 precision, kept in float32 (an explicit Cast to float16)."""
    return h2f(f2h(f))


def sigmoid(x):  # pragma: no cover - the Python body is never run; Numba uses the overload
    return 1.0 / (1.0 + math.exp(-x))


@overload(sigmoid, jit_options=dict(error_model="numpy", fastmath=set(FASTMATH)))
def _sigmoid_impl(x):
    if x == nbtypes.float32:
        def impl32(x):
            return np.float32(1) / (np.float32(1) + math.exp(-x))
        return impl32
    if x == nbtypes.float64:
        def impl64(x):
            return 1.0 / (1.0 + math.exp(-x))
        return impl64
    return None


@njit(**_JIT)
def idiv(a, b):
    """Signed integer division truncating toward zero (x / 0 = 0, as the reference)."""
    if b == 0:
        return a - a
    q = a // b
    if (a - q * b) != 0 and ((a < 0) != (b < 0)):
        q += 1
    return q


@njit(**_JIT)
def cmod(a, b):
    """Integer remainder with the dividend's sign (Mod fmod=1); x % 0 = 0."""
    r = a % b
    if r != 0 and ((r < 0) != (a < 0)):
        r -= b
    return r


@njit(**_JIT)
def ipow(a, e):
    """int64 power, wrapping; negative exponents give 1, +-1 or 0 (the reference's C-like rule)."""
    if e < 0:
        if a == 1:
            return np.int64(1)
        if a == -1:
            return np.int64(-1) if (e % 2) != 0 else np.int64(1)
        return np.int64(0)
    r = np.int64(1)
    b = np.int64(a)
    while e > 0:
        if e & 1:
            r = r * b
        b = b * b
        e >>= 1
    return r


_HELPERS = ("h2f", "f2h", "r16", "idiv", "cmod", "ipow")


# -- tiny renderer -------------------------------------------------------------------------------
_SLOT = re.compile(r"^(?P<indent>[ \t]*)(?P<pre>.*?)\{\{ *(?P<name>[a-z_]+) *\}\}", re.MULTILINE)


def render(template: str, **values: str) -> str:
    """Replaces each ``{{ name }}`` with ``values[name]``; lines after the first of a multi-line
    value are indented like the slot's line. Unknown or unused names are errors."""
    used = set()

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in values:
            raise KeyError(f"template slot {name!r} has no value")
        used.add(name)
        text = str(values[name])
        pad = "\n" + m.group("indent")
        return m.group("indent") + m.group("pre") + pad.join(text.split("\n"))

    out = _SLOT.sub(sub, template)
    if set(values) - used:
        raise KeyError(f"values for no slot: {sorted(set(values) - used)}")
    if "{{" in out:
        raise ValueError("unrendered slot left in template output")
    return out


# -- analysis ------------------------------------------------------------------------------------
@dataclass
class _Reduction:
    op: str
    value: str  # name of the reduced value (input of the reduction)
    output: str
    axes: tuple  # non-negative domain axes
    keepdims: bool


def _as_type(t) -> tuple[TensorType, np.ndarray | None]:
    if isinstance(t, np.ndarray):
        return TensorType(t.dtype, t.shape), t
    if isinstance(t, TensorType):
        return t, None
    dt, shape = t
    return TensorType(np.dtype(dt), tuple(int(d) for d in shape)), None


def _check_type(what: str, t) -> tuple[np.dtype, tuple]:
    if not isinstance(t, TensorType) or not t.is_static or t.dtype is None:
        raise LoweringError(f"{what}: type {t} is not a static tensor type")
    dt = np.dtype(t.dtype)
    if dt not in SUPPORTED_DTYPES:
        raise LoweringError(f"{what}: dtype {dt} is not supported")
    return dt, tuple(int(d) for d in t.shape)


def _cstrides(shape) -> list[int]:
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= d
    return st[::-1]


def _bstrides(shape, rank) -> list[int]:
    """Element strides of a C array of ``shape`` broadcast (right-aligned) to ``rank`` dims."""
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    return [0 if n == 1 else s for n, s in zip(padded, _cstrides(padded))]


class _Lowerer:
    def __init__(self, node, input_types):
        if node.op_type != "ElementwiseRegion":
            raise LoweringError(f"not an ElementwiseRegion: {node.op_type}")
        self.node = node
        self.body = node.attrs["body"]
        if len(input_types) != len(self.body.inputs):
            raise LoweringError(f"{len(input_types)} input types for {len(self.body.inputs)} inputs")
        pairs = [_as_type(t) for t in input_types]
        self.consts = {v.name: c for v, (_, c) in zip(self.body.inputs, pairs) if c is not None}
        self.consts.update(self.body.initializers)
        from dataclasses import replace

        from ...ir.infer import bind  # the same inference the region op's infer uses

        g = replace(self.body, initializers=dict(self.consts)) if self.consts else self.body
        bound = bind(g, {v.name: t for v, (t, _) in zip(self.body.inputs, pairs) if v.name not in self.consts})
        self.types = dict(bound.types)
        for v, (t, _) in zip(self.body.inputs, pairs):
            self.types[v.name] = t
        self.func_keys: set[str] = set()
        self.in_names = [v.name for v in self.body.inputs]
        self.out_names = [v.name for v in self.body.outputs]

    # -- the region's shape ---------------------------------------------------------------------
    def analyse(self):
        nodes = self.body.nodes
        reds = [n for n in nodes if n.op_type in _REDUCE and n.domain in ("", "ai.onnx")]
        if len(reds) > 1 or (reds and reds[0] is not nodes[-1]):
            raise LoweringError("at most one reduction, as the region's last member")
        self.ew_nodes = [n for n in nodes if not reds or n is not reds[0]]
        shapes = []
        for n in self.ew_nodes:
            for o in n.outputs:
                if o:
                    shapes.append(_check_type("member output", self.types.get(o))[1])
        red = reds[0] if reds else None
        if red is not None:
            shapes.append(_check_type("reduction input", self.types.get(red.inputs[0]))[1])
        try:
            self.domain = tuple(int(d) for d in np.broadcast_shapes(*shapes)) if shapes else ()
        except ValueError as e:
            raise LoweringError(f"member shapes do not broadcast: {e}") from None
        rank = len(self.domain)
        self.red = None
        if red is not None:
            if tuple(_check_type("reduction input", self.types[red.inputs[0]])[1]) != self.domain:
                raise LoweringError("the reduction's input does not have the domain's shape")
            axes = self._axes(red)
            if not axes:
                if red.attrs.get("noop_with_empty_axes", 0):
                    raise LoweringError("noop_with_empty_axes reductions are not lowered")
                axes = list(range(rank))
            norm = set()
            for a in axes:
                if not -rank <= a < max(rank, 1):
                    raise LoweringError(f"reduction axis {a} out of range for rank {rank}")
                norm.add(a % rank if rank else 0)
            self.red = _Reduction(red.op_type, red.inputs[0], red.outputs[0], tuple(sorted(norm)),
                                  bool(int(red.attrs.get("keepdims", 1))))
        for o in self.out_names:
            if self.red is not None and o == self.red.output:
                continue
            shape = _check_type("region output", self.types.get(o))[1]
            if shape != self.domain:
                raise LoweringError(f"an output has shape {shape}, not the domain {self.domain}")
        for name in self.in_names:
            if name in self.consts and not self._used_as_data(name):
                continue
            _check_type("region input", self.types.get(name))

    def _used_as_data(self, name: str) -> bool:
        for n in self.body.nodes:
            ins = n.inputs[:1] if n.op_type in _REDUCE else n.inputs
            if name in ins:
                return True
        return False

    def _axes(self, red) -> list[int]:
        if "axes" in red.attrs:
            return [int(a) for a in red.attrs["axes"]]
        if len(red.inputs) > 1 and red.inputs[1]:
            c = self.consts.get(red.inputs[1])
            if c is None:
                raise LoweringError("reduction axes are not known at compile time "
                                    "(pass the axes array in input_types)")
            return [int(a) for a in np.asarray(c).reshape(-1)]
        return []

    def loops(self):
        """(sizes, reduced flags, strides per operand) of the collapsed loop nest."""
        rank, dom = len(self.domain), self.domain
        ops = {}
        for k, name in enumerate(self.in_names):
            if self._used_as_data(name):
                ops[("in", k)] = _bstrides(self.types[name].shape, rank)
        red_axes = set(self.red.axes) if self.red else set()
        for j, name in enumerate(self.out_names):
            if self.red is not None and name == self.red.output:
                kept = tuple(1 if d in red_axes else n for d, n in enumerate(dom))
                ops[("out", j)] = [0 if d in red_axes else s for d, s in enumerate(_bstrides(kept, rank))]
            else:
                ops[("out", j)] = _cstrides(dom)
        dims = [(dom[d], d in red_axes, {k: st[d] for k, st in ops.items()})
                for d in range(rank) if dom[d] != 1]
        merged = []
        for size, red, st in dims:
            if merged:
                psize, pred, pst = merged[-1]
                if pred == red and all(pst[k] == st[k] * size for k in ops):
                    merged[-1] = (psize * size, red, st)
                    continue
            merged.append((size, red, st))
        if not merged:
            merged = [(1, False, {k: 0 for k in ops})]
        return merged, ops

    # -- emission -------------------------------------------------------------------------------
    def lower(self) -> str:
        self.analyse()
        loops, ops = self.loops()
        self.var: dict[str, str] = {}
        self.vdt: dict[str, np.dtype] = {}
        self.uses: set[str] = set()
        depth = len(loops)
        idx = [f"i{d}" for d in range(depth)]

        def offset(key) -> str:
            terms = [f"{idx[d]} * {loops[d][2][key]}" if loops[d][2][key] != 1 else idx[d]
                     for d in range(depth) if loops[d][2][key] != 0]
            return " + ".join(terms) if terms else "0"

        # inner body: loads, members, stores
        body: list[str] = []
        for k, name in enumerate(self.in_names):
            if ("in", k) not in ops:
                continue
            dt = np.dtype(self.types[name].dtype)
            load = f"x{k}[{offset(('in', k))}]"
            if dt == _F16:
                load = f"h2f({load})"
                self.uses.add("h2f")
            v = self._new(name, dt)
            body.append(f"{v} = {load}")
        for n in self.ew_nodes:
            body += self._emit(n)
        for j, name in enumerate(self.out_names):
            if self.red is not None and name == self.red.output:
                continue
            body.append(f"y{j}[{offset(('out', j))}] = {self._store(name)}")

        # the reduction
        prologue, epilogue = ["pass"], ["pass"]
        nest_pre, nest_post, reg_level = [], [], None
        mode = "none"
        if self.red is not None:
            j = self.out_names.index(self.red.output)
            src = self.red.value
            sdt = self.vdt[src]
            acc_t, init, comb, fin = self._reduce_parts(self.red.op, sdt, self._red_count())
            out_dt = np.dtype(self.types[self.red.output].dtype)
            reduced = [d for d, (_, r, _) in enumerate(loops) if r]
            if reduced == list(range(depth - len(reduced), depth)):
                mode = "register"  # reduced loops innermost: a scalar accumulator
                reg_level = depth - len(reduced)
                nest_pre = [f"acc = {init}"]
                body.append(f"acc = {comb('acc', self._conv(self.var[src], sdt, acc_t))}")
                nest_post = [f"y{j}[{offset(('out', j))}] = {self._store_expr(fin('acc'), acc_t, out_dt)}"]
            else:
                mode = "memory"
                size = int(np.prod([n for d, n in enumerate(self.domain) if d not in self.red.axes]))
                prologue = [f"acc = np.empty({size}, {_ctor(acc_t)})",
                            f"for r in range({size}):", f"    acc[r] = {init}"]
                o = offset(("out", j))
                body.append(f"acc[{o}] = {comb(f'acc[{o}]', self._conv(self.var[src], sdt, acc_t))}")
                epilogue = [f"for r in range({size}):",
                            f"    y{j}[r] = {self._store_expr(fin('acc[r]'), acc_t, out_dt)}"]

        # the nest
        lines: list[str] = []
        for d, (size, red, _) in enumerate(loops):
            if mode == "register" and d == reg_level:
                lines += ["    " * d + s for s in nest_pre]
            lines.append("    " * d + f"for {idx[d]} in range({size}):  # {'reduced' if red else 'kept'}")
        if mode == "register" and reg_level == depth:
            lines += ["    " * depth + s for s in nest_pre]
        lines += ["    " * depth + s for s in body]
        if mode == "register":
            lines += ["    " * reg_level + s for s in nest_post]

        args = [f"in{k}" for k in range(len(self.in_names))] + [f"out{j}" for j in range(len(self.out_names))]
        views = []
        for k, name in enumerate(self.in_names):
            if ("in", k) in ops:
                views.append(f"x{k} = in{k}.reshape({int(np.prod(self.types[name].shape))})")
        for j, name in enumerate(self.out_names):
            views.append(f"y{j} = out{j}.reshape({int(np.prod(self.types[name].shape))})")
        imports = [f"from {mod} import {attr} as f_{key}" for key, (mod, attr) in sorted(self._funcs().items())]
        if self.uses:
            imports.append("from jitort.backends.cpu.codegen_elementwise import "
                           + ", ".join(sorted(self.uses)))
        params = [
            f"# DOMAIN    = {self.domain}",
            f"# LOOPS     = {[(s, r) for s, r, _ in loops]}",
            f"# STRIDES   = {[(f'{a}{b}', [st[(a, b)] for _, _, st in loops]) for a, b in ops]}",
            f"# DTYPES    = in {[np.dtype(self.types[n].dtype).name for n in self.in_names]}, "
            f"out {[np.dtype(self.types[n].dtype).name for n in self.out_names]}",
            f"# REDUCTION = {mode}" + (f" ({self.red.op} over domain axes {list(self.red.axes)})" if self.red else ""),
        ]
        for line in params + imports + views + lines + prologue + epilogue:
            _check_line(line)
        return render(TEMPLATE.read_text(), params="\n".join(params), imports="\n".join(imports) or "pass",
                      args=", ".join(args), views="\n".join(views) or "pass",
                      prologue="\n".join(prologue), loops="\n".join(lines), epilogue="\n".join(epilogue))

    def _red_count(self) -> int:
        return int(np.prod([self.domain[a] for a in self.red.axes])) if self.red.axes else 1

    def _funcs(self) -> dict[str, tuple[str, str]]:
        out = {}
        for key in sorted(self.func_keys):
            mod, _, attr = FUNCS[key].partition(":")
            if not (re.fullmatch(r"[A-Za-z_][\w.]*", mod) and re.fullmatch(r"[A-Za-z_]\w*", attr)):
                raise LoweringError(f"FUNCS[{key!r}] is not 'module:attribute'")
            out[key] = (mod, attr)
        return out

    # values
    def _new(self, name: str, dt: np.dtype) -> str:
        v = f"v{len(self.var)}"
        self.var[name] = v
        self.vdt[name] = dt
        return v

    def _store(self, name: str) -> str:
        return self._store_expr(self.var[name], self.vdt[name], np.dtype(self.types[name].dtype))

    def _store_expr(self, expr: str, src: np.dtype, dst: np.dtype) -> str:
        if dst == _F16:
            self.uses.add("f2h")
            return f"f2h({_ctor(_F32)}({expr}))"
        return self._conv(expr, _compute(src), dst)

    def _conv(self, v: str, src: np.dtype, dst: np.dtype) -> str:
        """v (computed as src) as dst's compute type (no float16 rounding)."""
        src, dst = _compute(src), _compute(dst)
        if src == dst:
            return v
        if dst == _BOOL:
            return f"({v} != 0)"
        return f"{_ctor(dst)}({v})"

    def _fn(self, key: str, dt: np.dtype) -> str:
        """The local name of FUNCS[key]; float32/float16 values use FUNCS[key + '_f32'] if set."""
        if _compute(dt) == _F32 and f"{key}_f32" in FUNCS:
            key = f"{key}_f32"
        self.func_keys.add(key)
        return f"f_{key}"

    def _emit(self, n) -> list[str]:
        key = (n.domain or "", n.op_type)
        if n.domain not in ("", "ai.onnx", "jitort") or key not in EMITTERS:
            raise LoweringError(f"no lowering for member op {n.domain + '::' if n.domain else ''}{n.op_type}")
        outs = [o for o in n.outputs if o]
        if len(outs) != 1 or n.outputs[0] != outs[0]:
            raise LoweringError(f"{n.op_type}: expected exactly one output")
        odt = _check_type(f"{n.op_type} output", self.types.get(outs[0]))[0]
        args = []
        for i in n.inputs:
            if not i:
                args.append(None)
                continue
            if i not in self.var:
                raise LoweringError(f"{n.op_type}: an input is not a region value")
            args.append((self.var[i], self.vdt[i]))
        expr = EMITTERS[key](self, n, args, odt)
        v = self._new(outs[0], odt)
        return [f"{v} = {expr}  # {key[1]}"]


def _check_line(line: str) -> None:
    """Defence in depth: generated lines hold only our own vocabulary."""
    if not re.fullmatch(r"[\w .,:#=()\[\]+\-*/%<>!&|^~'\"]*", line):
        raise LoweringError("internal: generated line has unexpected characters")


_Lowerer._reduce_parts = reduce_parts


# -- API -----------------------------------------------------------------------------------------
def lower_region(node, input_types) -> str:
    """Numba source (a module defining ``kernel(in0, .., out0, ..)``) for an ElementwiseRegion
    node with concrete input types. Raises LoweringError for what it does not cover."""
    return _Lowerer(node, list(input_types)).lower()


def region_output_types(node, input_types) -> list[TensorType]:
    """The concrete types of the region's outputs for ``input_types``."""
    L = _Lowerer(node, list(input_types))
    return [L.types[o] for o in L.out_names]


_COMPILED: dict[tuple, object] = {}


@functools.cache
def _generator_hash() -> str:
    """Hash of what a region module's compiled code depends on besides its own text (the scalar
    helpers it imports and inlines, the template): an edit there must not reuse old modules."""
    here = Path(__file__).resolve().parent
    return hash_files("", [here / "codegen_elementwise.py", here / "elementwise_emitters.py", here / "vecmath.py", TEMPLATE])


def compile_region(node, input_types, *, cache_dir: str | os.PathLike | None = None):
    """The njit-compiled kernel of ``lower_region`` (compiled lazily on first call). Identical
    sources share one module per process and cache dir. With ``cache_dir`` the source is written there as
    ``jitort_ew_<hash>.py`` and imported by name, so Numba's disk cache (``cache=True``) works
    across processes; without it the module is exec'd and recompiles in every process.

    The returned dispatcher carries ``output_types`` (list of TensorType) and ``source``."""
    source = lower_region(node, input_types)
    digest = hashlib.sha256((source + _generator_hash()).encode()).hexdigest()[:24]
    modname = f"jitort_ew_{digest}"
    key = (modname, None if cache_dir is None else str(cache_dir))
    fn = _COMPILED.get(key)
    if fn is None:
        mod = load_module(source, modname, None if cache_dir is None else os.fspath(cache_dir))
        raw = getattr(mod.kernel, "py_func", mod.kernel)
        fn = njit(error_model="numpy", fastmath=set(FASTMATH), cache=cache_dir is not None)(raw)
        mod.kernel = fn  # the module holds its dispatcher: the variant's kernel image keeps it
        kernel_image.attach(mod)  # and gives it its overloads in a later process
        fn.source = source
        _COMPILED[key] = fn
    else:
        note(modname)
    fn.output_types = region_output_types(node, input_types)
    return fn


def call_region(fn, *inputs) -> list[np.ndarray]:
    """Runs a compiled region kernel on arrays: makes them C-contiguous, passes float16 as
    uint16, allocates the outputs (``fn.output_types``) and returns them."""
    args = []
    for a in inputs:
        a = np.ascontiguousarray(a)
        args.append(a.view(np.uint16) if a.dtype == _F16 else a)
    outs = [np.empty(t.shape, t.dtype) for t in fn.output_types]
    fn(*args, *[o.view(np.uint16) if o.dtype == _F16 else o for o in outs])
    return outs


__all__ = [
    "FASTMATH",
    "FUNCS",
    "LoweringError",
    "call_region",
    "compile_region",
    "lower_region",
    "region_output_types",
    "render",
]
