"""The Kronecker layout shared by the generated code of KF-RTRL, OK, RTRL with H_t
formed first and UORO's one pass: where each input group's columns of D_t = ∂s_t/∂z
and its factor â lie (the groups are ``Analysis.kronecker.groups``)."""
from __future__ import annotations

from ..codegen import index


def kron_pieces(lay, groups, mb):
    """Per input group: its columns of A (c0, c1), its offset in u, its sums with their
    columns, and â's pieces as (array, first index, length, u offset) (a bias's piece is
    the constant 1: array None)."""
    col = uoff = 0
    for grp in groups:
        c0, sums = col, []
        for q, ts in zip(grp.z_ids, grp.terms, strict=True):
            sums.append((lay.nodes[q], col, ts))
            col += lay.nodes[q].shape[0]
        pieces, off = {}, uoff
        for a in grp.inputs:
            r = lay.loc[a]
            arr, at = (mb.user_name(r.anchor), r.delta) if r.buf == "const" else \
                ("v", index(mb.offset(r.anchor, r.aoff), r.delta))
            pieces[a] = (arr, at, r.n, off)
            off += r.n
        if grp.bias:
            pieces[None] = (None, None, 1, off)
        yield grp, c0, col, sums, pieces
        uoff += grp.dim_input
