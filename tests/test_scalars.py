"""The scalar-function registry: a function added in one entry works in a cell on both
backends (derivatives against central differences, its code in the generated module)
and leaves nothing behind; a bad registration says what is wrong and registers nothing."""
import pytest
import sympy as sp

import rgraph as rg
from rgraph import losses, scalars
from rgraph.backends import get_backend
from rgraph.checks import KernelSet, check_derivatives


class softsign_fn(sp.Function):
    """x / (1 + |x|) with a closed-form derivative, printed as a helper."""

    nargs = 1

    def fdiff(self, argindex=1):
        return 1 / (1 + sp.Abs(self.args[0])) ** 2


SOFTSIGN_HELPERS = {"numba": "def rg_softsign(x):\n    return x / (1.0 + abs(x))",
                    "numpy": "def rg_softsign(x):\n    return x / (1.0 + np.abs(x))"}

# name, definition, options, what the generated code calls per backend (an inline
# function has no call of its own: its formula is expanded where it is used)
KINDS = {
    "inline": ("softsign", lambda x: x / (1 + abs(x)), {}, {"numba": "", "numpy": ""}),
    "helper": ("softsign", softsign_fn, {"printed": SOFTSIGN_HELPERS},
               {"numba": "rg_softsign(", "numpy": "rg_softsign("}),
    "callee": ("asinh", sp.asinh, {"printed": {"numba": "math.asinh", "numpy": "np.arcsinh"}},
               {"numba": "math.asinh(", "numpy": "np.arcsinh("}),
    "two_args": ("gate", lambda x, y: x * rg.sigmoid(y), {},
                 {"numba": "rg_sigmoid(", "numpy": "rg_sigmoid("}),
}


@pytest.fixture
def register():
    """rg.scalar_function, with everything it registered removed afterwards."""
    names = []

    def reg(name, definition, **options):
        f = rg.scalar_function(name, definition, **options)
        names.append(name)
        return f
    yield reg
    for name in reversed(names):
        scalars.unregister(name)
    assert set(scalars.REGISTRY) == scalars.BUILTIN_NAMES


def cell_using(f, arity):
    """A cell applying f to a preactivation, directly and inside rg.pointwise."""
    c = rg.Cell("uses_" + f.__name__)
    x, h = c.input("x", 2), c.state("h", 4)
    z = c.param("W", (8, 7)) @ rg.concat(h, x, rg.const(1.0))
    a, b = rg.split(z, 2)
    args = (a, b)[:arity]
    h_new = rg.tanh(f(*args)) + rg.pointwise(lambda *s: 0.5 * f(*s) ** 2, *args, name="sq")
    c.update(h, h_new)
    c.output("y", c.param("V", (2, 4)) @ h_new)
    return c


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_function_registered_once_is_differentiated_and_printed(kind, backend, register):
    name, definition, options, printed = KINDS[kind]
    f = register(name, definition, **options)
    arity = scalars.REGISTRY[name].arity
    assert f.__name__ == name and f.__doc__
    ks = KernelSet(cell_using(f, arity), backend)
    err = check_derivatives(ks.cell, backend, kernels=ks)
    bad = {k: e for k, e in err.items() if not e < 1e-6}
    assert not bad, f"{name} ({kind}) on {backend}: {bad}"
    src = ks.path.read_text()
    assert f"= {name}(" in src            # the comment quoting the user's expression
    assert printed[backend] in src
    assert ("def rg_softsign(x):" in src) == (kind == "helper")
    assert ("rg_softsign(" in src) == (kind == "helper")


def test_unregistering_leaves_nothing_behind():
    f = rg.scalar_function("softsign", softsign_fn, printed=SOFTSIGN_HELPERS)
    assert "rg_softsign" in get_backend("numba").helpers()
    scalars.unregister("softsign")
    assert set(scalars.REGISTRY) == scalars.BUILTIN_NAMES
    assert scalars.lookup(softsign_fn(1)) is None
    for b in ("numba", "numpy"):
        assert "rg_softsign" not in get_backend(b).helpers()
    with pytest.raises(rg.GraphError, match="'softsign' was unregistered"):
        f(rg.Cell("c").state("h", 2))
    rg.scalar_function("softsign", lambda x: x / (1 + abs(x)))   # the name is free again
    scalars.unregister("softsign")
    with pytest.raises(rg.GraphError, match="'tanh' is built in"):
        scalars.unregister("tanh")


def test_backend_helpers_are_named_undecorated_sources():
    """The module builder's contract: name -> 'def name(...)' source, put into a module
    as it is; scalar and loss helpers are included."""
    for b, own in (("numba", "rg_gemm_rm_float64"), ("numpy", "rg_basis")):
        backend = get_backend(b)
        helpers = backend.helpers()
        assert {"rg_sigmoid", "rg_zero", "rg_softmax_xent", "rg_mse", own} <= set(helpers)
        for name, src in helpers.items():
            assert src.startswith(f"def {name}(")
            compile(src, name, "exec")
    assert rg.api.LOSSES == {name: f"rg_{name}" for name in losses.LOSSES}


def test_the_builtin_names_stay_public():
    for name in ("tanh", "sigmoid", "relu", "exp", "log", "softplus"):
        assert getattr(rg, name) is rg.graph.SCALAR_FUNCTIONS[name]
        assert name in rg.__all__
    x = sp.Symbol("x", real=True)
    assert rg.sigmoid(x) == scalars.sigmoid(x)
    assert rg.pointwise(lambda z: sp.sign(z), rg.Cell("c").state("h", 2)).node.op.expr == \
        scalars.sign(scalars.ARG[0])        # sympy's sign becomes rgraph's (derivative 0)


class undifferentiable(sp.Function):
    nargs = 1


@pytest.mark.parametrize("args, message", [
    (("bad", lambda x: sp.gamma(x)), "function gamma is not supported"),
    (("bad", sp.gamma, {"printed": {"numba": "math.gamma"}}),
     "uses polygamma, which is not a registered scalar function"),
    (("bad", undifferentiable, {"printed": {"numba": "math.exp"}}),
     "sympy cannot differentiate it"),
    (("bad", lambda x, y: x * y, {"arity": 1}), r"arity=1, but the function takes 2"),
    (("bad", softsign_fn, {"arity": 2, "printed": SOFTSIGN_HELPERS}),
     r"arity 2, but softsign_fn takes \{1\}"),
    (("softsign", softsign_fn, {"printed": {"numba": "def rg_softsign(x, y):\n  return x"}}),
     "rg_softsign must take exactly 1 plain argument"),
    (("softsign", softsign_fn, {"printed": {"numba": "def rg_other(x):\n  return x"}}),
     "exactly one function 'def rg_softsign"),
    (("softsign", softsign_fn, {"printed": {"numba": "math.sin(x)"}}),
     "neither a callee"),
    (("softsign", softsign_fn), "needs printed="),
    (("softsign", lambda x: x, {"printed": SOFTSIGN_HELPERS}), "printed inline"),
    (("tanh", lambda x: x), "'tanh' is already registered"),
    (("tanh2", sp.tanh, {"printed": {"numba": "math.tanh"}}),
     "sympy class tanh is already registered as 'tanh'"),
    (("add", lambda x: x), "label of one of rgraph's own ops"),
    (("Soft sign", lambda x: x), "lower-case letters"),
    (("bad", 3.0), "must be a python function of sympy scalars"),
])
def test_bad_registrations_say_what_is_wrong(args, message):
    name, definition, *options = args
    with pytest.raises(rg.GraphError, match=message):
        rg.scalar_function(name, definition, **(options[0] if options else {}))
    assert set(scalars.REGISTRY) == scalars.BUILTIN_NAMES


def test_missing_backend_form_and_helper_clash(register):
    f = register("softsign", softsign_fn, printed={"numpy": SOFTSIGN_HELPERS["numpy"]})
    c = rg.Cell("numpy_only")
    h = c.state("h", 2)
    c.update(h, f(h))
    c.output("y", h)
    with pytest.raises(rg.GraphError, match="'softsign' has no numba form; register it with "
                                            "printed="):
        KernelSet(c, "numba")

    class zero(sp.Function):
        nargs = 1

        def fdiff(self, argindex=1):
            return sp.Integer(0)
    register("zero", zero, printed={"numpy": "def rg_zero(x):\n    return 0.0 * x"})
    with pytest.raises(rg.GraphError, match="'zero' has the helper rg_zero, which a loss or "
                                            "the numpy backend defines too"):
        get_backend("numpy").helpers()
