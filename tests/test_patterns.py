"""Structural patterns held as structure (``sparsity.Pattern``: rectangles and an
explicit sparse part), checked against dense boolean matrices, and the analysis'
cost on large cells: it must not grow with the entries of the masks."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sps

import rgraph as rg
from rgraph import ops
from rgraph.sparsity import Pattern, closure, color_columns, snap_mask


def random_pattern(rng, n, m, rects=None):
    """A Pattern and its dense boolean matrix: a few rectangles (some sharing rows or
    columns, some empty) and a sparse explicit part, overlapping them."""
    rects = rng.integers(0, 4) if rects is None else rects
    outers = []
    for _ in range(rects):
        R = rng.random(n) < rng.choice([0.0, 0.3, 1.0])
        C = rng.random(m) < rng.choice([0.2, 0.6, 1.0])
        outers.append((R, C))
    if outers and rng.random() < 0.5:               # a repeated column set
        outers.append((rng.random(n) < 0.5, outers[0][1].copy()))
    E = sps.random(n, m, density=rng.choice([0.0, 0.1, 0.3]), random_state=rng,
                   format="csr").astype(bool)
    dense = E.toarray()
    for R, C in outers:
        dense |= np.outer(R, C)
    return Pattern((n, m), outers, E), dense


def bool_product(a, b):
    return (a.astype(np.int64) @ b.astype(np.int64)) > 0


@pytest.mark.parametrize("seed", range(40))
def test_pattern_algebra_equals_dense_booleans(seed):
    rng = np.random.default_rng(seed)
    n, k, m = (int(x) for x in rng.integers(1, 9, size=3))
    P, Pd = random_pattern(rng, k, m)
    Q, Qd = random_pattern(rng, n, k)
    R, Rd = random_pattern(rng, k, m)
    assert np.array_equal(P.tocsr().toarray(), Pd)
    assert P.nnz == Pd.sum()
    assert np.array_equal(P.col_counts(), Pd.sum(axis=0))
    w = rng.integers(0, 5, size=m)
    assert P.count(w) == int(Pd.sum(axis=0) @ w)
    assert np.array_equal((P | R).tocsr().toarray(), Pd | Rd)
    assert np.array_equal((Q @ P).tocsr().toarray(), bool_product(Qd, Pd))
    L = sps.random(n, k, density=0.3, random_state=rng, format="csr").astype(bool)
    assert np.array_equal(P.lmul(L).tocsr().toarray(), bool_product(L.toarray(), Pd))
    dense_local = P.lmul(ops.Dense(n, k))
    assert np.array_equal(dense_local.tocsr().toarray(),
                          np.repeat(Pd.any(axis=0, keepdims=True), n, axis=0))
    assert np.array_equal(P.row_support(), Pd.any(axis=1))
    assert np.array_equal(P.col_support(), Pd.any(axis=0))
    rows = rng.random(k) < 0.5
    assert np.array_equal(P.col_support(rows), Pd[rows].any(axis=0))
    lo, hi = sorted(rng.integers(0, m + 1, size=2))
    assert np.array_equal(P.cols(lo, hi).tocsr().toarray(), Pd[:, lo:hi])
    assert np.array_equal(Pattern.vstack([P, R]).tocsr().toarray(), np.vstack([Pd, Rd]))
    sets, which, base = P.column_sets()
    for j in range(m):
        assert np.array_equal(sets[which[j]], np.flatnonzero(Pd[:, j]))
    assert len({s.tobytes() for s in sets}) == len(sets)       # distinct
    for i, b in enumerate(base):                               # a base is a subset
        assert set(sets[b].tolist()) <= set(sets[i].tolist()) and base[b] == b


@pytest.mark.parametrize("seed", range(20))
def test_masks_and_colouring_equal_dense_references(seed):
    """SnAp-n's mask, the closure and the greedy colouring, against the same
    definitions on dense booleans."""
    rng = np.random.default_rng(100 + seed)
    S, Z = (int(x) for x in rng.integers(2, 9, size=2))
    D, Dd = random_pattern(rng, S, S)
    I, Id = random_pattern(rng, S, Z)
    ref, reach = Id.copy(), Id.copy()
    for n in range(1, 5):
        assert np.array_equal(snap_mask(D, I, n).tocsr().toarray(), ref), n
        reach = bool_product(Dd, reach)
        ref = ref | reach
    full = Id.copy()
    while True:
        grown = full | bool_product(Dd, full)
        if np.array_equal(grown, full):
            break
        full = grown
    assert np.array_equal(closure(D, I).tocsr().toarray(), full)
    unit = rng.integers(-1, 3, size=S)            # rows grouped in units (-1: none)
    same = (unit[:, None] == unit[None, :]) & (unit[:, None] >= 0)
    assert np.array_equal(D.within(unit).tocsr().toarray(), Dd & same)
    Du, I1 = Dd & same, Id.copy()                  # I closed inside the units, then SnAp
    while not np.array_equal(I1 | bool_product(Du, I1), I1):
        I1 = I1 | bool_product(Du, I1)
    assert np.array_equal(snap_mask(D, I, 1, D.within(unit)).tocsr().toarray(), I1)
    assert np.array_equal(snap_mask(D, I, 2, D.within(unit)).tocsr().toarray(),
                          I1 | bool_product(Dd, I1))
    blocks = [(unit == u, rng.random(Z) < 0.5) for u in range(3)]
    want = np.zeros_like(Id)
    for r, c in blocks:
        want |= Id & r[:, None] & c[None, :]
    assert np.array_equal(I.restrict(blocks).tocsr().toarray(), want)
    colors = color_columns(D)
    greedy, cover = [], []                     # first fit, column by column
    for j in range(S):
        rows = set(np.flatnonzero(Dd[:, j]))
        c = next((c for c, cv in enumerate(cover) if not cv & rows), len(cover))
        if c == len(cover):
            cover.append(set())
        cover[c] |= rows
        greedy.append(c)
    assert colors.tolist() == greedy


def test_large_lstm_report_is_structural():
    """The report of an LSTM-512 keeps a few vectors of the cell's size: SnAp-2's mask
    alone has 1,024 x 2.1M entries (2.1e9) (it saturates), which a Python set or a sparse
    matrix of entries would hold in gigabytes; the structure takes megabytes."""
    cell = rg.cells.lstm(512, 512, 512)
    tracemalloc.start()
    try:
        t = time.perf_counter()
        report = rg.analyze(cell).report()
        seconds = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full = 2 * 512 * 4 * 512 * (512 + 512 + 1)        # every state x every gate weight
    assert f"snap-2: {full:,} of {full:,} (saturates: equals RTRL)" in report
    assert peak < 150e6, peak
    assert seconds < 120, seconds         # a bound for a loaded machine, not a target
