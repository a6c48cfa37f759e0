"""UORO and projected UORO (Tallec & Ollivier 2017, Alg. 1; Cooijmans & Martens 2019).

G_t = ds_t/dθ is kept as a rank-one product s̃_t w̃_tᵀ (averaged over ``rank`` pairs).
With noise u_t at a cut z of the step (docs/compiler.md, projection spaces):

    s̃_t = ρ0 · H_t s̃_{t-1}  +  ρ1 · J^{s_t}_{z_t} Q u_t          (jvp downstream of z)
    w̃_t = w̃_{t-1} / ρ0     +  (u_tᵀ Q⁻¹ J^{z_t}_{θ}) / ρ1       (vjp upstream of z)

and the gradient estimate of step t is  ∂l/∂θ + (∂l/∂s_{t-1} · s̃_{t-1}) w̃_{t-1}.
ρ0 and ρ1 are Algorithm 1's normalizers (each pair's two factors get equal norms,
ε = 1e-7); z = s_t is plain UORO. Options: ``Q0`` (a fixed |z| x |z| matrix) and
``alpha`` (a fixed scalar schedule α_t = alpha (t+1)^-alpha_power replacing ρ1), as in
Cooijmans & Martens' "Toward improved variance reduction" (Q_t = α_t Q0).

UORO-T (``T`` > 1, state space) applies Algorithm 1 to T consecutive steps taken as
one transition: the block's losses are backpropagated exactly through the block, the
tangent s̃ is pushed through all T steps and the noise pulled back through them.
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

import numpy as np

from .. import autodiff
from .. import kernel as K
from ..analysis import NO_RECURRENT
from ..autodiff import ParamTangents
from ..codegen import Template
from ..errors import NotApplicable
from . import common, kron
from .base import EstimatorSpec, Option, chooser, positive_int
from .names import Argument, parse_projection
from .exact import segment_kernels, segment_layout


def uoro_step(th, s, x, y, w, g, rng, *, count, wnorm, s_tilde, w_tilde, v, vd, vb, thd,
              ybar, u, qu, hs, js, dw):
    """One step of UORO for one stream, rank RANK, with the noise at the cut z."""
    # gradient estimate: δθ + (δs · s̃) w̃, averaged over the rank-one pairs
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    for r in range(RANK):
        rg_axpy(g[0:NR], rg_dot(vb[0:S], s_tilde[r]) / RANK, w_tilde[r])
    for r in range(RANK):
        # H_t s̃_{t-1}: the forward tangent of the previous estimate
        jvp_state(th, v, s_tilde[r], vd, hs)
        # noise at the cut, pushed forward to the new state: J^s_z Q u
        rg_rademacher(rng, u)
        if WITH_Q:
            rg_matvec(qu, Q0.reshape((NZ, NZ)), u)
        else:
            qu = u      # Q = I
        if STATE_CUT:
            js = qu     # the cut is s_t itself: J^s_z = I
        else:
            seed_z(qu, vd, js, thd)
            if PARAMETER_CUT:
                jvp_z(th, v, thd, vd, js)
            else:
                jvp_z(th, v, vd, js)
        # ... and pulled back to the parameters: uᵀ Q⁻¹ J^z_θ
        if WITH_Q:
            rg_matvec(qu, Q0_INV_T.reshape((NZ, NZ)), u)
        if PARAMETER_CUT:
            dw = qu     # the cut is θ itself: J^z_θ = I
        else:
            rg_zero(vb)
            seed_z_bar(qu, vb, dw)
            vjp_z(th, v, vb, dw)
        # Algorithm 1's normalizers, then the rank-one reduction
        rho0 = math.sqrt(wnorm[r] / (rg_nrm2(hs) + EPS)) + EPS
        if FIXED_RHO1:
            rho1 = ALPHA * (count[0] + 1.0) ** (-ALPHA_POWER)
        else:
            rho1 = math.sqrt(rg_nrm2(dw[0:NR]) / (rg_nrm2(js) + EPS)) + EPS
        rg_axpby(s_tilde[r], rho0, hs, 0.0)
        rg_axpy(s_tilde[r], rho1, js)
        wnorm[r] = rg_axpby_nrm2(w_tilde[r], 1.0 / rho1, dw[0:NR], 1.0 / rho0)
    if FIXED_RHO1:
        count[0] += 1.0
    gather_new(v, s)
    return loss


def uoro_step_terms(th, s, x, y, w, g, rng, *, s_tilde, v, vd, vb, vb2, thd, ybar, u, qu,
                    hs, js, dw):
    """One step of UORO for one stream, rank RANK, with the noise at the cut z. Every
    recurrent parameter is one product's matrix or one bias, so for a product p = W @ â
    ∂l/∂W and uᵀ J^z_W are kept as the cotangents ζ_p and ν_p of p, and each parameter
    block is visited once: g += ζ_p ⊗ â + (δs · s̃) w̃ and w̃ = w̃/ρ0 + (ν_p ⊗ â)/ρ1."""
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    for r in range(RANK):
        # δs · s̃_{t-1}, for the gradient estimate δθ + (δs · s̃) w̃ (added below)
        c = rg_dot(vb[0:S], s_tilde[r]) / RANK
        # H_t s̃_{t-1}: the forward tangent of the previous estimate
        jvp_state(th, v, s_tilde[r], vd, hs)
        # noise at the cut, pushed forward to the new state: J^s_z Q u
        rg_rademacher(rng, u)
        if WITH_Q:
            rg_matvec(qu, Q0.reshape((NZ, NZ)), u)
        else:
            qu = u      # Q = I
        if STATE_CUT:
            js = qu     # the cut is s_t itself: J^s_z = I
        else:
            seed_z(qu, vd, js, thd)
            jvp_z(th, v, vd, js)
        # ... and pulled back: ν = uᵀ Q⁻¹ ∂z/∂p at the products, the biases' in dw
        if WITH_Q:
            rg_matvec(qu, Q0_INV_T.reshape((NZ, NZ)), u)
        rg_zero(vb2)
        seed_z_bar(qu, vb2, dw)
        if not NU_AT_PRODUCTS:     # else dw stays zero: no bias is upstream of the cut
            vjp_z(th, v, vb2, dw)
        # Algorithm 1's normalizers (|uᵀ J^z_θ| from the norms of ν and â), then one
        # pass over the recurrent blocks for the gradient estimate and w̃
        uoro_close(E, r, g, v, vb, vb2, dw, hs, js, c)
    gather_new(v, s)
    return loss


def uoro_batch(th, states, E, x, y, w, g, rng, losses, *, v, vd, vb, vb2, ybar, u, qu, sd,
               hs, js, dw, c, thd):
    """``uoro_step_terms`` for B streams at once: the forward pass, the backprop, H_t s̃
    and the noise's passes are each one kernel over the batch, whose products are GEMMs
    (W @ [a_1 ... a_B]); what is each stream's own (s̃, w̃ and Algorithm 1's normalizers)
    is done stream by stream (``uoro_seed``, ``uoro_close``)."""
    B = states.shape[0]
    forward_and_backprop_b(th, states, x, y, w, v, vb, g, ybar, losses)
    # the noise, drawn in the order the one-stream step draws it
    for b in range(B):
        for r in range(RANK):
            rg_rademacher(rng, u[b, r])
    for r in range(RANK):
        # H_t s̃_{t-1} for every stream, and δs · s̃_{t-1}
        for b in range(B):
            c[b] = uoro_seed(E[b], r, vb[b, 0:S], sd[b])
        jvp_state_b(th, v, sd, vd, hs)
        # noise at the cut, pushed forward to the new state: J^s_z Q u
        for b in range(B):
            if WITH_Q:
                rg_matvec(qu[b], Q0.reshape((NZ, NZ)), u[b, r])
            else:
                rg_copy(qu[b], u[b, r])
        if STATE_CUT:
            js = qu     # the cut is s_t itself: J^s_z = I
        else:
            for b in range(B):      # (no parameter is in z: thd is empty)
                seed_z(qu[b], vd[b], js[b], thd[b])
            jvp_z_b(th, v, vd, js)
        # ... and pulled back: ν = uᵀ Q⁻¹ ∂z/∂p at the products, the biases' in dw
        if WITH_Q:
            for b in range(B):
                rg_matvec(qu[b], Q0_INV_T.reshape((NZ, NZ)), u[b, r])
        rg_zero2(vb2)
        for b in range(B):
            seed_z_bar(qu[b], vb2[b], dw[b])
        if not NU_AT_PRODUCTS:
            vjp_z_b(th, v, vb2, dw)
        for b in range(B):
            uoro_close(E[b], r, g, v[b], vb[b], vb2[b], dw[b], hs[b], js[b], c[b])
    for b in range(B):
        gather_new(v[b], states[b])


def uoro_seed(E, r, ds, seed, *, s_tilde):
    """One stream's δs · s̃_r / RANK; s̃_r copied into the jvp's seed."""
    rg_copy(seed, s_tilde[r])
    return rg_dot(ds, s_tilde[r]) / RANK


def uoro_close(E, r, g, v, vb, vb2, dw, hs, js, c, *, count, wnorm, s_tilde, w_tilde):
    """One stream's rank-one pair r after the step's passes (this stream's, or every
    stream's at once): Algorithm 1's normalizers, s̃_r = ρ0 H s̃_r + ρ1 J^s_z Q u, and one
    pass over the recurrent blocks for the gradient estimate and w̃_r."""
    rho0 = math.sqrt(wnorm[r] / (rg_nrm2(hs) + EPS)) + EPS
    if FIXED_RHO1:
        rho1 = ALPHA * (count[0] + 1.0) ** (-ALPHA_POWER)
    else:
        rho1 = math.sqrt(terms_norm(v, vb2, dw) / (rg_nrm2(js) + EPS)) + EPS
    rg_axpby(s_tilde[r], rho0, hs, 0.0)
    rg_axpy(s_tilde[r], rho1, js)
    wnorm[r] = terms_update(g, w_tilde[r], v, vb, vb2, dw, c, r == 0, 1.0 / rho1,
                            1.0 / rho0)
    if FIXED_RHO1:
        if r == RANK - 1:
            count[0] += 1.0


def uorot_flush(th, g, rng, *, wnorm, s_tilde, w_tilde, pos, traj, ybars, vd, vb, thb,
                hs, hs2, nu, sb, dw):
    """UORO-T: Algorithm 1 with the stored L <= T steps taken as one transition."""
    L = int(pos[0])
    if L == 0:
        return
    # the block's losses backpropagated exactly through it: δθ, and δs at its start
    rg_zero(thb)
    backprop_segment(th, traj, ybars, L, 0, vb, sb, thb)
    rg_axpy(g, 1.0, thb)
    for r in range(RANK):
        rg_axpy(g[0:NR], rg_dot(sb, s_tilde[r]) / RANK, w_tilde[r])
    for r in range(RANK):
        # s̃ pushed forward through the L steps
        rg_copy(hs, s_tilde[r])
        for k in range(L):
            jvp_state(th, traj[k], hs, vd, hs2)
            rg_copy(hs, hs2)
        # ν drawn at the block's end and pulled back through the L steps
        rg_rademacher(rng, nu)
        rg_copy(sb, nu)
        rg_zero(dw)
        for k in range(L - 1, -1, -1):
            rg_zero(vb)
            scatter_new(sb, vb, dw)
            vjp_state(th, traj[k], vb, dw)
            rg_copy(sb, vb[0:S])
        rho0 = math.sqrt(wnorm[r] / (rg_nrm2(hs) + EPS)) + EPS
        rho1 = math.sqrt(rg_nrm2(dw[0:NR]) / (rg_nrm2(nu) + EPS)) + EPS
        rg_axpby(s_tilde[r], rho0, hs, 0.0)
        rg_axpy(s_tilde[r], rho1, nu)
        wnorm[r] = rg_axpby_nrm2(w_tilde[r], 1.0 / rho1, dw[0:NR], 1.0 / rho0)
    pos[0] = 0.0


def uorot_reset(*, wnorm, s_tilde, w_tilde, pos):
    """A state reset (after the flush): the estimate restarts from zero."""
    rg_zero(wnorm)
    rg_zero2(s_tilde)
    rg_zero2(w_tilde)
    pos[0] = 0.0


class ProjectedUORO(EstimatorSpec):
    """Projected UORO at a cut ``projection`` ("state" | "preactivation" | "parameter" |
    node names; default: the analysis's choice)."""

    name = "projected-uoro"
    stochastic = True
    options = (
        Option("projection", "the cut: state, preactivation, parameter or comma-separated "
                             "node names (default: the analysis's choice)",
               read=parse_projection),
        Option("rank", "rank-one pairs, averaged"),
        Option("Q0", "a fixed invertible matrix of the projection space (dim x dim)",
               read=None),
        Option("alpha", "a fixed ρ1 = alpha (t+1)^-alpha_power instead of Algorithm 1's",
               read=None),
        Option("alpha_power", "the decay of a fixed ρ1", read=None))
    argument = Argument("[", "projection", parse_projection,
                        "projected-uoro[SPACE or NODES], a space (state, preactivation, "
                        "parameter) or comma-separated node names")

    def __init__(self, lay, sched, analysis, projection=None, rank=1, Q0=None, alpha=None,
                 alpha_power=0.0, **opts):
        super().__init__(lay, sched, analysis, **opts)
        if not lay.n_rec:
            raise NotApplicable(f"{self.name} does not apply to cell '{lay.cell.name}': "
                                f"{NO_RECURRENT}")
        self.space = analysis.space(projection)
        self.rank = positive_int(rank, f"{self.name}: rank")
        self.alpha = None if alpha is None else float(alpha)
        if alpha is not None and not (np.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"{self.name}: alpha must be a positive number, got {alpha!r}")
        self.alpha_power = float(alpha_power)
        nz = self.space.dim
        if Q0 is None:
            self.Q0 = None
        else:
            Q0 = np.asarray(Q0, dtype=np.float64)
            if Q0.shape != (nz, nz):
                raise ValueError(f"{self.name}: Q0 must be {nz}x{nz} (the dimension of the "
                                 f"{self.space.label} space), got {Q0.shape}")
            if not np.all(np.isfinite(Q0)) or np.linalg.cond(Q0) > 1e12:
                raise ValueError(f"{self.name}: Q0 must be finite and invertible")
            self.Q0 = Q0
        # the one pass over the recurrent blocks reads each product's input from the
        # step's values: a product of a constant keeps the general step
        self.groups = analysis.one_term_each if self.space.kind != "parameter" else None
        if self.groups and any(lay.loc[a].buf != "v" for grp in self.groups
                               for a in grp.inputs):
            self.groups = None
        # uᵀ Q⁻¹ J^z_θ; with one term per parameter, only the biases' (the matrices' stay
        # as ν at the products): nothing at all when the cut is the products themselves
        self.vjp_z = None if self.space.kind == "parameter" else self.vjp(
            "vjp_z", list(self.space.ids), ("params",), overwrite=True,
            skip=self._products())
        self.nu_at_products = self.groups is not None and not self.vjp_z.body

    def describe(self):
        extra = f", rank {self.rank}" if self.rank > 1 else ""
        return f"{self.name}[{self.space.label}{extra}]"

    def flops(self):
        """The projection space's cost (``Analysis`` prices every cut the same way)."""
        return self.space.cost["flops"]

    def kernels(self):
        lay, z, kind = self.lay, list(self.space.ids), self.space.kind
        ks = [self.jvp("jvp_state")]
        if kind != "state":
            if kind == "parameter":   # the noise is the parameters' tangent
                ks += [autodiff.scatter_add(lay, "seed_z", z, "vd", clear=True),
                       self.jvp("jvp_z", seeds=[], params=ParamTangents.DENSE)]
            else:
                ks += [autodiff.scatter_add(lay, "seed_z", z, "vd", clear=True),
                       self.jvp("jvp_z", seeds=[], inject=tuple(z))]
        if kind != "parameter":
            ks.append(autodiff.scatter_add(lay, "seed_z_bar", z, "vb"))
            if not self.nu_at_products:
                ks.append(self.vjp_z)
        return ks

    def _products(self):
        """The matrices of the products W @ â (one term per recurrent parameter)."""
        return [t.param_id for grp in self.groups for ts in grp.terms for t in ts
                if not t.is_bias] if self.groups is not None else []

    def base_kernels(self):
        ks = super().base_kernels()
        if self.groups is None:
            return ks
        # the loss's cotangents of the products' matrices stay at the products (ζ), for
        # terms_update; the biases' accumulate into g as usual
        return [self.vjp("vjp_out", [self.lay.loss_output_id], skip=self._products())
                if k.name == "vjp_out" else k for k in ks]

    def choices(self):
        return {"WITH_Q": self.Q0 is not None, "STATE_CUT": self.space.kind == "state",
                "PARAMETER_CUT": self.space.kind == "parameter",
                "FIXED_RHO1": self.alpha is not None,
                "NU_AT_PRODUCTS": self.nu_at_products,
                **(self._terms_choices() if self.groups is not None else {})}

    def _terms_choices(self):
        """PRODUCTS: some recurrent block is a product's matrix; BIASES: some is a
        bias."""
        return {"PRODUCTS": any(grp.inputs for grp in self.groups),
                "BIASES": any(grp.bias for grp in self.groups)}

    def constants(self):
        out = {"RANK": self.rank, "EPS": 1e-7}
        if self.groups is not None:
            out.update(self.terms_tables())
        if self.Q0 is not None:
            out.update({"NZ": self.space.dim, "Q0": self.Q0.ravel(),
                        "Q0_INV_T": np.linalg.inv(self.Q0).T.ravel()})
        if self.alpha is not None:
            out.update({"ALPHA": self.alpha, "ALPHA_POWER": self.alpha_power})
        return out

    def state_layout(self):
        lay = self.lay
        out = {"count": (1,)} if self.alpha is not None else {}
        return {**out, "wnorm": (self.rank,), "s_tilde": (self.rank, lay.n_state),
                "w_tilde": (self.rank, lay.n_rec)}

    def scratch_layout(self):
        lay = self.lay
        nz = self.space.dim
        out = {**self.base_scratch(), "thd": (lay.n_rec,), "u": (nz,), "qu": (nz,),
               "hs": (lay.n_state,), "js": (lay.n_state,), "dw": (lay.n_params,)}
        if self.groups is not None:
            out["vb2"] = (lay.n_values,)
        return out

    def templates(self):
        if self.groups is None:
            return [Template(common.forward_and_backprop, "forward_and_backprop"),
                    Template(uoro_step, "est_step", "step")]
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(terms_norm, "terms_norm"),
                Template(terms_update, "terms_update"),
                Template(uoro_step_terms, "est_step", "step"),
                Template(uoro_close, "uoro_close", "part")]

    def batch_templates(self):
        if self.groups is None:     # the general step: forward and backprop batched
            return super().batch_templates()
        return [Template(common.forward_and_backprop_b, "forward_and_backprop_b"),
                Template(uoro_batch, "est_batch", "batch"),
                Template(uoro_seed, "uoro_seed", "part")]

    def batch_kernels(self, kernels):
        if self.groups is None:
            return super().batch_kernels(kernels)
        # the forward pass and backprop (the base's), then H_t s̃ and the noise's passes
        by = {k.name: k for k in kernels}
        out = super().batch_kernels(kernels) + [K.batched(by["jvp_state"], "jvp_state_b")]
        if "jvp_z" in by:
            out.append(K.batched(by["jvp_z"], "jvp_z_b"))
        if not self.nu_at_products:
            out.append(K.batched(by["vjp_z"], "vjp_z_b"))
        return out

    def batch_scratch_layout(self):
        if self.groups is None:
            return super().batch_scratch_layout()
        lay, nz = self.lay, self.space.dim
        return {**super().batch_scratch_layout(), "vd": (lay.n_values,),
                "vb2": (lay.n_values,), "u": (self.rank, nz), "qu": (nz,),
                "sd": (lay.n_state,), "hs": (lay.n_state,), "js": (lay.n_state,),
                "dw": (lay.n_params,), "c": (), "thd": (0,)}

    def terms_tables(self) -> dict:
        """The recurrent blocks, for ``terms_norm`` and ``terms_update``: per product
        (``UORO_PRODUCTS``) its matrix's offset in th (w̃'s blocks follow th's
        recurrent blocks, both from 0), rows, input length, and the offsets in v of the
        product (ζ_p in vb, ν_p in vb2) and of its input â_p; per bias (``UORO_BIASES``)
        its offset in th and length."""
        ts = kron.terms(self.lay, self.groups)
        products = tuple((t.param, t.rows, t.na, t.node, self.lay.loc[t.term.input_id].off)
                         for t in ts if not t.term.is_bias)
        biases = tuple((t.param, t.rows) for t in ts if t.term.is_bias)
        return {**({"UORO_PRODUCTS": products} if products else {}),
                **({"UORO_BIASES": biases} if biases else {})}


def terms_norm(v, nb, dw):
    """|uᵀ J^z_θ|: Σ_p |ν_p|² |â_p|² over the products (each matrix's is one outer
    product), plus the biases' |dw|²."""
    acc = 0.0
    if PRODUCTS:
        for p, m, na, pz, pa in UORO_PRODUCTS:
            acc += rg_dot(nb[pz:pz + m], nb[pz:pz + m]) * rg_dot(v[pa:pa + na],
                                                                 v[pa:pa + na])
    if BIASES:
        for p, m in UORO_BIASES:
            acc += rg_dot(dw[p:p + m], dw[p:p + m])
    return math.sqrt(acc)


def terms_update(g, wt, v, zb, nb, dw, c, first, a, b):
    """Per recurrent block: g += ζ_p ⊗ â_p (once; a bias's is in g already) + c w̃, and
    w̃ = b w̃ + a ν_p ⊗ â_p (a bias: + a dw); returns |w̃|."""
    acc = 0.0
    if PRODUCTS:
        for p0, m, na, pz, pa in UORO_PRODUCTS:
            for i in range(m):
                zi = zb[pz + i] if first else 0.0
                ni = a * nb[pz + i]
                for j in range(na):
                    p = p0 + i * na + j
                    aj = v[pa + j]
                    g[p] += zi * aj + c * wt[p]
                    t = b * wt[p] + ni * aj
                    wt[p] = t
                    acc += t * t
    if BIASES:
        for p0, m in UORO_BIASES:
            for p in range(p0, p0 + m):
                g[p] += c * wt[p]
                t = b * wt[p] + a * dw[p]
                wt[p] = t
                acc += t * t
    return math.sqrt(acc)


class UORO(ProjectedUORO):
    """Plain UORO: projection in state space (Tallec & Ollivier Alg. 1)."""

    name = "uoro"
    options = tuple(o for o in ProjectedUORO.options if o.name != "projection")
    argument = None

    def __init__(self, lay, sched, analysis, rank=1, **opts):
        if "projection" in opts:
            raise TypeError("uoro projects in state space; use 'projected-uoro' with "
                            "projection=... for other cuts")
        super().__init__(lay, sched, analysis, projection="state", rank=rank, **opts)

    def describe(self):
        return "uoro" + (f"[rank {self.rank}]" if self.rank > 1 else "")


class UOROT(EstimatorSpec):
    """UORO-T: Algorithm 1 with T consecutive steps taken as one transition (state
    space), the block's own losses backpropagated exactly."""

    name = "uoro"
    stochastic = True
    segment = True
    options = (Option("rank", "rank-one pairs, averaged"),
               Option("T", "steps per transition (UORO-T)"))

    def __init__(self, lay, sched, analysis, rank=1, T=2, **opts):
        for opt in ("Q0", "alpha", "alpha_power", "projection"):
            if opt in opts:
                raise ValueError(f"uoro: {opt} applies to T = 1 (use projected-uoro)")
        super().__init__(lay, sched, analysis, **opts)
        if not lay.n_rec:
            raise NotApplicable(f"uoro does not apply to cell '{lay.cell.name}': "
                                f"{NO_RECURRENT}")
        self.rank = positive_int(rank, "uoro: rank")
        self.T = positive_int(T, "uoro: T", lo=2)

    def flops(self):
        """base + 2 F (the block's backprop) + per pair: s̃ pushed and ν pulled back
        through each step (one column each way) and the O(S + P) updates."""
        lay, r = self.lay, self.rank
        return self.base_flops() + 2 * lay.flops() + self.push_flops(r) + \
            r * (2 * lay.flops() + 4 * (lay.n_state + lay.n_rec))

    def kernels(self):
        lay = self.lay
        return [self.jvp("jvp_state"), self.vjp("vjp_state", lay.new_state)] + \
            segment_kernels(self)

    def constants(self):
        return {"RANK": self.rank, "EPS": 1e-7}

    def state_layout(self):
        lay = self.lay
        return {"wnorm": (self.rank,), "s_tilde": (self.rank, lay.n_state),
                "w_tilde": (self.rank, lay.n_rec), **segment_layout(self)}

    def scratch_layout(self):
        lay = self.lay
        return {"vd": (lay.n_values,), "vb": (lay.n_values,), "thb": (lay.n_params,),
                "hs": (lay.n_state,), "hs2": (lay.n_state,), "nu": (lay.n_state,),
                "sb": (lay.n_state,), "dw": (lay.n_params,)}

    def segment_length(self, T=None):
        return self.T

    def templates(self):
        return [Template(common.backprop_segment, "backprop_segment"),
                Template(common.segment_step, "est_step", "step"),
                Template(uorot_flush, "est_flush", "flush"),
                Template(uorot_reset, "est_reset", "reset")]

    def describe(self):
        return f"uoro[{f'rank {self.rank}, ' if self.rank > 1 else ''}T={self.T}]"


@chooser(UORO, UOROT)
def uoro(lay, sched, analysis, T=1, **opts) -> EstimatorSpec:
    """``uoro``: plain UORO, or UORO-T for T > 1."""
    if positive_int(T, "uoro: T") > 1:
        return UOROT(lay, sched, analysis, T=T, **opts)
    return UORO(lay, sched, analysis, **opts)
