"""A batch of streams stepped at once: kernels over the batch (``kernel.batched``) run
their products as GEMMs over the streams, and UORO's batch step gives what stepping the
streams one by one gives (same noise, same estimate), resets included."""
import numpy as np
import pytest

import rgraph as rg
from rgraph import autodiff
from rgraph import kernel as K
from rgraph.autodiff import CotangentSpec, ParamTangents, TangentSpec
from rgraph.backends.numba_backend import NumbaBackend
from rgraph.build import build_kernels
from rgraph.codegen import load
from rgraph.layout import Layout
from rgraph.schedule import schedule
from rgraph.training.optim import SGD

from conftest import ZOO, compiled, params_for

CELLS = {"lstm": lambda: rg.cells.lstm(3, 5, 3),
         "gru_pytorch": lambda: rg.cells.gru(3, 4, 3, form="pytorch"),
         "rnn_pytorch": lambda: rg.cells.tanh_rnn(3, 4, 3, form="pytorch")}


@pytest.mark.parametrize("cell_name", ["lstm", "gru_pytorch"])
def test_batched_kernels_equal_one_stream_each(cell_name):
    """forward, the loss's vjp (θ's cotangents summed over the streams) and the state's
    jvp over a batch equal the one-stream kernels applied to each stream."""
    lay = Layout(CELLS[cell_name]())
    sch = schedule(lay)
    fw = autodiff.forward(lay, sch)
    vjp = autodiff.vjp(lay, sch, "vjp_out", CotangentSpec(
        (lay.loss_output_id,), frozenset(("params", "state")), False, frozenset()))
    jvp = autodiff.jvp(lay, sch, "jvp_state", TangentSpec(None, ParamTangents.NONE))
    jvp.args = ("th", "v", "sd", "vd", "nd")
    kernels = [fw, vjp, jvp, K.batched(fw, "forward_b"),
               K.batched(vjp, "vjp_out_b", ("th", "const", "thb")),
               K.batched(jvp, "jvp_state_b")]
    src, names = build_kernels(lay, kernels, NumbaBackend(), f"batched {cell_name}")
    assert "rg_gemm_float64(" in src
    mod = load(src, NumbaBackend(), f"test_batch_{cell_name}", in_process=True).module
    f = {k: getattr(mod, v) for k, v in names.items()}
    rng = np.random.default_rng(0)
    B, S, NV = 5, lay.n_state, lay.n_values
    th = 0.5 * rng.standard_normal(lay.n_params)
    V = np.zeros((B, NV))
    V[:, :S + lay.n_in] = rng.standard_normal((B, S + lay.n_in))
    V1 = V.copy()
    f["forward_b"](th, V)
    for b in range(B):
        f["forward"](th, V1[b])
    np.testing.assert_allclose(V, V1, rtol=1e-13, atol=1e-14)
    VB = rng.standard_normal((B, NV))
    VB1, g, g1 = VB.copy(), np.zeros(lay.n_params), np.zeros(lay.n_params)
    f["vjp_out_b"](th, V, VB, g)
    for b in range(B):
        f["vjp_out"](th, V1[b], VB1[b], g1)
    np.testing.assert_allclose(VB, VB1, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g, g1, rtol=1e-12, atol=1e-13)
    SD, ND, ND1 = rng.standard_normal((B, S)), np.zeros((B, S)), np.zeros((B, S))
    f["jvp_state_b"](th, V, SD, np.zeros((B, NV)), ND)
    for b in range(B):
        f["jvp_state"](th, V1[b], SD[b], np.zeros(NV), ND1[b])
    np.testing.assert_allclose(ND, ND1, rtol=1e-12, atol=1e-13)


def test_batched_refuses_to_overwrite_a_shared_buffer():
    """Over a batch, a shared buffer (θ's cotangents) can only be added to: a vjp that
    overwrites its recurrent blocks (PyTorch's GRU: a bias's block is overwritten
    elementwise) cannot be batched with thb shared."""
    lay = Layout(CELLS["gru_pytorch"]())
    vjp = autodiff.vjp(lay, schedule(lay), "vjp_z", CotangentSpec(
        tuple(lay.new_state), frozenset(("params",)), True, frozenset()))
    with pytest.raises(ValueError, match="overwrites the shared buffer thb"):
        K.batched(vjp, "vjp_z_b", ("th", "const", "thb"))
    assert K.batched(vjp, "vjp_z_b").streams == ("v", "vb", "thb")


def _run(est, th, xs, ys, resets, seed=7):
    T, B = xs.shape[:2]
    states, E = est.new_state(B, T)
    g, losses = np.zeros(est.n_params), np.zeros((T, B))
    opt, hp = np.zeros(1 + 2 * est.n_params), SGD(0.0).hyper()
    bad = est.call("run", th, states, E, xs, ys, np.ones((T, B)), resets,
                   np.random.default_rng(seed), g, opt, hp, losses, 0, 1, False)
    assert bad == 0
    return g, states, E, losses


@pytest.mark.parametrize("cell_name,name,opts", [
    ("lstm", "uoro", {"rank": 2}),
    ("gru_pytorch", "projected-uoro", {"projection": "preactivation"}),
    ("rnn_pytorch", "projected-uoro", {"projection": "preactivation", "alpha": 0.5,
                                       "Q0": np.diag([1.0, 2.0, 0.5, 1.5])}),
])
def test_uoro_batch_step_equals_stream_by_stream(cell_name, name, opts):
    """The numba module steps every stream at once (est_batch); the numpy module steps
    them one by one. Same seed, same noise: the same gradient, states, estimator states
    and losses, with a stream reset halfway."""
    rng = np.random.default_rng(0)
    T, B = 12, 4
    xs = rng.standard_normal((T, B, 3))
    ys = rng.integers(0, 3, (T, B))
    resets = np.zeros((T, B), bool)
    resets[5, 2] = True
    out = []
    for backend in ("numba", "numpy"):
        est = rg.compile(CELLS[cell_name](), name, backend=backend, **opts)
        assert ("est_batch" in est.source) == (backend == "numba")
        out.append(_run(est, est.pack(est.init_params(3)), xs, ys, resets))
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("cell_name,name", [
    ("lstm", "kf-rtrl"), ("lstm", "rtrl"), ("rhn", "snap-1"),
    ("lstm", "e-prop"), ("gru", "uoro")])
def test_batch_of_forward_passes_then_each_streams_rest(cell_name, name):
    """Every estimator whose step is forward_and_backprop, then its own work, then
    gather_new gets the forward pass and backprop of the whole batch as GEMMs
    (common.batch_step), then each stream's rest in the one-stream order: the same
    numbers as stepping the streams one by one (Cho's GRU's UORO takes this path: its
    terms are not one per parameter)."""
    rng = np.random.default_rng(1)
    T, B = 10, 3
    n_in = ZOO[cell_name]().nodes[0].shape[0]
    xs = rng.standard_normal((T, B, n_in))
    ys = rng.integers(0, 3, (T, B))
    resets = np.zeros((T, B), bool)
    resets[4, 1] = True
    out = []
    for backend in ("numba", "numpy"):
        est = compiled(cell_name, name, backend)
        assert ("def est_rest(" in est.source) == (backend == "numba")
        out.append(_run(est, est.pack(params_for(est, 3)), xs, ys, resets))
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_ok_takes_the_batch_step_of_forward_passes():
    """OK's step has KF-RTRL's form: its module has the batch step (its numbers are
    KF-RTRL's path's, checked above; compiling OK's loop twice more would cost 25 s)."""
    src = compiled("lstm", "ok(2)", "numba").source
    assert "def est_rest(" in src and "def run_batch(" in src


@pytest.mark.parametrize("name,opts", [("dodge", {}), ("tbptt(4)", {}),
                                       ("e-prop", {"feedback": "random"})])
def test_steps_of_another_form_go_stream_by_stream(name, opts):
    """A step that keeps θ's cotangents apart (DODGE, random-feedback e-prop) or works
    at segment ends (truncated BPTT) has no batch step: run steps the streams in turn."""
    src = compiled("lstm", name, "numba", **opts).source
    assert "run_batch" not in src and "def est_step" in src


@pytest.mark.parametrize("name,opts", [("uoro", {}),
                                       ("projected-uoro", {"projection": "preactivation"})])
def test_uoro_batch_step_is_unbiased(name, opts):
    """Over many seeds, the mean of the batch step's estimate (B streams on the same
    sequence, each with its own noise: the sum estimates B times the gradient) is the
    exact gradient, along the exact gradient and two random directions."""
    from test_estimators import exact_case
    xs, ys, p, exact = exact_case("lstm")
    est = compiled("lstm", name, "numba", **opts)
    rec = [b.name for b in est.blocks if b.recurrent]
    g0 = np.concatenate([exact[k].ravel() for k in rec])
    rng = np.random.default_rng(12345)
    dirs = np.stack([g0 / np.linalg.norm(g0), rng.standard_normal(g0.size),
                     rng.standard_normal(g0.size)])
    B, T = 4, xs.shape[0]
    xb, yb = np.repeat(xs[:, None], B, 1), np.repeat(ys[:, None], B, 1)
    th, stats = est.pack(p), []
    for seed in range(300):
        g = _run(est, th, xb, yb, np.zeros((T, B), bool), seed=seed)[0] / B
        gd = est.unpack(g)
        for k in exact:
            if k not in rec:       # the readout's gradient is exact
                np.testing.assert_allclose(gd[k], exact[k], rtol=1e-9, atol=1e-12)
        stats.append(dirs @ np.concatenate([gd[k].ravel() for k in rec]))
    stats = np.array(stats)
    z = np.abs(stats.mean(0) - dirs @ g0) / (stats.std(0, ddof=1) / np.sqrt(len(stats)))
    assert np.all(z < 4.0), z


def test_the_report_says_what_runs_over_a_batch():
    """rg.analyze(cell).report() says, per estimator, what of a step runs as GEMMs over
    a batch of streams."""
    report = rg.analyze(CELLS["lstm"]()).report()
    rows = {ln.split()[0]: ln for ln in report.splitlines()[
        report.splitlines().index(next(ln for ln in report.splitlines()
                                       if "batch of streams" in ln and "estimator" in ln)):]
            if ln.startswith("  ")}
    assert rows["uoro"].endswith("fwd + bwd + jvp")
    assert rows["kf-rtrl"].endswith("fwd + bwd") and rows["rtrl"].endswith("fwd + bwd")
    assert rows["dodge"].endswith("one by one") and rows["bptt"].endswith("one by one")


def test_one_input_and_one_output():
    """A product with one column (W_ih of one input: its transpose is one row) or one
    row (a readout of one output) over the batch: BLAS needs leading dimensions at least
    the row length there, whatever the unused stride is."""
    rng = np.random.default_rng(2)
    T, B = 9, 4
    xs, ys = rng.standard_normal((T, B, 1)), rng.standard_normal((T, B, 1))
    resets = np.zeros((T, B), bool)
    out = []
    for backend in ("numba", "numpy"):
        est = rg.compile(rg.cells.tanh_rnn(1, 4, 1, form="pytorch"), "uoro", loss="mse",
                         backend=backend)
        out.append(_run(est, est.pack(est.init_params(3)), xs, ys, resets))
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
