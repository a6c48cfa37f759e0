"""A run's folder: config.json (its ``RunConfig``), checkpoint.npz, with ``full_curve``
losses.f64 (every step's loss, appended as the run goes), and at the end curve.csv,
curve.png and params.npz. A folder is made whole or not at all, and an existing run is
never overwritten unless asked."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from .config import RunConfig

CONFIG = "config.json"
# full_curve: the mean loss over the batch of every step, in nats (NaN where nothing was
# scored), as raw little-endian float64, appended chunk by chunk and never rewritten
STEP_LOSSES = "losses.f64"


def read_config(run_dir) -> RunConfig:
    """The run folder's config.json (``ConfigError`` for a bad one, ``OSError`` for a
    missing one)."""
    return RunConfig.from_json((Path(run_dir) / CONFIG).read_text())


def write_config(run_dir, cfg: RunConfig) -> Path:
    path = Path(run_dir) / CONFIG
    path.write_text(cfg.to_json())
    return path


def default_run_dir(cfg: RunConfig, root="runs") -> Path:
    """``runs/CELL-TASK-ESTIMATOR-sSEED-TIME`` (to the millisecond), for a new run."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + \
        f"-{int(now * 1000) % 1000:03d}"
    est_name = cfg.estimator.replace("(", "").replace(")", "")
    return Path(root) / f"{cfg.cell}-{cfg.task}-{est_name}-s{cfg.seed}-{stamp}"


def new_run_dir(base: Path, cfg: RunConfig) -> Path:
    """Create a fresh run folder named ``base`` (or ``base-2``, ``base-3``, ... when that
    exists: the creation is atomic, so runs started at once never share one) holding
    the run's config.json."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10000):
        run_dir = base if k == 1 else base.with_name(f"{base.name}-{k}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        write_config(run_dir, cfg)
        return run_dir
    raise FileExistsError(f"cannot create a run folder next to {str(base)!r}: 10,000 exist")


def start_run_dir(run_dir: Path, cfg: RunConfig) -> Path:
    """The run folder ``--out`` names: created fresh, or (``--force``) replacing what is
    there once the new run's folder is ready."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg)
        return run_dir
    fresh = new_run_dir(run_dir.with_name(run_dir.name + f".new{os.getpid()}"), cfg)
    old = run_dir.with_name(run_dir.name + f".old{os.getpid()}")
    os.replace(run_dir, old)
    os.replace(fresh, run_dir)
    shutil.rmtree(old)
    return run_dir


def read_step_losses(run_dir, steps: int) -> np.ndarray:
    """The first ``steps`` per-step losses of a full-curve run (losses.f64); NaN for the
    steps it does not hold."""
    path = Path(run_dir) / STEP_LOSSES
    have = np.fromfile(path, dtype="<f8", count=steps) if path.exists() else np.zeros(0)
    return np.concatenate([have, np.full(steps - len(have), np.nan)])


def write_run_outputs(run_dir, tr, task, est, cfg: RunConfig):
    """curve.csv (from the trainer's block curve, or every step of losses.f64 with
    ``full_curve``), params.npz, curve.png and a summary line."""
    from ..plots import learning_curves
    if cfg.full_curve:
        curve = np.atleast_1d(task.to_unit(read_step_losses(run_dir, tr.step)))
        _write_full_curve(Path(run_dir) / "curve.csv", curve, task.unit)
        shown = curve
    else:
        ends, means = tr.blocks.curve()
        means = np.atleast_1d(task.to_unit(means))
        _write_block_curve(Path(run_dir) / "curve.csv", ends, means, task.unit)
        ok = ~np.isnan(means)
        shown = (ends[ok], means[ok])
    np.savez(Path(run_dir) / "params.npz", **tr.params)
    title = f"{est.name} on {task!r}, {cfg.cell}-{cfg.hidden}"
    learning_curves({est.name: shown}, Path(run_dir) / "curve.png", task.optimum, title,
                    ylabel=task.unit)
    tail = task.to_unit(tr.blocks.recent(0.1))
    line = f"step {tr.step:,}: recent loss {tail:.4g} {task.unit}"
    if getattr(task, "optimum", None) is not None:
        line += f" (optimum {task.optimum:.4g})"
    if hasattr(task, "valid"):
        vx, vy = task.valid()
        line += f"; validation {task.to_unit(est.loss(tr.params, vx, vy)):.4g} {task.unit}"
    if hasattr(task, "T") and getattr(task, "curriculum", False):
        line += f"; copy length T = {tr.tasks[0].T}"
    print(line)
    print(f"wrote {run_dir}/curve.csv, curve.png, params.npz, checkpoint.npz")


def _write_full_curve(path, curve, unit):
    """curve.csv: one row per step, with a moving average."""
    from ..plots import moving_average
    unit = unit.replace('/', '_per_')
    with open(path, "w") as f:
        w = max(1, min(1000, len(curve) // 20))
        fill = np.nanmean(curve) if np.any(~np.isnan(curve)) else 0.0
        ma = moving_average(np.nan_to_num(curve, nan=fill), w)
        f.write(f"step,loss_{unit},moving_average_{w}\n")
        for t, c in enumerate(curve):
            m = ma[t - w + 1] if t >= w - 1 else ""
            f.write(f"{t},{c:.6g},{m if m == '' else f'{m:.6g}'}\n")


def _write_block_curve(path, ends, means, unit):
    """curve.csv: the block means (at most 1,000 rows), by the step each block ends at."""
    unit = unit.replace('/', '_per_')
    with open(path, "w") as f:
        f.write(f"step,loss_{unit}_block_mean\n")
        for t, c in zip(ends, means, strict=True):
            f.write(f"{t},{c:.6g}\n")
