"""``rgraph demo``: a short tour on a built-in LSTM.

The analysis (projection spaces, Kronecker verdict), a look at the generated code, then
online training of the same LSTM on aⁿbⁿ(1, 32) (Tallec & Ollivier §4) with KF-RTRL,
UORO and TBPTT-16 for a fixed wall-clock budget each, a validation measurement in
bits per character, and a plot of the learning curves.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from . import plots
from .analysis import analyze
from .api import compile as rg_compile
from .api import precompile
from .cells import lstm
from .tasks import AnBn
from .training.optim import Adam
from .training.trainer import curve_rows

ESTIMATORS = [("kf-rtrl", {}), ("uoro", {}), ("tbptt(16)", {})]


def train_for(est, task, seconds, seed=0, lr=1e-3, decay=0.03, chunk=5000, progress=True):
    """Train online on the task's stream until ``seconds`` of wall time have passed, with
    Tallec & Ollivier's Adam schedule lr / (1 + decay √t), t counted in characters (an
    estimator that updates every k steps gets decay √k, as t counts its updates). No
    clipping: rescaling each of UORO's heavy-tailed estimates biases it, and it stops
    learning."""
    rng = np.random.default_rng(seed)
    k = est.spec.update_every(chunk)
    tr = est.trainer(est.init_params(seed), Adam(lr, decay=decay * math.sqrt(k)),
                     chunk=chunk, seed=seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=round(seconds), desc=f"{est.name:>10}", unit="s",
                   bar_format="{desc} |{bar}| {n:.0f}/{total:.0f}s {postfix}")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        xs, ys = task.stream(chunk, rng)
        res = tr.run(xs, ys)
        if bar is not None:
            elapsed = time.perf_counter() - t0
            bar.n = min(elapsed, seconds)
            recent = task.to_unit(np.mean(res.losses[-chunk:]))
            bar.set_postfix_str(f"{tr.step:,} steps, {tr.step / elapsed:,.0f} steps/s, "
                                f"{recent:.3f} bpc")
    if bar is not None:
        bar.close()
    return tr, time.perf_counter() - t0


def run_demo(out="runs/demo", seconds=40.0, hidden=32, progress=True):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = AnBn(1, 32)
    cell = lstm(task.n_in, hidden, task.n_out)
    print("== 1. the cell (one step of an LSTM, as a graph)\n")
    print(cell)
    print("\n== 2. what rgraph makes of it\n")
    an = analyze(cell)
    print(an.report())
    print(f"\n== 3. online training on {task!r} (optimum {task.optimum:.3f} bpc), "
          f"{seconds:.0f} s each\n")
    curves, summary = {}, []
    t = time.perf_counter()
    ests = [rg_compile(cell, name, **opts) for name, opts in ESTIMATORS]
    precompile(ests)            # all three at once (loaded, where the cache has them)
    print(f"{', '.join(e.name for e in ests)}: compiled (or loaded from the cache) in "
          f"{time.perf_counter() - t:.1f} s\n")
    for est in ests:
        tr, wall = train_for(est, task, seconds, progress=progress)
        vx, vy = AnBn(1, 32).stream(20000, np.random.default_rng(123))
        bpc = task.to_unit(est.loss(tr.params, vx, vy))
        curves[est.name] = task.to_unit(np.asarray(tr.curve))
        summary.append((est.name, tr.step, tr.step / wall, bpc))
    print("\n== 4. where each got (validation: 20,000 fresh characters)\n")
    print(f"  {'estimator':<12}{'steps':>10}{'steps/s':>11}{'valid bpc':>11}")
    for name, steps, sps, bpc in summary:
        print(f"  {name:<12}{steps:>10,}{sps:>11,.0f}{bpc:>11.3f}")
    print(f"  optimum {task.optimum:.3f} bpc; a model that does not count gets "
          f"{task.optimum_no_counting:.3f}")
    png = plots.learning_curves(curves, out / "demo.png", task.optimum,
                      f"LSTM-{hidden} on aⁿbⁿ(1,32), {seconds:.0f} s each (2 cores)")
    with open(out / "curves.csv", "w") as f:      # block means: at most 1,000 rows each
        names = list(curves)
        rows = {n: dict(zip(*curve_rows(curves[n]), strict=True)) for n in names}
        f.write("step," + ",".join(names) + "\n")
        for t in sorted(set().union(*rows.values())):
            f.write(f"{t}," + ",".join(f"{rows[n][t]:.5g}" if t in rows[n] else ""
                                       for n in names) + "\n")
    print(f"\nwrote {png} and {out / 'curves.csv'}")
    print("next: rgraph inspect lstm --estimator kf-rtrl --source   (the generated code)")
    return summary

