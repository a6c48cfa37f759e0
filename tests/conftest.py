"""Shared fixtures: the cell zoo, a session-wide memo of compiled estimators, and a
repo-local cache of generated modules (a second run of the suite loads numba's
compiled code from disk)."""
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RGRAPH_CACHE_DIR",
                      str(Path(__file__).resolve().parent.parent / ".rgraph_cache"))

import rgraph as rg  # noqa: E402

# Small sizes: every identity holds at any size; compile and run time stay low.
ZOO = {
    "tanh": lambda: rg.cells.tanh_rnn(3, 4, 3),
    "rhn": lambda: rg.cells.rhn(3, 4, 3, nonlinearity="2sigmoid-1"),
    "lstm": lambda: rg.cells.lstm(3, 4, 3),
    "gru": lambda: rg.cells.gru(3, 4, 3),
    "influence": lambda: rg.cells.influence_balancing(5, 3),
}
MSE = {"influence"}

_compiled = {}


def compiled(cell_name, estimator, backend="numpy", **opts):
    """rg.compile on a zoo cell, once per session."""
    key = (cell_name, estimator, backend, repr(sorted(opts.items(), key=str)))
    if key not in _compiled:
        loss = "mse" if cell_name in MSE else "softmax_xent"
        _compiled[key] = rg.compile(ZOO[cell_name](), estimator, loss=loss,
                                    backend=backend, **opts)
    return _compiled[key]


def sequence(cell_name, T=8, seed=0):
    """A short input/target sequence for a zoo cell."""
    rng = np.random.default_rng(seed)
    if cell_name in MSE:
        return np.ones((T, 1)), np.ones((T, 1))
    cell = ZOO[cell_name]()
    n_in = cell.nodes[0].shape[0]
    return rng.standard_normal((T, n_in)), rng.integers(0, 3, T)


def params_for(est, seed=0):
    p = est.init_params(seed)
    if "theta" in p:              # influence balancing starts at theta = 0
        p["theta"][:] = 0.3
    return p


@pytest.fixture(params=sorted(ZOO))
def cell_name(request):
    return request.param
