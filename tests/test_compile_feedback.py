"""What a compile tells the user (``rgraph.feedback``): one line per uncached module at
its start and one at its end (redrawn in place in a terminal), nothing for a cached
one, ``RGRAPH_QUIET``, ``rg.compile(eager=True)``; Ctrl-C during a compile (one line,
exit status 130, the cache still usable); and the modules of ``rg.variance`` and
``rgraph variance`` compiled once each, several at once, before the first step.

Only ``test_ctrl_c_then_eager_compile_then_cached_start`` compiles with numba (one
module, once); the others use the numpy backend, fake compiles or ``compiling`` alone."""
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import rgraph as rg
from rgraph import feedback
from rgraph.api import Estimator
from rgraph.runtime import Model

ROOT = Path(__file__).resolve().parent.parent
WHAT = "uoro for 'tanh_rnn' (n=3, one-stream path)"


# ------------------------------------------------------------------ the lines
class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""
    encoding = "utf-8"

    def isatty(self):
        return True


def test_off_a_terminal_one_line_at_the_start_and_one_at_the_end(capsys, monkeypatch):
    monkeypatch.delenv(feedback.ENV_QUIET, raising=False)
    with feedback.compiling(WHAT):
        print("in between", file=sys.stderr)
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == [f"compiling {WHAT} …", "in between"] and len(lines) == 3
    assert re.fullmatch(rf"compiled {re.escape(WHAT)} in \d+\.\d s", lines[2]), lines


@pytest.mark.parametrize("value, silent", [("1", True), ("yes", True), ("0", False),
                                           ("", False), ("false", False)])
def test_rgraph_quiet_silences_the_lines(capsys, monkeypatch, value, silent):
    monkeypatch.setenv(feedback.ENV_QUIET, value)
    with feedback.compiling(WHAT):
        pass
    assert (capsys.readouterr().err == "") == silent


def test_in_a_terminal_the_line_counts_in_place_and_ends_as_the_time(monkeypatch):
    monkeypatch.delenv(feedback.ENV_QUIET, raising=False)
    monkeypatch.setattr(feedback, "TICK_S", 0.01)
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    with feedback.compiling(WHAT):
        time.sleep(0.3)
    out = term.getvalue()
    assert out.startswith(f"\r\x1b[2Kcompiling {WHAT} … 0 s |\n")
    assert out.count("\x1b[1F") >= 2           # redrawn in place, more than once
    assert re.search(rf"\r\x1b\[2Kcompiled {re.escape(WHAT)} in \d+\.\d s\n$", out), out
    assert out.count("\n") == out.count("\x1b[1F") + 1    # one line on the screen


def test_a_failed_compile_says_so_and_ctrl_c_erases_its_line(capsys, monkeypatch):
    monkeypatch.delenv(feedback.ENV_QUIET, raising=False)
    with pytest.raises(RuntimeError), feedback.compiling(WHAT):
        raise RuntimeError("numba could not")
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"compiling {WHAT} failed after ")
    with pytest.raises(KeyboardInterrupt), feedback.compiling(WHAT):
        raise KeyboardInterrupt          # off a terminal: nothing after the first line
    assert capsys.readouterr().err.splitlines() == [f"compiling {WHAT} …"]
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    with pytest.raises(KeyboardInterrupt), feedback.compiling(WHAT):
        raise KeyboardInterrupt          # a terminal: the line is erased
    assert term.getvalue().endswith("\x1b[1F\x1b[J")


# --------------------------------------------------------------------- eager
def test_eager_compiles_at_compile_and_lazy_at_the_first_call(monkeypatch):
    prepared = []
    real = Estimator.prepare
    monkeypatch.setattr(Estimator, "prepare",
                        lambda self, loop="run": prepared.append(loop) or real(self, loop))
    cell = rg.cells.tanh_rnn(2, 3, 2)
    est = rg.compile(cell, "uoro", backend="numpy", eager=True)
    assert prepared == ["run"]
    p, xs, ys = est.init_params(0), np.zeros((4, 2)), np.zeros(4, int)
    est.total_gradient(p, xs, ys)
    est.loss(p, xs, ys)
    assert prepared == ["run"]               # ready: no second prepare
    lazy = rg.compile(cell, "uoro", backend="numpy")
    assert prepared == ["run"]
    lazy.loss(p, xs, ys)
    assert prepared == ["run", "evaluate"]   # the first call prepares (run and evaluate)
    assert lazy.describe_module("run_batch") == "uoro for 'tanh_rnn' (n=3, batch path)"


# ---------------------------------------------------- Ctrl-C, eager, cached start
def _train(cache, out, *more):
    return subprocess.Popen(
        [sys.executable, "-m", "rgraph", "train", "tanh", "-n", "3", "--task", "anbn",
         "-e", "uoro", "--steps", "20", "--out", str(out), *more],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(cache),
        preexec_fn=_default_ctrl_c)


def _default_ctrl_c():
    """A child with Ctrl-C's default action, as in a terminal: pytest-xdist's workers
    ignore SIGINT, and an ignored signal stays ignored across exec (Python then installs
    no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env(cache):
    env = {k: v for k, v in os.environ.items() if k != feedback.ENV_QUIET}
    path = env.get("PYTHONPATH", "")
    return dict(env, RGRAPH_CACHE_DIR=str(cache),
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), path])))


# the module rgraph train builds above, compiled with eager=True; then calls and a
# second estimator of the same module, which must print nothing
EAGER = textwrap.dedent("""
    import sys
    import numpy as np
    import rgraph as rg
    from rgraph.run import load_cell, make_task
    task = make_task("anbn", None, None)
    cell = load_cell("tanh", task.n_in, 3, task.n_out)
    est = rg.compile(cell, "uoro", loss=task.loss, eager=True)
    print("EAGER RETURNED", file=sys.stderr, flush=True)
    xs, ys = task.stream(10, np.random.default_rng(0))
    est.total_gradient(est.init_params(0), xs, ys)
    rg.compile(cell, "uoro", loss=task.loss).loss(est.init_params(0), xs, ys)
    print("CALLED", file=sys.stderr, flush=True)
""")


def test_ctrl_c_then_eager_compile_then_cached_start(tmp_path):
    """Ctrl-C during rgraph train's compile: exit status 130, one line after the compile
    line, no run folder; then the same module compiled with eager=True: one compile
    line (and its end), both before rg.compile returns, none at the calls; then rgraph
    train again: the cache serves it, no compile line."""
    cache = tmp_path / "cache"
    proc = _train(cache, tmp_path / "run1")
    first = proc.stderr.readline()
    assert first == f"compiling {WHAT} …\n", first + proc.stderr.read()
    time.sleep(0.5)                      # the child compiling has started
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, "rgraph train: interrupted\n")
    assert all(line.startswith("defaults of ") for line in out.splitlines()), out
    assert not (tmp_path / "run1").exists()

    eager = subprocess.run([sys.executable, "-c", EAGER], capture_output=True, text=True,
                           env=_env(cache), timeout=300)
    assert eager.returncode == 0, eager.stderr
    lines = eager.stderr.splitlines()
    assert len(lines) == 4 and lines[0] == f"compiling {WHAT} …", lines
    assert lines[1].startswith(f"compiled {WHAT} in "), lines
    assert lines[2:] == ["EAGER RETURNED", "CALLED"], lines

    again = _train(cache, tmp_path / "run2")      # not --quiet: that silences compiles
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "uoro: 20/20 steps" in err and "compil" not in err, err
    assert (tmp_path / "run2" / "params.npz").exists()


# ------------------------------------------------------- several modules at once
@pytest.fixture
def fake_compiles(monkeypatch):
    """Estimator.prepare with a fake compile (a child process sleeping 0.4 s) first:
    records (estimator, state size, loop, pid, start, end); the first gradient's time
    goes in ``first_step``; three compiles at a time."""
    log = {"compiles": [], "first_step": []}
    real = Estimator.prepare

    def prepare(self, loop="run"):
        t0 = time.monotonic()
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.4)"])
        child.wait()
        log["compiles"].append((self.name, self.n_state, loop, child.pid, t0,
                                time.monotonic()))
        real(self, loop)
    monkeypatch.setattr(Estimator, "prepare", prepare)
    real_tg = Model.total_gradient

    def total_gradient(self, *args, **kw):
        log["first_step"].append(time.monotonic())
        return real_tg(self, *args, **kw)
    monkeypatch.setattr(Model, "total_gradient", total_gradient)
    monkeypatch.setattr(feedback, "cores", lambda: 3)
    monkeypatch.delenv(feedback.ENV_JOBS, raising=False)
    return log


def _check_parallel(log, want, at_once=3):
    compiles = log["compiles"]
    assert sorted((name, n) for name, n, *_ in compiles) == sorted(want)
    assert all(loop == "run" for _, _, loop, *_ in compiles)
    assert len({pid for _, _, _, pid, _, _ in compiles}) == len(compiles)
    assert max(end for *_, end in compiles) <= min(log["first_step"])
    # the most compiles going on at one moment
    overlap = max(sum(s <= t < e for *_, s, e in compiles) for *_, t, _ in compiles)
    assert (overlap >= 2) if at_once > 1 else (overlap == 1), compiles


def test_variance_compiles_each_module_once_at_once_before_the_first_step(fake_compiles):
    cell = rg.cells.tanh_rnn(2, 3, 2)
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((10, 2)), rng.integers(0, 2, 10)
    res = rg.variance(cell, ["uoro", "e-prop", "kf-rtrl"], xs, ys, seeds=2,
                      backend="numpy")
    assert len(res.rows) == 3
    _check_parallel(fake_compiles, [(e, 3) for e in ("bptt", "uoro", "e-prop", "kf-rtrl")])


def test_rgraph_compile_jobs_sets_how_many_at_once(fake_compiles, monkeypatch):
    cell = rg.cells.tanh_rnn(2, 3, 2)
    monkeypatch.setenv(feedback.ENV_JOBS, "1")       # one after the other
    rg.precompile([rg.compile(cell, e, backend="numpy") for e in ("uoro", "e-prop")])
    fake_compiles["first_step"].append(time.monotonic())
    _check_parallel(fake_compiles, [("uoro", 3), ("e-prop", 3)], at_once=1)
    monkeypatch.setenv(feedback.ENV_JOBS, "zero")
    with pytest.raises(ValueError, match="RGRAPH_COMPILE_JOBS='zero' is not a number"):
        rg.precompile([rg.compile(cell, "uoro", backend="numpy")])


def test_rgraph_variance_compiles_every_size_at_once_first(fake_compiles, tmp_path):
    from rgraph.cli import main
    assert main(["variance", "tanh", "--sizes", "3,4", "-e", "uoro,e-prop", "--seeds", "2",
                 "--steps", "10", "--backend", "numpy", "--out", str(tmp_path), "-q"]) == 0
    _check_parallel(fake_compiles, [(e, n) for e in ("bptt", "uoro", "e-prop")
                                    for n in (3, 4)])


PARALLEL_CTRL_C = textwrap.dedent("""
    import subprocess, sys
    from rgraph import feedback

    def job():
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with feedback.child_process(proc), feedback.compiling(f"job {proc.pid}"):
            proc.wait()
            if proc.returncode:
                raise RuntimeError("killed")
    try:
        feedback.parallel([job] * 4, workers=2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
""")


def test_ctrl_c_during_parallel_compiles_kills_them_and_starts_no_more(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", PARALLEL_CTRL_C], preexec_fn=_default_ctrl_c,
                            stderr=subprocess.PIPE,
                            text=True, env=_env(tmp_path))
    started = [proc.stderr.readline(), proc.stderr.readline()]
    pids = sorted(int(s.split()[2]) for s in started)
    proc.send_signal(signal.SIGINT)
    t = time.monotonic()
    rest = proc.communicate(timeout=30)[1]
    assert time.monotonic() - t < 10           # not the 60 s of the children
    assert (proc.returncode, rest) == (130, "interrupted\n")
    for pid in pids:                           # reaped: gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
