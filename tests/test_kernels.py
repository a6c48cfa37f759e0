"""Every generated derivative against central differences, for every built-in cell and
an op-zoo cell using every op, on both backends; numba and numpy agree to round-off."""
import pytest

import rgraph as rg
from rgraph.checks import KernelSet, check_derivatives, compare_backends

from conftest import ZOO


def op_zoo():
    """One cell that uses every op of the DSL."""
    c = rg.Cell("opzoo")
    x, h = c.input("x", 3), c.state("h", 4)
    W = c.param("W", (8, 8))
    z = W @ rg.concat(h, x, rg.const(1.0))
    a, b = rg.split(z, 2)
    p = c.param("p", 4)                       # a vector parameter, elementwise
    q = c.param("q", 1)                       # a broadcast scalar
    u = rg.tanh(a) * rg.sigmoid(b) + rg.relu(a - 0.1) / (2.0 + rg.exp(-b))
    u = u + rg.log(1.0 + rg.softplus(b)) - (-a) * p + q * h
    u = u + rg.pointwise(lambda s, t: 2 * rg.sigmoid(s) * t - s ** 2 / 4, a, b, name="mix")
    u = u + (h ** 2) * 0.1 + h[1:2] * 0.5 + rg.concat(h[0:2], a[2:4]) * 0.2
    c.update(h, rg.tanh(u))
    c.output("y", c.param("V", (2, 4)) @ c.name_node(rg.tanh(u), "hy") + x[0:2])
    return c


def odd_states():
    """States whose new value is not an op of their own: a constant memory (update(m, m))
    and the last input (update(q, x))."""
    c = rg.Cell("odd")
    x, h, m, q = c.input("x", 2), c.state("h", 3), c.state("m", 2), c.state("q", 2)
    h_new = rg.tanh(c.param("W", (3, 6)) @ rg.concat(h, m, rg.const(1.0)))
    c.update(h, h_new)
    c.update(m, m)
    c.update(q, x)
    c.output("y", c.param("V", (2, 3)) @ h_new + q * 0.5)
    return c


CELLS = dict(ZOO, opzoo=op_zoo, odd=odd_states)


@pytest.fixture(scope="module", params=["numpy", "numba"])
def backend(request):
    return request.param


@pytest.mark.parametrize("name", sorted(CELLS))
def test_derivatives_match_finite_differences(name, backend):
    cell = CELLS[name]()
    for seed in (0, 1):
        err = check_derivatives(cell, backend, seed=seed)
        bad = {k: e for k, e in err.items() if not e < 1e-6}
        assert not bad, f"{name} on {backend}: {bad}"
        assert {"jvp_state", "jvp_input", "jvp_params", "jvp_basis", "vjp"} <= set(err)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_numba_and_numpy_agree(name):
    cell = CELLS[name]()
    a, b = KernelSet(cell, "numba"), KernelSet(cell, "numpy")
    for seed in (0, 1):
        assert compare_backends(cell, seed, a, b) < 1e-10


def test_a_wrong_rule_is_caught(monkeypatch):
    """The check is not vacuous: a wrong derivative rule makes it fail."""
    from rgraph import ops
    right = ops.Elementwise.partial

    def wrong(self, j):
        d = right(self, j)
        return d * 1.01 if self.label == "tanh" else d
    monkeypatch.setattr(ops.Elementwise, "partial", wrong)
    err = check_derivatives(rg.cells.tanh_rnn(2, 3, 2))
    assert err["jvp_state"] > 1e-3 and err["vjp"] > 1e-4
