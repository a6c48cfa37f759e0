"""The estimator registry: each name maps to its spec (``base.EstimatorSpec``), or to a
function choosing one from the options (``uoro`` with T > 1 is UORO-T; ``dodge`` with
``directions="candidate"`` is DODGE along a candidate direction).

A spec says which kernels it composes and which template functions implement it; the
module builder checks the templates against the generated module (names, kernel
arities), resolves their static choices and unpacks their state and scratch (see
``base``). A generated module's loop (``rgraph.training.loop``) calls its
``est_step(th, s, E, x, y, w, g, rng, W)`` every step, and ``est_flush`` /
``est_reset`` where the spec has them.
"""
from __future__ import annotations

from ..errors import NotApplicable
from .base import EstimatorSpec
from .dodge import dodge
from .exact import BPTT, RTRL, TBPTT
from .kfrtrl import KFRTRL
from .names import parse_estimator
from .ok import OK
from .snap import RFLO, EProp, SnAp
from .uoro import ProjectedUORO, uoro

# name -> the spec class (or a function choosing one from the options)
ESTIMATORS = {
    "rtrl": RTRL,
    "bptt": BPTT,
    "tbptt": TBPTT,
    "uoro": uoro,
    "projected-uoro": ProjectedUORO,
    "kf-rtrl": KFRTRL,
    "dodge": dodge,
    "ok": OK,
    "snap": SnAp,
    "e-prop": EProp,
    "rflo": RFLO,
}


def known(name: str) -> str:
    """The registry key of an estimator name ("tbptt(16)" -> "tbptt"); ValueError, one
    line, for a malformed name or one the registry does not know."""
    key, _ = parse_estimator(name)
    if key not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of "
                         f"{', '.join(sorted(ESTIMATORS))}")
    return key


def make_spec(name: str, lay, sched, analysis, **opts) -> EstimatorSpec:
    """The spec for ``name`` ("uoro", "kf-rtrl", "tbptt(16)",
    "projected-uoro[preactivation]", ...: the grammar of ``names``) on one cell, with
    ``opts`` added to the options the name carries."""
    if isinstance(name, EstimatorSpec):
        return name
    key = known(name)
    _, named = parse_estimator(name)
    twice = sorted(set(named) & set(opts))
    if twice:
        raise ValueError(f"estimator {name!r}: {twice[0]!r} is given both in the name and "
                         f"as an option; give it once")
    opts = {**named, **opts}
    if key == "tbptt" and "k" not in opts:
        raise ValueError("tbptt needs a truncation length: 'tbptt(16)' or k=16")
    try:
        return ESTIMATORS[key](lay, sched, analysis, **opts)
    except TypeError as e:
        raise TypeError(f"estimator {key!r}: {e}") from None


__all__ = ["ESTIMATORS", "EstimatorSpec", "known", "make_spec", "NotApplicable"]
