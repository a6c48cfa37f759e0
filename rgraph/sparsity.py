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

import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps

from . import ops
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
    entries stacked, columns the sources'): total derivatives, so a source that is an
    op node is the identity plus what the other sources push into it (nested sums);
    ``cut`` lists product nodes whose input operand is ignored."""
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
        if n.kind != "op":
            continue
        acc = pat.get(nid)
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


# ----------------------------------------------------------- H_t X: the association
EW_WEIGHT = 4      # an elementwise tangent entry costs about this many flops (memory)
SPARSE_WEIGHT = 2  # a row update of a sparse column costs this many times a GEMM flop


@dataclass(frozen=True)
class Association:
    """How H_t X is computed for a tangent X of K columns of the previous state.

    Through the graph: one jvp with K columns (every product and elementwise op of the
    step on K columns). Explicitly: H_t = ∂s_t/∂s_{t-1} first, from one jvp per colour
    of its columns (Curtis–Powell–Reid on its structural pattern), then H_t X as one GEMM
    per run of dense columns plus a row update per entry of the sparse ones. An LSTM's
    H_t has n dense columns (h) and n diagonal ones (c, one colour): 2n x n x K flops
    instead of the 4n x n x K of pushing K columns through W_h and the gates.
    """

    explicit: bool
    colors: tuple           # colour of each state column
    ncolors: int
    dense: tuple            # (j0, j1, c0): columns j0:j1 are dense, colours c0:c0+j1-j0
    sparse: tuple           # (i, j, c): entry H[i, j] = Hc[i, c] of a sparse column
    graph_flops: int
    explicit_flops: int

    @property
    def flops(self) -> int:
        """The cost of the association chosen."""
        return self.explicit_flops if self.explicit else self.graph_flops

    def describe(self, K_name: str = "K") -> str:
        d = sum(j1 - j0 for j0, j1, _ in self.dense)
        how = "H_t formed first" if self.explicit else "through the step's jvp"
        return (f"({K_name} columns): {how}; cost model {self.explicit_flops:,} flops with "
                f"H_t formed first ({d} dense column(s) by GEMM, {len(self.sparse)} entries "
                f"of sparse ones, from {self.ncolors} jvp column(s)) vs "
                f"{self.graph_flops:,} through the step")


def jvp_column_flops(lay: Layout) -> int:
    """The cost of pushing one tangent column of the previous state through the step:
    a product W @ a costs 2 m r (r: the rows of a a state tangent reaches), any other op
    EW_WEIGHT per entry it reaches."""
    states = lay.state_ids
    op_nodes = [n for n in lay.nodes if n.kind == "op"]
    reach = patterns(lay, states, [n.id for n in op_nodes])
    rows_of, row = {}, 0
    for n in op_nodes:
        rows_of[n.id] = np.diff(reach[row:row + n.size].indptr) > 0
        row += n.size
    need = lay.needed_for(lay.new_state)
    total = 0
    for n in op_nodes:
        if n.id not in need or not rows_of[n.id].any() or lay.is_view(n.id):
            continue
        if isinstance(n.op, ops.MatMul):
            a = n.args[1]
            r = int(rows_of[a].sum()) if a in rows_of else \
                (lay.nodes[a].size if a in states else 0)
            total += 2 * n.shape[0] * r
        else:
            total += EW_WEIGHT * int(rows_of[n.id].sum())
    return total


_STRUCTURE = weakref.WeakKeyDictionary()    # Layout -> what association needs of it


def _h_structure(lay: Layout) -> tuple:
    """(colours, dense runs, sparse entries, one column's jvp flops) of a layout's H_t:
    independent of K, computed once per layout (the report asks for several K)."""
    if lay not in _STRUCTURE:
        H = patterns(lay, lay.state_ids, lay.new_state).tocsc()
        S = lay.n_state
        colors = color_columns(H)
        ncol = int(colors.max()) + 1 if S else 0
        shared = np.bincount(colors, minlength=ncol) > 1
        nnz = np.diff(H.indptr)
        is_dense = [not shared[colors[j]] and 4 * nnz[j] > S for j in range(S)]
        dense, sparse, j = [], [], 0
        while j < S:
            if is_dense[j]:
                j0 = j
                while j + 1 < S and is_dense[j + 1] and colors[j + 1] == colors[j] + 1:
                    j += 1
                dense.append((j0, j + 1, int(colors[j0])))
            else:
                sparse += [(int(i), j, int(colors[j]))
                           for i in H.indices[H.indptr[j]:H.indptr[j + 1]]]
            j += 1
        _STRUCTURE[lay] = (tuple(int(c) for c in colors), ncol, tuple(dense), tuple(sparse),
                           jvp_column_flops(lay))
    return _STRUCTURE[lay]


def association(lay: Layout, K: int) -> Association:
    """The cheaper way to form H_t X for K columns, by the cost model above."""
    colors, ncol, dense, sparse, c1 = _h_structure(lay)
    S = lay.n_state
    graph = K * c1
    explicit = ncol * c1 + sum(2 * S * (j1 - j0) * K for j0, j1, _ in dense) + \
        SPARSE_WEIGHT * 2 * len(sparse) * K
    return Association(explicit < graph, colors, ncol, dense, sparse, int(graph),
                       int(explicit))
