"""The estimator registry, and the contract between templates and generated modules.

Each estimator is an ``EstimatorSpec`` (``base.py``) plus template functions written as
plain Python in its own file, reading like its paper's algorithm. Their source is copied
into a generated module, where these names exist:

* dimensions: ``S`` (state), ``X`` (input), ``NV`` (values of one step), ``NP``
  (parameters; the recurrent ones first), ``NR`` (recurrent parameters), ``OUT_OFF``,
  ``NOUT`` (rows of the output the loss sees in ``v``), ``DT`` (the float type), and
  the estimator's own constants;
* kernels: ``forward(th, v)``, ``vjp_out(th, v, vb, thb)`` (the loss's backprop through
  one step: ∂l/∂θ into thb, ∂l/∂s_{t-1} into vb[:S]), ``gather_new(src, dst)`` (the new
  state's rows of v or vd into one block), and the estimator's own;
* helpers: ``rg_loss(y, target, ybar, w)`` and the backend's ``rg_*`` functions
  (``rg_zero``, ``rg_dot``, ``rg_nrm2``, ``rg_axpy``, ``rg_axpby``, ``rg_gemv_t``,
  ``rg_rademacher``, ...);
* ``est_views(E)`` and ``est_scratch()`` generated from the spec's layouts.

An estimator module defines ``est_step(th, s, E, x, y, w, g, rng, W) -> loss`` (one
step of one stream: advance s in place, add this step's gradient estimate into g),
``est_flush(th, E, g, rng, W)`` (finish a pending segment) and ``est_reset(E)``; the
loop templates of ``rgraph.loop`` drive them.
"""
from __future__ import annotations

import re

from ..errors import NotApplicable
from .base import EstimatorSpec
from .dodge import DODGE
from .exact import BPTT, RTRL, TBPTT
from .kfrtrl import KFRTRL
from .uoro import UORO, ProjectedUORO

ESTIMATORS = {
    "rtrl": RTRL,
    "bptt": BPTT,
    "tbptt": TBPTT,
    "uoro": UORO,
    "projected-uoro": ProjectedUORO,
    "kf-rtrl": KFRTRL,
    "dodge": DODGE,
}

_WITH_ARG = re.compile(r"^([a-z-]+)\((\d+)\)$")


def make_spec(name: str, lay, sched, analysis, **opts) -> EstimatorSpec:
    """The spec for ``name`` ("uoro", "kf-rtrl", "tbptt(16)", ...) on one cell."""
    if isinstance(name, EstimatorSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"estimator must be a name, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    m = _WITH_ARG.match(key)
    if m:
        key = m.group(1)
        if key != "tbptt":
            raise ValueError(f"estimator {name!r}: only tbptt takes an argument in "
                             f"parentheses (tbptt(16)); pass options as keywords")
        opts = dict(opts, k=int(m.group(2)))
    if key not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    if key == "tbptt" and "k" not in opts:
        raise ValueError("tbptt needs a truncation length: 'tbptt(16)' or k=16")
    try:
        return ESTIMATORS[key](lay, sched, analysis, **opts)
    except TypeError as e:
        raise TypeError(f"estimator {key!r}: {e}") from None


__all__ = ["ESTIMATORS", "EstimatorSpec", "make_spec", "NotApplicable"]
