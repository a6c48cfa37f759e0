"""Recurrent components and layer-local exact learning (``layer-rtrl``).

The components are the strongly connected components of the graph of states; layer-rtrl
keeps each parameter's influence on its own components' states (exact RTRL there) and
passes only the same-step error between components. Checked: against a NumPy
implementation of that rule written here from its definition, against RTRL on every
one-component built-in, on the LRU (where SnAp-1 and layer-rtrl are RTRL and cost O(P)),
on both backends, and from the command line and an exported module.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rgraph as rg
from cellgen import framework_stacks
from rgraph.families import families

N_IN, N, N_OUT, T = 3, 5, 4, 12


def rel(g, ref, keys=None) -> float:
    keys = list(ref) if keys is None else keys
    num = max(float(np.abs(g[k] - ref[k]).max()) for k in keys)
    return num / max(max(float(np.abs(ref[k]).max()) for k in keys), 1e-12)


def data(n_in=N_IN, n_out=N_OUT, T=T, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, n_in)), rng.integers(0, n_out, T)


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def layer_local_reference(p, xs, ys):
    """The rule on a two-layer tanh RNN (concat form), from its definition: each layer's
    influence J_l = ∂h_l/∂W_l through its own recurrence only (D_ll = diag(1 - h_l'^2)
    W_l[:, :n]); learning signals L_1 = ∂l/∂h_1 and L_0 = ∂l/∂h_0 through layer 1 at the
    same step; gradient Σ_t L_l · J_l."""
    W0, W1, V, b = p["W_l0"], p["W_l1"], p["V"], p["b"]
    h0, h1 = np.zeros(N), np.zeros(N)
    J0, J1 = np.zeros((N,) + W0.shape), np.zeros((N,) + W1.shape)
    G0, G1 = np.zeros_like(W0), np.zeros_like(W1)
    rows = np.arange(N)
    for x, y in zip(xs, ys, strict=True):
        a0 = np.concatenate([h0, x, [1.0]])
        h0n = np.tanh(W0 @ a0)
        a1 = np.concatenate([h1, h0n, [1.0]])
        h1n = np.tanh(W1 @ a1)
        d0, d1 = 1 - h0n ** 2, 1 - h1n ** 2
        J0 = np.einsum("ij,jqc->iqc", d0[:, None] * W0[:, :N], J0)
        J0[rows, rows] += d0[:, None] * a0[None, :]
        J1 = np.einsum("ij,jqc->iqc", d1[:, None] * W1[:, :N], J1)
        J1[rows, rows] += d1[:, None] * a1[None, :]
        e = softmax(V @ h1n + b)
        e[y] -= 1.0
        L1 = V.T @ e
        L0 = W1[:, N:2 * N].T @ (d1 * L1)
        G0 += np.einsum("i,iqc->qc", L0, J0)
        G1 += np.einsum("i,iqc->qc", L1, J1)
        h0, h1 = h0n, h1n
    return {"W_l0": G0, "W_l1": G1}


def test_batch_of_streams_equals_stream_by_stream():
    """On numba the streams of a batch share the forward pass and backprop (GEMMs over
    the batch), then each stream's layer signals and run tables; the numpy module steps
    them one by one: the same numbers, with a stream reset halfway."""
    from test_batch import _run
    cell = rg.cells.tanh_rnn(N_IN, N, N_OUT, layers=2)
    rng = np.random.default_rng(5)
    xs, ys = rng.standard_normal((10, 3, N_IN)), rng.integers(0, N_OUT, (10, 3))
    resets = np.zeros((10, 3), bool)
    resets[4, 1] = True
    out = []
    for backend in ("numba", "numpy"):
        est = rg.compile(cell, "layer-rtrl", backend=backend)
        assert ("def est_rest(" in est.source) == (backend == "numba")
        out.append(_run(est, est.pack(est.init_params(3)), xs, ys, resets))
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_two_layer_tanh_equals_the_rule_written_from_its_definition(backend):
    cell = rg.cells.tanh_rnn(N_IN, N, N_OUT, layers=2)
    est = rg.compile(cell, "layer-rtrl", backend=backend)
    p = est.init_params(3)
    xs, ys = data()
    g = est.total_gradient(p, xs, ys)
    ref = layer_local_reference(p, xs, ys)
    assert rel(g, ref) < 1e-12
    # the top layer and the readout are exact; the lower layer is not
    gr = rg.compile(cell, "rtrl", backend="numpy").total_gradient(p, xs, ys)
    assert rel(g, gr, ["W_l1", "V", "b"]) < 1e-12
    assert rel(g, gr, ["W_l0"]) > 1e-3


ONE_COMPONENT = {
    "tanh": lambda: rg.cells.tanh_rnn(N_IN, N, N_OUT),
    "rnn_pytorch": lambda: rg.cells.tanh_rnn(N_IN, N, N_OUT, form="pytorch"),
    "lstm": lambda: rg.cells.lstm(N_IN, N, N_OUT),
    "lstm_pytorch": lambda: rg.cells.lstm(N_IN, N, N_OUT, form="pytorch"),
    "gru": lambda: rg.cells.gru(N_IN, N, N_OUT),
    "gru_pytorch": lambda: rg.cells.gru(N_IN, N, N_OUT, form="pytorch"),
    "rhn": lambda: rg.cells.rhn(N_IN, N, N_OUT),
    "leaky": lambda: rg.cells.leaky_rnn(N_IN, N, N_OUT),
    "indrnn": lambda: rg.cells.indrnn(N_IN, N, N_OUT),
    "lru": lambda: rg.cells.lru(N_IN, N, N_OUT),
    "lif": lambda: rg.cells.lif(N_IN, N, N_OUT),
    "alif": lambda: rg.cells.alif(N_IN, N, N_OUT),
}


@pytest.mark.parametrize("name", sorted(ONE_COMPONENT))
def test_one_component_builtins_equal_rtrl(name):
    cell = ONE_COMPONENT[name]()
    an = rg.analyze(cell)
    assert len(an.components) == 1
    assert set(an.components[0].params) == set(an.recurrent)
    rtrl = rg.compile(cell, "rtrl", backend="numpy")
    p = rtrl.init_params(1)
    xs, ys = data(seed=1, T=20)
    if name in ("lif", "alif"):
        xs = 3.0 * np.abs(xs)          # drive the neurons so that they spike
    g = rg.compile(cell, "layer-rtrl", backend="numpy").total_gradient(p, xs, ys)
    assert rel(g, rtrl.total_gradient(p, xs, ys)) < 1e-12


@pytest.mark.parametrize("n", [8, 16])
def test_lru_snap1_and_layer_rtrl_are_rtrl_at_the_cost_of_the_forward_pass(n):
    """One LRU layer without an encoder (n_in = the model width): D is block-diagonal
    with a 2x2 block per complex unit, each parameter reaches its own unit's two states,
    so SnAp-1's and layer-rtrl's masks keep 2 entries per parameter, all of RTRL's."""
    cell = rg.cells.lru(n, n, 3)
    an = rg.analyze(cell)
    assert an.components[0].diagonal
    rtrl = rg.compile(cell, "rtrl", backend="numpy")
    p = rtrl.init_params(2)
    xs, ys = data(n_in=n, n_out=3, T=25, seed=2)
    gr = rtrl.total_gradient(p, xs, ys)
    fams = {f.key: f for f in families(an)}
    for name in ("snap-1", "layer-rtrl"):
        est = rg.compile(cell, name, backend="numpy")
        assert rel(est.total_gradient(p, xs, ys), gr) < 1e-12, name
        assert est.spec.kept == 2 * an.n_rec, name
        assert fams[name].memory.stream["J"] == 2 * an.n_rec, name     # O(P)
    assert fams["rtrl"].memory.stream["G"] == 2 * n * an.n_rec       # RTRL: O(nP)


def test_lru_on_numba_equals_numpy():
    cell = rg.cells.lru(4, 4, 3, layers=2)
    xs, ys = data(n_in=4, n_out=3, seed=4)
    a = rg.compile(cell, "layer-rtrl", backend="numba")
    b = rg.compile(cell, "layer-rtrl", backend="numpy")
    p = a.init_params(0)
    assert rel(a.total_gradient(p, xs, ys), b.total_gradient(p, xs, ys)) < 1e-12


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(framework_stacks(), st.integers(0, 2**16))
def test_components_of_generated_stacks_are_their_layers(cell, seed):
    """A generated stack's components are its layers, in order, each with its own
    layer's parameters; an LRU layer's output map (C, D) enters the layer above, which
    reads it."""
    an = rg.analyze(cell)
    layers = sorted({nd.name[-1] for nd in cell.nodes if nd.kind == "state"})
    assert len(an.components) == len(layers)
    for k, comp in enumerate(an.components):
        assert {s[-1] for s in comp.states} == {layers[k]}
        assert comp.params
        for p in comp.params:
            assert p[-1] == layers[k] or (p[0] in "CD" and p[-1] == layers[k - 1]), p
    assert sorted(p for c in an.components for p in c.params) == sorted(an.recurrent)
    report = an.report()
    assert "recurrent components" in report and "per component" in report


def test_report_lists_components_and_refusals_are_clear():
    an = rg.analyze(rg.cells.lstm(3, 4, 2, layers=2))
    text = an.report()
    assert "0: h_l0[4], c_l0[4]; parameters W_l0 (dense recurrence)" in text
    assert "1: h_l1[4], c_l1[4]; parameters W_l1 (dense recurrence)" in text
    assert "(diagonal recurrence)" in rg.analyze(rg.cells.lru(4, 4, 2)).report()
    assert "parameters per component" in text
    c = rg.Cell("ff")                       # no recurrent parameter: refused
    x = c.input("x", 2)
    h = c.state("h", 2)
    c.update(h, rg.tanh(1.0 * x))
    c.output("y", c.param("V", (2, 2)) @ h)
    with pytest.raises(rg.NotApplicable, match="layer-rtrl does not apply"):
        rg.compile(c, "layer-rtrl", backend="numpy")


def test_cli_train_and_export(tmp_path):
    from rgraph.cli import main
    out = tmp_path / "run"
    assert main(["train", "tanh", "--layers", "2", "-n", "4", "--task", "anbn", "-e",
                 "layer-rtrl", "--steps", "60", "--backend", "numpy", "--out", str(out),
                 "--quiet"]) == 0
    assert (out / "config.json").exists()
    path = tmp_path / "m.py"
    assert main(["export", "tanh", "--layers", "2", "--hidden", "4", "-e", "layer-rtrl",
                 "-o", str(path)]) == 0
    text = path.read_text()
    assert "def layer_signals(" in text and "vjp_signal_1(" in text
