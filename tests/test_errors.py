"""Bad input gets a clear rgraph error naming the node, the shapes and the fix."""
from dataclasses import replace

import numpy as np
import pytest

import rgraph as rg
from rgraph.graph import Node

from conftest import compiled, params_for, sequence


def small():
    c = rg.Cell("small")
    x, h = c.input("x", 3), c.state("h", 4)
    W = c.param("W", (4, 8))
    return c, x, h, W


def test_shape_mismatch_names_nodes_and_shapes():
    c, x, h, W = small()
    with pytest.raises(rg.ShapeError, match=r"W @ x.*\(4, 8\) @ \(3,\)"):
        W @ x
    with pytest.raises(rg.ShapeError, match=r"'h', 'x'.*\(4,\), \(3,\)"):
        h + x
    with pytest.raises(rg.ShapeError, match="update of state 'h'"):
        c.update(h, rg.concat(h, x))
    with pytest.raises(rg.ShapeError, match="not divisible"):
        rg.split(h, 3)
    with pytest.raises(rg.ShapeError, match="left operand must be a parameter"):
        rg.matmul(h, x)


def test_state_without_update_and_update_of_non_state():
    c, x, h, W = small()
    c.output("y", h)
    with pytest.raises(rg.GraphError, match=r"state\(s\) \['h'\] have no update"):
        c.validate()
    with pytest.raises(rg.GraphError, match="x is a input, not a state"):
        c.update(x, h)
    with pytest.raises(rg.GraphError, match="no output"):
        c2, _, h2, _ = small()
        c2.update(h2, rg.tanh(h2))
        rg.compile(c2, "rtrl", backend="numpy")


def test_cycle_and_unknown_op():
    c, x, h, W = small()
    a = rg.tanh(h)
    b = rg.sigmoid(a)
    c.update(h, b)
    c.output("y", b)
    # surgery: make a's operand b, a cycle within the step
    c.nodes[a.node.id] = replace(c.nodes[a.node.id], args=(b.node.id,))
    with pytest.raises(rg.GraphError, match="cycle within one step"):
        rg.analyze(c)
    c2, x2, h2, W2 = small()
    y = rg.tanh(h2)
    c2.update(h2, y)
    c2.output("y", y)
    c2.nodes[y.node.id] = replace(c2.nodes[y.node.id], op=object())
    with pytest.raises(rg.GraphError, match="unknown op.*add it in rgraph/ops.py"):
        rg.analyze(c2)


@pytest.mark.parametrize("bad", ["1h", "h-1", "for", "class", "a b", "", 3, None])
def test_names_that_are_not_identifiers(bad):
    with pytest.raises(rg.NameError_):
        rg.Cell("c").state(bad, 3)


def test_name_collisions():
    c, x, h, W = small()
    with pytest.raises(rg.NameError_, match="already used"):
        c.input("h", 2)
    c.update(h, c.name_node(rg.tanh(W @ rg.concat(h, x, rg.const(1.0))), "z"))
    with pytest.raises(rg.NameError_, match="already used"):
        c.name_node(rg.tanh(h), "z")
    with pytest.raises(rg.NameError_, match="declared twice"):
        c.output("y", h)
        c.output("y", h)


def test_bad_pointwise_functions():
    c, x, h, W = small()
    with pytest.raises(rg.GraphError, match="failed on sympy symbols"):
        rg.pointwise(lambda z: np.tanh(z) if False else [][0], h)
    import sympy as sp
    with pytest.raises(rg.GraphError, match="not supported"):
        rg.pointwise(lambda z: sp.gamma(z), h)


def test_wrong_data_shapes_and_dtypes():
    est = compiled("lstm", "bptt")
    p = params_for(est)
    xs, ys = sequence("lstm", T=5)
    with pytest.raises(rg.DataError, match=r"xs has shape \(5, 4\); expected \(T, n_in\)"):
        est.total_gradient(p, np.zeros((5, 4)), ys)
    with pytest.raises(rg.DataError, match="ys has shape"):
        est.total_gradient(p, xs, ys[:3])
    with pytest.raises(rg.DataError, match="integer class ids"):
        est.total_gradient(p, xs, ys + 0.5)
    with pytest.raises(rg.DataError, match="class ids in"):
        est.total_gradient(p, xs, ys + 10)
    with pytest.raises(rg.DataError, match="xs has dtype"):
        est.total_gradient(p, xs.astype(str), ys)
    with pytest.raises(rg.DataError, match=r"param 'W' has shape \(2, 2\)"):
        est.total_gradient(dict(p, W=np.zeros((2, 2))), xs, ys)
    with pytest.raises(rg.DataError, match="missing"):
        est.total_gradient({"W": p["W"]}, xs, ys)


def test_nan_in_data_and_params():
    est = compiled("lstm", "bptt")
    p = params_for(est)
    xs, ys = sequence("lstm", T=5)
    bad = xs.copy()
    bad[3, 1] = np.nan
    with pytest.raises(rg.DataError, match="non-finite value.*step 3"):
        est.total_gradient(p, bad, ys)
    with pytest.raises(rg.DataError, match="non-finite"):
        est.total_gradient(dict(p, V=p["V"] * np.inf), xs, ys)


def test_divergence_is_an_error_not_a_silent_nan():
    est = compiled("tanh", "uoro")
    p = params_for(est)
    xs, ys = sequence("tanh", T=50)
    p["V"][:] = 1e308                      # the logits overflow to inf
    with pytest.raises(FloatingPointError, match="non-finite.*step 0"):
        est.train(p, xs, ys, optimizer=rg.SGD(0.1))
    with pytest.raises(FloatingPointError, match="non-finite"):
        est.total_gradient(p, xs, ys)


def test_estimator_that_does_not_apply_says_why():
    with pytest.raises(rg.NotApplicable, match="reset gate.*uoro"):
        rg.compile(rg.cells.gru(3, 4, 3), "kf-rtrl", backend="numpy")
    with pytest.raises(ValueError, match="unknown estimator"):
        rg.compile(rg.cells.gru(3, 4, 3), "uor0", backend="numpy")
    with pytest.raises(ValueError, match="truncation length"):
        rg.compile(rg.cells.gru(3, 4, 3), "tbptt", backend="numpy")


def test_generated_code_never_contains_unchecked_names():
    # every user name passes check_name; a Node built around it is refused at use
    with pytest.raises(rg.NameError_):
        rg.Cell("x; import os")
    n = Node(0, "ok", "input", (3,))
    assert n.name == "ok"


def test_sizes_are_integers_batches_positive_and_softmax_needs_classes():
    c = rg.Cell("c")
    with pytest.raises(rg.ShapeError, match="not rounded"):
        c.input("x", 2.5)
    with pytest.raises(rg.ShapeError, match="not rounded"):
        c.param("W", (4, 6.7))
    with pytest.raises(rg.ShapeError, match="not rounded"):
        c.state("h", True)
    one = rg.Cell("one")
    x, h = one.input("x", 2), one.state("h", 3)
    h_new = rg.tanh(one.param("W", (3, 5)) @ rg.concat(h, x))
    one.update(h, h_new)
    one.output("y", one.param("V", (1, 3)) @ h_new)
    with pytest.raises(ValueError, match="1-unit output"):
        rg.compile(one, "bptt", backend="numpy")
    est = rg.compile(one, "bptt", backend="numpy", loss="mse")
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        est.train(est.init_params(0), np.zeros((4, 2)), np.zeros((4, 1)), batch=0)
