"""A sweep's engine: each run trained (``run_one``), the compiled code warmed first
(``warm_cache``), the runs sent to Dask distributed or run here in order, and each
record written by the driver as its result arrives (``run_sweep``).

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
"""
from __future__ import annotations

import contextlib
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

from ..run import build_run, make_trainer
from ..training.checkpoints import arrays_sha256
from .grid import (DEFAULT_VALID_STEPS, SweepError, canonical, load_records, records_dir,
                   run_config_of, run_id, write_record)

# what a run's compiled code depends on (runs that agree on these share the modules)
COMPILE_KEYS = ("cell", "hidden", "nonlinearity", "form", "layers", "task", "task_args",
                "text", "estimator", "estimator_options", "backend")
CURVE_ROWS = 200           # points of the learning curve a record keeps (block means)
VALID_SEED = 20240101      # the held-out stream's generator: the same for every run


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
    from ..training.trainer import curve_rows
    rec = {"id": run_id(cfg), "config": cfg,
           "host": socket.gethostname(), "pid": os.getpid(),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    t0 = time.perf_counter()
    try:
        with one_blas_thread():
            run = run_config_of(cfg)
            with _BUILD_LOCK:
                _, task, est = build_run(run, force_memory)
                tr = make_trainer(run, est, force_memory=force_memory)
                tr._warm_up()                      # load the compiled loop: not timed
            t1 = time.perf_counter()
            # one mean loss per chunk (memory O(steps / chunk), not a float per step)
            tr.run_task(task, run.steps, record="chunk")
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


# ------------------------------------------------------------------ the engine
def warm_cache(cfgs, timeout=None):
    """Compile every distinct module (and loop: one stream, or a batch) the runs need,
    in a child process that compiles them several at once (``rg.precompile``, one line
    each on stderr). Errors are left for the runs themselves to record."""
    seen, todo = set(), []
    for cfg in cfgs:
        key = canonical({**{k: cfg.get(k) for k in COMPILE_KEYS},
                         "batched": (cfg.get("batch") or 1) > 1})
        if key not in seen:
            seen.add(key)
            todo.append(cfg)
    if not todo:
        return
    subprocess.run([sys.executable, "-c",
                    "from rgraph.sweeps import _warm_main; _warm_main()"],
                   input=json.dumps(todo), text=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, check=False)


def _worker_env():
    """Local workers import the same rgraph as this process (a source checkout on
    PYTHONPATH included) and use the same compiled-code cache."""
    env = {}
    root = str(Path(__file__).resolve().parents[2])
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
        from ..training.trainer import _progress
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



def _warm_main():
    """``warm_cache``'s child process: the estimator of each config read from stdin,
    built here, then their loops compiled several at once. A config that fails to build
    or compile is skipped (its run records the error); Ctrl-C ends it quietly (the
    sweep's process says so)."""
    from ..api import precompile
    try:
        items = []
        for cfg in json.load(sys.stdin):
            try:
                run = run_config_of(cfg)
                _, _, est = build_run(run)
            except Exception:      # noqa: BLE001 (the run itself records it)
                continue
            items.append((est, est.loop_for(run.batch)))
        try:
            precompile(items)
        except Exception:          # noqa: BLE001 (the run itself records it)
            pass
    except KeyboardInterrupt:
        sys.exit(130)
