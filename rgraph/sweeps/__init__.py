"""Sweeps: many training runs (estimators x sizes x learning rates x seeds) on Dask.

A sweep is a grid of ``rgraph train`` configs (``rgraph.run.RunConfig``). Each point
of the grid is one run with one record, ``DIR/records/<run-id>.json``, where the run id
is a stable hash of the run's config (canonical JSON), so the same command again finds
what is done and runs only the rest. The runs go to Dask distributed: a local cluster of
worker processes by default, an existing scheduler (``scheduler="tcp://host:port"`` or
``client=``) for a cluster, or this process in order (``serial=True``, for debugging and
comparison).

* ``grid``: the grid (seeds, values, estimators), run ids, and the records on disk;
* ``engine``: one run (``run_one``), the compiled-code warm-up, Dask or serial
  execution (``run_sweep``), and the lock that builds take turns on;
* ``summary``: ``summary.csv``, the printed table and ``summary.png``, over seeds, from
  the records alone (``write_summary``);
* ``driver``: ``sweep`` (``rg.sweep``), from keyword options or ``RunConfig``s.
"""
from .driver import sweep_options, check_configs, sweep
# two private names keep their old path: warm_cache's child runs
# "from rgraph.sweeps import _warm_main", and threaded workers' builds take turns on
# _BUILD_LOCK (rgraph.variance's too)
from .engine import (_BUILD_LOCK, COMPILE_KEYS, CURVE_ROWS, VALID_SEED, _warm_main,
                     dask_client, failed_record, one_blas_thread, params_sha256, run_one,
                     run_sweep, validation_data, warm_cache)
from .grid import (DEFAULT_VALID_STEPS, FOLDER_ONLY, RECORDS, SweepError, canonical, grid,
                   group_id, load_records, parse_estimators, parse_seeds, parse_values,
                   records_dir, run_config_of, run_id, sweep_config, write_record)
from .summary import (METRICS, groups, plot_summary, summary_rows, summary_table,
                      write_summary)

__all__ = ["sweep_options", "check_configs", "sweep", "COMPILE_KEYS", "CURVE_ROWS",
           "VALID_SEED", "dask_client", "failed_record", "one_blas_thread", "params_sha256",
           "run_one", "run_sweep", "validation_data", "warm_cache", "DEFAULT_VALID_STEPS",
           "FOLDER_ONLY", "RECORDS", "SweepError", "canonical", "grid", "group_id",
           "load_records", "parse_estimators", "parse_seeds", "parse_values", "records_dir",
           "run_config_of", "run_id", "sweep_config", "write_record", "METRICS", "groups",
           "plot_summary", "summary_rows", "summary_table", "write_summary"]
