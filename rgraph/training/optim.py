"""Optimizers: a configuration class and, next to it, its update rule.

The compiled loop reads an optimizer's hyper-parameters from one float array
(``hyper()``): ``[kind, lr, decay, clip, weight_decay, <the rule's own>...]``, and keeps
its state in ``opt = [step, <the rule's own: moments numbers per parameter>]``, sized
for the registered optimizer with the most (``state_size``). ``lr / (1 + decay * sqrt(k))``
at update k is Tallec & Ollivier's schedule (decay 0: constant); ``clip`` > 0 rescales
the batch-mean gradient to at most that global norm. Each optimizer's ``rule`` is a
template function (one update, after the schedule and clipping that ``opt_update``
shares); every generated module carries the rules of all registered optimizers and
``opt_update`` dispatches on ``kind``, so one compiled module trains with any of them. Adding an optimizer is a class and its
rule in this file, and a line in ``OPTIMIZERS``: the command line's ``--optimizer``,
the memory figures and the exported module's ``train`` read the registry. A class takes
the learning rate first and ``decay`` and ``clip`` as keywords (what a command line
sets), says in ``moments`` how many numbers per parameter its rule keeps and in
``bounds`` the interval of each field.
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..runtime import check_hyper


def sgd_rule(th, g, opt, hp, lr, scale):
    """θ -= lr (g · scale + wd θ); g is zeroed."""
    wd = hp[4]
    for i in range(th.shape[0]):
        th[i] -= lr * (g[i] * scale + wd * th[i])
        g[i] = 0.0


def adam_rule(th, g, opt, hp, lr, scale):
    """Adam (Kingma & Ba), bias-corrected; opt = [step, m, v]; g is zeroed."""
    wd, b1, b2, eps = hp[4], hp[5], hp[6], hp[7]
    c1 = 1.0 - b1 ** opt[0]
    c2 = 1.0 - b2 ** opt[0]
    n = th.shape[0]
    for i in range(n):
        gi = g[i] * scale + wd * th[i]
        opt[1 + i] = m = b1 * opt[1 + i] + (1.0 - b1) * gi
        opt[1 + n + i] = s = b2 * opt[1 + n + i] + (1.0 - b2) * gi * gi
        th[i] -= lr * (m / c1) / (math.sqrt(s / c2) + eps)
        g[i] = 0.0


# the hyper-parameters every optimizer has, and their intervals
SHARED_BOUNDS = {"lr": "[0, inf)", "decay": "[0, inf)", "clip": "[0, inf)",
                 "weight_decay": "[0, inf)"}


def _check(opt):
    """Each field a finite number in its interval (``bounds``; the exported module's
    ``train`` checks with the same function and intervals)."""
    check_hyper(type(opt).__name__, dataclasses.asdict(opt), opt.bounds)


@dataclass(frozen=True)
class SGD:
    lr: float = 1e-2
    decay: float = 0.0
    clip: float = 0.0
    weight_decay: float = 0.0

    rule = staticmethod(sgd_rule)
    moments = 0
    bounds = SHARED_BOUNDS

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
    moments = 2                       # m and v
    bounds = {**SHARED_BOUNDS, "beta1": "[0, 1)", "beta2": "[0, 1)", "eps": "(0, inf)"}

    def hyper(self) -> np.ndarray:
        _check(self)
        return np.array([kind(self), self.lr, self.decay, self.clip, self.weight_decay,
                         self.beta1, self.beta2, self.eps])


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def state_size(n_params: int) -> int:
    """The length of the optimizer state ``opt`` for ``n_params`` parameters: the step,
    and room for the registered rule that keeps the most numbers per parameter (one
    compiled module trains with any optimizer)."""
    return 1 + max(cls.moments for cls in OPTIMIZERS.values()) * n_params


def make(name: str, lr: float, **hyper):
    """The optimizer ``name`` (a key of ``OPTIMIZERS``) with learning rate ``lr`` and
    the other hyper-parameters given; ValueError, one line, for an unknown name."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of "
                         f"{', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr, **hyper)


def kind(opt) -> float:
    """The number the compiled loop dispatches on: the optimizer's place in OPTIMIZERS."""
    return float(list(OPTIMIZERS.values()).index(type(opt)))


def update_source() -> str:
    """``opt_update``, the optimizer step of the compiled loop: the schedule and the
    clipping all optimizers share, then the rule of the optimizer ``hp[0]`` names."""
    names = ", ".join(f"{i} {name}" for i, name in enumerate(OPTIMIZERS))
    lines = ["def opt_update(th, g, opt, hp, scale):",
             '    """One update with gradient g * scale at lr / (1 + decay sqrt(step)), '
             'clipped',
             f'    to norm clip; the rule is that of optimizer hp[0] ({names})."""',
             "    step = opt[0] + 1.0",
             "    opt[0] = step",
             "    lr = hp[1] / (1.0 + hp[2] * math.sqrt(step))",
             "    if hp[3] > 0.0:",
             "        norm = rg_nrm2(g) * scale",
             "        if norm > hp[3]:",
             "            scale = scale * hp[3] / norm"]
    rules = [cls.rule.__name__ for cls in OPTIMIZERS.values()]
    for i, rule in enumerate(rules):
        test = (f"    {'if' if i == 0 else 'elif'} hp[0] == {float(i)!r}:"
                if i < len(rules) - 1 else "    else:")
        if len(rules) == 1:
            lines.append(f"    {rule}(th, g, opt, hp, lr, scale)")
        else:
            lines += [test, f"        {rule}(th, g, opt, hp, lr, scale)"]
    return "\n".join(lines) + "\n"
