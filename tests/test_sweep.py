"""rgraph sweep on Dask distributed: a scheduler and two workers started here with the
``dask`` command on 127.0.0.1, the records against a --serial sweep bit for bit, a worker
killed (SIGKILL) mid-sweep, reruns that skip, failures that are recorded, the summary
rebuilt, bad input refused in one line, and rg.variance's seeds on the same cluster.

Every process a test starts is stopped by it. The compiled-code cache is the suite's
(conftest's RGRAPH_CACHE_DIR); a sweep compiles its modules in one child process before
any worker starts a run, so no two processes compile the same module at once."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rgraph as rg
from rgraph import sweeps
from rgraph.cli import main
from rgraph.run import RunConfig

ROOT = Path(__file__).resolve().parent.parent

# one tiny grid: UORO on a 4-unit tanh RNN on a^n b^n, 6 seeds; every sweep here uses
# this one compiled module (one compile for the file, on a cold cache)
GRID = ["tanh", "--task", "anbn", "--hidden", "4", "--estimators", "uoro",
        "--seeds", "0-5", "--valid-steps", "500"]
KILL_STEPS = "400000"         # ~0.5 s of training per run on 2 shared cores


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), e.get("PYTHONPATH")]))
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    return e


def dask_cmd():
    exe = Path(sys.executable).with_name("dask")
    return [str(exe)] if exe.exists() else [shutil.which("dask")]


def rgraph(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "rgraph", *args], capture_output=True,
                          text=True, timeout=timeout, env=env(), cwd=ROOT)


def stop(procs):
    """SIGTERM, then SIGKILL after 10 s; every process is waited for."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes (no nanny: the worker is the
    process we hold, so SIGKILL really kills it) on 127.0.0.1; stopped at the end."""
    from distributed import Client
    d = tmp_path_factory.mktemp("dask")
    sched_file = d / "scheduler.json"
    common = ["--no-dashboard", "--host", "127.0.0.1"]
    procs = []
    logs = []

    def start(*cmd, name):
        log = open(d / f"{name}.log", "w")
        logs.append(log)
        p = subprocess.Popen([*dask_cmd(), *cmd], stdout=log, stderr=subprocess.STDOUT,
                             env=env(), cwd=d)
        procs.append(p)
        return p
    try:
        start("scheduler", "--port", "0", "--scheduler-file", str(sched_file), *common,
              name="scheduler")
        t0 = time.monotonic()
        while not sched_file.exists() and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        assert sched_file.exists(), (d / "scheduler.log").read_text()
        workers = {name: start("worker", "--scheduler-file", str(sched_file), "--nthreads",
                               "1", "--no-nanny", "--name", name, "--death-timeout", "60",
                               *common, name=name)
                   for name in ("w0", "w1")}
        with Client(scheduler_file=str(sched_file), timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        yield {"file": str(sched_file), "workers": workers, "procs": procs, "dir": d}
    finally:
        stop(procs[1:])         # the workers, then the scheduler they would wait for
        stop(procs[:1])
        for log in logs:
            log.close()
    assert all(p.poll() is not None for p in procs), "a process the test started is alive"


def records(out):
    return {p.stem: json.loads(p.read_text()) for p in (Path(out) / "records").glob("*.json")}


def test_variance_draws_its_seeds_on_the_cluster_with_the_same_numbers(cluster, tmp_path):
    # the numpy backend: nothing to compile, the same distribution of seeds
    args = ["variance", "tanh", "--sizes", "3", "--estimators", "uoro,kf-rtrl",
            "--seeds", "12", "--steps", "20", "--backend", "numpy", "-q"]
    dist = rgraph(*args, "--scheduler", cluster["file"], "--out", str(tmp_path / "d"))
    assert dist.returncode == 0, dist.stderr
    here = rgraph(*args, "--out", str(tmp_path / "s"))
    assert here.returncode == 0, here.stderr

    def table(d):      # every column but the time taken
        rows = (tmp_path / d / "variance.csv").read_text().splitlines()
        cut = rows[0].split(",").index("seconds")
        return [r.split(",")[:cut] for r in rows]
    assert table("d") == table("s")
    assert len(table("s")) == 3 and all(r[3] not in ("", "nan") for r in table("s")[1:])


def test_sweep_on_the_cluster_matches_serial_survives_a_killed_worker_and_skips(
        cluster, tmp_path):
    from distributed import Client
    grid = [*GRID, "--steps", KILL_STEPS, "-q"]
    dist, serial = tmp_path / "dist", tmp_path / "serial"
    ids = {sweeps.run_id(c) for c in sweeps.grid(
        json.loads(json.dumps(_base(KILL_STEPS))), ["uoro"], range(6))}
    proc = subprocess.Popen([sys.executable, "-m", "rgraph", "sweep", *grid, "--out",
                             str(dist), "--scheduler", cluster["file"]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), cwd=ROOT)
    try:
        # wait for a worker to be in the middle of one of our runs, then SIGKILL it
        # (one that started less than 0.2 s ago: a run takes ~1 s)
        victim, first_seen = None, {}
        with Client(scheduler_file=cluster["file"], timeout="30s") as c:
            t0 = time.monotonic()
            while victim is None and time.monotonic() - t0 < 120 and proc.poll() is None:
                names = {a: w["name"] for a, w in
                         c.scheduler_info(n_workers=-1)["workers"].items()}
                for addr, keys in c.processing().items():
                    for k in (k for k in keys if str(k).startswith("rgraph-run-")):
                        seen = first_seen.setdefault(k, time.monotonic())
                        if time.monotonic() - seen < 0.2 and \
                                len(records(dist)) < len(ids) - 2:
                            victim, victim_key = names[addr], k
                            break
                    if victim is not None:
                        break
                time.sleep(0.03)
        assert victim is not None, f"no run was seen running: {proc.communicate()}"
        cluster["workers"][victim].send_signal(signal.SIGKILL)
        cluster["workers"][victim].wait(10)
        done_at_kill = len(records(dist))
        out, err = proc.communicate(timeout=300)
    finally:
        stop([proc])
    assert proc.returncode == 0, err
    assert done_at_kill < len(ids)
    got = records(dist)
    # every run recorded once, as a whole file (no temporary left), each a success
    assert set(got) == ids and len(list((dist / "records").iterdir())) == len(ids)
    assert all("result" in r for r in got.values()), [r.get("error") for r in got.values()]
    # the run the killed worker had was run again, by the worker left
    survivor = cluster["workers"]["w1" if victim == "w0" else "w0"].pid
    assert got[victim_key.removeprefix("rgraph-run-")]["pid"] == survivor
    assert "ran 6, skipped 0" in out

    ser = rgraph("sweep", *grid, "--out", str(serial), "--serial")
    assert ser.returncode == 0, ser.stderr
    want = records(serial)
    assert set(want) == ids
    for i in ids:                                       # bit for bit
        assert got[i]["result"]["params_sha256"] == want[i]["result"]["params_sha256"]
        assert got[i]["result"]["valid_loss"] == want[i]["result"]["valid_loss"]
        assert got[i]["result"]["curve"] == want[i]["result"]["curve"]

    # the same command again skips everything and writes nothing
    before = {p.name: p.stat().st_mtime_ns for p in (dist / "records").iterdir()}
    again = rgraph("sweep", *grid, "--out", str(dist), "--scheduler", cluster["file"])
    assert again.returncode == 0, again.stderr
    assert "0 to run, 6 already recorded" in again.stdout
    assert "ran 0, skipped 6" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (dist / "records").iterdir()} == before


def _base(steps):
    """The config rgraph sweep builds from GRID (for the expected run ids): aⁿbⁿ's paper
    defaults included."""
    return sweeps.sweep_config(RunConfig.from_options(cell="tanh", task="anbn", hidden=4,
                                                      steps=int(steps)), 500)


def test_a_failed_run_is_recorded_the_sweep_goes_on_and_summarize_rebuilds(tmp_path,
                                                                           capsys):
    out = tmp_path / "s"
    # influence balancing at SGD lr 100 overflows (a non-finite loss near step 90): those
    # runs fail and are recorded, the runs at the paper's 3e-4 go on
    argv = ["sweep", "influence", "--task", "influence", "--estimators", "uoro",
            "--lr", "3e-4,100", "--seeds", "0-1", "--steps", "300", "--backend", "numpy",
            "--valid-steps", "200", "--out", str(out), "--serial"]
    assert main(argv) == 1
    # progress off a terminal: plain lines counting runs, the last one complete
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sweep: 4/4 runs (100%)")
    assert err[-1].endswith("done 4, running 0, failed 2"), err[-1]
    got = records(out)
    assert len(got) == 4
    bad = [r for r in got.values() if "error" in r]
    assert len(bad) == 2 and all(r["config"]["lr"] == 100 for r in bad)
    assert all("non-finite" in r["error"] for r in bad), bad[0]["error"]
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("estimator,lr,seeds,failed,train_loss_mean,train_loss_sd,"
                                 "train_loss_ci95_low,train_loss_ci95_high")
    rows = {r.split(",")[1]: r.split(",") for r in summary[1:]}
    assert rows["100"][2:4] == ["0", "2"]
    assert rows["0.0003"][2:4] == ["2", "0"]
    losses = [r["result"]["valid_loss"] for r in got.values() if "result" in r]
    col = summary[0].split(",").index("valid_loss_mean")
    assert float(rows["0.0003"][col]) == pytest.approx(sum(losses) / 2, rel=1e-5)

    # --summarize DIR rebuilds both files from the records alone
    text = (out / "summary.csv").read_text()
    (out / "summary.csv").unlink()
    (out / "summary.png").unlink()
    assert main(["sweep", "--summarize", str(out)]) == 0
    assert (out / "summary.csv").read_text() == text
    assert (out / "summary.png").stat().st_size > 1000

    # again: everything is skipped, the failures too (they are told how to retry)
    res = sweeps.run_sweep([r["config"] for r in got.values()], out, serial=True,
                           progress=False, log=lambda *a: None)
    assert (res["ran"], res["skipped"], res["failed"]) == (0, 4, 2)


def test_the_python_api_takes_a_client(tmp_path):
    """rg.sweep(..., client=) on an in-process Dask cluster gives the serial records; its
    four threads build their modules at once (builds take turns: CPython 3.11's ast.parse
    fails when two threads parse together)."""
    from distributed import Client, LocalCluster
    kw = dict(cell="tanh", task="anbn", estimators="uoro", seeds="0-1", hidden=[4],
              lr="1e-3,3e-3", steps=500, valid_steps=100, progress=False,
              log=lambda *a: None)
    serial = rg.sweep(**kw, out=tmp_path / "s", serial=True)
    with LocalCluster(n_workers=1, threads_per_worker=4, processes=False,
                      dashboard_address="127.0.0.1:0") as lc, Client(lc) as client:
        dist = rg.sweep(**kw, out=tmp_path / "d", client=client)
    assert all("result" in r for r in dist), [r.get("error") for r in dist]
    assert [r["id"] for r in dist] == [r["id"] for r in serial] and len(dist) == 4
    assert [r["config"]["lr"] for r in dist] == [1e-3, 1e-3, 3e-3, 3e-3]
    assert [r["result"]["params_sha256"] for r in dist] == \
        [r["result"]["params_sha256"] for r in serial]
    assert len({r["result"]["params_sha256"] for r in dist}) == 4


@pytest.mark.parametrize("extra,msg", [
    (["-e", "nosuch"], "unknown estimator 'nosuch'"),
    (["-e", "tbptt(x)"], "not a positive integer"),
    (["-e", "uoro", "--seeds", "5-2"], "bad seed range '5-2'"),
    (["-e", "uoro", "--seeds", "a-b"], "bad seed range 'a-b'"),
    (["-e", "uoro", "--hidden", "4,x"], "'x' is not an integer"),
    (["-e", "uoro", "--lr", "0"], "must be > 0"),
    (["-e", "uoro", "--workers", "0"], "--workers must be >= 1"),
    (["-e", "uoro", "--serial", "--workers", "2"], "one of --scheduler, --workers"),
    (["-e", "uoro", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1"],
     "cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
    (["-e", "uoro,projected-uoro[nosuch]"], "cell 'tanh_rnn' has no node 'nosuch'"),
    (["-e", "uoro", "--rank", "0"], "rank must be an integer >= 1, got 0"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, capsys, extra, msg):
    code = main(["sweep", "tanh", "--task", "anbn", "--steps", "10", "--out",
                 str(tmp_path / "s"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and msg in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "s" / "records").exists() or \
        not any((tmp_path / "s" / "records").iterdir())


def test_an_estimator_that_does_not_apply_is_refused_before_anything_runs(tmp_path,
                                                                          capsys):
    """KF-RTRL on Cho's GRU: the sweep exits 2 before any run (no records, no compile),
    saying the analysis's reason once for its runs; --skip-inapplicable runs the rest
    and says how many it left out."""
    argv = ["sweep", "gru", "--task", "anbn", "--hidden", "4", "-e", "uoro,kf-rtrl",
            "--seeds", "0-2", "--steps", "200", "--valid-steps", "100", "--backend",
            "numpy", "--serial", "-q", "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.count("does not apply to cell") == 1, err
    assert err.startswith("rgraph sweep: 3 runs of 6 cannot start: kf-rtrl does not "
                          "apply to cell 'gru': the input 'rhx' of the product")
    assert "--skip-inapplicable" in err and "to run the other 3 runs" in err
    assert not (tmp_path / "s").exists()
    assert main([*argv, "--skip-inapplicable"]) == 0
    out = capsys.readouterr().out
    assert "skipping 3 runs of 6: kf-rtrl does not apply to cell 'gru'" in out
    got = records(tmp_path / "s")
    assert len(got) == 3 and {r["config"]["estimator"] for r in got.values()} == {"uoro"}
    # the Python API: the same refusal, and the same skip
    quiet = dict(serial=True, progress=False, valid_steps=100, backend="numpy")
    with pytest.raises(sweeps.SweepError, match="3 runs of 6 cannot start: kf-rtrl"):
        rg.sweep("gru", task="anbn", hidden=4, estimators="uoro,kf-rtrl", seeds="0-2",
                 steps=200, out=tmp_path / "p", log=lambda *a: None, **quiet)
    said = []
    recs = rg.sweep("gru", task="anbn", hidden=4, estimators="uoro,kf-rtrl", seeds="0-2",
                    steps=200, out=tmp_path / "s", skip_inapplicable=True, log=said.append,
                    **quiet)
    assert sorted(r["id"] for r in recs) == sorted(got)      # all three recorded before
    assert any(s.startswith("skipping 3 runs of 6") for s in said)
    # nothing applies: refused even with the flag
    with pytest.raises(sweeps.SweepError, match="no run of this grid can start"):
        rg.sweep("gru", task="anbn", hidden=4, estimators="kf-rtrl", seeds="0-2",
                 steps=200, out=tmp_path / "p", skip_inapplicable=True,
                 log=lambda *a: None, **quiet)


def test_summarize_without_records_and_sweep_without_out(tmp_path, capsys):
    assert main(["sweep", "--summarize", str(tmp_path)]) == 2
    assert "holds no records" in capsys.readouterr().err
    assert main(["sweep", "tanh", "--task", "anbn", "-e", "uoro"]) == 2
    assert "needs --out" in capsys.readouterr().err


def test_grid_parsing_and_stable_ids():
    assert sweeps.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert sweeps.parse_seeds(range(2)) == [0, 1]
    assert sweeps.parse_estimators("uoro,projected-uoro[h_new,c_new]") == \
        ["uoro", "projected-uoro[h_new,c_new]"]
    a = {"lr": 0.001, "seed": 1, "estimator": "uoro"}
    b = {"estimator": "uoro", "seed": 1, "lr": 1e-3}
    assert sweeps.run_id(a) == sweeps.run_id(b) != sweeps.run_id({**a, "seed": 2})
    assert sweeps.group_id(a) == sweeps.group_id({**a, "seed": 2})
    with pytest.raises(sweeps.SweepError, match="given twice"):
        sweeps.parse_seeds("0-2,1")


def test_the_python_api_takes_run_configs(tmp_path):
    """rg.sweep(list of RunConfigs) runs exactly those runs: the same records as the grid
    given by keywords; mixing the two forms, or a run without an estimator, is refused."""
    quiet = dict(serial=True, progress=False, log=lambda *a: None, valid_steps=100)
    # the keywords' runs take the task's paper defaults, as from_options gives them
    base = RunConfig.from_options(cell="tanh", task="anbn", hidden=4, steps=300,
                                  estimator="uoro",
                                  checkpoint_every=7)   # a run-folder option: not a sweep's
    assert (base.decay, base.decay_per) == (0.03, "step")
    got = rg.sweep([base.replace(seed=1), base], out=tmp_path / "c", **quiet)
    want = rg.sweep(cell="tanh", task="anbn", hidden=4, steps=300, estimators="uoro",
                    seeds=[1, 0], out=tmp_path / "k", **quiet)
    assert [r["id"] for r in got] == [r["id"] for r in want] and len(got) == 2
    assert [r["result"]["params_sha256"] for r in got] == \
        [r["result"]["params_sha256"] for r in want]
    assert "version" not in got[0]["config"] and "checkpoint_every" not in got[0]["config"]
    with pytest.raises(TypeError, match="not both: drop task, steps"):
        rg.sweep([base], task="anbn", steps=10, out=tmp_path / "x", **quiet)
    with pytest.raises(sweeps.SweepError, match=r"configs\[0\] has no estimator"):
        rg.sweep(configs=[base.replace(estimator=None)], out=tmp_path / "x", **quiet)
    with pytest.raises(TypeError, match=r"configs\[1\] is a dict, not a RunConfig"):
        rg.sweep([base, {"cell": "tanh"}], out=tmp_path / "x", **quiet)
    with pytest.raises(sweeps.SweepError, match="unknown estimator 'uorro'"):
        rg.sweep([base.replace(estimator="uorro")], out=tmp_path / "x", **quiet)
    with pytest.raises(TypeError, match=r"unknown options \['seed'\]"):
        rg.sweep(task="anbn", seed=3, out=tmp_path / "x", **quiet)
    assert not (tmp_path / "x").exists()


def test_run_ids_are_those_of_configs_before_run_config():
    """A sweep run's config has no version and no run-folder options, so a folder of
    records written before RunConfig existed keeps its ids (and is not run again)."""
    cfg = sweeps.sweep_config(RunConfig(cell="tanh", task="anbn", steps=500,
                                        estimator="uoro", hidden=4,
                                        estimator_options={"rank": 2}), 100)
    assert sweeps.run_id(cfg) == "b69a790e2a557fd4"
    assert sweeps.run_config_of(cfg) == RunConfig(cell="tanh", task="anbn", steps=500,
                                                  estimator="uoro", hidden=4,
                                                  estimator_options={"rank": 2})


def test_the_run_layer_and_sweeps_use_no_argparse():
    """rg.sweep takes keywords or RunConfigs: no module of rgraph.run or rgraph.sweeps
    imports argparse, anywhere in the file."""
    import ast
    bad = []
    for folder in ("run", "sweeps"):
        for path in sorted((ROOT / "rgraph" / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) else []
                bad += [f"{path.name}: {n}" for n in names if n and n.split(".")[0] ==
                        "argparse"]
    assert (ROOT / "rgraph" / "sweeps" / "driver.py").exists() and not bad, bad
