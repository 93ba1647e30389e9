"""The GEMM register tile, written as LLVM vector IR through a Numba intrinsic.

``gemm_tile(a, a_off, b, b_off, c, c_off, kc, accumulate, MR, NR, LDA, LDC, NVALID, VW)``
computes

    C[0:MR, 0:NVALID] (+)= A[0:MR, 0:kc] @ Bp[0:kc, 0:NVALID]

for one MR x NR tile, where (offsets in elements; arrays float32, C-contiguous, any rank: only
their data pointer is used):

    pointers   a (row-major A, row stride LDA), b (packed B panel: kc rows of NR floats),
               c (row-major C, row stride LDC)
    offsets    a_off, b_off, c_off: where the tile starts in each array
    sizes      kc (runtime, >= 1): the K extent of this block
    flags      accumulate (runtime bool): add into C instead of overwriting it
    meta       MR, NR, LDA, LDC, NVALID, VW: compile-time integer literals (VW the vector width
               in floats: 16 for AVX-512, 8 for AVX2; NR a multiple of VW,
               1 <= NVALID <= NR: columns past NVALID are neither loaded nor stored, so C need
               not be padded; the packed B must be zero-padded there)

The IR is one K loop carrying MR * NR/VW ``phi <VW x float>`` accumulators: per K step one
``<VW x float>`` load of B per vector column, one scalar load of A per row broadcast by
insertelement + shufflevector, and ``llvm.fma.v<VW>f32``. The accumulators plus NR/VW B vectors
and one broadcast must fit the register file (32 zmm / 16 ymm), or LLVM spills: on an AVX2
host a 16-wide tile is split in halves and runs ~10x slower (measured), hence VW. Row strides
are constants, so every A/C row address is an immediate displacement. After the loop the tile is stored with unaligned
vector stores (numpy buffers are only 16-byte aligned: an ``align 64`` load faults); a partial
last vector (NVALID not a multiple of VW) is stored lane by lane. Vectors wholly past NVALID are
not computed at all. The caller (a generated Numba driver) inlines it; LLVM unrolls the loop.

Pitfalls avoided (notes/cpu-gemm-threads.md): ``declare_intrinsic('llvm.fma', ...)`` fails in
llvmlite, so the FMA is declared by name; all PHIs come first in their block; alignment 4.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _literal(ty, name: str) -> int:
    if not isinstance(ty, types.IntegerLiteral):
        raise TypeError(f"gemm_tile: {name} must be an integer literal, got {ty}")
    return int(ty.literal_value)


def _f32_array(ty) -> bool:
    return isinstance(ty, types.Array) and ty.dtype == types.float32 and ty.layout == "C"


@intrinsic(prefer_literal=True)
def gemm_tile(typingctx, a, a_off, b, b_off, c, c_off, kc, accumulate, MR, NR, LDA, LDC, NVALID, VW):
    """Typing: checks the arrays and the literal meta-parameters; see the module docstring."""
    if not (_f32_array(a) and _f32_array(b) and _f32_array(c)):
        return None
    for off in (a_off, b_off, c_off, kc):
        if not isinstance(off, types.Integer):
            return None
    if not isinstance(accumulate, (types.Boolean, types.Integer)):
        return None
    mr, nr, lda, ldc, nvalid, vw = (_literal(t, n) for t, n in ((MR, "MR"), (NR, "NR"), (LDA, "LDA"),
                                                                 (LDC, "LDC"), (NVALID, "NVALID"), (VW, "VW")))
    if (vw not in (4, 8, 16) or mr < 1 or nr < vw or nr % vw or not 1 <= nvalid <= nr or lda < 1
            or ldc < nvalid):
        raise ValueError(f"gemm_tile: bad meta-parameters MR={mr} NR={nr} LDA={lda} LDC={ldc} "
                         f"NVALID={nvalid} VW={vw}")
    sig = types.void(a, a_off, b, b_off, c, c_off, kc, accumulate, MR, NR, LDA, LDC, NVALID, VW)

    def codegen(context, builder, signature, args):
        _emit_tile(context, builder, signature, args, mr, nr, lda, ldc, nvalid, vw)
        return context.get_dummy_value()

    return sig, codegen


def _data_ptr(context, builder, ty, val):
    return cgutils.create_struct_proxy(ty)(context, builder, value=val).data


def _emit_tile(context, builder, sig, args, mr, nr, lda, ldc, nvalid, vw):
    a_ty, _, b_ty, _, c_ty = sig.args[:5]
    a_arr, a_off, b_arr, b_off, c_arr, c_off, kc, acc_flag = args[:8]
    a_off, b_off, c_off, kc = (context.cast(builder, v, sig.args[i], types.int64)
                               for v, i in ((a_off, 1), (b_off, 3), (c_off, 5), (kc, 6)))
    acc_flag = context.cast(builder, acc_flag, sig.args[7], types.boolean)

    a_base = builder.gep(_data_ptr(context, builder, a_ty, a_arr), [a_off])
    b_base = builder.gep(_data_ptr(context, builder, b_ty, b_arr), [b_off])
    c_base = builder.gep(_data_ptr(context, builder, c_ty, c_arr), [c_off])
    nvec = (nvalid + vw - 1) // vw  # vectors that hold at least one valid column

    vty = ir.VectorType(_F32, vw)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                         f"llvm.fma.v{vw}f32")
    zero = ir.Constant(vty, None)
    undef = ir.Constant(vty, ir.Undefined)
    splat_mask = ir.Constant(ir.VectorType(_I32, vw), [0] * vw)

    entry = builder.basic_block
    loop = builder.append_basic_block("tile.kloop")
    done = builder.append_basic_block("tile.done")
    builder.branch(loop)

    # -- K loop: all PHIs first, then loads and FMAs --
    builder.position_at_end(loop)
    k = builder.phi(_I64, name="k")
    phis = [[builder.phi(vty) for _ in range(nvec)] for _ in range(mr)]
    b_row = builder.gep(b_base, [builder.mul(k, ir.Constant(_I64, nr))])
    bv = []
    for v in range(nvec):
        p = builder.bitcast(builder.gep(b_row, [ir.Constant(_I64, v * vw)]), vty.as_pointer())
        bv.append(builder.load(p, align=4))
    new = []
    for r in range(mr):
        a_ptr = builder.gep(a_base, [builder.add(k, ir.Constant(_I64, r * lda))])
        a_scalar = builder.load(a_ptr, align=4)
        a_vec = builder.shuffle_vector(builder.insert_element(undef, a_scalar, ir.Constant(_I32, 0)),
                                       undef, splat_mask)
        new.append([builder.call(fma, [a_vec, bv[v], phis[r][v]]) for v in range(nvec)])
    k_next = builder.add(k, ir.Constant(_I64, 1))
    builder.cbranch(builder.icmp_signed("<", k_next, kc), loop, done)
    k.add_incoming(ir.Constant(_I64, 0), entry)
    k.add_incoming(k_next, loop)
    for r in range(mr):
        for v in range(nvec):
            phis[r][v].add_incoming(zero, entry)
            phis[r][v].add_incoming(new[r][v], loop)

    # -- store (or accumulate into) the tile --
    builder.position_at_end(done)
    with builder.if_else(acc_flag) as (then, otherwise):
        with then:
            _store_tile(builder, c_base, new, mr, nvalid, ldc, vw, accumulate=True)
        with otherwise:
            _store_tile(builder, c_base, new, mr, nvalid, ldc, vw, accumulate=False)


def _store_tile(builder, c_base, acc, mr, nvalid, ldc, vw, accumulate):
    vty = ir.VectorType(_F32, vw)
    for r in range(mr):
        for v, vec in enumerate(acc[r]):
            col = v * vw
            base = builder.gep(c_base, [ir.Constant(_I64, r * ldc + col)])
            if col + vw <= nvalid:  # full vector
                p = builder.bitcast(base, vty.as_pointer())
                if accumulate:
                    vec = builder.fadd(vec, builder.load(p, align=4))
                builder.store(vec, p, align=4)
            else:  # partial last vector: lane by lane
                for lane in range(nvalid - col):
                    p = builder.gep(base, [ir.Constant(_I64, lane)])
                    x = builder.extract_element(vec, ir.Constant(_I32, lane))
                    if accumulate:
                        x = builder.fadd(x, builder.load(p, align=4))
                    builder.store(x, p, align=4)
