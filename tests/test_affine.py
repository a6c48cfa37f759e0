"""Cells as frameworks write them: affine preactivations with separate biases get the
preactivation projection space and KF-RTRL, with terms that reach one sum merged into one
Kronecker factor, and a Kronecker sum where a term is scaled after its product
(PyTorch's GRU)."""
import numpy as np
import pytest

import rgraph as rg

from test_estimators import z_scores

N_IN, N, N_OUT = 3, 4, 3


def split_rnn(n_in=N_IN, n=N, n_out=N_OUT):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh), as PyTorch's nn.RNN writes it."""
    c = rg.Cell("split_rnn")
    x, h = c.input("x", n_in), c.state("h", n)
    W_ih, W_hh = c.param("W_ih", (n, n_in)), c.param("W_hh", (n, n))
    b_ih, b_hh = c.param("b_ih", n), c.param("b_hh", n)
    pre = (W_ih @ x + b_ih + W_hh @ h + b_hh).named("pre")
    h_new = rg.tanh(pre)
    c.update(h, h_new)
    c.output("y", c.param("V", (n_out, n)) @ h_new)
    return c


def concat_rnn(n_in=N_IN, n=N, n_out=N_OUT):
    """The same cell in concat form: h' = tanh(W [h; x; 1])."""
    c = rg.Cell("concat_rnn")
    x, h = c.input("x", n_in), c.state("h", n)
    W = c.param("W", (n, n + n_in + 1))
    h_new = rg.tanh((W @ rg.concat(h, x, rg.const(1.0))).named("pre"))
    c.update(h, h_new)
    c.output("y", c.param("V", (n_out, n)) @ h_new)
    return c


def split_lstm(n_in=N_IN, n=N, n_out=N_OUT):
    c = rg.Cell("split_lstm")
    x, h, m = c.input("x", n_in), c.state("h", n), c.state("c", n)
    W_ih, W_hh = c.param("W_ih", (4 * n, n_in)), c.param("W_hh", (4 * n, n))
    b_ih, b_hh = c.param("b_ih", 4 * n), c.param("b_hh", 4 * n)
    gates = (W_ih @ x + b_ih + W_hh @ h + b_hh).named("gates")
    i, f, g, o = rg.split(gates, 4)
    m_new = rg.sigmoid(f) * m + rg.sigmoid(i) * rg.tanh(g)
    h_new = rg.sigmoid(o) * rg.tanh(m_new)
    c.update(m, m_new)
    c.update(h, h_new)
    c.output("y", c.param("V", (n_out, n)) @ h_new)
    return c


def torch_gru(n_in=N_IN, n=N, n_out=N_OUT):
    """PyTorch's GRU: the reset gate scales W_hn h + b_hn after the product."""
    c = rg.Cell("torch_gru")
    x, h = c.input("x", n_in), c.state("h", n)
    W_ih, W_hh = c.param("W_ih", (3 * n, n_in)), c.param("W_hh", (3 * n, n))
    b_ih, b_hh = c.param("b_ih", 3 * n), c.param("b_hh", 3 * n)
    gi = (W_ih @ x + b_ih).named("gi")
    gh = (W_hh @ h + b_hh).named("gh")
    i_r, i_z, i_n = rg.split(gi, 3)
    h_r, h_z, h_n = rg.split(gh, 3)
    r, z = rg.sigmoid(i_r + h_r), rg.sigmoid(i_z + h_z)
    cand = rg.tanh(i_n + r * h_n)
    h_new = (1 - z) * cand + z * h
    c.update(h, h_new)
    c.output("y", c.param("V", (n_out, n)) @ h_new)
    return c


def leaky_rnn(n_in=N_IN, n=N, n_out=N_OUT, alpha=0.2):
    """vanilla-rtrl's leaky RNN: a' = (1 - α) a + α tanh(W_rec a + W_in x + b_rec)."""
    c = rg.Cell("leaky_rnn")
    x, a = c.input("x", n_in), c.state("a", n)
    W_rec, W_in, b_rec = c.param("W_rec", (n, n)), c.param("W_in", (n, n_in)), \
        c.param("b_rec", n)
    a_new = (1 - alpha) * a + alpha * rg.tanh(W_rec @ a + W_in @ x + b_rec)
    c.update(a, a_new)
    c.output("y", c.param("V", (n_out, n)) @ a_new)
    return c


# cells written here as a user would, and the built-in ones in PyTorch's form
CELLS = {"rnn": (split_rnn, N), "lstm": (split_lstm, 4 * N), "gru": (torch_gru, 6 * N),
         "leaky": (leaky_rnn, N),
         "rnn_pytorch": (lambda: rg.cells.rnn(N_IN, N, N_OUT, form="pytorch"), N),
         "lstm_pytorch": (lambda: rg.cells.lstm(N_IN, N, N_OUT, form="pytorch"), 4 * N),
         "gru_pytorch": (lambda: rg.cells.gru(N_IN, N, N_OUT, form="pytorch"), 6 * N),
         "leaky_rnn": (lambda: rg.cells.leaky_rnn(N_IN, N, N_OUT), N)}
BUILTIN = ["rnn_pytorch", "lstm_pytorch", "gru_pytorch", "leaky_rnn"]


@pytest.mark.parametrize("name", sorted(CELLS))
def test_framework_cells_get_kronecker_structure_and_a_preactivation_space(name):
    make, dim = CELLS[name]
    an = rg.analyze(make())
    assert an.kronecker.ok, an.kronecker.reason
    assert an.space("preactivation").dim == dim
    assert "preactivations" in an.report()


def test_terms_that_reach_one_sum_are_merged():
    k = rg.analyze(split_rnn()).kronecker
    assert not k.is_sum and k.groups[0].merged
    assert k.groups[0].input == "[x; h; 1]" and k.groups[0].dim_input == N_IN + N + 1
    assert "merged: W_ih @ x + W_hh @ h + b_ih + b_hh" in rg.analyze(split_rnn()).report()
    # PyTorch's GRU: r scales W_hn h + b_hn, so gi and gh keep a D each: a Kronecker sum
    g = rg.analyze(torch_gru()).kronecker
    assert g.is_sum and [grp.input for grp in g.groups] == ["[x; 1]", "[h; 1]"]


def test_cho_gru_stays_refused_and_no_message_asks_for_a_bias_column():
    k = rg.analyze(rg.cells.gru(3, 4, 2)).kronecker
    assert not k.ok and "Cho's GRU" in k.reason and "PyTorch's GRU" in k.reason
    c = rg.Cell("gain")
    x, h = c.input("x", 3), c.state("h", 4)
    W, s = c.param("W", (4, 7)), c.param("s", 4)
    h_new = rg.tanh(s * (W @ rg.concat(h, x)))
    c.update(h, h_new)
    c.output("y", h_new)
    k = rg.analyze(c).kronecker
    assert not k.ok and k.offending and "'s' enters elementwise" in k.reason
    assert "column of W" not in k.reason


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("estimator", ["kf-rtrl", "projected-uoro[preactivation]"])
def test_framework_cells_are_unbiased(name, estimator):
    cell = CELLS[name][0]()
    exact = rg.compile(cell, "bptt", backend="numpy")
    est = rg.compile(cell, estimator, backend="numpy")
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((8, N_IN)), rng.integers(0, N_OUT, 8)
    p = exact.init_params(1)
    z = z_scores(est, p, xs, ys, exact.total_gradient(p, xs, ys), n=400)
    assert np.all(z < 4.0), z


def test_split_form_equals_concat_form():
    """The same weights in split and concat form: KF-RTRL runs one Kronecker factor of
    the same size in both, and its estimates' cosine to the exact gradient agrees."""
    n = 32
    split, concat = split_rnn(N_IN, n, N_OUT), concat_rnn(N_IN, n, N_OUT)
    ks, kc = rg.analyze(split).kronecker, rg.analyze(concat).kronecker
    assert ks.groups[0].dim_input == kc.groups[0].dim_input == n + N_IN + 1
    rng = np.random.default_rng(3)
    W_hh, W_ih = rng.standard_normal((n, n)) / np.sqrt(n), rng.standard_normal((n, N_IN))
    b_ih, b_hh, V = 0.1 * rng.standard_normal(n), 0.1 * rng.standard_normal(n), \
        rng.standard_normal((N_OUT, n))
    ps = {"W_ih": W_ih, "W_hh": W_hh, "b_ih": b_ih, "b_hh": b_hh, "V": V}
    pc = {"W": np.concatenate([W_hh, W_ih, (b_ih + b_hh)[:, None]], 1), "V": V}
    xs, ys = rng.standard_normal((20, N_IN)), rng.integers(0, N_OUT, 20)

    def cosines(cell, p, flat):
        exact = flat(rg.compile(cell, "bptt", backend="numpy").total_gradient(p, xs, ys))
        est = rg.compile(cell, "kf-rtrl")
        gs = [flat(est.total_gradient(p, xs, ys, seed=s)) for s in range(200)]
        return np.mean([g @ exact / np.linalg.norm(g) / np.linalg.norm(exact) for g in gs])

    cos_s = cosines(split, ps, lambda g: np.concatenate(
        [g["W_hh"], g["W_ih"], g["b_ih"][:, None]], 1).ravel())
    cos_c = cosines(concat, pc, lambda g: g["W"].ravel())
    assert abs(cos_s - cos_c) < 0.02, (cos_s, cos_c)
