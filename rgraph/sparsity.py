"""Structural sparsity of one step: which entries of D_t = ∂s_t/∂s_{t-1} and of the
immediate Jacobian I_t = ∂s_t/∂θ can be non-zero, whatever the values.

The patterns come from the graph alone: every op says which entries of its output
depend on which entries of each operand (``pattern`` in ``ops``), and the patterns of
∂node/∂[s_{t-1}; θ] are pushed through the step in topological order as sparse boolean
matrices. They are time-invariant, so SnAp-n's and e-prop's masks are computed once,
when the estimator is compiled.

* ``patterns(lay, sources, targets, cut)``: the pattern of ∂targets/∂sources; ``cut``
  lists product nodes whose input operand is ignored (e-prop's D̂: the paths from
  s_{t-1} to s_t through no recurrent parameter product).
* ``step_patterns(lay, cut)``: (D, I) as boolean CSR matrices (S x S, S x P).
* ``color_columns(pattern)``: a column colouring for compressed Jacobians.
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


def patterns(lay: Layout, sources, targets, cut=()):
    """The structural pattern of ∂targets/∂sources (boolean CSR, rows the targets'
    entries stacked, columns the sources'). A source that is an op node starts from
    the identity, whatever its operands (an injection); ``cut`` lists product nodes
    whose input operand is ignored."""
    offs, ncol = {}, 0
    for src in sources:
        offs[src] = ncol
        ncol += lay.nodes[src].size
    pat = {}
    for src in sources:
        n = lay.nodes[src].size
        pat[src] = sps.csr_matrix((np.ones(n, dtype=bool),
                                   (np.arange(n), np.arange(offs[src], offs[src] + n))),
                                  shape=(n, ncol))
    cut = set(cut)
    for nid in lay.topo:
        n = lay.nodes[nid]
        if n.kind != "op" or nid in pat:
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
            sps.csr_matrix((lay.nodes[nid].size, ncol), dtype=bool) for nid in targets]
    return _bool(sps.vstack(rows, format="csr"))


def step_patterns(lay: Layout, cut=()) -> tuple:
    """(D, I): the structural patterns of ∂s_t/∂s_{t-1} and ∂s_t/∂θ_rec."""
    both = patterns(lay, lay.state_ids + [b.node for b in lay.rec_blocks], lay.new_state,
                    cut)
    S = lay.n_state
    return _bool(both[:, :S]), _bool(both[:, S:])


def color_columns(pattern) -> np.ndarray:
    """A colour per column such that columns of one colour share no row (greedy, in
    column order): a Jacobian with this pattern is recovered from one jvp per colour
    (Curtis, Powell & Reid)."""
    csc = _bool(pattern).tocsc()
    colors = np.zeros(csc.shape[1], dtype=np.int64)
    used = []                       # per colour: the rows it covers
    for j in range(csc.shape[1]):
        rows = set(csc.indices[csc.indptr[j]:csc.indptr[j + 1]].tolist())
        for c, cover in enumerate(used):
            if not cover & rows:
                colors[j] = c
                cover |= rows
                break
        else:
            colors[j] = len(used)
            used.append(set(rows))
    return colors


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
