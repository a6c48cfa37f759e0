"""The built-in cells, and a new one, written in the DSL: listing, analysis, checks.

Each cell of ``rgraph.cells`` is a few lines (read ``rgraph/cells.py``); this script
builds each, prints its graph and analysis, checks every generated derivative against
finite differences, and compiles the estimators that apply. Then it defines a cell that
is in no paper — a "minimal gated unit" with a peephole on a softplus state — in ten
lines, and does the same for it.

    python examples/cells_tour.py [--backend numba|numpy]
"""
from __future__ import annotations

import argparse

import numpy as np

import rgraph as rg


def mgu_softplus(n_in: int, n: int, n_out: int) -> rg.Cell:
    """A cell of no paper: one forget gate f with a peephole on the state, and a
    softplus candidate, h' = f h + (1 - f) (softplus(u) - log 2)."""
    c = rg.Cell("mgu")
    x, h = c.input("x", n_in), c.state("h", n)
    Wf = c.param("Wf", (n, n + n_in + 1))
    Wu = c.param("Wu", (n, n + n_in + 1))
    peep = c.param("peep", n, init="zeros")          # enters elementwise: no Kronecker
    hx = rg.concat(h, x, rg.const(1.0)).named("hx")
    f = rg.sigmoid(Wf @ hx + peep * h).named("f")
    u = rg.pointwise(lambda z: rg.softplus(z) - np.log(2.0), Wu @ hx, name="sp0")
    h_new = f * h + (1 - f) * u
    c.update(h, h_new)
    c.output("logits", c.param("V", (n_out, n)) @ h_new)
    return c


def tour(cell: rg.Cell, backend: str):
    print("=" * 88)
    print(cell)
    an = rg.analyze(cell)
    print()
    print(an.report())
    err = rg.check_derivatives(cell, backend)
    print(f"\nderivatives vs central differences (worst relative error): "
          f"{max(err.values()):.1e}")
    loss = "mse" if cell.name == "influence" else "softmax_xent"
    rng = np.random.default_rng(0)
    n_in = cell.nodes[0].shape[0]
    T = 12
    if loss == "mse":
        xs, ys = np.ones((T, 1)), np.ones((T, 1))
    else:
        n_out = next(n for n in cell.nodes if n.id == next(iter(cell.outputs.values()))).shape[0]
        xs, ys = rng.standard_normal((T, n_in)), rng.integers(0, n_out, T)
    bptt = rg.compile(cell, "bptt", loss=loss, backend=backend)
    p = bptt.init_params(0)
    if "theta" in p:
        p["theta"][:] = 0.3
    exact = bptt.total_gradient(p, xs, ys)
    for name in ("rtrl", "uoro", "kf-rtrl", "dodge"):
        try:
            est = rg.compile(cell, name, loss=loss, backend=backend)
        except rg.NotApplicable as e:
            print(f"  {name:8s} does not apply: {str(e)[:90]}...")
            continue
        g = est.total_gradient(p, xs, ys, seed=1)
        k = bptt.blocks[0].name
        cos = float(np.sum(g[k] * exact[k]) / np.linalg.norm(g[k]) / np.linalg.norm(exact[k]))
        print(f"  {est.name:8s} one draw of the total gradient: cosine to BPTT's {cos:+.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["numba", "numpy"], default="numpy")
    args = ap.parse_args()
    for cell in (rg.cells.tanh_rnn(4, 6, 4), rg.cells.rhn(4, 6, 4, "2sigmoid-1"),
                 rg.cells.lstm(4, 6, 4), rg.cells.gru(4, 6, 4),
                 rg.cells.influence_balancing(7, 4), mgu_softplus(4, 6, 4)):
        tour(cell, args.backend)


if __name__ == "__main__":
    main()
