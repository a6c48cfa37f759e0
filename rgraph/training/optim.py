"""Optimizers: a configuration class and, next to it, its update rule.

The compiled loop reads an optimizer's hyper-parameters from one float array
(``hyper()``): ``[kind, lr, decay, clip, weight_decay, <the rule's own>...]``, and keeps
its state in ``opt = [step, <the rule's own state>...]``. ``lr / (1 + decay * sqrt(k))``
at update k is Tallec & Ollivier's schedule (decay 0: constant); ``clip`` > 0 rescales
the batch-mean gradient to at most that global norm. Each optimizer's ``rule`` is a
template function (the step of one update, after the schedule and clipping, which the
loop's ``opt_update`` shares); every generated module carries the rules of all
registered optimizers and dispatches on ``kind``, so one compiled module trains with any
of them. Adding an optimizer is a class and its rule in this file, and a line in
``OPTIMIZERS``.
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def sgd_rule(th, g, opt, hp, lr, scale):
    """θ -= lr (g · scale + wd θ); g is zeroed."""
    wd = hp[4]
    for i in range(th.shape[0]):
        th[i] -= lr * (g[i] * scale + wd * th[i])
        g[i] = 0.0


def adam_rule(th, g, opt, hp, lr, scale):
    """Adam (Kingma & Ba) with bias correction; opt = [step, m (NP), v (NP)]; g is
    zeroed."""
    step = opt[0]
    wd = hp[4]
    b1, b2, eps = hp[5], hp[6], hp[7]
    c1 = 1.0 - b1 ** step
    c2 = 1.0 - b2 ** step
    n = th.shape[0]
    for i in range(n):
        gi = g[i] * scale + wd * th[i]
        m = b1 * opt[1 + i] + (1.0 - b1) * gi
        s = b2 * opt[1 + n + i] + (1.0 - b2) * gi * gi
        opt[1 + i] = m
        opt[1 + n + i] = s
        th[i] -= lr * (m / c1) / (math.sqrt(s / c2) + eps)
        g[i] = 0.0


def _check(opt):
    for name in ("lr", "decay", "clip", "weight_decay"):
        val = getattr(opt, name)
        if not np.isfinite(val) or val < 0:
            raise ValueError(f"{type(opt).__name__}.{name} must be a finite number >= 0, "
                             f"got {val!r}")


@dataclass(frozen=True)
class SGD:
    lr: float = 1e-2
    decay: float = 0.0
    clip: float = 0.0
    weight_decay: float = 0.0

    rule = staticmethod(sgd_rule)

    def hyper(self) -> np.ndarray:
        _check(self)
        return np.array([kind(self), self.lr, self.decay, self.clip, self.weight_decay])


@dataclass(frozen=True)
class Adam:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    decay: float = 0.0
    clip: float = 0.0
    weight_decay: float = 0.0

    rule = staticmethod(adam_rule)

    def hyper(self) -> np.ndarray:
        _check(self)
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ValueError(f"{self}: need 0 <= beta1, beta2 < 1 and eps > 0")
        return np.array([kind(self), self.lr, self.decay, self.clip, self.weight_decay,
                         self.beta1, self.beta2, self.eps])


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def kind(opt) -> float:
    """The number the compiled loop dispatches on: the optimizer's place in OPTIMIZERS."""
    return float(list(OPTIMIZERS.values()).index(type(opt)))


def dispatch_source() -> str:
    """``optimizer_step``: the rule of the optimizer ``hp[0]`` names."""
    lines = ["def optimizer_step(th, g, opt, hp, lr, scale):",
             '    """The update rule of the optimizer hp[0] names ('
             + ", ".join(f"{i} {name}" for i, name in enumerate(OPTIMIZERS)) + ')."""']
    rules = [cls.rule.__name__ for cls in OPTIMIZERS.values()]
    for i, rule in enumerate(rules):
        if i == len(rules) - 1:
            lines += ["    else:" if i else "", f"        {rule}(th, g, opt, hp, lr, scale)"]
        else:
            lines += [f"    {'if' if i == 0 else 'elif'} hp[0] == {float(i)!r}:",
                      f"        {rule}(th, g, opt, hp, lr, scale)"]
    return "\n".join(ln for ln in lines if ln) + "\n"
