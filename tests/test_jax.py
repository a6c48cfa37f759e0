"""rg.from_jax and rg.to_jax (issue 26): cells written by hand in JAX, imported, against
JAX itself (the forward to 1e-14, rtrl's and bptt's total gradients against jax.grad
of the unrolled loss to 1e-10, in float64), KF-RTRL's verdict against the built-ins',
to_jax then from_jax giving every built-in cell's generated module back (the LRU, IndRNN,
LIF and ALIF too), lax.stop_gradient as rg.stop_gradient, rg.spike as a custom_jvp with
its surrogate (and read back), the warning when a custom derivative is dropped, the
refusals, random cells from the supported primitives, and `rgraph train file.py:step`."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="rg.from_jax / rg.to_jax need JAX: "
                                        "pip install -e '.[jax]'")
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rgraph as rg  # noqa: E402
from rgraph.checks import KernelSet  # noqa: E402
from rgraph.graph import init_param  # noqa: E402
from rgraph.jaxio import jax_params  # noqa: E402

from conftest import rgraph_cli  # noqa: E402

N_IN, N, N_OUT, T = 3, 4, 3, 7


@pytest.fixture(autouse=True)
def x64():
    """float64 in JAX for every test here (and only here)."""
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------- cells written by hand in JAX
def tanh_rnn(p, h, x):
    h_new = jnp.tanh(p["W"] @ jnp.concatenate([h, x, jnp.ones(1)]))
    return h_new, p["V"] @ h_new + p["b"]


def lstm(p, s, x):
    """PyTorch's nn.LSTM (gates i, f, g, o) and a linear readout."""
    gates = p["weight_ih"] @ x + p["bias_ih"] + p["weight_hh"] @ s["h"] + p["bias_hh"]
    i, f, g, o = jnp.split(gates, 4)
    c_new = jax.nn.sigmoid(f) * s["c"] + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
    return {"h": h_new, "c": c_new}, p["V"] @ h_new + p["b"]


def gru(p, h, x):
    """PyTorch's nn.GRU: r multiplies W_hn h + b_hn after the matrix."""
    gi = p["weight_ih"] @ x + p["bias_ih"]
    gh = p["weight_hh"] @ h + p["bias_hh"]
    i_r, i_z, i_n = jnp.split(gi, 3)
    h_r, h_z, h_n = jnp.split(gh, 3)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    h_new = (1 - z) * n + z * h
    return h_new, p["V"] @ h_new + p["b"]


def rhn(p, s, x):
    """A recurrent highway network of depth 1 with a coupled carry gate."""
    pre, q = jnp.split(p["W"] @ jnp.concatenate([s, x]) + p["b_W"], 2)
    t = jax.nn.sigmoid(q)
    s_new = jnp.tanh(pre) * t + s * (1 - t)
    return s_new, p["V"] @ s_new + p["b"]


def mgu(p, h, x):
    """Zhou et al.'s minimal gated unit, the input matrices Flax's way (x @ U)."""
    f = jax.nn.sigmoid(x @ p["U_f"] + p["W_f"] @ h + p["b_f"])
    h_cand = jnp.tanh(x @ p["U_h"] + p["W_h"] @ (f * h) + p["b_h"])
    h_new = (1 - f) * h + f * h_cand
    return h_new, p["V"] @ h_new + p["b"]


def lstm2(p, s, x):
    """Two stacked PyTorch LSTM layers (layer 1 reads layer 0's new h)."""
    new, below = {}, x
    for k in range(2):
        with jax.named_scope(f"layer{k}"):
            gates = (p[f"weight_ih_l{k}"] @ below + p[f"bias_ih_l{k}"]
                     + p[f"weight_hh_l{k}"] @ s[f"h_l{k}"] + p[f"bias_hh_l{k}"])
            i, f, g, o = jnp.split(gates, 4)
            c_new = jax.nn.sigmoid(f) * s[f"c_l{k}"] + jax.nn.sigmoid(i) * jnp.tanh(g)
            h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        new[f"h_l{k}"], new[f"c_l{k}"], below = h_new, c_new, h_new
    return new, p["V"] @ below + p["b"]


def lru(p, s, x):
    """One LRU layer (Orvieto et al. 2023) in real arithmetic, as rg.cells.lru writes
    it: λ = a + i b from ν and θ, h' = λ h + γ B x as pairs (h_re, h_im), y = Re(C h') +
    D x, the stream x + GELU(y), a linear readout."""
    modulus = jnp.exp(-jnp.exp(p["nu_log"]))
    phase = jnp.exp(p["theta_log"])
    a, b = modulus * jnp.cos(phase), modulus * jnp.sin(phase)
    gamma = jnp.exp(p["gamma_log"])
    h_re = a * s["h_re"] - b * s["h_im"] + gamma * (p["B_re"] @ x)
    h_im = a * s["h_im"] + b * s["h_re"] + gamma * (p["B_im"] @ x)
    y = p["C_re"] @ h_re - p["C_im"] @ h_im + p["D"] * x
    u = x + jax.nn.gelu(y, approximate=True)
    return {"h_re": h_re, "h_im": h_im}, p["V"] @ u + p["b"]


def lru_complex(p, s, x):
    """The same LRU in complex arithmetic (the reference, not imported)."""
    lam = jnp.exp(-jnp.exp(p["nu_log"]) + 1j * jnp.exp(p["theta_log"]))
    B, C = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"]
    h = lam * (s["h_re"] + 1j * s["h_im"]) + jnp.exp(p["gamma_log"]) * (B @ x)
    y = (C @ h).real + p["D"] * x
    return {"h_re": h.real, "h_im": h.imag}, \
        p["V"] @ (x + jax.nn.gelu(y, approximate=True)) + p["b"]


@jax.custom_jvp
def spike_triangle(x, dampening):
    """A spike: the step forward, Bellec et al.'s triangle as its derivative. Named
    spike_triangle, from_jax reads it as rg.spike(x, "triangle", dampening)."""
    return jnp.where(x > 0.0, 1.0, 0.0)


@spike_triangle.defjvp
def _spike_triangle_jvp(primals, tangents):
    x, dampening = primals
    return spike_triangle(x, dampening), \
        dampening * jnp.maximum(0.0, 1.0 - jnp.abs(x)) * tangents[0]


ALPHA = float(np.exp(-1 / 20))


def lif(p, s, x):
    """Bellec et al.'s LIF neurons: reset by subtraction held constant for the gradient
    (lax.stop_gradient), a spike with the triangle surrogate, a readout of the spikes."""
    v_new = ALPHA * s["v"] + p["W_rec"] @ s["z"] + p["W_in"] @ x - lax.stop_gradient(s["z"])
    z_new = spike_triangle(v_new - 1.0, 0.3)
    return {"v": v_new, "z": z_new}, p["V"] @ z_new + p["b"]


def _normal(rng, *shape, scale=0.5):
    return scale * rng.standard_normal(shape)


def example(name, seed=0):
    """(step, params, state, x) of a hand-written cell, at random values."""
    r = np.random.default_rng(seed)
    ro = {"V": _normal(r, N_OUT, N), "b": _normal(r, N_OUT)}
    torch = lambda G, n_in, sfx="": {  # noqa: E731
        "weight_ih" + sfx: _normal(r, G * N, n_in), "weight_hh" + sfx: _normal(r, G * N, N),
        "bias_ih" + sfx: _normal(r, G * N), "bias_hh" + sfx: _normal(r, G * N)}
    x = _normal(r, N_IN, scale=1.0)
    if name == "tanh":
        return tanh_rnn, {"W": _normal(r, N, N + N_IN + 1), **ro}, _normal(r, N), x
    if name == "lstm":
        return lstm, {**torch(4, N_IN), **ro}, {"h": _normal(r, N), "c": _normal(r, N)}, x
    if name == "gru":
        return gru, {**torch(3, N_IN), **ro}, _normal(r, N), x
    if name == "rhn":
        return rhn, {"W": _normal(r, 2 * N, N + N_IN), "b_W": _normal(r, 2 * N), **ro}, \
            _normal(r, N), x
    if name == "mgu":
        return mgu, {"U_f": _normal(r, N_IN, N), "W_f": _normal(r, N, N),
                     "b_f": _normal(r, N), "U_h": _normal(r, N_IN, N),
                     "W_h": _normal(r, N, N), "b_h": _normal(r, N), **ro}, _normal(r, N), x
    if name == "lstm2":
        return lstm2, {**torch(4, N_IN, "_l0"), **torch(4, N, "_l1"), **ro}, \
            {k: _normal(r, N) for k in ("h_l0", "c_l0", "h_l1", "c_l1")}, x
    if name == "lru":
        return lru, {"nu_log": _normal(r, N), "theta_log": _normal(r, N),
                     "gamma_log": _normal(r, N, scale=0.1), "B_re": _normal(r, N, N_IN),
                     "B_im": _normal(r, N, N_IN), "C_re": _normal(r, N_IN, N),
                     "C_im": _normal(r, N_IN, N), "D": _normal(r, N_IN), **ro,
                     "V": _normal(r, N_OUT, N_IN)}, \
            {"h_re": _normal(r, N), "h_im": _normal(r, N)}, x
    if name == "lif":
        return lif, {"W_in": _normal(r, N, N_IN, scale=1.0), "W_rec": _normal(r, N, N),
                     **ro}, {"v": _normal(r, N), "z": (r.uniform(size=N) < 0.5) * 1.0}, x
    raise KeyError(name)


HAND = ("tanh", "lstm", "gru", "rhn", "mgu", "lstm2", "lru", "lif")
# a step written another way, the reference of the forward pass and of jax.grad
REFERENCE = {"lru": lru_complex}


def rgraph_step(cell, params, state, x):
    """(new state ++ outputs) of one step through the cell's generated numpy kernels."""
    ks = KernelSet(cell, "numpy")
    th = np.zeros(ks.p.n_params)
    P = jax_params(cell, params)
    for b in ks.p.param_blocks:
        th[b.off:b.off + b.size] = P[b.name].ravel()
    st = state if isinstance(state, dict) else {"h": state}
    s = np.concatenate([st[nd.name] for nd in ks.p.states])
    return ks.step(th, s, np.asarray(x))[0]


def jax_step(step, params, state, x, cell):
    """The same vector from JAX: the new states in the cell's state order, the outputs."""
    new, y = step(params, state, x)
    new = new if isinstance(new, dict) else {"h": new}
    states = [nd.name for nd in cell.nodes if nd.kind == "state"]
    return np.concatenate([np.asarray(new[k]) for k in states] + [np.asarray(y)])


def zero(state):
    return {k: np.zeros_like(v) for k, v in state.items()} if isinstance(state, dict) \
        else np.zeros_like(state)


def data(seed=1, T=T):
    r = np.random.default_rng(seed)
    return r.standard_normal((T, N_IN)), r.integers(0, N_OUT, T)


def jax_total_gradient(step, params, state, xs, ys):
    """jax.grad of the summed softmax cross-entropy, unrolled with lax.scan from zero."""
    def loss(p):
        def body(s, xy):
            s_new, y = step(p, s, xy[0])
            return s_new, -jax.nn.log_softmax(y)[xy[1]]
        return lax.scan(body, zero(state), (xs, ys))[1].sum()
    return {k: np.asarray(v) for k, v in jax.grad(loss)(params).items()}


# ------------------------------------------------------------------------- import
@pytest.mark.parametrize("name", HAND)
def test_forward_equals_jax(name):
    step, p, s, x = example(name)
    cell = rg.from_jax(step, p, s, x)
    got = rgraph_step(cell, p, s, x)
    want = jax_step(step, p, s, x, cell)
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    if name in REFERENCE:
        want = jax_step(REFERENCE[name], p, s, x, cell)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("estimator", ["rtrl", "bptt"])
@pytest.mark.parametrize("name", HAND)
def test_total_gradient_equals_jax_grad(name, estimator):
    step, p, s, x = example(name)
    cell = rg.from_jax(step, p, s, x)
    xs, ys = data()
    est = rg.compile(cell, estimator, backend="numpy")
    got = est.total_gradient(jax_params(cell, p), xs, ys)
    want = jax_params(cell, jax_total_gradient(REFERENCE.get(name, step), p, s, xs, ys))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-10, err_msg=k)


def _verdict(cell):
    k = rg.analyze(cell).kronecker
    return k.ok, [(g.dim_z, g.dim_input, g.bias, [len(t) for t in g.terms])
                  for g in k.groups]


@pytest.mark.parametrize("name,builtin", [
    ("lstm", lambda: rg.cells.lstm(N_IN, N, N_OUT, form="pytorch")),
    ("gru", lambda: rg.cells.gru(N_IN, N, N_OUT, form="pytorch")),
    ("lstm2", lambda: rg.cells.lstm(N_IN, N, N_OUT, form="pytorch", layers=2))])
def test_kf_rtrl_verdict_equals_the_builtin(name, builtin):
    step, p, s, x = example(name)
    imported = _verdict(rg.from_jax(step, p, s, x))
    assert imported == _verdict(builtin())
    assert imported[0] == (name != "lstm2")   # layer 1 reads layer 0's θ-dependent h
    if name == "gru":
        assert len(imported[1]) == 2        # a Kronecker sum of two factors


def test_mgu_is_refused_by_kf_rtrl_as_cho_gru_is():
    step, p, s, x = example("mgu")
    cell = rg.from_jax(step, p, s, x)
    assert not rg.analyze(cell).kronecker.ok
    assert not rg.analyze(rg.cells.gru(N_IN, N, N_OUT)).kronecker.ok
    with pytest.raises(rg.NotApplicable):
        rg.compile(cell, "kf-rtrl", backend="numpy")


def test_names_come_from_the_source_and_the_scopes():
    step, p, s, x = example("lstm")
    names = {nd.name for nd in rg.from_jax(step, p, s, x).nodes}
    assert {"gates", "i", "f", "g", "o", "c_new", "h_new", "logits"} <= names
    step, p, s, x = example("gru")
    cell = rg.from_jax(step, p, s, x)
    assert cell.name == "gru"
    assert {"gi", "gh", "i_r", "h_n", "r", "z", "n", "h_new"} <= {nd.name for nd in cell.nodes}

    def scoped(p, h, x):
        with jax.named_scope("drive"):
            u = p["W"] @ h + x
        return jnp.tanh(u), p["V"] @ h

    cell = rg.from_jax(scoped, {"W": np.eye(3), "V": np.ones((2, 3))}, np.ones(3),
                       np.ones(3), name="scoped")
    assert cell.node("drive").expr_src == "{0} + {1}"


def test_vector_matrix_products_store_the_matrix_transposed():
    step, p, s, x = example("mgu")
    cell = rg.from_jax(step, p, s, x)
    assert cell.node("U_f").shape == (N, N_IN) and cell.node("W_f").shape == (N, N)
    P = jax_params(cell, p)
    np.testing.assert_array_equal(P["U_f"], p["U_f"].T)
    back = rg.jaxio.jax_grads(cell, P, like=p)          # and back to the JAX shapes
    assert all(np.array_equal(back[k], p[k]) for k in p)
    np.testing.assert_array_equal(rg.compile(cell, "rtrl", backend="numpy")
                                  .init_params(3)["U_f"], p["U_f"].T)   # init: the example


def test_params_are_initialized_with_the_example_at_every_seed():
    step, p, s, x = example("lstm")
    est = rg.compile(rg.from_jax(step, p, s, x), "rtrl", backend="numpy")
    for seed in (0, 5):
        got = est.init_params(seed)
        for k in p:
            np.testing.assert_array_equal(got[k], p[k])


def test_constants_scalars_jits_and_custom_derivatives():
    """Captured arrays, literals, scalar parameters, jitted elementwise functions (one
    pointwise node each), custom_jvp / custom_vjp by their primal, jnp.where, clip,
    maximum, relu, softplus, log1p, integer and constant powers."""
    mask = np.array([1.0, 0.5, 0.0, 2.0])

    @jax.custom_vjp
    def odd(u):
        return jnp.sin(u) + u ** 3

    odd.defvjp(lambda u: (odd(u), u), lambda u, g: (g * (jnp.cos(u) + 3 * u ** 2),))

    @jax.jit
    def gate(a, b):
        return jax.nn.sigmoid(a) * jnp.tanh(b) + 0.5 * a

    def step(p, h, x):
        u = p["W"] @ h + p["U"] @ x + mask * p["k"]
        a = jnp.where(u > 0.1, u, 0.2 * u) + jnp.clip(u, -0.5, 0.5) + jax.nn.relu(-u)
        b = jnp.maximum(u, -0.3) - jnp.minimum(u, 0.0) + jax.nn.softplus(u)
        c = jnp.log1p(u ** 2) + jnp.abs(u) ** 1.5 + odd(u) / (2.0 + jnp.cos(u))
        h_new = jnp.tanh(gate(a, b) + c - jnp.sign(u) * 0.1 + x[0] * jnp.exp(-u ** 2))
        return h_new, p["V"] @ h_new

    r = np.random.default_rng(2)
    p = {"W": _normal(r, 4, 4), "U": _normal(r, 4, N_IN), "k": np.float64(0.7),
         "V": _normal(r, N_OUT, 4)}
    h, x = _normal(r, 4), _normal(r, N_IN)
    cell = rg.from_jax(step, p, h, x)
    assert cell.node("k").shape == (1,)
    gates = [nd for nd in cell.nodes if nd.kind == "op" and nd.op.label == "gate"]
    assert len(gates) == 1 and gates[0].expr_src == "gate({0}, {1})"
    labels = {nd.op.label for nd in cell.nodes if nd.kind == "op"}
    assert {"where", "clip", "relu", "softplus", "log1p", "pow"} <= labels
    np.testing.assert_allclose(rgraph_step(cell, p, h, x), jax_step(step, p, h, x, cell),
                               rtol=1e-13, atol=1e-14)
    xs, ys = data(3)
    got = rg.compile(cell, "rtrl", backend="numpy").total_gradient(jax_params(cell, p),
                                                                   xs, ys)
    want = jax_params(cell, jax_total_gradient(step, p, h, xs, ys))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-10, err_msg=k)


def test_stop_gradient_is_rg_stop_gradient(monkeypatch):
    """lax.stop_gradient becomes rg.stop_gradient (the value, no derivative): the
    gradient equals jax.grad's; of a constant it is the constant."""
    def step(p, h, x):
        u = p["W"] @ h + p["U"] @ x
        h_new = jnp.tanh(u - 0.5 * lax.stop_gradient(jnp.tanh(u) * h)) \
            + lax.stop_gradient(jnp.full(N, 0.1))
        return h_new, p["V"] @ h_new

    r = np.random.default_rng(5)
    p = {"W": _normal(r, N, N), "U": _normal(r, N, N_IN), "V": _normal(r, N_OUT, N)}
    h, x = _normal(r, N), _normal(r, N_IN)
    cell = rg.from_jax(step, p, h, x)
    assert [nd.op.label for nd in cell.nodes if nd.kind == "op"].count("stop_gradient") == 1
    np.testing.assert_allclose(rgraph_step(cell, p, h, x), jax_step(step, p, h, x, cell),
                               rtol=1e-14, atol=1e-14)
    xs, ys = data(6)
    got = rg.compile(cell, "rtrl", backend="numpy").total_gradient(jax_params(cell, p),
                                                                   xs, ys)
    want = jax_total_gradient(step, p, h, xs, ys)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)
    # without the stop, the gradient differs (so the comparison above can fail)
    monkeypatch.setattr(lax, "stop_gradient", lambda a: a)
    plain = jax_total_gradient(step, p, h, xs, ys)
    assert not np.allclose(plain["W"], want["W"], rtol=1e-3)


def test_a_custom_derivative_of_a_step_is_dropped_with_one_warning():
    """A custom_jvp whose primal is a step is read by its primal (derivative 0) with one
    warning naming it; one named spike_triangle whose jvp is not the triangle is not
    taken for a spike; jax.nn.relu (a custom_jvp, primal max(x, 0)) does not warn."""
    @jax.custom_jvp
    def fire(x):
        return (x > 0.0).astype(x.dtype)

    fire.defjvp(lambda p, t: (fire(p[0]), 0.3 * jnp.maximum(0.0, 1 - jnp.abs(p[0])) * t[0]))

    @jax.custom_jvp
    def spike_triangle(x, dampening):       # the name, but a fast-sigmoid derivative
        return jnp.where(x > 0.0, 1.0, 0.0)

    spike_triangle.defjvp(lambda p, t: (spike_triangle(*p),
                                        p[1] / (1 + jnp.abs(p[0])) ** 2 * t[0]))

    def step(p, h, x):
        u = p["W"] @ h + x
        h_new = jnp.tanh(u) + fire(u - 0.5) + spike_triangle(u, 0.3) + jax.nn.relu(u)
        return h_new, p["V"] @ h_new

    with pytest.warns(UserWarning) as caught:
        cell = rg.from_jax(step, W3, np.ones(3), np.ones(3))
    msgs = [str(w.message) for w in caught if "custom derivative" in str(w.message)]
    assert len(msgs) == 1
    assert "fire at " in msgs[0] and "spike_triangle at " in msgs[0]
    assert "test_jax.py:" in msgs[0] and "custom derivative is dropped" in msgs[0]
    labels = {nd.op.label for nd in cell.nodes if nd.kind == "op"}
    assert not any(lb.startswith("spike_") for lb in labels) and "relu" in labels

    def relu_only(p, h, x):
        h_new = jax.nn.relu(p["W"] @ h + x)
        return h_new, p["V"] @ h_new

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rg.from_jax(relu_only, W3, np.ones(3), np.ones(3))


# ------------------------------------------------------------------------- to_jax
ROUND_TRIP = {
    "tanh": lambda: rg.cells.tanh_rnn(3, 4, 2),
    "rnn_pytorch": lambda: rg.cells.tanh_rnn(3, 4, 2, form="pytorch"),
    "tanh_x2": lambda: rg.cells.tanh_rnn(3, 4, 2, layers=2),
    "lstm": lambda: rg.cells.lstm(3, 4, 2),
    "lstm_pytorch": lambda: rg.cells.lstm(3, 4, 2, form="pytorch"),
    "lstm_x2": lambda: rg.cells.lstm(3, 4, 2, layers=2),
    "lstm_pytorch_x2": lambda: rg.cells.lstm(3, 4, 2, form="pytorch", layers=2),
    "gru": lambda: rg.cells.gru(3, 4, 2),
    "gru_pytorch": lambda: rg.cells.gru(3, 4, 2, form="pytorch"),
    "gru_x2": lambda: rg.cells.gru(3, 4, 2, layers=2),
    "rhn": lambda: rg.cells.rhn(3, 4, 2),
    "rhn_2sigmoid": lambda: rg.cells.rhn(3, 4, 2, nonlinearity="2sigmoid-1"),
    "leaky": lambda: rg.cells.leaky_rnn(3, 4, 2, alpha=0.3),
    "influence": lambda: rg.cells.influence_balancing(5, 3),
    "indrnn": lambda: rg.cells.indrnn(3, 4, 2),
    "indrnn_x2": lambda: rg.cells.indrnn(3, 4, 2, layers=2),
    "lru": lambda: rg.cells.lru(3, 4, 2, width=3),
    "lru_x2": lambda: rg.cells.lru(3, 4, 2, layers=2, width=5, r_min=0.5),
    "lif": lambda: rg.cells.lif(3, 4, 2),
    "lif_fast_sigmoid": lambda: rg.cells.lif(3, 4, 2, surrogate="fast_sigmoid", v_th=0.8),
    "lif_arctan": lambda: rg.cells.lif(3, 4, 2, surrogate="arctan", dampening=0.5),
    "alif": lambda: rg.cells.alif(3, 4, 2),
    "alif_x2": lambda: rg.cells.alif(3, 4, 2, layers=2),
}


def cell_example(cell, seed=0):
    """(params, state, x) for a cell, in its node order."""
    r = np.random.default_rng(seed)
    params = {nd.name: init_param(nd, r) + 0.1 * r.standard_normal(nd.shape)
              for nd in cell.nodes if nd.kind == "param"}
    state = {nd.name: r.standard_normal(nd.shape) for nd in cell.nodes
             if nd.kind == "state"}
    return params, state, r.standard_normal(cell.node("x").shape)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_to_jax_then_from_jax_gives_the_same_module(name):
    cell = ROUND_TRIP[name]()
    step = rg.to_jax(cell)
    p, s, x = cell_example(cell)
    back = rg.from_jax(step, p, s, x)
    loss = "mse" if name == "influence" else "softmax_xent"
    assert rg.compile(back, "rtrl", backend="numpy", loss=loss).source == \
        rg.compile(cell, "rtrl", backend="numpy", loss=loss).source
    assert rg.analyze(back).report() == rg.analyze(cell).report()
    # and to_jax computes the cell's step
    np.testing.assert_allclose(jax_step(step, p, s, x, cell), rgraph_step(cell, p, s, x),
                               rtol=1e-14, atol=1e-14)


def test_to_jax_gradients_equal_rgraph():
    cell = rg.cells.gru(N_IN, N, N_OUT, form="pytorch")
    step = rg.to_jax(cell)
    p, s, _ = cell_example(cell)
    xs, ys = data(4)
    got = rg.compile(cell, "bptt", backend="numpy").total_gradient(p, xs, ys)
    want = jax_total_gradient(jax.jit(step), p, s, xs, ys)
    for k in p:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("surrogate,shape", [("triangle", {}), ("fast_sigmoid", {}),
                                             ("fast_sigmoid", {"slope": 2.5}),
                                             ("arctan", {"slope": 1.5})])
def test_to_jax_spike_is_the_step_with_the_surrogate_as_derivative(surrogate, shape):
    """rg.spike, alone and inside a pointwise, in JAX: the step forward, the surrogate as
    jax.grad's derivative (rgraph's BPTT gradient), a custom_jvp named after the registry
    entry with the options, and read back by from_jax as the same spikes."""
    c = rg.Cell("spiky")
    x, h = c.input("x", 3), c.state("h", 4)
    u = (c.param("W", (4, 7)) @ rg.concat(h, x)).named("u")
    z = rg.spike(u, surrogate=surrogate, dampening=0.4, **shape)
    w = rg.pointwise(lambda t: 2 * rg.spike(t - 0.2, surrogate, 0.7, **shape) - 1, u,
                     name="bipolar")
    h_new = (rg.tanh(u) + 0.5 * z + 0.25 * w).named("h_new")
    c.update(h, h_new)
    c.output("y", c.param("V", (N_OUT, 4)) @ h_new)
    step = rg.to_jax(c)
    p, s, x0 = cell_example(c)
    text = str(jax.make_jaxpr(step)(p, s, x0))
    assert f"name=spike_{surrogate}" in text and "custom_jvp_call" in text
    np.testing.assert_allclose(jax_step(step, p, s, x0, c), rgraph_step(c, p, s, x0),
                               rtol=1e-14, atol=1e-14)
    # the derivative of the spike in JAX is the surrogate's formula
    sur = rg.scalars.surrogate(surrogate)
    spike = rg.jaxio._jax_spike(sur.fn)
    opts = [0.4, *(shape.get(k, sur.defaults[k]) for k in sur.params)]
    grid = jnp.linspace(-2.5, 2.5, 41)
    value = spike(grid, *opts)
    np.testing.assert_array_equal(value, np.where(grid > 0, 1.0, 0.0))
    got = jax.vmap(jax.grad(lambda t: spike(t, *opts)))(grid)
    d, *rest = opts
    a = np.abs(np.asarray(grid))
    slope = rest[0] if rest else None
    want = {"triangle": lambda: d * np.maximum(0.0, 1 - a),
            "fast_sigmoid": lambda: d / (1 + slope * a) ** 2,
            "arctan": lambda: d / (1 + (slope * np.asarray(grid)) ** 2)}[surrogate]()
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
    # jax.grad of the whole step equals rgraph's gradient through the surrogate
    xs, ys = data(7)
    g_rg = rg.compile(c, "bptt", backend="numpy").total_gradient(p, xs, ys)
    g_jax = jax_total_gradient(step, p, s, xs, ys)
    assert np.abs(g_rg["W"]).max() > 0
    for k in p:
        np.testing.assert_allclose(g_rg[k], g_jax[k], rtol=1e-10, atol=1e-12, err_msg=k)
    # and from_jax reads both spikes back: the same generated module
    back = rg.from_jax(step, p, s, x0)
    assert rg.compile(back, "rtrl", backend="numpy").source == \
        rg.compile(c, "rtrl", backend="numpy").source


def test_to_jax_every_scalar_function():
    """Every registered built-in function, pow, pointwise and a registered composite
    and primitive, forward against the generated numpy kernels."""
    import sympy
    softsign = rg.scalar_function("jx_softsign", lambda z: z / (1 + abs(z)))
    asinh = rg.scalar_function("jx_asinh", sympy.asinh,
                               printed={"numba": "math.asinh", "numpy": "np.arcsinh"})
    try:
        c = rg.Cell("zoo")
        x, h = c.input("x", 3), c.state("h", 3)
        u = c.param("W", (3, 6)) @ rg.concat(h, x)
        terms = [rg.tanh(u), rg.sigmoid(u), rg.softplus(u), rg.relu(u), rg.step(u),
                 rg.sign(u), rg.absolute(u), rg.exp(-u * u), rg.log(1 + u * u), rg.sinh(u),
                 rg.cosh(u), rg.sin(u), rg.cos(u), u ** 3, rg.absolute(u) ** 0.5,
                 rg.pointwise(lambda z: 2 * rg.sigmoid(z) - 1, u, name="sig2m1"),
                 softsign(u), asinh(u), 0.5 - u, u / 2.0]
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        h_new = rg.tanh(total * 0.05)
        c.update(h, h_new)
        c.output("y", c.param("V", (2, 3)) @ h_new)
        step = rg.to_jax(c)
        p, s, x0 = cell_example(c)
        np.testing.assert_allclose(jax_step(step, p, s, x0, c), rgraph_step(c, p, s, x0),
                                   rtol=1e-13, atol=1e-14)
        back = rg.from_jax(step, p, s, x0)       # and read back: the same step
        np.testing.assert_allclose(rgraph_step(back, p, s, x0), rgraph_step(c, p, s, x0),
                                   rtol=1e-13, atol=1e-14)
    finally:
        rg.scalars.unregister("jx_softsign")
        rg.scalars.unregister("jx_asinh")


def test_to_jax_refuses_a_function_without_a_jax_form():
    import sympy

    class jx_odd(sympy.Function):
        nargs = 1

        def fdiff(self, argindex=1):
            return sympy.Integer(1)

    odd = rg.scalar_function("jx_odd", jx_odd, printed={"numpy": "np.negative",
                                                        "numba": "def rg_jx_odd(x):\n"
                                                                 "    return -x"})
    try:
        c = rg.Cell("odd")
        x, h = c.input("x", 2), c.state("h", 2)
        h_new = odd(c.param("W", (2, 4)) @ rg.concat(h, x))
        c.update(h, h_new)
        c.output("y", h_new * 1.0)
        with pytest.raises(rg.GraphError, match="'jx_odd', which has no jax.numpy form"):
            rg.to_jax(c)
    finally:
        rg.scalars.unregister("jx_odd")


# --------------------------------------------------------------------- refusals
W3 = {"W": np.eye(3) * 0.5, "V": np.ones((2, 3))}


REFUSED = [
    ("reduce_sum", lambda p, h, x: h * jnp.sum(h), "register a scalar function"),
    ("sqrt", lambda p, h, x: jnp.sqrt(h * h + 1.0), "register a scalar function"),
    ("cumsum", lambda p, h, x: jnp.cumsum(h), "rewrite that line"),
    ("cond", lambda p, h, x: lax.cond(True, lambda: h, lambda: -h), "rewrite that line"),
    ("scan", lambda p, h, x: lax.fori_loop(0, 2, lambda i, a: jnp.tanh(a), h),
     "rewrite that line"),
    ("gather", lambda p, h, x: h[jnp.array([2, 0, 1])], "rewrite that line"),
    ("dot_general", lambda p, h, x: h * (h @ x), "inner product of two vectors"),
    ("mul", lambda p, h, x: (p["W"] * 2.0) @ h, "elementwise operation on a matrix"),
    ("slice", lambda p, h, x: jnp.concatenate([h[::2], h[:1]]), "strided slice"),
    ("select_n", lambda p, h, x: lax.select_n(jnp.array([0, 2, 1]), h, -h, 2 * h),
     "integer index"),
    ("dot_general", lambda p, h, x: p["W"] @ h + h @ p["W"], "used both as"),
    ("convert_element_type", lambda p, h, x: (h * 3).astype(jnp.int32) * h,
     "only float types"),
    ("reshape", lambda p, h, x: jnp.reshape(jnp.concatenate([h, x[:1]]), (2, 2))[0] + x[1:],
     "rgraph's values are vectors"),
    ("pow", lambda p, h, x: h ** x[0], "computed exponent"),
]


@pytest.mark.parametrize("prim,body,hint", REFUSED, ids=[f"{r[0]}-{k}"
                                                          for k, r in enumerate(REFUSED)])
def test_refused_primitives_name_the_primitive_the_line_and_the_fix(prim, body, hint):
    def step(p, h, x):
        return jnp.tanh(body(p, h, x)), p["V"] @ h

    with pytest.raises(rg.GraphError) as e:
        rg.from_jax(step, W3, np.ones(3), np.ones(3))
    msg = str(e.value)
    assert f"primitive '{prim}'" in msg and hint in msg
    assert "test_jax.py:" in msg                         # the user's source line


def test_bad_arguments_are_one_line_errors():
    step, p, s, x = example("tanh")
    with pytest.raises(rg.GraphError, match="params must be a dict"):
        rg.from_jax(step, [1, 2], s, x)
    with pytest.raises(rg.ShapeError, match="expected a non-empty 1-D float array"):
        rg.from_jax(step, p, s, np.ones((2, 2)))
    with pytest.raises(rg.GraphError, match=r"must return \(new_state, logits\)"):
        rg.from_jax(lambda p, h, x: h, p, s, x)
    with pytest.raises(rg.GraphError, match="new states"):
        rg.from_jax(lambda p, h, x: ({"a": h}, h), p, {"h": s}, x)
    with pytest.raises(rg.GraphError, match="is a constant"):
        rg.from_jax(lambda p, h, x: (jnp.ones(N), p["V"] @ h), p, s, x)


def test_without_jax_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[jax\]'"):
        rg.to_jax(rg.cells.tanh_rnn(2, 2, 2))
    with pytest.raises(ImportError, match=r"pip install -e '\.\[jax\]'"):
        rg.from_jax(tanh_rnn, {}, np.ones(2), np.ones(2))


def test_importing_rgraph_does_not_import_jax():
    out = subprocess.run([sys.executable, "-c", "import sys, rgraph; "
                          "print('jax' in sys.modules)"], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# --------------------------------------------------------------- random JAX cells
UNARY = [jnp.tanh, jax.nn.sigmoid, jnp.sin, jnp.cos, jnp.abs, jax.nn.relu,
         jax.nn.softplus, lambda u: jnp.exp(-u * u), lambda u: jnp.log1p(u * u),
         lambda u: u ** 2, lambda u: -u, lambda u: jnp.where(u > 0.2, u, 0.3 * u),
         lambda u: jnp.maximum(u, -0.4), lambda u: jnp.minimum(0.5, u), jnp.sign,
         lambda u: jnp.log(1.5 + jnp.cos(u)), lambda u: 1.0 / (1.5 + jnp.sin(u))]
BINARY = [jnp.add, jnp.subtract, jnp.multiply,
          lambda a, b: a / (2.0 + jnp.tanh(b)), lambda a, b: jnp.where(a > b, a, b),
          lambda a, b: jnp.concatenate([a[:2], b[2:]]),
          lambda a, b: jnp.concatenate(jnp.split(a, 2)[::-1]) * b]


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.integers(0, len(UNARY) - 1),
                              st.integers(0, len(BINARY) - 1), st.integers(0, 3)),
                    min_size=1, max_size=5),
       vecmat=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_random_jax_cells_forward_and_gradient(ops, vecmat, seed):
    """A random cell from the supported primitives: a pool of values (the preactivation,
    the state, a bias), each op applying a unary function to one and combining it with
    another; the new state a tanh of the last."""
    def step(p, h, x):
        u = (x @ p["U"] if vecmat else p["U"] @ x) + p["W"] @ h + p["b"]
        pool = [u, h, p["b"], u * h]
        for i, j, k in ops:
            pool.append(BINARY[j](UNARY[i](pool[-1]), pool[k]))
        h_new = jnp.tanh(pool[-1])
        return h_new, p["V"] @ h_new

    r = np.random.default_rng(seed)
    p = {"U": _normal(r, *((N_IN, N) if vecmat else (N, N_IN))), "W": _normal(r, N, N),
         "b": _normal(r, N), "V": _normal(r, N_OUT, N)}
    h, x = _normal(r, N), _normal(r, N_IN)
    cell = rg.from_jax(step, p, h, x, name="random")
    np.testing.assert_allclose(rgraph_step(cell, p, h, x), jax_step(step, p, h, x, cell),
                               rtol=1e-12, atol=1e-13)
    xs, ys = data(seed % 97, T=5)
    got = rg.compile(cell, "bptt", backend="numpy").total_gradient(jax_params(cell, p),
                                                                   xs, ys)
    want = jax_params(cell, jax_total_gradient(step, p, h, xs, ys))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-8, atol=1e-9, err_msg=k)


# ------------------------------------------------------------------------ the CLI
JAX_FILE = '''
import numpy as np
import jax
import jax.numpy as jnp


def step(p, h, x):
    f = jax.nn.sigmoid(p["W_f"] @ jnp.concatenate([h, x]) + p["b_f"])
    h_cand = jnp.tanh(p["W_h"] @ jnp.concatenate([f * h, x]) + p["b_h"])
    h_new = (1 - f) * h + f * h_cand
    return h_new, p["V"] @ h_new


def example():
    r = np.random.default_rng(0)
    n, n_in = 5, 3
    params = {"W_f": 0.3 * r.standard_normal((n, n + n_in)), "b_f": np.zeros(n),
              "W_h": 0.3 * r.standard_normal((n, n + n_in)), "b_h": np.zeros(n),
              "V": 0.3 * r.standard_normal((3, n))}
    return params, np.zeros(n), np.zeros(n_in)
'''


def test_cli_trains_and_inspects_a_jax_cell(tmp_path):
    f = tmp_path / "mgu_jax.py"
    f.write_text(JAX_FILE)
    r = rgraph_cli("inspect", f"{f}:step", "--backend", "numpy")
    assert "cell 'step'" in r.stdout and "h_cand" in r.stdout
    out = tmp_path / "run"
    r = rgraph_cli("train", f"{f}:step", "--task", "anbn", "-e", "uoro", "--steps", "200",
                   "--backend", "numpy", "--out", str(out), "-q")
    assert (out / "params.npz").exists()
    from rgraph.run.config import ConfigError
    from rgraph.run.make import load_cell
    with pytest.raises(ConfigError, match="example\\(\\)'s x has 3 entries, but the task's "
                                          "inputs have 5"):
        load_cell(f"{f}:step", 5, 16, 5, task_sizes=True)   # brackets(1, ...): 5 symbols
    assert load_cell(f"{f}:step", 8, 16, 8).node("x").shape == (3,)    # inspect: its sizes
