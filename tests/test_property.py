"""Random small cells built from the whole op set (hypothesis): every generated
derivative matches central differences, RTRL ≡ BPTT, and numba agrees with numpy."""
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rgraph as rg
from rgraph.checks import check_derivatives, compare_backends

UNARY = [rg.tanh, rg.sigmoid, rg.softplus, lambda a: -a, lambda a: rg.log(1.0 + a * a),
         lambda a: rg.exp(-a * a), rg.relu,
         lambda a: rg.pointwise(lambda z: 2 * rg.sigmoid(z) - 1, a, name="s2m1")]
BINARY = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
          lambda a, b: a / (1.0 + b * b),
          lambda a, b: rg.pointwise(lambda u, v: u * rg.tanh(v) + 0.5 * u, a, b, name="mix")]


@st.composite
def random_cells(draw):
    c = rg.Cell("rand")
    n_in = draw(st.integers(1, 3))
    vals = [c.input("x", n_in)]
    states = [c.state(f"s{i}", draw(st.integers(1, 4)))
              for i in range(draw(st.integers(1, 2)))]
    vals += states
    count = [0]

    def param(shape):
        count[0] += 1
        return c.param(f"P{count[0]}", shape)

    def project(v, n):   # a matmul from v to size n (with a bias column)
        return param((n, v.shape[0] + 1)) @ rg.concat(v, rg.const(1.0))

    for _ in range(draw(st.integers(2, 7))):
        kind = draw(st.sampled_from(["unary", "binary", "matmul", "concat", "slice"]))
        a = draw(st.sampled_from(vals))
        if kind == "unary":
            vals.append(draw(st.sampled_from(UNARY))(a))
        elif kind == "binary":
            b = draw(st.sampled_from(vals))
            if b.shape != a.shape:
                b = project(b, a.shape[0]) if b.shape[0] != 1 else b
            vals.append(draw(st.sampled_from(BINARY))(a, b))
        elif kind == "matmul":
            vals.append(project(a, draw(st.integers(1, 5))))
        elif kind == "concat":
            vals.append(rg.concat(a, draw(st.sampled_from(vals))))
        elif a.shape[0] > 1:
            i = draw(st.integers(0, a.shape[0] - 2))
            vals.append(a[i:draw(st.integers(i + 1, a.shape[0]))])
    for s in states:   # each new state mixes its old value and a random value
        v = draw(st.sampled_from(vals[1 + len(states):] or vals))
        c.update(s, rg.tanh(project(v, s.shape[0]) + 0.5 * s))
    out = draw(st.sampled_from(vals[1 + len(states):] or vals))
    c.output("y", param((2, out.shape[0])) @ out)
    return c


def _usable(cell):
    try:
        rg.analyze(cell)
        return True
    except rg.GraphError:      # e.g. a parameter that reaches nothing
        return False


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_cells(), st.integers(0, 2**16))
def test_random_cells_derivatives_and_rtrl_equals_bptt(cell, seed):
    assume(_usable(cell))
    err = check_derivatives(cell, "numpy", seed=seed)
    assert max(err.values()) < 1e-6, (str(cell), err)
    rng = np.random.default_rng(seed)
    n_in = cell.nodes[0].shape[0]
    xs, ys = rng.standard_normal((6, n_in)), rng.integers(0, 2, 6)
    bptt = rg.compile(cell, "bptt", backend="numpy")
    rtrl = rg.compile(cell, "rtrl", backend="numpy")
    p = bptt.init_params(seed)
    gb, gr = bptt.total_gradient(p, xs, ys), rtrl.total_gradient(p, xs, ys)
    for k in gb:
        scale = max(np.abs(gb[k]).max(), 1e-8)
        assert np.abs(gr[k] - gb[k]).max() / scale < 1e-9, k


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_cells(), st.integers(0, 2**16))
def test_random_cells_numba_matches_numpy(cell, seed):
    assume(_usable(cell))
    assert compare_backends(cell, seed) < 1e-10, str(cell)
