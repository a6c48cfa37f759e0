"""Hand-written NumPy baselines for online training: UORO and KF-RTRL.

What a researcher would write by hand, with no framework: vectorized NumPy per step
(loops only over time), Jacobians of elementwise ops kept as diagonals, every stream
of a batch carrying its own state and estimator state along a leading batch axis.
The benchmark compares rgraph's compiled loops against these.

* UORO: Tallec & Ollivier 2017, "Unbiased Online Recurrent Optimization", Algorithm 1.
  ds_t/dW ~ s̃ ⊗ w̃; per step

      g   = δθ + (δs · s̃) w̃                     (δs = ∂l/∂s_{t-1}, δθ = direct ∂l/∂W)
      s̃  ← ρ0 H_t s̃ + ρ1 ν,   w̃ ← w̃/ρ0 + (νᵀ ∂s_t/∂W)/ρ1,   ν random signs,
      ρ0 = sqrt(|w̃| / (|H_t s̃| + ε)) + ε,   ρ1 = sqrt(|νᵀ ∂s_t/∂W| / (|ν| + ε)) + ε.

* KF-RTRL: Mujika, Meier & Steger 2018, "Approximating Real-Time Recurrent Learning
  with Random Kronecker Factors", eqs. (7)-(8). With z = W a the preactivation,
  ds_t/dW ~ A ⊗ u (A: state x |z|, u: |a|); per step

      g_W = outer(Aᵀ δs, u) + δθ
      A ← c1/p1 H_t A + c2/p2 D_t,   u ← c1 p1 u + c2 p2 a_t,   D_t = ∂s_t/∂z_t,
      p1 = sqrt(|H_t A| / |u|), p2 = sqrt(|D_t| / |a_t|), c1, c2 random signs.

The readout (V, b) always gets its exact gradient. Cells match rgraph's built-ins
(``rg.cells.tanh_rnn``, ``rg.cells.lstm``), so parameter dicts are interchangeable:

    tanh:  a = [h; x; 1],  h' = tanh(W a)
    lstm:  a = [h; x; 1],  [i f o g] = W a,  c' = σ(f) c + σ(i) tanh(g),
           h' = σ(o) tanh(c'),  state (h, c), h first
    loss:  softmax cross-entropy of V h' + b.

``python -m benchmarks.handwritten`` (from the repository root) checks both estimators
against rgraph's exact gradient (``verify``); ``rgraph bench`` times them against
rgraph's compiled loops.
"""
from __future__ import annotations

import sys
import time

import numpy as np

EPS = 1e-7


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _norm(x):
    """Euclidean norm of each stream's slice: (B, ...) -> (B,)."""
    x = x.reshape(len(x), -1)
    return np.sqrt(np.einsum("bi,bi->b", x, x))


def _signs(rng, shape):
    return 2.0 * rng.integers(0, 2, size=shape) - 1.0


def _softmax_xent(logits, y):
    """Per-stream loss and its gradient w.r.t. the logits: (B,), (B, n_out)."""
    rows = np.arange(len(y))
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    tot = e.sum(axis=1)
    loss = np.log(tot) - z[rows, y]
    dlogits = e / tot[:, None]
    dlogits[rows, y] -= 1.0
    return loss, dlogits


# ---------------------------------------------------------------------------- cells
# A cell maps (W, s_{t-1}, x_t) to s_t through the preactivation z_t = W a_t. Every
# Jacobian of its elementwise part is stored as diagonals: D_t = ∂s_t/∂z_t is a grid of
# (S/n) x (|z|/n) diagonal n x n blocks, kept as ``Dd`` of shape (B, S/n, |z|/n, n).

class TanhCell:
    """h_t = tanh(W [h_{t-1}; x_t; 1]);  state h (n), z = W a (n)."""

    def __init__(self, n_in, n):
        self.n_in, self.n, self.S, self.Z = n_in, n, n, n
        i = np.arange(n)
        self.diag_rows, self.diag_cols = i[None, None], i[None, None]   # (1, 1, n)

    def forward(self, W, s, x):
        a = np.concatenate([s, x, np.ones((len(s), 1))], axis=1)
        h = np.tanh(a @ W.T)
        return h, {"a": a, "dh": 1.0 - h * h}

    def vjp(self, W, cache, s_bar, need_prev=True):
        """Cotangent of s_t -> (∂/∂z_t, ∂/∂s_{t-1}); ∂/∂W is outer(z_bar, a)."""
        z_bar = s_bar * cache["dh"]
        return z_bar, (z_bar @ W[:, :self.n] if need_prev else None)

    def jvp(self, W, cache, s_dot):
        """Tangents of s_{t-1}, (B, S, K) -> tangents of s_t: H_t s_dot."""
        return cache["dh"][:, :, None] * (W[:, :self.n] @ s_dot)

    jvp_matrix = jvp    # H_t A for many tangent columns: (1-h²) * (W_h A), no H formed

    def D(self, cache):
        return cache["dh"][:, None, None, :]


class LSTMCell:
    """LSTM with state (h, c) and gates [i f o g] = W [h; x; 1]; z has 4n entries."""

    def __init__(self, n_in, n):
        self.n_in, self.n, self.S, self.Z = n_in, n, 2 * n, 4 * n
        r, q, i = np.ix_(np.arange(2), np.arange(4), np.arange(n))
        self.diag_rows, self.diag_cols = r * n + i, q * n + i           # (2, 4, n)

    def forward(self, W, s, x):
        n = self.n
        h, c = s[:, :n], s[:, n:]
        a = np.concatenate([h, x, np.ones((len(s), 1))], axis=1)
        z = a @ W.T
        i, f, o = (_sigmoid(z[:, k * n:(k + 1) * n]) for k in range(3))
        g = np.tanh(z[:, 3 * n:])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        h_new = o * tc
        # ∂c'/∂z per gate (o: none), ∂h'/∂c', ∂h'/∂z_o and ∂c'/∂c = f: all diagonal
        dc_dz = np.stack([g * i * (1 - i), c * f * (1 - f), np.zeros_like(c),
                          i * (1 - g * g)], axis=1)                      # (B, 4, n)
        dh_dc = o * (1 - tc * tc)
        dh_dzo = tc * o * (1 - o)
        cache = {"a": a, "f": f, "dc_dz": dc_dz, "dh_dc": dh_dc, "dh_dzo": dh_dzo}
        return np.concatenate([h_new, c_new], axis=1), cache

    def vjp(self, W, cache, s_bar, need_prev=True):
        n = self.n
        h_bar, c_bar = s_bar[:, :n], s_bar[:, n:]
        c_tot = c_bar + h_bar * cache["dh_dc"]
        z_bar = c_tot[:, None, :] * cache["dc_dz"]
        z_bar[:, 2] = h_bar * cache["dh_dzo"]
        z_bar = z_bar.reshape(len(s_bar), 4 * n)
        if not need_prev:
            return z_bar, None
        return z_bar, np.concatenate([z_bar @ W[:, :n], c_tot * cache["f"]], axis=1)

    def jvp(self, W, cache, s_dot):
        n = self.n
        h_dot, c_dot = s_dot[:, :n], s_dot[:, n:]
        z_dot = W[:, :n] @ h_dot                                          # (B, 4n, K)
        dc = cache["dc_dz"][..., None]
        c_new = (dc[:, 0] * z_dot[:, :n] + dc[:, 1] * z_dot[:, n:2 * n]
                 + dc[:, 3] * z_dot[:, 3 * n:] + cache["f"][..., None] * c_dot)
        h_new = (cache["dh_dzo"][..., None] * z_dot[:, 2 * n:3 * n]
                 + cache["dh_dc"][..., None] * c_new)
        return np.concatenate([h_new, c_new], axis=1)

    def jvp_matrix(self, W, cache, A):
        """H_t A for many tangent columns (KF-RTRL's A: (B, 2n, 4n)). Forming H_t's dense
        columns ∂(h', c')/∂h (2n x n per stream, O(n²)) halves the matmul of ``jvp``
        (2n x n instead of 4n x n against A's h rows); ∂(h', c')/∂c is diagonal."""
        n = self.n
        Wh = W[:, :n]
        dc = cache["dc_dz"][..., None]
        dh_dc, f = cache["dh_dc"][:, :, None], cache["f"][:, :, None]
        Hc_h = dc[:, 0] * Wh[:n] + dc[:, 1] * Wh[n:2 * n] + dc[:, 3] * Wh[3 * n:]
        Hh_h = cache["dh_dzo"][..., None] * Wh[2 * n:3 * n] + dh_dc * Hc_h
        out = np.concatenate([Hh_h, Hc_h], axis=1) @ A[:, :n]             # (B, 2n, 4n)
        fA_c = f * A[:, n:]
        out[:, n:] += fA_c
        out[:, :n] += dh_dc * fA_c
        return out

    def D(self, cache):
        dc = cache["dc_dz"]
        dh = cache["dh_dc"][:, None, :] * dc
        dh[:, 2] = cache["dh_dzo"]
        return np.stack([dh, dc], axis=1)                                 # (B, 2, 4, n)


CELLS = {"tanh": TanhCell, "lstm": LSTMCell}


# ----------------------------------------------------------------------- estimators
class _OnlineEstimator:
    """The shared loop: forward, loss, readout gradient, backprop into the step, the
    estimator's correction (δs · G_{t-1}) and its update, then SGD on the batch mean."""

    def __init__(self, cell: str, n_in: int, n: int, n_out: int, params: dict,
                 batch: int = 1, seed: int = 0, lr: float = 1e-3):
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.cell = CELLS[cell](n_in, n)
        self.n_in, self.n, self.n_out = n_in, n, n_out
        shapes = {"W": (self.cell.Z, n + n_in + 1), "V": (n_out, n), "b": (n_out,)}
        self.params = {}
        for k, shape in shapes.items():
            p = np.array(params[k], dtype=np.float64)
            if p.shape != shape:
                raise ValueError(f"param {k} has shape {p.shape}, expected {shape}")
            self.params[k] = p
        self.batch, self.lr = int(batch), float(lr)
        self.rng = np.random.default_rng(seed)
        self.st = self._zero_state(self.batch)

    def _zero_state(self, B):          # cell state plus the estimator's own
        raise NotImplementedError

    def _correction(self, s_bar):      # Σ_b (∂l_b/∂s_{t-1}) G_{t-1} for W
        raise NotImplementedError

    def _advance(self, W, cache):      # G_{t-1} -> G_t
        raise NotImplementedError

    def _estimate(self, x, y):
        """One step of every stream: per-stream losses and the batch-summed gradient
        estimate; advances the states and the estimator state."""
        W, V, b = self.params["W"], self.params["V"], self.params["b"]
        n = self.n
        s_new, cache = self.cell.forward(W, self.st["s"], x)
        h = s_new[:, :n]
        loss, dlogits = _softmax_xent(h @ V.T + b, y)
        s_bar = np.zeros_like(s_new)
        s_bar[:, :n] = dlogits @ V
        z_bar, ds_prev = self.cell.vjp(W, cache, s_bar)
        grad = {"W": z_bar.T @ cache["a"] + self._correction(ds_prev),
                "V": dlogits.T @ h, "b": dlogits.sum(axis=0)}
        self._advance(W, cache)
        self.st["s"] = s_new
        return loss, grad

    def step(self, x, y) -> float:
        """One online step for every stream, then SGD with the batch-mean gradient."""
        x = np.asarray(x, dtype=np.float64).reshape(self.batch, self.n_in)
        y = np.asarray(y).reshape(self.batch)
        loss, grad = self._estimate(x, y)
        for k, g in grad.items():
            self.params[k] -= (self.lr / self.batch) * g
        return float(loss.mean())

    def total_gradient(self, xs, ys) -> dict:
        """Σ_t of the per-step estimates over one sequence at fixed parameters, from
        zero state and zero estimator state (batch 1; the training state is kept)."""
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys)
        saved, self.st = self.st, self._zero_state(1)
        total = {k: np.zeros_like(p) for k, p in self.params.items()}
        try:
            for x, y in zip(xs, ys):
                _, grad = self._estimate(x[None], np.array([y]))
                for k in total:
                    total[k] += grad[k]
        finally:
            self.st = saved
        return total


class HandUORO(_OnlineEstimator):
    """UORO (Tallec & Ollivier 2017, Algorithm 1) on the recurrent matrix W."""

    def _zero_state(self, B):
        c = self.cell
        m = self.n + self.n_in + 1
        return {"s": np.zeros((B, c.S)), "s_tilde": np.zeros((B, c.S)),
                "w_tilde": np.zeros((B, c.Z, m))}

    def _correction(self, s_bar):
        coef = np.einsum("bs,bs->b", s_bar, self.st["s_tilde"])
        return np.tensordot(coef, self.st["w_tilde"], axes=1)

    def _advance(self, W, cache):
        st, a = self.st, cache["a"]
        B, S = st["s_tilde"].shape
        hs = self.cell.jvp(W, cache, st["s_tilde"][:, :, None])[:, :, 0]   # H_t s̃
        nu = _signs(self.rng, (B, S))
        z_nu, _ = self.cell.vjp(W, cache, nu, need_prev=False)  # νᵀ ∂s_t/∂W = z_nu ⊗ a
        rho0 = np.sqrt(_norm(st["w_tilde"]) / (_norm(hs) + EPS)) + EPS
        rho1 = np.sqrt(_norm(z_nu) * _norm(a) / (np.sqrt(S) + EPS)) + EPS
        st["s_tilde"] = rho0[:, None] * hs + rho1[:, None] * nu
        w = st["w_tilde"]                                                  # in place
        w *= (1.0 / rho0)[:, None, None]
        w += (z_nu / rho1[:, None])[:, :, None] * a[:, None, :]


class HandKFRTRL(_OnlineEstimator):
    """KF-RTRL (Mujika et al. 2018, eqs. 7-8): ds/dW ~ A ⊗ u with z = W a."""

    def _zero_state(self, B):
        c = self.cell
        m = self.n + self.n_in + 1
        return {"s": np.zeros((B, c.S)), "A": np.zeros((B, c.S, c.Z)),
                "u": np.zeros((B, m))}

    def _correction(self, s_bar):
        cA = np.einsum("bsz,bs->bz", self.st["A"], s_bar)                  # Aᵀ δs
        return cA.T @ self.st["u"]

    def _advance(self, W, cache):
        st, a, c = self.st, cache["a"], self.cell
        B = len(a)
        HA = c.jvp_matrix(W, cache, st["A"])                               # H_t A
        Dd = c.D(cache)                                                    # diagonals of D_t
        p1 = np.sqrt(_norm(HA) / (_norm(st["u"]) + EPS)) + EPS
        p2 = np.sqrt(_norm(Dd) / (_norm(a) + EPS)) + EPS
        c1, c2 = _signs(self.rng, (2, B))
        st["u"] = (c1 * p1)[:, None] * st["u"] + (c2 * p2)[:, None] * a
        HA *= (c1 / p1)[:, None, None]
        HA[:, c.diag_rows, c.diag_cols] += (c2 / p2)[:, None, None, None] * Dd
        st["A"] = HA


# --------------------------------------------------------------------- verification
def _rtrl_total_gradient(est, xs, ys):
    """Exact RTRL with the same cell helpers: G_t = H_t G_{t-1} + D_t ⊗ a_t. A
    deterministic check of forward, vjp, jvp and D against rgraph's BPTT."""
    c, (W, V, b) = est.cell, (est.params[k] for k in "WVb")
    n, m = est.n, W.shape[1]
    s, G = np.zeros((1, c.S)), np.zeros((1, c.S, c.Z, m))
    tot = {k: np.zeros_like(p) for k, p in est.params.items()}
    for x, y in zip(xs, ys):
        s_new, cache = c.forward(W, s, x[None])
        h = s_new[:, :n]
        _, dlogits = _softmax_xent(h @ V.T + b, np.array([y]))
        s_bar = np.zeros_like(s_new)
        s_bar[:, :n] = dlogits @ V
        z_bar, ds_prev = c.vjp(W, cache, s_bar)
        tot["W"] += z_bar.T @ cache["a"] + np.einsum("bs,bszm->zm", ds_prev, G)
        tot["V"] += dlogits.T @ h
        tot["b"] += dlogits.sum(0)
        G = c.jvp(W, cache, G.reshape(1, c.S, -1)).reshape(G.shape)
        a = cache["a"][:, None, None, None, :]
        G[:, c.diag_rows, c.diag_cols] += c.D(cache)[..., None] * a
        s = s_new
    return tot


def verify(n_in=3, n=4, n_out=3, T=8, seeds=2000, n_proj=4):
    """Mean over seeds of each estimator's total_gradient vs rgraph's exact gradient."""
    import rgraph as rg

    data_rng = np.random.default_rng(1234)
    xs = data_rng.standard_normal((T, n_in))
    ys = data_rng.integers(0, n_out, size=T)
    worst = 0.0
    for cell in ("tanh", "lstm"):
        rg_cell = rg.cells.tanh_rnn(n_in, n, n_out) if cell == "tanh" else \
            rg.cells.lstm(n_in, n, n_out)
        ex = rg.compile(rg_cell, "bptt", backend="numpy")
        params = ex.init_params(seed=0)
        exact = ex.total_gradient(params, xs, ys)
        # deterministic: exact RTRL through the same helpers, and the loss
        probe = HandUORO(cell, n_in, n, n_out, params, lr=0.0)
        rtrl = _rtrl_total_gradient(probe, xs, ys)
        err_rtrl = max(np.max(np.abs(rtrl[k] - exact[k])) for k in exact)
        loss = np.mean([probe.step(x, y) for x, y in zip(xs, ys)])
        err_loss = abs(loss - ex.loss(params, xs, ys))
        print(f"[{cell}] exact RTRL via hand helpers vs rgraph bptt: max |diff| = "
              f"{err_rtrl:.1e};  loss |diff| = {err_loss:.1e}")
        A = np.random.default_rng(5).standard_normal((1, probe.cell.S, probe.cell.Z))
        _, cache = probe.cell.forward(params["W"], np.zeros((1, probe.cell.S)) + 0.3,
                                      xs[:1])
        err_hm = np.max(np.abs(probe.cell.jvp_matrix(params["W"], cache, A)
                               - probe.cell.jvp(params["W"], cache, A)))
        print(f"[{cell}]   jvp_matrix vs jvp: max |diff| = {err_hm:.1e}")
        assert err_rtrl < 1e-10 and err_loss < 1e-10 and err_hm < 1e-10
        proj = np.random.default_rng(99).standard_normal((n_proj,) + exact["W"].shape)
        for cls in (HandUORO, HandKFRTRL):
            t0 = time.perf_counter()
            gs = np.stack([cls(cell, n_in, n, n_out, params, seed=s).total_gradient(xs, ys)
                           ["W"] for s in range(seeds)])
            # V and b are exact: any one seed must match
            g1 = cls(cell, n_in, n, n_out, params, seed=7).total_gradient(xs, ys)
            err_vb = max(np.max(np.abs(g1[k] - exact[k])) for k in ("V", "b"))
            mean, se = gs.mean(0), gs.std(0, ddof=1) / np.sqrt(seeds)
            z_coord = np.max(np.abs(mean - exact["W"]) / se)
            pg = np.einsum("sij,pij->sp", gs, proj)
            z_proj = np.abs(pg.mean(0) - np.einsum("ij,pij->p", exact["W"], proj)) / \
                (pg.std(0, ddof=1) / np.sqrt(seeds))
            # the batched path: streams of one instance are independent estimates
            reps, B = 40, seeds // 40
            gb = []
            for r in range(reps):
                est = cls(cell, n_in, n, n_out, params, batch=B, seed=10_000 + r)
                tot = np.zeros_like(exact["W"])
                for x, y in zip(xs, ys):
                    tot += est._estimate(np.repeat(x[None], B, 0), np.full(B, y))[1]["W"]
                gb.append(tot / B)
            gb = np.array(gb)
            z_batch = np.max(np.abs(gb.mean(0) - exact["W"]) /
                             (gb.std(0, ddof=1) / np.sqrt(reps)))
            worst = max(worst, z_coord, z_proj.max(), z_batch)
            print(f"[{cell}] {cls.__name__:10s} {seeds} seeds: W max|z| per coordinate "
                  f"{z_coord:.2f} ({gs.shape[1] * gs.shape[2]} coords), projections "
                  f"{np.array2string(z_proj, precision=2)}, batched path max|z| "
                  f"{z_batch:.2f};  V,b max|diff| {err_vb:.1e}  "
                  f"({time.perf_counter() - t0:.1f}s)")
            assert err_vb < 1e-10
    print(f"worst |z| = {worst:.2f} " + ("(ok, < 4)" if worst < 4 else "(FAIL)"))
    return worst < 4


if __name__ == "__main__":
    sys.exit(0 if verify() else 1)
