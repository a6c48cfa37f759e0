"""Sweeps: many training runs (estimators x sizes x learning rates x seeds) on Dask.

A sweep is a grid of ``rgraph train`` configs. Each point of the grid is one run with
one record, ``DIR/records/<run-id>.json``, where the run id is a stable hash of the
run's config (canonical JSON), so the same command again finds what is done and runs
only the rest. The runs go to Dask distributed: a local cluster of worker processes by
default, an existing scheduler (``scheduler="tcp://host:port"`` or ``client=``) for a
cluster, or this process in order (``serial=True``, for debugging and comparison).

Who writes the records: the driver (this process), from the results the workers send
back, one atomic write (temporary file, then ``os.replace``) per run. A worker only
trains and returns a dict. So

* a worker killed mid-run leaves nothing on disk: Dask runs the task again on another
  worker (up to its ``distributed.scheduler.allowed-failures``; past that the run is
  recorded as failed with the ``KilledWorker`` error), and the driver writes its record
  once, when the one result of that task arrives: no duplicate, no half-written file;
* workers need no file system shared with the driver (cluster nodes with local disks
  work);
* the driver killed mid-sweep loses only the runs it had not yet received; the records
  already written stay, and the same command again runs the rest.

Every run trains with one BLAS thread (``threadpoolctl``) and runs the object code of
rgraph's compiled-code cache (``rgraph.cache``: every process loads it, the one that
compiled included). Before any run starts, a child process builds and compiles each
distinct module of the sweep (``warm_cache``), so that workers sharing the driver's
cache only load it: they do not all compile the same module at once, and no run's time
includes a compile. A run's numbers therefore do not depend on where it ran: the serial
and the distributed sweep write the same ``params_sha256``.

``summarize(DIR)`` rebuilds ``summary.csv`` (one row per config: mean, standard
deviation and 95 % interval over seeds) and ``summary.png`` (learning curves, mean and a
band per config) from the records alone.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from .training.checkpoints import arrays_sha256

RECORDS = "records"
# rgraph train's options that manage its run folder: a sweep run has no folder
FOLDER_ONLY = ("checkpoint_every", "full_curve")
# what a run's compiled code depends on (runs that agree on these share the modules)
COMPILE_KEYS = ("cell", "hidden", "nonlinearity", "form", "task", "task_args", "text",
                "estimator", "estimator_options", "backend")
CURVE_ROWS = 200           # points of the learning curve a record keeps (block means)
VALID_SEED = 20240101      # the held-out stream's generator: the same for every run
DEFAULT_VALID_STEPS = 10_000


class SweepError(ValueError):
    """Bad input to a sweep (a grid, a seed range, a scheduler): one line for the user."""


# ------------------------------------------------------------------ the grid
def parse_seeds(text) -> list[int]:
    """"0-7" -> [0, ..., 7]; "3" -> [3]; "0-3,8,10-11"; an int or a list passes."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        seeds = list(text)
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0
                   for s in seeds) or not seeds:
            raise SweepError(f"seeds must be non-negative integers, got {text!r}")
        return _unique([int(s) for s in seeds], "seed")
    seeds = []
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise SweepError(f"bad seed range {text!r}: write A-B (e.g. 0-7), or seeds "
                             f"separated by commas") from None
        if a < 0 or b < a:
            raise SweepError(f"bad seed range {part!r} in {text!r}: write A-B with "
                             f"0 <= A <= B")
        seeds.extend(range(a, b + 1))
    return _unique(seeds, "seed")


def parse_values(text, kind, name) -> list:
    """"16,32" -> [16, 32] (kind int: sizes >= 1; kind float: > 0); a number or a list
    passes."""
    items = text.split(",") if isinstance(text, str) else \
        (list(text) if isinstance(text, (list, tuple, range)) else [text])
    out = []
    for item in items:
        try:
            if kind is int:
                val = float(item) if isinstance(item, str) else item
                if isinstance(val, bool) or float(val) != int(val):
                    raise ValueError
                val = int(val)
            else:
                val = float(item)
        except (TypeError, ValueError):
            raise SweepError(f"--{name} {text!r}: {str(item).strip()!r} is not "
                             f"{'an integer' if kind is int else 'a number'}") from None
        if not val > 0 or (kind is float and not math.isfinite(val)):
            raise SweepError(f"--{name} {text!r}: every value must be > 0, got {val}")
        out.append(val)
    return _unique(out, name)


def _unique(values, name):
    if len(set(values)) != len(values):
        dup = sorted({v for v in values if values.count(v) > 1})
        raise SweepError(f"{name} {', '.join(map(str, dup))} given twice")
    return values


def parse_estimators(names) -> list[str]:
    """Estimator names ("uoro,tbptt(16)" or a list); an unknown or malformed one fails
    here, before anything runs."""
    from .estimators import known
    from .estimators.names import split_estimators
    names = split_estimators(names, ",") if isinstance(names, str) else list(names)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise SweepError("no estimator given (e.g. --estimators uoro,tbptt(16))")
    for n in names:
        try:
            known(n)
        except (TypeError, ValueError) as e:
            raise SweepError(str(e)) from None
    return _unique(names, "estimator")


def grid(base: dict, estimators, seeds, hidden=None, lr=None) -> list[dict]:
    """One config per (estimator, hidden, lr, seed), in that order of nesting: ``base``
    (a run's config, as ``rgraph train`` builds it) with the four set."""
    hidden = [base["hidden"]] if hidden is None else hidden
    lr = [base["lr"]] if lr is None else lr
    return [{**base, "estimator": e, "hidden": n, "lr": r, "seed": s}
            for e in estimators for n in hidden for r in lr for s in seeds]


def canonical(cfg: dict) -> str:
    """The config as canonical JSON (sorted keys, no spaces): what the run id hashes."""
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def run_id(cfg: dict) -> str:
    """A stable id of a run: the first 16 hex digits of SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical(cfg).encode()).hexdigest()[:16]


def group_id(cfg: dict) -> str:
    """The id of the config a run belongs to over seeds (its config without the seed)."""
    return run_id({k: v for k, v in cfg.items() if k != "seed"})


# ------------------------------------------------------------------- one run
def params_sha256(params: dict) -> str:
    """SHA-256 over the parameters, name by name (sorted), as float bytes in C order (the
    checksum checkpoints carry)."""
    return arrays_sha256(params)


def _finite(x):
    x = float(x)
    return x if math.isfinite(x) else None


def validation_data(task, steps: int):
    """(xs, ys, weights, resets) to measure a trained run on: the task's validation split
    (its first ``steps`` steps) where it has one, else ``steps`` steps of a fresh copy of
    the task drawn with a fixed generator (the same data for every run)."""
    if hasattr(task, "valid"):
        xs, ys = task.valid(steps)
        return xs, ys, None, None
    fresh = task.fork(0, 1)
    rng = np.random.default_rng(VALID_SEED)
    if getattr(fresh, "weighted", False):
        xs, ys, ws, rs = fresh.stream_weighted(steps, rng, return_starts=True)
        return xs, ys, ws, rs
    xs, ys = fresh.stream(steps, rng)
    return xs, ys, None, None


# A worker with several threads runs several runs in one process. Building a module is
# not thread-safe (CPython 3.11's ast.parse can fail with "AST constructor recursion
# depth mismatch" when two threads parse at once), so builds and the loading of compiled
# code take turns; training does not. BLAS is held to one thread while any run is going.
_BUILD_LOCK = threading.Lock()
_BLAS_LOCK = threading.Lock()
_BLAS = {"runs": 0, "limits": None}


@contextlib.contextmanager
def one_blas_thread():
    """BLAS limited to one thread (threadpoolctl) while at least one run of this process
    is inside; the first to enter sets the limit, the last to leave restores it."""
    from threadpoolctl import threadpool_limits
    with _BLAS_LOCK:
        if _BLAS["runs"] == 0:
            _BLAS["limits"] = threadpool_limits(1)
        _BLAS["runs"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS["runs"] -= 1
            if _BLAS["runs"] == 0:
                _BLAS["limits"].restore_original_limits()


def run_one(cfg: dict, force_memory: bool = False) -> dict:
    """Train the run ``cfg`` describes (``rgraph train``'s entry points: ``build_run``,
    ``make_trainer``, ``Trainer.run_task``) and return its record. An error in the run
    is caught and recorded: ``{"id", "config", "error", "traceback"}``. ``force_memory``:
    as ``rgraph train --force-memory`` (not part of the config: it changes no number)."""
    from .cli import build_run, make_trainer
    from .training.trainer import curve_rows
    rec = {"id": run_id(cfg), "config": cfg,
           "host": socket.gethostname(), "pid": os.getpid(),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    t0 = time.perf_counter()
    try:
        with one_blas_thread():
            with _BUILD_LOCK:
                _, task, est = build_run(cfg, force_memory)
                tr = make_trainer(cfg, est, force_memory=force_memory)
                tr._warm_up()                      # load the compiled loop: not timed
            t1 = time.perf_counter()
            # one mean loss per chunk (memory O(steps / chunk), not a float per step)
            tr.run_task(task, cfg["steps"], record="chunk")
            seconds = time.perf_counter() - t1
            curve = np.atleast_1d(task.to_unit(np.asarray(tr.curve, dtype=float)))
            tail = curve[-max(1, len(curve) // 10):]
            xs, ys, ws, rs = validation_data(task, cfg.get("valid_steps",
                                                           DEFAULT_VALID_STEPS))
            valid = task.to_unit(est.loss(tr.params, xs, ys, ws, rs))
        rows, means = curve_rows(curve, CURVE_ROWS)     # block means of chunk means
        steps = np.asarray(tr.curve_steps, dtype=np.int64)[rows]
        rec["result"] = {
            "train_loss": _finite(np.nanmean(tail)) if np.any(np.isfinite(tail)) else None,
            "valid_loss": _finite(valid),
            "unit": task.unit, "optimum": getattr(task, "optimum", None),
            "params_sha256": params_sha256(tr.params),
            "steps": int(tr.step), "seconds": seconds,
            "compile_seconds": t1 - t0,
            "curve": {"step": [int(s) for s in steps],
                      "loss": [_finite(m) for m in means]}}
    except Exception as e:          # recorded; the sweep goes on
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc()[-4000:]
    rec["total_seconds"] = time.perf_counter() - t0
    return rec


def failed_record(cfg: dict, err: BaseException) -> dict:
    """The record of a run whose task never returned (e.g. Dask gave up on it after
    its workers died: ``KilledWorker``)."""
    return {"id": run_id(cfg), "config": cfg, "error": f"{type(err).__name__}: {err}"}


# ------------------------------------------------------------------- records
def records_dir(out) -> Path:
    return Path(out) / RECORDS


def write_record(out, rec: dict) -> Path:
    """``out/records/<id>.json``, written atomically: a temporary file beside it, then
    ``os.replace``; a reader sees the old file or the whole new one, never a part."""
    d = records_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{rec['id']}.json"
    tmp = d / f".{rec['id']}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(rec, indent=1, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_records(out) -> dict:
    """{run id: record} of every record under ``out/records`` whose id is the hash of
    its config (a file that is not such a record is reported and ignored)."""
    found = {}
    d = records_dir(out)
    if not d.is_dir():
        return found
    for path in sorted(d.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            ok = rec["id"] == path.stem == run_id(rec["config"])
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            print(f"rgraph sweep: ignoring {path}: not a record of this sweep format",
                  file=sys.stderr)
            continue
        found[rec["id"]] = rec
    return found


# ------------------------------------------------------------------ the engine
def warm_cache(cfgs, timeout=None):
    """Compile every distinct module the runs need, in a child process (one short run
    per distinct module: the compiled loop and the evaluation are called once, so numba
    writes them to rgraph's cache). Errors are left for the runs themselves to record."""
    seen, todo = set(), []
    for cfg in cfgs:
        key = canonical({k: cfg.get(k) for k in COMPILE_KEYS})
        if key not in seen:
            seen.add(key)
            todo.append({**cfg, "steps": 1, "valid_steps": 2})
    if not todo:
        return
    subprocess.run([sys.executable, "-c",
                    "from rgraph.sweeps import _warm_main; _warm_main()"],
                   input=json.dumps(todo), text=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, check=False)


def _worker_env():
    """Local workers import the same rgraph as this process (a source checkout on
    PYTHONPATH included) and use the same compiled-code cache."""
    import rgraph
    env = {}
    root = str(Path(rgraph.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    if root not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, path]))
    if "RGRAPH_CACHE_DIR" in os.environ:
        env["RGRAPH_CACHE_DIR"] = os.environ["RGRAPH_CACHE_DIR"]
    return env


@contextlib.contextmanager
def dask_client(scheduler=None, workers=None, connect_timeout=10.0, log=print):
    """A ``dask.distributed.Client``: connected to ``scheduler`` ("tcp://host:port", or a
    scheduler file's path), else to a new local cluster of ``workers`` processes (default:
    the cores) with one thread each, shut down on exit."""
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError as e:         # a broken install: the project depends on it
        raise SweepError(f"Dask distributed is not importable ({e}); "
                         f"pip install 'dask[distributed]'") from None
    if scheduler is not None:
        kw = ({"scheduler_file": str(scheduler)} if os.path.isfile(str(scheduler))
              else {"address": str(scheduler)})
        try:
            client = Client(**kw, timeout=f"{connect_timeout}s")
        except (OSError, ValueError, TypeError) as e:
            raise SweepError(f"cannot reach the Dask scheduler at {scheduler}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                             ) from None
        try:
            n = len(client.scheduler_info(n_workers=-1)["workers"])
            log(f"Dask scheduler {client.scheduler.address}: {n} worker(s); "
                f"dashboard {client.dashboard_link}")
            yield client
        finally:
            client.close()
        return
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    try:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address="127.0.0.1:0", host="127.0.0.1",
                               silence_logs=logging.ERROR, env=_worker_env())
    except Exception as e:              # no free port, no memory, ...: say it in a line
        raise SweepError(f"cannot start a local Dask cluster of {workers} workers: "
                         f"{type(e).__name__}: {e}") from None
    client = Client(cluster)
    try:
        import importlib.util
        log(f"local Dask cluster: {workers} worker process(es); "
            f"dashboard {client.dashboard_link}"
            + (" (its pages need bokeh: pip install bokeh)"
               if importlib.util.find_spec("bokeh") is None else ""))
        yield client
    finally:
        client.close()
        cluster.close()


class _Progress:
    """One bar over runs with the done, running and failed counts (a plain line every
    few seconds off a terminal: ``training.trainer._progress``)."""

    def __init__(self, total, enabled):
        from .training.trainer import _progress
        self.bar = _progress(enabled, total, "sweep", unit="run")
        self.done = self.failed = self.running = 0

    def finished(self, rec):
        self.done += 1
        self.failed += "error" in rec
        self.running = max(0, self.running - 1)
        self.show()                 # the counts first: a plain line prints on update
        if self.bar is not None:
            self.bar.update(1)

    def show(self, running=None):
        if running is not None:
            self.running = running
        if self.bar is not None:
            self.bar.set_postfix_str(f"done {self.done}, running {self.running}, "
                                     f"failed {self.failed}", refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _run_serial(todo, out, bar, force_memory=False):
    for cfg in todo:
        bar.show(running=1)
        rec = run_one(cfg, force_memory)
        write_record(out, rec)
        bar.finished(rec)


def _run_dask(todo, out, client, bar, force_memory=False):
    """Submit every run, write each record as its result arrives. A run Dask gave up on
    (``KilledWorker``: its workers died ``allowed-failures`` times) is recorded as
    failed; runs cancelled because the scheduler went away are not recorded at all (they
    did not fail: the same command again runs them)."""
    from concurrent.futures import CancelledError

    from distributed import wait
    futures = {client.submit(run_one, cfg, force_memory, key=f"rgraph-run-{run_id(cfg)}",
                             pure=False): cfg for cfg in todo}
    keys = {f.key for f in futures}
    pending = set(futures)
    cancelled = 0
    last = 0.0
    try:
        while pending:
            try:
                done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = ()
            for fut in done:
                try:
                    rec = fut.result()
                except CancelledError:
                    cancelled += 1
                    continue
                except Exception as e:       # KilledWorker, a lost result, ...
                    rec = failed_record(futures[fut], e)
                write_record(out, rec)
                bar.finished(rec)
                fut.release()
            if time.monotonic() - last > 1.0 and pending:
                last = time.monotonic()
                try:
                    # tasks the scheduler has handed to workers, at most one per worker
                    # thread (a worker holds a second one queued while it runs one)
                    proc = client.processing()
                    threads = sum(w["nthreads"] for w in
                                  client.scheduler_info(n_workers=-1)["workers"].values())
                    bar.show(running=min(threads, sum(k in keys for ks in proc.values()
                                                      for k in ks)))
                except Exception:   # the count is cosmetic: never stop a sweep for it
                    pass
        bar.show(running=0)
    finally:
        for fut in pending:
            fut.cancel()
    if cancelled:
        raise SweepError(f"{cancelled} run(s) were cancelled by Dask (the scheduler went "
                         f"away?) and have no record; run the same command again")


def run_sweep(cfgs, out, client=None, scheduler=None, workers=None, serial=False,
              retry_failed=False, progress=True, connect_timeout=10.0, force_memory=False,
              log=print) -> dict:
    """Run the configs that have no record under ``out`` (and, with ``retry_failed``,
    those whose record is a failure); write their records; rebuild the summary. Returns
    {"records": [one per config, in order], "ran", "skipped", "failed"}."""
    out = Path(out)
    ids = [run_id(c) for c in cfgs]
    if len(set(ids)) != len(ids):
        raise SweepError("the grid lists a run twice")
    have = load_records(out)
    todo = [c for c, i in zip(cfgs, ids, strict=True)
            if i not in have or (retry_failed and "error" in have[i])]
    skipped = len(cfgs) - len(todo)
    failed_before = sum(1 for i in ids if i in have and "error" in have[i])
    log(f"sweep of {len(cfgs)} run(s) into {out}: {len(todo)} to run, {skipped} already "
        f"recorded" + (f" ({failed_before} of them failed: --retry-failed runs them "
                       f"again)" if failed_before and not retry_failed else ""))
    records_dir(out).mkdir(parents=True, exist_ok=True)
    if todo:
        with contextlib.ExitStack() as stack:
            if not serial and client is None:   # a bad address fails before any work
                client = stack.enter_context(dask_client(scheduler, workers,
                                                         connect_timeout, log))
            warm_cache(todo)
            bar = _Progress(len(todo), progress)
            stack.callback(bar.close)
            if serial:
                _run_serial(todo, out, bar, force_memory)
            else:
                _run_dask(todo, out, client, bar, force_memory)
    have = load_records(out)
    records = [have[i] for i in ids if i in have]
    failed = sum(1 for r in records if "error" in r)
    log(f"ran {len(todo)}, skipped {skipped}; {failed} of {len(cfgs)} record(s) are "
        f"failures" + (": see their \"error\"" if failed else ""))
    return {"records": records, "ran": len(todo), "skipped": skipped, "failed": failed}


# ---------------------------------------------------------------- aggregation
METRICS = ("train_loss", "valid_loss")


def _interval(vals):
    """mean, sd, and the 95 % interval of the mean (Student t) of finite values."""
    from scipy import stats
    v = np.asarray([x for x in vals if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return dict(mean=np.nan, sd=np.nan, lo=np.nan, hi=np.nan, median=np.nan,
                    min=np.nan, max=np.nan, n=0)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else np.nan
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else np.nan
    return dict(mean=mean, sd=sd, lo=mean - half, hi=mean + half,
                median=float(np.median(v)), min=float(v.min()), max=float(v.max()), n=n)


def groups(records) -> list[dict]:
    """Records grouped by config over seeds, in order of first appearance: each
    {"id", "config" (without the seed), "records", "seeds"}."""
    out = {}
    for rec in records:
        gid = group_id(rec["config"])
        g = out.setdefault(gid, {"id": gid, "records": [],
                                 "config": {k: v for k, v in rec["config"].items()
                                            if k != "seed"}})
        g["records"].append(rec)
    for g in out.values():
        g["records"].sort(key=lambda r: r["config"]["seed"])
        g["seeds"] = [r["config"]["seed"] for r in g["records"]]
    gs = list(out.values())
    keys = _varying(gs)
    return sorted(gs, key=lambda g: [_order(g["config"].get(k)) for k in keys])


def _order(v):
    """A sort key for config values of any type (numbers by value, the rest as JSON)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, canonical({"v": v}))


def _varying(gs) -> list[str]:
    """The config keys that tell the groups apart (the estimator always)."""
    keys = list(dict.fromkeys(k for g in gs for k in g["config"]))
    vary = [k for k in keys
            if len({canonical({"v": g["config"].get(k)}) for g in gs}) > 1]
    return ["estimator"] + [k for k in vary if k != "estimator"]


def _fmt(x):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (dict, list)):
        return json.dumps(x, sort_keys=True)
    return str(x)


def summary_rows(records) -> tuple[list[str], list[list]]:
    """(header, rows) of summary.csv: one row per config."""
    gs = groups(records)
    keys = _varying(gs)
    head = keys + ["seeds", "failed"]
    for m in METRICS:
        head += [f"{m}_{s}" for s in ("mean", "sd", "ci95_low", "ci95_high", "median",
                                      "min", "max")]
    head += ["unit", "steps", "config_id"]
    rows = []
    for g in gs:
        ok = [r for r in g["records"] if "result" in r]
        row = [g["config"].get(k) for k in keys] + [len(ok), len(g["records"]) - len(ok)]
        for m in METRICS:
            s = _interval([r["result"][m] for r in ok])
            row += [s["mean"], s["sd"], s["lo"], s["hi"], s["median"], s["min"], s["max"]]
        row += [ok[0]["result"]["unit"] if ok else "", g["config"].get("steps"), g["id"]]
        rows.append(row)
    return head, rows


def summary_table(records) -> str:
    """The summary as aligned text (what ``rgraph sweep`` prints)."""
    head, rows = summary_rows(records)
    ki = head.index("seeds")
    cols = head[:ki] + ["seeds", "failed"]
    idx = [head.index(c) for c in cols]
    extra = []
    for m in METRICS:
        extra += [(f"{m} mean ± sd", head.index(f"{m}_mean"), head.index(f"{m}_sd")),
                  ("[95% interval]", head.index(f"{m}_ci95_low"),
                   head.index(f"{m}_ci95_high"))]
    table = [[*cols, *(e[0] for e in extra)]]
    for r in rows:
        cells = [_fmt(r[i]) for i in idx]
        for name, a, b in extra:
            if name.startswith("["):
                cells.append(f"[{_fmt4(r[a])}, {_fmt4(r[b])}]" if _ok(r[a]) else "")
            else:
                cells.append(f"{_fmt4(r[a])} ± {_fmt4(r[b])}" if _ok(r[b]) else _fmt4(r[a]))
        table.append(cells)
    width = [max(len(row[j]) for row in table) for j in range(len(table[0]))]
    unit = next((r[head.index("unit")] for r in rows if r[head.index("unit")]), "")
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)).rstrip()
             for row in table]
    return "\n".join(lines) + (f"\n(losses in {unit}; the interval is the mean's, "
                               f"Student t over seeds)" if unit else "")


def _ok(x):
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _fmt4(x):
    return f"{x:.4g}" if _ok(x) else "nan"


def write_summary(out, records=None) -> tuple[Path, Path]:
    """``out/summary.csv`` and ``out/summary.png`` from the records (all of those under
    ``out/records`` unless given)."""
    out = Path(out)
    records = list(load_records(out).values()) if records is None else records
    if not records:
        raise SweepError(f"{str(out)!r} holds no records (expected {out / RECORDS}/*.json)")
    head, rows = summary_rows(records)
    csv_path = out / "summary.csv"
    tmp = out / f".summary.csv.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in rows:
            w.writerow([_fmt(x) for x in r])
    os.replace(tmp, csv_path)
    return csv_path, plot_summary(records, out / "summary.png")


def plot_summary(records, path) -> Path:
    """Learning curves in the task's unit (``plots.bands``): per config, the mean over
    seeds of the records' block means, with a band of ± one standard deviation."""
    from . import plots
    gs = groups(records)
    keys = _varying(gs)
    series, unit, optimum = [], "", None
    for g in gs:
        ok = [r["result"] for r in g["records"] if "result" in r]
        if not ok:
            continue
        unit = ok[0]["unit"]
        optimum = ok[0].get("optimum") if optimum is None else optimum
        steps = ok[0]["curve"]["step"]
        curves = [[np.nan if v is None else v for v in r["curve"]["loss"]]
                  for r in ok if r["curve"]["step"] == steps]
        label = ", ".join(f"{k} {_fmt(g['config'].get(k))}" if k != "estimator"
                          else str(g["config"]["estimator"]) for k in keys)
        series.append((label, steps, curves))
    cfg = gs[0]["config"]
    return plots.bands(series, path, optimum,
                       f"{cfg.get('cell')} on {cfg.get('task')}: block means of the "
                       f"training loss", unit)


# --------------------------------------------------------------- the Python API
def sweep(cell="lstm", task=None, estimators=("uoro",), seeds="0", hidden=None, lr=None,
          out="runs/sweep", client=None, scheduler=None, workers=None, serial=False,
          retry_failed=False, progress=True, valid_steps=DEFAULT_VALID_STEPS,
          log=print, **options) -> list[dict]:
    """Run a sweep and return its records (one per run, in grid order).

    ``cell``, ``task``: as for ``rgraph train`` (a built-in name or "file.py:function";
    a task name). ``estimators`` (names or "uoro,tbptt(16)"), ``seeds`` ("0-7", a list),
    ``hidden`` and ``lr`` (a value or a list) make the grid. ``options``: any other
    ``rgraph train`` option by its Python name (``steps``, ``batch``, ``decay``,
    ``task_args``, ``rank``, ...). The runs go to ``client`` (a
    ``dask.distributed.Client``), else to ``scheduler`` (an address), else to a new local
    cluster of ``workers`` processes; ``serial=True`` runs them here, in order. Records
    are written under ``out/records``; ``out/summary.csv`` and ``summary.png`` follow."""
    import argparse

    from .cli import add_run_args, check_run_args, run_config
    if task is None:
        from .tasks import TASKS
        raise SweepError(f"a sweep needs a task ({', '.join(TASKS)})")
    parser = argparse.ArgumentParser()
    add_run_args(parser)            # the options of a run, as rgraph train and sweep take
    defaults = vars(parser.parse_args([]))
    unknown = sorted(set(options) - set(defaults) - {"task"})
    if unknown:
        raise TypeError(f"sweep() got unknown options {unknown}; it takes rgraph train's "
                        f"run options by their Python names: {', '.join(sorted(defaults))}")
    args = {**defaults, **options, "cell": cell, "task": task, "estimator": None,
            "hidden": 32, "lr": 1e-3, "seed": None}
    check_run_args(argparse.Namespace(**args))
    base = sweep_config(run_config(argparse.Namespace(**args)), valid_steps)
    cfgs = grid(base, parse_estimators(estimators), parse_seeds(seeds),
                None if hidden is None else parse_values(hidden, int, "hidden"),
                None if lr is None else parse_values(lr, float, "lr"))
    check_configs(cfgs)
    res = run_sweep(cfgs, out, client=client, scheduler=scheduler, workers=workers,
                    serial=serial, retry_failed=retry_failed, progress=progress,
                    force_memory=bool(options.get("force_memory")), log=log)
    write_summary(out)
    return res["records"]


def sweep_config(cfg: dict, valid_steps: int) -> dict:
    """A sweep run's config: ``rgraph train``'s, less the run-folder options, plus the
    length of the held-out stream its validation loss is measured on."""
    if isinstance(valid_steps, bool) or not isinstance(valid_steps, int) or valid_steps < 1:
        raise SweepError(f"--valid-steps must be an integer >= 1, got {valid_steps!r}")
    cfg = {k: v for k, v in cfg.items() if k not in FOLDER_ONLY}
    cfg["valid_steps"] = valid_steps
    return cfg


def check_configs(cfgs):
    """Fail now, in one line, on what would fail every run of a config: an unknown cell
    or task, bad task options (cells are built, nothing is compiled)."""
    from .cli import CLIError, load_cell, make_task
    seen = set()
    for cfg in cfgs:
        key = canonical({k: cfg.get(k) for k in ("cell", "hidden", "nonlinearity", "form",
                                                 "task", "task_args", "text")})
        if key in seen:
            continue
        seen.add(key)
        try:
            t = make_task(cfg["task"], cfg.get("task_args"), cfg.get("text"))
            if cfg["cell"] != "influence":
                load_cell(cfg["cell"], t.n_in, cfg["hidden"], t.n_out,
                          nonlinearity=cfg.get("nonlinearity"), form=cfg.get("form"))
        except CLIError as e:
            raise SweepError(str(e)) from None


def _warm_main():
    """``warm_cache``'s child process: one short run per config read from stdin."""
    for cfg in json.load(sys.stdin):
        run_one(cfg)
