"""aⁿbⁿ (Tallec & Ollivier 2017, Sec. 4)."""
from __future__ import annotations

import numpy as np

from .base import PaperDefaults, SymbolStream, check_int


class AnBn(SymbolStream):
    r"""The a^n b^n(k, l) dataset of Tallec & Ollivier (2017), Sec. 4.

    Repeatedly draw ``n`` uniformly from {k, ..., l} (inclusive), and output
    ``n`` a's, a line break, ``n`` b's and a line break (paper Fig. 2b)::

        aaaaaa
        bbbbbb

    Vocabulary ``"\nab"`` (``n_in = n_out = 3``).  ``k >= 1`` is required so
    that every line is non-empty.

    ``optimum`` (bits/char) is the exact entropy rate of the character
    process.  The only randomness is ``n``: by the chain rule the bits an
    optimal predictor spends on the run of a's (deciding after each ``a``
    between another ``a`` and the line break) sum to ``H(n)`` per period, and
    the b's and line breaks are then determined.  By the renewal-reward
    theorem the rate is ``H(n) / E[2n + 2] = log2(l - k + 1) / (k + l + 2)``.
    For (1, 32): ``5 / 35 = 1/7 = 0.142857...`` bpc, the "0.14" of the paper.
    (The paper prints ``log2(k - l + 1)``, an evident typo for
    ``log2(l - k + 1)``.)  ``optimum_no_counting = 2 H(n) / (k + l + 2)``
    (0.2857 for (1, 32)) is the rate of a model that knows the distribution
    of ``n`` but not that the numbers of a's and b's coincide.

    ``defaults``: the paper's training (Sec. 4): Adam (beta 0.9, 0.999) at
    ``1e-3 / (1 + 0.03 sqrt(t))``, t the characters processed, one stream.
    """

    defaults = PaperDefaults(
        source="Tallec & Ollivier (2017), Sec. 4, aⁿbⁿ",
        optimizer="adam", lr=1e-3, decay=0.03, batch=1,
        evaluation="'recent loss' after 9.9e6 characters, aⁿbⁿ(1,32), 64 units "
                   "(Fig. 5): LSTM UORO 0.142, TBPTT-16 0.143 bits/char (entropy rate "
                   "1/7); rgraph sweep measures valid_loss on a held-out stream")

    def __init__(self, k: int = 1, l: int = 32):  # noqa: E741 - paper's name
        who = "AnBn"
        k = check_int(k, "k", who, lo=1)
        l = check_int(l, "l", who, lo=1)  # noqa: E741
        if l < k:
            raise ValueError(f"{who}: need k <= l, got k={k}, l={l}")
        self.k, self.l = k, l
        self.vocab = "\nab"
        self.n_in = self.n_out = 3
        p = np.full(l - k + 1, 1.0 / (l - k + 1))
        ns = np.arange(k, l + 1)
        h_n = float(-(p * np.log2(p)).sum())  # entropy of n, bits
        mean_len = float((p * (2 * ns + 2)).sum())  # chars per period
        self.entropy_n_bits = h_n
        self.mean_period = mean_len
        self.optimum = h_n / mean_len
        self.optimum_no_counting = 2.0 * h_n / mean_len
        self._init_stream()
        self._freeze(k=k, l=l)

    def _line(self, rng):
        n = int(rng.integers(self.k, self.l + 1))
        line = np.empty(2 * n + 2, dtype=np.int64)
        line[:n] = 1
        line[n] = self._nl
        line[n + 1 : 2 * n + 1] = 2
        line[2 * n + 1] = self._nl
        return line
