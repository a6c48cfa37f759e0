"""Exactness on every cell shape: differential tests on generated cells.

For each cell drawn by ``cellgen.shaped_cells`` (several states of several sizes, leaks,
elementwise parameters, gates, products of other states' new values, resets, biases
split across terms, readouts past the new states), every exact path agrees with BPTT,
and BPTT with finite differences:

* ``rtrl`` under each association of H_t G the cost model can choose (each forced);
* ``snap-n`` wherever the report says it saturates ("equals RTRL");
* ``ok`` at full rank, under each association of H_t A;
* ``e-prop`` where its dropped paths carry nothing (the products whose input depends on
  the state set to zero), where it must equal RTRL;
* every family the report lists as applicable compiles and gives finite gradients.

CI draws a few examples with a fixed seed; ``pytest -m slow tests/test_shapes.py`` runs
the long profile (300 examples). The named cells
at the end are the minimal shapes the generator found bugs on.
"""
from __future__ import annotations

import contextlib
import dataclasses
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rgraph as rg
from rgraph import ops, sparsity
from rgraph.estimators import exact as exact_mod
from rgraph.estimators import kfrtrl as kfrtrl_mod
from rgraph.families import families, snap_levels

from cellgen import framework_stacks, shaped_cells, usable

T = 6
CI = settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))


def rel(g, ref) -> float:
    """max |g - ref| / max |ref| over every parameter."""
    num = max(float(np.abs(g[k] - ref[k]).max()) for k in ref)
    den = max(max(float(np.abs(ref[k]).max()) for k in ref), 1e-8)
    return num / den


@contextlib.contextmanager
def association(explicit: bool):
    """Force H_t X's association (RTRL's H G, KF-RTRL's and OK's H A) either way."""
    real = sparsity.association

    def forced(lay, K):
        return dataclasses.replace(real(lay, K), explicit=explicit)

    with mock.patch.object(exact_mod, "association", forced), \
            mock.patch.object(kfrtrl_mod, "association", forced):
        yield


def data(cell, seed):
    rng = np.random.default_rng(seed)
    n_in = cell.nodes[0].shape[0]
    return rng.standard_normal((T, n_in)), rng.integers(0, 2, T)


def fd_check(est, p, xs, ys, g, eps=1e-6, seed=0):
    """<g, d> against the central difference of the summed loss along random d."""
    rng = np.random.default_rng(seed)
    for _ in range(2):
        d = {k: rng.standard_normal(v.shape) for k, v in p.items()}
        lp = est.total_gradient({k: p[k] + eps * d[k] for k in p}, xs, ys,
                                return_loss=True)[1]
        lm = est.total_gradient({k: p[k] - eps * d[k] for k in p}, xs, ys,
                                return_loss=True)[1]
        fd = (lp - lm) / (2 * eps)
        dot = sum(float(np.sum(g[k] * d[k])) for k in g)
        assert abs(dot - fd) <= 1e-6 * max(abs(fd), 1.0), (dot, fd)


def state_fed_products(cell):
    """The parameters of products whose input depends on the previous state: e-prop's
    D̂ drops exactly the paths through them."""
    lay = rg.analyze(cell).layout
    live = lay.live_from(lay.state_ids)
    return [cell.nodes[n.args[0]].name for n in cell.nodes
            if n.kind == "op" and isinstance(n.op, ops.MatMul) and n.args[1] in live
            and n.args[0] in lay.rec_ids]


def sink_parameters(an):
    """The parameters layer-rtrl gives exactly: the readout's, and those entering only
    components that feed no other (the top of a stack; every one of a one-component
    cell), whose influence never leaves their component."""
    lay = an.layout
    comps = an.components
    sinks = set()
    for c in comps:
        live = lay.live_from(c.state_ids)
        if not any(lay.cell.updates[m] in live for o in comps if o is not c
                   for m in o.state_ids):
            sinks.add(c.index)
    rec = {lay.nodes[p].name: p for p in lay.rec_ids}
    return an.readout + [nm for nm, p in rec.items() if set(an.enters(p)) <= sinks]


def check_exact_paths(cell, seed, backend="numpy"):
    """Every exact path of the module docstring on one cell."""
    xs, ys = data(cell, seed)
    an = rg.analyze(cell)

    def compile_(name, **kw):
        return rg.compile(cell, name, loss="softmax_xent", backend=backend, **kw)

    bptt = compile_("bptt")
    p = bptt.init_params(seed)
    gb = bptt.total_gradient(p, xs, ys)
    fd_check(bptt, p, xs, ys, gb, seed=seed)
    if not an.recurrent:
        return
    ways = [False, True] if an.kronecker.ok else [False]
    for explicit in ways:
        with association(explicit):
            gr = compile_("rtrl").total_gradient(p, xs, ys)
            assert rel(gr, gb) < 1e-9, ("rtrl", explicit, str(cell))
            if an.kronecker.ok:
                r = max(grp.dim_input for grp in an.kronecker.groups)
                go = compile_("ok", rank=r).total_gradient(p, xs, ys, seed=1)
                assert rel(go, gb) < 1e-6, ("ok", r, explicit, str(cell))
    applies = {f.key: f.applies for f in families(an)}
    for n, _, _, saturates in snap_levels(an):
        if saturates and applies["snap-1"]:
            gs = compile_(f"snap-{n}").total_gradient(p, xs, ys)
            assert rel(gs, gb) < 1e-9, (f"snap-{n}", str(cell))
    if applies["layer-rtrl"]:
        gl = compile_("layer-rtrl").total_gradient(p, xs, ys)
        exact = sink_parameters(an) or list(gb)
        assert rel({k: gl[k] for k in exact}, {k: gb[k] for k in exact}) < 1e-9, \
            ("layer-rtrl", exact, str(cell))
    if applies["e-prop"]:
        q = dict(p)
        for name in state_fed_products(cell):
            q[name] = np.zeros_like(p[name])
        ge = compile_("e-prop").total_gradient(q, xs, ys)
        gq = bptt.total_gradient(q, xs, ys)
        assert rel(ge, gq) < 1e-9, ("e-prop", str(cell))
    for name, ok in applies.items():    # what the report calls applicable runs
        if ok:
            g = compile_(name).total_gradient(p, xs, ys, seed=2)
            assert set(g) == set(p) and all(g[k].shape == p[k].shape for k in p)
            assert all(np.isfinite(g[k]).all() for k in g), name


@CI
@given(shaped_cells(), st.integers(0, 2**16))
def test_generated_cells_every_exact_path_equals_bptt_and_fd(cell, seed):
    assume(usable(cell))
    check_exact_paths(cell, seed)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(shaped_cells(), st.integers(0, 2**16))
def test_generated_cells_thorough(cell, seed):
    """The long profile (``pytest -m slow``): 300 examples, numpy backend."""
    assume(usable(cell))
    check_exact_paths(cell, seed)


# ------------------------------------------------------------- named regressions
def leaky2(reset=False):
    """A leaky cell with two states: the membrane v_new = 0.9 v + ... is itself a state,
    and the sum the parameters enter continues past it (v_new - 0.5). RTRL, SnAp-2 and
    OK lost the path v_{t-1} -> v_t (0.3-0.6 relative error)."""
    c = rg.Cell("leaky2")
    x = c.input("x", 3)
    v, z = c.state("v", 5), c.state("z", 5)
    v_new = 0.9 * v + c.param("Win", (5, 3)) @ x + c.param("Wrec", (5, 5)) @ z
    if reset:
        v_new = v_new - z * 0.5
    z_new = rg.tanh((v_new - 0.5) * 2.0)
    c.update(v, v_new)
    c.update(z, z_new)
    c.output("logits", c.param("V", (3, 5)) @ z_new)
    return c


def two_layer():
    """Two tanh layers as frameworks write them: the second reads the first's new value
    through a product. SnAp-2 (saturated) was off by 0.9 and did not compile in numba,
    e-prop neither."""
    c = rg.Cell("two_layer")
    x = c.input("x", 3)
    h1, h2 = c.state("h1", 4), c.state("h2", 3)
    h1n = rg.tanh(c.param("W1", (4, 3)) @ x + c.param("U1", (4, 4)) @ h1)
    h2n = rg.tanh(c.param("W2", (3, 4)) @ h1n + c.param("U2", (3, 3)) @ h2)
    c.update(h1, h1n)
    c.update(h2, h2n)
    c.output("logits", c.param("V", (3, 3)) @ h2n)
    return c


def readout_past_the_state():
    """The loss reads the previous state directly (a bypass of the new state)."""
    c = rg.Cell("bypass")
    x = c.input("x", 2)
    h = c.state("h", 3)
    h_new = rg.tanh(c.param("W", (3, 2)) @ x + c.param("U", (3, 3)) @ h)
    c.update(h, h_new)
    c.output("logits", c.param("V", (2, 6)) @ rg.concat(h_new, rg.tanh(h)))
    return c


def elementwise_state():
    """A state that is an elementwise function of a parameter (sigmoid(b)), read by the
    next state through a leak: its ∂m/∂u lay in the new state's tangent, where SnAp's
    runs did not look."""
    c = rg.Cell("elementwise_state")
    x = c.input("x", 2)
    s0, s1 = c.state("s0", 3), c.state("s1", 3)
    s0_new = rg.sigmoid(c.param("b", (3,)))
    s1_new = c.param("W", (3, 2)) @ x - s0 * 0.5
    c.update(s0, s0_new)
    c.update(s1, s1_new)
    c.output("y", c.param("V", (2, 3)) @ s1_new)
    return c


def feedforward_into_recurrent():
    """A layer without recurrence (W1 x) read by a recurrent one through a product:
    W1 reaches the upper state within the step, which e-prop's mask, taken from an
    immediate Jacobian with the products cut, left out."""
    c = rg.Cell("ff_into_rec")
    x = c.input("x", 1)
    s0, s1 = c.state("s0", 4), c.state("s1", 2)
    s0_new = c.param("W1", (4, 1)) @ x
    s1_new = rg.sigmoid(c.param("W3", (2, 4)) @ s0_new + c.param("W4", (2, 4)) @ s0
                        - 0.7 * s1)
    c.update(s0, s0_new)
    c.update(s1, s1_new)
    c.output("y", c.param("V", (2, 2)) @ s1_new)
    return c


def readout_through_a_function():
    """A linear new state read by the readout through tanh: the loss's backprop kept
    its cotangent inside a fused loop, and SnAp's learning signal read zero there."""
    c = rg.Cell("tanh_readout")
    x = c.input("x", 2)
    h = c.state("h", 3)
    h_new = c.param("W", (3, 2)) @ x + c.param("U", (3, 3)) @ h
    c.update(h, h_new)
    c.output("y", c.param("V", (2, 3)) @ rg.tanh(h_new))
    return c


REGRESSIONS = {"leaky2": leaky2, "leaky2_reset": lambda: leaky2(True),
               "two_layer": two_layer, "bypass": readout_past_the_state,
               "elementwise_state": elementwise_state,
               "ff_into_rec": feedforward_into_recurrent,
               "tanh_readout": readout_through_a_function}


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(framework_stacks(), st.integers(0, 2**16))
def test_framework_stacks_every_exact_path_and_every_family(cell, seed):
    """Stacked RNN, LSTM and GRU layers as frameworks write them (two and three layers,
    kinds mixed, shared inputs, split biases): the exact paths agree, and every family
    the report lists compiles and gives finite gradients of the parameters' shapes."""
    check_exact_paths(cell, seed)


@pytest.mark.slow
@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(framework_stacks(max_size=3), st.integers(0, 2**16))
def test_framework_stacks_every_family_on_numba(cell, seed):
    """The long profile: on numba too, every family the report lists as applicable
    compiles and runs, and gives numpy's numbers where it draws no random numbers."""
    xs, ys = data(cell, seed)
    for f in families(rg.analyze(cell)):
        if not f.applies:
            continue
        a = rg.compile(cell, f.key, backend="numba")
        p = a.init_params(seed)
        g = a.total_gradient(p, xs, ys, seed=1)
        assert set(g) == set(p) and all(np.isfinite(g[k]).all() for k in g), f.key
        if not a.spec.stochastic:
            b = rg.compile(cell, f.key, backend="numpy").total_gradient(p, xs, ys, seed=1)
            assert rel(g, b) < 1e-10, (f.key, str(cell))


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_named_shapes_every_exact_path(name):
    check_exact_paths(REGRESSIONS[name](), seed=3)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("reset", [False, True])
def test_leaky_two_state_cell_every_exact_family_equals_finite_differences(reset, backend):
    """The issue's cell: rtrl, snap-2, ok at full rank against finite differences of the
    summed loss to 1e-8, on both backends; on numpy under both associations of H_t G
    (numba compiles the one the cost model picks: H_t formed first)."""
    cell = leaky2(reset)
    xs, ys = data(cell, 0)
    bptt = rg.compile(cell, "bptt", backend="numpy")
    p = bptt.init_params(0)
    eps = 1e-6
    rng = np.random.default_rng(0)
    d = {k: rng.standard_normal(v.shape) for k, v in p.items()}
    lp = bptt.total_gradient({k: p[k] + eps * d[k] for k in p}, xs, ys, return_loss=True)[1]
    lm = bptt.total_gradient({k: p[k] - eps * d[k] for k in p}, xs, ys, return_loss=True)[1]
    fd = (lp - lm) / (2 * eps)
    ways = (False, True) if backend == "numpy" else (None,)
    for explicit in ways:
        forced = association(explicit) if explicit is not None else contextlib.nullcontext()
        with forced:
            for name in ("rtrl", "snap-2", "ok(8)"):
                g = rg.compile(cell, name, backend=backend).total_gradient(p, xs, ys)
                dot = sum(float(np.sum(g[k] * d[k])) for k in g)
                assert abs(dot - fd) <= 1e-8 * max(abs(fd), 1.0), (name, explicit, dot, fd)


@pytest.mark.parametrize("name,cell", [("snap-2", two_layer), ("e-prop", two_layer)])
def test_named_shapes_compile_in_numba_and_match_numpy(name, cell):
    """The numba modules of the shapes that failed (the nested sums' jvp on views of a
    wider buffer did not compile) give numpy's numbers."""
    c = cell()
    xs, ys = data(c, 1)
    a = rg.compile(c, name, backend="numba")
    b = rg.compile(c, name, backend="numpy")
    p = a.init_params(1)
    ga, gb = a.total_gradient(p, xs, ys), b.total_gradient(p, xs, ys)
    assert rel(ga, gb) < 1e-12


def test_the_report_claims_only_what_the_code_does():
    """SnAp-2 on the stacked cell: the report says it saturates, and it equals RTRL;
    where SnAp does not apply (a shared weight), the report shows no mask for it."""
    cell = two_layer()
    report = rg.analyze(cell).report()
    assert "snap-2: 259 of 259 (saturates: equals RTRL)" in report
    shared = rg.Cell("shared")
    x = shared.input("x", 2)
    h = shared.state("h", 3)
    W = shared.param("W", (3, 3))
    h_new = rg.tanh(W @ h + shared.param("U", (3, 2)) @ x + W @ rg.tanh(h))
    shared.update(h, h_new)
    shared.output("y", shared.param("V", (2, 3)) @ h_new)
    text = rg.analyze(shared).report()
    assert "snap-1" in text and "does not apply" in text and "SnAp-n masks" not in text
    xs, ys = data(cell, 0)
    rtrl = rg.compile(cell, "rtrl", backend="numpy")
    p = rtrl.init_params(0)
    g2 = rg.compile(cell, "snap-2", backend="numpy").total_gradient(p, xs, ys)
    assert rel(g2, rtrl.total_gradient(p, xs, ys)) < 1e-12


# ------------------------------------------------------------------ unbiasedness
@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(shaped_cells(max_states=2, max_size=3), st.integers(0, 2**16))
def test_generated_cells_stochastic_families_are_unbiased(cell, seed):
    """UORO, KF-RTRL, OK(2) and DODGE: the mean over seeds is the exact gradient, on a
    sample of the same generated cells (z-scores of three statistics below 4)."""
    from test_estimators import z_scores
    assume(usable(cell))
    an = rg.analyze(cell)
    # a recurrence to estimate: the state reads itself, two recurrent parameters or more
    assume(len(an.recurrent) > 1 and sparsity.step_patterns(an.layout)[0].nnz)
    xs, ys = data(cell, seed)
    bptt = rg.compile(cell, "bptt", backend="numpy")
    p = bptt.init_params(seed)
    exact = bptt.total_gradient(p, xs, ys)
    names = ["uoro", "dodge"] + (["kf-rtrl", "ok(2)"] if an.kronecker.ok else [])
    for name in names:
        z = z_scores(rg.compile(cell, name, backend="numpy"), p, xs, ys, exact, n=300)
        assert np.all(z < 4.0), (name, z, str(cell))
    print(f"\n{len(names)} families unbiased on {an.cell.name}: {len(an.recurrent)} "
          f"recurrent parameters, state {an.n_state}")


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(shaped_cells(max_states=2, max_size=3), st.integers(0, 2**16))
def test_generated_cells_numba_equals_numpy_thorough(cell, seed):
    """The long profile: numba's modules of the exact families give numpy's numbers."""
    assume(usable(cell))
    an = rg.analyze(cell)
    assume(an.recurrent)
    xs, ys = data(cell, seed)
    names = ["rtrl", "snap-2", "e-prop"] + (["kf-rtrl"] if an.kronecker.ok else [])
    applies = {f.key: f.applies for f in families(an)}
    for name in names:
        if name in applies and not applies[name]:
            continue
        a = rg.compile(cell, name, backend="numba")
        b = rg.compile(cell, name, backend="numpy")
        p = a.init_params(seed)
        assert rel(a.total_gradient(p, xs, ys, seed=0),
                   b.total_gradient(p, xs, ys, seed=0)) < 1e-10, (name, str(cell))


def test_a_parameter_is_not_a_state_or_an_output():
    c = rg.Cell("p")
    c.input("x", 2)
    s = c.state("s", 3)
    b = c.param("b", (3,))
    with pytest.raises(rg.GraphError, match="update of state 's': its new value is the "
                                            "parameter 'b' itself"):
        c.update(s, b)
    with pytest.raises(rg.GraphError, match="output 'y' is the parameter 'b' itself"):
        c.output("y", b)
