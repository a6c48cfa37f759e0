"""Is a run healthy? Divergence, collapse and absurd starts, reported instead of silent.

The rules compare the loss with the **uniform-prediction loss** ``reference_loss``:
what an output that knows nothing scores. For ``softmax_xent`` that is log K (K
classes: uniform probabilities); for ``mse`` (0.5 |y - o|²) it is the expected loss of
an output drawn from N(0, 1) per unit, 0.5 (n_out + |y|²) averaged over the targets.

**Divergence** (``DivergenceMonitor``). The smoothed loss at step t is the (weighted)
mean of the per-step losses over the last ``WINDOW`` = 100 steps; its best is the
lowest of the untrained parameters' loss (below) and every smoothed value since the run
had 100 steps. A step is *bad* when its smoothed
loss exceeds ``FACTOR`` = 10 x the best **and** the uniform-prediction loss (so a model
that got from 0.01 to 0.1 nats, or a curriculum that lengthens its sequences, is not
called diverging: only one that does worse than knowing nothing, and 10x worse than it
did). ``SUSTAIN`` = 1,000 bad steps in a row is a divergence (a spike shorter than
about 900 steps is not): a ``DivergenceWarning``
names the step the bad run began and the step it was confirmed; with
``halt_on_divergence`` the trainer stops there.

**Collapse** (``CollapseMonitor``). A slower failure the divergence rule does not see:
the loss leaves the level it had reached and stays well above it, without being worse
than knowing nothing (an MGU on aⁿbⁿ that jumped from 0.33 to 1.33 bits/char and stayed
there for 900,000 steps). The *level* at the end of each block of ``BLOCK`` = 1,000
steps (counted from step 0) is the mean loss over the last ``LEVEL_WINDOW`` = 10,000
steps; its *best* is the lowest level so far. A level is *high* when it exceeds the
best by more than ``COLLAPSE_REL`` = 50 % of the best, and by more than
``COLLAPSE_FLOOR`` = 5 % of the uniform-prediction loss (so a loss near 0, such as
0.01 nats against a best of 0.005, is not called a collapse). High levels for
``COLLAPSE_SUSTAIN`` = 50,000 steps in a row are a collapse: a ``CollapseWarning``
names the step the high levels began, the best level and its step. A run that comes back
below the threshold and leaves again is reported again. A task whose data changes on
purpose (the copy task's curriculum lengthens its strings as the loss falls) is not
watched: its loss rises by design.

**Absurd start** (``check_start``). Before the first update, the untrained parameters'
mean loss over the first chunk (at most 1,000 steps per stream, the same data the run
trains on) exceeding ``START_FACTOR`` = 10 x the uniform-prediction loss gives an
``InitWarning`` naming the parameters with the largest initial scale (RMS).
"""
from __future__ import annotations

import math

import numpy as np

WINDOW = 100
FACTOR = 10.0
SUSTAIN = 1000
START_FACTOR = 10.0
START_STEPS = 1000
BLOCK = 1000
LEVEL_WINDOW = 10_000
COLLAPSE_REL = 0.5
COLLAPSE_FLOOR = 0.05
COLLAPSE_SUSTAIN = 50_000


def reference_loss(loss: str, n_out: int, ys=None, ws=None) -> float:
    """The uniform-prediction loss (see the module's docstring): log K for softmax_xent;
    for mse, 0.5 (n_out + |y|²) averaged over the targets ``ys`` (weights ``ws``)."""
    if loss == "softmax_xent":
        return math.log(n_out)
    ys = np.asarray(ys, dtype=float).reshape(-1, n_out)
    sq = 0.5 * (n_out + np.sum(ys * ys, axis=1))
    w = np.ones(len(sq)) if ws is None else np.asarray(ws, dtype=float).reshape(-1)
    return float(np.sum(w * sq) / max(float(np.sum(w)), 1e-300))


class DivergenceMonitor:
    """The divergence rule of the module's docstring, fed one chunk at a time."""

    def __init__(self, window=WINDOW, factor=FACTOR, sustain=SUSTAIN):
        self.window, self.factor, self.sustain = int(window), float(factor), int(sustain)
        self.tail = np.zeros(0)          # the last window - 1 per-step losses (nan: unscored)
        self.seen = 0                    # steps fed
        self.best = math.inf             # best smoothed loss, and the step it ends at
        self.best_step = -1
        self.run = 0                     # bad steps in a row
        self.last_bad = False            # the latest step was over the threshold
        self.events: list[dict] = []     # the divergences found

    def start(self, loss: float, step: int = 0):
        """The untrained parameters' loss (``check_start``) counts as a best: a run that
        is far worse than its start from its first steps on is diverging too."""
        if math.isfinite(loss) and loss < self.best:
            self.best, self.best_step = float(loss), int(step)

    @property
    def suspect(self) -> bool:
        """Whether the latest step's mean loss was over the threshold (counting the mean
        so far before the run has a full window): a checkpoint now may be diverging."""
        return self.last_bad

    def update(self, t0: int, per_step, reference: float) -> dict | None:
        """Feed the per-step losses of steps t0, t0+1, ...; returns the divergence found
        in them (a dict: step it began, step confirmed, smoothed loss, best) or None."""
        per_step = np.asarray(per_step, dtype=float)
        vals = np.concatenate([self.tail, per_step])
        ok = ~np.isnan(vals)
        cs = np.concatenate([[0.0], np.cumsum(np.where(ok, vals, 0.0))])
        cn = np.concatenate([[0], np.cumsum(ok)])
        n0, W = len(self.tail), self.window
        ends = np.arange(n0, len(vals)) + 1             # cs index after each new step
        starts = np.maximum(ends - W, 0)
        count = cn[ends] - cn[starts]
        with np.errstate(invalid="ignore", divide="ignore"):
            smooth = np.where(count > 0, (cs[ends] - cs[starts]) / np.maximum(count, 1),
                              np.nan)
        n = len(smooth)
        idx = np.arange(n)
        valid = (self.seen + idx + 1 >= W) & ~np.isnan(smooth)
        cand = np.where(valid, smooth, np.inf)
        best = np.minimum(self.best, np.minimum.accumulate(cand)) if n else cand
        bad = valid & (smooth > self.factor * best) & (smooth > reference)
        # before the window is full, the mean so far already over the threshold
        early = ~valid & ~np.isnan(smooth) & (smooth > self.factor * best) & \
            (smooth > reference)
        # bad steps in a row, carried over from the previous chunk
        last_good = np.maximum.accumulate(np.where(bad, -1, idx)) if n else idx
        run = np.where(bad, np.where(last_good >= 0, idx - last_good, self.run + idx + 1), 0)
        found = None
        for k in np.flatnonzero(run == self.sustain):       # each bad run, once
            before = cand[:k + 1]
            j = int(np.argmin(before))
            best_step = t0 + j if before[j] < self.best else self.best_step
            ev = {"began": t0 + int(k) - self.sustain + 1, "step": t0 + int(k),
                  "smoothed": float(smooth[k]), "best": float(best[k]),
                  "best_step": int(best_step), "reference": float(reference)}
            self.events.append(ev)
            found = found or ev
        if n:
            if np.isfinite(best[-1]) and best[-1] < self.best:
                self.best_step = t0 + int(np.argmin(cand))
                self.best = float(best[-1])
            self.run = int(run[-1])
            self.last_bad = bool(bad[-1] or early[-1])
        self.seen += len(per_step)
        self.tail = vals[-(W - 1):] if W > 1 else np.zeros(0)
        return found

    def message(self, ev: dict, unit=lambda x: f"{x:.4g}") -> str:
        return (f"the loss diverged: from step {ev['began']:,} the mean loss over "
                f"{self.window:,} steps stayed above {self.factor:g}x its best "
                f"({unit(ev['best'])} at step {ev['best_step']:,}) and above the "
                f"uniform-prediction loss ({unit(ev['reference'])}) for {self.sustain:,} "
                f"steps (at step {ev['step']:,}: "
                f"{unit(ev['smoothed'])}); lower the learning rate or clip gradients "
                f"(optimizer clip=...)")

    # checkpoints
    def state(self) -> dict:
        return {"tail": self.tail.copy(), "seen": self.seen,
                "best": None if math.isinf(self.best) else self.best,
                "best_step": self.best_step, "run": self.run, "last_bad": self.last_bad}

    def set_state(self, st: dict):
        self.tail = np.asarray(st["tail"], dtype=float).copy()
        self.seen, self.best_step = int(st["seen"]), int(st["best_step"])
        self.best = math.inf if st["best"] is None else float(st["best"])
        self.run, self.last_bad = int(st["run"]), bool(st["last_bad"])


class CollapseMonitor:
    """The collapse rule of the module's docstring, fed one chunk at a time. Its state
    is a few numbers and the sums of the last ``LEVEL_WINDOW / BLOCK`` blocks, however
    long the run."""

    def __init__(self, block=BLOCK, window=LEVEL_WINDOW, rel=COLLAPSE_REL,
                 floor=COLLAPSE_FLOOR, sustain=COLLAPSE_SUSTAIN):
        self.block, self.rel, self.floor = int(block), float(rel), float(floor)
        if window % block or sustain % block:
            raise ValueError(f"CollapseMonitor: window ({window}) and sustain ({sustain}) "
                             f"must be multiples of the block ({block})")
        self.window, self.sustain = int(window), int(sustain)
        k = self.window // self.block
        self.sums = np.zeros(k)                    # the last k blocks, oldest first
        self.counts = np.zeros(k, dtype=np.int64)
        self.cur_sum, self.cur_count = 0.0, 0      # the block being filled
        self.seen = 0                              # steps fed
        self.best, self.best_step = math.inf, -1   # the lowest level, at a block's end
        self.high = 0                              # steps of high levels in a row
        self.events: list[dict] = []               # the collapses found

    def threshold(self, reference: float) -> float:
        """The level above which a step counts as high."""
        return self.best + max(self.rel * self.best, self.floor * reference)

    def update(self, t0: int, per_step, reference: float) -> dict | None:
        """Feed the per-step losses of steps t0, t0+1, ... (NaN: nothing scored; t0 must
        be the step after the last one fed); returns the collapse confirmed in them (a
        dict: step the high levels began, step confirmed, level, best, its step) or
        None."""
        vals = np.asarray(per_step, dtype=float).reshape(-1)
        if t0 != self.seen:
            raise ValueError(f"CollapseMonitor: fed step {t0}, expected {self.seen}")
        found, i = None, 0
        while i < vals.size:
            take = min(self.block - self.seen % self.block, vals.size - i)
            seg = vals[i:i + take]
            seg = seg[~np.isnan(seg)]
            self.cur_sum += float(np.cumsum(seg)[-1]) if seg.size else 0.0
            self.cur_count += int(seg.size)
            self.seen += take
            i += take
            if self.seen % self.block == 0:
                ev = self._block_done(reference)
                found = found or ev
        return found

    def _block_done(self, reference: float) -> dict | None:
        self.sums = np.append(self.sums[1:], self.cur_sum)
        self.counts = np.append(self.counts[1:], self.cur_count)
        self.cur_sum, self.cur_count = 0.0, 0
        n = int(self.counts.sum())
        if self.seen < self.window or n == 0:
            return None
        level = float(self.sums.sum() / n)
        if not math.isfinite(level):
            return None                 # the divergence rule and the loop say so
        if level < self.best:
            self.best, self.best_step = level, self.seen
        if level <= self.threshold(reference):
            self.high = 0
            return None
        self.high += self.block
        if self.high != self.sustain:
            return None
        ev = {"began": self.seen - self.sustain + self.block, "step": self.seen,
              "level": level, "best": self.best, "best_step": self.best_step,
              "threshold": self.threshold(reference), "reference": float(reference)}
        self.events.append(ev)
        return ev

    def message(self, ev: dict, unit=lambda x: f"{x:.4g}") -> str:
        return (f"the loss collapsed: from step {ev['began']:,} its mean over "
                f"{self.window:,} steps stayed above {unit(ev['threshold'])} (its best, "
                f"{unit(ev['best'])} at step {ev['best_step']:,}, plus "
                f"{100 * self.rel:g} % of it or {100 * self.floor:g} % of the "
                f"uniform-prediction loss {unit(ev['reference'])}) for {self.sustain:,} "
                f"steps (at step {ev['step']:,}: {unit(ev['level'])}); the learning rate "
                f"is likely too high for this stage of the run: lower it, or let it decay "
                f"(--decay, lr / (1 + decay sqrt(t)))")

    # checkpoints
    def state(self) -> dict:
        return {"sums": self.sums.copy(), "counts": self.counts.copy(),
                "cur_sum": self.cur_sum, "cur_count": self.cur_count, "seen": self.seen,
                "best": None if math.isinf(self.best) else self.best,
                "best_step": self.best_step, "high": self.high}

    def set_state(self, st: dict):
        sums = np.asarray(st["sums"], dtype=float).copy()
        if sums.shape != self.sums.shape:
            raise ValueError(f"collapse monitor state of {sums.shape[0]} blocks, expected "
                             f"{self.sums.shape[0]}")
        self.sums, self.counts = sums, np.asarray(st["counts"], dtype=np.int64).copy()
        self.cur_sum, self.cur_count = float(st["cur_sum"]), int(st["cur_count"])
        self.seen, self.best_step = int(st["seen"]), int(st["best_step"])
        self.best = math.inf if st["best"] is None else float(st["best"])
        self.high = int(st["high"])


def check_start(first_loss: float, reference: float, params: dict,
                unit=lambda x: f"{x:.4g}") -> str | None:
    """The absurd-start message (see the module's docstring), or None when the first
    loss is within ``START_FACTOR`` x the uniform-prediction loss."""
    if math.isfinite(first_loss) and first_loss <= START_FACTOR * reference:
        return None
    rms = sorted(((_rms(a), name) for name, a in params.items() if np.size(a)),
                 reverse=True)
    largest = ", ".join(f"{name} (rms {r:.3g})" for r, name in rms[:3])
    how = (f"{unit(first_loss)} is more than {START_FACTOR:g}x" if math.isfinite(first_loss)
           else f"is not finite ({first_loss}), far above")
    return (f"the untrained parameters' loss {how} the uniform-prediction loss "
            f"{unit(reference)}: the init is far off; largest initial parameters: "
            f"{largest}; give them a smaller init (rg.param(..., init=..., scale=...), "
            f"init='zeros' for biases)")


def _rms(a) -> float:
    """Root mean square, without overflow for huge entries."""
    a = np.asarray(a, dtype=float)
    m = float(np.max(np.abs(a)))
    if m == 0 or not math.isfinite(m):
        return m
    return m * float(np.sqrt(np.mean(np.square(a / m))))


__all__ = ["DivergenceMonitor", "CollapseMonitor", "check_start", "reference_loss",
           "WINDOW", "FACTOR", "SUSTAIN", "START_FACTOR", "BLOCK", "LEVEL_WINDOW",
           "COLLAPSE_REL", "COLLAPSE_FLOOR", "COLLAPSE_SUSTAIN"]
