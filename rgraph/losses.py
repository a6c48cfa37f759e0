"""The losses an estimator can train on, one registry entry each.

An entry holds the loss's target kind, its docstring and, per backend, the undecorated
source of its helper ``rg_<name>(y, target, ybar, w)``: it returns w times the loss of
the output y against the step's target and writes w times the loss's gradient with
respect to y into ybar. A generated module binds the chosen helper as ``rg_loss``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .scalars import parse_helper

# what a loss's targets are, one per step (and per stream of a batch)
TARGETS = {"classes": "an integer class id in [0, n_out)",
           "vectors": "a float vector of the output's size"}


@dataclass(frozen=True, eq=False)
class Loss:
    """One loss: its name, target kind (a key of ``TARGETS``), docstring and helpers."""

    name: str
    target: str
    doc: str
    sources: Mapping[str, str]     # backend -> source of def rg_<name>(y, target, ybar, w)

    @property
    def helper(self) -> str:
        return f"rg_{self.name}"

    def __repr__(self):
        return f"Loss({self.name!r}, targets: {self.target}, backends {sorted(self.sources)})"


def _loss(name, target, doc, **sources) -> Loss:
    if target not in TARGETS:
        raise ValueError(f"loss {name!r}: target kind {target!r} is not one of "
                         f"{list(TARGETS)}")
    return Loss(name, target, doc, MappingProxyType(
        {b: parse_helper(src, f"rg_{name}", 4, f"loss {name!r} ({b})")
         for b, src in sources.items()}))


def helpers(backend: str) -> dict[str, str]:
    """The losses' helpers on a backend: rg_<name> -> undecorated source."""
    return {loss.helper: loss.sources[backend] for loss in LOSSES.values()
            if backend in loss.sources}


LOSSES = {loss.name: loss for loss in (
    _loss("softmax_xent", "classes",
          "Cross-entropy of softmax(y) against the target class: -log softmax(y)[target].",
          numba='''
def rg_softmax_xent(y, target, ybar, w):
    """loss = -w log softmax(y)[target]; ybar = w (softmax(y) - onehot(target))"""
    m = y[0]
    for i in range(1, y.shape[0]):
        if y[i] > m:
            m = y[i]
    s = 0.0
    for i in range(y.shape[0]):
        s += math.exp(y[i] - m)
    lse = m + math.log(s)
    for i in range(y.shape[0]):
        ybar[i] = w * math.exp(y[i] - lse)
    ybar[target] -= w
    return w * (lse - y[target])
''',
          numpy='''
def rg_softmax_xent(y, target, ybar, w):
    """loss = -w log softmax(y)[target]; ybar = w (softmax(y) - onehot(target))"""
    m = np.max(y)
    lse = m + math.log(np.sum(np.exp(y - m)))
    ybar[:] = w * np.exp(y - lse)
    ybar[target] -= w
    return w * (lse - y[target])
'''),
    _loss("mse", "vectors", "Half the squared distance to the target: |y - target|^2 / 2.",
          numba='''
def rg_mse(y, target, ybar, w):
    """loss = w/2 |y - target|^2; ybar = w (y - target)"""
    s = 0.0
    for i in range(y.shape[0]):
        d = y[i] - target[i]
        ybar[i] = w * d
        s += d * d
    return 0.5 * w * s
''',
          numpy='''
def rg_mse(y, target, ybar, w):
    """loss = w/2 |y - target|^2; ybar = w (y - target)"""
    d = y - target
    ybar[:] = w * d
    return 0.5 * w * float(np.dot(d, d))
'''),
)}
