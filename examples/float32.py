"""float32 against float64: µs per online step and the agreement of the gradients.

For a tanh RNN and an LSTM (n_in = n_out = 8) at n = 64 and 128 units, and for UORO,
KF-RTRL, SnAp-1 and RTRL (n = 64 only), the same estimator is compiled twice
(``rg.compile(cell, name, dtype=...)``) and measured the same way:

* µs per online training step, batch 1, one BLAS thread (threadpoolctl), the process
  pinned to one core (``os.sched_setaffinity``); timed as ``benchmarks/bench.py``'s
  ``best_time`` does (the best of 3 runs of ~0.5 s, compile excluded);
* the cosine between the float32 and the float64 total gradient (``total_gradient``:
  Σ_t of the per-step estimates) over a 50-step sequence, same parameters, same seed,
  printed as 1 − cos (it is quadratic in the difference: a relative difference of 1e-7
  gives 1 − cos ≈ 1e-14), with the relative difference |g32 − g64| / |g64|; for the
  random estimators also 1 − cos between the means over 20 seeds.

    python examples/float32.py             # a few minutes with a warm cache
    python examples/float32.py --quick     # n = 16, two estimators: a smoke run

Prints a markdown table (and writes it to ``--out``/float32.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import rgraph as rg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's benchmarks/
from benchmarks.bench import best_time  # noqa: E402

CELLS = {"tanh": rg.cells.tanh_rnn, "lstm": rg.cells.lstm}
RANDOM = {"uoro", "kf-rtrl"}


def time_step(est, seconds=0.5, repeats=3):
    """µs per online step of ``est`` at batch 1 (its own float type), SGD with a tiny
    learning rate, data one-hot inputs and random classes, as ``time_rgraph`` does."""
    rng = np.random.default_rng(0)
    L = 20000
    xs = np.eye(8)[rng.integers(0, 8, (L, 1))]
    ys = rng.integers(0, 8, (L, 1))
    tr = est.trainer(est.init_params(0), rg.SGD(1e-5), batch=1, chunk=10**9)
    tr.run(xs[:2], ys[:2])               # compiled and loaded before timing

    def run(k):
        done = 0
        while done < k:
            m = min(k - done, L)
            tr.run(xs[:m], ys[:m])
            done += m
    return best_time(run, seconds, repeats) * 1e6


def flat(est, g):
    return np.concatenate([np.ravel(g[b.name]) for b in est.blocks])


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def agreement(e32, e64, T=50, seeds=20):
    """(same-seed cosine, same-seed relative difference, cosine of the means over
    ``seeds`` seeds or None)."""
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((T, e64.n_in))
    ys = rng.integers(0, e64.n_out, T)
    p = e64.init_params(0)
    grad = lambda e, s: flat(e, e.total_gradient(p, xs, ys, seed=s))  # noqa: E731
    a, b = grad(e32, 0), grad(e64, 0)
    same, rel = cosine(a, b), float(np.linalg.norm(a - b) / np.linalg.norm(b))
    if not e64.spec.stochastic:
        return same, rel, None
    m32 = np.mean([grad(e32, s) for s in range(seeds)], axis=0)
    m64 = np.mean([grad(e64, s) for s in range(seeds)], axis=0)
    return same, rel, cosine(m32, m64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--estimators", default="uoro,kf-rtrl,rtrl,snap-1")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--out", default="runs/examples/float32")
    ap.add_argument("--quick", action="store_true", help="n = 16, uoro and rtrl")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.estimators, args.seconds = "16", "uoro,rtrl", 0.1
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    lines = [f"pinned to core {core}, one BLAS thread, batch 1; µs per online step", "",
             "| cell | n | estimator | float64 µs | float32 µs | speed-up | "
             "1 − cos (same seed) | relative difference | 1 − cos (mean of 20 seeds) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for line in lines:
        print(line, flush=True)
    for cell_name in CELLS:
        for n in (int(s) for s in args.sizes.split(",")):
            for name in args.estimators.split(","):
                if name == "rtrl" and n > 64:
                    continue
                ests = {dt: rg.compile(CELLS[cell_name](8, n, 8), name, dtype=dt,
                                       blas_threads=1) for dt in ("float64", "float32")}
                us = {dt: time_step(e, args.seconds) for dt, e in ests.items()}
                same, rel, mean = agreement(ests["float32"], ests["float64"])
                row = (f"| {cell_name} | {n} | {name} | {us['float64']:.1f} | "
                       f"{us['float32']:.1f} | {us['float64'] / us['float32']:.2f}× | "
                       f"{1 - same:.1e} | {rel:.1e} | "
                       f"{'—' if mean is None else f'{1 - mean:.1e}'} |")
                print(row, flush=True)
                lines.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "float32.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
