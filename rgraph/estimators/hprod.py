"""H_t X for a tangent X of many columns (KF-RTRL's H_t A, RTRL's H_t G), by the
association the cost model picks (``sparsity.association``):

* through the step: one jvp kernel with X as the previous state's matrix tangent;
* explicitly: H_t = ∂s_t/∂s_{t-1} compressed to one column per colour (the same jvp
  kernel on a seed of C columns, C ≈ the dense columns), then ``h_apply``: one GEMM per
  run of dense columns and a row update per entry of the sparse columns, from tables of
  the module.

The estimator calls ``h_seed(Hs)`` (the seed's ones, in each column's colour),
``jvp_state_m(th, v, Hs, vdH, Hc)`` and ``h_apply(Hc, X, HX)`` (the templates below).
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
        out["H_DENSE"] = tuple(tuple(run) for run in assoc.dense)
    if assoc.sparse:
        sp = np.array(assoc.sparse, dtype=np.int64).reshape(-1, 3)
        out.update({"HSP_I": sp[:, 0], "HSP_J": sp[:, 1], "HSP_C": sp[:, 2]})
    return out


def choices(assoc: Association) -> dict:
    """Whether H_t has dense columns (a GEMM each run) and sparse ones (entry by entry)."""
    return {"H_DENSE_COLUMNS": bool(assoc.dense), "H_SPARSE_COLUMNS": bool(assoc.sparse)}


def scratch(lay, assoc: Association) -> dict:
    """The seed, H_t's compressed columns and the jvp's value tangents."""
    if not assoc.explicit:
        return {}
    C = assoc.ncolors
    return {"Hs": (lay.n_state, C), "Hc": (lay.n_state, C), "vdH": (lay.n_values, C)}


def templates(assoc: Association) -> list:
    """``h_seed`` and ``h_apply``, where H_t is formed first."""
    if not assoc.explicit:
        return []
    return [Template(h_seed, "h_seed"), Template(h_apply, "h_apply")]


def h_seed(Hs):
    """The seed of H_t's compressed columns: a one at each state entry, in its column's
    colour (``HCOL``)."""
    for j in range(S):
        Hs[j, HCOL[j]] = 1.0


def h_apply(Hc, M, HM):
    """HM = H_t M from H_t's compressed columns Hc (one per colour): a GEMM per run of
    dense columns (``H_DENSE``: H_t's columns j0:j1, in colours c0:c0 + j1 - j0, times
    rows j0:j1 of M), then a row update per entry of the sparse columns (``HSP_I``,
    ``HSP_J``: its row and column, ``HSP_C``: its colour)."""
    if H_DENSE_COLUMNS:
        beta = 0.0
        for j0, j1, c0 in H_DENSE:
            rg_gemm_rm(HM, Hc.reshape(Hc.size), Hc.shape[1], c0, M[j0:j1], beta)
            beta = 1.0
    else:
        rg_zero2(HM)
    if H_SPARSE_COLUMNS:
        for e in range(HSP_I.shape[0]):
            i, j = HSP_I[e], HSP_J[e]
            h = Hc[i, HSP_C[e]]
            for k in range(M.shape[1]):
                HM[i, k] += h * M[j, k]
