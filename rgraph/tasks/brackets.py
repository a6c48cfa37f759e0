"""Distant brackets (Tallec & Ollivier 2017, Sec. 4)."""
from __future__ import annotations

import math

import numpy as np

from .base import ALPHABET, PaperDefaults, SymbolStream, check_int


class DistantBrackets(SymbolStream):
    r"""Distant brackets dataset (s, k, a) of Tallec & Ollivier (2017), Sec. 4.

    Each line is: a left bracket, ``s`` random characters from an alphabet of
    size ``a``, a right bracket, ``k`` random characters from the same
    alphabet, a left bracket, the *same* ``s`` characters again, a right
    bracket and a line break (paper Fig. 2a, (s,k,a) = (1,5,10))::

        [a]eecbe[a]
        [j]fbfjd[j]

    All characters are i.i.d. uniform over the alphabet (letters a, b, c, ...).
    A line has ``2s + k + 5`` characters.  Vocabulary: ``"\n[]"`` followed by
    the ``a`` letters, so ``n_in = n_out = a + 3``.

    ``optimum`` (bits/char) is the paper's entropy rate
    ``(s + k) log2(a) / (2s + k + 5)``: the only uncertain characters are the
    ``s + k`` fresh random ones (log2 a bits each); brackets, line breaks and
    the repeated ``s`` characters are determined by the past.  Example:
    (1, 5, 10) -> 6 log2(10) / 12 = 1.661 bpc.  ``optimum_no_memory =
    (2s + k) log2(a) / (2s + k + 5)`` is the rate of a predictor that knows
    the format but cannot remember the bracketed characters over ``k + 2``
    steps (the "memoryless optimum" the paper mentions for TBPTT-4).

    Note: the caption of the paper's Fig. 3b says "(1, 5, 5, 10)", four
    numbers; we take this to be a typo for the three-parameter (1, 5, 10)
    task of Fig. 2a.

    ``defaults``: the paper's training (Sec. 4): Adam (beta 0.9, 0.999) at
    ``1e-3 / (1 + 0.015 sqrt(t))``, t the characters processed, one stream.
    """

    defaults = PaperDefaults(
        source="Tallec & Ollivier (2017), Sec. 4, distant brackets",
        optimizer="adam", lr=1e-3, decay=0.015, batch=1,
        evaluation="learning curves of (1,5,10) with 64 units (Fig. 3b), the loss "
                   "averaged over about sqrt(t) recent characters, against the entropy "
                   "rate 1.661 and the memoryless rate 1.938 bits/char")

    def __init__(self, s: int = 1, k: int = 5, a: int = 10):
        who = "DistantBrackets"
        s = check_int(s, "s", who, lo=1)
        k = check_int(k, "k", who, lo=0)
        a = check_int(a, "a", who, lo=1)
        if a > len(ALPHABET):
            raise ValueError(f"{who}: alphabet size a={a} exceeds {len(ALPHABET)}")
        self.s, self.k, self.a = s, k, a
        self.vocab = "\n[]" + ALPHABET[:a]
        self.n_in = self.n_out = len(self.vocab)
        self.line_length = 2 * s + k + 5
        self.optimum = (s + k) * math.log2(a) / self.line_length
        self.optimum_no_memory = (2 * s + k) * math.log2(a) / self.line_length
        self._lb, self._rb = 1, 2
        self._init_stream()
        self._freeze(s=s, k=k, a=a)

    def _line(self, rng):
        s, k = self.s, self.k
        r = rng.integers(0, self.a, size=s + k) + 3
        line = np.empty(self.line_length, dtype=np.int64)
        line[0] = self._lb
        line[1 : 1 + s] = r[:s]
        line[1 + s] = self._rb
        line[2 + s : 2 + s + k] = r[s:]
        line[2 + s + k] = self._lb
        line[3 + s + k : 3 + 2 * s + k] = r[:s]
        line[3 + 2 * s + k] = self._rb
        line[4 + 2 * s + k] = self._nl
        return line
