"""Standalone export: est.export(path) and `rgraph export` write one module that runs
without rgraph and gives rgraph's numbers.

The bit-for-bit comparison runs both sides in fresh processes on numba's cached code
(each side is warmed first): rgraph itself always runs the cached code, but the exported
module is compiled by numba in the process that first imports it, and that process runs
numba's in-memory code, which can differ from the cached object code in the last bit.
"""
import ast
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rgraph as rg
from rgraph.cli import main

# What both sides compute: x.init_params, x.total_gradient, x.train (new params and
# per-step losses) on the same data; results go to an .npz file.
COMPUTE = r'''
import sys
import numpy as np

def compute(x, out):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 8, int(sys.argv[3]))
    xs, ys = np.eye(8)[ids], np.roll(ids, 1)
    ws = rng.uniform(0.5, 1.5, len(ids))
    p = x.init_params(3)
    res = {"init_" + k: v for k, v in p.items()}
    g = x.total_gradient(p, xs, ys, seed=1, weights=ws)
    res.update({"grad_" + k: v for k, v in g.items()})
    pa, la = x.train(p, xs, ys, "adam", 4, 5, lr=1e-2)
    res.update({"adam_" + k: v for k, v in pa.items()}, adam_losses=la)
    ps, ls = x.train(p, xs, ys, "sgd", 2, 7, lr=0.1, decay=0.03, clip=1.0)
    res.update({"sgd_" + k: v for k, v in ps.items()}, sgd_losses=ls)
    np.savez(out, **res)
'''

# The exported side: rgraph cannot be imported (sys.modules entry None, and python -I
# ignores PYTHONPATH and the user's site-packages).
EXPORTED = COMPUTE + r'''
sys.modules["rgraph"] = None
try:
    import rgraph  # noqa: F401
    raise SystemExit("rgraph was importable")
except ImportError:
    pass
sys.path.insert(0, sys.argv[1])
import lstm_uoro as m

class X:
    init_params = staticmethod(m.init_params)
    total_gradient = staticmethod(m.total_gradient)

    @staticmethod
    def train(p, xs, ys, opt, batch, seed, **hyper):
        return m.train(p, xs, ys, optimizer=opt, batch=batch, seed=seed, **hyper)

compute(X, sys.argv[2])
print(",".join(sorted(k for k in sys.modules if k.split(".")[0] == "rgraph"
                      and sys.modules[k] is not None)) or "no rgraph")
'''

# The rgraph side, through the public API.
RGRAPH = COMPUTE + r'''
import rgraph as rg
est = rg.compile(rg.cells.lstm(8, 16, 8), "uoro", loss="softmax_xent")

class X:
    init_params = est.init_params
    total_gradient = est.total_gradient

    @staticmethod
    def train(p, xs, ys, opt, batch, seed, **hyper):
        r = est.train(p, xs, ys, optimizer=(rg.Adam if opt == "adam" else rg.SGD)(**hyper),
                      batch=batch, seed=seed)
        return r.params, r.losses

compute(X, sys.argv[2])
'''


def python(*args, isolated=False):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable] + (["-I"] if isolated else []) + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                         check=False)
    if out.returncode != 0:
        raise AssertionError(f"{cmd[:3]} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def lstm_uoro():
    return rg.compile(rg.cells.lstm(8, 16, 8), "uoro", loss="softmax_xent")


@pytest.fixture(scope="module")
def exported(lstm_uoro, tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    path = lstm_uoro.export(d / "lstm_uoro.py")
    return d, path


@pytest.fixture(scope="module")
def results(lstm_uoro, exported, tmp_path_factory):
    """(exported side, rgraph side) results, each computed in a fresh process on cached
    compiled code."""
    d, _ = exported
    out = tmp_path_factory.mktemp("results")
    python("-c", RGRAPH, str(d), str(out / "warm_rg.npz"), "8")        # warm both caches
    python("-c", EXPORTED, str(d), str(out / "warm_ex.npz"), "8", isolated=True)
    stdout = python("-c", EXPORTED, str(d), str(out / "ex.npz"), "400", isolated=True)
    assert stdout.strip().splitlines()[-1] == "no rgraph"
    python("-c", RGRAPH, str(d), str(out / "rg.npz"), "400")
    return dict(np.load(out / "ex.npz")), dict(np.load(out / "rg.npz"))


def test_the_file_imports_only_the_standard_library_numpy_numba(exported, lstm_uoro):
    _, path = exported
    text = path.read_text()
    mods = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mods.add(node.module.split(".")[0])
    assert mods == {"collections", "math", "numpy", "numba"}    # namedtuple: the scratch
    doc = ast.get_docstring(ast.parse(text))
    assert "'lstm'" in doc and "uoro" in doc and "softmax_xent" in doc and "float64" in doc
    assert len(doc.splitlines()) <= 14
    assert "do not edit" not in text.lower() and "content hash" not in text.lower()


def test_total_gradient_and_training_match_rgraph_bit_for_bit(results, lstm_uoro):
    ex, ref = results
    assert sorted(ex) == sorted(ref)
    names = [b.name for b in lstm_uoro.blocks]
    assert sorted(k[len("grad_"):] for k in ex if k.startswith("grad_")) == sorted(names)
    for key in ref:
        assert ex[key].shape == ref[key].shape, key
        assert np.array_equal(ex[key], ref[key]), key
    for n in names:     # training moved the parameters
        assert not np.array_equal(ref["adam_" + n], ref["init_" + n]) or \
            not np.any(ref["init_" + n])
    assert ref["adam_losses"].shape == (100,) and ref["sgd_losses"].shape == (200,)


def test_entry_points_and_layout(exported, lstm_uoro):
    _, path = exported
    m = load(path, "exported_lstm_uoro_api")
    assert set(m.__all__) >= {"total_gradient", "train", "init_params", "PARAMS", "loss"}
    assert m.PARAMS == {b.name: tuple(b.shape) for b in lstm_uoro.blocks}
    assert m.INFO["estimator"] == "uoro" and m.INFO["cell"] == "lstm"
    p0, p1 = m.init_params(0), lstm_uoro.init_params(0)
    assert all(np.array_equal(p0[k], p1[k]) for k in p1)
    with pytest.raises(ValueError, match="param 'W' has shape"):
        m.total_gradient({**p0, "W": np.zeros((2, 2))}, np.zeros((3, 8)), np.zeros(3, int))
    with pytest.raises(ValueError, match="class ids in"):
        m.loss(p0, np.zeros((3, 8)), np.array([0, 1, 9]))
    with pytest.raises(ValueError, match="adam has no option"):
        m.train(p0, np.zeros((3, 8)), np.zeros(3, int), optimizer="adam", momentum=0.9)
    with pytest.raises(ValueError, match="cannot feed 4 streams"):
        m.train(p0, np.zeros((3, 8)), np.zeros(3, int), batch=4)


def test_cli_writes_the_same_module(exported, tmp_path, capsys):
    _, path = exported
    out = tmp_path / "lstm_uoro.py"
    assert main(["export", "lstm", "--hidden", "16", "-e", "uoro", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert out.read_text() == path.read_text()
    m = load(out, "exported_lstm_uoro_cli")
    assert m.PARAMS["W"] == (64, 25)


@pytest.mark.parametrize("argv,msg", [
    (["export", "lstm", "-e", "uoro", "-o", "/nonexistent/dir/m.py"], "no such directory"),
    (["export", "lstm", "-e", "uoro", "-o", "model.txt"], "not a .py file"),
    (["export", "lstm", "-e", "nosuch", "-o", "m.py"], "nosuch"),
])
def test_cli_errors_are_one_line(argv, msg, capsys):
    assert main(argv + ["--hidden", "4", "--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_api_bad_path(lstm_uoro, tmp_path):
    with pytest.raises(rg.RGraphError, match="no such directory"):
        lstm_uoro.export(tmp_path / "missing" / "m.py")


def _data(n_in, n_out, T, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((T, n_in)), rng.integers(0, n_out, T),
            rng.uniform(0.5, 1.5, T), rng.random(T) < 0.05)


@pytest.mark.parametrize("estimator", ["kf-rtrl", "bptt"])
def test_numpy_backend_export_matches(estimator, tmp_path):
    """The numpy backend compiles nothing: the exported file, imported here, gives the
    estimator's numbers exactly (weights, resets, random resets, continued runs)."""
    est = rg.compile(rg.cells.lstm(3, 4, 3), estimator, backend="numpy")
    m = load(est.export(tmp_path / "m.py"), f"exported_numpy_{estimator.replace('-', '_')}")
    assert "numba" not in m.__doc__ and "import numba" not in (tmp_path / "m.py").read_text()
    xs, ys, ws, rs = _data(3, 3, 60)
    p = est.init_params(1)
    g1 = est.total_gradient(p, xs, ys, seed=2, weights=ws, resets=rs)
    g2 = m.total_gradient(p, xs, ys, seed=2, weights=ws, resets=rs)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)
    assert m.loss(p, xs, ys, ws, rs) == est.loss(p, xs, ys, ws, rs)
    r = est.train(p, xs, ys, optimizer=rg.Adam(1e-2, clip=0.5), batch=2, seed=3, weights=ws,
                  resets=rs, reset_prob=0.1, chunk=7)
    q, losses = m.train(p, xs, ys, optimizer="adam", lr=1e-2, clip=0.5, batch=2, seed=3,
                        weights=ws, resets=rs, reset_prob=0.1, chunk=7)
    assert all(np.array_equal(r.params[k], q[k]) for k in q)
    assert np.array_equal(r.losses, losses, equal_nan=True)
    if estimator == "kf-rtrl":      # two calls with one state dict = one call
        st = {}
        qa, la = m.train(p, xs[:25], ys[:25], lr=0.05, seed=4, chunk=10, state=st)
        qb, lb = m.train(qa, xs[25:], ys[25:], lr=0.05, seed=4, chunk=10, state=st)
        q1, l1 = m.train(p, xs, ys, lr=0.05, seed=4, chunk=10)
        assert st["step"] == 60 and np.array_equal(np.concatenate([la, lb]), l1)
        assert all(np.array_equal(qb[k], q1[k]) for k in q1)
        with pytest.raises(ValueError, match="state was made with batch=1"):
            m.train(qb, xs, ys, batch=2, seed=4, chunk=10, state=st)


def test_init_schemes_are_reproduced(tmp_path):
    c = rg.Cell("inits")
    x, h = c.input("x", 3), c.state("h", 4)
    W = c.param("W", (4, 7), init="orthogonal", scale=0.9)
    U = c.param("U", (4, 4), init="identity", scale=0.5)
    a = c.param("a", (4,), init="uniform", scale=2.0)
    gain = c.param("gain", (4,), init=np.arange(4.0) / 3)
    d = c.param("d", (4,), init="ones")
    h_new = rg.tanh(W @ rg.concat(h, x) + U @ h + a) * gain + d * 0.1
    c.update(h, h_new)
    c.output("y", c.param("V", (3, 4), init="uniform") @ h_new)
    est = rg.compile(c, "rtrl", backend="numpy")
    m = load(est.export(tmp_path / "inits.py"), "exported_inits")
    for seed in (0, 5):
        p1, p2 = est.init_params(seed), m.init_params(seed)
        assert list(p1) == list(p2)
        assert all(np.array_equal(p1[n], p2[n]) for n in p1)

    c2 = rg.Cell("custom")
    h2 = c2.state("h", 2)
    c2.input("x", 1)
    c2.update(h2, rg.tanh(c2.param("W", (2, 2), init=lambda rng, s: np.eye(2)) @ h2))
    c2.output("y", c2.param("V", (2, 2)) @ h2)
    m2 = load(rg.compile(c2, "rtrl", backend="numpy").export(tmp_path / "custom.py"),
              "exported_custom")
    assert m2.PARAMS == {"W": (2, 2), "V": (2, 2)} and "cannot draw ['W']" in m2.__doc__
    with pytest.raises(ValueError, match="'W' was initialised by a Python function"):
        m2.init_params(0)


def test_tbptt_numba_export(tmp_path):
    """TBPTT(4) under numba, imported here: this process compiles the exported file
    (numba's in-memory code) while the estimator runs cached code, so the two agree to
    round-off (rtol 1e-12), not necessarily in the last bit."""
    est = rg.compile(rg.cells.tanh_rnn(3, 5, 3), "tbptt(4)")
    m = load(est.export(tmp_path / "t.py"), "exported_tbptt")
    assert m.INFO["estimator"] == "tbptt(4)"
    xs, ys, _, _ = _data(3, 3, 80)
    p = est.init_params(0)
    g1, g2 = est.total_gradient(p, xs, ys, seed=1), m.total_gradient(p, xs, ys, seed=1)
    assert all(np.allclose(g1[k], g2[k], rtol=1e-12, atol=1e-14) for k in g1)
    r = est.train(p, xs, ys, optimizer=rg.SGD(0.05), batch=2, seed=0)
    q, losses = m.train(p, xs, ys, lr=0.05, batch=2, seed=0)
    assert all(np.allclose(r.params[k], q[k], rtol=1e-12, atol=1e-14) for k in q)
    assert np.allclose(r.losses, losses, rtol=1e-12)
    assert json.loads(json.dumps(m.INFO))["n_state"] == 5


def test_driver_free_names_are_checked():
    from rgraph import export as ex
    assert ex.free_names("def f(a):\n    return [np.x + b for b in a] + undefined\n") >= \
        {"np", "undefined"}
    assert "a" not in ex.free_names("def f(a):\n    def g():\n        return a\n    return g\n")
    assert ex.top_level_names("import numpy as np\nX = 1\ndef run():\n    pass\n") == \
        {"np", "X", "run"}
    body = ex.generated_body("# Generated by rgraph 9 (x); do not edit.\n# content hash: 1\n"
                             "# cell 'c'\n\"\"\"doc\"\"\"\nimport math\n")
    assert body == "# cell 'c'\nimport math\n"
