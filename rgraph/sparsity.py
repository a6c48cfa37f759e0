"""Structural sparsity of one step: which entries of D_t = ∂s_t/∂s_{t-1} and of the
immediate Jacobian I_t = ∂s_t/∂θ can be non-zero, whatever the values.

The patterns come from the graph alone: every op says which entries of its output
depend on which entries of each operand (``pattern`` in ``ops``), and the patterns of
∂node/∂[s_{t-1}; θ] are pushed through the step in topological order as sparse boolean
matrices. They are time-invariant, so SnAp-n's and e-prop's masks are computed once,
when the estimator is compiled.

* ``step_patterns(lay, cut)``: (D, I) as boolean CSR matrices (S x S, S x P). ``cut``
  lists product nodes whose input operand is ignored: e-prop's D̂, the paths from
  s_{t-1} to s_t that pass through no recurrent parameter product.
* ``snap_mask(D, I, n)``: M_n = pattern(I) ∪ pattern(D I) ∪ ... ∪ pattern(D^{n-1} I).
* ``closure(D, I)``: the pattern RTRL's influence can reach (M_n for n large), against
  which a mask is said to saturate.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sps

from .layout import Layout


def _bool(m):
    m = sps.csr_matrix(m, dtype=bool)
    m.eliminate_zeros()
    return m


def _product(a, b):
    """The pattern of a @ b (boolean, no cancellation assumed)."""
    return _bool(a.astype(np.float64) @ b.astype(np.float64))


def step_patterns(lay: Layout, cut=()) -> tuple:
    """(D, I): the structural patterns of ∂s_t/∂s_{t-1} and ∂s_t/∂θ_rec."""
    S, P = lay.n_state, lay.n_rec
    ncol = S + P
    pat = {}
    for st in lay.states:
        off = lay.state_off[st.id]
        n = st.shape[0]
        pat[st.id] = sps.csr_matrix((np.ones(n, dtype=bool), (np.arange(n),
                                                              np.arange(off, off + n))),
                                    shape=(n, ncol))
    for blk in lay.rec_blocks:
        n = blk.size
        pat[blk.node] = sps.csr_matrix((np.ones(n, dtype=bool),
                                        (np.arange(n), np.arange(S + blk.off,
                                                                 S + blk.off + n))),
                                       shape=(n, ncol))
    cut = set(cut)
    for nid in lay.topo:
        n = lay.nodes[nid]
        if n.kind != "op":
            continue
        acc = None
        shapes = [lay.nodes[a].shape for a in n.args]
        for j, a in enumerate(n.args):
            if pat.get(a) is None or (nid in cut and j == 1):
                continue
            local = n.op.pattern(j, n.shape, shapes)
            if local is None:
                continue
            term = _product(local, pat[a])
            acc = term if acc is None else _bool(acc + term)
        pat[nid] = acc
    rows = [pat.get(nid) if pat.get(nid) is not None else
            sps.csr_matrix((lay.nodes[nid].size, ncol), dtype=bool) for nid in lay.new_state]
    both = sps.vstack(rows, format="csr")
    return _bool(both[:, :S]), _bool(both[:, S:])


def snap_mask(D, I, n: int):
    """SnAp-n's mask: the union of the patterns of I, D I, ..., D^{n-1} I."""
    mask, reach = I, I
    for _ in range(n - 1):
        reach = _product(D, reach)
        mask = _bool(mask + reach)
    return mask


def closure(D, I):
    """The smallest pattern containing I and closed under D: where the exact influence
    can be non-zero."""
    mask = I
    while True:
        grown = _bool(mask + _product(D, mask))
        if grown.nnz == mask.nnz:
            return mask
        mask = grown
