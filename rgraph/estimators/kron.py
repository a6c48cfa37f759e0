"""The Kronecker layout shared by KF-RTRL, OK, RTRL with H_t formed first and UORO's one
pass, as tables of the generated module: where each input group's columns of D_t =
∂s_t/∂z lie, where each term's parameter block is, and where â's pieces are (the groups
are ``Analysis.kronecker.groups``). â is stacked as u is: group after group, each
group's inputs in order, then its constant 1 if its sums have biases.

The templates ``kron_input`` (â gathered from the step's values) and ``kron_gradient``
(the gradient of a pair A ⊗ uᵀ) read these tables.
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KronTerm:
    """One term of a sum: its parameter's block (offset in th; ``na`` columns, 1 for a
    bias) and its rows (the sum's columns ``col``:``col + rows`` of D_t and A), its
    input's entries ``uo``:``uo + na`` of u and â, and for a product the product node's
    offset in v (where UORO keeps its cotangents; -1 for a bias)."""

    term: object            # the analysis's Term
    param: int
    col: int
    rows: int
    na: int
    uo: int
    node: int


def terms(lay, groups) -> list[KronTerm]:
    """Every term of every sum, group by group and sum by sum."""
    out, col, uoff = [], 0, 0
    for grp in groups:
        at = {}
        for a in grp.inputs:
            at[a] = uoff
            uoff += lay.loc[a].n
        bias = uoff
        uoff += int(grp.bias)
        for q, ts in zip(grp.z_ids, grp.terms, strict=True):
            m = lay.nodes[q].shape[0]
            for t in ts:
                blk = lay.block_of(t.param_id)
                if t.is_bias:
                    out.append(KronTerm(t, blk.off, col, m, 1, bias, -1))
                else:
                    out.append(KronTerm(t, blk.off, col, m, lay.loc[t.input_id].n,
                                        at[t.input_id], lay.loc[t.node].off))
            col += m
    return out


def group_table(groups) -> tuple:
    """Per input group: its columns c0:c1 of D_t (and A) and its entries a0:a1 of u and
    â."""
    rows, col, uoff = [], 0, 0
    for grp in groups:
        rows.append((col, col + grp.dim_z, uoff, uoff + grp.dim_input))
        col += grp.dim_z
        uoff += grp.dim_input
    return tuple(rows)


def constants(lay, groups) -> dict:
    """``KRON_INPUTS``: â's pieces in the step's values (offset in v, length, offset in
    â); ``KRON_FIXED``, where â has entries known when the module is generated (a
    constant input, a bias's 1): â with those entries and zeros elsewhere."""
    pieces, fixed, uoff = [], [], 0
    for grp in groups:
        for a in grp.inputs:
            r = lay.loc[a]
            if r.buf == "const":       # a constant's values: in â once and for all
                fixed.append((uoff, lay.consts[r.anchor][r.delta:r.delta + r.n]))
            else:
                pieces.append((r.off, r.n, uoff))
            uoff += r.n
        if grp.bias:
            fixed.append((uoff, np.ones(1)))
            uoff += 1
    out = {"KRON_INPUTS": tuple(pieces)} if pieces else {}
    if fixed:
        ahat = np.zeros(uoff)
        for at, vals in fixed:
            ahat[at:at + len(vals)] = vals
        out["KRON_FIXED"] = ahat
    return out


def choices(lay, groups) -> dict:
    """FIXED_INPUTS: â has entries known when the module is generated; INPUT_PIECES:
    it has pieces in the step's values (a group of biases alone has none)."""
    out = constants(lay, groups)
    return {"FIXED_INPUTS": "KRON_FIXED" in out, "INPUT_PIECES": "KRON_INPUTS" in out}


def kron_input(v, ahat):
    """â of every input group, stacked as u is: its pieces of the step's values
    (``KRON_INPUTS``: offset in v, length, offset in â) over its fixed entries."""
    if FIXED_INPUTS:
        rg_copy(ahat, KRON_FIXED)
    if INPUT_PIECES:
        for a0, n, at in KRON_INPUTS:
            rg_copy(ahat[at:at + n], v[a0:a0 + n])


def kron_gradient(g, cA, u):
    """dl/dθ += (Aᵀ δs)[its sum's rows] ⊗ u[its input] for every term (``KRON_TERMS``:
    its block in th, first column in A, rows, input length and offset in u)."""
    for p, col, m, na, uo in KRON_TERMS:
        for i in range(m):
            ci = cA[col + i]
            for j in range(na):
                g[p + i * na + j] += ci * u[uo + j]
