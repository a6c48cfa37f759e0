"""``rg.sweep``: a sweep from Python, as a grid of keyword options or as a list of
``RunConfig``s; no command line involved."""
from __future__ import annotations

from ..run import ConfigError, RunConfig, run_options, load_cell, make_task
from ..run.config import paper_defaults
from .engine import run_sweep
from .grid import (DEFAULT_VALID_STEPS, FOLDER_ONLY, SweepError, canonical, grid,
                   parse_estimators, parse_seeds, parse_values, run_config_of, sweep_config)
from .summary import write_summary

# what sweep() takes by keyword beside the grid: the other options of a run (the grid
# sets the estimator, size, lr and seed; a sweep run has no folder)
GRID_KEYS = ("cell", "task", "estimator", "hidden", "lr", "seed")


def sweep_options() -> tuple:
    """What ``sweep`` takes by keyword beside the grid (the registered estimators'
    options included)."""
    return tuple(k for k in run_options() if k not in (*GRID_KEYS, *FOLDER_ONLY))


def sweep(cell=None, task=None, estimators=None, seeds=None, hidden=None, lr=None,
          out="runs/sweep", client=None, scheduler=None, workers=None, serial=False,
          retry_failed=False, progress=True, valid_steps=DEFAULT_VALID_STEPS,
          log=print, force_memory=False, configs=None, skip_inapplicable=False,
          **options) -> list[dict]:
    """Run a sweep and return its records (one per run, in grid order).

    ``cell``, ``task``: as for ``rgraph train`` (a built-in name or "file.py:function",
    default lstm; a task name). ``estimators`` (names or "uoro,tbptt(16)", default uoro),
    ``seeds`` ("0-7", a list, default 0), ``hidden`` and ``lr`` (a value or a list) make
    the grid. ``options``: any other ``rgraph train`` option by its Python name
    (``steps``, ``batch``, ``decay``, ``task_args``, ``rank``, ...). Or, instead of all
    these, ``configs`` (also as the first argument): a list of ``RunConfig``s, one per
    run (their run-folder options do not apply). The runs go to ``client`` (a
    ``dask.distributed.Client``), else to ``scheduler`` (an address), else to a new local
    cluster of ``workers`` processes; ``serial=True`` runs them here, in order. Records
    are written under ``out/records``; ``out/summary.csv`` and ``summary.png`` follow.
    ``force_memory``: as ``rgraph train --force-memory``. The grid's runs take the task's
    paper defaults (``rgraph.tasks.PaperDefaults``) for the optimizer, lr, schedule,
    batch and resets not given; ``task_defaults=False``: rgraph's own. A run whose
    estimator does not apply to the cell (or refuses its options) stops the sweep before
    anything runs (``SweepError`` with the reason); ``skip_inapplicable=True`` leaves
    those runs out and runs the rest."""
    if isinstance(cell, (list, tuple)):
        configs, cell = cell, None
    if configs is None:
        cfgs = _grid_configs(cell, task, estimators, seeds, hidden, lr, valid_steps,
                             options, log)
    else:
        grid_given = [k for k, v in (("cell", cell), ("task", task),
                                     ("estimators", estimators), ("seeds", seeds),
                                     ("hidden", hidden), ("lr", lr), *options.items())
                      if v is not None]
        if grid_given:
            raise TypeError(f"sweep() takes RunConfigs or a grid's options, not both: drop "
                            f"{', '.join(grid_given)}, or set them in the RunConfigs")
        cfgs = _given_configs(configs, valid_steps)
    cfgs = check_configs(cfgs, skip_inapplicable, log)
    res = run_sweep(cfgs, out, client=client, scheduler=scheduler, workers=workers,
                    serial=serial, retry_failed=retry_failed, progress=progress,
                    force_memory=bool(force_memory), log=log)
    write_summary(out)
    return res["records"]


def _grid_configs(cell, task, estimators, seeds, hidden, lr, valid_steps, options, log):
    """The sweep configs of a grid given by keywords (``sweep``'s first form); the
    options not given take the task's paper defaults (``task_defaults=False``: not), and
    ``log`` hears which."""
    if task is None:
        from ..tasks import TASKS
        raise SweepError(f"a sweep needs a task ({', '.join(TASKS)})")
    use_paper = bool(options.pop("task_defaults", True))
    unknown = sorted(set(options) - set(sweep_options()))
    if unknown:
        raise TypeError(f"sweep() got unknown options {unknown}; it takes rgraph train's "
                        f"run options by their Python names: {', '.join(sweep_options())}")
    run = RunConfig.from_options(cell=cell, task=task, task_defaults=use_paper, **options)
    base = sweep_config(run, valid_steps)
    line = paper_defaults({"task": task, "lr": lr, **options})[1] if use_paper else None
    if line:
        log(line)
    return grid(base, parse_estimators(("uoro",) if estimators is None else estimators),
                parse_seeds("0" if seeds is None else seeds),
                None if hidden is None else parse_values(hidden, int, "hidden"),
                None if lr is None else parse_values(lr, float, "lr"))


def _given_configs(configs, valid_steps):
    """The sweep configs of a list of ``RunConfig``s (``sweep``'s second form): each
    names a task and a known estimator."""
    configs = list(configs)
    if not configs:
        raise SweepError("sweep() got no RunConfigs: give at least one run")
    for i, c in enumerate(configs):
        if not isinstance(c, RunConfig):
            raise TypeError(f"sweep() configs[{i}] is a {type(c).__name__}, not a RunConfig "
                            f"(rgraph.run.RunConfig)")
        if c.task is None or c.estimator is None:
            missing = "task" if c.task is None else "estimator"
            raise SweepError(f"sweep() configs[{i}] has no {missing}: every run needs a task "
                             f"and an estimator")
    parse_estimators(list(dict.fromkeys(c.estimator for c in configs)))
    return [sweep_config(c, valid_steps) for c in configs]


def check_configs(cfgs, skip_inapplicable: bool = False, log=print) -> list[dict]:
    """Fail now, in one line, on what would fail every run of a config, before anything
    runs: an unknown cell or task, bad task options, and an estimator that does not
    apply to the cell or refuses its options (the estimator is built on the cell as
    ``rg.compile`` would, nothing is compiled). Each reason is said once, with how many
    runs it stops. With ``skip_inapplicable`` the runs whose estimator does not apply
    are left out instead (``log`` says how many and why); the runs kept are returned."""
    from ..errors import GraphError, NotApplicable
    cells, verdicts = {}, {}
    keep, refused = [], {}
    for cfg in cfgs:
        key = canonical({k: cfg.get(k) for k in ("cell", "hidden", "nonlinearity", "form",
                                                 "layers", "task", "task_args", "text")})
        if key not in cells:
            try:
                t = make_task(cfg["task"], cfg.get("task_args"), cfg.get("text"))
                cells[key] = (t, None if cfg["cell"] == "influence" else
                              load_cell(cfg["cell"], t.n_in, cfg["hidden"], t.n_out,
                                        nonlinearity=cfg.get("nonlinearity"),
                                        form=cfg.get("form"), layers=cfg.get("layers")))
            except ConfigError as e:
                raise SweepError(str(e)) from None
        est_key = (key, canonical({"e": cfg["estimator"], "o": cfg["estimator_options"]}))
        if est_key not in verdicts:
            verdicts[est_key] = _refusal(run_config_of(cfg), *cells[key],
                                         (NotApplicable, GraphError, ValueError, TypeError))
        why = verdicts[est_key]
        if why is None:
            keep.append(cfg)
        else:
            refused.setdefault(why, []).append(cfg)
    if not refused:
        return keep
    n = sum(map(len, refused.values()))
    reasons = "; ".join(f"{why} ({_runs(len(c))})" for why, c in refused.items())
    if not skip_inapplicable or not keep:
        fix = (f"drop what does not apply, or leave those runs out with "
               f"--skip-inapplicable (rg.sweep: skip_inapplicable=True) to run the other "
               f"{_runs(len(keep))}" if keep else
               "no run of this grid can start: change the cell, the estimators or their "
               "options")
        raise SweepError(f"{_runs(n)} of {len(cfgs)} cannot start: {reasons}; {fix}")
    log(f"skipping {_runs(n)} of {len(cfgs)}: {reasons}")
    return keep


def _refusal(run: RunConfig, task, cell, errors) -> str | None:
    """Why the estimator of ``run`` cannot be built on ``cell`` (None: it can)."""
    from ..cells import influence_balancing
    from .. import run as runs
    if cell is None:                    # the influence cell takes the task's sizes
        cell = influence_balancing(task.n, task.n_minus)
    try:
        runs.estimator_spec(run, cell)
    except errors as e:
        return str(e)
    return None


def _runs(n: int) -> str:
    return f"{n} run{'' if n == 1 else 's'}"
