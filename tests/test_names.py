"""Any valid identifier a user picks works in generated code: the code generator renames
its own identifiers (kernel arguments, loop indices, helpers, imports, constants,
kernels) around the user's names, on both backends."""
import keyword

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rgraph as rg

# names the generated code would otherwise use itself
TRICKY = ["nd", "sd", "v", "th", "i", "np", "math", "range", "len", "vd", "vb", "thd",
          "thb", "j", "k", "acc", "ncols", "S", "X", "NV", "NR", "DT", "FASTMATH", "njit",
          "forward", "run", "evaluate", "est_step", "rg_zero", "rg_sigmoid", "E", "W",
          "g", "rng", "s", "x", "y", "w", "h_i", "h_dot", "t3", "k4", "float", "abs",
          "print", "_x", "__init__", "α", "ﬁ", "fi", "src", "dst", "u", "cA"]


def cell_with(names):
    """A cell whose input, state, two parameters, a named node and output take names[0:6]
    (and a tanh node after the state, auto-named or named names[6])."""
    a, b, c, d, e, f, h = names
    cell = rg.Cell("n")
    x = cell.input(a, 2)
    s = cell.state(b, 3)
    W = cell.param(c, (3, 6))
    V = cell.param(d, (2, 3))
    z = cell.name_node(W @ rg.concat(s, x, rg.const(1.0)), e)
    new = cell.name_node(rg.tanh(z) * rg.sigmoid(z), h)
    cell.update(s, new)
    cell.output(f, V @ new)
    return cell


def check(cell, backends=("numpy", "numba")):
    for backend in backends:
        errs = rg.check_derivatives(cell, backend=backend)
        assert max(errs.values()) < 1e-6, (backend, errs)


def gradients(cell, backend):
    est = rg.compile(cell, "uoro", backend=backend)
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((6, 2)), rng.integers(0, 2, 6)
    return est.total_gradient(est.init_params(0), xs, ys, seed=3)


def test_the_generators_own_names_work_as_user_names():
    names = ["sd", "nd", "th", "v", "i", "np", "math"]
    cell = cell_with(names)
    check(cell)
    a, b = gradients(cell, "numba"), gradients(cell, "numpy")
    assert all(np.allclose(a[k], b[k], rtol=1e-12, atol=1e-14) for k in a)
    src = rg.compile(cell, "uoro").source
    assert "import numpy as np_1" in src and "import math as math_1" in src


def test_builtins_and_module_names_as_node_names():
    cell = cell_with(["range", "len", "forward", "run", "S", "rg_zero", "W"])
    check(cell)
    for est in ("kf-rtrl", "tbptt(3)", "rtrl"):
        e = rg.compile(cell, est, backend="numpy")
        assert e.total_gradient(e.init_params(0), np.ones((4, 2)), np.zeros(4, int))


def test_identifiers_equal_after_normalization_stay_distinct():
    """Python reads 'ﬁ' as 'fi': two user names that normalize alike still get two
    identifiers."""
    cell = cell_with(["ﬁ", "fi", "α", "β", "z", "y", "h_new"])
    check(cell, ("numpy",))


def identifiers():
    plain = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
    return st.one_of(st.sampled_from(TRICKY), plain).filter(
        lambda n: n.isidentifier() and not keyword.iskeyword(n))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(identifiers(), min_size=7, max_size=7, unique=True))
def test_any_identifiers_work_numpy(names):
    check(cell_with(names), ("numpy",))


@pytest.mark.parametrize("chunk", range(0, len(TRICKY), 7))
def test_every_tricky_name_works_numba(chunk):
    """Every name of TRICKY, seven to a cell, through the numba backend."""
    names = (TRICKY + TRICKY)[chunk:chunk + 7]
    check(cell_with(names), ("numba",))
