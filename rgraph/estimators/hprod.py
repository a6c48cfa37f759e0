"""H_t X for a tangent X of many columns (KF-RTRL's H_t A, RTRL's H_t G), by the
association the cost model picks (``sparsity.association``):

* through the step: one jvp kernel with X as the previous state's matrix tangent;
* explicitly: H_t = ∂s_t/∂s_{t-1} compressed to one column per colour (the same jvp
  kernel on a seed of C columns, C ≈ the dense columns), then ``h_apply``: one GEMM per
  run of dense columns and a row update per entry of the sparse columns.

The estimator calls ``h_seed(Hs)`` (the seed's ones, in each column's colour),
``jvp_state_m(th, v, Hs, vdH, Hc)`` and ``h_apply(Hc, X, HX)``.
"""
from __future__ import annotations

import numpy as np

from ..sparsity import Association


def constants(assoc: Association) -> dict:
    """The colouring and the sparse entries as tables of the module."""
    if not assoc.explicit:
        return {}
    sp = np.array(assoc.sparse, dtype=np.int64).reshape(-1, 3)
    return {"HCOL": np.array(assoc.colors, dtype=np.int64), "HSP_I": sp[:, 0],
            "HSP_J": sp[:, 1], "HSP_C": sp[:, 2]}


def scratch(lay, assoc: Association) -> dict:
    """The seed, H_t's compressed columns and the jvp's value tangents."""
    if not assoc.explicit:
        return {}
    C = assoc.ncolors
    return {"Hs": (lay.n_state, C), "Hc": (lay.n_state, C), "vdH": (lay.n_values, C)}


def rendered(mb, lay, assoc: Association) -> dict:
    """``h_seed`` and ``h_apply`` for this cell's H_t."""
    if not assoc.explicit:
        return {}
    S, C = lay.n_state, assoc.ncolors
    local = mb.namer.child()
    Hs, Hc, X, HX, j, e, i, k, h = (local.claim(x) for x in
                                    ("Hs", "Hc", "X", "HX", "j", "e", "i", "k", "h"))
    col = mb.g("HCOL")
    seed = [f"def h_seed({Hs}):",
            f'    """The seed of H_t\'s {C} compressed columns: a one at each state entry, '
            f'in its column\'s colour."""',
            f"    for {j} in range({S}):",
            f"        {Hs}[{j}, {col}[{j}]] = 1.0"]
    ndense = sum(j1 - j0 for j0, j1, _ in assoc.dense)
    app = [f"def h_apply({Hc}, {X}, {HX}):",
           f'    """{HX} = H_t {X} from H_t\'s compressed columns {Hc} ({S} x {C}): '
           f'{ndense} dense column(s) by GEMM, then {len(assoc.sparse)} entries of sparse '
           f'ones."""']
    if not assoc.dense:
        app.append(f"    {mb.g('rg_zero2')}({HX})")
    for n, (j0, j1, c0) in enumerate(assoc.dense):
        app.append(f"    # columns {j0}:{j1} of H_t (colours {c0}:{c0 + j1 - j0}) times rows "
                   f"{j0}:{j1} of {X}")
        app.append(f"    {mb.g('rg_gemm_rm')}({HX}, {Hc}.reshape({S * C}), {C}, {c0}, "
                   f"{X}[{j0}:{j1}], {0.0 if n == 0 else 1.0})")
    if assoc.sparse:
        app += [f"    for {e} in range({len(assoc.sparse)}):",
                f"        {i}, {j} = {mb.g('HSP_I')}[{e}], {mb.g('HSP_J')}[{e}]",
                f"        {h} = {Hc}[{i}, {mb.g('HSP_C')}[{e}]]",
                f"        for {k} in range({X}.shape[1]):",
                f"            {HX}[{i}, {k}] += {h} * {X}[{j}, {k}]"]
    return {"h_seed": "\n".join(seed) + "\n", "h_apply": "\n".join(app) + "\n"}
