"""The exact references: RTRL ≡ BPTT to round-off, both equal to a finite-difference
gradient of the summed loss; truncated BPTT truncates; backends agree."""
import numpy as np
import pytest


from conftest import compiled, params_for, sequence


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def fd_gradient(est, params, xs, ys, eps=1e-6, n_dirs=3, seed=0):
    """Directional finite differences of the summed loss along random directions:
    returns (dirs, fd values) so that fd[k] ≈ <grad, dirs[k]>."""
    rng = np.random.default_rng(seed)
    out = []
    dirs = []
    for _ in range(n_dirs):
        d = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        plus = {k: v + eps * d[k] for k, v in params.items()}
        minus = {k: v - eps * d[k] for k, v in params.items()}
        lp = est.total_gradient(plus, xs, ys, return_loss=True)[1]
        lm = est.total_gradient(minus, xs, ys, return_loss=True)[1]
        out.append((lp - lm) / (2 * eps))
        dirs.append(d)
    return dirs, out


def test_rtrl_equals_bptt_equals_finite_differences(cell_name):
    xs, ys = sequence(cell_name, T=10)
    bptt = compiled(cell_name, "bptt")
    rtrl = compiled(cell_name, "rtrl")
    p = params_for(bptt)
    gb = bptt.total_gradient(p, xs, ys)
    gr = rtrl.total_gradient(p, xs, ys)
    for k in gb:
        assert rel(gr[k], gb[k]) < 1e-9, k
    dirs, fds = fd_gradient(bptt, p, xs, ys)
    for d, fd in zip(dirs, fds):
        dot = sum(float(np.sum(gb[k] * d[k])) for k in gb)
        assert abs(dot - fd) <= 1e-6 * max(abs(fd), 1.0)


@pytest.mark.parametrize("cell_name", ["lstm", "gru", "influence"])
def test_numba_total_gradients_match_numpy(cell_name):
    xs, ys = sequence(cell_name, T=6)
    for name in ("bptt", "rtrl"):
        a, b = compiled(cell_name, name, "numba"), compiled(cell_name, name, "numpy")
        p = params_for(a)
        ga, gb = a.total_gradient(p, xs, ys), b.total_gradient(p, xs, ys)
        for k in ga:
            assert rel(ga[k], gb[k]) < 1e-10


def test_tbptt_truncates():
    xs, ys = sequence("tanh", T=9)
    bptt = compiled("tanh", "bptt")
    p = params_for(bptt)
    exact = bptt.total_gradient(p, xs, ys)
    # a truncation at least the sequence length is exact
    full = compiled("tanh", "tbptt(9)").total_gradient(p, xs, ys)
    assert all(rel(full[k], exact[k]) < 1e-12 for k in exact)
    # k = 3: the sum of three independent BPTT segments from the carried state
    t3 = compiled("tanh", "tbptt(3)").total_gradient(p, xs, ys)
    assert rel(t3["W"], exact["W"]) > 1e-3            # truncation changes W's gradient
    assert rel(t3["V"], exact["V"]) < 1e-12           # but not the readout's
    # with no recurrent connection (W's state columns zero) nothing crosses a step:
    # truncating at one step loses nothing
    q = {k: v.copy() for k, v in p.items()}
    q["W"][:, :4] = 0.0
    t1 = compiled("tanh", "tbptt(1)").total_gradient(q, xs, ys)
    ex = bptt.total_gradient(q, xs, ys)
    assert all(rel(t1[k], ex[k]) < 1e-12 for k in ex)


def test_loss_weights_and_resets():
    xs, ys = sequence("lstm", T=8)
    bptt = compiled("lstm", "bptt")
    rtrl = compiled("lstm", "rtrl")
    p = params_for(bptt)
    w = np.array([0, 1, 0.5, 0, 1, 1, 0, 2.0])
    r = np.zeros(8, bool)
    r[4] = True                                   # the state restarts at step 4
    gb = bptt.total_gradient(p, xs, ys, weights=w, resets=r)
    gr = rtrl.total_gradient(p, xs, ys, weights=w, resets=r)
    assert all(rel(gr[k], gb[k]) < 1e-9 for k in gb)
    # a reset splits the sequence into two independent ones
    g1 = bptt.total_gradient(p, xs[:4], ys[:4], weights=w[:4])
    g2 = bptt.total_gradient(p, xs[4:], ys[4:], weights=w[4:])
    assert all(rel(gb[k], g1[k] + g2[k]) < 1e-12 for k in gb)


def test_float32_runs_close_to_float64():
    xs, ys = sequence("lstm", T=6)
    e64 = compiled("lstm", "rtrl")
    e32 = compiled("lstm", "rtrl", dtype="float32")
    p = params_for(e64)
    g64, g32 = e64.total_gradient(p, xs, ys), e32.total_gradient(p, xs, ys)
    assert e32.dtype == np.float32
    assert all(rel(g32[k], g64[k]) < 1e-4 for k in g64)
