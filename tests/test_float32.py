"""float32 modules: every estimator compiles and trains in float32, keeps its buffers in
float32, and gives the gradient of its float64 twin.

The random estimators (UORO, its projections, KF-RTRL, DODGE, OK) draw the same numbers
in both float types: their draws (random signs, one ``rng.random()`` each) do not depend
on the float type, so at the same seed a float32 module computes, up to rounding, what
the float64 one does, and the same-seed cosine tests them as tightly as the exact ones.

The numpy backend runs every estimator on a tanh RNN and an LSTM (compiles are free);
numba compiles cost seconds each, so it runs the estimator whose template was broken in
float32 (OK: its LAPACK products mixed float types), UORO (batched training and the
generated source), and a cell with a constant matrix (influence balancing: its constant
entered a float32 product as a float64 array)."""
import numpy as np
import pytest

import rgraph as rg

from conftest import compiled, echo_data, params_for, sequence

NAMES = ["rtrl", "bptt", "tbptt(3)", "uoro", "projected-uoro[state]",
         "projected-uoro[preactivation]", "projected-uoro[parameter]", "kf-rtrl", "dodge",
         "snap-1", "snap-2", "e-prop", "rflo", "ok(2)", "layer-rtrl"]


def flat(est, g):
    return np.concatenate([np.ravel(g[b.name]) for b in est.blocks])


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_every_estimator_name_is_covered():
    keys = {rg.estimators.known(n) for n in NAMES}
    assert keys == set(rg.estimators.ESTIMATORS)


def check_float32(e32, e64, cell_name, steps=200, **train):
    """Same-seed gradient agreement with float64, then ``steps`` steps of training with
    no non-finite loss and every buffer in float32."""
    xs, ys = sequence(cell_name, T=20, seed=1)
    p = params_for(e64)
    g32 = e32.total_gradient(p, xs, ys, seed=3)
    g64 = e64.total_gradient(p, xs, ys, seed=3)
    assert all(g.dtype == np.float64 for g in g32.values())     # returned in float64
    a, b = flat(e32, g32), flat(e64, g64)
    assert cosine(a, b) >= 0.999, cosine(a, b)
    assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b)    # float32 rounding: ~2e-7
    xs, ys = echo_data(steps, seed=2)
    tr = e32.trainer(p, rg.Adam(3e-3), **train)
    res = tr.run(xs, ys)
    assert np.all(np.isfinite(res.losses)) and len(res.losses) == steps // tr.batch
    for what in ("th", "g", "opt", "states", "E"):
        assert getattr(tr, what).dtype == np.float32, what
    assert np.all(np.isfinite(tr.th)) and np.all(np.isfinite(tr.E))


@pytest.mark.parametrize("cell_name", ["tanh", "lstm"])
@pytest.mark.parametrize("name", NAMES)
def test_numpy_float32_agrees_with_float64(cell_name, name):
    check_float32(compiled(cell_name, name, dtype="float32"), compiled(cell_name, name),
                  cell_name)


@pytest.mark.parametrize("name", ["ok(2)", "uoro"])
def test_numba_float32(name):
    e32 = compiled("tanh", name, "numba", dtype="float32")
    e64 = compiled("tanh", name)            # the numpy backend: the same algorithm
    src = e32.source
    assert "DT = np.float32" in src and "np.float64" not in src
    assert "np.array([1.0], dtype=DT)" in src       # the cell's constant, in float32
    check_float32(e32, e64, "tanh", steps=400, batch=4 if name == "uoro" else 1)
    # the numba module computes what the numpy one does in float32
    xs, ys = sequence("tanh", T=20, seed=1)
    p = params_for(e64)
    a = flat(e32, e32.total_gradient(p, xs, ys, seed=5))
    b = flat(e32, compiled("tanh", name, dtype="float32").total_gradient(p, xs, ys, seed=5))
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5 * np.abs(b).max())


def test_numba_float32_constant_matrix():
    """Influence balancing multiplies the state by a constant matrix: in a float32
    module the constant is float32, or numba refuses the mixed product."""
    e32 = compiled("influence", "rtrl", "numba", dtype="float32")
    e64 = compiled("influence", "rtrl")
    xs, ys = sequence("influence", T=8)
    p = params_for(e64)
    g32, g64 = e32.total_gradient(p, xs, ys), e64.total_gradient(p, xs, ys)
    np.testing.assert_allclose(g32["theta"], g64["theta"], rtol=1e-4)
