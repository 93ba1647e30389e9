"""Vector row operations for the fused attention kernel (``attention.py`` uses them): LLVM
vector IR through Numba intrinsics.

``_V`` emits the IR of one intrinsic body (<_VW x float> loads and stores with one masked tail,
FMA, shuffle-tree reductions and transposes, the float32 exp); ``_rowop`` turns an ``emit(V)``
into an intrinsic callable from njit code. The intrinsics: ``_vfill``, ``_vscale``, ``_vcopy``;
``_vdots`` (rows-path scores) and ``_vaxpy`` (rows-path acc += P V); ``_vktrans`` (K rows into
packed [d][_NR] panels); ``_vsoftmax`` / ``_vsoftmax_mr`` (the online-softmax update of one / MR
query rows). The tile geometry they bake in (_VW, MR, _NR) is defined here and imported by
attention.py.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .gemm import host_vector_width

_VW = host_vector_width()           # floats per vector: 16 AVX-512, 8 AVX2, 4 SSE
MR = 6                              # query rows per micro-block (tile height)
_NR = 64 if _VW == 16 else 16       # tile width: keys (QK) / value columns (PV)


# -- vector row operations: LLVM vector IR through Numba intrinsics ------------------------------
# Each takes float32 arrays (only their data pointers are used) with element offsets and runtime
# lengths, and runs whole <_VW x float> vectors plus one masked tail. No Numba array views: each
# view costs an atomic incref/decref pair, which took ~20% of the time in profiles; and full-width
# vectors: LLVM's loop vectorizer stops at 256 bits on these Intel hosts. No bounds checks: the
# callers pass valid ranges.

_LI32 = ir.IntType(32)
_LI64 = ir.IntType(64)
# exp (see _V.exp): float32 values as Python floats
_EXP_HI, _EXP_LO = 89.0, -104.0
_LOG2E = float(np.float32(1.4426950408889634))
_LN2_HI = 0.693145751953125                  # 15 significant bits: k * _LN2_HI is exact
_LN2_LO = float(np.float32(1.4286067653302226e-06))
_EXP_E = tuple(float(np.float32(c)) for c in (0.5, 0.16666578, 0.04166685, 0.00836314, 0.00139013))


def _arrays(*tys):
    return all(isinstance(t, types.Array) and t.dtype == types.float32 for t in tys)


def _ints(*tys):
    return all(isinstance(t, (types.Integer, types.Boolean)) for t in tys)


def _float(t):
    return isinstance(t, (types.Float, types.Integer))


class _V:
    """IR emission for one intrinsic body: <_VW x float> vectors, loops with a masked tail."""

    def __init__(self, context, builder, sig, args):
        self.c, self.b, self.sig, self.args = context, builder, sig, args
        self.vt = ir.VectorType(ir.FloatType(), _VW)
        self.it = ir.VectorType(_LI32, _VW)
        self.mt = ir.VectorType(ir.IntType(1), _VW)
        self.undef = ir.Constant(self.vt, ir.Undefined)

    # -- arguments --
    def ptr(self, ia, io):
        """float* into array argument ia at the element offset in argument io."""
        arr = cgutils.create_struct_proxy(self.sig.args[ia])(self.c, self.b, value=self.args[ia])
        return self.b.gep(arr.data, [self.i64(io)])

    def i64(self, i):
        return self.c.cast(self.b, self.args[i], self.sig.args[i], types.int64)

    def f32(self, i):
        return self.c.cast(self.b, self.args[i], self.sig.args[i], types.float32)

    # -- values --
    def splat(self, x, ty=None):
        ty = ty or self.vt
        if not isinstance(x, ir.Value):
            return ir.Constant(ty, [x] * _VW)
        u = self.b.insert_element(ir.Constant(ty, ir.Undefined), x, ir.Constant(_LI32, 0))
        return self.b.shuffle_vector(u, ir.Constant(ty, ir.Undefined), ir.Constant(self.it, [0] * _VW))

    def shuffle(self, a, b, idx):
        return self.b.shuffle_vector(a, b, ir.Constant(self.it, list(idx)))

    def fn(self, name, ret, params):
        return cgutils.get_or_insert_function(self.b.module, ir.FunctionType(ret, params), name)

    def mask(self, rem):
        """lane < rem (an i64 >= 0)."""
        r = self.splat(self.b.trunc(self.b.select(self.b.icmp_signed(">", rem, ir.Constant(_LI64, _VW)),
                                                  ir.Constant(_LI64, _VW), rem), _LI32), self.it)
        return self.b.icmp_signed("<", ir.Constant(self.it, list(range(_VW))), r)

    def load(self, p, i, mask=None, passthru=None):
        p = self.b.bitcast(self.b.gep(p, [i]), self.vt.as_pointer())
        if mask is None:
            return self.b.load(p, align=4)
        f = self.fn(f"llvm.masked.load.v{_VW}f32.p0", self.vt, [self.vt.as_pointer(), _LI32, self.mt, self.vt])
        return self.b.call(f, [p, ir.Constant(_LI32, 4), mask,
                               passthru if passthru is not None else ir.Constant(self.vt, None)])

    def store(self, v, p, i, mask=None):
        p = self.b.bitcast(self.b.gep(p, [i]), self.vt.as_pointer())
        if mask is None:
            self.b.store(v, p, align=4)
            return
        f = self.fn(f"llvm.masked.store.v{_VW}f32.p0", ir.VoidType(),
                    [self.vt, self.vt.as_pointer(), _LI32, self.mt])
        self.b.call(f, [v, p, ir.Constant(_LI32, 4), mask])

    def fma(self, a, x, y):
        return self.b.call(self.fn(f"llvm.fma.v{_VW}f32", self.vt, [self.vt] * 3), [a, x, y])

    def vmax(self, a, x):
        return self.b.select(self.b.fcmp_ordered(">", a, x), a, x)

    def hreduce(self, v, op):
        """op-fold of v's lanes by a shuffle tree -> scalar."""
        w = _VW // 2
        while w >= 1:
            v = op(v, self.shuffle(v, self.undef, [(i + w) % _VW for i in range(_VW)]))
            w //= 2
        return self.b.extract_element(v, ir.Constant(_LI32, 0))

    def transpose_sum(self, vecs):
        """[v_0 .. v_VW-1] -> one vector whose lane r is the sum of v_r's lanes: pairwise
        half-swaps and adds (VW - 1 adds), tracking which vector each lane belongs to."""
        items = [(v, [r] * _VW) for r, v in enumerate(vecs)]
        g = _VW
        while len(items) > 1:
            nxt = []
            for (a, oa), (b, ob) in zip(items[0::2], items[1::2]):
                h = g // 2
                lo, hi, own = [], [], []
                for o, off in ((oa, 0), (ob, _VW)):
                    for s in range(0, _VW, g):
                        lo += [off + s + t for t in range(h)]
                        hi += [off + s + h + t for t in range(h)]
                        own += [o[s]] * h
                nxt.append((self.b.fadd(self.shuffle(a, b, lo), self.shuffle(a, b, hi)), own))
            items, g = nxt, g // 2
        v, own = items[0]
        return self.shuffle(v, self.undef, [own.index(r) for r in range(_VW)])

    def transpose(self, rows):
        """VW x VW transpose of a list of VW vectors (log2 VW levels of block swaps)."""
        m = list(rows)
        blk = 1
        while blk < _VW:
            for r in range(_VW):
                if not r & blk:
                    a, b = m[r], m[r + blk]
                    m[r] = self.shuffle(a, b, [i if not i & blk else _VW + i - blk for i in range(_VW)])
                    m[r + blk] = self.shuffle(a, b, [i + blk if not i & blk else _VW + i for i in range(_VW)])
            blk *= 2
        return m

    def exp(self, x, flush=None):
        """e^x (float32 lanes, max error 1.3 ulp, denormal results included; nan -> nan): x is
        clamped to [-104, 89], k = rint(x / ln2), r = x - k ln2 in two FMA steps (Cody-Waite),
        e^r = 1 + r + r^2 E(r), scaled by 2^k as two normal factors 2^(k>>1) 2^(k-(k>>1)) so
        that overflow and gradual underflow round once. The polynomial of vecmath.exp at HEAD
        4a6c702 (its constants are here: vecmath's internals change on their own schedule).
        With ``flush``: e^x = 0 for x < flush (no denormal results: each one costs a microcode
        assist of ~100 cycles on Intel cores, measured as half the exp loop's time here)."""
        b, s = self.b, self.splat
        hi, lo = s(_EXP_HI), s(flush if flush is not None else _EXP_LO)
        xc = b.select(b.fcmp_ordered("<", x, hi), x, hi)
        xc = b.select(b.fcmp_ordered(">", xc, lo), xc, lo)
        k = b.call(self.fn(f"llvm.rint.v{_VW}f32", self.vt, [self.vt]), [b.fmul(xc, s(_LOG2E))])
        nk = b.fneg(k)
        r = self.fma(nk, s(_LN2_HI), xc)
        r = self.fma(nk, s(_LN2_LO), r)
        p = self.fma(r, s(_EXP_E[4]), s(_EXP_E[3]))
        for c in _EXP_E[2::-1]:
            p = self.fma(r, p, s(c))
        p = self.fma(b.fmul(r, r), p, b.fadd(s(1.0), r))
        ki = b.fptosi(k, self.it)
        k1 = b.ashr(ki, s(1, self.it))
        k2 = b.sub(ki, k1)
        s1 = b.bitcast(b.shl(b.add(k1, s(127, self.it)), s(23, self.it)), self.vt)
        s2 = b.bitcast(b.shl(b.add(k2, s(127, self.it)), s(23, self.it)), self.vt)
        y = b.fmul(b.fmul(p, s1), s2)
        if flush is not None:  # x < flush -> 0 without ever forming a denormal
            y = b.select(b.fcmp_ordered("<", x, lo), ir.Constant(self.vt, None), y)
        return b.select(b.fcmp_ordered("ord", x, x), y, x)

    # -- loops --
    def loop(self, n, step, init=(), stride=_VW, tail=True):
        """for i = 0, stride, ... < n: carried = step(i, mask, carried); with ``tail`` the last,
        partial chunk runs with mask = lane < n - i (full chunks: mask None), else chunks run
        while i < n with mask None. -> the final carried values."""
        b = self.b
        entry = b.basic_block
        head, body, rest, done = (b.append_basic_block(x) for x in ("v.head", "v.body", "v.rest", "v.done"))
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(_LI64)
        car = [b.phi(v.type) for v in init]
        i.add_incoming(ir.Constant(_LI64, 0), entry)
        for c, v in zip(car, init):
            c.add_incoming(v, entry)
        inext = b.add(i, ir.Constant(_LI64, stride))
        go = b.icmp_signed("<=", inext, n) if tail else b.icmp_signed("<", i, n)
        b.cbranch(go, body, rest)
        b.position_at_end(body)
        new = step(i, None, car)
        i.add_incoming(inext, b.basic_block)
        for c, v in zip(car, new):
            c.add_incoming(v, b.basic_block)
        b.branch(head)
        b.position_at_end(rest)
        if not tail:
            b.branch(done)
            b.position_at_end(done)
            return car
        rem = b.sub(n, i)
        tbody = b.append_basic_block("v.tail")
        b.cbranch(b.icmp_signed(">", rem, ir.Constant(_LI64, 0)), tbody, done)
        b.position_at_end(tbody)
        tnew = step(i, self.mask(rem), car)
        tend = b.basic_block
        b.branch(done)
        b.position_at_end(done)
        out = []
        for c, v in zip(car, tnew):
            ph = b.phi(c.type)
            ph.add_incoming(c, rest)
            ph.add_incoming(v, tend)
            out.append(ph)
        return out


def _rowop(kinds, ret=types.void):
    """Make an intrinsic of ``emit(V) -> value`` typed by ``kinds`` ('a' float32 array, 'i' int,
    'f' float or int) for each argument."""
    def deco(emit):
        def typer(args):
            ok = {"a": _arrays, "i": _ints, "f": _float}
            if not all(ok[k](t) for k, t in zip(kinds, args)):
                return None

            def codegen(context, builder, sig, cargs):
                v = emit(_V(context, builder, sig, cargs))
                return context.get_dummy_value() if v is None else v

            return ret(*args), codegen

        # Numba lowers no *args in an intrinsic: spell the parameters out (a fixed template)
        names = ", ".join(f"x{i}" for i in range(len(kinds)))
        scope = {"typer": typer}
        exec(f"def {emit.__name__}(typingctx, {names}):\n    return typer(({names},))", scope)
        return intrinsic(scope[emit.__name__])
    return deco


@_rowop("aiif")
def _vfill(V):
    """_vfill(a, off, n, x): a[off:off+n] = x."""
    p, x = V.ptr(0, 1), V.splat(V.f32(3))

    def step(i, m, c):
        V.store(x, p, i, m)
        return []

    V.loop(V.i64(2), step)


@_rowop("aiaiif")
def _vscale(V):
    """_vscale(d, doff, s, soff, n, x): d[doff:doff+n] = s[soff:soff+n] * x (may be in place)."""
    pd, ps, x = V.ptr(0, 1), V.ptr(2, 3), V.splat(V.f32(5))

    def step(i, m, c):
        V.store(V.b.fmul(V.load(ps, i, m), x), pd, i, m)
        return []

    V.loop(V.i64(4), step)


@_rowop("aiaii")
def _vcopy(V):
    """_vcopy(d, doff, s, soff, n): d[doff:doff+n] = s[soff:soff+n]."""
    pd, ps = V.ptr(0, 1), V.ptr(2, 3)

    def step(i, m, c):
        V.store(V.load(ps, i, m), pd, i, m)
        return []

    V.loop(V.i64(4), step)


def _both(V, flag, emit):
    """emit(True) under flag != 0, emit(False) otherwise: two loop versions, no branch inside."""
    with V.b.if_else(V.b.icmp_signed("!=", flag, ir.Constant(_LI64, 0))) as (yes, no):
        with yes:
            emit(True)
        with no:
            emit(False)


def _group_rows(V, base, g0, last, stride, partial):
    """Pointers to rows g0 .. g0+VW-1 of base (row stride ``stride``); in a ``partial`` group the
    rows past ``last`` re-read it: every load stays in bounds, their results are never stored."""
    b, rows = V.b, []
    first = b.gep(base, [b.mul(g0, stride)])
    for r in range(_VW):
        if not partial:
            rows.append(b.gep(first, [b.mul(ir.Constant(_LI64, r), stride)]))
            continue
        j = b.add(g0, ir.Constant(_LI64, r))
        j = b.select(b.icmp_signed(">", j, last), last, j)
        rows.append(b.gep(base, [b.mul(j, stride)]))
    return rows


@_rowop("aiaiaiiiiaiii")
def _vdots(V):
    """_vdots(s, soff, q, qoff, k, koff, ks, nk, d, c, coff, cs, copy): s[soff + j] = q[qoff:][:d] .
    k[koff + j*ks:][:d] for j < nk; with copy != 0 each K row is also stored to c[coff + j*cs:]
    (the present cache, written from the registers the product reads). VW keys at a time: one
    accumulator vector per key over the d chunks, then one transpose-and-add tree."""
    b = V.b
    ps, pq, pk, pc = V.ptr(0, 1), V.ptr(2, 3), V.ptr(4, 5), V.ptr(9, 10)
    ks, nk, d, cs = V.i64(6), V.i64(7), V.i64(8), V.i64(11)
    last = b.sub(nk, ir.Constant(_LI64, 1))

    def emit(copy):
        def group(g0, gmask, c):  # gmask: None for a full group of VW keys, else the valid ones
            rows = _group_rows(V, pk, g0, last, ks, gmask is not None)
            crows = _group_rows(V, pc, g0, last, cs, gmask is not None) if copy else None

            acc = []
            for r in range(_VW):  # row by row: each row is one sequential stream
                def chunk(i, m, a, r=r):
                    x = V.load(rows[r], i, m)
                    if copy:
                        V.store(x, crows[r], i, m)
                    return [V.fma(V.load(pq, i, m), x, a[0])]

                acc += V.loop(d, chunk, [V.splat(0.0)])
            V.store(V.transpose_sum(acc), ps, g0, gmask)
            return []

        V.loop(nk, group)

    _both(V, V.i64(12), emit)


@_rowop("aiaiaiiiiaiii")
def _vaxpy(V):
    """_vaxpy(acc, aoff, p, poff, v, voff, vs, nk, dv, c, coff, cs, copy): acc[aoff:][:dv] +=
    sum_j<nk p[poff+j] * v[voff + j*vs:][:dv]; with copy != 0 each V row is also stored to
    c[coff + j*cs:]. 4*VW columns of acc stay in registers over all the keys."""
    b = V.b
    pa, pp, pv, pc = V.ptr(0, 1), V.ptr(2, 3), V.ptr(4, 5), V.ptr(9, 10)
    vs, nk, dv, cs = V.i64(6), V.i64(7), V.i64(8), V.i64(11)
    zero = ir.Constant(_LI64, 0)

    def emit(copy):
        def cols(c0, _m, c):
            left = b.sub(dv, c0)
            masks = [V.mask(b.select(b.icmp_signed(">", x, zero), x, zero))
                     for x in (b.sub(left, ir.Constant(_LI64, q * _VW)) for q in range(4))]
            offs = [b.add(c0, ir.Constant(_LI64, q * _VW)) for q in range(4)]
            acc0 = [V.load(pa, offs[q], masks[q]) for q in range(4)]

            def key(j, _m2, acc):
                pj = V.splat(b.load(b.gep(pp, [j])))
                row = b.gep(pv, [b.mul(j, vs)])
                out = []
                for q in range(4):
                    x = V.load(row, offs[q], masks[q])
                    if copy:
                        V.store(x, b.gep(pc, [b.mul(j, cs)]), offs[q], masks[q])
                    out.append(V.fma(pj, x, acc[q]))
                return out

            acc = V.loop(nk, key, acc0, stride=1, tail=False)
            for q in range(4):
                V.store(acc[q], pa, offs[q], masks[q])
            return []

        V.loop(dv, cols, stride=4 * _VW, tail=False)

    _both(V, V.i64(12), emit)


@_rowop("aiaiiiiaiii")
def _vktrans(V):
    """_vktrans(dst, doff, src, soff, ss, nk, d, c, coff, cs, copy): dst[doff + e*_NR + j] =
    src[soff + j*ss + e] for j < nk (<= _NR minus doff's column), e < d: K rows into a packed
    [d][_NR] panel, VW x VW blocks transposed in registers; with copy != 0 each row is also
    stored to c[coff + j*cs:]."""
    b = V.b
    pd, ps, pc = V.ptr(0, 1), V.ptr(2, 3), V.ptr(7, 8)
    ss, nk, d, cs = V.i64(4), V.i64(5), V.i64(6), V.i64(9)
    last = b.sub(nk, ir.Constant(_LI64, 1))

    def emit(copy):
        def group(g0, kmask, c):  # kmask: None for a full group of VW keys, else the valid ones
            rows = _group_rows(V, ps, g0, last, ss, kmask is not None)
            crows = _group_rows(V, pc, g0, last, cs, kmask is not None) if copy else None

            def chunk(e0, m, c2):
                x = [V.load(rows[r], e0, m) for r in range(_VW)]
                if copy:
                    for r in range(_VW):
                        V.store(x[r], crows[r], e0, m)
                t = V.transpose(x)
                for e in range(_VW):  # dimension e0 + e: its VW keys (if e0 + e < d)
                    msk = kmask
                    if m is not None:
                        de = V.splat(b.extract_element(m, ir.Constant(_LI32, e)), V.mt)
                        msk = de if kmask is None else b.and_(kmask, de)
                    off = b.add(b.mul(b.add(e0, ir.Constant(_LI64, e)), ir.Constant(_LI64, _NR)), g0)
                    V.store(t[e], pd, off, msk)
                return []

            V.loop(d, chunk)
            return []

        V.loop(nk, group)

    _both(V, V.i64(10), emit)


def _softmax_rows(V, R):
    """The online-softmax update of R query rows' blocks of scores (see _vsoftmax), the rows
    interleaved in each loop so their dependency chains overlap. Arguments: (w, so, lds, nr, n,
    m, mb, msi, msj, lim, fill, imx, ils, iacc, lda, dv). -> 1 if row 0 had a finite score."""
    b = V.b
    f32, i64v = ir.FloatType(), ir.VectorType(_LI64, _VW)
    pw, pm = V.ptr(0, 1), V.ptr(5, 6)  # pm = m + mb (only read when mb >= 0)
    lds, nr, n, msi, msj, lim = V.i64(2), V.i64(3), V.i64(4), V.i64(7), V.i64(8), V.i64(9)
    fill, lda, dv, mb = V.splat(V.f32(10)), V.i64(14), V.i64(15), V.i64(6)
    c = lambda x: ir.Constant(_LI64, x)  # noqa: E731
    ninf, finf = V.splat(float("-inf")), ir.Constant(f32, float("-inf"))
    iota = ir.Constant(i64v, list(range(_VW)))
    rows = [b.gep(pw, [b.mul(c(r), lds)]) for r in range(R)]
    limv = [V.splat(b.add(lim, c(r)), i64v) for r in range(R)]
    last = b.sub(nr, c(1))  # rows past nr (tile padding) read the last real row's mask
    mrows = [b.gep(pm, [b.mul(b.select(b.icmp_signed(">", c(r), last), last, c(r)), msi)]) for r in range(R)]

    def pass1(kind):
        mone = [V.splat(b.load(mr)) for mr in mrows] if kind == "one" else None

        def step(i, msk, acc):
            idx = b.add(V.splat(i, i64v), iota)
            out = []
            for r in range(R):
                x = V.load(rows[r], i, msk, ninf)
                if kind == "row":
                    x = b.fadd(x, V.load(mrows[r], i, msk))
                elif kind == "one":
                    x = b.fadd(x, mone[r])
                x = b.select(b.icmp_signed(">", idx, limv[r]), fill, x)
                V.store(x, rows[r], i, msk)
                if msk is not None:
                    x = b.select(msk, x, ninf)
                out.append(V.vmax(x, acc[r]))
            return out

        return [V.hreduce(a, V.vmax) for a in V.loop(n, step, [ninf] * R)]

    # -- pass 1: mask, causal fill, row maxima (one loop per mask kind) --
    k_none, k_some, k_row, k_one, joined = (b.append_basic_block(x) for x in
                                            ("sm.none", "sm.some", "sm.row", "sm.one", "sm.p1"))
    b.cbranch(b.icmp_signed("<", mb, c(0)), k_none, k_some)
    b.position_at_end(k_some)
    b.cbranch(b.icmp_signed("==", msj, c(1)), k_row, k_one)
    results = []
    for blk, kind in ((k_none, "none"), (k_row, "row"), (k_one, "one")):
        b.position_at_end(blk)
        results.append((pass1(kind), b.basic_block))
        b.branch(joined)
    b.position_at_end(joined)
    bm = []
    for r in range(R):
        ph = b.phi(f32)
        for v, blk in results:
            ph.add_incoming(v[r], blk)
        bm.append(ph)

    # -- pass 2: P = exp(s - m'), m' = max(m, bm) (0 for an all -inf row: P = 0, no nan) --
    pmx = [b.gep(V.ptr(0, 11), [c(r)]) for r in range(R)]
    pls = [b.gep(V.ptr(0, 12), [c(r)]) for r in range(R)]
    mo = [b.load(p) for p in pmx]
    mn = [b.select(b.fcmp_ordered(">", x, y), x, y) for x, y in zip(bm, mo)]
    mns = [V.splat(b.select(b.fcmp_ordered("==", x, finf), ir.Constant(f32, 0.0), x)) for x in mn]

    def step2(i, msk, acc):
        out = []
        for r in range(R):
            e = V.exp(b.fsub(V.load(rows[r], i, msk, ninf), mns[r]), flush=-64.0)
            V.store(e, rows[r], i, msk)
            out.append(b.fadd(acc[r], e))
        return out

    tot = [V.hreduce(a, b.fadd) for a in V.loop(n, step2, [ir.Constant(V.vt, None)] * R)]
    # -- state: alpha = exp(m - m') for all rows in one vector; 1 when the max did not move --
    d = V.undef
    for r in range(R):
        d = b.insert_element(d, b.fsub(mo[r], mn[r]), ir.Constant(_LI32, r))
    ev = V.exp(d, flush=-64.0)
    for r in range(R):
        same = b.fcmp_ordered("==", mo[r], mn[r])
        alpha = b.select(same, ir.Constant(f32, 1.0), b.extract_element(ev, ir.Constant(_LI32, r)))
        b.store(b.fadd(b.fmul(b.load(pls[r]), alpha), tot[r]), pls[r])
        b.store(mn[r], pmx[r])
        with b.if_then(b.not_(same)):
            pa, av = b.gep(V.ptr(0, 13), [b.mul(c(r), lda)]), V.splat(alpha)

            def astep(i, msk, _c, pa=pa, av=av):
                V.store(b.fmul(V.load(pa, i, msk), av), pa, i, msk)
                return []
            V.loop(dv, astep)
    return b.zext(b.fcmp_ordered("!=", bm[0], finf), _LI64)


@_rowop("aiiiiaiiiifiiiii", types.int64)
def _vsoftmax(V):
    """_vsoftmax(w, so, lds, nr, n, m, mb, msi, msj, lim, fill, imx, ils, iacc, lda, dv) -> 1, or 0
    when every score is -inf: one query row's block of scores s = w[so:so+n] and its running
    state in w (max at imx, sum at ils, accumulator row at iacc:iacc+dv); lds, nr, msi, lda unused.

        pass 1: s += mask (m[mb + j], msj == 1; m[mb] for all j, msj == 0; none, mb < 0);
                s[j] = fill for j > lim (causal); bm = max s
        pass 2: s = exp(s - m') with m' = max(m, bm) (e^x < e^-64 flushed to 0); l' = l alpha + sum s,
                alpha = exp(m - m'); acc *= alpha
    """
    return _softmax_rows(V, 1)


@_rowop("aiiiiaiiiifiiiii", types.int64)
def _vsoftmax_mr(V):
    """_vsoftmax for the MR rows of a micro-block: row r's scores at so + r*lds, its mask at
    mb + min(r, nr-1)*msi, causal limit lim + r, state at imx + r, ils + r, iacc + r*lda. Rows
    r >= nr (tile padding) are updated too (on scratch nobody reads)."""
    return _softmax_rows(V, MR)
