"""Every figure rgraph draws (matplotlib, headless): learning curves (``rgraph train``,
``rgraph demo``), cosine to the true gradient against size (``rgraph variance``), and
the two helpers the example scripts draw their own figures with.

matplotlib is imported when a figure is made, not with ``rgraph``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def figure(*grid, **kwargs):
    """``plt.subplots(*grid, **kwargs)`` on the file-only Agg backend: (fig, axes)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(*grid, **kwargs)


def save(fig, path) -> Path:
    """Lay out, write (120 dpi) and close a figure; returns the path."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def moving_average(x, w):
    """Means over windows of ``w`` consecutive values (x itself if shorter than w)."""
    x = np.asarray(x, dtype=float)
    if len(x) < w:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    return (c[w:] - c[:-w]) / w


def learning_curves(curves: dict, path, optimum=None, title="", ylabel="bits/char") -> Path:
    """One moving-average line per run ({name: per-step losses}, or {name: (steps,
    block means)}: a run's ``BlockCurve``), and the optimum."""
    fig, ax = figure(figsize=(7, 4.2))
    for name, c in curves.items():
        x, c = (np.asarray(c[0]), np.asarray(c[1])) if isinstance(c, tuple) else \
            (None, np.asarray(c))
        w = max(1, min(5000, len(c) // 50))
        ma = moving_average(c, w)
        ax.plot(np.arange(len(ma)) + w if x is None else x[w - 1:], ma, label=name, lw=1.4)
    if optimum is not None:
        ax.axhline(optimum, color="k", ls="--", lw=1, label="optimum")
    ax.set_xlabel("characters seen (online steps)")
    ax.set_ylabel(ylabel + " (moving average)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def cosine_vs_size(rows, path, title="") -> Path:
    """Cosine to the true gradient (mean ± sd) against size, one line per estimator
    (``rows``: a ``VarianceResult``'s)."""
    fig, ax = figure(figsize=(max(6.5, 0.075 * len(title)), 4.2))
    for est in dict.fromkeys(r.estimator for r in rows):
        rs = [r for r in rows if r.estimator == est]
        xs = [r.size for r in rs] if all(r.size is not None for r in rs) else \
            list(range(len(rs)))
        m = np.array([r.cos_mean for r in rs])
        sd = np.array([r.cos_std for r in rs])
        ax.errorbar(xs, m, yerr=sd, marker="o", capsize=3, label=est)
    ax.set_xlabel("units")
    ax.set_ylabel("cosine to the true gradient")
    if all(r.size for r in rows):
        ax.set_xscale("log", base=2)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    return save(fig, path)


def bands(series, path, optimum=None, title="", ylabel="bits/char") -> Path:
    """Learning curves over seeds (``rgraph sweep``'s summary.png): for each
    (label, steps, curves) of ``series``, ``curves`` one row per seed on the grid
    ``steps``, the mean over seeds and a band of ± one standard deviation."""
    import warnings
    fig, ax = figure(figsize=(8, 4.6))
    for label, steps, curves in series:
        curves = np.atleast_2d(np.asarray(curves, dtype=float))
        with warnings.catch_warnings():         # a step no seed has: nan, no warning
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(curves, axis=0)
            sd = np.nanstd(curves, axis=0, ddof=1) if len(curves) > 1 else None
        line, = ax.plot(steps, mean, lw=1.3, label=f"{label} ({len(curves)} seeds)")
        if sd is not None:
            ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.2,
                            lw=0)
    if optimum is not None:
        ax.axhline(optimum, color="k", ls="--", lw=1, label=f"optimum {optimum:.4g}")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss, {ylabel} (mean over seeds ± sd)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
