"""Online training: the ``Trainer`` (a resumable run) and what a run returns.

A trainer owns everything that changes during a run: the parameters, the optimizer's
moments, each stream's cell state and estimator state, the random generators, the step
count, the learning curve and (when it draws its data from a task) each stream's task
state. The learning curve is kept twice: as block means (``blocks``, a ``BlockCurve`` of
at most 1,000 rows, the same size at any length) and, as each call's ``record`` asks, per
step or per chunk (``curve``); ``record="blocks"`` keeps only the first, so that a long
run's memory and checkpoints do not grow with its length. Steps run a chunk at a time
inside one compiled call; chunks are aligned to the global step count, so a run
interrupted and resumed from a checkpoint continues number for number as if it had
never stopped.

A trainer is a ``runtime.Run`` (the run's arrays and generators, and the steps of one
compiled call, which an exported module runs too) with what rgraph adds around it: data
from tasks, the health checks, progress, callbacks and checkpoints. It drives a compiled
``Estimator`` (``rgraph.api``) through its methods and its ``runtime.Model`` only, so
this module does not import the API: ``api`` imports it to offer ``Estimator.trainer``
and ``Estimator.train``.
"""
from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import CollapseWarning, DataError, DivergenceWarning, InitWarning
from ..runtime import Run, per_step, positive_int
from .checkpoints import CHECKPOINT_VERSION, read_checkpoint, write_checkpoint
from .curve import BlockCurve
from .health import (START_STEPS, CollapseMonitor, DivergenceMonitor, check_start,
                     reference_loss)
from .optim import OPTIMIZERS, SGD


@dataclass
class TrainResult:
    """What a training run returns: final parameters and the learning curve."""

    params: dict
    losses: np.ndarray      # mean loss per step over the batch (nan where nothing is
    steps: int              # scored), or per chunk with record="chunk", or per block
                            # with record="blocks" (extra["x"]: the step each point
                            # ends at)
    seconds: float
    record: str = "step"
    extra: dict = field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else math.inf

    def __repr__(self):
        tail = self.losses[-max(1, len(self.losses) // 10):]
        last = float(np.nanmean(tail)) if len(tail) and np.any(np.isfinite(tail)) else \
            float("nan")
        return (f"TrainResult({self.steps} steps, {self.steps_per_second:,.0f} steps/s, "
                f"final loss ~{last:.4g})")


class Trainer(Run):
    """A resumable online training run of one compiled estimator.

    ``run(xs, ys)`` trains on given sequences; ``run_task(task, steps)`` draws the data
    from a task (one independent stream per batch element, ``task.fork``), feeding the
    task's curriculum if it has one. ``save`` / ``Trainer.load`` write and read a
    checkpoint. ``est`` is a compiled estimator (``rg.compile``).

    Runs are watched (``rgraph.training.health``): an absurd first loss gives an
    ``InitWarning``, a diverging loss a ``DivergenceWarning`` with the step (kept in
    ``divergences``), a loss that leaves its best level for long a ``CollapseWarning``
    (kept in ``collapses``; not on a task with a curriculum); ``halt_on_divergence``
    stops the run at a divergence. The batch's buffers are checked against the memory
    available (``rgraph.resources``) before they are allocated, unless
    ``force_memory``."""

    def __init__(self, est, params, optimizer=None, batch=1, seed=0, reset_prob=0.0,
                 chunk=1000, *, halt_on_divergence=False, force_memory=False):
        self.est = est
        self.optimizer = optimizer if optimizer is not None else SGD(1e-2)
        if not isinstance(self.optimizer, tuple(OPTIMIZERS.values())):
            names = " or ".join(f"rg.{c.__name__}(...)" for c in OPTIMIZERS.values())
            raise TypeError(f"optimizer must be {names}, got {self.optimizer!r}")
        th = est.pack(params)
        # refuse, with the figures, buffers that do not fit, before allocating them
        est.check_memory(positive_int(batch, "batch"), positive_int(chunk, "chunk"),
                         force=force_memory)
        super().__init__(est.model, th, self.optimizer.hyper(), batch, seed, reset_prob,
                         chunk)
        self.data_rngs = [np.random.default_rng([seed, 2, b]) for b in range(self.batch)]
        self.curve: list[float] = []
        self.curve_steps: list[int] = []    # record="chunk": the step each mean ends at
        self.blocks = BlockCurve()          # every step, as at most 1,000 block means
        self.tasks = None
        self.halt_on_divergence = bool(halt_on_divergence)
        self.health = DivergenceMonitor()
        self.collapse = CollapseMonitor()
        self.watch_collapse = True          # off on a task with a curriculum
        self.on_steps = None                # on_steps(t0, per-step losses), each chunk
        self.start_warning: str | None = None

    @property
    def divergences(self) -> list[dict]:
        """The divergences found so far (step it began, step confirmed, losses)."""
        return self.health.events

    @property
    def collapses(self) -> list[dict]:
        """The collapses found so far (step the high levels began, step confirmed, the
        level, the best level and its step)."""
        return self.collapse.events

    def __repr__(self):
        return (f"Trainer({self.est.name} on '{self.est.cell.name}', batch {self.batch}, "
                f"step {self.step}, {self.optimizer})")

    @property
    def params(self) -> dict:
        return self.est.unpack(self.th)

    # ------------------------------------------------------------------ running
    def run(self, xs, ys, weights=None, resets=None, progress=False, callback=None,
            record="step") -> TrainResult:
        """Continue training on (xs, ys): (T, n_in) split into ``batch`` contiguous
        streams, or (T, B, n_in). callback(trainer, chunk_mean_loss) is called between
        chunks; returning True stops. ``record``: what ``curve`` keeps, "step", "chunk"
        (the mean of each chunk) or "blocks" (nothing more than ``blocks``). Returns the
        whole run's result so far."""
        xs, ys, ws, rs = self.model.streams(xs, ys, weights, resets, self.batch)

        def source(done, n):
            sl = slice(done, done + n)
            return xs[sl], ys[sl], ws[sl], rs[sl]
        return self._loop(xs.shape[0], source, progress, callback, record,
                          lambda m: f"{m:.4g}", lambda m: m)

    def run_task(self, task, steps: int, progress=False, callback=None,
                 record="step") -> TrainResult:
        """Continue training for ``steps`` steps on a task's streams (``rgraph.tasks``).
        Sequence starts reset the state where the task marks them (the copy task); a
        task with a curriculum (``report``) hears the chunk's error in its unit."""
        steps = positive_int(steps, "steps")
        if task.n_in != self.est.n_in or task.n_out != self.est.n_out:
            raise DataError(f"task {task!r} has n_in={task.n_in}, n_out={task.n_out}; the "
                            f"cell has {self.est.n_in}, {self.est.n_out}")
        if task.loss != self.est.loss_name:
            raise DataError(f"task {task!r} wants loss {task.loss!r}; the estimator was "
                            f"compiled with {self.est.loss_name!r}")
        if self.tasks is None:
            self.tasks = [task.fork(b, self.batch) for b in range(self.batch)]
        # a curriculum raises the loss on purpose: the collapse rule would cry wolf
        self.watch_collapse = not (getattr(task, "curriculum", False) and
                                   hasattr(task, "report"))

        def source(done, n):
            parts = []
            for t, rng in zip(self.tasks, self.data_rngs, strict=True):
                if getattr(t, "weighted", False):
                    xs, ys, ws, rs = t.stream_weighted(n, rng, return_starts=True)
                else:
                    xs, ys = t.stream(n, rng)
                    ws, rs = None, None
                parts.append(self.est.check_data(xs, ys, ws, rs))
            return tuple(np.ascontiguousarray(np.concatenate([p[i] for p in parts], 1))
                         for i in range(4))

        def hear(trainer, mean, user=callback):
            for t in self.tasks:
                if hasattr(t, "report"):
                    t.report(t.to_unit(mean))
            return bool(user(trainer, mean)) if user is not None else False
        return self._loop(steps, source, progress, hear, record,
                          lambda m: f"{task.to_unit(m):.4g} {task.unit}", task.to_unit)

    def _loop(self, T, source, progress, callback, record, show, to_unit):
        if record not in ("step", "chunk", "blocks"):
            raise ValueError(f"record must be 'step', 'chunk' or 'blocks', got {record!r}")
        if T > 0:   # compile (or load) now, so that the timing below is of training only
            self._warm_up()
        bar = _progress(progress, T, f"{self.est.name}"
                        + (f" x{self.batch}" if self.batch > 1 else ""))
        t_start = time.perf_counter()
        done = 0
        try:
            while done < T:
                n = self.piece(T - done)
                xs, ys, ws, rs = source(done, n)
                rs = self.resets(rs)
                if self.step == 0:
                    self._check_start(xs, ys, ws, rs, to_unit)
                losses = self.advance(xs, ys, ws, rs)
                steps = per_step(losses, ws)
                mean = float(losses.sum() / max(float(ws.sum()), 1e-300))
                if record == "step":
                    self.curve.extend(steps.tolist())
                elif record == "chunk":
                    self.curve.append(mean)
                    self.curve_steps.append(self.step)
                self.blocks.add(steps)
                if self.on_steps is not None:
                    self.on_steps(self.step - n, steps)
                reference = self._reference(ys, ws)
                ev = self.health.update(self.step - n, steps, reference)
                col = self.collapse.update(self.step - n, steps, reference)
                done += n
                if bar is not None:
                    bar.update(n)
                    bar.set_postfix_str(f"loss {show(mean)}", refresh=False)
                if ev is not None:
                    halt = "; halting (halt_on_divergence)" if self.halt_on_divergence else ""
                    warnings.warn(DivergenceWarning(
                        f"{self.est.name} on '{self.est.cell.name}': "
                        f"{self.health.message(ev, lambda x: f'{to_unit(x):.4g}')}{halt}"),
                        stacklevel=3)
                    if self.halt_on_divergence:
                        break
                if col is not None and self.watch_collapse:
                    warnings.warn(CollapseWarning(
                        f"{self.est.name} on '{self.est.cell.name}': "
                        f"{self.collapse.message(col, lambda x: f'{to_unit(x):.4g}')}"),
                        stacklevel=3)
                if callback is not None and callback(self, mean):
                    break
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t_start
        if record == "blocks":
            x, losses = self.blocks.curve()
        else:
            losses = np.array(self.curve)
            x = np.array(self.curve_steps) if record == "chunk" else \
                np.arange(len(self.curve))
        return TrainResult(self.params, losses, done, seconds, record,
                           {"x": x, "divergences": list(self.health.events),
                            "collapses": list(self.collapses)})

    def _reference(self, ys, ws) -> float:
        """The uniform-prediction loss of a chunk (``health.reference_loss``)."""
        return reference_loss(self.est.loss_name, self.est.n_out, ys, ws)

    def _check_start(self, xs, ys, ws, rs, to_unit):
        """Warn (InitWarning) when the untrained parameters' loss on the first steps is
        absurd (``health.check_start``)."""
        n = min(xs.shape[0], START_STEPS)
        losses = np.zeros((n, self.batch), dtype=self.est.dtype)
        self.est.call("evaluate", self.th, self.states.copy(), xs[:n], ys[:n], ws[:n],
                      rs[:n], losses)
        wsum = float(ws[:n].sum())
        if wsum <= 0:
            return
        first = float(losses.sum() / wsum)
        self.health.start(first, self.step)
        msg = check_start(first, self._reference(ys[:n], ws[:n]), self.params,
                          lambda x: f"{to_unit(x):.4g}")
        if msg is not None:
            self.start_warning = msg
            warnings.warn(InitWarning(f"{self.est.name} on '{self.est.cell.name}': {msg}"),
                          stacklevel=4)

    def _warm_up(self):
        """Call the compiled loop on zero steps (compiles it; changes nothing)."""
        est, B, dt = self.est, self.batch, self.est.dtype
        ys = (np.zeros((0, B), np.int64) if est.loss_name == "softmax_xent"
              else np.zeros((0, B, est.n_out), dt))
        est.call("run", self.th, self.states, self.E, np.zeros((0, B, est.n_in), dt), ys,
                 np.zeros((0, B), dt), np.zeros((0, B), np.bool_), self.rng, self.g,
                 self.opt, self.hp, np.zeros((0, B), dt), self.step, self.update_every, True)
        if self.step == 0:          # the start check evaluates the first steps
            est.call("evaluate", self.th, self.states.copy(), np.zeros((0, B, est.n_in), dt),
                     ys, np.zeros((0, B), dt), np.zeros((0, B), np.bool_),
                     np.zeros((0, B), dt))

    # ------------------------------------------------------------ save/restore
    def state_dict(self) -> dict:
        """Everything needed to continue this run number for number."""
        return {"version": CHECKPOINT_VERSION,
                "estimator": self.est.name, "cell": self.est.cell.name,
                "batch": self.batch, "chunk": self.chunk,
                "th": self.th.copy(), "opt": self.opt.copy(), "states": self.states.copy(),
                "E": self.E.copy(), "g": self.g.copy(),
                "rng": self.rng.bit_generator.state,
                "reset_rng": self.reset_rng.bit_generator.state,
                "data_rngs": [r.bit_generator.state for r in self.data_rngs],
                "step": self.step, "curve": np.array(self.curve),
                "curve_steps": np.array(self.curve_steps, dtype=np.int64),
                "blocks": self.blocks.state(),
                "tasks": None if self.tasks is None else [t.get_state() for t in self.tasks],
                "health": self.health.state(), "collapse": self.collapse.state()}

    def load_state_dict(self, sd: dict, task=None):
        """Restore a state_dict (and, for a task-driven run, the task it was made on)."""
        if sd.get("version") != CHECKPOINT_VERSION:
            raise DataError(f"checkpoint version {sd.get('version')!r} is not "
                            f"{CHECKPOINT_VERSION}")
        mine = {"estimator": self.est.name, "cell": self.est.cell.name,
                "batch": self.batch, "chunk": self.chunk}
        for key, val in mine.items():
            if sd[key] != val:
                raise DataError(f"checkpoint is for {key} {sd[key]!r}, this trainer has "
                                f"{val!r}")
        for key in ("th", "opt", "states", "E", "g"):
            cur = getattr(self, key)
            if sd[key].shape != cur.shape:
                raise DataError(f"checkpoint {key} has shape {sd[key].shape}, expected "
                                f"{cur.shape}")
            cur[...] = sd[key]
        self.rng.bit_generator.state = sd["rng"]
        self.reset_rng.bit_generator.state = sd["reset_rng"]
        for r, st in zip(self.data_rngs, sd["data_rngs"], strict=True):
            r.bit_generator.state = st
        self.step = int(sd["step"])
        self.curve = list(np.asarray(sd["curve"]).tolist())
        self.curve_steps = [int(t) for t in sd["curve_steps"]]
        self.health = DivergenceMonitor()
        if sd.get("health") is not None:        # absent in checkpoints before it
            self.health.set_state(sd["health"])
        self.collapse = CollapseMonitor()
        if sd.get("collapse") is not None:      # absent in checkpoints before it
            self.collapse.set_state(sd["collapse"])
        else:                                   # watch from here on
            self.collapse.seen = self.step
        self.blocks = BlockCurve.from_state(sd["blocks"]) if sd.get("blocks") is not None \
            else _blocks_of(self.curve, self.curve_steps, self.step)
        if sd["tasks"] is not None:
            if task is None:
                raise DataError("this checkpoint was drawing data from a task; pass it "
                                "(load_state_dict(sd, task=...))")
            self.tasks = [task.fork(b, self.batch) for b in range(self.batch)]
            for t, st in zip(self.tasks, sd["tasks"], strict=True):
                t.set_state(st)

    def save(self, path):
        """Write a checkpoint atomically (a crash mid-write leaves the old one)."""
        return write_checkpoint(path, self.state_dict())

    def load(self, path, task=None):
        """Restore a checkpoint written by ``save`` (loading runs no code from the file:
        see ``checkpoints``)."""
        self.load_state_dict(read_checkpoint(path), task)
        return self


def _blocks_of(curve, curve_steps, step) -> BlockCurve:
    """The block curve of a checkpoint from before block curves: from its curve per
    step, or from its chunk means (each over its chunk's steps); NaN where it kept
    neither."""
    curve = np.asarray(curve, dtype=float)
    ends = np.asarray(curve_steps, dtype=np.int64)
    if len(curve) == step and not len(ends):
        per = curve
    elif len(ends) and len(ends) == len(curve) and np.all(np.diff(ends) > 0):
        per = np.repeat(curve, np.diff(np.concatenate(([0], ends))))
    else:
        per = np.zeros(0)
    missing = np.full(max(0, step - len(per)), np.nan)
    return BlockCurve.of(np.concatenate([per, missing])[:step])


def _progress(enabled, total, desc, unit="step"):
    """A progress bar on a terminal; elsewhere (a log file, a pipe) one plain line every
    few seconds, instead of a bar's updates piling into one line. ``unit``: what is
    counted ("step"; ``rgraph sweep`` counts runs)."""
    if not enabled:
        return None
    if not sys.stderr.isatty():
        return _Lines(total, desc, unit=unit)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "step",
                dynamic_ncols=True, mininterval=0.5)


class _Lines:
    """Progress as one line every ``every`` seconds (and one at the end)."""

    def __init__(self, total, desc, every=5.0, unit="step"):
        self.total, self.desc, self.every, self.unit = total, desc, every, unit
        self.n, self.note, self.t0 = 0, "", time.perf_counter()
        self.last = self.t0

    def update(self, n):
        self.n += n
        if time.perf_counter() - self.last >= self.every:
            self._line()

    def set_postfix_str(self, note, refresh=False):
        self.note = note

    def close(self):
        self._line()

    def _line(self):
        self.last = time.perf_counter()
        print(f"{self.desc}: {self.n:,}/{self.total:,} {self.unit}s "
              f"({100 * self.n / max(self.total, 1):.0f}%), {self.last - self.t0:.0f} s, "
              f"{self.note}", file=sys.stderr, flush=True)


def curve_rows(curve, max_rows: int = 1000):
    """(step at which each row ends, mean loss over its steps) for a per-step curve, in
    at most ``max_rows`` rows of equal blocks: a log of 2 million steps stays small."""
    curve = np.asarray(curve, dtype=float)
    if curve.size == 0:
        return np.zeros(0, dtype=np.int64), curve
    block = -(-curve.size // max_rows)
    starts = np.arange(0, curve.size, block)
    ends = np.minimum(starts + block, curve.size)
    means = np.array([np.nanmean(curve[a:b]) if np.any(~np.isnan(curve[a:b])) else np.nan
                      for a, b in zip(starts, ends, strict=True)])
    return ends - 1, means
