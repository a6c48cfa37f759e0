"""H_t X for many columns (RTRL's H G, KF-RTRL's H A): through the step's jvp, or with
H_t formed first from its coloured columns (rgraph.sparsity.association). Both
associations give the same numbers, RTRL's equals BPTT, and the cost model picks the
one the flop counts favour (an LSTM's H_t has n diagonal columns: half the GEMM)."""
import dataclasses

import numpy as np
import pytest

import rgraph as rg
import rgraph.estimators.exact as exact
import rgraph.estimators.kfrtrl as kfrtrl
from rgraph import sparsity
from rgraph.layout import Layout

from conftest import ZOO, compiled, sequence

CELLS = {**{k: ZOO[k] for k in ("tanh", "lstm", "rhn")},
         "gru_pytorch": lambda: rg.cells.gru(3, 4, 3, form="pytorch"),
         "lstm_pytorch": lambda: rg.cells.lstm(3, 4, 3, form="pytorch")}


def _forced(monkeypatch, explicit):
    real = sparsity.association

    def assoc(lay, K):
        return dataclasses.replace(real(lay, K), explicit=explicit)
    for mod in (exact, kfrtrl):
        monkeypatch.setattr(mod, "association", assoc)


def _flat(g):
    return np.concatenate([g[k].ravel() for k in sorted(g)])


@pytest.mark.parametrize("cell_name", sorted(CELLS))
@pytest.mark.parametrize("estimator", ["rtrl", "kf-rtrl"])
def test_both_associations_agree(monkeypatch, cell_name, estimator):
    xs, ys = sequence("tanh", T=10, seed=4)
    out = {}
    for explicit in (True, False):
        _forced(monkeypatch, explicit)
        est = rg.compile(CELLS[cell_name](), estimator, backend="numpy")
        code = est.source
        assert ("h_apply" in code) == explicit
        p = est.init_params(1)
        out[explicit] = _flat(est.total_gradient(p, xs, ys, seed=5))
    np.testing.assert_allclose(out[True], out[False], rtol=1e-10, atol=1e-12)
    if estimator == "rtrl":
        bptt = rg.compile(CELLS[cell_name](), "bptt", backend="numpy")
        exact_g = _flat(bptt.total_gradient(bptt.init_params(1), xs, ys))
        np.testing.assert_allclose(out[True], exact_g, rtol=1e-9, atol=1e-12)


def test_generated_explicit_rtrl_equals_bptt_numba():
    """The numba module of the explicit association (the zoo's LSTM chooses it)."""
    rtrl = compiled("lstm", "rtrl", backend="numba")
    assert "h_apply" in rtrl.source and "kron_immediate" in rtrl.source
    bptt = compiled("lstm", "bptt")
    xs, ys = sequence("lstm")
    p = rtrl.init_params(0)
    np.testing.assert_allclose(_flat(rtrl.total_gradient(p, xs, ys)),
                               _flat(bptt.total_gradient(p, xs, ys)), rtol=1e-9, atol=1e-12)


def test_cost_model_choices_and_report():
    lstm, tanh = Layout(rg.cells.lstm(8, 64, 8)), Layout(rg.cells.tanh_rnn(8, 64, 8))
    a = sparsity.association(lstm, 4 * 64)         # KF-RTRL's A: 4n columns
    # h's columns are dense (one GEMM of 2n x n), c's are diagonal: one colour
    assert a.explicit and a.dense == ((0, 64, 0),) and a.ncolors == 65
    assert len(a.sparse) == 2 * 64 and a.explicit_flops < a.graph_flops
    assert sparsity.association(lstm, lstm.n_rec).explicit
    # the tanh RNN's KF-RTRL: forming H_t costs as much as the product itself
    assert not sparsity.association(tanh, 64).explicit
    report = rg.analyze(rg.cells.lstm(8, 64, 8)).report()
    assert "KF-RTRL's H A (256 columns): H_t formed first" in report
    assert "RTRL's H G (18,688 columns): H_t formed first" in report
    # without the Kronecker structure RTRL keeps the jvp and says why
    report = rg.analyze(rg.cells.gru(3, 4, 3)).report()
    assert "forming H_t first needs the Kronecker structure" in report
    assert "h_apply" not in compiled("gru", "rtrl").source


UORO_CELLS = {"tanh": lambda: rg.cells.tanh_rnn(3, 5, 3),
              "leaky": lambda: rg.cells.leaky_rnn(3, 5, 3),
              "rnn_pytorch": lambda: rg.cells.tanh_rnn(3, 5, 3, form="pytorch"),
              "lstm": lambda: rg.cells.lstm(3, 4, 3),
              "gru_pytorch": lambda: rg.cells.gru(3, 4, 3, form="pytorch")}
UORO_CASES = [("uoro", {}), ("uoro", {"rank": 2}),
              ("projected-uoro", {"projection": "preactivation"})]


@pytest.mark.parametrize("cell_name", sorted(UORO_CELLS))
@pytest.mark.parametrize("name,opts", UORO_CASES, ids=[f"{n}{o}" for n, o in UORO_CASES])
def test_uoro_one_pass_equals_the_general_step(monkeypatch, cell_name, name, opts):
    """Where every recurrent parameter is one product's matrix or one bias, UORO keeps
    ζ and ν at the products and visits each block once; it draws the same noise and
    gives the same estimate as the general step (ν pulled back to every parameter)."""
    from rgraph.analysis import Analysis
    xs, ys = sequence("tanh", T=10, seed=2)
    out = {}
    for one_pass in (True, False):
        if not one_pass:
            monkeypatch.setattr(Analysis, "one_term_each", property(lambda self: None))
        est = rg.compile(UORO_CELLS[cell_name](), name, backend="numpy", **opts)
        assert ("terms_update" in est.source) == one_pass
        out[one_pass] = _flat(est.total_gradient(est.init_params(3), xs, ys, seed=7))
    np.testing.assert_allclose(out[True], out[False], rtol=1e-10, atol=1e-13)


def test_uoro_one_pass_needs_one_term_per_parameter():
    """Cho's GRU (the reset gate scales h before W_h: no Kronecker structure) keeps the
    general step."""
    assert "terms_update" not in compiled("gru", "uoro").source
    assert "terms_update" in compiled("lstm", "uoro").source
