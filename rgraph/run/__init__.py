"""The run layer: one training run from its ``RunConfig`` (what ``rgraph train`` writes
to config.json) to its folder.

* ``config``: ``RunConfig`` (the fields, their defaults, their checks) and ``ConfigError``;
* ``make``: the cell, task, estimator, optimizer and trainer a config names;
* ``folders``: run folders, config.json, and the files a finished run leaves;
* ``loop``: a run trained in its folder to its end (checkpoints, stops, divergence).

``rgraph train`` and ``rgraph sweep`` turn their options into a ``RunConfig`` and call
this; ``rg.sweep`` takes keyword options or ``RunConfig``s. Nothing here imports the
command line or the sweeps.
"""
from .config import (CONFIG_VERSION, run_options, ConfigError, RunConfig,
                     estimator_options, paper_defaults)
from .folders import (default_run_dir, new_run_dir, read_config, start_run_dir,
                      write_config, write_run_outputs)
from .loop import CHECKPOINT, Ended, train_in_folder
from .make import (BUILTIN, build_run, decay_per_update, estimator_spec, load_cell,
                   make_task, make_trainer, optimizer_from, parse_kv)

__all__ = ["CONFIG_VERSION", "run_options", "ConfigError", "RunConfig", "estimator_options",
           "paper_defaults", "decay_per_update", "estimator_spec",
           "default_run_dir", "new_run_dir", "read_config", "start_run_dir", "write_config",
           "write_run_outputs", "BUILTIN", "build_run", "load_cell", "make_task",
           "make_trainer", "optimizer_from", "parse_kv", "CHECKPOINT", "Ended",
           "train_in_folder"]
