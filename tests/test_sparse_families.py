"""SnAp-n, e-prop/RFLO and OK against mathematics: exactness where the mask saturates or
the recurrence is elementwise, hand-written references from the papers' equations, and
unbiasedness with variance falling in OK's rank."""
import numpy as np
import pytest

import rgraph as rg
from rgraph.errors import NotApplicable

from conftest import ZOO, compiled, sequence
from test_estimators import exact_case, z_scores


def indrnn(n_in=3, n=4, n_out=3):
    """IndRNN: h' = tanh(W x + u ⊙ h + b), the recurrence elementwise."""
    c = rg.Cell("indrnn")
    x, h = c.input("x", n_in), c.state("h", n)
    W, u, b = c.param("W", (n, n_in)), c.param("u", (n,)), c.param("b", (n,))
    h_new = rg.tanh(W @ x + u * h + b)
    c.update(h, h_new)
    c.output("y", c.param("V", (n_out, n)) @ h_new)
    return c


def flat(est, g):
    return np.concatenate([g[b.name].ravel() for b in est.blocks])


def assert_equal_gradients(cell, name, xs, ys, backend="numpy", rtol=1e-10, **opts):
    exact = rg.compile(cell, "rtrl", backend=backend)
    est = rg.compile(cell, name, backend=backend, **opts)
    p = exact.init_params(0)
    g0, g = exact.total_gradient(p, xs, ys), est.total_gradient(p, xs, ys)
    np.testing.assert_allclose(flat(est, g), flat(exact, g0), rtol=rtol, atol=rtol * 1e-2)
    return est


# ------------------------------------------------------------------------- SnAp-n
def test_snap1_is_exact_when_the_recurrence_is_elementwise():
    xs, ys = sequence("tanh", T=10)
    est = assert_equal_gradients(indrnn(), "snap-1", xs, ys)
    assert est.name == "snap-1"


@pytest.mark.parametrize("cell_name", ["tanh", "lstm", "gru"])
def test_snap2_saturates_to_rtrl_on_dense_cells(cell_name):
    xs, ys = sequence(cell_name, T=10)
    assert_equal_gradients(ZOO[cell_name](), "snap(2)", xs, ys)
    rep = rg.analyze(ZOO[cell_name]()).report()
    assert "snap-2" in rep and "saturates" in rep


def test_snap1_is_not_rtrl_on_a_dense_cell():
    xs, ys, p, exact = exact_case("tanh", T=10)
    g = compiled("tanh", "snap-1").total_gradient(p, xs, ys)
    assert not np.allclose(g["W"], exact["W"], rtol=1e-3)
    np.testing.assert_allclose(g["V"], exact["V"], rtol=1e-12)   # the readout is exact


def hand_snap1_tanh(p, xs, ys):
    """SnAp-1 on h' = tanh(W [h; x; 1]) from Menick et al.'s equations: for row i of W,
    J_i ← φ'(z_i) (W[i, i] J_i + hx), and the gradient L_i J_i with L = ∂l/∂h_t."""
    W, V, b = p["W"], p["V"], p["b"]
    n = W.shape[0]
    h = np.zeros(n)
    J = np.zeros_like(W)
    gW, gV, gb = np.zeros_like(W), np.zeros_like(V), np.zeros_like(b)
    for x, y in zip(xs, ys, strict=True):
        hx = np.concatenate([h, x, [1.0]])
        h = np.tanh(W @ hx)
        dphi = 1 - h ** 2
        J = dphi[:, None] * (np.diag(W[:, :n])[:, None] * J + hx[None, :])
        logits = V @ h + b
        e = np.exp(logits - logits.max())
        dy = e / e.sum()
        dy[y] -= 1.0
        gV += np.outer(dy, h)
        gb += dy
        gW += (V.T @ dy)[:, None] * J
    return {"W": gW, "V": gV, "b": gb}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_snap1_on_a_dense_tanh_rnn_is_the_hand_written_snap1(backend):
    xs, ys = sequence("tanh", T=12)
    est = compiled("tanh", "snap-1", backend=backend)
    p = compiled("tanh", "bptt").init_params(2)
    g, ref = est.total_gradient(p, xs, ys), hand_snap1_tanh(p, xs, ys)
    for k in ref:
        np.testing.assert_allclose(g[k], ref[k], rtol=1e-10, atol=1e-13)


def test_snap_stores_only_the_mask():
    cell = rg.cells.lstm(3, 16, 3)
    est = rg.compile(cell, "snap-1", backend="numpy")
    P = est.spec.lay.n_rec
    # SnAp-1 on an LSTM: the input, forget and candidate gates' weights reach their
    # unit's (c_i, h_i), the output gate's only h_i: 1.75 P entries, not S P
    assert est.spec.kept == 7 * P // 4
    assert est.spec.state_layout()["J"] == (7 * P // 4,)


# ---------------------------------------------------------------- e-prop and RFLO
def hand_rflo(p, xs, ys, alpha, B=None):
    """Murray's RFLO (eLife 2019), eqs. for the leaky RNN a' = (1-α) a + α tanh(u),
    u = W_rec a + W_in x + b_rec: B_rec ← (1-α) B_rec + α φ'(u) aᵀ (likewise for
    W_in with x and b_rec with 1), gradient q ⊙ B with q = W_outᵀ e (or B_fb e)."""
    Wr, Wi, br, V, b = p["W_rec"], p["W_in"], p["b_rec"], p["V"], p["b"]
    n = Wr.shape[0]
    a = np.zeros(n)
    Er, Ei, Eb = np.zeros_like(Wr), np.zeros_like(Wi), np.zeros_like(br)
    g = {k: np.zeros_like(v) for k, v in p.items()}
    for x, y in zip(xs, ys, strict=True):
        u = Wr @ a + Wi @ x + br
        phi = np.tanh(u)
        dphi = 1 - phi ** 2
        Er = (1 - alpha) * Er + alpha * dphi[:, None] * a[None, :]
        Ei = (1 - alpha) * Ei + alpha * dphi[:, None] * x[None, :]
        Eb = (1 - alpha) * Eb + alpha * dphi
        a = (1 - alpha) * a + alpha * phi
        logits = V @ a + b
        e = np.exp(logits - logits.max())
        err = e / e.sum()
        err[y] -= 1.0
        g["V"] += np.outer(err, a)
        g["b"] += err
        q = V.T @ err if B is None else B @ err
        g["W_rec"] += q[:, None] * Er
        g["W_in"] += q[:, None] * Ei
        g["b_rec"] += q * Eb
    return g


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_rflo_is_murrays_rflo_number_for_number(backend):
    cell = rg.cells.leaky_rnn(3, 5, 3, alpha=0.2)
    est = rg.compile(cell, "rflo", backend=backend)
    p = est.init_params(1)
    p["b_rec"] = np.random.default_rng(5).standard_normal(5) * 0.3
    xs, ys = sequence("tanh", T=15)
    g, ref = est.total_gradient(p, xs, ys), hand_rflo(p, xs, ys, 0.2)
    for k in ref:
        np.testing.assert_allclose(g[k], ref[k], rtol=1e-10, atol=1e-13)


def test_rflo_with_random_feedback_uses_a_fixed_random_matrix():
    cell = rg.cells.leaky_rnn(3, 5, 3, alpha=0.2)
    est = rg.compile(cell, "rflo", backend="numpy", feedback="random", feedback_seed=7)
    p = est.init_params(1)
    xs, ys = sequence("tanh", T=15)
    B = est.module.FEEDBACK
    assert B.shape == (5, 3)
    np.testing.assert_array_equal(
        B, np.random.default_rng(7).standard_normal((5, 3)) / np.sqrt(3))
    g, ref = est.total_gradient(p, xs, ys), hand_rflo(p, xs, ys, 0.2, B)
    for k in ref:
        np.testing.assert_allclose(g[k], ref[k], rtol=1e-10, atol=1e-13)


def test_eprop_keeps_the_lstm_forget_path_only():
    """e-prop's traces follow c' = f c + ...: the LSTM's D̂ is the forget path, so e-prop
    differs from SnAp-1 (which also keeps W's self-recurrent entries) and from RTRL."""
    xs, ys, p, exact = exact_case("lstm", T=10)
    e = compiled("lstm", "e-prop").total_gradient(p, xs, ys)
    s1 = compiled("lstm", "snap-1").total_gradient(p, xs, ys)
    W = next(b.name for b in compiled("lstm", "e-prop").blocks if b.recurrent)
    assert not np.allclose(e[W], s1[W]) and not np.allclose(e[W], exact[W])
    cos = e[W].ravel() @ exact[W].ravel() / np.linalg.norm(e[W]) / np.linalg.norm(exact[W])
    assert cos > 0.5


def test_sparse_families_refuse_a_shared_parameter_clearly():
    c = rg.Cell("shared")
    x, h = c.input("x", 2), c.state("h", 3)
    W = c.param("W", (3, 3))
    h_new = rg.tanh(W @ h + W @ rg.tanh(h) + c.param("U", (3, 2)) @ x)
    c.update(h, h_new)
    c.output("y", c.param("V", (2, 3)) @ h_new)
    for name in ("snap-1", "e-prop"):
        with pytest.raises(NotApplicable, match="parameter 'W' is used by 2 nodes"):
            rg.compile(c, name, backend="numpy")


# ---------------------------------------------------------------------------- OK
@pytest.mark.parametrize("cell_name", ["tanh", "rhn", "lstm"])
def test_ok_is_unbiased(cell_name):
    xs, ys, p, exact = exact_case(cell_name)
    z = z_scores(compiled(cell_name, "ok", rank=2), p, xs, ys, exact, n=400)
    assert np.all(z < 4.0), z


def _variance(est, p, xs, ys, exact, n=150):
    rec = [b.name for b in est.blocks if b.recurrent]
    e = np.concatenate([exact[k].ravel() for k in rec])
    err = [np.concatenate([g[k].ravel() for k in rec]) - e for g in
           (est.total_gradient(p, xs, ys, seed=s) for s in range(n))]
    return float(np.mean(np.sum(np.square(err), axis=1)))


@pytest.mark.parametrize("cell_name", ["tanh", "lstm"])
def test_ok_variance_falls_with_rank_and_is_below_kf_rtrl(cell_name):
    xs, ys, p, exact = exact_case(cell_name)
    kf = _variance(compiled(cell_name, "kf-rtrl"), p, xs, ys, exact)
    v = {r: _variance(compiled(cell_name, "ok", rank=r), p, xs, ys, exact)
         for r in (1, 2, 4)}
    assert v[4] < v[2] < v[1] < kf, (v, kf)


def test_ok_at_full_rank_is_rtrl():
    """With r at least the rank of G (the length of â), the reduction keeps every
    singular value: OK is exact (to the √ε precision of its Gram matrices)."""
    xs, ys = sequence("tanh", T=10)
    assert_equal_gradients(ZOO["tanh"](), "ok(8)", xs, ys, rtol=1e-6)


def test_ok_numba_matches_numpy():
    xs, ys, p, _ = exact_case("lstm")
    a = compiled("lstm", "ok", backend="numba", rank=2).total_gradient(p, xs, ys, seed=4)
    b = compiled("lstm", "ok", rank=2).total_gradient(p, xs, ys, seed=4)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-10, atol=1e-13)


def test_ok_says_why_it_does_not_apply():
    with pytest.raises(NotApplicable, match="ok does not apply to cell 'gru'"):
        rg.compile(rg.cells.gru(3, 4, 3), "ok", backend="numpy")


# ----------------------------------------------------------------- everywhere
def test_the_command_line_knows_the_new_families(tmp_path):
    from conftest import rgraph_cli as run_cli
    out = run_cli("inspect", "lstm", "-n", "8")
    for name in ("ok(r=2)", "snap-1", "snap-2", "e-prop", "rflo", "saturates"):
        assert name in out.stdout, name
    run = run_cli("train", "leaky", "-n", "8", "-t", "copy", "-e", "rflo", "--feedback",
                  "random", "--steps", "300", "--out", str(tmp_path / "r"), check=False)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "r" / "params.npz").exists()
    bad = run_cli("train", "tanh", "-n", "8", "-t", "copy", "-e", "snap-0", "--steps", "10",
                  "--out", str(tmp_path / "bad"), check=False)
    assert bad.returncode != 0 and "level '0' is not a positive integer" in bad.stderr


def test_variance_runs_every_family():
    xs, ys = sequence("tanh", T=8)
    res = rg.variance(ZOO["tanh"](), ["snap-1", "e-prop", "ok(2)", "uoro"], xs, ys,
                      seeds=20, backend="numpy")
    rows = {r.estimator: r for r in res.rows}
    assert rows["snap-1"].seeds == 1 and rows["ok(2)"].seeds == 20
    assert rows["ok(2)"].cos_mean > rows["uoro"].cos_mean
