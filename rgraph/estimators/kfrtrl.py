"""KF-RTRL (Mujika, Meier & Steger 2018, Algorithm 1), on the generalized structure of
docs/compiler.md: every recurrent parameter enters as ``z = W @ â`` with â independent
of θ, so F_t = Σ_groups D_t ⊗ â_tᵀ with D_t = ∂s_t/∂z_t (any shape, not only diagonal).

Per input group, G_t ≈ A_t ⊗ u_tᵀ with A_t (S x |z|) and u_t (|â|):

    A_t = c1/p1 · H_t A_{t-1} + c2/p2 · D_t          (eq. 8; H_t A_{t-1} is one jvp
    u_t = c1 p1 · u_{t-1}     + c2 p2 · â_t           with |z| tangent columns: a GEMM)

with c1, c2 random signs and p1 = sqrt(|H A| / |u|), p2 = sqrt(|D| / |â|) (eq. 7,
Lemma 2's variance-optimal choice). The gradient of step t for a product's matrix W is
(A_{t-1}ᵀ ∂l/∂s_{t-1})[rows of z] ⊗ u_{t-1} plus the direct ∂l/∂W. The groups are
unrolled when the module is generated (``kron_gradient``, ``kron_update``), and D_t is
written as the blocks it is (only its structurally non-zero entries).
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

from ..codegen import Template, index
from ..errors import NotApplicable
from . import common
from .base import EstimatorSpec


def kf_step(th, s, x, y, w, g, rng, *, A, u, v, vd, vb, ybar, HA, D, cA):
    """One step of KF-RTRL for one stream."""
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    # (∂l/∂s_{t-1}) G_{t-1} with G ≈ Σ_g A_g ⊗ u_g: each product's W gets (Aᵀ δs) ⊗ u
    np.dot(vb[0:S], A, cA)
    kron_gradient(g, cA, u)
    # H_t A_{t-1}: one jvp with A_{t-1} as the previous state's matrix tangent
    jvp_state_m(th, v, A, vd, HA)
    # D_t = ∂s_t/∂z_t: the identity injected at the products, pushed to the new state
    jvp_z_m(th, v, vd, D)
    # eqs. (7)-(8), one Kronecker pair per input group
    kron_update(rng, v, A, u, HA, D)
    gather_new(v, s)
    return loss


class KFRTRL(EstimatorSpec):
    name = "kf-rtrl"
    stochastic = True

    def __init__(self, lay, sched, analysis, **opts):
        super().__init__(lay, sched, analysis, **opts)
        k = analysis.kronecker
        if not k.ok:
            raise NotApplicable(f"kf-rtrl does not apply to cell '{lay.cell.name}': "
                                f"{k.reason}")
        self.groups = k.groups
        self.z_ids = [z for grp in self.groups for z in grp.z_ids]
        self.nz = sum(grp.dim_z for grp in self.groups)
        self.na = sum(grp.dim_input for grp in self.groups)

    def describe(self):
        return "kf-rtrl" + (f"[{len(self.groups)} groups]" if len(self.groups) > 1 else "")

    def kernels(self):
        return [self.jvp("jvp_state_m", matrix=True),
                self.jvp("jvp_z_m", seeds=[], inject=tuple(self.z_ids), matrix=True,
                         identity=True)]

    def constants(self):
        return {"EPS": 1e-7}

    def state_layout(self):
        return {"A": (self.lay.n_state, self.nz), "u": (self.na,)}

    def scratch_layout(self):
        lay = self.lay
        return {**self.base_scratch(), "vd": (lay.n_values, self.nz),
                "HA": (lay.n_state, self.nz), "D": (lay.n_state, self.nz), "cA": (self.nz,)}

    def templates(self):
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(kf_step, "est_step", "step")]

    def _pieces(self):
        """Per group: (group, first column, u offset) and per product (node, column)."""
        col = uoff = 0
        for grp in self.groups:
            prods = []
            c0 = col
            for z in grp.z_ids:
                prods.append((self.lay.nodes[z], col))
                col += self.lay.nodes[z].shape[0]
            yield grp, c0, col, uoff, prods
            uoff += grp.dim_input

    def rendered(self, mb):
        lay = self.lay
        sqrt, nrm2, nrm2c = f"{mb.g('math')}.sqrt", mb.g("rg_nrm2"), mb.g("rg_nrm2_cols")
        eps = mb.g("EPS")
        # locals are allocated around the module's globals (the user's node offsets)
        local = mb.namer.child()
        g, cA, u, rng, v, A, HA, D, i, j, c, ci, p1, p2, s1, s2 = (
            local.claim(x) for x in ("g", "cA", "u", "rng", "v", "A", "HA", "D", "i", "j",
                                     "c", "ci", "p1", "p2", "s1", "s2"))
        grad = [f"def kron_gradient({g}, {cA}, {u}):",
                '    """dl/dW += (Aᵀ δs)[rows of W @ â] ⊗ u_â for every recurrent product."""']
        upd = [f"def kron_update({rng}, {v}, {A}, {u}, {HA}, {D}):",
               '    """A = c1/p1 · HA + c2/p2 · D and u = c1 p1 · u + c2 p2 · â per input '
               'group (eqs. 7-8)."""']
        for grp, c0, c1, uoff, prods in self._pieces():
            na = grp.dim_input
            a = lay.loc[grp.input_id]
            a_at = index(mb.offset(a.anchor, a.aoff), a.delta)
            for n, col in prods:
                W = lay.block_of(n.args[0])
                w_at = mb.offset(W.name, W.off, param=True)
                grad += [f"    # {n.name} = {lay.cell.describe(n)}: columns {col}:"
                         f"{col + n.shape[0]} of A, u[{uoff}:{uoff + na}]",
                         f"    for {i} in range({n.shape[0]}):",
                         f"        {ci} = {cA}[{index(col, i)}]",
                         f"        for {j} in range({na}):",
                         f"            {g}[{w_at} + {i} * {na} + {j}] += {ci} * "
                         f"{u}[{index(uoff, j)}]"]
            if c0 == 0 and c1 == self.nz:     # the group holds every column of A
                ha, d = (f"{nrm2}({m}.reshape({lay.n_state * self.nz}))" for m in (HA, D))
            else:
                ha, d = (f"{nrm2c}({m}, {c0}, {c1})" for m in (HA, D))
            upd += [f"    # input {grp.input} ({na}): columns {c0}:{c1} of A, "
                    f"u[{uoff}:{uoff + na}]",
                    f"    {p1} = {sqrt}({ha} / ({nrm2}({u}[{uoff}:{uoff + na}]) + {eps})) + {eps}",
                    f"    {p2} = {sqrt}({d} / ({nrm2}({v}[{a_at}:{a_at} + {na}]) + {eps})) + {eps}",
                    f"    {s1} = 1.0 if {rng}.random() < 0.5 else -1.0",
                    f"    {s2} = 1.0 if {rng}.random() < 0.5 else -1.0",
                    f"    for {j} in range({na}):",
                    f"        {u}[{index(uoff, j)}] = {s1} * {p1} * {u}[{index(uoff, j)}] + "
                    f"{s2} * {p2} * {v}[{a_at} + {j}]",
                    f"    for {i} in range({lay.n_state}):",
                    f"        for {c} in range({c0}, {c1}):" if c0 else
                    f"        for {c} in range({c1}):",
                    f"            {A}[{i}, {c}] = {s1} / {p1} * {HA}[{i}, {c}] + "
                    f"{s2} / {p2} * {D}[{i}, {c}]"]
        return {"kron_gradient": "\n".join(grad) + "\n", "kron_update": "\n".join(upd) + "\n"}
