"""Shared fixtures: the cell zoo, a session-wide memo of compiled estimators, a
repo-local cache of generated modules (a second run of the suite loads numba's
compiled code from disk), small data, and the rgraph command in a subprocess."""
import os
import subprocess
import sys
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


def echo_data(T, n_in=3, seed=0):
    """Predict the previous input: a task that needs one step of memory."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n_in, T)
    return np.eye(n_in)[ids], np.roll(ids, 1)


def rgraph_cli(*args, check=True, **kw):
    """``python -m rgraph ARGS`` in a subprocess (stdout, stderr, returncode)."""
    out = subprocess.run([sys.executable, "-m", "rgraph", *args], capture_output=True,
                         text=True, timeout=600, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"rgraph {args} failed:\n{out.stdout}\n{out.stderr}")
    return out
