"""The rgraph command, end to end (small sizes)."""
import json
import re
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
    assert lines[0] == "step,loss_bits_per_char_block_mean" and 501 <= len(lines) <= 1001
    assert lines[-1].startswith("2999,")
    assert json.loads((out / "config.json").read_text())["batch"] == 2
    # the line says which defaults came from the task's paper, and which were given
    assert "defaults of Tallec & Ollivier (2017), Sec. 4, distant brackets: optimizer " \
        "adam, lr 0.001, decay 0.015" in r.stdout and "given: --batch" in r.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["decay"], cfg["decay_per"], cfg["lr"]) == (0.015, "step", 1e-3)


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


# ------------------------------------------------------------------- RunConfig
def _train_args(*argv):
    from rgraph.cli import build_parser
    return build_parser().parse_args(["train", *argv])


def test_config_json_is_the_run_config_and_round_trips(tmp_path):
    """config.json is RunConfig.to_json of the options given (version 1 first), and it
    reads back to the same RunConfig."""
    from rgraph.cli import run_config
    from rgraph.run import CONFIG_VERSION, RunConfig, read_config
    argv = ["tanh", "-n", "4", "--task", "brackets", "-e", "tbptt(4)", "--steps", "40",
            "--backend", "numpy", "--seed", "3", "--lr", "0.01", "--optimizer", "sgd",
            "--reset-prob", "0.5", "--full-curve", "-q"]
    out = tmp_path / "run"
    assert main(["train", *argv, "--out", str(out)]) == 0
    text = (out / "config.json").read_text()
    cfg = read_config(out)
    assert cfg == run_config(_train_args(*argv)) == RunConfig.from_json(cfg.to_json())
    assert text == cfg.to_json() and next(iter(json.loads(text))) == "version"
    assert (cfg.version, cfg.seed, cfg.lr, cfg.optimizer, cfg.full_curve) == \
        (CONFIG_VERSION, 3, 0.01, "sgd", True)
    assert cfg.estimator_options == {} and cfg.checkpoint_every == 20000


def test_the_command_lines_defaults_are_run_configs():
    """An option not given is None on the command line and, in the run, the task's paper
    default, else RunConfig's; the one default argparse holds (--backend, shared with
    inspect and export) is RunConfig's; the help quotes RunConfig's defaults and the
    papers'."""
    from rgraph.cli import build_parser, run_config
    from rgraph.run import RunConfig, run_options
    paper = dict(decay=0.03, decay_per="step")      # Tallec & Ollivier's aⁿbⁿ schedule
    args = _train_args("--task", "anbn", "-e", "uoro")
    assert run_config(args) == RunConfig(task="anbn", estimator="uoro", **paper)
    given = {k: getattr(args, k) for k in run_options() if getattr(args, k, None) is not None}
    assert given == {"task": "anbn", "estimator": "uoro", "backend": RunConfig().backend,
                     "full_curve": RunConfig().full_curve}
    sweep = build_parser().parse_args(["sweep", "tanh", "--task", "anbn", "--out", "x"])
    assert run_config(sweep, hidden=None, lr=None) == RunConfig(cell="tanh", task="anbn",
                                                                **paper)
    plain = _train_args("--task", "anbn", "-e", "uoro", "--no-task-defaults")
    assert run_config(plain) == RunConfig(task="anbn", estimator="uoro")
    mine = _train_args("--task", "anbn", "-e", "uoro", "--decay", "0.1", "--lr", "0.01")
    assert run_config(mine) == RunConfig(task="anbn", estimator="uoro", decay=0.1, lr=0.01)
    out = rgraph("train", "--help").stdout
    assert f"(default {RunConfig().steps})" in out and \
        f"(default {RunConfig().checkpoint_every})" in out
    assert "anbn      Adam 0.001/(1+0.03√t), t in steps, batch 1" in out and \
        "copy      Adam 0.001 constant, batch 256" in out and "reports:" in out


def test_run_config_checks_its_values_and_keys():
    import pytest

    from rgraph.run import ConfigError, RunConfig
    with pytest.raises(ConfigError, match=r"^steps must be >= 1, got 0$") as e:
        RunConfig(steps=0)
    assert e.value.key == "steps"
    for bad, msg in [(dict(reset_prob=1.5), "reset_prob must be in [0, 1]"),
                     (dict(optimizer="rmsprop"), "optimizer must be one of sgd, adam"),
                     (dict(hidden=2.5), "hidden must be an integer"),
                     (dict(lr=float("inf")), "lr must be a finite number"),
                     (dict(version=2), "version is 2"),
                     (dict(estimator_options={"rnak": 2}), "unknown option 'rnak'")]:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            RunConfig(**bad)
    with pytest.raises(ConfigError, match=r"unknown key 'hiden' in a run config") as e:
        RunConfig.from_dict({"cell": "tanh", "hiden": 4})
    assert len(str(e.value).splitlines()) == 1 and e.value.key is None
    with pytest.raises(TypeError, match="unknown run option 'hiden'"):
        RunConfig.from_options(hiden=4)
    assert RunConfig.from_options(k_dirs=4, projection="h_new,c_new").estimator_options == \
        {"k": 4, "projection": ["h_new", "c_new"]}


def test_an_old_config_without_a_version_resumes_and_a_bad_key_is_one_line(tmp_path,
                                                                           capsys):
    """A config.json from before the version field (and before form, checkpoint_every and
    full_curve) resumes, and is written back as version 1; an unknown key refuses to
    resume, naming the key."""
    from rgraph.run import RunConfig, read_config
    out = tmp_path / "run"
    assert main(["train", "tanh", "-n", "4", "--task", "brackets", "-e", "tbptt(4)",
                 "--steps", "40", "--backend", "numpy", "--out", str(out), "-q"]) == 0
    new = json.loads((out / "config.json").read_text())
    old = {k: v for k, v in new.items()
           if k not in ("version", "form", "checkpoint_every", "full_curve")}
    (out / "config.json").write_text(json.dumps(old, indent=2) + "\n")
    assert RunConfig.from_dict(old) == RunConfig.from_dict(new) == read_config(out)
    assert main(["train", "--resume", str(out), "--steps", "60", "-q"]) == 0
    assert json.loads((out / "config.json").read_text()) == {**new, "steps": 60}
    (out / "config.json").write_text(json.dumps({**old, "bogus": 1}))
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key 'bogus'" in err, err
    assert err.startswith(f"rgraph train: cannot resume from {str(out)!r}")
