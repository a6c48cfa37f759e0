"""A stacked Linear Recurrent Unit trained online: layer-local exact learning (Zucchet
et al. 2023) against SnAp-1 and truncated BPTT, on a task with a long dependency.

The task (generated here): a stream of symbols drawn uniformly from K = 8, one per
step, one-hot; at every step the target is the symbol shown ``--delay`` steps earlier
(default 16). Nothing in between predicts it, so a network without a memory of at
least ``delay`` steps stays at the chance loss log K = 3 bits; a perfect one gets 0.
Each of ``--batch`` streams is its own endless sequence (no resets), and every step
is an online update (Adam) for every estimator.

The model: ``rg.cells.lru(8, n, 8, layers=2, width=8, r_min=0.9)``, two LRU layers of
n complex units each (default 16) on a residual stream of width 8, joined as Zucchet
et al. join them (u ← u + GELU(Re(C h) + D ⊙ u)), readout V u + b. Why width 8, the
input's width: with n_in equal to the width the stream starts at u = x and the cell has
no encoder W_enc. An encoder is dense in the layer-local influence (every entry of
W_enc reaches every unit of the first layer through B), which would make layer-rtrl
cost O(n · P) on the first layer instead of O(P). Without it, each layer's own
parameters (ν, θ, γ, B) reach only their own units, and layer-rtrl keeps 2 numbers
per parameter there: the cost of the forward pass. r_min = 0.9 starts every |λ| in
[0.9, 1], where the memory lasts tens of steps (Orvieto et al.'s choice for long
ranges).

The estimators (same cell, seed, data and optimizer):

* ``layer-rtrl``: exact RTRL inside each layer (the LRU's 2×2 blocks make it cheap),
  the same-step backprop between layers. It drops the paths that leave a layer and
  come back through another layer's recurrence. ``rg.analyze(cell).components`` lists
  the layers; the report shows what each family keeps per layer. Note: the parameters
  between two layers (C and D of layer 0) enter layer 1's update, so layer-rtrl keeps
  their influence on layer 1's units (dense through B of layer 1): O(P) holds for each
  layer's own parameters, not for these.
* ``snap-1``: on this stack SnAp-1's mask saturates (every parameter reaches every
  state it ever reaches within one step, since layer 1 reads layer 0 in the same
  step), so SnAp-1 *is* RTRL here (the report says "saturates: equals RTRL"), at
  about twice layer-rtrl's cost.
* ``tbptt(K)``: backprop through time over segments of K steps (default 4 × delay),
  one update per segment; dependencies that cross a segment's start are lost.

Time per step is measured in the same run, during training, with the process pinned to
one core and BLAS on one thread (as ``examples/bench.py`` does), numba backend.

    python examples/online_lru.py            # the default run (see examples/README.md)
    python examples/online_lru.py --quick    # a few seconds, numpy backend, no figure

Writes ``online_lru.csv`` (the curves), ``summary.csv`` and ``online_lru.png`` into
``--out`` (default ``runs/examples/online_lru``); ``--figure PATH`` writes the figure
there too (the committed one: ``examples/figures/online_lru.png``).
"""
from __future__ import annotations

import os

# The generated code calls BLAS on small matrices; one thread per process.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import rgraph as rg  # noqa: E402

K = 8                       # symbols, the input's and the output's width
LOG2 = np.log(2.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delay", type=int, default=16, help="steps back to recall (16)")
    p.add_argument("--hidden", type=int, default=16, help="complex units per layer (16)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=60000, help="online steps per stream")
    p.add_argument("--batch", type=int, default=1, help="streams")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--trunc", type=int, default=None,
                   help="TBPTT's segment length (default 4 x delay)")
    p.add_argument("--estimators", default=None,
                   help="comma-separated (default layer-rtrl,snap-1,tbptt(4·delay))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="numba", choices=("numba", "numpy"))
    p.add_argument("--out", default=None, help="output folder (default "
                   "runs/examples/online_lru, or runs/examples/online_lru-quick)")
    p.add_argument("--figure", default=None, help="also write the figure to this path")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: delay 4, 4 units, 120 steps, numpy backend, no figure")
    a = p.parse_args(argv)
    if a.quick:
        a.delay, a.hidden, a.steps, a.batch, a.backend = 4, 4, 120, 1, "numpy"
    if a.trunc is None:
        a.trunc = 4 * a.delay
    if a.estimators is None:
        a.estimators = f"layer-rtrl,snap-1,tbptt({a.trunc})"
    if a.out is None:
        a.out = "runs/examples/online_lru" + ("-quick" if a.quick else "")
    return a


def delayed_recall(steps, batch, delay, seed):
    """(xs, ys, weights): one-hot symbols (steps, batch, K), the symbol ``delay`` steps
    back as target, weight 0 on the first ``delay`` steps (nothing to recall yet)."""
    rng = np.random.default_rng([seed, 7])
    sym = rng.integers(0, K, (steps, batch))
    ys = np.zeros((steps, batch), dtype=np.int64)
    ys[delay:] = sym[:-delay]
    ws = np.ones((steps, batch))
    ws[:delay] = 0.0
    return np.eye(K)[sym], ys, ws


def pin_one_core():
    """Pin this process to the first CPU it may use; returns that CPU."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {cpu})
    return cpu


def block_means(losses, block):
    m = len(losses) // block
    x = losses[:m * block].reshape(m, block)
    return (np.arange(m) + 1) * block, np.nanmean(x, axis=1)


def report_components(cell):
    """The components and the per-component entries each family keeps (the report's
    last table)."""
    text = rg.analyze(cell).report()
    keep = []
    for title in ("recurrent components", "per component"):
        i = text.find(title)
        if i >= 0:
            j = text.find("\n\n", i)
            keep.append(text[i:j if j >= 0 else None])
    return "\n".join(keep)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cell = rg.cells.lru(K, args.hidden, K, layers=args.layers, width=K, r_min=0.9)
    print(f"Delayed recall (delay {args.delay}, {K} symbols; chance {np.log2(K):.2f} "
          f"bits): LRU, {args.layers} layers x {args.hidden} complex units, width {K}, "
          f"batch {args.batch}, Adam {args.lr:g}, {args.steps:,} steps, backend "
          f"{args.backend}" + (" [--quick]" if args.quick else ""))
    print(report_components(cell))
    names = [e.strip() for e in args.estimators.split(",") if e.strip()]
    ests = [rg.compile(cell, e, backend=args.backend) for e in names]
    if args.backend == "numba":        # compile on every core, before pinning
        rg.precompile([(e, e.loop_for(args.batch)) for e in ests])
    cpu = pin_one_core()
    print(f"timing: pinned to CPU {cpu} (1 core), BLAS 1 thread; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    xs, ys, ws = delayed_recall(args.steps, args.batch, args.delay, args.seed)
    block = max(1, args.steps // 100)
    rows, curves = [], {}
    for est in ests:
        tr = est.trainer(est.init_params(args.seed), rg.Adam(args.lr), batch=args.batch,
                         seed=args.seed)
        tr.run(xs[:2], ys[:2], weights=ws[:2])        # loads the loop; not timed
        t = time.perf_counter()
        res = tr.run(xs[2:], ys[2:], weights=ws[2:])
        wall = time.perf_counter() - t
        losses = np.asarray(res.losses[-(args.steps - 2):]) / LOG2     # bits
        x, m = block_means(losses, block)
        curves[est.name] = (x, m)
        tail = float(np.nanmean(losses[-max(1, len(losses) // 10):]))
        us = 1e6 * wall / (args.steps - 2)
        rows.append(dict(estimator=est.name, steps=args.steps, seconds=round(wall, 2),
                         us_per_step=round(us, 2),
                         us_per_stream_step=round(us / args.batch, 2),
                         final_bits=round(tail, 4)))
        print(f"  {est.name:<12} {us:9.1f} µs/step ({us / args.batch:.1f} per stream), "
              f"loss over the last 10 %: {tail:.3f} bits", flush=True)
    print(f"\n  {'estimator':<12}{'µs/step':>10}{'per stream':>12}{'final bits':>12}")
    for r in rows:
        print(f"  {r['estimator']:<12}{r['us_per_step']:>10.1f}"
              f"{r['us_per_stream_step']:>12.1f}{r['final_bits']:>12.3f}")
    print(f"  (chance {np.log2(K):.3f} bits; load average after: "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())})")

    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(out / "online_lru.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step"] + list(curves))
        first = next(iter(curves.values()))[0]
        for i, s in enumerate(first):
            w.writerow([int(s)] + [f"{c[1][i]:.5f}" for c in curves.values()])
    if not args.quick:
        paths = [out / "online_lru.png"] + ([Path(args.figure)] if args.figure else [])
        for path in paths:
            plot(curves, rows, args, path)
        print("wrote " + ", ".join(str(p) for p in paths))
    print(f"wrote {out / 'summary.csv'}, {out / 'online_lru.csv'}")
    print(f"total runtime {time.perf_counter() - t_start:.0f} s")
    return rows


def plot(curves, rows, args, path):
    fig, axes = rg.plots.figure(1, 2, figsize=(9, 3.4))
    us = {r["estimator"]: r["us_per_step"] for r in rows}
    for name, (x, m) in curves.items():
        axes[0].plot(x, m, lw=1.3, label=name)
        axes[1].plot(x * us[name] * 1e-6, m, lw=1.3, label=name)
    for ax in axes:
        ax.axhline(np.log2(K), color="gray", lw=0.8, ls=":")
        ax.set_ylabel("loss (bits)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_xlabel("online steps")
    axes[1].set_xlabel("seconds of training (1 core)")
    fig.suptitle(f"LRU {args.layers}x{args.hidden}, recall the symbol {args.delay} steps "
                 f"back (chance: {np.log2(K):.0f} bits)", fontsize=9)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rg.plots.save(fig, path)


if __name__ == "__main__":
    main()
