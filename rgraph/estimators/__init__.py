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
loop templates of ``rgraph.training.loop`` drive them.
"""
from __future__ import annotations

from ..errors import NotApplicable
from .base import EstimatorSpec
from .dodge import DODGE
from .exact import BPTT, RTRL, TBPTT
from .kfrtrl import KFRTRL
from .names import parse_estimator
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


def make_spec(name: str, lay, sched, analysis, **opts) -> EstimatorSpec:
    """The spec for ``name`` ("uoro", "kf-rtrl", "tbptt(16)",
    "projected-uoro[preactivation]", ...: the grammar of ``names``) on one cell, with
    ``opts`` added to the options the name carries."""
    if isinstance(name, EstimatorSpec):
        return name
    key, named = parse_estimator(name)
    if key not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
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


__all__ = ["ESTIMATORS", "EstimatorSpec", "make_spec", "NotApplicable"]
