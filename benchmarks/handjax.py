"""Hand-written JAX baselines for online training: UORO, KF-RTRL and exact RTRL.

What a researcher fluent in JAX would write: the cell as a plain function of
(W, s_{t-1}, x_t), its Jacobian products from JAX's autodiff (``jax.vjp``, ``jax.jvp``,
``jax.linearize``, ``jax.jacfwd``/``jax.jacrev``), every stream of a batch carrying its
own state and estimator state (``jax.vmap`` of the per-stream estimator), and one
``jax.jit`` of a ``jax.lax.scan`` over a chunk of steps, float64 throughout. The model,
the estimators and their constants are those of ``handwritten`` (see its docstring);
parameter dicts are interchangeable with rgraph's built-in cells.

* UORO (Tallec & Ollivier 2017, Algorithm 1): H_t s̃ is a ``jvp`` of the step w.r.t.
  the state, νᵀ ∂s_t/∂W and the loss's δθ, δs are ``vjp`` of the same linearization.
* KF-RTRL (Mujika et al. 2018, eqs. 7-8): H_t A is the step linearized w.r.t. the
  state and ``vmap``-ed over A's columns; D_t = ∂s_t/∂z_t by ``jacfwd`` of the
  elementwise part (dense S x |z|).
* RTRL: G_t = H_t G_{t-1} + ∂s_t/∂W with H_t by ``jacfwd`` (S x S), ∂s_t/∂W by
  ``jacrev`` (S x Z x |a|), and one GEMM H_t · G_{t-1}.

Every parameter takes an SGD step per online step with the batch-mean gradient; the
readout (V, b) gets its exact gradient.

XLA runs on one thread: importing this module adds
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` to ``XLA_FLAGS``
(appended to what the environment already holds) before jax is imported.

``python -m benchmarks.handjax`` (from the repository root) checks them against
rgraph's exact gradient (``verify``); ``rgraph bench`` times them.
"""
from __future__ import annotations

import os
import sys
import time

_ONE_THREAD = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")


def _pin_xla_flags():
    """Add the one-thread flags to XLA_FLAGS, keeping whatever the user set there (a
    flag the user already gave, with any value, is left alone)."""
    flags = os.environ.get("XLA_FLAGS", "").strip()
    extra = [f for f in _ONE_THREAD if f.split("=")[0].lstrip("-") not in flags]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags] + extra).strip()


JAX_IMPORTED_BEFORE = "jax" in sys.modules   # then XLA may have read its flags already
_pin_xla_flags()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

EPS = 1e-7


def xla_threads() -> str:
    """A short description of XLA's CPU threading, for the benchmark's header."""
    flags = os.environ.get("XLA_FLAGS", "")
    one = "xla_cpu_multi_thread_eigen=false" in flags
    text = "1 intra-op thread" if one else "XLA's default threads"
    if JAX_IMPORTED_BEFORE:
        text += " (if set before jax's first use)"
    return f"jax {jax.__version__}, {text}"


def _sigmoid(z):
    return 0.5 * (1.0 + jnp.tanh(0.5 * z))


def _norm(x):
    return jnp.sqrt(jnp.sum(x * x))


def _xent(V, b, h, y):
    """Softmax cross-entropy of V h + b at target class y."""
    logits = V @ h + b
    return jax.nn.logsumexp(logits) - logits[y]


# ---------------------------------------------------------------------------- cells
# A cell is split at its preactivation z = W a: ``inputs`` builds a = [h; x; 1] from the
# state, ``post`` maps (z, s_{t-1}) to s_t elementwise. ``step`` composes them.

class TanhCell:
    """h_t = tanh(W [h_{t-1}; x_t; 1]);  state h (n), z = W a (n)."""

    def __init__(self, n_in, n):
        self.n_in, self.n, self.S, self.Z = n_in, n, n, n

    def post(self, z, s):
        return jnp.tanh(z)


class LSTMCell:
    """LSTM with state (h, c), h first, and gates [i f o g] = W [h; x; 1]."""

    def __init__(self, n_in, n):
        self.n_in, self.n, self.S, self.Z = n_in, n, 2 * n, 4 * n

    def post(self, z, s):
        n = self.n
        i, f, o = _sigmoid(z[:n]), _sigmoid(z[n:2 * n]), _sigmoid(z[2 * n:3 * n])
        g = jnp.tanh(z[3 * n:])
        c = f * s[n:] + i * g
        return jnp.concatenate([o * jnp.tanh(c), c])


CELLS = {"tanh": TanhCell, "lstm": LSTMCell}


def _inputs(cell, s, x):
    return jnp.concatenate([s[:cell.n], x, jnp.ones(1, dtype=s.dtype)])


def _step(cell, W, s, x):
    return cell.post(W @ _inputs(cell, s, x), s)


# ----------------------------------------------------------------------- estimators
class _JaxEstimator:
    """The shared loop. ``_estimate`` is one stream's step: forward, loss, readout
    gradient, δθ and δs by one vjp, the estimator's correction δs · G_{t-1} and its
    update. ``jax.vmap`` runs it over the batch; ``jax.lax.scan`` over a chunk."""

    def __init__(self, cell: str, n_in: int, n: int, n_out: int, params: dict,
                 batch: int = 1, seed: int = 0, lr: float = 1e-3):
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.cell = CELLS[cell](n_in, n)
        self.n_in, self.n, self.n_out = n_in, n, n_out
        self.m = n + n_in + 1
        shapes = {"W": (self.cell.Z, self.m), "V": (n_out, n), "b": (n_out,)}
        self.params = {}
        for k, shape in shapes.items():
            p = np.array(params[k], dtype=np.float64)
            if p.shape != shape:
                raise ValueError(f"param {k} has shape {p.shape}, expected {shape}")
            self.params[k] = jnp.asarray(p)
        self.batch, self.lr = int(batch), float(lr)
        self.key = jax.random.key(seed)
        self.st = self._zero_state(self.batch)
        # params and estimator state are replaced by the chunk's result: donate them
        self._run = jax.jit(self._chunk, donate_argnums=(0, 1))
        self._total = jax.jit(self._total_fn)
        self._total_seeds = jax.jit(jax.vmap(self._total_fn, in_axes=(None, 0, None, None)))

    # -- per stream
    def _zero_state(self, B):
        return {k: jnp.zeros((B,) + shape) for k, shape in self._state_shapes().items()}

    def _state_shapes(self):       # the cell state "s" and the estimator's own
        raise NotImplementedError

    def _correction(self, st, ds_prev):   # δs_{t-1} · G_{t-1} for W
        raise NotImplementedError

    def _advance(self, st, W, s, x, f_vjp, key):   # G_{t-1} -> G_t
        raise NotImplementedError

    def _estimate(self, params, st, key, x, y):
        """One stream, one step: (loss, gradient estimate, next state)."""
        W, V, b = params["W"], params["V"], params["b"]
        n, s = self.n, st["s"]
        s_new, f_vjp = jax.vjp(lambda W_, s_: _step(self.cell, W_, s_, x), W, s)
        loss, (gV, gb, gh) = jax.value_and_grad(_xent, argnums=(0, 1, 2))(
            V, b, s_new[:n], y)
        s_bar = jnp.zeros_like(s_new).at[:n].set(gh)
        dW, ds_prev = f_vjp(s_bar)
        grad = {"W": dW + self._correction(st, ds_prev), "V": gV, "b": gb}
        st_new = self._advance(st, W, s, x, f_vjp, key)
        st_new["s"] = s_new
        return loss, grad, st_new

    # -- batch, chunk
    def _batch_step(self, params, st, key, x, y):
        """Every stream one step: (per-stream losses, batch-mean gradient, state)."""
        keys = jax.random.split(key, x.shape[0])
        loss, grad, st = jax.vmap(self._estimate, in_axes=(None, 0, 0, 0, 0))(
            params, st, keys, x, y)
        return loss, jax.tree.map(lambda g: g.mean(axis=0), grad), st

    def _chunk(self, params, st, key, xs, ys, lr):
        """Online training over a chunk: xs (T, B, n_in), ys (T, B)."""
        def body(carry, xy):
            params, st, key = carry
            key, sub = jax.random.split(key)
            loss, grad, st = self._batch_step(params, st, sub, *xy)
            params = jax.tree.map(lambda p, g: p - lr * g, params, grad)
            return (params, st, key), loss.mean()
        (params, st, key), losses = jax.lax.scan(body, (params, st, key), (xs, ys))
        return params, st, key, losses

    def _total_fn(self, params, key, xs, ys):
        """Σ_t of the batch-mean estimates at fixed parameters, from zero state."""
        def body(carry, xy):
            st, key, tot = carry
            key, sub = jax.random.split(key)
            _, grad, st = self._batch_step(params, st, sub, *xy)
            return (st, key, jax.tree.map(jnp.add, tot, grad)), None
        zero = jax.tree.map(jnp.zeros_like, params)
        (_, _, tot), _ = jax.lax.scan(body, (self._zero_state(xs.shape[1]), key, zero),
                                      (xs, ys))
        return tot

    # -- public
    def _data(self, xs, ys, B):
        xs = jnp.asarray(xs, dtype=jnp.float64)     # no copy if already on the device
        ys = jnp.asarray(ys, dtype=jnp.int64)
        return xs.reshape(len(xs), B, self.n_in), ys.reshape(len(ys), B)

    def run(self, xs, ys) -> np.ndarray:
        """Online steps over a chunk, xs (T, B, n_in) and ys (T, B) (or (T, n_in), (T,)
        at batch 1), with SGD after each; returns the batch-mean loss of each step.
        One compile per chunk length."""
        xs, ys = self._data(xs, ys, self.batch)
        self.params, self.st, self.key, losses = self._run(
            self.params, self.st, self.key, xs, ys, self.lr)
        return np.asarray(losses)

    def total_gradient(self, xs, ys, batch: int = 1) -> dict:
        """Σ_t of the per-step estimates over one sequence at fixed parameters, from
        zero state and zero estimator state (the training state is kept). With
        batch > 1, xs is (T, batch, n_in) and each step's estimate is the batch mean."""
        xs, ys = self._data(xs, ys, batch)
        self.key, sub = jax.random.split(self.key)
        return {k: np.asarray(v) for k, v in self._total(self.params, sub, xs, ys).items()}

    def total_gradient_seeds(self, xs, ys, seeds, batch: int = 1) -> dict:
        """``total_gradient`` for many seeds at once (vmap): arrays with a leading seed
        axis; the random draws of seed s are those of ``cls(..., seed=s)``."""
        xs, ys = self._data(xs, ys, batch)
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
        out = self._total_seeds(self.params, keys, xs, ys)
        return {k: np.asarray(v) for k, v in out.items()}


class JaxUORO(_JaxEstimator):
    """UORO (Tallec & Ollivier 2017, Algorithm 1) on the recurrent matrix W."""

    def _state_shapes(self):
        c = self.cell
        return {"s": (c.S,), "s_tilde": (c.S,), "w_tilde": (c.Z, self.m)}

    def _correction(self, st, ds_prev):
        return jnp.dot(ds_prev, st["s_tilde"]) * st["w_tilde"]

    def _advance(self, st, W, s, x, f_vjp, key):
        s_t, w_t = st["s_tilde"], st["w_tilde"]
        _, hs = jax.jvp(lambda s_: _step(self.cell, W, s_, x), (s,), (s_t,))   # H_t s̃
        nu = jax.random.rademacher(key, s.shape, dtype=s.dtype)
        nu_w, _ = f_vjp(nu)                                             # νᵀ ∂s_t/∂W
        rho0 = jnp.sqrt(_norm(w_t) / (_norm(hs) + EPS)) + EPS
        rho1 = jnp.sqrt(_norm(nu_w) / (_norm(nu) + EPS)) + EPS
        return {"s_tilde": rho0 * hs + rho1 * nu, "w_tilde": w_t / rho0 + nu_w / rho1}


class JaxKFRTRL(_JaxEstimator):
    """KF-RTRL (Mujika et al. 2018, eqs. 7-8): ds/dW ~ A ⊗ u with z = W a."""

    def _state_shapes(self):
        c = self.cell
        return {"s": (c.S,), "A": (c.S, c.Z), "u": (self.m,)}

    def _correction(self, st, ds_prev):
        return jnp.outer(st["A"].T @ ds_prev, st["u"])

    def _advance(self, st, W, s, x, f_vjp, key):
        A, u = st["A"], st["u"]
        a = _inputs(self.cell, s, x)
        z = W @ a
        _, H = jax.linearize(lambda s_: _step(self.cell, W, s_, x), s)
        HA = jax.vmap(H, in_axes=1, out_axes=1)(A)                         # H_t A
        D = jax.jacfwd(self.cell.post)(z, s)                               # ∂s_t/∂z_t
        p1 = jnp.sqrt(_norm(HA) / (_norm(u) + EPS)) + EPS
        p2 = jnp.sqrt(_norm(D) / (_norm(a) + EPS)) + EPS
        c1, c2 = jax.random.rademacher(key, (2,), dtype=s.dtype)
        return {"A": (c1 / p1) * HA + (c2 / p2) * D, "u": (c1 * p1) * u + (c2 * p2) * a}


class JaxRTRL(_JaxEstimator):
    """Exact RTRL on W: G_t = ds_t/dW (S x Z x |a|), G_t = H_t G_{t-1} + ∂s_t/∂W."""

    def _state_shapes(self):
        c = self.cell
        return {"s": (c.S,), "G": (c.S, c.Z, self.m)}

    def _correction(self, st, ds_prev):
        return jnp.tensordot(ds_prev, st["G"], axes=1)

    def _advance(self, st, W, s, x, f_vjp, key):
        G = st["G"]
        f = lambda W_, s_: _step(self.cell, W_, s_, x)   # noqa: E731
        H = jax.jacfwd(f, argnums=1)(W, s)                                 # S x S
        J = jax.jacrev(f, argnums=0)(W, s)                                 # S x Z x |a|
        return {"G": jnp.tensordot(H, G, axes=1) + J}


ESTIMATORS = {"uoro": JaxUORO, "kf-rtrl": JaxKFRTRL, "rtrl": JaxRTRL}


# --------------------------------------------------------------------- verification
def verify(n_in=3, n=4, n_out=3, T=8, seeds=2000, n_proj=4, reps=40):
    """RTRL against rgraph's exact gradient; UORO's and KF-RTRL's mean over seeds."""
    import rgraph as rg

    data_rng = np.random.default_rng(1234)
    xs = data_rng.standard_normal((T, n_in))
    ys = data_rng.integers(0, n_out, size=T)
    worst = 0.0
    ok = True
    for cell in ("tanh", "lstm"):
        rg_cell = rg.cells.tanh_rnn(n_in, n, n_out) if cell == "tanh" else \
            rg.cells.lstm(n_in, n, n_out)
        ex = rg.compile(rg_cell, "bptt", backend="numpy")
        params = ex.init_params(seed=0)
        exact = ex.total_gradient(params, xs, ys)
        t0 = time.perf_counter()
        rtrl = JaxRTRL(cell, n_in, n, n_out, params, lr=0.0)
        g = rtrl.total_gradient(xs, ys)
        err_rtrl = max(np.max(np.abs(g[k] - exact[k])) for k in exact)
        loss = rtrl.run(xs, ys).mean()          # lr = 0: the loss at fixed parameters
        err_loss = abs(loss - ex.loss(params, xs, ys))
        print(f"[{cell}] JaxRTRL vs rgraph bptt: max |diff| = {err_rtrl:.1e};  loss "
              f"|diff| = {err_loss:.1e}  ({time.perf_counter() - t0:.1f}s)")
        ok &= err_rtrl < 1e-10 and err_loss < 1e-10
        proj = np.random.default_rng(99).standard_normal((n_proj,) + exact["W"].shape)
        for cls in (JaxUORO, JaxKFRTRL):
            t0 = time.perf_counter()
            est = cls(cell, n_in, n, n_out, params, lr=0.0)
            gs = est.total_gradient_seeds(xs, ys, np.arange(seeds))
            # V and b are exact: every seed must match
            err_vb = max(np.max(np.abs(gs[k] - exact[k][None])) for k in ("V", "b"))
            gw = gs["W"]
            mean, se = gw.mean(0), gw.std(0, ddof=1) / np.sqrt(seeds)
            z_coord = np.max(np.abs(mean - exact["W"]) / se)
            pg = np.einsum("sij,pij->sp", gw, proj)
            z_proj = np.abs(pg.mean(0) - np.einsum("ij,pij->p", exact["W"], proj)) / \
                (pg.std(0, ddof=1) / np.sqrt(seeds))
            # the batched path: the B streams of one run are independent estimates
            B = seeds // reps
            gb = est.total_gradient_seeds(np.repeat(xs[:, None], B, 1),
                                          np.repeat(ys[:, None], B, 1),
                                          10_000 + np.arange(reps), batch=B)["W"]
            z_batch = np.max(np.abs(gb.mean(0) - exact["W"]) /
                             (gb.std(0, ddof=1) / np.sqrt(reps)))
            worst = max(worst, z_coord, z_proj.max(), z_batch)
            ok &= err_vb < 1e-10
            print(f"[{cell}] {cls.__name__:9s} {seeds} seeds: W max|z| per coordinate "
                  f"{z_coord:.2f} ({gw.shape[1] * gw.shape[2]} coords), projections "
                  f"{np.array2string(z_proj, precision=2)}, batched path ({reps} x {B} "
                  f"streams) max|z| {z_batch:.2f};  V,b max|diff| {err_vb:.1e}  "
                  f"({time.perf_counter() - t0:.1f}s)")
    ok &= worst < 4
    print(f"worst |z| = {worst:.2f} " + ("(ok, < 4)" if worst < 4 else "(FAIL)")
          + ("" if ok else ";  FAILED"))
    return ok


if __name__ == "__main__":
    sys.exit(0 if verify() else 1)
