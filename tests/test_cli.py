"""The rgraph command, end to end (small sizes)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rgraph.cli import main


def rgraph(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "rgraph", *args], capture_output=True,
                         text=True, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"rgraph {args} failed:\n{out.stdout}\n{out.stderr}")
    return out


def test_inspect_gru_refuses_kronecker_with_the_reason(capsys):
    assert main(["inspect", "gru", "--hidden", "4"]) == 0
    out = capsys.readouterr().out
    assert "Kronecker structure" in out and "no: the input 'rhx'" in out
    assert "reset gate" in out and "preactivation" in out


def test_inspect_lstm_kf_rtrl_source(capsys, tmp_path):
    dot = tmp_path / "g.dot"
    assert main(["inspect", "lstm", "--hidden", "4", "-e", "kf-rtrl", "--source",
                 "--backend", "numpy", "--dot", str(dot)]) == 0
    out = capsys.readouterr().out
    assert "def jvp_state_m(" in out and "def est_step(" in out and "A_t = c1/p1" not in out
    assert "# tangent of" in out and dot.read_text().startswith('digraph "lstm"')


def test_inspect_a_cell_from_a_file(capsys, tmp_path):
    f = tmp_path / "mycell.py"
    f.write_text("import rgraph as rg\n"
                 "def cell(n_in, n, n_out):\n"
                 "    c = rg.Cell('mine')\n"
                 "    x, h = c.input('x', n_in), c.state('h', n)\n"
                 "    W = c.param('W', (n, n + n_in))\n"
                 "    h_new = rg.softplus(W @ rg.concat(h, x)) - 0.5\n"
                 "    c.update(h, h_new)\n"
                 "    c.output('y', c.param('V', (n_out, n)) @ h_new)\n"
                 "    return c\n")
    assert main(["inspect", f"{f}:cell", "--hidden", "3"]) == 0
    assert "cell 'mine'" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["inspect", "nosuchcell"], "unknown cell"),
    (["inspect", "/nonexistent/file.py:f"], "cannot read"),
    (["inspect", "lstm:64"], "--hidden 64"),
    (["inspect", "lstm", "-e", "kf-rtrl", "--projection", "state"], "projection"),
    (["inspect", "gru", "-e", "kf-rtrl"], "does not apply"),
    (["train", "lstm", "--task", "charlm", "-e", "uoro"], "--text"),
    (["train", "lstm", "--task", "anbn", "--task-args", "k=5,l=2", "-e", "uoro"], "k <= l"),
    (["train", "lstm", "--task", "anbn"], "--estimator"),
    (["train", "--resume", "/nonexistent"], "cannot resume"),
])
def test_bad_input_is_one_line_not_a_traceback(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert not (tmp_path / "runs").exists()       # no half-made run folder left behind
    err = capsys.readouterr().err.strip()
    assert msg in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_help_for_every_command():
    for cmd in ("inspect", "train", "variance", "bench", "export", "demo"):
        out = rgraph(cmd, "--help")
        assert "usage: rgraph " + cmd in out.stdout
    assert rgraph("--bogus", check=False).returncode == 2


def test_train_writes_a_run_folder(tmp_path):
    out = tmp_path / "run"
    r = rgraph("train", "tanh", "-n", "6", "--task", "brackets", "-e", "tbptt(4)",
               "--steps", "3000", "--batch", "2", "--out", str(out), "-q")
    assert "bits/char" in r.stdout
    for f in ("config.json", "curve.csv", "curve.png", "params.npz", "checkpoint.npz"):
        assert (out / f).exists(), f
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    lines = (out / "curve.csv").read_text().splitlines()        # block means, small
    assert lines[0] == "step,loss_bits_per_char_block_mean" and len(lines) == 1001
    assert lines[-1].startswith("2999,")
    assert json.loads((out / "config.json").read_text())["batch"] == 2
    # an old pickle checkpoint is refused in one line, and never unpickled
    (out / "checkpoint.npz").rename(out / "checkpoint.pkl")
    r = rgraph("train", "--resume", str(out), check=False)
    assert r.returncode == 2 and "pickle" in r.stderr and len(r.stderr.splitlines()) == 1


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
    args = ["lstm", "-n", "6", "--task", "copy", "-e", "uoro", "--steps", "150000",
            "--chunk", "500", "--checkpoint-every", "1000", "--batch", "2", "--seed", "3",
            "--reset-prob", "0.001", "-q"]
    # Numbers repeat bit for bit once the compiled code is in the cache: the process that
    # compiles a module runs numba's in-memory JIT code, which can differ from the cached
    # object code in the last bit (measured: 6e-15 after 2e4 steps). Warm the cache
    # first so that all three runs below use the same machine code.
    rgraph("train", *args[:8], "100", *args[9:], "--out", str(tmp_path / "warm"))
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


def test_variance_and_bench_commands(tmp_path):
    r = rgraph("variance", "rhn", "--sizes", "4,8", "--steps", "20", "--seeds", "10",
               "--estimators", "uoro,kf-rtrl,projected-uoro[preactivation]",
               "--out", str(tmp_path), "--backend", "numpy", "-q")
    assert "kf-rtrl" in r.stdout and "cos mean" in r.stdout
    assert (tmp_path / "variance.png").exists() and (tmp_path / "variance.csv").exists()
    r = rgraph("bench", "--cells", "tanh", "--sizes", "8", "--batches", "1",
               "--estimators", "uoro;kf-rtrl", "--seconds", "0.02", "--repeats", "1")
    assert "speed-up" in r.stdout and "kf-rtrl" in r.stdout and "GEMM" in r.stdout


def test_demo_runs_to_the_end_and_leaves_a_plot(tmp_path):
    r = rgraph("demo", "--seconds", "1", "--hidden", "8", "--out", str(tmp_path))
    assert "valid bpc" in r.stdout and (tmp_path / "demo.png").exists()
    assert Path(tmp_path / "curves.csv").read_text().startswith("step,kf-rtrl,uoro")


def test_bench_outside_a_source_checkout_says_so(capsys, tmp_path, monkeypatch):
    """An installed wheel has no benchmarks/ folder: one line saying where to run it."""
    import rgraph.cli
    monkeypatch.setattr(rgraph.cli, "BENCHMARKS", tmp_path / "benchmarks")
    assert main(["bench"]) == 2
    err = capsys.readouterr().err.strip()
    assert "source checkout" in err and len(err.splitlines()) == 1


def test_run_folders_are_never_overwritten_or_shared(tmp_path):
    """--out at an existing run refuses and leaves it byte for byte; --force replaces it;
    runs started at once with the default folder name each keep their own."""
    args = ["tanh", "-n", "4", "--task", "brackets", "-e", "tbptt(4)", "--steps", "200", "-q"]
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
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    assert all(p.wait(timeout=600) == 0 for p in procs)
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((r / "checkpoint.npz").exists() for r in runs)


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
def test_counts_and_estimators_are_checked(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert not (tmp_path / "runs").exists()
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


def test_resume_refuses_another_cell_and_records_new_steps(tmp_path):
    out = tmp_path / "run"
    rgraph("train", "tanh", "-n", "4", "--task", "brackets", "-e", "tbptt(4)", "--steps", "100",
           "--out", str(out), "-q")
    r = rgraph("train", "--resume", str(out), "gru", check=False)
    assert r.returncode == 2 and "the run is cell 'tanh'" in r.stderr
    rgraph("train", "--resume", str(out), "--steps", "150", "-q")
    assert json.loads((out / "config.json").read_text())["steps"] == 150


def test_full_curve_and_progress_off_a_terminal(tmp_path):
    """--full-curve keeps one row per step; off a terminal, progress is plain lines."""
    out = tmp_path / "run"
    r = rgraph("train", "tanh", "-n", "4", "--task", "brackets", "-e", "tbptt(4)",
               "--steps", "300", "--out", str(out), "--full-curve")
    assert len((out / "curve.csv").read_text().splitlines()) == 301
    assert "\r" not in r.stderr and "300/300 steps (100%)" in r.stderr
