"""The rgraph command, end to end (small sizes)."""
import json
from pathlib import Path

from rgraph.cli import main

from conftest import rgraph_cli as rgraph


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


def test_help_for_every_command():
    for cmd in ("inspect", "train", "sweep", "variance", "bench", "export", "demo"):
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


def test_variance_and_bench_commands(tmp_path):
    r = rgraph("variance", "rhn", "--sizes", "4,8", "--steps", "20", "--seeds", "10",
               "--estimators", "uoro,kf-rtrl,projected-uoro[preactivation]",
               "--out", str(tmp_path), "--backend", "numpy", "-q")
    assert "kf-rtrl" in r.stdout and "cos mean" in r.stdout
    assert (tmp_path / "variance.png").exists() and (tmp_path / "variance.csv").exists()
    r = rgraph("bench", "--cells", "tanh", "--sizes", "8", "--batches", "1",
               "--estimators", "uoro;kf-rtrl", "--seconds", "0.02", "--repeats", "1",
               "--no-jax")          # the JAX column: tests/test_bench.py
    assert "speed-up" in r.stdout and "kf-rtrl" in r.stdout and "GEMM" in r.stdout


def test_demo_runs_to_the_end_and_leaves_a_plot(tmp_path):
    r = rgraph("demo", "--seconds", "1", "--hidden", "8", "--out", str(tmp_path))
    assert "valid bpc" in r.stdout and (tmp_path / "demo.png").exists()
    assert Path(tmp_path / "curves.csv").read_text().startswith("step,kf-rtrl,uoro")
