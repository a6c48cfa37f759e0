"""Optimizers as plain configurations: the compiled loop reads them from one array.

``lr / (1 + decay * sqrt(k))`` at update k is Tallec & Ollivier's schedule (decay 0:
constant). ``clip`` > 0 rescales the batch-mean gradient to at most that global norm.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SGD:
    lr: float = 1e-2
    decay: float = 0.0
    clip: float = 0.0
    weight_decay: float = 0.0

    kind = 0.0

    def hyper(self) -> np.ndarray:
        _check(self)
        return np.array([self.kind, self.lr, self.decay, 0.0, 0.0, 0.0, self.clip,
                         self.weight_decay])


@dataclass(frozen=True)
class Adam:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    decay: float = 0.0
    clip: float = 0.0
    weight_decay: float = 0.0

    kind = 1.0

    def hyper(self) -> np.ndarray:
        _check(self)
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ValueError(f"{self}: need 0 <= beta1, beta2 < 1 and eps > 0")
        return np.array([self.kind, self.lr, self.decay, self.beta1, self.beta2, self.eps,
                         self.clip, self.weight_decay])


def _check(opt):
    for name in ("lr", "decay", "clip", "weight_decay"):
        val = getattr(opt, name)
        if not np.isfinite(val) or val < 0:
            raise ValueError(f"{type(opt).__name__}.{name} must be a finite number >= 0, "
                             f"got {val!r}")


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
