"""LLVM IR for the NHWC conv kernels (``conv.py`` uses them): Numba intrinsics that the
generated conv modules call, built with llvmlite.

``copy_f32`` / ``zero_f32`` (the im2col patch gather's unrolled vector copies and memset),
``prefetch_rows`` (``llvm.prefetch`` of rows of lines), ``atomic_next`` (the work-item counter),
``conv_tile`` (``llvm_tile.gemm_tile``'s K loop with the FusedConv epilogue in registers),
``igemm_tile`` and ``addr_f32`` (the direct conv: the same tile reading the input in place through
an indirection table of row addresses) and ``dw_tile`` (the depthwise vector kernel). The epilogue flags they take (``_EP_BIAS``,
``_EP_RES``, ``_EP_LO``, ``_EP_HI``) are defined here and imported by conv.py, which generates
the calls. conv.py's generator hash covers this file, so a change here does not reuse modules
in a ``cache_dir`` compiled against the old IR.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


# -- copies for the patch gather -------------------------------------------------------------
_F32, _I32, _I64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)


def _vector_kit(builder, vw: int):
    """(float vector type, its pointer type, llvm.fma of it, splat(scalar) -> vector)."""
    vty = ir.VectorType(_F32, vw)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{vw}f32")
    undef = ir.Constant(vty, ir.Undefined)
    mask = ir.Constant(ir.VectorType(_I32, vw), [0] * vw)

    def splat(v):
        return builder.shuffle_vector(builder.insert_element(undef, v, ir.Constant(_I32, 0)), undef, mask)

    return vty, vty.as_pointer(), fma, splat


def _ptr(context, builder, ty, arr, off):
    """Pointer to element ``off`` (an i64 value) of the C-contiguous array value ``arr``."""
    data = cgutils.create_struct_proxy(ty)(context, builder, value=arr).data
    return builder.gep(data, [off])


def _is_f32_array(ty) -> bool:
    return isinstance(ty, types.Array) and ty.dtype == types.float32 and ty.layout == "C"


@intrinsic(prefer_literal=True)
def copy_f32(typingctx, dst, dst_off, src, src_off, n):
    """dst.flat[dst_off:dst_off + n] = src.flat[src_off:src_off + n]: with a literal n, unrolled
    unaligned vector loads and stores (16, 8, 4 floats, then scalars), else ``llvm.memcpy``. No
    bounds checks (the generator proves the ranges). A Numba loop over flat ``src[s + q]`` was not
    vectorized (unknown sign of s), slicing first cost ~15 cycles per slice (the 7x7x3 stem spent
    0.7 ms gathering), and ``llvm.memcpy`` of a constant 768 bytes became a libc call."""
    if not (_is_f32_array(dst) and _is_f32_array(src)):
        return None
    if not all(isinstance(t, types.Integer) for t in (dst_off, src_off, n)):
        return None

    def codegen(context, builder, sig, args):
        d, doff, s, soff, cnt = args
        i64 = [context.cast(builder, v, t, types.int64) for v, t in
               ((doff, sig.args[1]), (soff, sig.args[3]), (cnt, sig.args[4]))]
        dp = _ptr(context, builder, sig.args[0], d, i64[0])
        sp = _ptr(context, builder, sig.args[2], s, i64[1])
        if isinstance(sig.args[4], types.IntegerLiteral):  # unrolled unaligned vector moves
            done, left = 0, int(sig.args[4].literal_value)
            for width in (16, 8, 4, 1):
                ty = (_F32 if width == 1 else ir.VectorType(_F32, width)).as_pointer()
                while left >= width:
                    off = [ir.Constant(_I64, done)]
                    v = builder.load(builder.bitcast(builder.gep(sp, off), ty), align=4)
                    builder.store(v, builder.bitcast(builder.gep(dp, off), ty), align=4)
                    done, left = done + width, left - width
        else:
            cgutils.raw_memcpy(builder, dp, sp, i64[2], 4, align=4)
        return context.get_dummy_value()

    return types.void(dst, dst_off, src, src_off, n), codegen


@intrinsic(prefer_literal=True)
def zero_f32(typingctx, dst, dst_off, n):
    """dst.flat[dst_off:dst_off + n] = 0 as one ``llvm.memset``."""
    if not _is_f32_array(dst) or not all(isinstance(t, types.Integer) for t in (dst_off, n)):
        return None

    def codegen(context, builder, sig, args):
        d, doff, cnt = args
        doff, cnt = (context.cast(builder, v, t, types.int64) for v, t in ((doff, sig.args[1]), (cnt, sig.args[2])))
        ptr = _ptr(context, builder, sig.args[0], d, doff)
        cgutils.memset(builder, ptr, builder.mul(cnt, ir.Constant(cnt.type, 4)), 0)
        return context.get_dummy_value()

    return types.void(dst, dst_off, n), codegen


def _prefetch_rows(locality: int):
    def prefetch(typingctx, a, off, rows, LD, NLINES, WRITE):
        if not _is_f32_array(a) or not all(isinstance(t, types.Integer) for t in (off, rows)):
            return None
        lits = (LD, NLINES, WRITE)
        if not all(isinstance(t, types.IntegerLiteral) for t in lits):
            return None
        ld, nlines, write = (int(t.literal_value) for t in lits)
        sig = types.void(a, off, rows, *lits)

        def codegen(context, builder, sig, args):
            base = _ptr(context, builder, sig.args[0], args[0],
                        context.cast(builder, args[1], sig.args[1], types.int64))
            nrows = context.cast(builder, args[2], sig.args[2], types.int64)
            i8p = ir.IntType(8).as_pointer()
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32]),
                                                "llvm.prefetch.p0")
            with cgutils.for_range(builder, nrows) as loop:
                row = builder.gep(base, [builder.mul(loop.index, ir.Constant(_I64, ld))])
                for k in range(nlines):
                    ptr = builder.bitcast(builder.gep(row, [ir.Constant(_I64, 16 * k)]), i8p)
                    builder.call(fn, [ptr, ir.Constant(_I32, write), ir.Constant(_I32, locality),
                                      ir.Constant(_I32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch


#: prefetch_rows(a, off, rows, LD, NLINES, WRITE): prefetch NLINES 64-byte lines from each of
#: ``rows`` rows of a (row stride LD floats) starting at element ``off`` (``llvm.prefetch``,
#: WRITE: 1 to prefetch for a store). Into L1 (locality 3); ``prefetch_rows_l2`` into L2
#: (locality 2: the GEMM's next B slice, as large as L1 itself).
prefetch_rows = intrinsic(prefer_literal=True)(_prefetch_rows(3))
prefetch_rows_l2 = intrinsic(prefer_literal=True)(_prefetch_rows(2))


@intrinsic
def atomic_next(typingctx, counter, i):
    """counter[i] += 1 atomically; returns the old value (the work item this thread takes)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64
            and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _ptr(context, builder, sig.args[0], args[0],
                   context.cast(builder, args[1], sig.args[1], types.int64))
        return builder.atomic_rmw("add", ptr, ir.Constant(_I64, 1), "seq_cst")

    return types.int64(counter, i), codegen


#: Epilogue flags of conv_tile and dw_tile: bias, residual, clamp below, clamp above.
_EP_BIAS, _EP_RES, _EP_LO, _EP_HI = 1, 2, 4, 8


@intrinsic(prefer_literal=True)
def conv_tile(typingctx, a, a_off, b, b_off, c, c_off, kc, accumulate, bias, bias_off, res, res_off,
              lo, hi, MR, NR, LDA, LDC, NVALID, VW, FLAGS):
    """``llvm_tile.gemm_tile`` for the last K block of a tile, with the FusedConv epilogue applied
    in registers before the one store:

        C[0:MR, 0:NVALID] = clamp((C if accumulate) + A[0:MR, 0:kc] @ Bp[0:kc, 0:NVALID]
                                  + bias[bias_off:] + res[res_off + r*LDC:], lo, hi)

    (bias, residual, clamp below/above as FLAGS bits 1, 2, 4, 8 say; res has C's row stride).
    The same K loop as gemm_tile: MR * NR/VW ``phi <VW x float>`` accumulators, one broadcast of
    A per row and NR/VW loads of the packed B per k, ``llvm.fma``. Against gemm_tile followed by
    a Numba epilogue loop (which reloaded and stored the tile, behind runtime alias checks):
    56x56x256->64 + bias + Relu 0.635 -> 0.557 ms (min of 200), as fast as the bare GemmPlan."""
    arrays = (a, b, c, bias, res)
    if not all(_is_f32_array(t) for t in arrays):
        return None
    if not all(isinstance(t, types.Integer) for t in (a_off, b_off, c_off, kc, bias_off, res_off)):
        return None
    if not isinstance(accumulate, (types.Boolean, types.Integer)) or not all(
            isinstance(t, types.Float) for t in (lo, hi)):
        return None
    lits = (MR, NR, LDA, LDC, NVALID, VW, FLAGS)
    if not all(isinstance(t, types.IntegerLiteral) for t in lits):
        return None
    mr, nr, lda, ldc, nvalid, vw, flags = (int(t.literal_value) for t in lits)
    sig = types.void(a, a_off, b, b_off, c, c_off, kc, accumulate, bias, bias_off, res, res_off, lo, hi, *lits)

    def codegen(context, builder, sig, args):
        tys = sig.args
        i64 = lambda k: context.cast(builder, args[k], tys[k], types.int64)  # noqa: E731
        ap, bp, cp = (_ptr(context, builder, tys[k], args[k], i64(k + 1)) for k in (0, 2, 4))
        biasp = _ptr(context, builder, tys[8], args[8], i64(9))
        resp = _ptr(context, builder, tys[10], args[10], i64(11))
        kcount = i64(6)
        acc_flag = context.cast(builder, args[7], tys[7], types.boolean)
        vty, vptr, fma, splat = _vector_kit(builder, vw)
        c64 = lambda v: ir.Constant(_I64, v)  # noqa: E731

        nvec = -(-nvalid // vw)
        entry = builder.basic_block
        loop = builder.append_basic_block("ctile.kloop")
        done = builder.append_basic_block("ctile.done")
        builder.branch(loop)
        builder.position_at_end(loop)
        k = builder.phi(_I64)
        phis = [[builder.phi(vty) for _ in range(nvec)] for _ in range(mr)]
        brow = builder.gep(bp, [builder.mul(k, c64(nr))])
        bv = [builder.load(builder.bitcast(builder.gep(brow, [c64(v * vw)]), vptr), align=4) for v in range(nvec)]
        new = []
        for r in range(mr):
            av = splat(builder.load(builder.gep(ap, [builder.add(k, c64(r * lda))]), align=4))
            new.append([builder.call(fma, [av, bv[v], phis[r][v]]) for v in range(nvec)])
        k1 = builder.add(k, c64(1))
        builder.cbranch(builder.icmp_signed("<", k1, kcount), loop, done)
        k.add_incoming(c64(0), entry)
        k.add_incoming(k1, loop)
        for r in range(mr):
            for v in range(nvec):
                phis[r][v].add_incoming(ir.Constant(vty, None), entry)
                phis[r][v].add_incoming(new[r][v], loop)

        builder.position_at_end(done)
        _epilogue_store(context, builder, tys, args, new, cp, biasp, resp, acc_flag, splat, 12, mr, ldc, nvalid,
                        vty, flags)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def addr_f32(typingctx, arr, off):
    """The address (int64) of element ``off`` of the float32 array ``arr`` (igemm_tile's
    indirection entries)."""
    if not _is_f32_array(arr) or not isinstance(off, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _ptr(context, builder, sig.args[0], args[0], context.cast(builder, args[1], sig.args[1], types.int64))
        return builder.ptrtoint(ptr, _I64)

    return types.int64(arr, off), codegen


@intrinsic(prefer_literal=True)
def igemm_tile(typingctx, ind, ind_off, c0, b, b_off, c, c_off, ntaps, kc, accumulate, bias, bias_off, res,
               res_off, lo, hi, MR, NR, IND_LD, BTAP, LDC, NVALID, VW, FLAGS, UNROLL):
    """The direct (indirect-GEMM) conv tile: conv_tile's K loop with A read in place from the
    input through an indirection table instead of a gathered patch matrix:

        C[0:MR, 0:NVALID] = epilogue((C if accumulate)
            + sum_{t < ntaps, k < kc} A_t[r][c0 + k] * Bp[b_off + t*BTAP + k*NR + col])

    where A_t[r] is the float pointer held (as an int64 address, ``addr_f32``) in
    ind[ind_off + r*IND_LD + t]: the first channel of the input pixel that tap t of output pixel
    r reads, or a row of zeros for a tap outside the image; ntaps may be 0 (a tile whose taps
    of this block are all outside the image: the epilogue alone). The epilogue is conv_tile's (FLAGS:
    bias, residual, clamps; with FLAGS 0 and accumulate it is gemm_tile's store). Loops: taps
    outer (MR address loads each), K inner (unrolled UNROLL times: kc must be a multiple of it),
    the accumulators carried through both as phis."""
    if not (isinstance(ind, types.Array) and ind.dtype == types.int64 and ind.layout == "C"):
        return None
    if not all(_is_f32_array(t) for t in (b, c, bias, res)):
        return None
    if not all(isinstance(t, types.Integer) for t in (ind_off, c0, b_off, c_off, ntaps, kc, bias_off, res_off)):
        return None
    if not isinstance(accumulate, (types.Boolean, types.Integer)) or not all(
            isinstance(t, types.Float) for t in (lo, hi)):
        return None
    lits = (MR, NR, IND_LD, BTAP, LDC, NVALID, VW, FLAGS, UNROLL)
    if not all(isinstance(t, types.IntegerLiteral) for t in lits):
        return None
    mr, nr, ind_ld, btap, ldc, nvalid, vw, flags, unroll = (int(t.literal_value) for t in lits)
    sig = types.void(ind, ind_off, c0, b, b_off, c, c_off, ntaps, kc, accumulate, bias, bias_off, res, res_off,
                     lo, hi, *lits)

    def codegen(context, builder, sig, args):
        tys = sig.args
        i64 = lambda k: context.cast(builder, args[k], tys[k], types.int64)  # noqa: E731
        indp = builder.bitcast(_ptr(context, builder, tys[0], args[0], i64(1)), _I64.as_pointer())
        bp, cp, biasp, resp = (_ptr(context, builder, tys[k], args[k], i64(k + 1)) for k in (3, 5, 10, 12))
        coff, ntap, kcount = i64(2), i64(7), i64(8)
        acc_flag = context.cast(builder, args[9], tys[9], types.boolean)
        vty, vptr, fma, splat = _vector_kit(builder, vw)
        fptr = _F32.as_pointer()
        c64 = lambda v: ir.Constant(_I64, v)  # noqa: E731

        nvec = -(-nvalid // vw)
        entry = builder.basic_block
        tap = builder.append_basic_block("itile.tap")
        loop = builder.append_basic_block("itile.kloop")
        tend = builder.append_basic_block("itile.tapend")
        done = builder.append_basic_block("itile.done")
        builder.cbranch(builder.icmp_signed(">", ntap, c64(0)), tap, done)
        # -- per tap: the MR row pointers and the tap's B rows --
        builder.position_at_end(tap)
        t = builder.phi(_I64)
        tphis = [[builder.phi(vty) for _ in range(nvec)] for _ in range(mr)]
        rows = []
        for r in range(mr):
            a = builder.load(builder.gep(indp, [builder.add(t, c64(r * ind_ld))]), align=8)
            rows.append(builder.gep(builder.inttoptr(a, fptr), [coff]))
        bt = builder.gep(bp, [builder.mul(t, c64(btap))])
        builder.branch(loop)
        # -- K loop over the tap's channels --
        builder.position_at_end(loop)
        k = builder.phi(_I64)
        phis = [[builder.phi(vty) for _ in range(nvec)] for _ in range(mr)]
        new = phis
        for u in range(unroll):  # kc is a multiple of UNROLL
            ku = builder.add(k, c64(u)) if u else k
            brow = builder.gep(bt, [builder.mul(ku, c64(nr))])
            bv = [builder.load(builder.bitcast(builder.gep(brow, [c64(v * vw)]), vptr), align=4) for v in range(nvec)]
            acc = new
            new = []
            for r in range(mr):
                av = splat(builder.load(builder.gep(rows[r], [ku]), align=4))
                new.append([builder.call(fma, [av, bv[v], acc[r][v]]) for v in range(nvec)])
        k1 = builder.add(k, c64(unroll))
        builder.cbranch(builder.icmp_signed("<", k1, kcount), loop, tend)
        k.add_incoming(c64(0), tap)
        k.add_incoming(k1, loop)
        # -- next tap --
        builder.position_at_end(tend)
        t1 = builder.add(t, c64(1))
        builder.cbranch(builder.icmp_signed("<", t1, ntap), tap, done)
        t.add_incoming(c64(0), entry)
        t.add_incoming(t1, tend)
        for r in range(mr):
            for v in range(nvec):
                tphis[r][v].add_incoming(ir.Constant(vty, None), entry)
                tphis[r][v].add_incoming(new[r][v], tend)
                phis[r][v].add_incoming(tphis[r][v], tap)
                phis[r][v].add_incoming(new[r][v], loop)

        builder.position_at_end(done)  # ntaps == 0: zeros (the epilogue alone)
        out = [[builder.phi(vty) for _ in range(nvec)] for _ in range(mr)]
        for r in range(mr):
            for v in range(nvec):
                out[r][v].add_incoming(ir.Constant(vty, None), entry)
                out[r][v].add_incoming(new[r][v], tend)
        _epilogue_store(context, builder, tys, args, out, cp, biasp, resp, acc_flag, splat, 14, mr, ldc, nvalid,
                        vty, flags)
        return context.get_dummy_value()

    return sig, codegen


def _epilogue_store(context, builder, tys, args, new, cp, biasp, resp, acc_flag, splat, k_lo, mr, ldc,
                    nvalid, vty, flags):
    """Store the accumulators ``new`` [mr][nvec] to the tile at cp (row stride ldc): (+ C when
    acc_flag) + bias + residual (same row stride), clamped to [lo, hi] (args[k_lo], args[k_lo + 1])
    as the FLAGS bits say. Shared by conv_tile and igemm_tile."""
    vw = vty.count
    nvec = len(new[0])
    lov, hiv = (splat(context.cast(builder, args[k], tys[k], types.float32)) for k in (k_lo, k_lo + 1))
    bvec = [None] * nvec
    if flags & _EP_BIAS:
        bvec = [_load_cols(builder, biasp, v * vw, min(vw, nvalid - v * vw), vty) for v in range(nvec)]
    with builder.if_else(acc_flag) as (then, otherwise):
        for accumulate_c, block in ((True, then), (False, otherwise)):
            with block:
                for r in range(mr):
                    for v in range(nvec):
                        col, n = v * vw, min(vw, nvalid - v * vw)
                        x = new[r][v]
                        if accumulate_c:
                            x = builder.fadd(x, _load_cols(builder, cp, r * ldc + col, n, vty))
                        if flags & _EP_BIAS:
                            x = builder.fadd(x, bvec[v])
                        if flags & _EP_RES:
                            x = builder.fadd(x, _load_cols(builder, resp, r * ldc + col, n, vty))
                        if flags & _EP_LO:
                            x = builder.select(builder.fcmp_ordered(">", x, lov), x, lov)
                        if flags & _EP_HI:
                            x = builder.select(builder.fcmp_ordered("<", x, hiv), x, hiv)
                        _store_cols(builder, cp, r * ldc + col, n, x, vty)


def _load_cols(builder, base, off, n, vty):
    """n <= VW floats at base[off:] as a vector (a whole-vector load when n == VW, else lane by
    lane: no read past the row)."""
    if n == vty.count:
        return builder.load(builder.bitcast(builder.gep(base, [ir.Constant(_I64, off)]), vty.as_pointer()), align=4)
    v = ir.Constant(vty, None)
    for lane in range(n):
        x = builder.load(builder.gep(base, [ir.Constant(_I64, off + lane)]), align=4)
        v = builder.insert_element(v, x, ir.Constant(_I32, lane))
    return v


def _store_cols(builder, base, off, n, v, vty):
    if n == vty.count:
        builder.store(v, builder.bitcast(builder.gep(base, [ir.Constant(_I64, off)]), vty.as_pointer()), align=4)
        return
    for lane in range(n):
        builder.store(builder.extract_element(v, ir.Constant(_I32, lane)),
                      builder.gep(base, [ir.Constant(_I64, off + lane)]), align=4)


@intrinsic(prefer_literal=True)
def dw_tile(typingctx, x, x_off, w, w_off, b, b_off, z, z_off, y, y_off, iters, lo, hi,
            NI, NJ, XROW, XCOL, XPIX, WROW, YPIX, PU, NCB, VW, FLAGS):
    """Depthwise conv over ``iters * PU`` output pixels along a row and NCB blocks of VW channels:

        for p in range(iters * PU), for cb in range(NCB), c = cb * VW:
            acc = b[b_off + c :+VW] + sum_{ti < NI, tj < NJ}
                      x[x_off + p*XPIX + ti*XROW + tj*XCOL + c :+VW] * w[w_off + ti*WROW + tj*YPIX + c :+VW]
            acc += z[z_off + p*YPIX + c :+VW];  acc = min(max(acc, lo), hi)   (as FLAGS say)
            y[y_off + p*YPIX + c :+VW] = acc

    Pixels outer, channel blocks inner, so the input rows and the output row are read and
    written front to back (with the channel blocks outer a cold input was 2-3x slower: the
    prefetchers did not follow 16-float slices at a stride of C). Per (PU pixels, block) the
    NI*NJ weight vectors are loaded once and PU independent FMA chains run. Arrays: float32,
    C-contiguous (data pointers only, no bounds checks); offsets and iters runtime integers; lo,
    hi float32; the rest integer literals. FLAGS: 1 bias, 2 residual, 4 clamp below at lo, 8
    clamp above at hi."""
    if not all(_is_f32_array(t) for t in (x, w, b, z, y)):
        return None
    if not all(isinstance(t, types.Integer) for t in (x_off, w_off, b_off, z_off, y_off, iters)):
        return None
    if not all(isinstance(t, types.Float) for t in (lo, hi)):
        return None
    lits = (NI, NJ, XROW, XCOL, XPIX, WROW, YPIX, PU, NCB, VW, FLAGS)
    if not all(isinstance(t, types.IntegerLiteral) for t in lits):
        return None
    ni, nj, xrow, xcol, xpix, wrow, ypix, pu, ncb, vw, flags = (int(t.literal_value) for t in lits)
    sig = types.void(x, x_off, w, w_off, b, b_off, z, z_off, y, y_off, iters, lo, hi, *lits)

    def codegen(context, builder, sig, args):
        tys = sig.args
        i64 = lambda k: context.cast(builder, args[k], tys[k], types.int64)  # noqa: E731
        f32 = lambda k: context.cast(builder, args[k], tys[k], types.float32)  # noqa: E731
        xp, wp, bp, zp, yp = (_ptr(context, builder, tys[k], args[k], i64(k + 1)) for k in (0, 2, 4, 6, 8))
        vty, vptr, fma, splat = _vector_kit(builder, vw)
        c64 = lambda v: ir.Constant(_I64, v)  # noqa: E731

        def vload(base, off):
            return builder.load(builder.bitcast(builder.gep(base, [off]), vptr), align=4)

        taps = [(ti * xrow + tj * xcol, ti * wrow + tj * ypix) for ti in range(ni) for tj in range(nj)]
        lov, hiv = splat(f32(11)), splat(f32(12))
        with cgutils.for_range(builder, i64(10)) as outer:
            p0 = builder.mul(outer.index, c64(pu))
            xa = builder.gep(xp, [builder.mul(p0, c64(xpix))])
            ya = builder.mul(p0, c64(ypix))
            with cgutils.for_range(builder, c64(ncb)) as inner:
                c = builder.mul(inner.index, c64(vw))
                xc, wc = builder.gep(xa, [c]), builder.gep(wp, [c])
                wv = [vload(wc, c64(wo)) for _, wo in taps]
                bv = vload(bp, c) if flags & _EP_BIAS else ir.Constant(vty, None)
                for u in range(pu):
                    acc = bv
                    for k, (xo, _) in enumerate(taps):
                        acc = builder.call(fma, [vload(xc, c64(u * xpix + xo)), wv[k], acc])
                    yo = builder.add(builder.add(ya, c), c64(u * ypix))
                    if flags & _EP_RES:
                        acc = builder.fadd(acc, vload(zp, yo))
                    if flags & _EP_LO:
                        acc = builder.select(builder.fcmp_ordered(">", acc, lov), acc, lov)
                    if flags & _EP_HI:
                        acc = builder.select(builder.fcmp_ordered("<", acc, hiv), acc, hiv)
                    builder.store(acc, builder.bitcast(builder.gep(yp, [yo]), vptr), align=4)
        return context.get_dummy_value()

    return sig, codegen
