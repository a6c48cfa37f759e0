"""Bad input and faults, one class per kind: each gets a clear one-line error, a warning
with the figures, or is survived; none is silent, none is a traceback, nothing is lost
and nothing from a file is executed.

    TestCellDefinitions   shapes, names, cycles, sizes in the DSL
    TestData              arrays passed at run time
    TestArguments         the command line and the API's arguments, estimator names, data
    TestRunFolders        run folders are never overwritten or shared
    TestCheckpoints       no pickle, corruption caught, resume after a fault
    TestNoRecurrentParams cells whose dynamics has no trained parameter
    TestInit              absurd starts: the default init and the start warning
    TestDivergence        non-finite losses stop, diverging ones are reported or halt
    TestMemory            buffers that cannot fit are refused up front, with the figure
    TestLogs              logs that fit
    TestCache             the compiled-code cache: damaged files, unwritable and
                          read-only folders, processes compiling one module at once, the
                          same bits in the process that compiles and those that load
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

import rgraph as rg
from rgraph import cache, resources
from rgraph.backends import get_backend
from rgraph.cli import main
from rgraph.graph import Node, init_param
from rgraph.training.checkpoints import read_checkpoint
from rgraph.training.health import DivergenceMonitor

from conftest import compiled, echo_data, params_for, rgraph_cli as rgraph, sequence


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------ cells
def small():
    c = rg.Cell("small")
    x, h = c.input("x", 3), c.state("h", 4)
    W = c.param("W", (4, 8))
    return c, x, h, W


class TestCellDefinitions:
    def test_shape_mismatch_names_nodes_and_shapes(self):
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

    def test_state_without_update_and_update_of_non_state(self):
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

    def test_cycle_and_unknown_op(self):
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
    def test_names_that_are_not_identifiers(self, bad):
        with pytest.raises(rg.NameError_):
            rg.Cell("c").state(bad, 3)

    def test_name_collisions(self):
        c, x, h, W = small()
        with pytest.raises(rg.NameError_, match="already used"):
            c.input("h", 2)
        c.update(h, c.name_node(rg.tanh(W @ rg.concat(h, x, rg.const(1.0))), "z"))
        with pytest.raises(rg.NameError_, match="already used"):
            c.name_node(rg.tanh(h), "z")
        with pytest.raises(rg.NameError_, match="declared twice"):
            c.output("y", h)
            c.output("y", h)

    def test_bad_pointwise_functions(self):
        c, x, h, W = small()
        with pytest.raises(rg.GraphError, match="failed on sympy symbols"):
            rg.pointwise(lambda z: np.tanh(z) if False else [][0], h)
        import sympy as sp
        with pytest.raises(rg.GraphError, match="not supported"):
            rg.pointwise(lambda z: sp.gamma(z), h)

    def test_generated_code_never_contains_unchecked_names(self):
        # every user name passes check_name; a Node built around it is refused at use
        with pytest.raises(rg.NameError_):
            rg.Cell("x; import os")
        n = Node(0, "ok", "input", (3,))
        assert n.name == "ok"

    def test_sizes_are_integers_batches_positive_and_softmax_needs_classes(self):
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


# ------------------------------------------------------------------------------- data
class TestData:
    def test_wrong_data_shapes_and_dtypes(self):
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

    def test_nan_in_data_and_params(self):
        est = compiled("lstm", "bptt")
        p = params_for(est)
        xs, ys = sequence("lstm", T=5)
        bad = xs.copy()
        bad[3, 1] = np.nan
        with pytest.raises(rg.DataError, match="non-finite value.*step 3"):
            est.total_gradient(p, bad, ys)
        with pytest.raises(rg.DataError, match="non-finite"):
            est.total_gradient(dict(p, V=p["V"] * np.inf), xs, ys)


# -------------------------------------------------------------------------- arguments
class TestArguments:
    @pytest.mark.parametrize("argv,msg", [
        (["inspect", "nosuchcell"], "unknown cell"),
        (["inspect", "/nonexistent/file.py:f"], "cannot read"),
        (["inspect", "lstm:64"], "--hidden 64"),
        (["inspect", "lstm", "-e", "kf-rtrl", "--projection", "state"], "projection"),
        (["inspect", "gru", "-e", "kf-rtrl"], "does not apply"),
        (["train", "lstm", "--task", "charlm", "-e", "uoro"], "--text"),
        (["train", "lstm", "--task", "anbn", "--task-args", "k=5,l=2", "-e", "uoro"],
         "k <= l"),
        (["train", "lstm", "--task", "anbn"], "--estimator"),
        (["train", "--resume", "/nonexistent"], "cannot resume"),
    ])
    def test_bad_input_is_one_line_not_a_traceback(self, argv, msg, capsys, tmp_path,
                                                   monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert main(argv) == 2
        assert not (tmp_path / "runs").exists()       # no half-made run folder left behind
        assert msg in one_line(capsys)

    @pytest.mark.parametrize("argv, msg", [
        (["train", "tanh", "--task", "brackets", "-e", "uoro", "--steps", "0"], "--steps"),
        (["train", "tanh", "--task", "brackets", "-e", "uoro", "--steps", "-5"], "--steps"),
        (["train", "tanh", "--task", "brackets", "-e", "uoro", "--batch", "0"], "--batch"),
        (["train", "tanh", "--task", "brackets", "-e", "uoro", "--checkpoint-every", "0"],
         "--checkpoint-every"),
        (["train", "tanh", "--task", "brackets", "-e", "uoro", "--max-seconds", "-1"],
         "--max-seconds"),
        (["variance", "tanh", "--estimators", "uoro,uorro", "--seeds", "2", "--steps", "5"],
         "unknown estimator"),
    ])
    def test_counts_and_estimators_are_checked(self, argv, msg, capsys, tmp_path,
                                               monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert main(argv) == 2
        assert not (tmp_path / "runs").exists()
        assert msg in one_line(capsys)

    @pytest.mark.parametrize("argv", [
        ["bench", "--estimators", "uoro;uorro", "--sizes", "4", "--batches", "1"],
        ["inspect", "tanh", "-n", "4", "-e", "uorro"],
        ["export", "tanh", "-n", "4", "-e", "uorro", "-o", "never.py"],
        ["train", "tanh", "-n", "4", "--task", "brackets", "-e", "uorro"],
        ["variance", "tanh", "--estimators", "uorro", "--seeds", "2", "--steps", "5"],
    ])
    def test_an_unknown_estimator_fails_every_command_before_any_output(
            self, argv, capsys, tmp_path, monkeypatch):
        """Every command that takes an estimator: exit 2, one line naming it and the
        known ones, nothing on stdout (bench printed its table's header first, inspect
        the whole analysis)."""
        monkeypatch.chdir(tmp_path)
        assert main(argv) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert captured.out == "" and len(err.splitlines()) == 1
        assert "unknown estimator 'uorro'" in err and "kf-rtrl" in err
        assert not any(tmp_path.iterdir())

    def test_bench_outside_a_source_checkout_says_so(self, capsys, tmp_path, monkeypatch):
        """An installed wheel has no benchmarks/ folder: one line saying where to run it."""
        import rgraph.cli
        monkeypatch.setattr(rgraph.cli, "BENCHMARKS", tmp_path / "benchmarks")
        assert main(["bench"]) == 2
        assert "source checkout" in one_line(capsys)

    def test_resume_refuses_another_cell_and_records_new_steps(self, tmp_path):
        out = tmp_path / "run"
        rgraph("train", "tanh", "-n", "4", "--task", "brackets", "-e", "tbptt(4)", "--steps",
               "100", "--out", str(out), "-q")
        r = rgraph("train", "--resume", str(out), "gru", check=False)
        assert r.returncode == 2 and "the run is cell 'tanh'" in r.stderr
        rgraph("train", "--resume", str(out), "--steps", "150", "-q")
        assert json.loads((out / "config.json").read_text())["steps"] == 150

    def test_the_charlm_hint_names_a_file_that_exists_or_says_how_to_get_one(
            self, capsys, tmp_path, monkeypatch):
        """Without data (a plain clone), the hint says where to download a text, never a
        path that is not there; with the example file in $RGRAPH_DATA_DIR it names it."""
        from rgraph.tasks import CharLM
        empty = tmp_path / "nodata"
        empty.mkdir()
        monkeypatch.setenv("RGRAPH_DATA_DIR", str(empty))
        monkeypatch.chdir(tmp_path)
        assert main(["train", "lstm", "--task", "charlm", "-e", "uoro"]) == 2
        err = one_line(capsys)
        assert "download https://" in err and str(empty) not in err.split("RGRAPH_DATA_DIR")[0]
        with pytest.raises(ValueError, match="not found.*download https://") as e:
            CharLM(tmp_path / "missing.txt")
        assert "tinyshakespeare.txt (" not in str(e.value)
        (empty / "tinyshakespeare.txt").write_text("to be or not to be\n" * 50)
        assert main(["train", "lstm", "--task", "charlm", "-e", "uoro"]) == 2
        err = one_line(capsys)
        assert f"e.g. {empty / 'tinyshakespeare.txt'}" in err and "download" not in err


# ------------------------------------------------------------------------ run folders
class TestRunFolders:
    def test_run_folders_are_never_overwritten_or_shared(self, tmp_path):
        """--out at an existing run refuses and leaves it byte for byte; --force replaces
        it; runs started at once with the default folder name each keep their own."""
        args = ["tanh", "-n", "4", "--task", "brackets", "-e", "tbptt(4)", "--steps", "200",
                "-q"]
        out = tmp_path / "run"
        rgraph("train", *args, "--out", str(out))
        before = {f.name: f.read_bytes() for f in out.iterdir()}
        r = rgraph("train", *args, "--seed", "5", "--out", str(out), check=False)
        assert r.returncode == 2 and "--force" in r.stderr
        assert {f.name: f.read_bytes() for f in out.iterdir()} == before
        rgraph("train", *args, "--seed", "5", "--out", str(out), "--force")
        assert json.loads((out / "config.json").read_text())["seed"] == 5
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
        # two runs of the same configuration started at the same moment
        procs = [subprocess.Popen([sys.executable, "-m", "rgraph", "train", *args],
                                  cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
                 for _ in range(2)]
        assert all(p.wait(timeout=600) == 0 for p in procs)
        runs = sorted((tmp_path / "runs").iterdir())
        assert len(runs) == 2 and all((r / "checkpoint.npz").exists() for r in runs)


# ------------------------------------------------------------------------ checkpoints
class _RunsCode:
    """Unpickling this writes a file: the payload of a crafted checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class TestCheckpoints:
    def test_checkpoints_never_run_code_and_detect_corruption(self, tmp_path):
        """A checkpoint is an .npz of arrays plus versioned JSON: a pickle (an old
        checkpoint or a crafted one) is refused without being unpickled, and a changed
        byte in an array is caught by the checksum."""
        import pickle
        est = compiled("tanh", "uoro")
        tr = est.trainer(params_for(est), batch=2, seed=1)
        xs, ys = echo_data(40, seed=2)
        tr.run(xs, ys)
        ck = tr.save(tmp_path / "ck.npz")
        assert est.trainer(params_for(est), batch=2, seed=1).load(ck).step == tr.step
        marker = tmp_path / "pwned"
        evil = tmp_path / "evil.npz"
        evil.write_bytes(pickle.dumps({"version": 1, "x": _RunsCode(marker)}))
        with pytest.raises(rg.DataError, match="pickle"):
            est.trainer(params_for(est), batch=2).load(evil)
        assert not marker.exists()
        with np.load(ck, allow_pickle=False) as z:      # flip one number of the parameters
            files = {k: z[k] for k in z.files}
        key = next(k for k in files if k != "__checkpoint__" and files[k].size == tr.th.size)
        files[key] = files[key] + 1.0
        bad = tmp_path / "bad.npz"
        np.savez(bad, **files)
        with pytest.raises(rg.DataError, match="corrupted"):
            est.trainer(params_for(est), batch=2).load(bad)

    def test_an_old_pickle_checkpoint_is_refused_on_resume(self, tmp_path, capsys):
        out = tmp_path / "run"
        assert main(["train", "tanh", "-n", "4", "--task", "brackets", "-e", "tbptt(4)",
                     "--steps", "50", "--backend", "numpy", "--out", str(out), "-q"]) == 0
        (out / "checkpoint.npz").rename(out / "checkpoint.pkl")
        capsys.readouterr()
        assert main(["train", "--resume", str(out)]) == 2
        assert "pickle" in one_line(capsys)

    def test_interrupted_run_resumes_bit_for_bit(self, tmp_path):
        args = ["lstm", "-n", "6", "--task", "copy", "-e", "uoro", "--steps", "150000",
                "--chunk", "500", "--checkpoint-every", "1000", "--batch", "2", "--seed", "3",
                "--reset-prob", "0.001", "-q"]
        rgraph("train", *args, "--out", str(tmp_path / "whole"))
        env = dict(os.environ)
        p = subprocess.Popen([sys.executable, "-m", "rgraph", "train", *args, "--out",
                              str(tmp_path / "cut")], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        ck = tmp_path / "cut" / "checkpoint.npz"
        t0 = time.time()
        while not ck.exists() and time.time() - t0 < 300:
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=300)
        assert "stopped at step" in out, (out, err)
        rgraph("train", "--resume", str(tmp_path / "cut"), "-q")
        a = np.load(tmp_path / "whole" / "params.npz")
        b = np.load(tmp_path / "cut" / "params.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
        assert (tmp_path / "whole" / "curve.csv").read_text() == \
            (tmp_path / "cut" / "curve.csv").read_text()


    def test_a_kill_during_the_checkpoint_write_keeps_the_last_one(self, tmp_path):
        """SIGKILL after the third checkpoint's data is written but before it replaces
        the second: the second is intact, and resuming from it repeats the uninterrupted
        run bit for bit (the module is the resume test's, already compiled)."""
        args = ["lstm", "-n", "6", "--task", "copy", "-e", "uoro", "--steps", "6000",
                "--chunk", "500", "--checkpoint-every", "1000", "--batch", "2", "--seed", "4",
                "-q"]
        rgraph("train", *args, "--out", str(tmp_path / "whole"))
        cut = tmp_path / "cut"
        proc = subprocess.run([sys.executable, "-c", KILL_IN_WRITE, *args, "--out", str(cut)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert list(cut.glob("checkpoint.npz.tmp*")), "the kill came before the write"
        assert read_checkpoint(cut / "checkpoint.npz")["step"] == 2000
        rgraph("train", "--resume", str(cut), "-q")
        a = np.load(tmp_path / "whole" / "params.npz")
        b = np.load(cut / "params.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


# a training run that SIGKILLs itself inside its third checkpoint write, after the data
# is on disk and before the file replaces the previous checkpoint
KILL_IN_WRITE = """
import os, signal, sys
import numpy as np
from rgraph.cli import main
savez, writes = np.savez, [0]

def savez_then_die(f, *args, **kw):
    savez(f, *args, **kw)
    if "checkpoint.npz.tmp" in str(getattr(f, "name", "")):
        writes[0] += 1
        if writes[0] == 3:
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

np.savez = savez_then_die
sys.exit(main(["train", *sys.argv[1:]]))
"""


# ---------------------------------------------------------- no recurrent parameters
def esn_cells():
    """Cells whose state dynamics has no trained parameter: only the readout learns."""
    rng = np.random.default_rng(0)
    esn = rg.Cell("esn")              # an echo-state network: a fixed random reservoir
    x, h = esn.input("x", 3), esn.state("h", 5)
    h_new = rg.tanh(esn.const(0.3 * rng.standard_normal((5, 5)), "R") @ h
                    + esn.const(rng.standard_normal((5, 3)), "W_in") @ x)
    esn.update(h, h_new)
    esn.output("y", esn.param("V", (2, 5)) @ h_new)
    leak = rg.Cell("leak")            # a fixed leaky integrator of the input
    x, h = leak.input("x", 3), leak.state("h", 3)
    h_new = rg.tanh(0.5 * h + x)
    leak.update(h, h_new)
    leak.output("y", leak.param("V", (2, 3)) @ h_new)
    return [esn, leak]


class TestNoRecurrentParams:
    @pytest.mark.parametrize("cell", esn_cells(), ids=lambda c: c.name)
    def test_cells_without_recurrent_parameters(self, cell):
        """Analysis and report say so; exact estimators give the readout's exact
        gradient; the estimators that need recurrent parameters refuse with one clear
        reason."""
        an = rg.analyze(cell)
        assert an.recurrent == [] and an.projection_spaces == [] and not an.kronecker.ok
        assert "no recurrent parameter" in an.report()
        rng = np.random.default_rng(1)
        xs, ys = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
        exact = rg.compile(cell, "bptt", backend="numpy")
        p = exact.init_params(0)
        g = exact.total_gradient(p, xs, ys)
        for name in ("rtrl", "dodge"):
            est = rg.compile(cell, name, backend="numpy")
            assert np.allclose(est.total_gradient(p, xs, ys)["V"], g["V"], rtol=1e-12)
        for name in ("uoro", "projected-uoro", "kf-rtrl"):
            with pytest.raises(rg.NotApplicable, match="no recurrent parameter"):
                rg.compile(cell, name, backend="numpy")


# ------------------------------------------------------------------------------- init
def indrnn(n_in=3, n=16, n_out=3, u_init=None):
    """An IndRNN-like cell: an elementwise recurrent vector u, ReLU units."""
    c = rg.Cell("indrnn")
    x, h = c.input("x", n_in), c.state("h", n)
    u = c.param("u", n, **(u_init or {}))
    h_new = rg.relu(c.param("W", (n, n_in)) @ x + u * h + c.param("b", n, init="zeros"))
    c.update(h, h_new)
    c.output("y", c.param("V", (n_out, n)) @ h_new)
    return c


class TestInit:
    def test_default_init_scales_vectors_by_their_length_and_keeps_matrices(self):
        """A vector with the default init draws N(0, 1/n) (it drew N(0, 1)); matrices,
        and the random numbers every parameter consumes, are what they were."""
        cell = indrnn(n=400)
        nodes = {n.name: n for n in cell.nodes if n.kind == "param"}
        rng = np.random.default_rng(0)
        got = {name: init_param(nodes[name], rng) for name in ("W", "u", "V")}
        ref = np.random.default_rng(0)
        W = ref.standard_normal((400, 3)) / np.sqrt(3)
        u = ref.standard_normal(400)
        V = ref.standard_normal((3, 400)) / np.sqrt(400)
        assert np.array_equal(got["W"], W) and np.array_equal(got["V"], V)
        assert np.allclose(got["u"], u / 20, rtol=1e-15)
        assert 0.04 < got["u"].std() < 0.06
        lim = rg.Cell("c").param("a", 100, init="uniform", scale=2.0)
        a = init_param(lim.node, np.random.default_rng(1))
        assert np.abs(a).max() <= 0.2 and np.abs(a).max() > 0.15

    def test_an_absurd_start_warns_naming_the_largest_parameters(self):
        """A recurrent vector drawn at scale 30 makes the ReLU state explode: the first
        loss is astronomically above log K, and the warning names u first."""
        est = rg.compile(indrnn(u_init={"scale": 30.0}), "bptt", backend="numpy")
        xs, ys = echo_data(60)
        with pytest.warns(rg.InitWarning, match=r"uniform-prediction loss 1\.099.*"
                                                r"largest initial parameters: u \(rms"):
            res = est.train(est.init_params(0), xs, ys, optimizer=rg.SGD(0.0))
        assert res.steps == 60

    @pytest.mark.parametrize("cell_name", ["indrnn", "influence"])
    def test_the_default_init_starts_without_a_warning(self, cell_name):
        est = rg.compile(indrnn(), "bptt", backend="numpy") if cell_name == "indrnn" else \
            compiled(cell_name, "rtrl")
        xs, ys = echo_data(500) if cell_name == "indrnn" else sequence(cell_name, T=500)
        with warnings.catch_warnings():
            warnings.simplefilter("error", rg.TrainingWarning)
            est.train(params_for(est), xs, ys, optimizer=rg.SGD(0.0))


# ------------------------------------------------------------------------- divergence
def noisy_descent(T, seed=0):
    rng = np.random.default_rng(seed)
    return np.exp(-np.arange(T) / 3000) + 0.05 + 0.3 * rng.random(T)


def feed(curve, chunk, reference=np.log(3), start=None):
    m = DivergenceMonitor()
    if start is not None:
        m.start(start)
    for t in range(0, len(curve), chunk):
        m.update(t, curve[t:t + chunk], reference)
    return m


class TestDivergence:
    def test_a_non_finite_loss_is_an_error_not_a_silent_nan(self):
        est = compiled("tanh", "uoro")
        p = params_for(est)
        xs, ys = sequence("tanh", T=50)
        p["V"][:] = 1e308                      # the logits overflow to inf
        with pytest.raises(FloatingPointError, match="non-finite.*step 0"), \
                pytest.warns(rg.InitWarning, match=r"not finite.*V \(rms 1e\+308\)"):
            est.train(p, xs, ys, optimizer=rg.SGD(0.1))
        with pytest.raises(FloatingPointError, match="non-finite"):
            est.total_gradient(p, xs, ys)

    def test_the_rule(self):
        """10x the best smoothed loss and above the uniform-prediction loss, for 1,000
        steps: found at the same step however the steps are cut into chunks; noisy
        training, a brief spike, and a rise that stays below log K are not divergence."""
        calm = noisy_descent(20000)
        assert feed(calm, 1000).events == []
        spike = calm.copy()
        spike[8000:8850] = 1e4                  # 850 steps: the mean is high for 949
        assert feed(spike, 1000).events == []
        spike[8850:8950] = 1e4                  # 950 steps: for 1,049, a divergence
        assert [e["began"] for e in feed(spike, 1000).events] == [8000]
        rise = calm.copy()
        rise[10000:] = 0.9                      # 10x worse than its best, but < log 3
        assert feed(rise, 1000).events == []
        gone = calm.copy()
        gone[12000:] = 1e4 * (1 + np.arange(8000) / 8000)
        found = [feed(gone, chunk).events for chunk in (1000, 333, 7)]
        assert all(len(f) == 1 for f in found)
        for ev in (f[0] for f in found[1:]):    # the same up to the sums' rounding
            for key, val in found[0][0].items():
                assert ev[key] == pytest.approx(val, rel=1e-12), key
        ev = found[0][0]
        assert ev["began"] == 12000 and ev["step"] == 12999
        assert ev["best"] < 0.3 and ev["smoothed"] > 10 * ev["best"]

    def test_a_run_bad_from_its_first_steps_is_found_from_the_untrained_loss(self):
        bad = np.full(5000, 100.0)
        assert feed(bad, 1000).events == []               # never better than now
        ev = feed(bad, 1000, start=1.1).events            # ...but far worse than its start
        assert len(ev) == 1 and ev[0]["began"] == 99 and ev[0]["best"] == 1.1

    def test_the_trainer_warns_with_the_step_and_can_halt(self):
        est = compiled("tanh", "rtrl")
        xs, ys = echo_data(5000, seed=3)
        with pytest.warns(rg.DivergenceWarning, match=r"diverged: from step 99 .*at step 1,098"):
            res = est.train(params_for(est), xs, ys, optimizer=rg.SGD(30.0))
        assert res.steps == 5000 and res.extra["divergences"][0]["began"] == 99
        with pytest.warns(rg.DivergenceWarning, match="halting"):
            res = est.train(params_for(est), xs, ys, optimizer=rg.SGD(30.0),
                            halt_on_divergence=True)
        assert res.steps == 2000 and len(res.losses) == 2000

    def test_halt_on_divergence_keeps_the_last_good_checkpoint(self, tmp_path, capsys):
        out = tmp_path / "run"
        code = main(["train", "tanh", "-n", "4", "--task", "brackets", "-e", "rtrl",
                     "--optimizer", "sgd", "--lr", "30", "--steps", "20000", "--chunk", "250",
                     "--checkpoint-every", "250", "--backend", "numpy", "--out", str(out),
                     "--halt-on-divergence", "-q"])
        err = capsys.readouterr().err
        assert code == 1
        warning = [line for line in err.splitlines() if "warning:" in line]
        assert len(warning) == 1 and "the loss diverged: from step" in warning[0]
        began = int(warning[0].split("from step ")[1].split(" ")[0].replace(",", ""))
        kept = read_checkpoint(out / "checkpoint.npz")["step"]
        assert kept < began and f"kept {out / 'checkpoint.npz'} from step {kept:,}" in err
        assert "halted at step" in err
        # without the option the run goes on, with the same one-line warning
        code = main(["train", "tanh", "-n", "4", "--task", "brackets", "-e", "rtrl",
                     "--optimizer", "sgd", "--lr", "30", "--steps", "3000", "--backend",
                     "numpy", "--out", str(tmp_path / "on"), "-q"])
        err = capsys.readouterr().err
        assert code == 0 and err.count("rgraph train: warning: ") == 1 and "the loss diverged" in err
        assert read_checkpoint(tmp_path / "on" / "checkpoint.npz")["step"] == 3000


# ----------------------------------------------------------------------------- memory
def lstm_estimators():
    return ["rtrl", "bptt", "tbptt(3)", "uoro", "uoro(T=2)", "projected-uoro[preactivation]",
            "kf-rtrl", "dodge", "dodge[candidate]"]


def _compile(name):
    if name == "uoro(T=2)":
        return compiled("lstm", "uoro", T=2)
    if name == "dodge[candidate]":
        return compiled("lstm", "dodge", directions="candidate", window=4)
    return compiled("lstm", name)


class TestMemory:
    @pytest.mark.parametrize("name", lstm_estimators())
    def test_the_figures_are_what_is_allocated(self, name):
        """Per stream: exactly the bytes new_state allocates (and, where the numba
        module steps the streams at once, its row of est_scratch_batch); once: exactly
        what the module's est_scratch allocates, plus parameters, gradient and moments."""
        est = _compile(name)
        T = 7
        states, E = est.new_state(3, T)
        K = est.spec.segment_length(T)
        assert est.memory.per_stream(K) * 3 == states.nbytes + E.nbytes
        jit = compiled("lstm", name, "numba") if name in ("uoro", "kf-rtrl", "rtrl") else est
        batch = getattr(jit.module, "est_scratch_batch", None)     # (its Python code)
        rows = sum(a.nbytes for a in batch.py_func(3) if not isinstance(a, tuple)) \
            if batch else 0     # (a tuple: the one-stream scratch, allocated once)
        assert name != "uoro" or rows > 0
        assert jit.memory.per_stream(K) * 3 == states.nbytes + E.nbytes + rows
        scratch = sum(a.nbytes for a in est.module.est_scratch())
        P = est.n_params
        assert est.memory.shared_bytes() == scratch + 8 * (P + P + 1 + 2 * P)
        assert est.memory.total(3, K) == est.memory.shared_bytes() + states.nbytes + E.nbytes

    def test_the_report_lists_memory_per_stream(self):
        cell = rg.cells.lstm(8, 32, 8)
        rep = rg.analyze(cell).report()
        section = rep.split("memory (float64)")[1].split("\n\n")[0].splitlines()
        rows = {line.split()[0]: line for line in section[2:]}
        est = rg.compile(cell, "rtrl", backend="numpy")
        assert resources.nbytes(est.memory.per_stream()) in rows["rtrl"]
        assert "/step" in rows["bptt"] and "tbptt(16)" in rows
        assert {"uoro", "kf-rtrl", "dodge", "projected-uoro[state]"} <= set(rows)
        gru = rg.analyze(rg.cells.gru(3, 4, 3)).report()
        assert "kf-rtrl" in gru.split("memory (float64)")[1] and "does not apply" in gru

    def test_an_lstm_512_with_rtrl_is_refused_up_front(self, monkeypatch):
        """The issue's case: 8.1 GiB of Jacobian (twice per stream: G_{t-1} and G_t take
        turns in two buffers), refused before anything is built or allocated, in one
        line with the figures."""
        monkeypatch.setattr(resources, "available_memory", lambda: 16 * 2 ** 30)
        t0 = time.perf_counter()
        with pytest.raises(rg.MemoryRefused) as e:
            rg.compile(rg.cells.lstm(8, 512, 8), "rtrl", backend="numpy")
        msg = str(e.value)
        assert time.perf_counter() - t0 < 10 and "\n" not in msg
        assert "rtrl on cell 'lstm' needs" in msg and "16.3 GiB per stream" in msg
        assert "largest buffer G: 8.1 GiB" in msg
        assert "16.0 GiB available" in msg and "force_memory=True" in msg

    def test_a_batch_that_cannot_fit_is_refused_unless_forced(self, monkeypatch):
        est = compiled("tanh", "uoro")
        mem = est.memory
        room = mem.total(2) + mem.per_stream() // 2
        monkeypatch.setattr(resources, "available_memory", lambda: room)
        est.trainer(params_for(est), batch=2)
        with pytest.raises(rg.MemoryRefused, match="x batch 3 .* available"):
            est.trainer(params_for(est), batch=3)
        est.trainer(params_for(est), batch=3, force_memory=True)
        monkeypatch.setattr(resources, "available_memory", lambda: 100)
        with pytest.raises(rg.MemoryRefused):
            rg.compile(rg.cells.tanh_rnn(3, 4, 3), "uoro", backend="numpy")
        rg.compile(rg.cells.tanh_rnn(3, 4, 3), "uoro", backend="numpy", force_memory=True)
        monkeypatch.setattr(resources, "available_memory", lambda: None)   # unknown: run
        rg.compile(rg.cells.tanh_rnn(3, 4, 3), "uoro", backend="numpy")

    def test_rgraph_train_refuses_with_the_figure_and_force_memory_overrides(
            self, monkeypatch, capsys, tmp_path):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(resources, "available_memory", lambda: 100_000)
        argv = ["train", "tanh", "-n", "4", "--task", "brackets", "-e", "rtrl", "--steps",
                "20", "--backend", "numpy", "--batch", "64", "-q"]
        assert main(argv) == 2
        err = one_line(capsys)
        assert "x batch 64" in err and "97.7 KiB available" in err and "--force-memory" in err
        assert not (tmp_path / "runs").exists()
        assert main(argv + ["--force-memory"]) == 0

    def test_available_memory_reads_the_machine_and_falls_back(self, monkeypatch):
        have = resources.available_memory()
        assert have is None or have > 0

        def no_proc(*a, **k):
            raise OSError("no /proc")
        monkeypatch.setattr(resources, "open", no_proc, raising=False)
        try:
            want = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            want = None
        fallback = resources.available_memory()
        assert fallback is None if want is None else abs(fallback - want) < 2 ** 30


# ------------------------------------------------------------------------------- logs
class TestLogs:
    def test_curve_rows_are_block_means(self):
        from rgraph.training.trainer import curve_rows
        steps, means = curve_rows(np.arange(10.0), max_rows=4)      # blocks of 3, 3, 3, 1
        assert steps.tolist() == [2, 5, 8, 9] and means.tolist() == [1.0, 4.0, 7.0, 9.0]
        steps, means = curve_rows([np.nan, 1.0, 3.0], max_rows=3)
        assert np.isnan(means[0]) and means[1:].tolist() == [1.0, 3.0]

    def test_full_curve_and_progress_off_a_terminal(self, tmp_path):
        """--full-curve keeps one row per step; off a terminal, progress is plain lines."""
        out = tmp_path / "run"
        r = rgraph("train", "tanh", "-n", "4", "--task", "brackets", "-e", "tbptt(4)",
                   "--steps", "300", "--out", str(out), "--full-curve")
        assert len((out / "curve.csv").read_text().splitlines()) == 301
        assert "\r" not in r.stderr and "300/300 steps (100%)" in r.stderr


# ------------------------------------------------------------------ the cache
# The compiled-code cache under faults: damaged files, unwritable and read-only folders,
# processes compiling the same module at once, and the same bits in the process that
# compiles a module and in the processes that load it.
#
# Every test uses cells of its own: a module loaded earlier in the same process is
# reused as it is. The damage
# cases share one set-up: small modules (an entry point calling an inner function; numba
# writes the entry point's index and object files, the inner function's code is part of
# them) are compiled into a folder, one file of each is truncated or corrupted, and one
# fresh process loads them all.
TINY = textwrap.dedent('''
    """A module for the cache tests: total calls scale."""
    import numpy as np
    from numba import njit
    __all__ = ["total"]


    def scale(x, a):
        for i in range(x.shape[0]):
            x[i] *= a


    def total(x, a):
        scale(x, a)
        return np.sum(x)


    JIT = njit(cache=True)
    globals().update({f.__name__: JIT(f) for f in (scale, total)})
''')
HEADER = "# a test module for rgraph's cache\n"


def tiny(case):
    """The test module for one case (each case is its own module: its own file and
    its own symbols in numba's JIT)."""
    return cache.load(TINY + f"# case {case}\n", get_backend("numba"), "tiny", HEADER)


def run_tiny(code):
    return float(code.call("total", np.ones(4), 3.0))


# Loads each case's module in a fresh process; prints {case: result} as JSON.
CHECK = textwrap.dedent('''
    import json, os, sys, warnings
    import numpy as np
    sys.path.insert(0, os.environ["TEST_DIR"])
    from test_bad_input import cache, run_tiny, tiny
    readonly = os.environ.get("READONLY")
    if readonly and os.access(readonly, os.W_OK):    # root writes anywhere: say it cannot
        from pathlib import Path
        real = cache._unwritable
        cache._unwritable = lambda d: ("PermissionError: read-only" if
                                       Path(d).resolve() == Path(readonly).resolve()
                                       else real(d))
    out = {}
    for case in sys.argv[1:]:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            code = tiny(case)
            value = run_tiny(code)
        out[case] = {"value": value, "compiled": code.compiled_here, "path": str(code.path),
                     "warnings": [str(x.message) for x in w
                                  if issubclass(x.category, cache.CacheWarning)]}
    print(json.dumps(out))
''')


def check_in_fresh_process(cases, cache_dir, **env):
    env = dict(os.environ, RGRAPH_CACHE_DIR=str(cache_dir),
               TEST_DIR=os.path.dirname(__file__), **env)
    proc = subprocess.run([sys.executable, "-c", CHECK, *cases], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def damage(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    else:       # flip bytes in the middle, same size
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 16])
                         + data[mid + 16:])


def entry_files(code):
    """The files of a tiny module's entry, by role."""
    e = code.entry
    nb = {p.name.split(".", 1)[1]: p for p in e.compiled_files()}
    roles = {"module": e.py, "record": e.record_path, "lock": e.lock_path}
    for key, p in nb.items():        # e.g. scale-7.py311.nbi -> scale.nbi
        fn, ext = key.split("-")[0], key.rsplit(".", 1)[1]
        roles[f"{fn}.{ext}"] = p
    return roles


ROLES = ["module", "record", "total.nbi", "total.nbc"]
CASES = [f"{role}:{how}" for role in ROLES for how in ("truncate", "corrupt")]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Every case's module compiled into one folder, then one file of it damaged; and
    what a fresh process made of each."""
    d = tmp_path_factory.mktemp("damaged")
    old = os.environ.get("RGRAPH_CACHE_DIR")
    os.environ["RGRAPH_CACHE_DIR"] = str(d)
    try:
        names = CASES + ["lock:corrupt", "numba-refuses", "clean"]
        codes = [tiny(case) for case in names]
        with ThreadPoolExecutor(2) as pool:         # two compiling children at a time
            assert list(pool.map(run_tiny, codes)) == [12.0] * len(codes)
        files = {case: entry_files(code) for case, code in zip(names, codes)}
    finally:
        if old is None:
            del os.environ["RGRAPH_CACHE_DIR"]
        else:
            os.environ["RGRAPH_CACHE_DIR"] = old
    for case in CASES:
        role, how = case.split(":")
        damage(files[case][role], how)
    files["lock:corrupt"]["lock"].write_bytes(b"not a lock")
    # an index file that matches its record but that numba cannot read
    e = tiny("numba-refuses").entry
    bad = files["numba-refuses"]["total.nbi"]
    bad.write_bytes(b"\x80\x04not a pickle")
    rec = json.loads(e.record_path.read_text())
    rec["files"][bad.name] = [bad.stat().st_size, cache.sha256(bad)]
    e.record_path.write_text(json.dumps(rec))
    out, stderr = check_in_fresh_process(CASES + ["lock:corrupt", "numba-refuses", "clean"],
                                         d)
    return out, files, stderr


class TestCache:
    # ------------------------------------------------------------------ damage
    @pytest.mark.parametrize("case", CASES)
    def test_a_damaged_file_is_rebuilt_with_one_warning(self, damaged, case):
        out, files, stderr = damaged
        got = out[case]
        assert got["value"] == 12.0
        assert len(got["warnings"]) == 1, got["warnings"]
        assert files[case][case.split(":")[0]].name in got["warnings"][0]
        assert got["compiled"] > 0                     # rebuilt ...
        assert "Traceback" not in stderr
        entry = cache.Entry(files[case]["module"].parent, files[case]["module"].stem)
        rec = entry.read_record()                      # ... and whole again
        assert rec["compiled"] and set(rec["files"]) == {p.name for p in entry.compiled_files()}

    def test_an_intact_entry_loads_without_a_word(self, damaged):
        out, _, _ = damaged
        assert out["clean"]["warnings"] == [] and out["clean"]["compiled"] == 0
        assert out["lock:corrupt"]["warnings"] == [] and out["lock:corrupt"]["value"] == 12.0

    def test_code_numba_cannot_load_is_rebuilt_with_one_warning(self, damaged):
        out, _, _ = damaged
        got = out["numba-refuses"]
        assert got["value"] == 12.0 and got["compiled"] > 0
        assert len(got["warnings"]) == 1 and "numba could not load" in got["warnings"][0]

    def test_a_damaged_estimator_entry_gives_the_same_numbers(self, compiled_together):
        """End to end: an estimator whose loop's object code was corrupted."""
        folder, outs = compiled_together
        target = next(p for p in (folder / "__pycache__").iterdir()
                      if ".run-" in p.name and p.suffix == ".nbc")
        damage(target, "corrupt")
        again = run_estimator(folder)
        assert again["g"] == outs[0]["g"]
        assert again["warnings"] == 1 and target.name in again["stderr"]
        assert "Traceback" not in again["stderr"]

    def test_inner_functions_called_directly_leave_the_cache_alone(self, tmp_path,
                                                                   monkeypatch):
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(tmp_path))
        code = tiny("direct")
        assert run_tiny(code) == 12.0
        before = {p.name: p.read_bytes() for p in code.entry.compiled_files()}
        x = np.ones(3, np.float32)               # a signature the cache does not hold
        code.module.scale(x, 2.0)                # compiled here, as numba would ...
        assert x.tolist() == [2.0, 2.0, 2.0]
        assert {p.name: p.read_bytes() for p in code.entry.compiled_files()} == before
        assert code.entry.read_record()["compiled"]      # ... and the entry still checks
        with pytest.raises(TypeError):   # an entry point never compiles in this process:
            code.module.total(x, 2.0)
        assert code.call("total", x, 2.0) == 12.0   # a child compiles it, this one loads
        assert code.compiled_here == 2 and code.entry.read_record()["compiled"][1]

    # ------------------------------------------------------ unwritable folders
    def test_cache_dir_that_is_a_file_falls_back_with_a_warning(self, tmp_path, monkeypatch):
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(blocker / "cache"))
        with pytest.warns(cache.CacheWarning) as w:
            est = rg.compile(rg.cells.tanh_rnn(3, 17, 3), "rtrl", backend="numpy")
        assert len(w) == 1
        msg = str(w[0].message)
        assert "RGRAPH_CACHE_DIR" in msg and str(blocker / "cache") in msg
        assert "\n" not in msg
        assert est.path.parent == cache.temporary_dir()
        rng = np.random.default_rng(0)
        g = est.total_gradient(est.init_params(0), rng.standard_normal((5, 3)),
                               rng.integers(0, 3, 5))
        assert np.all(np.isfinite(g["W"]))

    def test_unwritable_home_falls_back_with_a_warning(self, tmp_path, monkeypatch):
        home = tmp_path / "home-is-a-file"
        home.write_text("")
        monkeypatch.delenv("RGRAPH_CACHE_DIR", raising=False)
        monkeypatch.setenv("HOME", str(home))
        with pytest.warns(cache.CacheWarning, match="RGRAPH_CACHE_DIR") as w:
            est = rg.compile(rg.cells.tanh_rnn(3, 18, 3), "rtrl", backend="numpy")
        assert len(w) == 1 and est.path.parent == cache.temporary_dir()

    def test_the_temporary_cache_is_private(self):
        d = cache.temporary_dir()
        st = os.stat(d)
        assert st.st_uid == os.getuid() and not (st.st_mode & 0o077)

    def test_a_read_only_warm_cache_is_used_as_it_is(self, tmp_path, monkeypatch):
        ro = tmp_path / "shared"
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(ro))
        assert run_tiny(tiny("read-only")) == 12.0      # warm it
        before = {p: p.stat().st_mtime_ns for p in ro.rglob("*")}
        for p in [ro, *ro.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            tmp = tmp_path / "tmp"       # a temporary cache of this test's own
            tmp.mkdir()
            out, _ = check_in_fresh_process(["read-only", "read-only-cold"], ro,
                                                 READONLY=str(ro), TMPDIR=str(tmp))
        finally:
            for p in [ro, *ro.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
        warm, cold = out["read-only"], out["read-only-cold"]
        assert warm == {**warm, "value": 12.0, "compiled": 0, "warnings": []}
        assert warm["path"].startswith(str(tmp))        # copied out, loaded from the copy
        assert {p: p.stat().st_mtime_ns for p in ro.rglob("*")} == before
        # what the read-only folder lacks is compiled in the temporary cache, with a word
        assert cold["value"] == 12.0 and cold["compiled"] > 0
        assert len(cold["warnings"]) == 1 and "RGRAPH_CACHE_DIR" in cold["warnings"][0]

    # --------------------------------------------------- processes at once
    def test_two_processes_compiling_one_module_at_once(self, compiled_together):
        """Both succeed with the same numbers; one compiled, the other waited for it
        and loaded its result; nothing half-written was read, nothing was left over."""
        folder, outs = compiled_together
        assert [o["rc"] for o in outs] == [0, 0], [o["stderr"][-2000:] for o in outs]
        assert outs[0]["g"] == outs[1]["g"]
        assert sorted(o["compiled"] > 0 for o in outs) == [False, True]
        assert all(o["warnings"] == 0 and "Traceback" not in o["stderr"] for o in outs)
        assert not [p for p in folder.rglob("*") if ".tmp" in p.name]

    # ------------------------------------------------------------ determinism
    def test_compiling_and_loading_processes_give_the_same_bits(self, tmp_path):
        """KF-RTRL and UORO, 5,000 online steps each: the process that compiles (empty
        cache) and a process that loads from the cache end with the same parameters,
        bit for bit. Before the fix, the KF-RTRL losses parted at step 12."""
        first = train_in_fresh_process(tmp_path)
        second = train_in_fresh_process(tmp_path)
        assert all(c > 0 for c in first["compiled"]) and second["compiled"] == [0, 0]
        assert first["params"] == second["params"]
        assert first["curves"] == second["curves"]

    # --------------------------------------------------------- rgraph cache
    def test_cache_command_lists_prunes_and_clears(self, tmp_path, monkeypatch, capsys):
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(tmp_path))
        ests = [rg.compile(rg.cells.tanh_rnn(3, n, 3), "rtrl", backend="numpy")
                for n in (11, 12, 13)]
        for i, est in enumerate(ests):      # used in this order: n = 4 longest ago
            os.utime(est.code.entry.record_path, (1e9 + i, 1e9 + i))
        (tmp_path / "__pycache__").mkdir(exist_ok=True)
        stray = tmp_path / "__pycache__" / "gone_numba_0123.f-1.py311.nbi"
        stray.write_bytes(b"x")
        os.utime(stray, (1e9, 1e9))
        assert main(["cache"]) == 0
        out = capsys.readouterr().out
        assert "3 entries" in out and "1 leftover" in out, out
        assert all(e.path.name in out for e in ests)
        sizes = [e.code.entry.size() for e in ests]
        assert main(["cache", "--prune", "--max-size", str(sum(sizes[1:]))]) == 0
        assert "pruned 1 entry" in capsys.readouterr().out
        assert not ests[0].path.exists() and ests[1].path.exists() and ests[2].path.exists()
        assert not stray.exists()
        assert main(["cache", "--clear"]) == 0
        assert "removed 2 entries" in capsys.readouterr().out
        assert not list(tmp_path.glob("*.py"))
        assert main(["cache", "--prune", "--max-size", "lots"]) == 2
        assert "--max-size" in capsys.readouterr().err

    def test_new_entries_prune_the_cache_to_its_cap(self, tmp_path, monkeypatch):
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(tmp_path))
        old = [rg.compile(rg.cells.tanh_rnn(3, n, 3), "rtrl", backend="numpy")
               for n in (14, 15)]
        for i, est in enumerate(old):
            os.utime(est.code.entry.record_path, (1e9 + i, 1e9 + i))
        cap = old[1].code.entry.size() * 2 + 1000
        monkeypatch.setenv("RGRAPH_CACHE_MAX_SIZE", str(cap))
        (tmp_path / ".last-prune").unlink(missing_ok=True)
        new = rg.compile(rg.cells.tanh_rnn(3, 16, 3), "rtrl", backend="numpy")
        assert new.path.exists() and old[1].path.exists()
        assert not old[0].path.exists()        # the least recently used went
        assert sum(i.size for i in cache.scan(tmp_path)) <= cap

    def test_sizes_parse(self):
        assert cache.parse_size("1G") == 1 << 30
        assert cache.parse_size("500M") == 500 << 20
        assert cache.parse_size("64k") == 64 << 10
        assert cache.parse_size("123") == 123
        with pytest.raises(ValueError, match="number of bytes"):
            cache.parse_size("big")


# ------------------------------------------------------------- fresh processes
ESTIMATOR = textwrap.dedent('''
    import json, warnings
    import numpy as np
    import rgraph as rg
    from rgraph.cache import CacheWarning
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        est = rg.compile(rg.cells.tanh_rnn(3, 5, 3), "uoro", backend="numba")
        rng = np.random.default_rng(0)
        g = est.total_gradient(est.init_params(0), rng.standard_normal((30, 3)),
                               rng.integers(0, 3, 30), seed=3)
    n = sum(issubclass(x.category, CacheWarning) for x in w)
    for x in w:
        print(x.message, file=__import__("sys").stderr)
    print(json.dumps({"g": [float(v) for v in g["W"].ravel()],
                      "compiled": est.code.compiled_here, "warnings": n}))
''')


def run_estimator(folder):
    proc = subprocess.run([sys.executable, "-c", ESTIMATOR], capture_output=True,
                          text=True, env=dict(os.environ, RGRAPH_CACHE_DIR=str(folder)),
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


@pytest.fixture(scope="module")
def compiled_together(tmp_path_factory):
    """Two processes started at once on an empty cache, compiling the same module."""
    folder = tmp_path_factory.mktemp("together")
    env = dict(os.environ, RGRAPH_CACHE_DIR=str(folder))
    procs = [subprocess.Popen([sys.executable, "-c", ESTIMATOR], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = []
    try:
        for p in procs:
            so, se = p.communicate(timeout=600)
            res = json.loads(so.strip().splitlines()[-1]) if p.returncode == 0 else {}
            outs.append({**res, "rc": p.returncode, "stderr": se})
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return folder, outs


TRAIN = textwrap.dedent('''
    import hashlib, json
    import numpy as np
    import rgraph as rg
    from rgraph.tasks import make_task
    task = make_task("anbn")
    out = {"params": [], "curves": [], "compiled": []}
    for cell, est_name in ((rg.cells.lstm(task.n_in, 8, task.n_out), "kf-rtrl"),
                           (rg.cells.tanh_rnn(task.n_in, 16, task.n_out), "uoro")):
        est = rg.compile(cell, est_name, loss=task.loss)
        tr = est.trainer(est.init_params(0), rg.Adam(1e-2), seed=0)
        tr.run_task(task, 5000)
        h = hashlib.sha256()
        for k in sorted(tr.params):
            h.update(np.ascontiguousarray(tr.params[k]).tobytes())
        out["params"].append(h.hexdigest())
        out["curves"].append(hashlib.sha256(np.asarray(tr.curve).tobytes()).hexdigest())
        out["compiled"].append(est.code.compiled_here)
    print(json.dumps(out))
''')


def train_in_fresh_process(folder):
    proc = subprocess.run([sys.executable, "-c", TRAIN], capture_output=True, text=True,
                          env=dict(os.environ, RGRAPH_CACHE_DIR=str(folder)), timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
