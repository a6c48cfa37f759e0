"""The DSL pieces of spiking cells (``rg.stop_gradient``, ``rg.spike`` and its
surrogates) and the built-in cells of issue 22: IndRNN, the LRU, LIF and ALIF.

* stop_gradient: its value is x, no tangent or cotangent passes it (both backends), and
  the structural analysis sees no dependence through it.
* spike: the value is the step, the derivative each surrogate's formula; a surrogate is
  not the derivative of its value, so ``check_derivatives`` refuses it in one line.
* The LRU's forward pass equals a complex-arithmetic NumPy LRU; its init draws the ring,
  per layer from the seed (a parameter drawn alone, or by an exported module, is the
  same).
* RTRL and BPTT equal finite differences on every new cell (on the spiking cells with
  the spike replaced by a smooth function, since a step has no useful finite
  difference), and agree with each other through the surrogate.
* e-prop on LIF and ALIF equals Bellec et al.'s e-prop written here from the paper's
  equations, with symmetric and random feedback.
"""
import math

import numpy as np
import pytest
import sympy as sp

import rgraph as rg
from rgraph import cells, scalars, sparsity
from rgraph.checks import KernelSet, check_derivatives
from rgraph.graph import init_param
from rgraph.layout import Layout


def params_of(cell, seed=0):
    """A cell's parameters drawn as ``Estimator.init_params(seed)`` draws them."""
    rng = np.random.default_rng(seed)
    return {b.name: init_param(cell.nodes[b.node], rng) for b in Layout(cell).param_blocks}


def pack(ks, params):
    th = np.zeros(ks.p.n_params)
    for b in ks.p.param_blocks:
        th[b.off:b.off + b.size] = params[b.name].ravel()
    return th


# ------------------------------------------------------------------ stop_gradient
def sg_cell(with_stop=True):
    """h' = tanh(W [h; x; 1]) + 0.5 stop_gradient(h * h): with the stop, every
    derivative is that of the cell without the second term."""
    c = rg.Cell("sg" if with_stop else "no_sg")
    x, h = c.input("x", 2), c.state("h", 3)
    z = c.param("W", (3, 6)) @ rg.concat(h, x, rg.const(1.0))
    h_new = rg.tanh(z)
    if with_stop:
        h_new = h_new + 0.5 * rg.stop_gradient(h * h)
    c.update(h, h_new)
    c.output("y", c.param("V", (2, 3)) @ h_new)
    return c


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_stop_gradient_keeps_the_value_and_passes_no_derivative(backend):
    ks, ref = KernelSet(sg_cell(), backend), KernelSet(sg_cell(False), "numpy")
    rng = np.random.default_rng(0)
    th, s, x = ks.random_point(rng)
    out, v = ks.step(th, s, x)
    out0, v0 = ref.step(th, s, x)
    np.testing.assert_allclose(out[:3], out0[:3] + 0.5 * s * s, rtol=1e-14)
    R = ks.p.n_rec
    ds, dr = rng.standard_normal(3), rng.standard_normal(R)
    for kernel, thd in (("jvp_state", np.zeros(R)), ("jvp_dense", dr)):
        np.testing.assert_allclose(ks.jvp(kernel, th, v, thd, ds),
                                   ref.jvp(kernel, th, v0, thd, ds), rtol=1e-13, atol=1e-15)
    # the vjp: cotangents of (h_new, y) pulled back to the recurrent θ, h and x (V's
    # gradient reads h_new's value, which the stopped term changes)
    bars = []
    for k, vv in ((ks, v), (ref, v0)):
        vb = np.zeros(k.p.n_values)
        for o, n in k.rows:
            vb[o:o + n] = 1.0 + np.arange(n)
        thb = np.zeros(k.p.n_params)
        k.mod.vjp_all(th, vv, vb, thb)
        bars.append(np.concatenate([thb[:R], vb[:3 + 2]]))
    np.testing.assert_allclose(bars[0], bars[1], rtol=1e-13, atol=1e-15)
    src = ks.path.read_text()
    assert "rg_stop_gradient(t7" in src       # the value, computed once in forward
    assert "t8_dot" not in src and "t7_dot" not in src   # no tangent reaches it


def test_the_analysis_sees_no_dependence_through_stop_gradient():
    c = rg.Cell("detached")
    x, h, m = c.input("x", 2), c.state("h", 3), c.state("m", 3)
    W = c.param("W", (3, 2))
    h_new = rg.tanh(W @ x) + rg.stop_gradient(h + m)     # values read h and m ...
    m_new = 0.5 * m + rg.stop_gradient(h) * h_new
    c.update(h, h_new)
    c.update(m, m_new)
    c.output("y", 1.0 * m_new)
    lay = Layout(c)
    D = sparsity.patterns(lay, lay.state_ids, lay.new_state).tocsr().toarray()
    # ... but ∂h'/∂(h, m) = 0 and ∂m'/∂h = 0: only m' = 0.5 m + ... depends on m
    np.testing.assert_array_equal(D, np.block([[np.zeros((3, 3)), np.zeros((3, 3))],
                                               [np.zeros((3, 3)), np.eye(3)]]))
    assert lay.nodes[lay.new_state[0]].id not in lay.live_from([lay.state_ids[0]])
    assert "stop_gradient" in rg.__all__ and rg.stop_gradient(sp.Symbol("s")).diff() == 0


# ---------------------------------------------------------------------- spike
SURROGATE_FORMULAS = {
    "triangle": lambda x, d: d * np.maximum(0.0, 1.0 - np.abs(x)),
    "fast_sigmoid": lambda x, d, slope=1.0: d / (1.0 + slope * np.abs(x)) ** 2,
    "arctan": lambda x, d, slope=math.pi: d / (1.0 + (slope * x) ** 2),
}


def spike_cell(**options):
    """h' = spike(h + W x): ∂h'/∂h is the surrogate's diagonal."""
    c = rg.Cell("spiking")
    x, h = c.input("x", 2), c.state("h", 7)
    h_new = rg.spike(h + c.param("W", (7, 2)) @ x, **options)
    c.update(h, h_new)
    c.output("y", 1.0 * h_new)
    return c


@pytest.mark.parametrize("surrogate, options", [
    ("triangle", {}), ("triangle", {"dampening": 1.0}),
    ("fast_sigmoid", {}), ("fast_sigmoid", {"slope": 4.0, "dampening": 0.5}),
    ("arctan", {}), ("arctan", {"slope": 2.0})])
def test_each_surrogate_derivative_is_its_formula(surrogate, options):
    ks = KernelSet(spike_cell(surrogate=surrogate, **options), "numpy")
    th = np.zeros(ks.p.n_params)
    th[ks.p.block_of(ks.cell.node("W").id).off:][:14] = 0.0
    s = np.array([-2.0, -0.7, -0.2, 0.0, 0.3, 0.9, 1.5])
    out, v = ks.step(th, s, np.zeros(2))
    np.testing.assert_array_equal(out[:7], (s > 0).astype(float))     # the step
    J = np.stack([ks.jvp("jvp_state", th, v, np.zeros(ks.p.n_rec), e)[:7]
                  for e in np.eye(7)], 1)
    d = options.get("dampening", 0.3)
    shape = {k: val for k, val in options.items() if k != "dampening"}
    np.testing.assert_allclose(J, np.diag(SURROGATE_FORMULAS[surrogate](s, d, **shape)),
                               rtol=1e-14, atol=1e-16)


def test_a_surrogate_is_not_the_derivative_of_its_value():
    """The step's own derivative is 0 away from 0; the surrogate is not: finite
    differences of the value cannot check it, and check_derivatives says so."""
    for name, sur in scalars.SURROGATES.items():
        assert sur.fn.surrogate and scalars.REGISTRY[f"spike_{name}"] is sur.fn
        assert sp.diff(sur.fn.expr, scalars.ARG[0]) != 0
        assert sp.diff(scalars.step(scalars.ARG[0]), scalars.ARG[0]) == 0
    assert not any(fn.surrogate for fn in scalars.REGISTRY.values()
                   if not fn.name.startswith("spike_"))
    with pytest.raises(rg.GraphError, match=r"node 'h_new' of cell 'spiking' applies "
                       r"spike_triangle, whose derivative is a surrogate"):
        check_derivatives(spike_cell())
    # the spike functions are reached through rg.spike only
    assert not hasattr(rg, "spike_triangle") and "spike" in rg.__all__


def test_bad_spike_options_get_one_line():
    h = rg.Cell("c").state("h", 2)
    with pytest.raises(rg.GraphError, match=r"^unknown spike surrogate 'sigmoid'; use one of "
                       r"arctan, fast_sigmoid, triangle, or register one with "
                       r"rg.register_surrogate$"):
        rg.spike(h, surrogate="sigmoid")
    with pytest.raises(rg.GraphError, match="surrogate 'triangle' has no parameter 'slope'; "
                       "its shape parameters: none"):
        rg.spike(h, slope=2.0)
    with pytest.raises(rg.GraphError, match="dampening must be a positive finite number"):
        rg.spike(h, dampening=-1.0)
    with pytest.raises(rg.GraphError, match="unknown spike surrogate 'boxcar'"):
        rg.cells.lif(2, 3, 2, surrogate="boxcar")


def test_a_user_surrogate_is_one_registration():
    sur = rg.register_surrogate("gauss", lambda x, d, width: d * rg.exp(-(x / width) ** 2),
                                width=0.5)
    try:
        assert sur.params == ("width",) and sur.defaults == {"width": 0.5}
        ks = KernelSet(spike_cell(surrogate="gauss", width=0.7), "numpy")
        th = np.zeros(ks.p.n_params)
        s = np.linspace(-1.5, 1.5, 7)
        _, v = ks.step(th, s, np.zeros(2))
        J = np.stack([ks.jvp("jvp_state", th, v, np.zeros(ks.p.n_rec), e)[:7]
                      for e in np.eye(7)], 1)
        np.testing.assert_allclose(J, np.diag(0.3 * np.exp(-(s / 0.7) ** 2)), rtol=1e-14)
        assert "def rg_spike_gauss(x, dampening, width):" in ks.path.read_text()
        with pytest.raises(rg.GraphError, match="surrogate 'gauss' is already registered"):
            rg.register_surrogate("gauss", lambda x, d: d)
    finally:
        scalars.unregister("spike_gauss")
    assert "gauss" not in scalars.SURROGATES and set(scalars.REGISTRY) == \
        scalars.BUILTIN_NAMES
    with pytest.raises(rg.GraphError, match=r"the derivative takes 1 argument\(s\); it must "
                       r"take \(x, dampening\)"):
        rg.register_surrogate("bad", lambda x: x)
    assert "bad" not in scalars.SURROGATES


# ------------------------------------------------------------------------- LRU
def gelu(y):
    return 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))


def complex_lru(P, xs, n, layers, encoder):
    """Orvieto et al.'s LRU in complex arithmetic, stacked as ``rg.cells.lru`` documents:
    states h (complex), the stream u, the readout V u + b."""
    hs = [np.zeros(n, complex) for _ in range(layers)]
    logits, states = [], []
    for x in xs:
        u = P["W_enc"] @ x + P["b_enc"] if encoder else x
        for k in range(layers):
            s = "" if layers == 1 else f"_l{k}"
            lam = np.exp(-np.exp(P["nu_log" + s]) + 1j * np.exp(P["theta_log" + s]))
            B = P["B_re" + s] + 1j * P["B_im" + s]
            C = P["C_re" + s] + 1j * P["C_im" + s]
            hs[k] = lam * hs[k] + np.exp(P["gamma_log" + s]) * (B @ u)
            y = (C @ hs[k]).real + P["D" + s] * u
            u = u + gelu(y)
        logits.append(P["V"] @ u + P["b"])
        states.append(np.concatenate([part for h in hs for part in (h.real, h.imag)]))
    return np.array(logits), np.array(states)


@pytest.mark.parametrize("layers, n_in", [(1, 3), (2, 3), (2, 4)])
def test_lru_forward_equals_a_complex_lru(layers, n_in):
    n, width, n_out, T = 5, 4, 2, 25
    cell = rg.cells.lru(n_in, n, n_out, layers=layers, width=width, r_min=0.5, r_max=0.99)
    ks = KernelSet(cell, "numpy")
    P = params_of(cell, seed=3)
    assert ("W_enc" in P) == (n_in != width)
    th = pack(ks, P)
    xs = np.random.default_rng(1).standard_normal((T, n_in))
    want_y, want_s = complex_lru(P, xs, n, layers, n_in != width)
    s = np.zeros(ks.p.n_state)
    for t in range(T):
        out, _ = ks.step(th, s, xs[t])
        s = out[:ks.p.n_state]
        np.testing.assert_allclose(s, want_s[t], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[ks.p.n_state:], want_y[t], rtol=0, atol=1e-12)


def test_lru_init_draws_the_ring_and_the_phase():
    r_min, r_max, max_phase, n = 0.4, 0.9, 1.2, 4000
    cell = rg.cells.lru(2, n, 2, width=3, r_min=r_min, r_max=r_max, max_phase=max_phase)
    P = params_of(cell, seed=0)
    modulus = np.exp(-np.exp(P["nu_log"]))
    phase = np.exp(P["theta_log"])
    assert r_min <= modulus.min() and modulus.max() <= r_max
    assert 0 <= phase.min() and phase.max() <= max_phase
    # uniform on the ring (in area): |λ|² ~ U(r_min², r_max²); phase ~ U(0, max_phase)
    r2 = (modulus ** 2 - r_min ** 2) / (r_max ** 2 - r_min ** 2)
    for sample in (r2, phase / max_phase):
        edf = np.sort(sample)
        assert np.max(np.abs(edf - (np.arange(n) + 0.5) / n)) < 0.03     # Kolmogorov
    np.testing.assert_allclose(np.exp(P["gamma_log"]), np.sqrt(1 - modulus ** 2),
                               rtol=1e-12)
    assert P["B_re"].std() == pytest.approx(np.sqrt(1 / 6), rel=0.05)   # 1/(2H), H = 3
    assert not np.allclose(params_of(cell, seed=1)["nu_log"], P["nu_log"])
    with pytest.raises(ValueError, match="lru: the ring needs 0 <= r_min < r_max <= 1"):
        rg.cells.lru(2, 3, 2, r_min=0.9, r_max=0.5)


def test_lru_params_drawn_alone_equal_the_whole_draw():
    """ν, θ and γ_log depend on the generator's seed and the layer, not on the
    generator's position: each drawn alone (or after other draws) is what init_params
    gives it, and γ_log belongs to the ν of its own layer."""
    cell = rg.cells.lru(3, 5, 2, layers=2, width=4, r_min=0.3, r_max=0.95, max_phase=3.0)
    P = rg.compile(cell, "rtrl", backend="numpy").init_params(11)
    for k in ("nu_log_l0", "theta_log_l0", "gamma_log_l0", "nu_log_l1", "gamma_log_l1"):
        rng = np.random.default_rng(11)
        np.testing.assert_array_equal(init_param(cell.node(k), rng), P[k])
        rng.standard_normal(100)                            # another position: the same
        np.testing.assert_array_equal(init_param(cell.node(k), rng), P[k])
    for s in ("_l0", "_l1"):
        modulus = np.exp(-np.exp(P["nu_log" + s]))
        np.testing.assert_allclose(np.exp(P["gamma_log" + s]), np.sqrt(1 - modulus ** 2),
                                   rtol=1e-12)
        assert 0.3 <= modulus.min() and modulus.max() <= 0.95
    assert not np.allclose(P["nu_log_l0"], P["nu_log_l1"])    # a ring per layer
    assert not np.allclose(P["theta_log_l0"], P["theta_log_l1"])


@pytest.mark.parametrize("layers, n_in", [(1, 4), (2, 3)])
def test_exported_lru_draws_the_same_params(tmp_path, layers, n_in):
    """The exported module carries the LRU's init schemes: its init_params(seed) is
    bit-identical to est.init_params(seed), every parameter."""
    import importlib.util
    cell = rg.cells.lru(n_in, 5, 2, layers=layers, width=4, r_min=0.5, r_max=0.99,
                        max_phase=np.pi)
    est = rg.compile(cell, "rtrl", backend="numpy")
    path = est.export(tmp_path / f"lru{layers}.py")
    assert "cannot draw" not in path.read_text()
    spec = importlib.util.spec_from_file_location(f"exported_lru{layers}", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    for seed in (0, 9):
        want, got = est.init_params(seed), m.init_params(seed)
        assert sorted(got) == sorted(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_init_options_are_checked():
    c = rg.Cell("opts")
    ring = dict(r_min=0.0, r_max=1.0, max_phase=2.0, ring="a")
    with pytest.raises(rg.GraphError, match="init 'lru_nu' takes the options r_min, "
                                            "r_max, max_phase, ring, got none"):
        c.param("p1", 3, init="lru_nu")
    with pytest.raises(rg.GraphError, match="init 'normal' takes no options"):
        c.param("p2", 3, init="normal", r_min=0.1)
    with pytest.raises(rg.GraphError, match="the ring needs 0 <= r_min < r_max <= 1"):
        c.param("p3", 3, init="lru_gamma", **{**ring, "r_min": 1.0})
    with pytest.raises(rg.GraphError, match="ring must be a non-empty string"):
        c.param("p4", 3, init="lru_theta", **{**ring, "ring": 3})
    nu = c.param("p5", 3, init="lru_nu", **ring)
    with pytest.raises(rg.RGraphError, match="draws from the seed of a numpy Generator"):
        init_param(nu.node, np.random.RandomState(0))


# ------------------------------------------------------------- exact gradients
def smooth_spike(x, surrogate="triangle", dampening=0.3):
    """A smooth stand-in for the spike: finite differences can check what flows
    through it (the spike's own derivative, a surrogate, is checked above)."""
    return rg.sigmoid(4.0 * x)


NEW_CELLS = {
    "indrnn": lambda: rg.cells.indrnn(3, 4, 2),
    "indrnn_x2": lambda: rg.cells.indrnn(3, 4, 2, layers=2),
    "lru": lambda: rg.cells.lru(3, 3, 2, width=4),
    "lru_x2": lambda: rg.cells.lru(3, 3, 2, layers=2, r_min=0.5, r_max=0.95),
    "lif": lambda: rg.cells.lif(3, 4, 2),
    "alif_x2": lambda: rg.cells.alif(3, 4, 2, layers=2, beta=0.5),
}


def directional_check(cell, estimator, T=8, eps=1e-6):
    """Σ_t ∂l_t/∂θ along a random direction against the central difference of Σ_t l_t."""
    est = rg.compile(cell, estimator, backend="numpy", loss="mse")
    rng = np.random.default_rng(2)
    p = est.init_params(1)
    p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in p.items()}
    xs, ys = rng.standard_normal((T, 3)), rng.standard_normal((T, 2))
    g = est.total_gradient(p, xs, ys)
    d = {k: rng.standard_normal(v.shape) for k, v in p.items()}
    shift = lambda s: {k: p[k] + s * d[k] for k in p}          # noqa: E731
    fd = T * (est.loss(shift(eps), xs, ys) - est.loss(shift(-eps), xs, ys)) / (2 * eps)
    got = sum(float(np.sum(g[k] * d[k])) for k in p)
    return got, fd, g


@pytest.mark.parametrize("name", sorted(NEW_CELLS))
def test_rtrl_and_bptt_equal_finite_differences(name, monkeypatch):
    spiking = name.startswith(("lif", "alif"))
    if spiking:     # the same cell through its surrogate: RTRL and BPTT agree
        cell = NEW_CELLS[name]()
        rt = directional_check(cell, "rtrl")[2]
        bp = directional_check(cell, "bptt")[2]
        for k in rt:
            np.testing.assert_allclose(rt[k], bp[k], rtol=1e-10, atol=1e-12)
        # finite differences see every path: the spike made smooth, the reset's
        # stop-gradient lifted (stop_gradient is checked on its own above)
        monkeypatch.setattr(cells, "spike", smooth_spike)
        monkeypatch.setattr(cells, "stop_gradient", lambda z: 1.0 * z)
    cell = NEW_CELLS[name]()
    assert ("sigmoid" in str(cell)) == spiking
    for estimator in ("rtrl", "bptt"):
        got, fd, _ = directional_check(cell, estimator)
        assert got == pytest.approx(fd, rel=1e-6, abs=1e-8), (name, estimator)


# --------------------------------------------------------------------- e-prop
def bellec_eprop(P, xs, ys, alpha, v_th, gamma_pd, rho=0.0, beta=0.0, B=None):
    """e-prop as Bellec et al. (2020) write it (Methods), for LIF
    (β = 0) and ALIF neurons with a linear readout y^t = V z^t + b and loss
    ½|y^t - y*^t|²; in the paper's indices:

        v^t = α v^{t-1} + W_rec z^{t-1} + W_in x^t - v_th z^{t-1}
        a^t = ρ a^{t-1} + z^{t-1},   A^t = v_th + β a^t,   z^t = H(v^t - A^t)
        ψ^t = (γ_pd / v_th) max(0, 1 - |(v^t - A^t) / v_th|)
        ε^v_t = α ε^v_{t-1} + (presynaptic z_i^{t-1}, or x_i^t)
        ε^a_t = ψ^{t-1} ε^v_{t-1} + (ρ - ψ^{t-1} β) ε^a_{t-1}
        e^t = ψ^t (ε^v_t - β ε^a_t)     (LIF: ψ^t z̄_i^{t-1})
        L^t = B (y^t - y*^t),  B = Vᵀ (symmetric) or fixed random
        ∂E/∂W ≈ Σ_t L^t e^t;  the readout's gradient is exact.

    Returns the summed gradients and the number of spikes."""
    W_in, W_rec, V, b = P["W_in"], P["W_rec"], P["V"], P["b"]
    n = W_rec.shape[0]
    B = V.T if B is None else B
    v, a, z, psi = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    eps_v = {"W_rec": np.zeros(n), "W_in": np.zeros(W_in.shape[1])}   # presynaptic
    eps_a = {"W_rec": np.zeros_like(W_rec), "W_in": np.zeros_like(W_in)}
    g = {k: np.zeros_like(val) for k, val in P.items()}
    spikes = 0
    for x, y_star in zip(xs, ys, strict=True):
        pre = {"W_rec": z, "W_in": x}
        for k in eps_v:
            eps_a[k] = psi[:, None] * eps_v[k][None, :] + \
                (rho - psi[:, None] * beta) * eps_a[k]
            eps_v[k] = alpha * eps_v[k] + pre[k]
        v = alpha * v + W_rec @ z + W_in @ x - v_th * z
        a = rho * a + z
        A = v_th + beta * a
        z = (v - A > 0).astype(float)
        psi = gamma_pd / v_th * np.maximum(0.0, 1.0 - np.abs((v - A) / v_th))
        spikes += int(z.sum())
        err = V @ z + b - y_star
        L = B @ err
        for k in eps_v:
            g[k] += L[:, None] * psi[:, None] * (eps_v[k][None, :] - beta * eps_a[k])
        g["V"] += np.outer(err, z)
        g["b"] += err
    return g, spikes


SPIKING = {
    "lif": (lambda: rg.cells.lif(4, 6, 3, tau_m=10.0, v_th=0.8, dampening=0.3),
            {"alpha": math.exp(-1 / 10), "v_th": 0.8, "gamma_pd": 0.3}),
    "alif": (lambda: rg.cells.alif(4, 6, 3, tau_m=10.0, tau_a=50.0, beta=0.3, v_th=0.8),
             {"alpha": math.exp(-1 / 10), "v_th": 0.8, "gamma_pd": 0.3,
              "rho": math.exp(-1 / 50), "beta": 0.3}),
}


@pytest.mark.parametrize("feedback", ["symmetric", "random"])
@pytest.mark.parametrize("name", sorted(SPIKING))
def test_eprop_on_spiking_cells_is_bellecs_eprop(name, feedback):
    make, constants = SPIKING[name]
    cell = make()
    est = rg.compile(cell, "e-prop", backend="numpy", loss="mse", feedback=feedback,
                     feedback_seed=5)
    rng = np.random.default_rng(4)
    P = est.init_params(0)
    P["W_in"] = 2.5 * P["W_in"]
    xs, ys = rng.standard_normal((200, 4)), rng.standard_normal((200, 3))
    B = None
    if feedback == "random":    # rgraph's B on the spikes' rows (zero on v's and a's)
        lay = est.layout
        rows = {st.name: lay.state_off[st.id] for st in lay.states}
        full = est.module.FEEDBACK
        B = full[rows["z"]:rows["z"] + 6]
        assert np.all(full[rows["v"]:rows["v"] + 6] == 0) and np.any(B != 0)
        if "a" in rows:
            assert np.all(full[rows["a"]:rows["a"] + 6] == 0)
    want, spikes = bellec_eprop(P, xs, ys, B=B, **constants)
    assert 50 < spikes < 200 * 6 - 50           # neurons spike, and not all the time
    got = est.total_gradient(P, xs, ys)
    for k in want:
        scale = max(np.max(np.abs(want[k])), 1.0)
        np.testing.assert_allclose(got[k] / scale, want[k] / scale, rtol=0, atol=1e-10)
    assert np.max(np.abs(want["W_rec"])) > 1e-3      # a learning signal got through
    if name == "alif":         # the adaptation trace matters: β = 0 would differ
        without, _ = bellec_eprop(P, xs, ys, B=B, **{**constants, "beta": 0.0})
        assert not np.allclose(without["W_rec"], want["W_rec"])


# ------------------------------------------------------------- names and numba
def test_new_cells_are_built_in_everywhere():
    from rgraph.run import BUILTIN, load_cell
    for name, fn in (("indrnn", rg.cells.indrnn), ("lru", rg.cells.lru),
                     ("lif", rg.cells.lif), ("alif", rg.cells.alif)):
        assert rg.cells.CELLS[name] is fn and name in BUILTIN
        one, two = load_cell(name, 3, 4, 2), load_cell(name, 3, 4, 2, layers=2)
        assert one.name == name and two.name == f"{name}_x2"
        assert {"W_in_l1", "W_rec_l1"} <= {n.name for n in two.nodes} \
            if name in ("lif", "alif") else True
    u = params_of(rg.cells.indrnn(3, 50, 2))["u"]
    assert -1 <= u.min() < -0.5 and 0.5 < u.max() <= 1        # U(-1, 1)
    with pytest.raises(ValueError, match="lif: layers must be a positive integer, got 0"):
        rg.cells.lif(3, 4, 2, layers=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["indrnn", "lru", "lif", "alif"])
def test_numba_trains_each_new_cell(name):
    """Each new cell compiles under numba, gives numpy's gradient and trains."""
    cell = rg.cells.CELLS[name](3, 4, 2)
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((40, 3)), rng.standard_normal((40, 2))
    est = rg.compile(cell, "rtrl", loss="mse")
    ref = rg.compile(cell, "rtrl", loss="mse", backend="numpy")
    p = est.init_params(0)
    g, g_ref = est.total_gradient(p, xs, ys), ref.total_gradient(p, xs, ys)
    for k in g:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-9, atol=1e-12)
    result = est.train(p, xs, ys, optimizer=rg.Adam(1e-2))
    assert np.all(np.isfinite(result.losses))
