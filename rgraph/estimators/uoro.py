"""UORO and projected UORO (Tallec & Ollivier 2017, Alg. 1; Cooijmans & Martens 2019).

G_t = ds_t/dθ is kept as a rank-one product s̃_t w̃_tᵀ (averaged over ``rank`` pairs).
With noise u_t at a cut z of the step (DESIGN.md §3):

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
# ruff: noqa: F821  (template names are defined in the generated module)
from __future__ import annotations

import numpy as np

from . import common
from .base import EstimatorSpec, positive_int, renamed
from .exact import tbptt_step
from .. import kernel as K


def uoro_step(th, s, E, x, y, w, g, rng, W):
    """One step of (projected) UORO for one stream, rank RANK."""
    count, wnorm, s_tilde, w_tilde = est_views(E)
    v, vd, vb, thd, ybar, u, qu, hs, js, dw = W
    # gradient estimate: δθ + (δs · s̃) w̃, averaged over the rank-one pairs
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    for r in range(RANK):
        rg_axpy(g[0:NR], rg_dot(vb[0:S], s_tilde[r]) / RANK, w_tilde[r])
    for r in range(RANK):
        # H_t s̃_{t-1}: the forward tangent of the previous estimate
        jvp_state(th, v, thd, s_tilde[r], vd, hs)
        # noise at the cut: J^s_z Q u forward ...
        rg_rademacher(rng, u)
        noise_forward(u, qu)
        seed_z(qu, vd, js, thd)
        jvp_z(th, v, thd, hs, vd, js)
        # ... and uᵀ Q⁻¹ J^z_θ backward
        noise_backward(u, qu)
        rg_zero(vb)
        seed_z_bar(qu, vb, dw)
        vjp_z(th, v, vb, dw)
        # Algorithm 1's normalizers, then the rank-one reduction
        rho0 = math.sqrt(wnorm[r] / (rg_nrm2(hs) + EPS)) + EPS
        if ALPHA > 0.0:
            rho1 = ALPHA * (count[0] + 1.0) ** (-ALPHA_POWER)
        else:
            rho1 = math.sqrt(rg_nrm2(dw[0:NR]) / (rg_nrm2(js) + EPS)) + EPS
        rg_axpby(s_tilde[r], rho0, hs, 0.0)
        rg_axpy(s_tilde[r], rho1, js)
        wnorm[r] = rg_axpby_nrm2(w_tilde[r], 1.0 / rho1, dw[0:NR], 1.0 / rho0)
    count[0] += 1.0
    gather_new(v, s)
    return loss


def uorot_flush(th, E, g, rng, W):
    """UORO-T: Algorithm 1 with the stored L <= T steps taken as one transition."""
    count, wnorm, s_tilde, w_tilde, pos, traj, ybars = est_views(E)
    vd, vb, thb, thd, hs, hs2, nu, sb, dw = W
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
            jvp_state(th, traj[k], thd, hs, vd, hs2)
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
    count[0] += 1.0
    pos[0] = 0.0


def uorot_reset(E):
    """A state reset (after the flush): the estimate restarts from zero."""
    count, wnorm, s_tilde, w_tilde, pos, traj, ybars = est_views(E)
    rg_zero(wnorm)
    rg_zero2(s_tilde)
    rg_zero2(w_tilde)
    pos[0] = 0.0


def noise_identity(u, qu):
    """Q = I: the noise goes in as drawn."""
    rg_copy(qu, u)


def noise_q0(u, qu):
    """Q u with the fixed matrix Q0."""
    rg_matvec(qu, Q0.reshape((NZ, NZ)), u)


def noise_q0_inv_t(u, qu):
    """Q⁻ᵀ u with the fixed matrix Q0 (so that uᵀ Q⁻¹ J = (Q⁻ᵀ u)ᵀ J)."""
    rg_matvec(qu, Q0_INV_T.reshape((NZ, NZ)), u)


class ProjectedUORO(EstimatorSpec):
    """Projected UORO at a cut ``projection`` ("state" | "preactivation" | "parameter" |
    node names; default: the analysis's choice)."""

    name = "projected-uoro"
    stochastic = True

    def __init__(self, prog, analysis, projection=None, rank=1, Q0=None, alpha=None,
                 alpha_power=0.0, **opts):
        super().__init__(prog, analysis, **opts)
        self.space = analysis.space(projection)
        self.rank = positive_int(rank, f"{self.name}: rank")
        self.alpha = 0.0 if alpha is None else float(alpha)
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

    def describe(self):
        extra = f", rank {self.rank}" if self.rank > 1 else ""
        return f"{self.name}[{self.space.label}{extra}]"

    def kernels(self):
        p, z = self.prog, list(self.space.ids)
        ks = [p.jvp("jvp_state"), p.scatter_add("seed_z", z, "vd", zero_first=True),
              p.scatter_add("seed_z_bar", z, "vb")]
        if self.space.kind == "state":       # z = s_t: J^s_z = I, the noise is the tangent
            S = p.n_state
            ks[1] = K.Kernel("seed_z", ("src", "vd", "nd", "thd"),
                             "The cut is s_t itself: the noise is the new state's tangent.",
                             body=[K.Copy(K.Ref("nd", 0, S), K.Ref("src", 0, S))])
            ks.append(K.Kernel("jvp_z", ("th", "v", "thd", "sd", "vd", "nd"),
                               "The cut is s_t itself: nothing to push forward."))
            ks.append(p.vjp("vjp_z", z, ("params",), fresh=True))
        elif self.space.kind == "parameter":
            ks[-1] = p.scatter_add("seed_z_bar", z, "vb", zero_first=True)
            ks.append(p.jvp("jvp_z", seeds=[], params="dense"))
            ks.append(K.Kernel("vjp_z", ("th", "v", "vb", "thb"),
                               "The cut is θ itself: nothing to pull back."))
        else:
            ks.append(p.jvp("jvp_z", seeds=[], inject=z))
            ks.append(p.vjp("vjp_z", z, ("params",), fresh=True))
        return ks

    def constants(self):
        nz = self.space.dim
        q0 = np.eye(1) if self.Q0 is None else self.Q0
        qi = np.eye(1) if self.Q0 is None else np.linalg.inv(self.Q0).T
        return {"RANK": self.rank, "NZ": nz, "EPS": 1e-7, "ALPHA": self.alpha,
                "ALPHA_POWER": self.alpha_power, "Q0": q0.ravel(), "Q0_INV_T": qi.ravel()}

    def state_layout(self):
        p = self.prog
        return {"count": (1,), "wnorm": (self.rank,), "s_tilde": (self.rank, p.n_state),
                "w_tilde": (self.rank, p.n_rec)}

    def scratch_layout(self):
        p = self.prog
        nz = self.space.dim
        return {"v": (p.n_values,), "vd": (p.n_values,), "vb": (p.n_values,),
                "thd": (p.n_rec,), "ybar": (self.nout,), "u": (nz,), "qu": (nz,),
                "hs": (p.n_state,), "js": (p.n_state,), "dw": (p.n_params,)}

    def functions(self):
        if self.Q0 is None:
            noise = [renamed(noise_identity, "noise_forward"),
                     renamed(noise_identity, "noise_backward")]
        else:
            noise = [renamed(noise_q0, "noise_forward"),
                     renamed(noise_q0_inv_t, "noise_backward")]
        return common.TEMPLATES + noise + [
            renamed(uoro_step, "est_step"),
            renamed(common.est_nothing_to_flush, "est_flush"),
            renamed(common.est_zero_state, "est_reset")]


class UORO(ProjectedUORO):
    """Plain UORO: projection in state space (Tallec & Ollivier Alg. 1); ``T`` > 1 gives
    UORO-T."""

    name = "uoro"

    def __init__(self, prog, analysis, rank=1, T=1, **opts):
        if "projection" in opts:
            raise TypeError("uoro projects in state space; use 'projected-uoro' with "
                            "projection=... for other cuts")
        super().__init__(prog, analysis, projection="state", rank=rank, **opts)
        self.T = positive_int(T, "uoro: T")
        if self.T > 1:
            self.segment = True
            if self.Q0 is not None or self.alpha:
                raise ValueError("uoro: Q0 and alpha apply to T = 1 (use projected-uoro)")

    def kernels(self):
        if self.T == 1:
            return super().kernels()
        p = self.prog
        return [p.jvp("jvp_state"),
                p.vjp("vjp_step", p.output_ids_loss + p.new_state, ("params", "state")),
                p.vjp("vjp_state", p.new_state, ("params", "state")),
                p.scatter_add("scatter_new", p.new_state, "vb")]

    def state_layout(self):
        out = super().state_layout()
        if self.T > 1:
            out.update({"pos": (1,), "traj": ("K", self.prog.n_values),
                        "ybars": ("K", self.nout)})
        return out

    def scratch_layout(self):
        if self.T == 1:
            return super().scratch_layout()
        p = self.prog
        return {"vd": (p.n_values,), "vb": (p.n_values,), "thb": (p.n_params,),
                "thd": (p.n_rec,), "hs": (p.n_state,), "hs2": (p.n_state,),
                "nu": (p.n_state,),
                "sb": (p.n_state,), "dw": (p.n_params,)}

    def segment_length(self, T=None):
        return self.T

    def functions(self):
        if self.T == 1:
            return super().functions()
        return [common.backprop_segment, renamed(tbptt_step, "est_step"),
                renamed(uorot_flush, "est_flush"), renamed(uorot_reset, "est_reset")]

    def describe(self):
        parts = [f"rank {self.rank}"] if self.rank > 1 else []
        if self.T > 1:
            parts.append(f"T={self.T}")
        return "uoro" + (f"[{', '.join(parts)}]" if parts else "")
