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

from ..codegen import Template, index, tuple_lines
from ..errors import NotApplicable
from ..sparsity import association
from . import common, hprod
from .base import EstimatorSpec
from .kron import kron_pieces


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


def kf_step_explicit(th, s, x, y, w, g, rng, *, A, u, v, vd, vb, ybar, HA, D, cA, Hs, Hc,
                     vdH):
    """One step of KF-RTRL for one stream, with H_t formed first (the cheaper
    association for this cell)."""
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    np.dot(vb[0:S], A, cA)
    kron_gradient(g, cA, u)
    # H_t from its coloured columns (one jvp of a few columns), then H_t A_{t-1}
    h_seed(Hs)
    jvp_state_m(th, v, Hs, vdH, Hc)
    h_apply(Hc, A, HA)
    jvp_z_m(th, v, vd, D)
    kron_update(rng, v, A, u, HA, D)
    gather_new(v, s)
    return loss


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
        return {"EPS": 1e-7, **hprod.constants(self.assoc)}

    def state_layout(self):
        return {"A": (self.lay.n_state, self.nz), "u": (self.na,)}

    def scratch_layout(self):
        lay = self.lay
        return {**self.base_scratch(), "vd": (lay.n_values, self.nz),
                "HA": (lay.n_state, self.nz), "D": (lay.n_state, self.nz), "cA": (self.nz,),
                **hprod.scratch(lay, self.assoc)}

    def templates(self):
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(kf_step_explicit if self.assoc.explicit else kf_step, "est_step",
                         "step")]

    def _pieces(self, mb):
        return kron_pieces(self.lay, self.groups, mb)

    def rendered(self, mb):
        lay = self.lay
        sqrt, nrm2, nrm2c = f"{mb.g('math')}.sqrt", mb.g("rg_nrm2"), mb.g("rg_nrm2_cols")
        dot, eps = mb.g("rg_dot"), mb.g("EPS")
        # locals are allocated around the module's globals (the user's node offsets)
        local = mb.namer.child()
        g, cA, u, rng, v, A, HA, D, i, j, c, ci, p1, p2, s1, s2, an = (
            local.claim(x) for x in ("g", "cA", "u", "rng", "v", "A", "HA", "D", "i", "j",
                                     "c", "ci", "p1", "p2", "s1", "s2", "anorm"))
        grad = [f"def kron_gradient({g}, {cA}, {u}):",
                '    """dl/dθ += (Aᵀ δs)[rows of each sum] ⊗ u for every term of the sum '
                '(a bias: ⊗ its 1)."""']
        upd = [f"def kron_update({rng}, {v}, {A}, {u}, {HA}, {D}):",
               '    """A = c1/p1 · HA + c2/p2 · D and u = c1 p1 · u + c2 p2 · â per input '
               'group (eqs. 7-8)."""']

        def arr(x):        # an input's array: the step's values, or a constant's
            return v if x == "v" else x

        for grp, c0, c1, sums, pieces in self._pieces(mb):
            for q, col, ts in sums:
                grad.append(f"    # {q.name} ({q.shape[0]}): columns {col}:{col + q.shape[0]}"
                            f" of A; " + " + ".join(_term(t) for t in ts))
                for t in ts:
                    blk = lay.block_of(t.param_id)
                    at = mb.offset(blk.name, blk.off, param=True)
                    _, _, na, uo = pieces[t.input_id]
                    if t.is_bias:
                        grad += [f"    for {i} in range({q.shape[0]}):",
                                 f"        {g}[{index(at, i)}] += {cA}[{index(col, i)}] * "
                                 f"{u}[{uo}]"]
                    else:
                        grad += [f"    for {i} in range({q.shape[0]}):",
                                 f"        {ci} = {cA}[{index(col, i)}]",
                                 f"        for {j} in range({na}):",
                                 f"            {g}[{at} + {i} * {na} + {j}] += {ci} * "
                                 f"{u}[{index(uo, j)}]"]
            u0 = next(iter(pieces.values()))[3]          # u's slice of the group
            u1 = u0 + grp.dim_input
            if c0 == 0 and c1 == self.nz:     # the group holds every column of A
                ha, d = (f"{nrm2}({m}.reshape({lay.n_state * self.nz}))" for m in (HA, D))
            else:
                ha, d = (f"{nrm2c}({m}, {c0}, {c1})" for m in (HA, D))
            upd.append(f"    # input {grp.input} ({grp.dim_input}): columns {c0}:{c1} of A, "
                       f"u[{u0}:{u1}]")
            if len(pieces) == 1 and None not in pieces:
                (a_arr, at, na, _), = pieces.values()
                a_norm = f"{nrm2}({arr(a_arr)}[{at}:{at} + {na}])"
            else:      # |â| over its pieces (and its constant 1)
                sq = [f"{dot}({arr(x)}[{at}:{at} + {n}], {arr(x)}[{at}:{at} + {n}])"
                      for x, at, n, _ in pieces.values() if x is not None]
                upd += tuple_lines(f"    {an} = {sqrt}(", sq + (["1.0"] if None in pieces
                                                              else []), ")", "        ",
                                   sep=" + ")
                a_norm = an
            upd += [f"    {p1} = {sqrt}({ha} / ({nrm2}({u}[{u0}:{u1}]) + {eps})) + {eps}",
                    f"    {p2} = {sqrt}({d} / ({a_norm} + {eps})) + {eps}",
                    f"    {s1} = 1.0 if {rng}.random() < 0.5 else -1.0",
                    f"    {s2} = 1.0 if {rng}.random() < 0.5 else -1.0"]
            for x, at, na, uo in pieces.values():
                if x is None:
                    upd.append(f"    {u}[{uo}] = {s1} * {p1} * {u}[{uo}] + {s2} * {p2}")
                else:
                    upd += [f"    for {j} in range({na}):",
                            f"        {u}[{index(uo, j)}] = {s1} * {p1} * {u}[{index(uo, j)}]"
                            f" + {s2} * {p2} * {arr(x)}[{index(at, j)}]"]
            upd += [f"    for {i} in range({lay.n_state}):",
                    f"        for {c} in range({c0}, {c1}):" if c0 else
                    f"        for {c} in range({c1}):",
                    f"            {A}[{i}, {c}] = {s1} / {p1} * {HA}[{i}, {c}] + "
                    f"{s2} / {p2} * {D}[{i}, {c}]"]
        return {"kron_gradient": "\n".join(grad) + "\n", "kron_update": "\n".join(upd) + "\n",
                **hprod.rendered(mb, lay, self.assoc)}


def _term(t) -> str:
    return t.param if t.is_bias else f"{t.param} @ {t.input}"
