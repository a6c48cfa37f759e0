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

    def optimal_bits(self, ys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the exact optimal predictor pays on a stream of this task: for each
        target ``ys[t]`` (class ids, from ``stream`` of a task at the start of its stream
        or of a line, i.e. after a line break) its bits, where it lies (0: the first
        ``a`` of an a-line, certain; 1: the rest of the a-line and its break, the only
        uncertain characters; 2: the b-line and its break, determined by the count) and
        the ``n`` of its line pair (0 where the a-line is not finished).

        The bits of every complete pair of lines sum to ``log2(l - k + 1)`` whatever its
        ``n`` (the product of the predictor's probabilities is P(n)), so a finite
        stream's own optimum, ``bits.mean()``, differs from ``optimum`` only by the
        mean line length of its sample (0.1453 bpc on 60,000 characters of
        ``default_rng(123)``, for instance). ``ValueError`` if ``ys`` is not such a
        stream."""
        ys = np.asarray(ys, dtype=np.int64)
        bits = np.zeros(ys.shape[0])
        where = np.zeros(ys.shape[0], dtype=np.int64)
        ns = np.zeros(ys.shape[0], dtype=np.int64)
        a, b, nl = self.vocab.index("a"), self.vocab.index("b"), self._nl
        phase, i, n, first = 0, 0, 0, 0
        for t, y in enumerate(ys):
            ok = True
            if phase == 0:                          # after a b-line: an a for sure
                ok, phase, i, first = y == a, 1, 1, t
            elif phase == 1:                        # i a's so far
                where[t] = 1
                p_nl = 1.0 / (self.l - i + 1) if i >= self.k else 0.0
                if y == nl and p_nl > 0:
                    bits[t] = -np.log2(p_nl)
                    phase, n, i = 2, i, 0
                    ns[first:t + 1] = n
                elif y == a and p_nl < 1:
                    bits[t] = -np.log2(1.0 - p_nl)
                    i += 1
                else:
                    ok = False
            else:                                   # i b's so far, n to write
                where[t], ns[t] = 2, n
                ok = y == (b if i < n else nl)
                i += 1
                if i == n + 1:
                    phase = 0
            if not ok:
                raise ValueError(f"AnBn.optimal_bits: target {t} ({int(y)}) cannot "
                                 f"follow in an aⁿbⁿ({self.k}, {self.l}) stream that "
                                 f"starts after a line break")
        return bits, where, ns

    def _line(self, rng):
        n = int(rng.integers(self.k, self.l + 1))
        line = np.empty(2 * n + 2, dtype=np.int64)
        line[:n] = 1
        line[n] = self._nl
        line[n + 1 : 2 * n + 1] = 2
        line[2 * n + 1] = self._nl
        return line
