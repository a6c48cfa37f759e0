"""A learning curve whose size does not grow with the run: at most ``rows`` block means.

A run of ten million steps cannot keep (or checkpoint) a float per step; what a log, a
plot or a summary line needs is the curve's shape. ``BlockCurve`` keeps the mean loss
over equal blocks of consecutive steps, counted from step 0: blocks of one step at
first, and whenever ``rows`` blocks are complete, neighbours are merged pairwise, so
the block doubles and the curve keeps between ``rows / 2`` and ``rows`` rows (the last
one may be partial). A step whose loss is NaN (nothing scored: the copy task's reading
steps) counts for the block's length but not for its mean.

The state (``state`` / ``set_state``) is a few numbers and two arrays of ``rows``
entries, whatever the run's length: a checkpoint that holds it stays the same size.
Each block's sum is a left-to-right sum of its steps' losses, so the curve does not
depend on how the steps were fed (chunk sizes, a resume in the middle of a block).
"""
from __future__ import annotations

import numpy as np

ROWS = 1000


class BlockCurve:
    """Block means of a learning curve, ``rows`` at most (see the module's docstring)."""

    def __init__(self, rows: int = ROWS):
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or \
                rows < 2 or rows % 2:
            raise ValueError(f"BlockCurve: rows must be an even integer >= 2, got {rows!r}")
        self.rows = int(rows)
        self.block = 1                       # steps per row
        self.n = 0                           # complete rows
        self.sums = np.zeros(self.rows)      # of the scored losses of each complete row
        self.counts = np.zeros(self.rows, dtype=np.int64)   # scored steps per row
        self.cur_sum, self.cur_count, self.cur_len = 0.0, 0, 0   # the row being filled
        self.seen = 0                        # steps fed

    def __repr__(self):
        return (f"BlockCurve({self.seen:,} steps in {len(self)} rows of {self.block:,} "
                f"steps)")

    def __len__(self):
        return self.n + (self.cur_len > 0)

    def add(self, losses) -> None:
        """Feed the losses of the next steps (NaN where a step scored nothing)."""
        vals = np.asarray(losses, dtype=float).reshape(-1)
        i = 0
        while i < vals.size:
            take = min(self.block - self.cur_len, vals.size - i)
            seg = vals[i:i + take]
            seg = seg[~np.isnan(seg)]
            if seg.size:        # left to right: cumsum is sequential, np.sum is not
                self.cur_sum = float(np.cumsum(np.concatenate(([self.cur_sum], seg)))[-1])
                self.cur_count += int(seg.size)
            self.cur_len += take
            i += take
            if self.cur_len == self.block:
                self._close_row()
        self.seen += vals.size

    def _close_row(self):
        self.sums[self.n], self.counts[self.n] = self.cur_sum, self.cur_count
        self.n += 1
        self.cur_sum, self.cur_count, self.cur_len = 0.0, 0, 0
        if self.n == self.rows:          # merge neighbours: half the rows, twice the block
            half = self.rows // 2
            self.sums[:half] = self.sums[0::2] + self.sums[1::2]
            self.counts[:half] = self.counts[0::2] + self.counts[1::2]
            self.sums[half:], self.counts[half:] = 0.0, 0
            self.n, self.block = half, 2 * self.block

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(the step each row ends at, counted from 0; the row's mean loss), the partial
        last row included; a row with no scored step has mean NaN."""
        sums = np.append(self.sums[:self.n], self.cur_sum if self.cur_len else [])
        counts = np.append(self.counts[:self.n], self.cur_count if self.cur_len else [])
        ends = np.minimum(np.arange(1, len(sums) + 1) * self.block, self.seen) - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return ends.astype(np.int64), means

    def recent(self, fraction: float = 0.1) -> float:
        """The mean loss over the rows that cover the last ``fraction`` of the steps (at
        least the last row): the run's recent level. NaN before any scored step."""
        sums = np.append(self.sums[:self.n], self.cur_sum if self.cur_len else [])
        counts = np.append(self.counts[:self.n], self.cur_count if self.cur_len else [])
        if not len(sums):
            return float("nan")
        ends, _ = self.curve()
        first = self.seen - max(1, int(round(fraction * self.seen)))
        keep = ends >= first
        keep[-1] = True
        c = int(counts[keep].sum())
        return float(sums[keep].sum() / c) if c else float("nan")

    # checkpoints: the same few numbers and two arrays of ``rows`` whatever the length
    def state(self) -> dict:
        return {"rows": self.rows, "block": self.block, "n": self.n,
                "sums": self.sums.copy(), "counts": self.counts.copy(),
                "cur_sum": self.cur_sum, "cur_count": self.cur_count,
                "cur_len": self.cur_len, "seen": self.seen}

    @classmethod
    def from_state(cls, st: dict) -> BlockCurve:
        c = cls(int(st["rows"]))
        c.block, c.n, c.seen = int(st["block"]), int(st["n"]), int(st["seen"])
        c.sums = np.array(st["sums"], dtype=float)
        c.counts = np.array(st["counts"], dtype=np.int64)
        c.cur_sum, c.cur_count = float(st["cur_sum"]), int(st["cur_count"])
        c.cur_len = int(st["cur_len"])
        if c.sums.shape != (c.rows,) or c.counts.shape != (c.rows,) or \
                not 0 <= c.n < c.rows or not 0 <= c.cur_len < c.block or \
                c.seen != c.n * c.block + c.cur_len:
            raise ValueError(f"a BlockCurve state that does not add up: {c.seen} steps, "
                             f"{c.n} rows of {c.block} and {c.cur_len} more")
        return c

    @classmethod
    def of(cls, losses, rows: int = ROWS) -> BlockCurve:
        """The block curve of a whole per-step curve."""
        c = cls(rows)
        c.add(losses)
        return c
