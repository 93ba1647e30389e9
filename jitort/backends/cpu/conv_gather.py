"""The source of the implicit-GEMM conv kernels (conv.py's ``_gemm_source``) that runs once per
row block of output pixels, before the register tiles:

    indirection_lines(plan, pad)   # direct kind: ind[] = each (pixel, tap)'s input address
    gather_lines(plan, pad)        # im2col kind: col[] = each pixel's patch values of a K block

Both read the plan's geometry (x_shape, w_shape, geometry, y_shape, MR, KC, K, tap_masks) and
write Numba source lines at indent ``pad`` for a block [i0, i1) of output pixels.
"""

from __future__ import annotations


def indirection_lines(p, pad: str) -> list[str]:
    """ind[(r - i0) * KH*KW + t] = the address of input pixel (ih, iw) that tap t = i*KW + j of
    output pixel r reads (its first channel), or of the zero row when (ih, iw) is outside the
    image, for r in [i0, i1): once per row block, for every K block and panel."""
    N, H, W, C = p.x_shape
    _, _, KH, KW = p.w_shape
    SH, SW, PT, PL, DH, DW = p.geometry
    _, OH, OW, _ = p.y_shape
    NT, MR = KH * KW, p.MR
    slot = f"ind[d + i * {KW} + j]"
    if not p.tap_masks:
        def put(v, live):
            return [f"{slot} = {v} if {live} else za"]
    else:  # and live[tile] = the taps with at least one row in the image (bit t: tap t)
        def put(v, live):
            return [f"if {live}:", f"    {slot} = {v}", f"    m |= 1 << (i * {KW} + j)", "else:", f"    {slot} = za"]
    L = [pad + f"for q in range((i1 - i0 + {MR - 1}) // {MR}):", pad + "    live[q] = 0"] if p.tap_masks else []
    L += [pad + "for r in range(i0, i1):", pad + "    m = 0"] if p.tap_masks else [pad + "for r in range(i0, i1):"]
    return L + [pad + f"    n = r // {OH * OW}",
            pad + f"    rq = r - n * {OH * OW}",
            pad + f"    oh = rq // {OW}",
            pad + f"    ow = rq - oh * {OW}",
            pad + f"    d = (r - i0) * {NT}",
            pad + f"    for i in range({KH}):",
            pad + f"        ih = oh * {SH} - {PT} + i * {DH}",
            pad + f"        inside = 0 <= ih < {H}",
            pad + f"        xr = addr_f32(xin, (n * {H} + ih) * {W * C}) if inside else za",
            pad + f"        for j in range({KW}):",
            pad + f"            iw = ow * {SW} - {PL} + j * {DW}"] \
        + [pad + " " * 12 + x for x in put(f"xr + iw * {4 * C}", f"inside and 0 <= iw < {W}")] \
        + ([pad + f"    live[(r - i0) // {MR}] |= m"] if p.tap_masks else [])


def gather_lines(p, pad: str) -> list[str]:
    """col[(r - i0) * KC + (k - k0)] = patch value k of output pixel r, for r in [i0, i1) and
    k in [k0, k0 + kc); zeros outside the image."""
    N, H, W, C = p.x_shape
    O, _, KH, KW = p.w_shape
    SH, SW, PT, PL, DH, DW = p.geometry
    _, OH, OW, _ = p.y_shape
    K, KC = p.K, p.KC
    L = [pad + "for r in range(i0, i1):",
         pad + f"    n = r // {OH * OW}",
         pad + f"    rq = r - n * {OH * OW}",
         pad + f"    oh = rq // {OW}",
         pad + f"    ow = rq - oh * {OW}",
         pad + f"    ih0 = oh * {SH} - {PT}",
         pad + f"    iw0 = ow * {SW} - {PL}",
         pad + f"    xb = n * {H * W * C}",
         pad + f"    d = (r - i0) * {KC}"]
    pad2 = pad + "    "

    def copy(dst, src, n, ind):
        return [ind + f"copy_f32(col, {dst}, xin, {src}, {n})"]

    def zero(dst, n, ind):
        return [ind + f"zero_f32(col, {dst}, {n})"]

    def tap(i, j, dst, c0="0", c1=str(C), ind=pad2):
        """copy channels [c0, c1) of tap (i, j) (source expressions) to col[dst:]."""
        n = C if (c0, c1) == ("0", str(C)) else f"{c1} - {c0}"
        return ([ind + f"ih = ih0 + {i} * {DH}",
                 ind + f"iw = iw0 + {j} * {DW}",
                 ind + f"if 0 <= ih < {H} and 0 <= iw < {W}:"]
                + copy(dst, f"xb + (ih * {W} + iw) * {C} + {c0}", n, ind + "    ")
                + [ind + "else:"] + zero(dst, n, ind + "    "))

    if K <= KC or KC % (KW * C) == 0:  # blocks of whole kernel rows: rows of KW taps
        rows = f"range({KH})" if K <= KC else f"range(k0 // {KW * C}, (k0 + kc) // {KW * C})"
        L += [pad2 + f"for i in {rows}:",
              pad2 + f"    ih = ih0 + i * {DH}",
              pad2 + f"    dr = d + i * {KW * C} - k0"]
        ind = pad2 + "    "
        L += [ind + f"if ih < 0 or ih >= {H}:"] + zero("dr", KW * C, ind + "    ") + [ind + "    continue"]
        if DW == 1 and KW > 1:  # the KW taps of the row are side by side in x
            L += [ind + f"if iw0 >= 0 and iw0 + {KW} <= {W}:"]
            L += copy("dr", f"xb + (ih * {W} + iw0) * {C}", KW * C, ind + "    ") + [ind + "    continue"]
        L += [ind + f"for j in range({KW}):", ind + f"    iw = iw0 + j * {DW}", ind + f"    if 0 <= iw < {W}:"]
        L += copy(f"dr + j * {C}", f"xb + (ih * {W} + iw) * {C}", C, ind + "        ")
        L += [ind + "    else:"] + zero(f"dr + j * {C}", C, ind + "        ")
    elif KC % C == 0:  # whole taps per block
        L += [pad2 + f"for tt in range(kc // {C}):",
              pad2 + f"    tap = k0 // {C} + tt",
              pad2 + f"    ti = tap // {KW}",
              pad2 + f"    tj = tap - ti * {KW}"]
        L += tap("ti", "tj", f"d + tt * {C}", ind=pad2 + "    ")
    else:  # a block holds part of one or more taps
        L += [pad2 + "k = k0",
              pad2 + "while k < k0 + kc:",
              pad2 + f"    tap = k // {C}",
              pad2 + f"    c0 = k - tap * {C}",
              pad2 + f"    c1 = min({C}, c0 + k0 + kc - k)",
              pad2 + f"    ti = tap // {KW}",
              pad2 + f"    tj = tap - ti * {KW}"]
        L += tap("ti", "tj", "d + k - k0", "c0", "c1", ind=pad2 + "    ")
        L += [pad2 + "    k += c1 - c0"]
    return L
