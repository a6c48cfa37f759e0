"""Standalone export: est.export(path) and `rgraph export` write one module that runs
without rgraph (and without scipy) and gives rgraph's numbers.

The exported file carries ``rgraph/runtime.py`` unchanged: the same pack, data checks,
init schemes and driver loop rgraph runs. Under numba it compiles its entry points the
way rgraph does (a child process compiles into numba's cache, the caller loads from
it), so a fresh process that imports it for the first time gets rgraph's numbers bit
for bit.
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
from rgraph import export as ex
from rgraph import runtime
from rgraph.cli import main

# What both sides compute: x.init_params, x.total_gradient, x.train (new params and
# per-step losses, one stream and four) on the same data.
COMPUTE = r"""
import numpy as np

def compute(x, T, n_in, n_out):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, n_out, T)
    xs, ys = np.eye(n_in)[ids % n_in], np.roll(ids, 1)
    ws = rng.uniform(0.5, 1.5, T)
    p = x.init_params(3)
    res = {"init_" + k: v for k, v in p.items()}
    g = x.total_gradient(p, xs, ys, seed=1, weights=ws)
    res.update({"grad_" + k: v for k, v in g.items()})
    pa, la = x.train(p, xs, ys, "adam", 4, 5, lr=1e-2)
    res.update({"adam_" + k: v for k, v in pa.items()}, adam_losses=la)
    ps, ls = x.train(p, xs, ys, "sgd", 1, 7, lr=0.1, decay=0.03, clip=1.0)
    res.update({"sgd_" + k: v for k, v in ps.items()}, sgd_losses=ls)
    return res
"""

# The exported side, in a fresh interpreter: neither rgraph nor scipy can be imported
# (sys.modules entries None; python -I ignores PYTHONPATH and the user's site-packages),
# and the module's folder holds no compiled code yet.
EXPORTED = COMPUTE + r"""
import sys
sys.modules["rgraph"] = None
sys.modules["scipy"] = None
folder, name, out, T, n_in, n_out = sys.argv[1:7]
sys.path.insert(0, folder)
m = __import__(name)

class X:
    init_params = staticmethod(m.init_params)
    total_gradient = staticmethod(m.total_gradient)

    @staticmethod
    def train(p, xs, ys, opt, batch, seed, **hyper):
        return m.train(p, xs, ys, optimizer=opt, batch=batch, seed=seed, **hyper)

np.savez(out, **compute(X, int(T), int(n_in), int(n_out)))
print(",".join(sorted(k for k in sys.modules if k.split(".")[0] in ("rgraph", "scipy")
                      and sys.modules[k] is not None)) or "neither")
"""


def rgraph_side(est, T):
    """COMPUTE through rgraph's API, in this process."""
    env = {}
    exec(COMPUTE, env)

    class X:
        init_params = est.init_params
        total_gradient = est.total_gradient

        @staticmethod
        def train(p, xs, ys, opt, batch, seed, **hyper):
            r = est.train(p, xs, ys, optimizer=(rg.Adam if opt == "adam" else rg.SGD)(
                **hyper), batch=batch, seed=seed)
            return r.params, r.losses
    return env["compute"](X, T, est.n_in, est.n_out)


def python(*args, isolated=False, path=None):
    """Run python with ``args``; ``path``: its PYTHONPATH (inherited by the processes it
    starts, which ``-I`` does not isolate)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
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


def imported_modules(text: str) -> set:
    mods = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mods.add(node.module.split(".")[0])
    return mods


@pytest.fixture(scope="module")
def lstm_uoro():
    return rg.compile(rg.cells.lstm(8, 16, 8), "uoro", loss="softmax_xent")


@pytest.fixture(scope="module")
def exported(lstm_uoro, tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    path = lstm_uoro.export(d / "lstm_uoro.py")
    return d, path


def test_the_runtime_imports_only_numpy_and_math():
    assert "numpy" in imported_modules(ex.runtime_source()) <= {"math", "numpy"}
    assert rg.DataError is runtime.DataError and rg.RGraphError is runtime.RGraphError
    assert issubclass(rg.ShapeError, runtime.RGraphError)


def test_the_file_carries_the_runtime_unchanged(exported, lstm_uoro):
    _, path = exported
    text = path.read_text()
    rt = ex.runtime_source()
    assert text.count(rt.rstrip("\n")) == 1
    assert text.count("def check_data(") == 1 and text.count("def draw(") == 1
    # what the file imports: the runtime's and the generated module's modules, numba's
    # llvmlite (the BLAS binding) and the standard library's (the loader's child)
    assert imported_modules(text) == {"math", "numpy", "numba", "llvmlite", "ctypes",
                                      "pickle", "subprocess", "sys", "warnings",
                                      "collections"}      # namedtuple: the scratch
    assert '__import__("scipy' not in text      # no check that scipy is there either
    doc = ast.get_docstring(ast.parse(text))
    assert "'lstm'" in doc and "uoro" in doc and "softmax_xent" in doc and "float64" in doc
    assert "needs only numpy and numba" in doc and "child process" in doc
    assert len(doc.splitlines()) <= 14
    assert "do not edit" not in text.lower() and "content hash" not in text.lower()


CASES = {"lstm uoro": (lambda: rg.cells.lstm(8, 16, 8), "uoro", 400),
         # a module that multiplies matrix tangents through BLAS (rg_gemm_rm)
         "tanh_rnn rtrl": (lambda: rg.cells.tanh_rnn(3, 5, 4), "rtrl", 120),
         # OK: Kronecker pairs (rg_gemv_t) and their reduction (Jacobi eigen- and
         # singular value decompositions in the module), no LAPACK
         "lstm ok": (lambda: rg.cells.lstm(3, 5, 3), "ok", 40)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_import_matches_rgraph_bit_for_bit(case, tmp_path):
    """A fresh interpreter without rgraph or scipy imports the module from a folder
    with no compiled code: its gradient and trained parameters are rgraph's, bit for
    bit (the child compiles, the caller loads, as in rgraph)."""
    cell, name, T = CASES[case]
    est = rg.compile(cell(), name)
    text = est.source
    assert "_rg_xxgemm_float64(" in text            # the module calls BLAS
    path = est.export(tmp_path / "m.py")
    assert not (tmp_path / "__pycache__").exists()
    # the child that compiles is not isolated: packages that fail to import come first
    # on its path, so that it cannot lean on scipy or rgraph either
    for pkg in ("scipy", "rgraph"):
        (tmp_path / "absent" / pkg).mkdir(parents=True)
        (tmp_path / "absent" / pkg / "__init__.py").write_text(
            f"raise ImportError('{pkg} is not installed here')\n")
    stdout = python("-c", EXPORTED, str(tmp_path), "m", str(tmp_path / "ex.npz"), str(T),
                    str(est.n_in), str(est.n_out), isolated=True, path=tmp_path / "absent")
    assert stdout.strip().splitlines()[-1] == "neither"
    assert any(p.suffix == ".nbi" for p in (tmp_path / "__pycache__").iterdir())
    got, ref = dict(np.load(tmp_path / "ex.npz")), rgraph_side(est, T)
    assert sorted(got) == sorted(ref)
    for key in ref:
        assert got[key].shape == ref[key].shape, key
        assert np.array_equal(got[key], ref[key]), key
    moved = [k for k in ref if k.startswith("adam_") and k != "adam_losses"
             and not np.array_equal(ref[k], ref["init_" + k[5:]])]
    assert moved and ref["sgd_losses"].shape == (T,) and ref["adam_losses"].shape == (T // 4,)
    assert path.read_text().count("def _invoke") == 1


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
    """TBPTT(4) under numba, imported here: the module's first call has a child compile
    its entry points, and this process loads them, so it runs rgraph's machine code."""
    est = rg.compile(rg.cells.tanh_rnn(3, 5, 3), "tbptt(4)")
    m = load(est.export(tmp_path / "t.py"), "exported_tbptt")
    assert m.INFO["estimator"] == "tbptt(4)"
    xs, ys, _, _ = _data(3, 3, 80)
    p = est.init_params(0)
    g1, g2 = est.total_gradient(p, xs, ys, seed=1), m.total_gradient(p, xs, ys, seed=1)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)
    r = est.train(p, xs, ys, optimizer=rg.SGD(0.05), batch=2, seed=0)
    q, losses = m.train(p, xs, ys, lr=0.05, batch=2, seed=0)
    assert all(np.array_equal(r.params[k], q[k]) for k in q)
    assert np.array_equal(r.losses, losses)
    assert json.loads(json.dumps(m.INFO))["n_state"] == 5
    with pytest.raises(m.DataError, match="xs has shape"):     # the runtime's own
        m.loss(p, xs[:, :2], ys)


def test_a_node_named_np_cannot_be_exported(tmp_path):
    c = rg.Cell("np_cell")
    x, h = c.input("x", 2), c.state("h", 3)
    h_new = c.name_node(rg.tanh(c.param("W", (3, 5)) @ rg.concat(h, x)), "np")
    c.update(h, h_new)
    c.output("y", c.param("V", (2, 3)) @ h_new)
    est = rg.compile(c, "rtrl")       # numba: the node's offset is a module-level name
    assert "np = " in est.source
    with pytest.raises(ex.ExportError, match="node named 'np'.*rename the node"):
        est.export(tmp_path / "m.py")


def test_free_names_and_module_parts():
    assert ex.free_names("def f(a):\n    return [np.x + b for b in a] + undefined\n") >= \
        {"np", "undefined"}
    assert "a" not in ex.free_names("def f(a):\n    def g():\n        return a\n    return g\n")
    assert ex.top_level_names("import numpy as np\nX = 1\ndef run():\n    pass\n") == \
        {"np", "X", "run"}
    body = ex.generated_body("# Generated by rgraph 9 (x); do not edit.\n# content hash: 1\n"
                             "# cell 'c'\n\"\"\"doc\"\"\"\nimport math\n")
    assert body == "# cell 'c'\nimport math\n"
