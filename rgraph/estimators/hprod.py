"""H_t X for a tangent X of many columns (KF-RTRL's H_t A, RTRL's H_t G), by the
association the cost model picks (``sparsity.association``):

* through the step: one jvp kernel with X as the previous state's matrix tangent;
* explicitly: H_t = ∂s_t/∂s_{t-1} compressed to one column per colour (the same jvp
  kernel on a seed of C columns, C ≈ the dense columns), then ``h_apply``: one GEMM per
  run of dense columns and a row update per entry of the sparse columns, from tables of
  the module.

The estimator calls ``h_apply(th, v, X, HX, Hs, vdH, Hc)`` (the template below) where
H_t is formed first, else ``jvp_state_m(th, v, X, vd, HX)``.
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

import numpy as np

from ..codegen import Template
from ..sparsity import Association


def constants(assoc: Association) -> dict:
    """The colouring and the dense and sparse columns as tables of the module."""
    if not assoc.explicit:
        return {}
    out = {"HCOL": np.array(assoc.colors, dtype=np.int64)}
    if assoc.dense:
        out["H_DENSE"] = tuple((j0, j1, c0, int(n > 0))
                               for n, (j0, j1, c0) in enumerate(assoc.dense))
    if assoc.sparse:
        out["H_SPARSE"] = np.array(assoc.sparse, dtype=np.int64).reshape(-1, 3)
    return out


def choices(assoc: Association) -> dict:
    """H_FIRST: H_t is formed first; then whether it has dense columns (a GEMM each
    run) and sparse ones (entry by entry)."""
    return {"H_FIRST": assoc.explicit, "H_DENSE_COLUMNS": bool(assoc.dense),
            "H_SPARSE_COLUMNS": bool(assoc.sparse)}


def scratch(lay, assoc: Association) -> dict:
    """The seed, H_t's compressed columns and the jvp's value tangents."""
    if not assoc.explicit:
        return {}
    C = assoc.ncolors
    return {"Hs": (lay.n_state, C), "Hc": (lay.n_state, C), "vdH": (lay.n_values, C)}


def templates(assoc: Association) -> list:
    """``h_apply``, where H_t is formed first."""
    return [Template(h_apply, "h_apply")] if assoc.explicit else []


def h_apply(th, v, M, HM, Hs, vdH, Hc):
    """HM = H_t M, H_t formed first: its columns Hc, one per colour (``HCOL``), from one
    jvp of the seed Hs; a GEMM per run of dense columns (``H_DENSE``: columns j0:j1,
    first colour, 1 if it adds to the runs before), then the sparse columns' entries
    (``H_SPARSE``: row, column and colour of each)."""
    for j in range(S):
        Hs[j, HCOL[j]] = 1.0
    jvp_state_m(th, v, Hs, vdH, Hc)
    if H_DENSE_COLUMNS:
        for j0, j1, c0, add in H_DENSE:
            rg_gemm_rm(HM, Hc.reshape(Hc.size), Hc.shape[1], c0, M[j0:j1], float(add))
    else:
        rg_zero2(HM)
    if H_SPARSE_COLUMNS:
        for e in range(H_SPARSE.shape[0]):
            i, j = H_SPARSE[e, 0], H_SPARSE[e, 1]
            hij = Hc[i, H_SPARSE[e, 2]]
            for k in range(M.shape[1]):
                HM[i, k] += hij * M[j, k]
