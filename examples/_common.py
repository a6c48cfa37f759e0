"""Helpers shared by the Tallec & Ollivier reproductions (anbn.py, brackets.py)."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _sqrt_t_average(x):
    out = np.empty_like(x)
    L = x[0]
    out[0] = L
    for t in range(1, x.shape[0]):
        a = 1.0 / np.sqrt(t)
        L = (1.0 - a) * L + a * x[t]
        out[t] = L
    return out


def paper_smoothing(losses):
    """The paper's plotted curve: L(t+1) = (1 - 1/√t) L(t) + ℓ_{t+1} / √t."""
    x = np.asarray(losses, dtype=np.float64)
    return _sqrt_t_average(x) if len(x) else x


def curve_block(results) -> int:
    """Steps per plotted point: about 200 points over the longest run, 1,000 to 10,000."""
    return max(1000, min(10_000, max(r["steps"] for r in results) // 200))


def block_means(curve, block):
    """(x, means) of ``curve`` over consecutive blocks of ``block`` steps."""
    m = len(curve) // block
    return (np.arange(m) + 0.5) * block, curve[:m * block].reshape(m, block).mean(axis=1)


def write_curves_csv(results, path, block):
    """One row per block of steps: each run's mean loss over the block and its
    paper-smoothed value at the block's end (empty once a run has stopped)."""
    smooth = {r["key"]: paper_smoothing(r["curve"]) for r in results}
    n = max(r["steps"] for r in results) // block
    with open(path, "w") as f:
        cols = [f"{r['key']}_bpc,{r['key']}_smoothed" for r in results]
        f.write(f"step,{','.join(cols)}\n")
        for i in range(n):
            row = [str((i + 1) * block)]
            for r in results:
                c = r["curve"]
                if (i + 1) * block <= len(c):
                    row += [f"{np.mean(c[i * block:(i + 1) * block]):.5f}",
                            f"{smooth[r['key']][(i + 1) * block - 1]:.5f}"]
                else:
                    row += ["", ""]
            f.write(",".join(row) + "\n")


def write_evals_csv(results, path, columns):
    """validation.csv: one row per validation point of each run (step, seconds, then
    ``columns``)."""
    with open(path, "w") as f:
        f.write("run,step,seconds," + ",".join(columns) + "\n")
        for r in results:
            for step, wall, *vals in r["evals"]:
                f.write(f"{r['key']},{step},{wall:.1f},"
                        + ",".join(f"{x:.5f}" for x in vals) + "\n")
