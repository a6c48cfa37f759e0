"""The benchmark's JAX baselines (benchmarks/handjax.py) and its JAX column: the exact
estimator matches rgraph's exact gradient, the stochastic ones' readout gradient is
exact, and the table has the column where jax is installed and one line where not."""
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import compiled, params_for, sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the checkout's benchmarks/


@pytest.fixture(scope="module")
def handjax():
    pytest.importorskip("jax")
    from benchmarks import handjax
    return handjax


@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_jax_rtrl_is_the_exact_gradient(handjax, cell):
    ex = compiled(cell, "bptt")
    params = params_for(ex)
    xs, ys = sequence(cell)
    exact = ex.total_gradient(params, xs, ys)
    got = handjax.JaxRTRL(cell, 3, 4, 3, params, lr=0.0).total_gradient(xs, ys)
    for k in exact:
        np.testing.assert_allclose(got[k], exact[k], rtol=0, atol=1e-10)


@pytest.mark.parametrize("est", ["uoro", "kf-rtrl"])
def test_jax_stochastic_estimators_have_the_exact_readout_gradient(handjax, est):
    ex = compiled("tanh", "bptt")
    params = params_for(ex)
    xs, ys = sequence("tanh")
    exact = ex.total_gradient(params, xs, ys)
    got = handjax.ESTIMATORS[est]("tanh", 3, 4, 3, params, seed=3).total_gradient(xs, ys)
    for k in ("V", "b"):
        np.testing.assert_allclose(got[k], exact[k], rtol=0, atol=1e-10)
    assert got["W"].shape == exact["W"].shape and np.all(np.isfinite(got["W"]))


def _bench():
    from benchmarks import bench
    return bench


def _run_bench(out):
    return _bench().bench(cells=["tanh"], sizes=[4], batches=[1], estimators=["uoro"],
                          seconds=0.01, repeats=1, hand=False, out=out.append)


def test_bench_has_the_jax_column(handjax):
    out = []
    rows = _run_bench(out)
    assert len(rows) == 1 and rows[0]["jax_us"] > 0
    assert rows[0]["jax_ratio"] == pytest.approx(rows[0]["jax_us"] / rows[0]["rgraph_us"])
    assert "JAX/rgraph" in "\n".join(out) and "1 core" in out[0] and "JAX: jax" in out[0]


def test_bench_without_jax_says_so_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)              # import jax fails
    monkeypatch.setitem(sys.modules, "benchmarks.handjax", None)
    out = []
    rows = _run_bench(out)
    notes = [line for line in out if "pip install -e '.[bench]'" in line]
    assert len(notes) == 1 and out.index(notes[0]) == 0        # before the table
    assert not any("JAX" in line for line in out[1:])
    assert "jax_us" not in rows[0]
