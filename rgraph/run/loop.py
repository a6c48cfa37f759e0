"""A run trained in its folder to its last step: a checkpoint every
``checkpoint_every`` steps and one at the end, a stop asked for between chunks, and a
divergence that halts the run with the checkpoint from before it.

The trainer keeps the learning curve as block means only (``record="blocks"``), so its
memory and its checkpoint do not grow with the run; with ``full_curve`` every step's
loss is appended to the folder's losses.f64 as the run goes (a resumed run first cuts
it back to the checkpoint's step, then writes the same numbers again)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import RunConfig
from .folders import STEP_LOSSES

CHECKPOINT = "checkpoint.npz"


@dataclass(frozen=True)
class Ended:
    """How ``train_in_folder`` ended: ``halted`` by a divergence (``divergence``, the
    trainer's event; the checkpoint kept is from ``checkpoint_step``, before it), or
    not (the checkpoint is the last step trained)."""
    halted: bool
    checkpoint_step: int
    divergence: dict | None = None


def train_in_folder(tr, task, cfg: RunConfig, run_dir, *, halt_on_divergence=False,
                    max_seconds=None, progress=True, stop=None) -> Ended:
    """Train ``tr`` on ``task`` from its step to ``cfg.steps``, saving checkpoints to
    ``run_dir``. ``stop()``, asked between chunks, and ``max_seconds`` end it early (with
    a checkpoint). With ``halt_on_divergence`` no checkpoint is written while the loss
    is above the divergence threshold, so the one kept is from before the divergence."""
    ck = Path(run_dir) / CHECKPOINT
    last_ck = [tr.step]
    if cfg.full_curve:
        tr.on_steps = _appender(Path(run_dir) / STEP_LOSSES, tr.step)

    def between_chunks(trainer, mean):
        if trainer.step - last_ck[0] >= cfg.checkpoint_every and \
                not (halt_on_divergence and trainer.health.suspect):
            trainer.save(ck)
            last_ck[0] = trainer.step
        return (stop is not None and stop()) or \
            bool(max_seconds and time.perf_counter() - t0 > max_seconds)
    t0 = time.perf_counter()
    n_div = len(tr.divergences)
    try:
        remaining = cfg.steps - tr.step
        if remaining > 0:
            tr.run_task(task, remaining, progress=progress, callback=between_chunks,
                        record="blocks")
    finally:
        tr.on_steps = None
        halted = halt_on_divergence and len(tr.divergences) > n_div
        if not halted:
            tr.save(ck)
    return Ended(halted, last_ck[0], tr.divergences[n_div] if halted else None)


def _appender(path: Path, step: int):
    """``Trainer.on_steps`` for a full curve: each chunk's per-step losses appended to
    ``path``, which first holds exactly the ``step`` steps before (cut back to them on a
    resume; NaN for steps it lacks)."""
    have = path.stat().st_size // 8 if path.exists() else 0
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(min(have, step) * 8)
        f.seek(0, 2)
        if have < step:
            f.write(np.full(step - have, np.nan, dtype="<f8").tobytes())

    def append(t0, losses):
        with open(path, "ab") as f:
            f.write(np.asarray(losses, dtype="<f8").tobytes())
    return append
