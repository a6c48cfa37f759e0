"""Influence balancing (Tallec & Ollivier 2017, Sec. 4): the linear system and its task."""
from __future__ import annotations

import math
import warnings

import numpy as np

from .base import PaperDefaults, Task, check_int, check_T


def influence_A(n: int) -> np.ndarray:
    """The system's fixed n x n matrix A: 1/2 on the diagonal and the superdiagonal, so
    that the influence of theta on unit i+m reaches unit i after m steps."""
    A = 0.5 * np.eye(n)
    A[np.arange(n - 1), np.arange(1, n)] = 0.5
    return A


def influence_b(n: int, n_minus: int) -> np.ndarray:
    """The system's sign vector b: ``n - n_minus`` entries +1 (shallow units), then
    ``n_minus`` entries -1 (deep units)."""
    if not 0 <= n_minus <= n:
        raise ValueError(f"influence balancing: n_minus={n_minus} must be in [0, n={n}]")
    return np.concatenate([np.ones(n - n_minus), -np.ones(n_minus)])


class InfluenceBalancing(Task):
    r"""Influence balancing, Tallec & Ollivier (2017), Sec. 4, eqs. (8)-(9).

    The paper's system is a linear recurrence with one scalar parameter
    :math:`\theta`::

        s_{t+1} = A s_t + theta * b,      b = (+1,...,+1, -1,...,-1)^T
        l_t     = 1/2 (s_t^1 - 1)^2        (loss on the shallowest unit s^1)

    * ``A`` is n x n with ``A[i,i] = 1/2``, ``A[i,i+1] = 1/2``, 0 elsewhere
      (:meth:`matrix_A`): the influence of theta on unit i+m reaches unit i
      after m steps.
    * ``b`` has ``p`` positive entries first (shallow units) and ``n - p``
      negative entries (deep units) (:meth:`sign_vector`).
    * For every start point the state converges to ``B theta b`` with
      ``B = (I - A)^{-1}``, ``B[i,j] = 2`` for ``j >= i`` and 0 elsewhere
      (:meth:`matrix_B`), so at equilibrium
      ``d s^1 / d theta = 4p - 2n`` (:attr:`dequilibrium_dtheta`).
      The short-term influence is positive (``d s^1_1/d theta = b_1 = +1``)
      while the long-term one is negative when ``n_minus > n/2``: truncated
      gradients get the wrong sign.
    * The paper's experiment (Fig. 3a) uses **n = 23 units with 13 minus
      signs**, i.e. ``n_minus = 13`` and ``p = 10`` positive entries, giving
      ``4p - 2n = -6``; Fig. 1 uses 5 units with 3 minus.

    Stream: the system has no external input; the task supplies the constant
    drive ``x_t = [1.0]`` (so the cell is ``s_{t+1} = A s_t + theta b x_t``)
    and the constant target ``y_t = [target]`` (1.0 in the paper) for the
    output ``s^1`` of the state produced at that step
    (:meth:`readout_vector` gives the 1 x n output map ``C = e_1^T``).
    ``n_in = n_out = 1``, ``loss = "mse"``; the paper's per-step loss is
    ``1/2 (s^1 - 1)^2`` and :meth:`to_unit` is the identity.

    ``optimum = 0``: with ``theta* = target / (4p - 2n)`` (:attr:`theta_star`,
    -1/6 for the paper's setup) the equilibrium output equals the target, so
    the long-run mean loss tends to 0.

    Args:
        n: number of units (paper: 23).
        n_minus: number of negative-theta entries (paper: 13).
        p: alternatively the number of positive entries (the paper's ``p``);
            if given, ``n_minus = n - p`` (must agree with ``n_minus`` if both
            are given explicitly).
        target: target value of ``s^1`` (paper: 1.0).

    ``defaults``: the paper's training: plain SGD at ``lr / (1 + sqrt(t))``; the
    paper gives no base rate ("a suitable base learning rate"), rgraph takes 3e-4
    (``examples/influence_balancing.py``: UORO converges there and at 1e-3).
    """

    defaults = PaperDefaults(
        source="Tallec & Ollivier (2017), Sec. 4, influence balancing",
        optimizer="sgd", lr=3e-4, decay=1.0, batch=1,
        evaluation="the loss against steps, log scale (Fig. 3a, 23 units, 13 minus): UORO "
                   "converges, TBPTT-T does not for T up to about 200",
        notes="the paper gives no base learning rate; 3e-4 is rgraph's "
              "(examples/influence_balancing.py). Mujika et al. do not use this task")

    loss = "mse"
    unit = "mse"
    optimum = 0.0

    def __init__(self, n: int = 23, n_minus: int | None = None, p: int | None = None,
                 target: float = 1.0):
        who = "InfluenceBalancing"
        n = check_int(n, "n", who, lo=1)
        if p is not None:
            p = check_int(p, "p", who, lo=0)
            if p > n:
                raise ValueError(f"{who}: p={p} positive entries exceed n={n}")
            if n_minus is not None and n_minus != n - p:
                raise ValueError(
                    f"{who}: inconsistent p={p} and n_minus={n_minus} for n={n} "
                    f"(need p + n_minus == n)"
                )
            n_minus = n - p
        elif n_minus is None:
            # Paper default (n=23 with 13 minus signs); for other n keep the
            # same proportion of minus signs, rounded up (5 units -> 3 minus).
            n_minus = 13 if n == 23 else int(math.ceil(n * 13 / 23))
        n_minus = check_int(n_minus, "n_minus", who, lo=0)
        if n_minus > n:
            raise ValueError(f"{who}: n_minus={n_minus} exceeds n={n}")
        self.n = n
        self.n_minus = n_minus
        self.p = n - n_minus
        self.target = float(target)
        self.n_in = 1
        self.n_out = 1
        self.output_index = 0
        self.dequilibrium_dtheta = 4 * self.p - 2 * n
        self.theta_star = (
            self.target / self.dequilibrium_dtheta if self.dequilibrium_dtheta != 0 else None
        )
        if self.dequilibrium_dtheta >= 0 and n > 1:
            warnings.warn(
                f"{who}(n={n}, n_minus={n_minus}): the long-term influence of theta "
                f"(4p - 2n = {self.dequilibrium_dtheta}) is not negative, so there is no "
                f"influence to balance; the paper uses n=23 with 13 MINUS signs "
                f"(n_minus=13, i.e. p=10 positive)",
                stacklevel=2,
            )
        self._freeze(n=n, n_minus=n_minus, target=self.target)

    def matrix_A(self) -> np.ndarray:
        """The fixed n x n matrix A: 1/2 on the diagonal and superdiagonal."""
        return influence_A(self.n)

    def matrix_B(self) -> np.ndarray:
        """``B = (I - A)^{-1}``: 2 on and above the diagonal, 0 below."""
        return 2.0 * np.triu(np.ones((self.n, self.n)))

    def sign_vector(self) -> np.ndarray:
        """``b``: ``p`` entries +1 (shallow units) then ``n - p`` entries -1."""
        return influence_b(self.n, self.n_minus)

    def readout_vector(self) -> np.ndarray:
        """Output map ``C`` (shape 1 x n): the output is ``y = C s = s^1``."""
        C = np.zeros((1, self.n))
        C[0, self.output_index] = 1.0
        return C

    def simulate(self, theta: float, T: int, s0=None):
        """Reference roll-out: states ``s_1..s_T`` (T x n) and the paper's
        losses ``1/2 (s_t^1 - target)^2`` (T,), from ``s0`` (default 0)."""
        T = check_T(T, "InfluenceBalancing.simulate")
        A, drive = self.matrix_A(), float(theta) * self.sign_vector()
        s = np.zeros(self.n) if s0 is None else np.array(s0, dtype=np.float64)
        states = np.empty((T, self.n))
        for t in range(T):
            s = A @ s + drive
            states[t] = s
        losses = 0.5 * (states[:, self.output_index] - self.target) ** 2
        return states, losses

    def stream(self, T, rng=None):
        """Constant drive ``xs = 1`` (T x 1) and target ``ys = target`` (T x 1).

        The stream is stateless and ``rng`` is not used.
        """
        T = check_T(T, "InfluenceBalancing.stream")
        return np.ones((T, 1)), np.full((T, 1), self.target)
