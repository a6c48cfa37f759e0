"""The built-in cells as frameworks write them: rnn, lstm and gru with form="pytorch"
(PyTorch's parameters, gate orders, step equations and init) and the leaky RNN, each
step checked against PyTorch's documented equations written here in NumPy; PyTorch-style
state dicts (.npz, no torch needed); the init bounds; the generated derivatives."""
import json

import numpy as np
import pytest

import rgraph as rg
from rgraph.checks import KernelSet, check_derivatives
from rgraph.graph import init_param

N_IN, N, N_OUT = 3, 4, 2
ALPHA = 0.3


def sig(u):
    return 1.0 / (1.0 + np.exp(-u))


# --- PyTorch's documented equations (torch.nn.RNN, LSTM, GRU), written independently
def ref_rnn(P, s, x):
    h = s
    h_new = np.tanh(P["weight_ih"] @ x + P["bias_ih"] + P["weight_hh"] @ h + P["bias_hh"])
    return [h_new]


def ref_lstm(P, s, x):
    h, c = s[:N], s[N:]
    gates = P["weight_ih"] @ x + P["bias_ih"] + P["weight_hh"] @ h + P["bias_hh"]
    i, f, g, o = np.split(gates, 4)
    c_new = sig(f) * c + sig(i) * np.tanh(g)
    h_new = sig(o) * np.tanh(c_new)
    return [h_new, c_new]          # the cell's states in order: h, c


def ref_gru(P, s, x):
    h = s
    gi = P["weight_ih"] @ x + P["bias_ih"]
    gh = P["weight_hh"] @ h + P["bias_hh"]
    i_r, i_z, i_n = np.split(gi, 3)
    h_r, h_z, h_n = np.split(gh, 3)
    r = sig(i_r + h_r)
    z = sig(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return [(1 - z) * n + z * h]


def ref_leaky(P, s, x):
    a = s
    return [(1 - ALPHA) * a + ALPHA * np.tanh(P["W_rec"] @ a + P["W_in"] @ x + P["b_rec"])]


CELLS = {
    "rnn": (lambda: rg.cells.rnn(N_IN, N, N_OUT, form="pytorch"), ref_rnn, 1),
    "lstm": (lambda: rg.cells.lstm(N_IN, N, N_OUT, form="pytorch"), ref_lstm, 4),
    "gru": (lambda: rg.cells.gru(N_IN, N, N_OUT, form="pytorch"), ref_gru, 3),
    "leaky": (lambda: rg.cells.leaky_rnn(N_IN, N, N_OUT, alpha=ALPHA), ref_leaky, 1),
}
TORCH = ["rnn", "lstm", "gru"]
TORCH_NAMES = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "V", "b"]

_kernels = {}


def kernels(name):
    if name not in _kernels:
        _kernels[name] = KernelSet(CELLS[name][0](), "numpy")
    return _kernels[name]


def random_params(cell, seed):
    """Each parameter from its init, plus noise (so zero-initialized biases count)."""
    rng = np.random.default_rng(seed)
    return {nd.name: init_param(nd, rng) + 0.3 * rng.standard_normal(nd.shape)
            for nd in cell.nodes if nd.kind == "param"}


def pack(ks, params):
    th = np.empty(ks.p.n_params)
    for b in ks.p.param_blocks:
        th[b.off:b.off + b.size] = params[b.name].ravel()
    return th


def reference(name, P, s, x):
    new = CELLS[name][1](P, s, x)
    return np.concatenate(new + [P["V"] @ new[0] + P["b"]])


def step_both(name, params, seed):
    """(rgraph's new states ++ logits, the NumPy reference's) at a random state, input."""
    ks = kernels(name)
    rng = np.random.default_rng(seed + 100)
    s, x = rng.standard_normal(ks.p.n_state), rng.standard_normal(N_IN)
    got, _ = ks.step(pack(ks, params), s, x)
    return got, reference(name, params, s, x)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_one_step_matches_the_documented_equations(name):
    ks = kernels(name)
    for seed in (0, 1, 2):
        got, want = step_both(name, random_params(ks.cell, seed), seed)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", TORCH)
def test_pytorch_parameters_and_names(name):
    cell = CELLS[name][0]()
    G = CELLS[name][2]
    shapes = {nd.name: nd.shape for nd in cell.nodes if nd.kind == "param"}
    assert shapes == {"weight_ih": (G * N, N_IN), "weight_hh": (G * N, N),
                      "bias_ih": (G * N,), "bias_hh": (G * N,), "V": (N_OUT, N),
                      "b": (N_OUT,)}
    assert cell.name == f"{name}_pytorch"
    named = {nd.name for nd in cell.nodes}
    assert {"rnn": {"z"}, "lstm": {"gates", "i_gate", "f_gate", "g_cand", "o_gate"},
            "gru": {"gi", "gh", "r_gate", "z_gate", "n_cand"}}[name] <= named


@pytest.mark.parametrize("name", TORCH)
def test_init_is_pytorchs_uniform_over_the_hidden_size(name):
    """Every parameter of the recurrence from U(±1/√n), n the hidden size, also
    weight_ih whose fan-in is n_in (here 128 > n = 32: a fan-in bound would be half)."""
    n_in, n = 128, 32
    cell = {"rnn": rg.cells.tanh_rnn, "lstm": rg.cells.lstm,
            "gru": rg.cells.gru}[name](n_in, n, 2, form="pytorch")
    rng = np.random.default_rng(3)
    params = {nd.name: init_param(nd, rng) for nd in cell.nodes if nd.kind == "param"}
    bound = 1 / np.sqrt(n)
    for key in TORCH_NAMES[:4]:
        a = np.abs(params[key])
        assert np.all(a <= bound), key
        assert a.max() > 0.8 * bound and a.max() > 1 / np.sqrt(n_in), key   # not tiny
        assert 0.35 * bound < a.mean() < 0.65 * bound, key                  # uniform


def test_default_form_is_unchanged_and_bad_options_are_refused():
    assert [nd.name for nd in rg.cells.lstm(2, 3, 2).nodes if nd.kind == "param"] == \
        ["W", "V", "b"]
    assert rg.cells.gru(2, 3, 2, form="concat").name == "gru"
    with pytest.raises(ValueError, match="form must be one of"):
        rg.cells.lstm(2, 3, 2, form="torch")
    for alpha in (0, 1.5, "0.1"):
        with pytest.raises(ValueError, match="alpha must be a number in"):
            rg.cells.leaky_rnn(2, 3, 2, alpha=alpha)
    assert rg.cells.CELLS["leaky"] is rg.cells.leaky_rnn
    assert rg.cells.leaky_rnn(2, 3, 2, alpha=1).updates    # a_t = tanh(...), no leak


@pytest.mark.parametrize("name", sorted(CELLS))
def test_derivatives(name):
    err = check_derivatives(kernels(name).cell, "numpy", kernels=kernels(name))
    assert max(err.values()) < 1e-6, err


# ------------------------------------------------------------------ state dicts
@pytest.mark.parametrize("name", TORCH)
def test_state_dict_round_trip_and_step(name, tmp_path):
    cell = kernels(name).cell
    params = random_params(cell, 7)
    path = tmp_path / f"{name}.npz"
    assert rg.cells.save_state_dict(params, path, cell) == path
    with np.load(path) as z:
        assert sorted(z.files) == sorted(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                          "bias_hh_l0", "V", "b"])
        np.testing.assert_array_equal(z["weight_hh_l0"], params["weight_hh"])
    for loaded in (rg.cells.load_state_dict(path), rg.cells.load_state_dict(path, cell)):
        assert sorted(loaded) == sorted(params)
        for k in params:
            assert loaded[k].dtype == np.float64 and np.array_equal(loaded[k], params[k]), k
    got, want = step_both(name, rg.cells.load_state_dict(path, cell), 5)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # the arrays a float32 torch module would hand over are taken as float64
    sd = {k: v.astype(np.float32) for k, v in rg.cells.to_state_dict(params).items()}
    back = rg.cells.from_state_dict(sd, cell)
    assert all(back[k].dtype == np.float64 for k in back)


def bad_state_dicts():
    lstm = rg.cells.lstm(N_IN, N, N_OUT, form="pytorch")
    good = rg.cells.to_state_dict(random_params(lstm, 0))

    def edit(**kw):
        sd = dict(good)
        for k, v in kw.items():
            if v is None:
                del sd[k]
            else:
                sd[k] = v
        return sd
    return [
        (edit(bias_hh_l0=None), None, ["missing key(s) ['bias_hh_l0']"]),
        (edit(weight_ih_l1=good["weight_ih_l0"]), None, ["unknown key(s) ['weight_ih_l1']"]),
        (edit(weight_ih=good["weight_ih_l0"]), None, ["unknown key(s) ['weight_ih']"]),
        (edit(weight_hh_l0=np.zeros((16, 5))), lstm,
         ["weight_hh_l0", "shape (16, 5)", "expected (16, 4)"]),
        (edit(bias_ih_l0=np.zeros(12)), None, ["bias_ih_l0", "shape (12,)", "expected (16,)"]),
        (edit(weight_hh_l0=np.zeros((10, 4))), None,
         ["weight_hh_l0", "shape (10, 4)", "G = 1 (RNN), 3 (GRU) or 4 (LSTM)"]),
        (edit(weight_ih_l0=np.zeros((16, 3, 1))), None,
         ["weight_ih_l0", "shape (16, 3, 1)", "expected (16, n_in)"]),
        (edit(b=np.zeros(3)), lstm, ["b has shape (3,)", "expected (2,)"]),
        (edit(weight_ih_l0=np.array([["a"]])), None, ["weight_ih_l0", "dtype"]),
        (good, rg.cells.gru(N_IN, N, N_OUT, form="pytorch"),
         ["weight_ih_l0", "shape (16, 3)", "expected (12, 3)"]),
        (good, rg.cells.lstm(N_IN, N, N_OUT), ["not PyTorch's", "form='pytorch'"]),
    ]


@pytest.mark.parametrize("case", range(11))
def test_bad_state_dicts_give_one_line_errors(case, tmp_path):
    sd, cell, parts = bad_state_dicts()[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **sd)
    for load in (lambda: rg.cells.load_state_dict(path, cell),
                 lambda: rg.cells.from_state_dict(sd, cell)):
        with pytest.raises(rg.DataError) as e:
            load()
        msg = str(e.value)
        assert "\n" not in msg and all(p in msg for p in parts), msg


def test_bad_params_and_files_give_one_line_errors(tmp_path):
    concat = {"W": np.zeros((16, 8)), "V": np.zeros((2, 4)), "b": np.zeros(2)}
    with pytest.raises(rg.DataError, match=r"unknown key\(s\) \['W'\].*form='pytorch'"):
        rg.cells.save_state_dict(concat, tmp_path / "x.npz")
    leaky = random_params(kernels("leaky").cell, 0)
    with pytest.raises(rg.DataError, match=r"missing key\(s\) \['weight_ih'"):
        rg.cells.to_state_dict(leaky)
    one = tmp_path / "one.npy"
    np.save(one, np.zeros(3))
    with pytest.raises(rg.DataError, match="not an .npz"):
        rg.cells.load_state_dict(one)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(rg.DataError, match="cannot read"):
        rg.cells.load_state_dict(junk)
    assert not (tmp_path / "x.npz").exists()


def test_cli_form_option(capsys):
    from rgraph.cli import main
    assert main(["inspect", "lstm", "--form", "pytorch", "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "cell lstm_pytorch:" in out and "weight_hh" in out
    assert main(["inspect", "leaky", "-n", "3"]) == 0
    assert "cell leaky_rnn:" in capsys.readouterr().out
    assert main(["inspect", "rhn", "--form", "pytorch"]) == 2
    assert "only the built-in cells tanh, lstm, gru have a PyTorch form" in \
        capsys.readouterr().err


# ------------------------------------------------------------- layers= (num_layers)
def _layer_params(P, k):
    return {w: P[f"{w}_l{k}"] for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


@pytest.mark.parametrize("name", TORCH)
@pytest.mark.parametrize("layers", [2, 3])
def test_stacked_pytorch_layers_match_the_documented_equations(name, layers):
    """layers=L is PyTorch's num_layers: layer l reads layer l-1's new h (layer 0 reads
    x), each with its own four parameters named as PyTorch's state dict names them; the
    readout reads the top layer. Checked against the one-layer equations above, layer
    by layer, and through a state dict that a one-layer reading cannot take."""
    ref, G = CELLS[name][1], CELLS[name][2]
    cell = {"rnn": rg.cells.rnn, "lstm": rg.cells.lstm, "gru": rg.cells.gru}[name](
        N_IN, N, N_OUT, form="pytorch", layers=layers)
    assert cell.name == f"{name}_pytorch_x{layers}"
    shapes = {nd.name: nd.shape for nd in cell.nodes if nd.kind == "param"}
    assert shapes["weight_ih_l0"] == (G * N, N_IN)
    assert all(shapes[f"weight_ih_l{k}"] == (G * N, N) for k in range(1, layers))
    ks = KernelSet(cell, "numpy")
    P = random_params(cell, 5)
    rng = np.random.default_rng(7)
    s, x = rng.standard_normal(ks.p.n_state), rng.standard_normal(N_IN)
    got, _ = ks.step(pack(ks, P), s, x)
    per = len(s) // layers          # each layer's states, in the cell's order (h, c)
    want, below = [], x
    for k in range(layers):
        new = ref(_layer_params(P, k), s[k * per:(k + 1) * per], below)
        want += new
        below = new[0]
    want = np.concatenate(want + [P["V"] @ below + P["b"]])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    sd = rg.cells.to_state_dict(P)
    assert sorted(sd) == sorted([f"{w}_l{k}" for k in range(layers) for w in
                                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh")] + ["V", "b"])
    back = rg.cells.from_state_dict(sd, cell)
    assert all(np.array_equal(back[k], P[k]) for k in P)
    with pytest.raises(rg.DataError, match=r"shape \(.*expected"):
        rg.cells.from_state_dict({**sd, "weight_ih_l1": sd["weight_ih_l0"]})


@pytest.mark.parametrize("kind", ["tanh", "lstm", "gru"])
@pytest.mark.parametrize("form", ["concat", "pytorch"])
def test_stacked_builtins_every_exact_path_and_every_family(kind, form):
    """Two-layer built-ins in both forms: the exact paths agree with BPTT and finite
    differences, and every family the report lists compiles and runs (numpy)."""
    from test_shapes import check_exact_paths
    cell = rg.cells.CELLS[kind](N_IN, N, N_OUT, form=form, layers=2)
    assert [nd.name for nd in cell.nodes if nd.kind == "state"][:1] == ["h_l0"]
    check_exact_paths(cell, seed=2)


def test_one_layer_keeps_its_names_and_layers_is_checked():
    assert rg.cells.lstm(3, 4, 2, layers=1).name == "lstm"
    assert "weight_ih" in {nd.name for nd in rg.cells.gru(3, 4, 2, form="pytorch").nodes}
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="layers must be a positive integer"):
            rg.cells.tanh_rnn(3, 4, 2, layers=bad)


def test_cli_layers_option(capsys, tmp_path):
    """--layers stacks the built-ins (inspect lists layer l's names), refuses other
    cells in one line, and a training run's config.json holds it (and omits it at 1,
    so older configs and sweep ids stay as they were)."""
    from rgraph.cli import main
    from rgraph.run import ConfigError, RunConfig
    assert main(["inspect", "gru", "--form", "pytorch", "--layers", "2", "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "cell gru_pytorch_x2:" in out and "weight_hh_l1" in out
    assert main(["inspect", "rhn", "--layers", "2"]) == 2
    assert "--layers 2: only the built-in cells tanh, lstm, gru, indrnn, lru, lif, alif " \
        "stack layers" in \
        capsys.readouterr().err
    assert "layers" not in RunConfig().to_dict()
    assert RunConfig(layers=3).to_dict()["layers"] == 3
    assert RunConfig.from_dict(RunConfig(layers=3).to_dict()).layers == 3
    with pytest.raises(ConfigError, match="layers"):
        RunConfig(layers=0)
    out_dir = tmp_path / "run"
    assert main(["train", "lstm", "--layers", "2", "-n", "3", "--task", "anbn", "-e",
                 "tbptt(4)", "--steps", "30", "--backend", "numpy", "--out",
                 str(out_dir), "--quiet"]) == 0
    assert json.loads((out_dir / "config.json").read_text())["layers"] == 2
