"""The stochastic estimators are unbiased (mean over seeds = the exact gradient), and
the identities between estimators hold number for number."""
import numpy as np
import pytest

import rgraph as rg
from rgraph.estimators.uoro import ProjectedUORO
from rgraph.codegen import Template, template_source
from rgraph.schedule import schedule

from conftest import compiled, params_for, sequence

N_SEEDS = 600


def exact_case(cell_name, T=8):
    """A sequence for a zoo cell, its parameters, and the exact (BPTT) total gradient."""
    xs, ys = sequence(cell_name, T=T)
    p = params_for(compiled(cell_name, "bptt"))
    return xs, ys, p, compiled(cell_name, "bptt").total_gradient(p, xs, ys)


def z_scores(est, p, xs, ys, exact, n=N_SEEDS, seed0=0):
    """|mean - exact| / standard error of three scalar statistics of the recurrent
    parameters' total gradient: along the exact gradient and two random directions.
    Readout parameters must be exact."""
    rec = [b.name for b in est.blocks if b.recurrent]
    readout = [b.name for b in est.blocks if not b.recurrent]
    flat = lambda g: np.concatenate([g[k].ravel() for k in rec])  # noqa: E731
    g0 = flat(exact)
    rng = np.random.default_rng(12345)
    dirs = np.stack([g0 / np.linalg.norm(g0), rng.standard_normal(g0.size),
                     rng.standard_normal(g0.size)])
    stats = []
    for s in range(seed0, seed0 + n):
        g = est.total_gradient(p, xs, ys, seed=s)
        for k in readout:
            assert np.allclose(g[k], exact[k], rtol=1e-9, atol=1e-12), k
        stats.append(dirs @ flat(g))
    stats = np.array(stats)
    se = stats.std(0, ddof=1) / np.sqrt(n)
    # an estimator with no variance on a cell (no recurrence to estimate) is exact: its
    # error is round-off, measured against a floor rather than a zero standard error
    se = np.maximum(se, 1e-11 * (np.abs(dirs @ g0) + 1.0))
    return np.abs(stats.mean(0) - dirs @ g0) / se


CASES = [("uoro", {}), ("projected-uoro", {"projection": "state"}),
         ("projected-uoro", {"projection": "preactivation"}),
         ("projected-uoro", {"projection": "parameter"}), ("kf-rtrl", {}),
         ("dodge", {}), ("dodge", {"directions": "partitioned", "k": 3}),
         ("uoro", {"rank": 2}), ("uoro", {"T": 3})]


@pytest.mark.parametrize("cell_name", ["tanh", "rhn", "lstm"])
@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}{o}" for n, o in CASES])
def test_unbiased(cell_name, name, opts):
    xs, ys, p, exact = exact_case(cell_name)
    z = z_scores(compiled(cell_name, name, **opts), p, xs, ys, exact)
    assert np.all(z < 4.0), z


def test_gru_projections_unbiased():
    xs, ys, p, exact = exact_case("gru")
    for proj in ("preactivation", "state"):
        z = z_scores(compiled("gru", "projected-uoro", projection=proj), p, xs, ys, exact)
        assert np.all(z < 4.0), (proj, z)


class BrokenUORO(ProjectedUORO):
    """UORO with one deliberate mistake in its update of w̃ (multiplying by ρ1 where
    Algorithm 1 divides), in whichever template the cell's step does it with (the tanh
    RNN's one-pass step in ``uoro_close``, which the batch step shares): the
    unbiasedness test must catch it."""

    name = "broken-uoro"

    def templates(self):
        out, broke = [], 0
        for t in super().templates():
            src = template_source(t.fn)
            if "1.0 / rho1," in src:
                broken = src.replace("1.0 / rho1,", "rho1,")
                assert src.count("1.0 / rho1,") == 1
                t, broke = Template(broken, t.name, t.role), broke + 1
            out.append(t)
        assert broke == 1
        return out


def test_the_unbiasedness_test_catches_a_broken_normalizer():
    xs, ys, p, exact = exact_case("tanh")
    exact_est = compiled("tanh", "bptt")
    an = rg.analyze(exact_est.cell)
    lay = exact_est.layout
    broken = rg.compile(exact_est.cell, BrokenUORO(lay, schedule(lay), an, projection="state"),
                        backend="numpy")
    z = z_scores(broken, p, xs, ys, exact, n=3000)    # z ≈ 12 here; < 2 when correct
    assert np.any(z > 6.0), z


def test_projected_state_equals_uoro_number_for_number():
    xs, ys = sequence("lstm", T=12)
    a = compiled("lstm", "uoro")
    b = compiled("lstm", "projected-uoro", projection="state")
    p = params_for(a)
    for s in range(3):
        ga, gb = a.total_gradient(p, xs, ys, seed=s), b.total_gradient(p, xs, ys, seed=s)
        assert all(np.array_equal(ga[k], gb[k]) for k in ga)


def test_uoro_T1_and_rank1_identities():
    xs, ys = sequence("rhn", T=10)
    base = compiled("rhn", "uoro")
    p = params_for(base)
    g = base.total_gradient(p, xs, ys, seed=4)
    g_t1 = compiled("rhn", "uoro", T=1).total_gradient(p, xs, ys, seed=4)
    assert all(np.array_equal(g[k], g_t1[k]) for k in g)


def test_uoro_T_ge_length_is_exact():
    """UORO-T over a block covering the whole sequence is exact BPTT."""
    xs, ys, p, exact = exact_case("lstm", T=6)
    g = compiled("lstm", "uoro", T=6).total_gradient(p, xs, ys, seed=0)
    assert all(np.allclose(g[k], exact[k], rtol=1e-10, atol=1e-12) for k in g)


def test_dodge_one_random_direction_is_rtrl_on_influence_balancing():
    """Silver et al. Table 1: with one parameter, DODGE with a random direction is
    RTRL (u² = 1)."""
    xs, ys = np.ones((200, 1)), np.ones((200, 1))
    dodge, rtrl = compiled("influence", "dodge"), compiled("influence", "rtrl")
    p = params_for(rtrl)
    gr = rtrl.total_gradient(p, xs, ys)["theta"]
    for s in range(5):
        gd = dodge.total_gradient(p, xs, ys, seed=s)["theta"]
        assert abs(gd[0] - gr[0]) <= 1e-12 * abs(gr[0])


def test_dodge_candidate_projects_the_gradient_on_the_candidate():
    xs, ys, p, exact = exact_case("lstm")
    rng = np.random.default_rng(0)
    d = {"W": rng.standard_normal(p["W"].shape)}
    est = compiled("lstm", "dodge", directions="candidate", candidate=d)
    g = est.total_gradient(p, xs, ys)
    u = d["W"] / np.linalg.norm(d["W"])
    assert np.allclose(g["W"], np.sum(exact["W"] * u) * u, rtol=1e-9, atol=1e-14)
    assert np.allclose(g["V"], exact["V"])
    # with the window's own full-BPTT gradient as candidate: exactly the gradient
    g2 = compiled("lstm", "dodge", directions="candidate",
                  candidate="tbptt").total_gradient(p, xs, ys)
    assert np.allclose(g2["W"], exact["W"], rtol=1e-9, atol=1e-14)


def test_q_scaling_keeps_unbiasedness():
    xs, ys, p, exact = exact_case("tanh")
    rng = np.random.default_rng(3)
    A = rng.standard_normal((4, 4))
    Q0 = A @ A.T + 4 * np.eye(4)
    est = rg.compile(compiled("tanh", "bptt").cell, "projected-uoro",
                     projection="preactivation", Q0=Q0, alpha=0.7, alpha_power=0.5,
                     backend="numpy")
    z = z_scores(est, p, xs, ys, exact)
    assert np.all(z < 4.0), z


def test_same_seed_same_numbers_and_backends_agree():
    xs, ys = sequence("lstm", T=8)
    for name in ("uoro", "kf-rtrl", "dodge"):
        a = compiled("lstm", name)
        b = compiled("lstm", name, "numba")
        p = params_for(a)
        g1, g2 = a.total_gradient(p, xs, ys, seed=7), a.total_gradient(p, xs, ys, seed=7)
        g3 = b.total_gradient(p, xs, ys, seed=7)
        for k in g1:
            assert np.array_equal(g1[k], g2[k])
            assert np.allclose(g3[k], g1[k], rtol=1e-9, atol=1e-13), (name, k)


def test_kf_rtrl_on_a_kronecker_sum_is_unbiased():
    """Products of the state and of the input that reach the new state along different
    paths: two input groups, two factor pairs (one Kronecker product per W @ a)."""
    c = rg.Cell("two_groups")
    x, h = c.input("x", 3), c.state("h", 4)
    U = c.param("U", (4, 4))
    Wx = c.param("Wx", (4, 4))
    h_new = rg.sigmoid(U @ h) * rg.tanh(Wx @ rg.concat(x, rg.const(1.0)))
    c.update(h, h_new)
    c.output("y", c.param("V", (3, 4)) @ h_new)
    bptt = rg.compile(c, "bptt", backend="numpy")
    kf = rg.compile(c, "kf-rtrl", backend="numpy")
    assert kf.name == "kf-rtrl[2 groups]"
    xs, ys = sequence("tanh", T=8)
    p = bptt.init_params(1)
    z = z_scores(kf, p, xs, ys, bptt.total_gradient(p, xs, ys))
    assert np.all(z < 4.0), z


def test_dodge_average_candidate_is_a_descent_direction():
    xs, ys, p, exact = exact_case("lstm", T=12)
    exact = exact["W"]
    est = compiled("lstm", "dodge", directions="candidate", candidate="average",
                   candidate_k=3, window=4)
    g = est.total_gradient(p, xs, ys)["W"]
    assert np.sum(g * exact) > 0


def test_states_that_are_not_ops_of_their_own():
    from test_kernels import odd_states
    c = odd_states()
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((6, 2)), rng.integers(0, 2, 6)
    bptt = rg.compile(c, "bptt", backend="numpy")
    p = bptt.init_params(0)
    exact = bptt.total_gradient(p, xs, ys)
    rtrl = rg.compile(c, "rtrl", backend="numpy").total_gradient(p, xs, ys)
    assert all(np.allclose(rtrl[k], exact[k], rtol=1e-10, atol=1e-14) for k in exact)
    for name in ("uoro", "kf-rtrl", "dodge"):
        z = z_scores(rg.compile(c, name, backend="numpy"), p, xs, ys, exact)
        assert np.all(z < 4.0), (name, z)
