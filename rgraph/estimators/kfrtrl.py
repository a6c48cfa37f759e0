"""KF-RTRL (Mujika, Meier & Steger 2018, Algorithm 1), on the generalized structure of
DESIGN.md §4: every recurrent parameter enters as ``z = W @ â`` with â independent of θ,
so F_t = Σ_groups D_t ⊗ â_tᵀ with D_t = ∂s_t/∂z_t (any shape, not only diagonal).

Per input group, G_t ≈ A_t ⊗ u_tᵀ with A_t (S x |z|) and u_t (|â|):

    A_t = c1/p1 · H_t A_{t-1} + c2/p2 · D_t          (eq. 8; H_t A_{t-1} is one jvp
    u_t = c1 p1 · u_{t-1}     + c2 p2 · â_t           with |z| tangent columns: a GEMM)

with c1, c2 random signs and p1 = sqrt(|H A| / |u|), p2 = sqrt(|D| / |â|) (eq. 7,
Lemma 2's variance-optimal choice). The gradient of step t for a product's matrix W is
(A_{t-1}ᵀ ∂l/∂s_{t-1})[rows of z] ⊗ u_{t-1} plus the direct ∂l/∂W.
"""
# ruff: noqa: F821  (template names are defined in the generated module)
from __future__ import annotations

import numpy as np

from ..errors import NotApplicable
from . import common
from .base import EstimatorSpec, renamed


def kf_step(th, s, E, x, y, w, g, rng, W):
    """One step of KF-RTRL for one stream."""
    A, u = est_views(E)
    v, vd, vb, thd, ybar, HA, D, cA = W
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    # (∂l/∂s_{t-1}) G_{t-1} with G ≈ A ⊗ u: for product k, dl/dW_k += (Aᵀ c)[z_k] ⊗ u_g
    rg_zero(cA)
    rg_gemv_t(cA, A, vb[0:S])
    for k in range(NZN):
        grp = KZ_GROUP[k]
        na = KG_NA[grp]
        uo = KG_UOFF[grp]
        col = KZ_COL[k]
        woff = KZ_WOFF[k]
        for i in range(KZ_M[k]):
            ci = cA[col + i]
            for j in range(na):
                g[woff + i * na + j] += ci * u[uo + j]
    # H_t A_{t-1}: one jvp with A_{t-1} as the previous state's matrix tangent
    jvp_state_m(th, v, thd, A, vd, HA)
    # D_t = ∂s_t/∂z_t: the identity injected at the products, pushed downstream
    jvp_z_m(th, v, thd, A, vd, D)
    # eqs. (7)-(8), one Kronecker pair per input group
    for grp in range(NG):
        c0 = KG_COL0[grp]
        c1 = KG_COL1[grp]
        uo = KG_UOFF[grp]
        na = KG_NA[grp]
        ar = KG_AROW[grp]
        p1 = math.sqrt(rg_nrm2_cols(HA, c0, c1) / (rg_nrm2(u[uo:uo + na]) + EPS)) + EPS
        p2 = math.sqrt(rg_nrm2_cols(D, c0, c1) / (rg_nrm2(v[ar:ar + na]) + EPS)) + EPS
        s1 = 1.0 if rng.random() < 0.5 else -1.0
        s2 = 1.0 if rng.random() < 0.5 else -1.0
        for j in range(na):
            u[uo + j] = s1 * p1 * u[uo + j] + s2 * p2 * v[ar + j]
        a1 = s1 / p1
        a2 = s2 / p2
        for i in range(S):
            for c in range(c0, c1):
                A[i, c] = a1 * HA[i, c] + a2 * D[i, c]
    gather_new(v, s)
    return loss


class KFRTRL(EstimatorSpec):
    name = "kf-rtrl"
    stochastic = True

    def __init__(self, prog, analysis, **opts):
        super().__init__(prog, analysis, **opts)
        k = analysis.kronecker
        if not k.ok:
            raise NotApplicable(f"kf-rtrl does not apply to cell '{prog.cell.name}': "
                                f"{k.reason}")
        self.groups = k.groups
        self.z_ids = [z for grp in self.groups for z in grp.z_ids]
        self.nz = sum(grp.dim_z for grp in self.groups)
        self.na = sum(grp.dim_input for grp in self.groups)

    def describe(self):
        return "kf-rtrl" + (f"[{len(self.groups)} groups]" if len(self.groups) > 1 else "")

    def kernels(self):
        p = self.prog
        return [p.jvp("jvp_state_m", matrix=True),
                p.jvp("jvp_z_m", seeds=[], inject=self.z_ids, matrix=True,
                      inject_basis=True)]

    def constants(self):
        p = self.prog
        kz = {"COL": [], "M": [], "WOFF": [], "GROUP": []}
        kg = {"COL0": [], "COL1": [], "UOFF": [], "NA": [], "AROW": []}
        col = uoff = 0
        for gi, grp in enumerate(self.groups):
            kg["COL0"].append(col)
            kg["UOFF"].append(uoff)
            kg["NA"].append(grp.dim_input)
            kg["AROW"].append(p.loc[grp.input_id].off)
            for z in grp.z_ids:
                n = p.nodes[z]
                kz["COL"].append(col)
                kz["M"].append(n.shape[0])
                kz["WOFF"].append(p.block_of(n.args[0]).off)
                kz["GROUP"].append(gi)
                col += n.shape[0]
            kg["COL1"].append(col)
            uoff += grp.dim_input
        out = {"NZN": len(self.z_ids), "NG": len(self.groups), "EPS": 1e-7}
        out.update({f"KZ_{k}": np.array(v, dtype=np.int64) for k, v in kz.items()})
        out.update({f"KG_{k}": np.array(v, dtype=np.int64) for k, v in kg.items()})
        return out

    def state_layout(self):
        return {"A": (self.prog.n_state, self.nz), "u": (self.na,)}

    def scratch_layout(self):
        p = self.prog
        return {"v": (p.n_values,), "vd": (p.n_values, self.nz), "vb": (p.n_values,),
                "thd": (1, 1), "ybar": (self.nout,),
                "HA": (p.n_state, self.nz), "D": (p.n_state, self.nz), "cA": (self.nz,)}

    def functions(self):
        return common.TEMPLATES + [renamed(kf_step, "est_step"),
                                   renamed(common.est_nothing_to_flush, "est_flush"),
                                   renamed(common.est_zero_state, "est_reset")]
