"""A cell written in JAX, read by rgraph: a minimal gated unit (Zhou et al., 2016) with
the forget gate applied after the recurrent matrix, as PyTorch's GRU applies its reset
gate. ``rg.from_jax`` imports it, ``rg.analyze`` finds a Kronecker sum of two factors,
KF-RTRL and UORO compile from it, and rgraph's exact gradient is checked against
``jax.grad`` of the unrolled loss.

    python examples/jax_mgu.py [--quick] [--backend numpy] [--hidden 16]

Needs JAX: pip install -e '.[jax]'.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

import rgraph as rg


def step(p, h, x):
    """One step of the MGU: the gate f reads W_x x and W_h h, the candidate scales the
    recurrent part by f after the matrix."""
    gx = p["W_x"] @ x + p["b_x"]
    gh = p["W_h"] @ h + p["b_h"]
    fx, cx = jnp.split(gx, 2)
    fh, ch = jnp.split(gh, 2)
    f = jax.nn.sigmoid(fx + fh)
    h_cand = jnp.tanh(cx + f * ch)
    h_new = (1 - f) * h + f * h_cand
    return h_new, p["V"] @ h_new + p["b"]


def example(n=16, n_in=3, n_out=3, seed=0):
    """(params, state, x): the parameter values (rgraph starts from them) and shapes."""
    r = np.random.default_rng(seed)
    params = {"W_x": r.normal(0, 1 / np.sqrt(n_in), (2 * n, n_in)), "b_x": np.zeros(2 * n),
              "W_h": r.normal(0, 1 / np.sqrt(n), (2 * n, n)), "b_h": np.zeros(2 * n),
              "V": r.normal(0, 1 / np.sqrt(n), (n_out, n)), "b": np.zeros(n_out)}
    return params, np.zeros(n), np.zeros(n_in)


def jax_gradient(params, xs, ys):
    """jax.grad of the summed softmax cross-entropy, unrolled with lax.scan from h = 0."""
    def loss(p):
        def body(h, xy):
            h_new, y = step(p, h, xy[0])
            return h_new, -jax.nn.log_softmax(y)[xy[1]]
        return lax.scan(body, jnp.zeros(p["W_h"].shape[1]), (xs, ys))[1].sum()
    return {k: np.asarray(v) for k, v in jax.grad(loss)(params).items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20_000, help="training steps per estimator")
    ap.add_argument("--backend", default="numba", choices=["numba", "numpy"])
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = ap.parse_args(argv)
    steps = 500 if args.quick else args.steps
    jax.config.update("jax_enable_x64", True)

    params, h0, x0 = example(args.hidden)
    cell = rg.from_jax(step, params, h0, x0, name="mgu")
    print(cell)
    report = rg.analyze(cell).report()
    print("\n".join(line for line in report.splitlines() if "Kronecker" in line
                    or line.startswith("  yes") or line.startswith("  no")))

    # rgraph's exact gradient (RTRL) against jax.grad on the same sequence
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 3, 200)
    xs, ys = np.eye(3)[ids], np.roll(ids, 1)          # predict the previous symbol
    rtrl = rg.compile(cell, "rtrl", backend=args.backend)
    g = rtrl.total_gradient(params, xs[:50], ys[:50])
    gj = jax_gradient(params, xs[:50], ys[:50])
    err = max(float(np.max(np.abs(g[k] - gj[k]))) for k in g)
    print(f"RTRL vs jax.grad over 50 steps: max |difference| {err:.1e}")

    # KF-RTRL and UORO from the same cell, trained online on the echo task
    ids = rng.integers(0, 3, steps)
    xs, ys = np.eye(3)[ids], np.roll(ids, 1)
    for name in ("kf-rtrl", "uoro"):
        est = rg.compile(cell, name, backend=args.backend)
        t0 = time.perf_counter()
        res = est.train(est.init_params(), xs, ys, optimizer=rg.Adam(3e-3), batch=1)
        loss = np.asarray(res.losses).ravel()
        print(f"{name:8s} loss over the first 100 steps {loss[:100].mean():.3f}, over the "
              f"last 100 {loss[-100:].mean():.3f} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
