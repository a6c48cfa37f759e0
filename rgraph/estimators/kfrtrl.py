"""KF-RTRL (Mujika, Meier & Steger 2018, Algorithm 1), on the generalized structure of
docs/compiler.md: every recurrent parameter enters as ``z = W @ â`` with â independent
of θ, so F_t = Σ_groups D_t ⊗ â_tᵀ with D_t = ∂s_t/∂z_t (any shape, not only diagonal).

Per input group, G_t ≈ A_t ⊗ u_tᵀ with A_t (S x |z|) and u_t (|â|):

    A_t = c1/p1 · H_t A_{t-1} + c2/p2 · D_t          (eq. 8; H_t A_{t-1} is one jvp
    u_t = c1 p1 · u_{t-1}     + c2 p2 · â_t           with |z| tangent columns: a GEMM)

with c1, c2 random signs and p1 = sqrt(|H A| / |u|), p2 = sqrt(|D| / |â|) (eq. 7,
Lemma 2's variance-optimal choice). The gradient of step t for a product's matrix W is
(A_{t-1}ᵀ ∂l/∂s_{t-1})[rows of z] ⊗ u_{t-1} plus the direct ∂l/∂W. The groups are
walked through tables of the module (``kron``: ``KRON_TERMS``, ``KRON_GROUPS``), and
D_t is written as the blocks it is (only its structurally non-zero entries).
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

from ..codegen import Template
from ..errors import NotApplicable
from ..sparsity import association
from . import common, hprod, kron
from .base import EstimatorSpec


def kf_step(th, s, x, y, w, g, rng, *, A, u, v, vd, vb, ybar, HA, D, cA, ahat, Hs, Hc,
            vdH):
    """One step of KF-RTRL for one stream."""
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    # (∂l/∂s_{t-1}) G_{t-1} with G ≈ Σ_g A_g ⊗ u_g: each product's W gets (Aᵀ δs) ⊗ u
    rg_zero(cA)
    rg_gemv_t(cA, A, vb[0:S])
    kron_gradient(g, cA, u)
    if H_FIRST:
        # H_t A_{t-1}, H_t formed first (the cheaper association for this cell)
        h_apply(th, v, A, HA, Hs, vdH, Hc)
    else:
        # H_t A_{t-1}: one jvp with A_{t-1} as the previous state's matrix tangent
        jvp_state_m(th, v, A, vd, HA)
    # D_t = ∂s_t/∂z_t: the identity injected at the products, pushed to the new state
    jvp_z_m(th, v, vd, D)
    # eqs. (7)-(8), one Kronecker pair per input group
    kron_input(v, ahat)
    kron_update(rng, A, u, HA, D, ahat)
    gather_new(v, s)
    return loss


def kron_update(rng, A, u, HA, D, ahat):
    """Eqs. (7)-(8) per input group (``KRON_GROUPS``: columns c0:c1 of A and D, entries
    a0:a1 of u and â): A = c1/p1 · H A + c2/p2 · D, u = c1 p1 · u + c2 p2 · â."""
    for c0, c1, a0, a1 in KRON_GROUPS:
        if ONE_GROUP:       # the group holds every column of A
            hn, dn = rg_nrm2(HA.reshape(HA.size)), rg_nrm2(D.reshape(D.size))
        else:
            hn, dn = rg_nrm2_cols(HA, c0, c1), rg_nrm2_cols(D, c0, c1)
        p1 = math.sqrt(hn / (rg_nrm2(u[a0:a1]) + EPS)) + EPS
        p2 = math.sqrt(dn / (rg_nrm2(ahat[a0:a1]) + EPS)) + EPS
        s1 = 1.0 if rng.random() < 0.5 else -1.0
        s2 = 1.0 if rng.random() < 0.5 else -1.0
        for j in range(a0, a1):
            u[j] = s1 * p1 * u[j] + s2 * p2 * ahat[j]
        for i in range(S):
            for k in range(c0, c1):
                A[i, k] = s1 / p1 * HA[i, k] + s2 / p2 * D[i, k]


class KFRTRL(EstimatorSpec):
    name = "kf-rtrl"
    stochastic = True
    aliases = ("kfrtrl",)

    def __init__(self, lay, sched, analysis, **opts):
        super().__init__(lay, sched, analysis, **opts)
        k = analysis.kronecker
        if not k.ok:
            raise NotApplicable(f"{self.name} does not apply to cell '{lay.cell.name}': "
                                f"{k.reason}")
        self.groups = k.groups
        self.z_ids, self.nz = k.z_ids, k.nz
        self.na = sum(grp.dim_input for grp in self.groups)
        self.assoc = association(lay, self.nz)      # how H_t A_{t-1} is formed

    def describe(self):
        return "kf-rtrl" + (f"[{len(self.groups)} groups]" if len(self.groups) > 1 else "")

    def flops(self):
        """base + H A (|z| columns) + 4 S |z|."""
        return self.base_flops() + self.push_flops(self.nz) + 4 * self.lay.n_state * self.nz

    def kernels(self):
        return [self.jvp("jvp_state_m", matrix=True),
                self.jvp("jvp_z_m", seeds=[], inject=tuple(self.z_ids), matrix=True,
                         identity=True)]

    def constants(self):
        return {"EPS": 1e-7, **self.kron_tables(), **hprod.constants(self.assoc)}

    def choices(self):
        """ONE_GROUP: one input group holds every column of A (its norms are those of
        whole matrices); â's (``kron.choices``) and H_t's (``hprod.choices``)."""
        return {"ONE_GROUP": len(self.groups) == 1, **kron.choices(self.lay, self.groups),
                **hprod.choices(self.assoc)}

    def state_layout(self):
        return {"A": (self.lay.n_state, self.nz), "u": (self.na,)}

    def scratch_layout(self):
        lay = self.lay
        return {**self.base_scratch(), "vd": (lay.n_values, self.nz),
                "HA": (lay.n_state, self.nz), "D": (lay.n_state, self.nz), "cA": (self.nz,),
                "ahat": (self.na,), **hprod.scratch(lay, self.assoc)}

    def templates(self):
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(kron.kron_gradient, "kron_gradient"),
                Template(kron.kron_input, "kron_input"),
                Template(kron_update, "kron_update"),
                *hprod.templates(self.assoc),
                Template(kf_step, "est_step", "step")]

    def kron_tables(self) -> dict:
        """``KRON_TERMS`` (``kron_gradient``'s) and ``KRON_GROUPS`` (``kron_update``'s)
        and â's pieces (``kron.constants``)."""
        return {"KRON_TERMS": tuple((t.param, t.col, t.rows, t.na, t.uo)
                                    for t in kron.terms(self.lay, self.groups)),
                "KRON_GROUPS": kron.group_table(self.groups),
                **kron.constants(self.lay, self.groups)}
