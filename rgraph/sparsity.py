"""Structural sparsity of one step: which entries of D_t = ∂s_t/∂s_{t-1} and of the
immediate Jacobian I_t = ∂s_t/∂θ can be non-zero, whatever the values.

The patterns come from the graph alone: every op says which entries of its output
depend on which entries of each operand (``pattern`` in ``ops``: sparse, or ``Dense``),
and the patterns of ∂node/∂sources are pushed through the step in topological order.
They are held as structure (``Pattern``: rectangles, the dense parts a product with a
parameter matrix makes, and an explicit sparse part), so products, unions, counts and
the columns' row sets cost vectors of the cell's size, not its masks' entries: an
LSTM-1024's SnAp-2 mask (2048 x 8.4M entries) is two vectors. They are time-invariant,
so SnAp-n's and e-prop's masks are computed once, when the estimator is built.

* ``patterns(lay, sources, targets, cut)``: the pattern of ∂targets/∂sources; ``cut``
  lists product nodes whose input operand is ignored (e-prop's D̂: the paths from
  s_{t-1} to s_t through no recurrent parameter product).
* ``step_patterns(lay, cut)``: (D, I), S x S and S x P (the masks themselves are
  computed on the sums' columns, ``estimators.snap.influence_patterns``).
* ``color_columns(pattern)``: a column colouring for compressed Jacobians.
* ``snap_mask(D, I, n, inside)``: M_n = pattern(I) ∪ pattern(D I) ∪ ... ∪
  pattern(D^{n-1} I), I first closed within units.
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


def _reaches(E, R) -> np.ndarray:
    """The rows of the explicit pattern E with an entry in a column of R (boolean)."""
    return np.asarray(E.astype(np.int32) @ R.astype(np.int32)).ravel() > 0


class Pattern:
    """A structural pattern (a boolean matrix, rows x cols) held as its structure: a
    union of rectangles R_k x C_k (rows R_k each depend on every column of C_k, as the
    output of a product with a parameter matrix depends on everything its input depends
    on) and an explicit sparse part E (diagonals, slices, concatenations). Products and
    unions keep that form, so an LSTM-1024's patterns take a few vectors of its size,
    never its n² entries; ``tocsr()`` lists the entries where code needs them."""

    def __init__(self, shape, outers=(), explicit=None):
        self.shape = (int(shape[0]), int(shape[1]))
        by_cols, by_rows = {}, {}
        for R, C in outers:            # one rectangle per distinct column set, then row set
            if R.any() and C.any():
                key = C.tobytes()
                by_cols[key] = (by_cols[key][0] | R, C) if key in by_cols else (R, C)
        for R, C in by_cols.values():
            key = R.tobytes()
            by_rows[key] = (R, by_rows[key][1] | C) if key in by_rows else (R, C)
        self.outers = list(by_rows.values())
        self.E = _bool(explicit) if explicit is not None else \
            sps.csr_matrix(self.shape, dtype=bool)

    @classmethod
    def identity(cls, n: int, ncol: int, off: int) -> "Pattern":
        """The n x ncol pattern of a source placed at columns off:off + n."""
        return cls((n, ncol), (), sps.csr_matrix(
            (np.ones(n, dtype=bool), (np.arange(n), np.arange(off, off + n))),
            shape=(n, ncol)))

    @classmethod
    def empty(cls, n: int, ncol: int) -> "Pattern":
        return cls((n, ncol))

    # -- algebra
    def lmul(self, L) -> "Pattern":
        """The pattern of L @ self, L an op's local pattern (sparse, or ``ops.Dense``)."""
        if isinstance(L, ops.Dense):
            return Pattern((L.rows, self.shape[1]),
                           [(np.ones(L.rows, dtype=bool), self.col_support())])
        L = _bool(L)
        return Pattern((L.shape[0], self.shape[1]),
                       [(_reaches(L, R), C) for R, C in self.outers], _product(L, self.E))

    def __or__(self, other: "Pattern") -> "Pattern":
        return Pattern(self.shape, self.outers + other.outers, self.E + other.E)

    def __matmul__(self, other: "Pattern") -> "Pattern":
        """The pattern of self @ other."""
        outers = [(R, other.col_support(C)) for R, C in self.outers]
        outers += [(_reaches(self.E, R), C) for R, C in other.outers]
        return Pattern((self.shape[0], other.shape[1]), outers, _product(self.E, other.E))

    def col_support(self, rows=None) -> np.ndarray:
        """The columns with an entry (in the rows ``rows``, a boolean mask, if given)."""
        out = np.zeros(self.shape[1], dtype=bool)
        for R, C in self.outers:
            if rows is None or (R & rows).any():
                out |= C
        E = self.E if rows is None else self.E[np.flatnonzero(rows)]
        return out | (E.getnnz(axis=0) > 0)

    def row_support(self) -> np.ndarray:
        out = self.E.getnnz(axis=1) > 0
        for R, _ in self.outers:
            out = out | R
        return out

    def cols(self, lo: int, hi: int) -> "Pattern":
        return Pattern((self.shape[0], hi - lo), [(R, C[lo:hi]) for R, C in self.outers],
                       self.E[:, lo:hi])

    def restrict(self, blocks) -> "Pattern":
        """The entries inside the union of the blocks rows_k x cols_k (boolean masks):
        a layer-local mask's diagonal blocks."""
        outers = [(R & r, C & c) for R, C in self.outers for r, c in blocks]
        E = self.E.tocoo()
        keep = np.zeros(E.nnz, dtype=bool)
        for r, c in blocks:
            keep |= r[E.row] & c[E.col]
        return Pattern(self.shape, outers, sps.csr_matrix(
            (np.ones(int(keep.sum()), dtype=bool), (E.row[keep], E.col[keep])),
            shape=self.shape))

    def within(self, unit) -> "Pattern":
        """The entries (i, j) of a square pattern with unit[i] == unit[j] >= 0 (``unit``:
        an id per row, -1 for none): D's blocks inside each unit, at most Σ_u |u|²
        entries, listed without forming the rectangles."""
        unit = np.asarray(unit)
        rows = np.flatnonzero(unit >= 0)
        order = rows[np.argsort(unit[rows], kind="stable")]
        starts = np.flatnonzero(np.r_[True, np.diff(unit[order]) != 0]) if len(order) else \
            np.zeros(0, dtype=np.int64)
        sizes = np.diff(np.r_[starts, len(order)])
        # every pair (a, b) of rows of one unit
        rep = np.repeat(sizes, sizes)
        a = np.repeat(order, rep)
        first = np.repeat(np.repeat(starts, sizes), rep)
        pos = np.arange(len(a)) - np.repeat(np.cumsum(rep) - rep, rep)
        b = order[first + pos % np.repeat(rep, rep)] if len(a) else a
        keep = np.asarray(self.E[a, b]).ravel() if len(a) else np.zeros(0, dtype=bool)
        for R, C in self.outers:
            keep = keep | (R[a] & C[b])
        return Pattern(self.shape, (), sps.csr_matrix(
            (np.ones(int(keep.sum()), dtype=bool), (a[keep], b[keep])), shape=self.shape))

    @staticmethod
    def vstack(parts: list) -> "Pattern":
        n = sum(p.shape[0] for p in parts)
        outers, off = [], 0
        for p in parts:
            for R, C in p.outers:
                full = np.zeros(n, dtype=bool)
                full[off:off + p.shape[0]] = R
                outers.append((full, C))
            off += p.shape[0]
        return Pattern((n, parts[0].shape[1]), outers,
                       sps.vstack([p.E for p in parts], format="csr"))

    # -- counts
    def col_counts(self) -> np.ndarray:
        """Entries per column, the rectangles' overlaps and E's entries inside them
        counted once: rows are grouped by the rectangles they belong to (a handful of
        groups), each group covering the union of its rectangles' columns."""
        n, m = self.shape
        E = self.E.tocoo()
        if not self.outers:
            return np.bincount(E.col, minlength=m).astype(np.int64)
        member = np.stack([R for R, _ in self.outers], axis=1)
        groups, which, sizes = np.unique(np.packbits(member, axis=1), axis=0,
                                         return_inverse=True, return_counts=True)
        which = np.asarray(which).ravel()
        cover = np.zeros((len(groups), m), dtype=bool)
        for g, bits in enumerate(np.unpackbits(groups, axis=1, count=len(self.outers))):
            for k in np.flatnonzero(bits):
                cover[g] |= self.outers[k][1]
        counts = sizes.astype(np.int64) @ cover
        outside = ~cover[which[E.row], E.col]
        return counts + np.bincount(E.col[outside], minlength=m)

    def column_sets(self) -> tuple:
        """(sets, which, base): the distinct row sets of the columns, each a sorted array
        of row indices, for every column the index of its set, and for every set the
        index of its base, the rows its group of rectangles covers (a subset of it). A
        column's rows are the union of the rectangles' rows that hold it and its
        explicit entries; columns of one group of rectangles with no explicit entry
        outside them share their base."""
        n, m = self.shape
        E = self.E.tocsc()
        E.sort_indices()
        if self.outers:
            member = np.stack([C for _, C in self.outers], axis=1)
            groups, group = np.unique(np.packbits(member, axis=1), axis=0,
                                      return_inverse=True)
            group = np.asarray(group).ravel()
            cover = np.zeros((len(groups), n), dtype=bool)
            for g, bits in enumerate(np.unpackbits(groups, axis=1, count=len(self.outers))):
                for k in np.flatnonzero(bits):
                    cover[g] |= self.outers[k][0]
        else:
            group, cover = np.zeros(m, dtype=np.int64), np.zeros((1, n), dtype=bool)
        cols = np.repeat(np.arange(m), np.diff(E.indptr))
        outside = ~cover[group[cols], E.indices]
        own = np.zeros(m, dtype=bool)
        own[cols[outside]] = True
        sets, index, base, which = [], {}, [], np.empty(m, dtype=np.int64)

        def set_of(rows, b=None):
            key = rows.tobytes()
            if key not in index:
                index[key] = len(sets)
                sets.append(rows)
                base.append(len(sets) - 1 if b is None else b)
            return index[key]

        shared = [set_of(np.flatnonzero(c)) for c in cover]
        for j in range(m):
            if own[j]:
                extra = E.indices[E.indptr[j]:E.indptr[j + 1]]
                which[j] = set_of(np.union1d(np.flatnonzero(cover[group[j]]), extra),
                                  shared[group[j]])
            else:
                which[j] = shared[group[j]]
        return sets, which, np.array(base, dtype=np.int64)

    @property
    def nnz(self) -> int:
        return int(self.col_counts().sum())

    def count(self, weights) -> int:
        """Σ_j weights[j] × (entries of column j)."""
        return int(self.col_counts() @ np.asarray(weights, dtype=np.int64))

    # -- the entries, where code needs them
    def tocsr(self):
        parts = [self.E]
        for R, C in self.outers:
            r, c = np.flatnonzero(R), np.flatnonzero(C)
            parts.append(sps.csr_matrix((np.ones(len(r) * len(c), dtype=bool),
                                         (np.repeat(r, len(c)), np.tile(c, len(r)))),
                                        shape=self.shape))
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return _bool(out)

    def tocsc(self):
        return self.tocsr().tocsc()

    def tocoo(self):
        return self.tocsr().tocoo()


_PATTERNS = weakref.WeakKeyDictionary()     # Layout -> {(sources, targets, cut): Pattern}


def patterns(lay: Layout, sources, targets, cut=()) -> Pattern:
    """The structural pattern of ∂targets/∂sources (rows the targets' entries stacked,
    columns the sources'): total derivatives, so a source that is an op node is the
    identity plus what the other sources push into it (nested sums); ``cut`` lists
    product nodes whose input operand is ignored. Computed once per layout and question
    (the report builds every sparse family, which ask the same ones); a Pattern is never
    changed in place."""
    key = (tuple(sources), tuple(targets), tuple(sorted(cut)))
    memo = _PATTERNS.setdefault(lay, {})
    if key not in memo:
        memo[key] = _patterns(lay, sources, targets, cut)
    return memo[key]


def _patterns(lay: Layout, sources, targets, cut) -> Pattern:
    offs, ncol = {}, 0
    for src in sources:
        offs[src] = ncol
        ncol += lay.nodes[src].size
    pat = {src: Pattern.identity(lay.nodes[src].size, ncol, offs[src]) for src in sources}
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
            term = pat[a].lmul(local)
            acc = term if acc is None else acc | term
        pat[nid] = acc
    return Pattern.vstack([pat[nid] if pat.get(nid) is not None else
                           Pattern.empty(lay.nodes[nid].size, ncol) for nid in targets])


def step_patterns(lay: Layout, cut=()) -> tuple:
    """(D, I): the structural patterns of ∂s_t/∂s_{t-1} and ∂s_t/∂θ_rec."""
    both = patterns(lay, lay.state_ids + [b.node for b in lay.rec_blocks], lay.new_state,
                    cut)
    S = lay.n_state
    return both.cols(0, S), both.cols(S, both.shape[1])


def color_columns(pattern) -> np.ndarray:
    """A colour per column such that columns of one colour share no row (greedy, in
    column order): a Jacobian with this pattern is recovered from one jvp per colour
    (Curtis, Powell & Reid). Rows are bit sets (Python integers); a column equal to an
    earlier one starts its search after that one's colour (every colour before it
    already meets those rows), and none searches the leading colours that cover every
    row, so an LSTM's n dense columns and n diagonal ones cost O(n) steps."""
    csc = (pattern.tocsc() if isinstance(pattern, Pattern) else _bool(pattern).tocsc())
    n = csc.shape[0]
    colors = np.zeros(csc.shape[1], dtype=np.int64)
    used, last = [], {}           # per colour: the rows it covers; per column set: colour
    every, full = (1 << n) - 1, 0     # colours 0:full cover every row
    col = np.zeros(n, dtype=bool)
    for j in range(csc.shape[1]):
        idx = csc.indices[csc.indptr[j]:csc.indptr[j + 1]]
        col[idx] = True
        rows = int.from_bytes(np.packbits(col, bitorder="little").tobytes(), "little")
        col[idx] = False
        c = max(last.get(rows, -1) + 1, full) if rows else 0
        while c < len(used) and used[c] & rows:
            c += 1
        if c == len(used):
            used.append(0)
        used[c] |= rows
        colors[j] = c
        last[rows] = c
        while full < len(used) and used[full] == every:
            full += 1
    return colors


def snap_mask(D, I, n: int, inside=None):
    """SnAp-n's mask: the union of the patterns of I, D I, ..., D^{n-1} I, where I is
    first closed under ``inside`` (a pattern of couplings within units: an LRU's complex
    unit in real form, (h_re_i, h_im_i), which in complex arithmetic is one entry of
    I_t; ``snap.unit_coupling``)."""
    if inside is not None:
        I = closure(inside, I)
    mask, reach = I, I
    for _ in range(n - 1):
        reach = D @ reach
        mask = mask | reach
    return mask


def closure(D, I):
    """The smallest pattern containing I and closed under D: where the exact influence
    can be non-zero."""
    mask, count = I, I.nnz
    while True:
        grown = mask | (D @ mask)
        now = grown.nnz
        if now == count:
            return mask
        mask, count = grown, now


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
    reach = patterns(lay, states, [n.id for n in op_nodes]).row_support()
    rows_of, row = {}, 0
    for n in op_nodes:
        rows_of[n.id] = reach[row:row + n.size]
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
