"""OK: the optimal Kronecker-sum approximation (Benzing, Gauy, Mujika, Martinsson &
Steger 2019), on KF-RTRL's structure (``kfrtrl``): every recurrent parameter enters as
``z = W @ â`` with â independent of θ, so per input group F_t = D_t ⊗ âᵀ.

Per input group, G_t ≈ Σ_{k<r} A_k ⊗ u_kᵀ (r = ``rank`` Kronecker pairs). One step
turns the r pairs into r + 1:

    H_t A_1 ⊗ u_1ᵀ + ... + H_t A_r ⊗ u_rᵀ  +  D_t ⊗ â_tᵀ

and ``ok_reduce`` maps them back to r pairs with the unbiased reduction of minimum
variance: orthonormal bases of the u's and of the vec(A)'s (from their Gram matrices,
so the S x |z| factors are never copied; singular values below √ε of the largest are
taken as zero), the SVD of the (r+1) x (r+1) core C = Σ σ_i ℓ_i ρ_iᵀ, then

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

from ..codegen import Template
from . import common, kron
from .base import Option, positive_int
from .names import Argument, parse_rank
from .kfrtrl import KFRTRL


def ok_step(th, s, x, y, w, g, rng, *, A, u, v, vd, vz, vb, ybar, HA, D, cA, ahat, Ut,
            Gu, Gv, alpha, beta):
    """One step of OK for one stream: RANK Kronecker pairs per input group."""
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    # (∂l/∂s_{t-1}) G_{t-1} with G ≈ Σ_k A_k ⊗ u_k: each pair as in KF-RTRL
    rg_zero(cA)
    rg_gemv_t(cA, A, vb[0:S])
    for k in range(RANK):
        kron_gradient(g, cA[k * NZ:(k + 1) * NZ], u[k])
    # H_t A_k for every pair at once (A_k are the column blocks of A), and D_t
    jvp_state_m(th, v, A, vd, HA)
    jvp_z_m(th, v, vz, D)
    kron_input(v, ahat)
    for c0, c1, a0, a1 in KRON_GROUPS:
        na, nz = a1 - a0, c1 - c0
        # the r + 1 pairs of the group, (H A_k, u_k) and (D, â), and their Gram matrices
        for k in range(RANK):
            Ut[k, 0:na] = u[k, a0:a1]
        Ut[RANK, 0:na] = ahat[a0:a1]
        for i in range(RANK + 1):
            Xi, xi = HA, i * NZ + c0
            if i == RANK:
                Xi, xi = D, c0
            for j in range(i + 1):
                Xj, xj = HA, j * NZ + c0
                if j == RANK:
                    Xj, xj = D, c0
                Gu[i, j] = Gu[j, i] = rg_dot(Ut[i, 0:na], Ut[j, 0:na])
                Gv[i, j] = Gv[j, i] = rg_dot_cols(Xi, xi, Xj, xj, nz)
        ok_reduce(Gu, Gv, rng, alpha, beta)
        # the r new pairs, combinations of the r + 1 old ones
        for k in range(RANK):
            u[k, a0:a1] = 0.0
            A[:, k * NZ + c0:k * NZ + c1] = 0.0
            for i in range(RANK + 1):
                Xi, xi = HA, i * NZ + c0
                if i == RANK:
                    Xi, xi = D, c0
                rg_axpy(u[k, a0:a1], alpha[k, i], Ut[i, 0:na])
                rg_axpy_cols(A, k * NZ + c0, beta[k, i], Xi, xi, nz)
    gather_new(v, s)
    return loss


def ok_reduce(Gu, Gv, rng, alpha, beta):
    """The minimum-variance unbiased reduction of the RANK + 1 pairs (U_i, V_i) with Gram
    matrices Gu and Gv to RANK pairs: new pair k is (Σ_i alpha[k, i] U_i, Σ_i beta[k, i]
    V_i). Every matrix here is (RANK + 1) x (RANK + 1): their eigen- and singular value
    decompositions are Jacobi rotations in the module (``ok_eigh``, ``ok_svd``), with no
    LAPACK, and element loops into DT buffers (in numba a float64 scalar times a float32
    array is a float64 array, and the products below must not mix float types)."""
    k1 = RANK + 1
    # orthonormal bases from the Gram matrices: G = E diag(λ) Eᵀ, Q = X E diag(λ)^-1/2
    lu, Eu, lv, Ev = np.empty(k1, DT), np.empty((k1, k1), DT), np.empty(k1, DT), \
        np.empty((k1, k1), DT)
    ok_eigh(Gu, lu, Eu)
    ok_eigh(Gv, lv, Ev)
    su, sv = np.empty(k1, DT), np.empty(k1, DT)
    iu, iv = np.zeros(k1, DT), np.zeros(k1, DT)
    for i in range(k1):
        su[i] = math.sqrt(max(lu[i], 0.0))
        sv[i] = math.sqrt(max(lv[i], 0.0))
    tu, tv = 1e-12 * (su.max() + 1e-300), 1e-12 * (sv.max() + 1e-300)
    for i in range(k1):
        if su[i] > tu:
            iu[i] = 1.0 / (su[i] + 1e-300)
        if sv[i] > tv:
            iv[i] = 1.0 / (sv[i] + 1e-300)
    # the core Ru Rvᵀ (R = diag(√λ) Eᵀ) and its SVD: C = Σ σ_i ℓ_i ρ_iᵀ, ℓ = U Cu, ρ = V Cv
    core = np.empty((k1, k1), DT)
    for i in range(k1):
        for j in range(k1):
            acc = 0.0
            for l in range(k1):
                acc += Eu[l, i] * Ev[l, j]
            core[i, j] = su[i] * sv[j] * acc
    L, sig, R = np.empty((k1, k1), DT), np.empty(k1, DT), np.empty((k1, k1), DT)
    ok_svd(core, L, sig, R)
    Cu, Cv = np.zeros((k1, k1), DT), np.zeros((k1, k1), DT)
    for i in range(k1):
        for j in range(k1):
            for l in range(k1):
                Cu[i, j] += Eu[i, l] * (iu[l] * L[l, j])
                Cv[i, j] += Ev[i, l] * (iv[l] * R[l, j])
    for i in range(k1):      # each pair's sign fixed
        if Cu[np.argmax(np.abs(Cu[:, i])), i] < 0.0:
            for l in range(k1):
                Cu[l, i] = -Cu[l, i]
                Cv[l, i] = -Cv[l, i]
    a = np.zeros((RANK, k1), DT)      # new pair k = Σ_i a[k, i] ℓ_i ⊗ b[k, i] ρ_i
    b = np.zeros((RANK, k1), DT)
    # rank <= r already (below the Gram matrices' precision, √ε relative): kept exactly
    if sig[RANK] <= 1e-7 * sig[0]:
        for i in range(RANK):
            a[i, i] = b[i, i] = math.sqrt(sig[i])
    else:
        # m: the largest singular values, kept exactly
        m = 0
        while m < RANK - 1 and (RANK - m) * sig[m] > np.sum(sig[m:]):
            m += 1
        for i in range(m):
            a[i, i] = b[i, i] = math.sqrt(sig[i])
        # the k = r + 1 - m others become k - 1 pairs with random signs
        tail = np.sum(sig[m:])
        k = k1 - m
        x = np.empty(k, DT)
        for i in range(k):
            x[i] = math.sqrt(max(0.0, 1.0 - (k - 1) * sig[m + i] / tail))
        # q: an orthonormal basis of x's complement (columns 1..k-1 of the Householder
        # reflection that maps e_1 to x)
        hw = x.copy()
        hw[0] -= 1.0
        hn = 0.0
        for i in range(k):
            hn += hw[i] * hw[i]
        q = np.eye(k, dtype=DT)
        if hn > 1e-30:
            h2 = 2.0 / hn
            for i in range(k):
                for j in range(k):
                    q[i, j] -= h2 * (hw[i] * hw[j])
        scale = math.sqrt(tail / (k - 1))
        for i in range(k):
            c = scale if rng.random() < 0.5 else -scale
            for j in range(k - 1):
                a[m + j, m + i] = c * q[i, j + 1]
                b[m + j, m + i] = c * q[i, j + 1]
    for i in range(RANK):
        for j in range(k1):
            alpha[i, j] = beta[i, j] = 0.0
            for l in range(k1):
                alpha[i, j] += a[i, l] * Cu[j, l]
                beta[i, j] += b[i, l] * Cv[j, l]


def ok_eigh(G, lam, E):
    """G = E diag(lam) Eᵀ for a small symmetric G, by cyclic Jacobi rotations (each zeroes
    one off-diagonal entry of a working copy M; E accumulates them), until the
    off-diagonal part is below 1e-15 of the whole, or 50 sweeps."""
    n = G.shape[0]
    M = G.copy()
    jacobi_identity(E)
    for sweep in range(50):
        off, total = 0.0, 0.0
        for i in range(n):
            for j in range(n):
                total += M[i, j] * M[i, j]
                if i != j:
                    off += M[i, j] * M[i, j]
        if off <= 1e-30 * total:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                if M[p, q] == 0.0:
                    continue
                c, s = jacobi_rotation(M[p, p], M[q, q], M[p, q])
                jacobi_rotate(M, p, q, c, s)      # M J, then Jᵀ (M J), and E J
                jacobi_rotate(M.T, p, q, c, s)
                jacobi_rotate(E, p, q, c, s)
    for i in range(n):
        lam[i] = M[i, i]


def ok_svd(C, L, sig, R):
    """C = L diag(sig) Rᵀ for a small square C, sig descending, by one-sided Jacobi
    rotations (Hestenes): columns of a working copy are made orthogonal two at a time
    (R accumulates the rotations); their norms are sig and the normalized columns L (a
    zero column stays zero)."""
    n = C.shape[0]
    U = C.copy()
    jacobi_identity(R)
    for sweep in range(50):
        rotated = False
        for p in range(n - 1):
            for q in range(p + 1, n):
                al, be, ga = 0.0, 0.0, 0.0
                for r in range(n):
                    al += U[r, p] * U[r, p]
                    be += U[r, q] * U[r, q]
                    ga += U[r, p] * U[r, q]
                if abs(ga) <= 1e-15 * math.sqrt(al * be):
                    continue
                rotated = True
                c, s = jacobi_rotation(al, be, ga)
                jacobi_rotate(U, p, q, c, s)
                jacobi_rotate(R, p, q, c, s)
        if not rotated:
            break
    for j in range(n):
        nj = 0.0
        for r in range(n):
            nj += U[r, j] * U[r, j]
        sig[j] = math.sqrt(nj)
        for r in range(n):
            L[r, j] = U[r, j] / sig[j] if sig[j] > 0.0 else 0.0
    for j in range(n - 1):          # sig descending, columns with it
        best = j + np.argmax(sig[j:])
        if best != j:
            sig[j], sig[best] = sig[best], sig[j]
            for r in range(n):
                L[r, j], L[r, best] = L[r, best], L[r, j]
                R[r, j], R[r, best] = R[r, best], R[r, j]


def jacobi_identity(X):
    """X = I, where the rotations of ``ok_eigh`` and ``ok_svd`` accumulate."""
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            X[i, j] = 1.0 if i == j else 0.0


def jacobi_rotate(X, p, q, c, s):
    """Columns p and q of X rotated: (x_p, x_q) <- (c x_p - s x_q, s x_p + c x_q)."""
    for r in range(X.shape[0]):
        xp, xq = X[r, p], X[r, q]
        X[r, p], X[r, q] = c * xp - s * xq, s * xp + c * xq


def jacobi_rotation(app, aqq, apq):
    """(c, s) of the rotation that zeroes apq in [[app, apq], [apq, aqq]]: t = tan φ the
    smaller root of t² + 2ζt - 1 = 0, ζ = (aqq - app) / (2 apq)."""
    zeta = (aqq - app) / (2.0 * apq)
    if abs(zeta) > 1e150:
        t = 0.5 / zeta
    else:
        t = (1.0 if zeta >= 0.0 else -1.0) / (abs(zeta) + math.sqrt(1.0 + zeta * zeta))
    c = 1.0 / math.sqrt(1.0 + t * t)
    return c, c * t


class OK(KFRTRL):
    name = "ok"
    aliases = ()
    options = (Option("rank", "Kronecker pairs per input group"),)
    argument = Argument("(", "rank", parse_rank, "ok(R), R the rank")
    shown = ("ok(2)",)

    def __init__(self, lay, sched, analysis, rank=2, **opts):
        super().__init__(lay, sched, analysis, **opts)      # refuses as KF-RTRL does
        self.rank = positive_int(rank, "ok: rank r")

    def describe(self):
        groups = f", {len(self.groups)} groups" if len(self.groups) > 1 else ""
        return f"ok(r={self.rank}{groups})"

    def flops(self):
        """base + H A (r |z| columns) + 2 (r+1)(2r+1) S |z| (Gram and recombination)."""
        r, S = self.rank, self.lay.n_state
        return self.base_flops() + self.push_flops(r * self.nz) + \
            2 * (r + 1) * (2 * r + 1) * S * self.nz

    def constants(self):
        return {"RANK": self.rank, "NZ": self.nz, **self.kron_tables()}

    def choices(self):
        return kron.choices(self.lay, self.groups)

    def state_layout(self):
        return {"A": (self.lay.n_state, self.rank * self.nz), "u": (self.rank, self.na)}

    def scratch_layout(self):
        lay, r = self.lay, self.rank
        na_max = max(grp.dim_input for grp in self.groups)
        return {**self.base_scratch(), "vd": (lay.n_values, r * self.nz),
                "vz": (lay.n_values, self.nz),
                "HA": (lay.n_state, r * self.nz), "D": (lay.n_state, self.nz),
                "cA": (r * self.nz,), "ahat": (self.na,), "Ut": (r + 1, na_max),
                "Gu": (r + 1, r + 1), "Gv": (r + 1, r + 1), "alpha": (r, r + 1),
                "beta": (r, r + 1)}

    def templates(self):
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(kron.kron_gradient, "kron_gradient"),
                Template(kron.kron_input, "kron_input"),
                Template(ok_reduce, "ok_reduce"),
                Template(ok_eigh, "ok_eigh"),
                Template(ok_svd, "ok_svd"),
                Template(jacobi_rotation, "jacobi_rotation"),
                Template(jacobi_rotate, "jacobi_rotate"),
                Template(jacobi_identity, "jacobi_identity"),
                Template(ok_step, "est_step", "step")]


__all__ = ["OK"]
