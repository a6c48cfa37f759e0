"""The copy task with its curriculum (Mujika et al. 2018, Sec. 5.1)."""
from __future__ import annotations

import string

import numpy as np

from .base import (PaperDefaults, Task, check_int, check_rng, check_T, one_hot, state_array,
                   state_int)


class Copy(Task):
    r"""Copy task with curriculum, Mujika et al. (2018), Sec. 5.1.

    A random string of length ``L`` over ``n_symbols`` symbols (binary in the
    paper) is presented one symbol per step; then the network must reproduce
    it "without any further information".  Our encoding of one sequence
    (the paper's Fig. 1b is not available as text, so this is our
    interpretation, in the style of its "input / output" pairs)::

        step     0 .. L-1        L .. 2L-1
        input    b_1 ... b_L     #  ...  #        (# = marker / blank)
        target   #  ...  #       b_1 ... b_L
        weight   0  ...  0       1  ...  1

    e.g. with L = 5: input ``01101#####``, target ``#####01101``.  The first
    marker signals the end of the string; later markers carry no information.
    Inputs are one-hot over ``n_symbols + 1`` classes (symbols then marker),
    targets are classes over the same ``n_symbols + 1`` (the marker is the
    target while the string is being read), so ``n_in = n_out = n_symbols +
    1``.  Only the copy steps are scored: use :meth:`stream_weighted`
    (``w = 1`` on the copy part); :meth:`stream` returns all steps.

    Curriculum (paper): start with ``T = T_start = 1``; each sequence length
    is drawn uniformly from ``[max(1, T - spread), T]`` (``spread = 5``);
    whenever the error on the scored steps drops *strictly* below
    ``threshold = 0.15`` bits/char, ``T`` increases by one:
    call :meth:`report` with the measured mean bits/char on scored steps.
    Sequences already generated (buffered) keep their length.  With
    ``curriculum=False`` ``T`` stays fixed (e.g. DODGE's copy task with
    ``Copy(curriculum=False, T_start=25, spread=0)``).  The paper resets the
    hidden state after each sequence: :meth:`stream_weighted` can return the
    sequence starts (``return_starts=True``), and :meth:`sequence` draws one
    whole fresh sequence.  :meth:`get_state` includes the current ``T``;
    :meth:`fork` gives a reset copy (``T = T_start``, empty buffer), so ``n``
    forks that hear the same :meth:`report` calls keep the same ``T``.

    ``optimum = 0`` bits/char: the targets are a deterministic function of
    the inputs seen so far.

    ``defaults``: the paper's training (Sec. 5.1): Adam (TensorFlow's defaults, beta
    0.9, 0.999), a constant learning rate, batch 256. The paper takes each model's
    best of {10^-2.5, 10^-3, 10^-3.5, 10^-4} and does not say which; rgraph takes
    10^-3.
    """

    defaults = PaperDefaults(
        source="Mujika et al. (2018), Sec. 5.1, copy task",
        optimizer="adam", lr=1e-3, decay=0.0, batch=256,
        evaluation="the curriculum's T against the data seen (Fig. 1a), RHN-256, 5 "
                   "trials: KF-RTRL reaches T = 36, UORO T = 13",
        notes="the paper picks each estimator's best lr of {10^-2.5, 10^-3, 10^-3.5, "
              "10^-4} without saying which; 10^-3 is rgraph's (the middle of the grid)")

    weighted = True
    _mutable = frozenset({"T"})

    def __init__(self, curriculum: bool = True, n_symbols: int = 2, T_start: int = 1,
                 spread: int = 5, threshold: float = 0.15):
        who = "Copy"
        n_symbols = check_int(n_symbols, "n_symbols", who, lo=2)
        if n_symbols > 36:
            raise ValueError(f"{who}: n_symbols={n_symbols} exceeds 36")
        self.curriculum = bool(curriculum)
        self.n_symbols = n_symbols
        self.T_start = check_int(T_start, "T_start", who, lo=1)
        self.spread = check_int(spread, "spread", who, lo=0)
        self.threshold = float(threshold)
        self.marker = n_symbols
        self.vocab = (string.digits + string.ascii_lowercase)[:n_symbols] + "#"
        self.n_in = self.n_out = n_symbols + 1
        self.optimum = 0.0
        self.T = self.T_start
        self.reset()
        self._freeze(curriculum=self.curriculum, n_symbols=n_symbols, T_start=self.T_start,
                     spread=self.spread, threshold=self.threshold)

    def __repr__(self):
        return super().__repr__()[:-1] + f"; T={self.T})"

    _dynamic_keys = ("T", "buf_inp", "buf_tgt", "buf_w", "buf_starts")

    def reset(self):
        """Back to ``T = T_start`` with an empty buffer."""
        self.T = self.T_start
        self._buf = [np.zeros(0, np.int64), np.zeros(0, np.int64),
                     np.zeros(0, np.float64), np.zeros(0, bool)]

    def _get_dynamic(self):
        inp, tgt, w, starts = (b.copy() for b in self._buf)
        return {"T": int(self.T), "buf_inp": inp, "buf_tgt": tgt, "buf_w": w,
                "buf_starts": starts}

    def _check_dynamic(self, state, who):
        T = state_int(state, "T", who, lo=1)
        buf = [state_array(state, "buf_inp", who, "i", 0, self.n_in),
               state_array(state, "buf_tgt", who, "i", 0, self.n_out),
               state_array(state, "buf_w", who, "f"),
               state_array(state, "buf_starts", who, "b")]
        if len({b.shape[0] for b in buf}) != 1:
            raise ValueError(f"{who}: the buffer entries have different lengths "
                             f"{[b.shape[0] for b in buf]}")
        if not np.isin(buf[2], (0.0, 1.0)).all():
            raise ValueError(f"{who}: state entry 'buf_w' must hold only 0 and 1")
        return {"T": T, "buf": buf}

    def _set_dynamic(self, values):
        self.T = values["T"]
        self._buf = values["buf"]

    @property
    def length_range(self) -> tuple[int, int]:
        """Inclusive range of sequence lengths ``L`` at the current ``T``."""
        return max(1, self.T - self.spread), self.T

    def report(self, mean_bits_on_scored_steps: float) -> bool:
        """Feed back the error (bits/char on scored steps); advance ``T`` by
        one if it is strictly below ``threshold`` and the curriculum is on.
        Returns whether ``T`` advanced."""
        if self.curriculum and float(mean_bits_on_scored_steps) < self.threshold:
            self.T = self.T + 1
            return True
        return False

    def _sequence_ids(self, rng):
        lo, hi = self.length_range
        L = int(rng.integers(lo, hi + 1))
        bits = rng.integers(0, self.n_symbols, size=L)
        mark = np.full(L, self.marker, dtype=np.int64)
        inp = np.concatenate([bits, mark])
        tgt = np.concatenate([mark, bits])
        w = np.concatenate([np.zeros(L), np.ones(L)])
        starts = np.zeros(2 * L, dtype=bool)
        starts[0] = True
        return inp, tgt, w, starts

    def sequence(self, rng):
        """One whole fresh sequence at the current ``T`` (does not touch the
        stream buffer): ``(xs, ys, w)`` with ``2L`` steps."""
        inp, tgt, w, _ = self._sequence_ids(check_rng(rng, "Copy.sequence"))
        return one_hot(inp, self.n_in), tgt, w

    def stream_weighted(self, T, rng=None, return_starts: bool = False):
        """Next ``T`` steps of the stream of concatenated sequences:
        ``(xs, ys, w)``, plus ``starts`` (bool (T,), True at the first step of
        each sequence, where the paper resets the hidden state) if
        ``return_starts``."""
        who = "Copy.stream_weighted"
        T = check_T(T, who)
        buf = self._buf
        if rng is not None or buf[0].shape[0] < T:
            rng = check_rng(rng, who)
        if buf[0].shape[0] < T:
            parts = [[b] for b in buf]
            have = buf[0].shape[0]
            while have < T:
                seq = self._sequence_ids(rng)
                for lst, a in zip(parts, seq):
                    lst.append(a)
                have += seq[0].shape[0]
            buf = [np.concatenate(lst) for lst in parts]
        inp, tgt, w, starts = (b[:T].copy() for b in buf)
        self._buf = [b[T:].copy() for b in buf]
        out = (one_hot(inp, self.n_in), tgt, w)
        return out + (starts,) if return_starts else out

    def stream(self, T, rng=None):
        """All steps of the stream (targets on unscored steps are the marker)."""
        xs, ys, _ = self.stream_weighted(T, rng)
        return xs, ys

    def decode(self, ids) -> str:
        a = np.asarray(ids)
        if a.ndim == 2:
            a = a.argmax(axis=1)
        return "".join(self.vocab[int(i)] for i in a)
