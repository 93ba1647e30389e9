"""Per-op emitters of the elementwise-region generator: each turns one member node into a Numba
expression over scalar locals, in the value's compute type (see codegen_elementwise.py).

An emitter is ``fn(lowerer, node, [(var, dtype) | None], out_dtype) -> str``, registered in
``EMITTERS`` under (domain, op_type); ``reduce_parts`` gives a trailing reduction's accumulator.
Nothing from the model reaches the text: numbers pass through float/int and repr.
"""

from __future__ import annotations

import math

import numpy as np

_FLOATS = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}
_INTS = {np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64,
                               np.uint8, np.uint16, np.uint32, np.uint64)}
_BOOL = np.dtype(np.bool_)
SUPPORTED_DTYPES = frozenset(_FLOATS | _INTS | {_BOOL})
_F16, _F32, _F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)


class LoweringError(NotImplementedError):
    """The region (or one member) is outside what this generator covers: use the reference path."""



def _compute(dt: np.dtype) -> np.dtype:
    return _F32 if dt == _F16 else dt


def _ctor(dt: np.dtype) -> str:
    dt = np.dtype(dt)
    if dt == _BOOL:
        return "np.bool_"
    if dt not in SUPPORTED_DTYPES:
        raise LoweringError(f"dtype {dt} is not supported")
    return f"np.{_compute(dt).name}"


def _lit(value, dt: np.dtype) -> str:
    """A typed constant: ``np.float32(0.5)``; numbers only (attributes pass through float/int)."""
    dt = _compute(np.dtype(dt))
    if dt == _BOOL:
        return "True" if bool(value) else "False"
    if dt.kind == "f":
        x = float(value)
        s = "np.nan" if math.isnan(x) else ("np.inf" if x == math.inf else ("-np.inf" if x == -math.inf else repr(x)))
    else:
        s = repr(int(value))
    return f"{_ctor(dt)}({s})"


# -- member emitters: (lowerer, node, [(var, dtype) | None], out dtype) -> expression ---------------
EMITTERS: dict[tuple[str, str], object] = {}
_REDUCE = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"})


def _em(*names, domain=""):
    def deco(fn):
        for name in names:
            EMITTERS[(domain, name)] = fn
        return fn
    return deco


def _same(L, args, odt):
    """The arguments as the output's compute type."""
    return [None if a is None else L._conv(a[0], a[1], odt) for a in args]


def _float_only(n, odt):
    if odt.kind != "f":
        raise LoweringError(f"{n.op_type} on {odt} is not lowered")


def _t(odt) -> str:
    return _ctor(odt)


def _fattr(n, name, default) -> float:
    try:
        return float(n.attrs.get(name, default))
    except (TypeError, ValueError):
        raise LoweringError(f"{n.op_type}: attribute {name} is not a number") from None


def _max(a, b, dt):  # np.maximum: NaN propagates
    return f"({a} if ({a} >= {b} or {a} != {a}) else {b})" if _compute(dt).kind == "f" else f"({a} if {a} >= {b} else {b})"


def _min(a, b, dt):
    return f"({a} if ({a} <= {b} or {a} != {a}) else {b})" if _compute(dt).kind == "f" else f"({a} if {a} <= {b} else {b})"


@_em("Identity")
def _identity(L, n, args, odt):
    return L._conv(args[0][0], args[0][1], odt)


@_em("Add", "Sub", "Mul")
def _arith(L, n, args, odt):
    a, b = _same(L, args, odt)
    sym = {"Add": "+", "Sub": "-", "Mul": "*"}[n.op_type]
    if odt == _BOOL:
        raise LoweringError(f"{n.op_type} on bool")
    return f"{_t(odt)}({a} {sym} {b})"


@_em("Div")
def _div(L, n, args, odt):
    a, b = _same(L, args, odt)
    if odt.kind == "f":
        return f"{_t(odt)}({a} / {b})"
    if odt.kind == "i":
        L.uses.add("idiv")
        return f"{_t(odt)}(idiv({a}, {b}))"
    if odt.kind == "u":
        return f"{_t(odt)}({a} // {b})"
    raise LoweringError("Div on bool")


@_em("Mod")
def _mod(L, n, args, odt):
    a, b = _same(L, args, odt)
    fmod = int(n.attrs.get("fmod", 0))
    if odt.kind == "f":
        return f"{_t(odt)}({L._fn('fmod', odt)}({a}, {b}))" if fmod else f"{_t(odt)}({a} % {b})"
    if odt.kind in "iu":
        if fmod and odt.kind == "i":
            L.uses.add("cmod")
            return f"{_t(odt)}(cmod({a}, {b}))"
        return f"{_t(odt)}({a} % {b})"
    raise LoweringError("Mod on bool")


@_em("Pow")
def _pow(L, n, args, odt):
    (a, adt), (b, bdt) = args
    if odt.kind == "f":
        return f"{_t(odt)}({a} ** {L._conv(b, bdt, odt)})"
    if odt.kind in "iu" and bdt.kind in "iub":
        if odt == np.dtype(np.uint64):
            raise LoweringError("Pow on uint64")
        L.uses.add("ipow")
        return f"{_t(odt)}(ipow(np.int64({a}), np.int64({b})))"
    if odt.kind in "iu":
        return f"{_t(odt)}(np.float64({a}) ** np.float64({b}))"
    raise LoweringError("Pow on bool")


_CMP = {"Equal": "==", "Greater": ">", "Less": "<", "GreaterOrEqual": ">=", "LessOrEqual": "<="}


@_em(*_CMP)
def _compare(L, n, args, odt):
    (a, adt), (b, bdt) = args
    common = _compute(adt) if _compute(adt) == _compute(bdt) else np.result_type(_compute(adt), _compute(bdt))
    return f"({L._conv(a, adt, common)} {_CMP[n.op_type]} {L._conv(b, bdt, common)})"


@_em("And", "Or", "Xor")
def _logic(L, n, args, odt):
    a, b = [L._conv(v, dt, _BOOL) for v, dt in args]
    return f"({a} {dict(And='&', Or='|', Xor='^')[n.op_type]} {b})"


@_em("Not")
def _not(L, n, args, odt):
    return f"(not {L._conv(args[0][0], args[0][1], _BOOL)})"


@_em("BitwiseAnd", "BitwiseOr", "BitwiseXor")
def _bitwise(L, n, args, odt):
    a, b = _same(L, args, odt)
    return f"{_t(odt)}({a} {dict(BitwiseAnd='&', BitwiseOr='|', BitwiseXor='^')[n.op_type]} {b})"


@_em("BitwiseNot")
def _bitnot(L, n, args, odt):
    return f"{_t(odt)}(~{args[0][0]})"


@_em("BitShift")
def _bitshift(L, n, args, odt):
    a, b = _same(L, args, odt)
    bits = odt.itemsize * 8
    direction = n.attrs.get("direction")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    bad = f"({b} >= {bits} or {b} < 0)" if odt.kind == "i" else f"({b} >= {bits})"
    if direction == "LEFT":
        return f"({_lit(0, odt)} if {bad} else {_t(odt)}({a} << {b}))"
    if direction == "RIGHT":
        fill = f"({_lit(-1, odt)} if {a} < 0 else {_lit(0, odt)})" if odt.kind == "i" else _lit(0, odt)
        return f"({fill} if {bad} else {_t(odt)}({a} >> {b}))"
    raise LoweringError("BitShift: direction is neither LEFT nor RIGHT")


@_em("Where")
def _where(L, n, args, odt):
    (c, cdt), (a, adt), (b, bdt) = args
    return f"({L._conv(a, adt, odt)} if {L._conv(c, cdt, _BOOL)} else {L._conv(b, bdt, odt)})"


@_em("Cast", "CastLike")
def _cast(L, n, args, odt):
    v, dt = args[0]
    if odt == _F16 and dt != _F16:
        L.uses.add("r16")
        return f"r16({L._conv(v, dt, _F32)})"
    if _compute(dt).kind == "f" and odt.kind in "iu":
        # float -> int truncates (out-of-range and NaN are undefined, as in C and ONNX)
        return f"{_t(odt)}({v})"
    return L._conv(v, dt, odt)


_UNARY_FUNCS = {"Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Sin": "sin", "Cos": "cos", "Tan": "tan",
                "Asin": "asin", "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh",
                "Tanh": "tanh", "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh", "Erf": "erf",
                "Sigmoid": "sigmoid"}


@_em(*_UNARY_FUNCS)
def _unary_func(L, n, args, odt):
    _float_only(n, odt)
    return f"{_t(odt)}({L._fn(_UNARY_FUNCS[n.op_type], odt)}({args[0][0]}))"


@_em("Floor", "Ceil", "Round")
def _rounding(L, n, args, odt):
    _float_only(n, odt)
    return f"{_t(odt)}(np.{dict(Floor='floor', Ceil='ceil', Round='rint')[n.op_type]}({args[0][0]}))"


@_em("Reciprocal")
def _reciprocal(L, n, args, odt):
    _float_only(n, odt)
    return f"{_t(odt)}({_lit(1, odt)} / {args[0][0]})"


@_em("Abs")
def _abs(L, n, args, odt):
    v = args[0][0]
    return v if odt.kind in "ub" else f"{_t(odt)}(abs({v}))"


@_em("Neg")
def _neg(L, n, args, odt):
    if odt == _BOOL:
        raise LoweringError("Neg on bool")
    return f"{_t(odt)}(-{args[0][0]})"


@_em("Sign")
def _sign(L, n, args, odt):
    v = args[0][0]
    if odt == _BOOL:
        return v
    if odt.kind == "u":
        return f"({_lit(1, odt)} if {v} > 0 else {_lit(0, odt)})"
    return f"({_lit(1, odt)} if {v} > 0 else ({_lit(-1, odt)} if {v} < 0 else {v}))"


@_em("IsNaN")
def _isnan(L, n, args, odt):
    v, dt = args[0]
    return f"({v} != {v})" if _compute(dt).kind == "f" else "False"


@_em("IsInf")
def _isinf(L, n, args, odt):
    v, dt = args[0]
    if _compute(dt).kind != "f":
        return "False"
    neg, pos = int(n.attrs.get("detect_negative", 1)), int(n.attrs.get("detect_positive", 1))
    parts = ([f"{v} == -np.inf"] if neg else []) + ([f"{v} == np.inf"] if pos else [])
    return f"({' or '.join(parts)})" if parts else "False"


@_em("Relu")
def _relu(L, n, args, odt):
    v = args[0][0]
    if odt.kind == "u":
        return v
    return f"({_lit(0, odt)} if {v} < 0 else {v})"


@_em("LeakyRelu")
def _leaky(L, n, args, odt):
    _float_only(n, odt)
    v = args[0][0]
    return f"({_t(odt)}({v} * {_lit(_fattr(n, 'alpha', 0.01), odt)}) if {v} < 0 else {v})"


@_em("PRelu")
def _prelu(L, n, args, odt):
    v, s = _same(L, args, odt)
    return f"({_t(odt)}({v} * {s}) if {v} < 0 else {v})"


@_em("Elu", "Selu", "Celu", "ThresholdedRelu", "HardSigmoid", "HardSwish", "Softplus", "Softsign",
     "Mish", "Swish", "Shrink", "Clip")
def _activation(L, n, args, odt):
    if n.op_type != "Clip":
        _float_only(n, odt)
    v, t = args[0][0], _t(odt)
    c = lambda x: _lit(x, odt)
    a = lambda name, d: c(_fattr(n, name, d))
    op = n.op_type
    if op == "Elu":
        return f"({v} if {v} > 0 else {t}({L._fn('expm1', odt)}({v}) * {a('alpha', 1.0)}))"
    if op == "Selu":
        g, al = a("gamma", 1.05070102214813232421875), a("alpha", 1.67326319217681884765625)
        return f"{t}({g} * ({v} if {v} > 0 else {t}({al} * {L._fn('expm1', odt)}({v}))))"
    if op == "Celu":
        al = a("alpha", 1.0)
        m = f"{t}({al} * {L._fn('expm1', odt)}({t}({v} / {al})))"
        return f"{t}({_max(v, c(0), odt)} + {_min(c(0), m, odt)})"
    if op == "ThresholdedRelu":
        return f"({v} if {v} > {a('alpha', 1.0)} else {c(0)})"
    if op in ("HardSigmoid", "HardSwish"):
        al, be = (a("alpha", 0.2), a("beta", 0.5)) if op == "HardSigmoid" else (c(1.0 / 6.0), c(0.5))
        h = _min(_max(f"{t}({v} * {al} + {be})", c(0), odt), c(1), odt)
        return f"{t}({h})" if op == "HardSigmoid" else f"{t}({v} * {h})"
    if op in ("Softplus", "Mish"):
        sp = f"{t}({_max(v, c(0), odt)} + {L._fn('log1p', odt)}({L._fn('exp', odt)}(-abs({v}))))"
        return sp if op == "Softplus" else f"{t}({v} * {L._fn('tanh', odt)}({sp}))"
    if op == "Softsign":
        return f"{t}({v} / ({c(1)} + abs({v})))"
    if op == "Swish":
        return f"{t}({v} * {L._fn('sigmoid', odt)}({t}({v} * {a('alpha', 1.0)})))"
    if op == "Shrink":
        lam, bias = _fattr(n, "lambd", 0.5), _fattr(n, "bias", 0.0)
        return (f"({t}({v} + {c(bias)}) if {v} < {c(-lam)} else "
                f"({t}({v} - {c(bias)}) if {v} > {c(lam)} else {c(0)}))")
    # Clip (opset >= 11): optional min/max inputs
    out = v
    if len(args) > 1 and args[1] is not None:
        out = _max(out, L._conv(args[1][0], args[1][1], odt), odt)
    if len(args) > 2 and args[2] is not None:
        out = _min(out, L._conv(args[2][0], args[2][1], odt), odt)
    return out


@_em("Sum", "Mean", "Max", "Min")
def _variadic(L, n, args, odt):
    vs = _same(L, args, odt)
    acc = vs[0]
    for b in vs[1:]:
        if n.op_type in ("Sum", "Mean"):
            acc = f"{_t(odt)}({acc} + {b})"
        else:
            acc = (_max if n.op_type == "Max" else _min)(acc, b, odt)
    if n.op_type == "Mean" and len(vs) > 1:
        acc = f"{_t(odt)}({acc} / {_lit(len(vs), odt)})" if odt.kind == "f" else f"{_t(odt)}({acc} // {len(vs)})"
    return acc


def _gelu(L, n, args, odt):
    _float_only(n, odt)
    v, t = args[0][0], _t(odt)
    approx = n.attrs.get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    c = lambda x: _lit(x, odt)
    if approx == "tanh":
        inner = f"{t}({c(math.sqrt(2.0 / math.pi))} * ({v} + {c(0.044715)} * {v} * {v} * {v}))"
        return f"{t}({c(0.5)} * {v} * ({c(1)} + {L._fn('tanh', odt)}({inner})))"
    if approx != "none":
        raise LoweringError("Gelu: approximate is neither 'none' nor 'tanh'")
    return f"{t}({c(0.5)} * {v} * ({c(1)} + {L._fn('erf', odt)}({t}({v} * {c(1.0 / math.sqrt(2.0))}))))"


EMITTERS[("", "Gelu")] = _gelu
EMITTERS[("jitort", "Gelu")] = _gelu


# -- reductions: (accumulator dtype, init, combine(acc, v), finish(acc)) ------------------------------
def reduce_parts(self, op: str, dt: np.dtype, count: int):
    cdt = _compute(dt)
    if op in ("ReduceSum", "ReduceMean"):
        if cdt == _BOOL:
            raise LoweringError(f"{op} on bool")
        acc = cdt if cdt.kind == "f" else np.dtype(np.uint64 if cdt.kind == "u" else np.int64)
        comb = lambda a, v: f"{_ctor(acc)}({a} + {v})"
        if op == "ReduceSum":
            return acc, _lit(0, acc), comb, lambda a: a
        if cdt.kind == "f":
            return acc, _lit(0, acc), comb, lambda a: f"{_ctor(acc)}({a} / {_lit(count, acc)})"
        if count == 0:
            return acc, _lit(0, acc), comb, lambda a: _lit(0, acc)
        if cdt.kind == "u":
            return acc, _lit(0, acc), comb, lambda a: f"{_ctor(acc)}({a} // {_lit(count, acc)})"
        self.uses.add("idiv")
        return acc, _lit(0, acc), comb, lambda a: f"idiv({a}, {_lit(count, acc)})"
    is_max = op == "ReduceMax"
    if cdt == _BOOL:
        return cdt, _lit(not is_max, cdt), (lambda a, v: f"({a} | {v})") if is_max else (lambda a, v: f"({a} & {v})"), lambda a: a
    if cdt.kind == "f":
        init = _lit(-math.inf if is_max else math.inf, cdt)
        if is_max:
            return cdt, init, lambda a, v: f"({v} if ({v} > {a} or {v} != {v}) else {a})", lambda a: a
        return cdt, init, lambda a, v: f"({v} if ({v} < {a} or {v} != {v}) else {a})", lambda a: a
    info = np.iinfo(cdt)
    init = _lit(info.min if is_max else info.max, cdt)
    cmp = ">" if is_max else "<"
    return cdt, init, lambda a, v: f"({v} if {v} {cmp} {a} else {a})", lambda a: a
