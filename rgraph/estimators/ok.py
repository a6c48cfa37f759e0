"""OK: the optimal Kronecker-sum approximation (Benzing, Gauy, Mujika, Martinsson &
Steger 2019), on KF-RTRL's structure (``kfrtrl``): every recurrent parameter enters as
``z = W @ â`` with â independent of θ, so per input group F_t = D_t ⊗ âᵀ.

Per input group, G_t ≈ Σ_{k<r} A_k ⊗ u_kᵀ (r = ``rank`` Kronecker pairs). One step
turns the r pairs into r + 1:

    H_t A_1 ⊗ u_1ᵀ + ... + H_t A_r ⊗ u_rᵀ  +  D_t ⊗ â_tᵀ

and ``ok_reduce`` maps them back to r pairs with the unbiased reduction of minimum
variance: orthonormal bases of the u's and of the vec(A)'s (two QRs), the SVD of the
(r+1) x (r+1) core C = Σ σ_i ℓ_i ρ_iᵀ, then

* the m largest singular values are kept exactly, m the smallest integer for which the
  k = r + 1 - m others satisfy (k - 1) σ_m <= s = σ_m + ... + σ_r;
* the k others, diag(σ_m .. σ_r), become k - 1 pairs s/(k-1) · (Σ_i c_i q_il ℓ_i) ⊗
  (Σ_i c_i q_il ρ_i), with c_i random signs and q_1 .. q_{k-1} an orthonormal basis of
  the complement of x, x_i = sqrt(1 - (k-1) σ_i / s): E[c (I - x xᵀ) c] = diag(1 - x_i²)
  = (k-1)/s · diag(σ), so the reduction is unbiased.

With r = 1 this is KF-RTRL's step with the variance-optimal mixing of its two pairs.
The gradient of step t is (A_{k}ᵀ ∂l/∂s_{t-1})[rows of each sum] ⊗ u_k summed over the
pairs, plus the direct ∂l/∂W (``kron_gradient``, shared with KF-RTRL).
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

import numpy as np

from ..codegen import Template, index
from ..errors import NotApplicable
from . import common
from .base import positive_int
from .kfrtrl import KFRTRL


def ok_step(th, s, x, y, w, g, rng, *, A, u, v, vd, vz, vb, ybar, HA, D, cA, ahat, Ut,
            Vt):
    """One step of OK for one stream: RANK Kronecker pairs per input group."""
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    # (∂l/∂s_{t-1}) G_{t-1} with G ≈ Σ_k A_k ⊗ u_k: each pair as in KF-RTRL
    np.dot(vb[0:S], A, cA)
    for k in range(RANK):
        kron_gradient(g, cA[k * NZ:(k + 1) * NZ], u[k])
    # H_t A_k for every pair at once (A_k are the column blocks of A), and D_t
    jvp_state_m(th, v, A, vd, HA)
    jvp_z_m(th, v, vz, D)
    kron_input(v, ahat)
    for grp in range(NGROUPS):
        c0, c1 = GROUP_COLS[grp], GROUP_COLS[grp + 1]
        a0, a1 = GROUP_INPUTS[grp], GROUP_INPUTS[grp + 1]
        # the r + 1 pairs of the group: (H A_k, u_k) and (D, â)
        for k in range(RANK):
            Ut[k, 0:a1 - a0] = u[k, a0:a1]
            Vt[k, :, 0:c1 - c0] = HA[:, k * NZ + c0:k * NZ + c1]
        Ut[RANK, 0:a1 - a0] = ahat[a0:a1]
        Vt[RANK, :, 0:c1 - c0] = D[:, c0:c1]
        ok_reduce(Ut, Vt, a1 - a0, c1 - c0, rng)
        for k in range(RANK):
            u[k, a0:a1] = Ut[k, 0:a1 - a0]
            A[:, k * NZ + c0:k * NZ + c1] = Vt[k, :, 0:c1 - c0]
    gather_new(v, s)
    return loss


def ok_reduce(Ut, Vt, na, nz, rng):
    """The minimum-variance unbiased RANK-pair approximation of the RANK + 1 pairs
    Σ_k Vt[k] ⊗ Ut[k] (only the first na entries of each Ut[k] and nz columns of each
    Vt[k] are used), written back into the first RANK pairs."""
    U = Ut[:, 0:na].T.copy()                                       # na x (r+1)
    V = np.ascontiguousarray(Vt[:, :, 0:nz]).reshape((RANK + 1, S * nz)).T.copy()
    Qu, Ru = np.linalg.qr(U)
    Qv, Rv = np.linalg.qr(V)
    core = np.ascontiguousarray(Ru) @ np.ascontiguousarray(Rv.T)
    L, sig, Rt = np.linalg.svd(core, full_matrices=False)
    left = np.ascontiguousarray(Qu) @ L                       # ℓ_i as columns, na x kk
    right = np.ascontiguousarray(Qv) @ np.ascontiguousarray(Rt.T)    # ρ_i, (S nz) x kk
    kk = sig.shape[0]
    Ut[:, 0:na] = 0.0
    Vt[:, :, 0:nz] = 0.0
    if kk <= RANK or sig[RANK] <= 0.0:      # rank <= r already: kept exactly
        for i in range(min(kk, RANK)):
            r = math.sqrt(sig[i])
            Ut[i, 0:na] = r * left[:, i]
            Vt[i, :, 0:nz] = (r * right[:, i]).reshape((S, nz))
        return
    # m: the singular values kept exactly
    m = 0
    while m < RANK - 1 and (RANK - m) * sig[m] > np.sum(sig[m:]):
        m += 1
    tail = np.sum(sig[m:])
    for i in range(m):
        r = math.sqrt(sig[i])
        Ut[i, 0:na] = r * left[:, i]
        Vt[i, :, 0:nz] = (r * right[:, i]).reshape((S, nz))
    # the k = r + 1 - m others: k - 1 pairs with random signs
    k = RANK + 1 - m
    x = np.empty(k)
    for i in range(k):
        x[i] = math.sqrt(max(0.0, 1.0 - (k - 1) * sig[m + i] / tail))
    # q: an orthonormal basis of x's complement (columns 1..k-1 of the Householder
    # reflection that maps e_1 to x)
    hw = x.copy()
    hw[0] -= 1.0
    hn = np.dot(hw, hw)
    q = np.eye(k)
    if hn > 1e-30:
        q -= (2.0 / hn) * np.outer(hw, hw)
    scale = math.sqrt(tail / (k - 1))
    for i in range(k):
        c = scale if rng.random() < 0.5 else -scale
        for j in range(k - 1):
            Ut[m + j, 0:na] += (c * q[i, j + 1]) * left[:, m + i]
            Vt[m + j, :, 0:nz] += ((c * q[i, j + 1]) * right[:, m + i]).reshape((S, nz))


class OK(KFRTRL):
    name = "ok"

    def __init__(self, lay, sched, analysis, rank=2, **opts):
        k = analysis.kronecker
        if not k.ok:
            raise NotApplicable(f"ok does not apply to cell '{lay.cell.name}': {k.reason}")
        super().__init__(lay, sched, analysis, **opts)
        self.rank = positive_int(rank, "ok: rank r")

    def describe(self):
        groups = f", {len(self.groups)} groups" if len(self.groups) > 1 else ""
        return f"ok(r={self.rank}{groups})"

    def constants(self):
        cols, inputs = [0], [0]
        for grp in self.groups:
            cols.append(cols[-1] + grp.dim_z)
            inputs.append(inputs[-1] + grp.dim_input)
        return {"RANK": self.rank, "NZ": self.nz, "NGROUPS": len(self.groups),
                "GROUP_COLS": np.array(cols), "GROUP_INPUTS": np.array(inputs)}

    def state_layout(self):
        return {"A": (self.lay.n_state, self.rank * self.nz), "u": (self.rank, self.na)}

    def scratch_layout(self):
        lay, r = self.lay, self.rank
        nz_max = max(grp.dim_z for grp in self.groups)
        na_max = max(grp.dim_input for grp in self.groups)
        return {**self.base_scratch(), "vd": (lay.n_values, r * self.nz),
                "vz": (lay.n_values, self.nz),
                "HA": (lay.n_state, r * self.nz), "D": (lay.n_state, self.nz),
                "cA": (r * self.nz,), "ahat": (self.na,), "Ut": (r + 1, na_max),
                "Vt": (r + 1, lay.n_state, nz_max)}

    def templates(self):
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(ok_reduce, "ok_reduce"),
                Template(ok_step, "est_step", "step")]

    def rendered(self, mb):
        out = super().rendered(mb)
        del out["kron_update"]
        local = mb.namer.child()
        v, ahat, j = (local.claim(x) for x in ("v", "ahat", "j"))
        lines = [f"def kron_input({v}, {ahat}):",
                 '    """â of every input group, stacked (a bias\'s piece is the constant '
                 '1)."""']
        for grp, _, _, _, pieces in self._pieces(mb):
            lines.append(f"    # input {grp.input} ({grp.dim_input})")
            for x, at, na, uo in pieces.values():
                if x is None:
                    lines.append(f"    {ahat}[{uo}] = 1.0")
                else:
                    src = v if x == "v" else x
                    lines += [f"    for {j} in range({na}):",
                              f"        {ahat}[{index(uo, j)}] = {src}[{index(at, j)}]"]
        out["kron_input"] = "\n".join(lines) + "\n"
        return out


__all__ = ["OK"]
