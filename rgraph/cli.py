"""The ``rgraph`` command: inspect a cell, train it, measure variance and speed, demo.

Every subcommand has ``--help``; bad options and unreadable files get a one-line error
(exit status 2), never a traceback. A training run's options become a ``RunConfig``
(``rgraph.run``: a run's defaults and checks, what it is made of, its folder); this
module reads the command line, drives the run and prints.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

from .run import (BUILTIN, CHECKPOINT, ConfigError, RunConfig, build_run, run_options,
                   default_run_dir, estimator_options, load_cell, make_task, make_trainer,
                   new_run_dir, read_config, start_run_dir, train_in_folder, write_config,
                   write_run_outputs)
from .estimators import command_line_options
from .run.config import (BACKENDS, DECAY_PER, FORMS, NONLINEARITIES, OPTIMIZERS,
                         paper_defaults)
from .sweeps.grid import DEFAULT_VALID_STEPS

RUN = RunConfig()           # the defaults of a run, as the help texts quote them


def estimator_help() -> str:
    """The registered estimators, each as its name is written (``ok(R)``)."""
    from .estimators import ESTIMATORS
    forms = [e.argument.form.split(",")[0] if e.argument else k
             for k, e in ESTIMATORS.items()]
    return (", ".join(forms) + "; 'rgraph inspect CELL' lists which apply and what each "
            "costs")


class CLIError(Exception):
    """A user mistake on the command line: printed as one line, exit status 2."""


def config_line(e: ConfigError) -> str:
    """A ``ConfigError`` as the command line says it: the field as its option."""
    return f"--{e.key.replace('_', '-')} {e.problem}" if e.key else str(e)


def check_estimator(name: str) -> str:
    """A CLIError (one line, exit 2) for an estimator name the registry does not know,
    raised before any work or output."""
    from .estimators import known
    try:
        known(name)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    return name


# ----------------------------------------------------------------------- commands
def cmd_inspect(args):
    import rgraph as rg
    if args.estimator:
        check_estimator(args.estimator)
    cell = load_cell(args.cell, args.n_in, args.hidden, args.n_out,
                     nonlinearity=args.nonlinearity, form=args.form,
                     layers=args.layers)
    print(cell)
    print()
    an = rg.analyze(cell)
    print(an.report())
    if args.dot:
        cell.to_dot(args.dot)
        print(f"\nwrote the graph to {args.dot} (render: dot -Tpng {args.dot} -o graph.png)")
    if args.estimator:
        loss = "mse" if args.cell == "influence" else "softmax_xent"
        est = rg.compile(cell, args.estimator, loss=loss, backend=args.backend,
                         force_memory=args.force_memory, **estimator_options(vars(args)))
        print(f"\n{est}")
        if args.source:
            print(f"# {est.path}\n")
            print(est.source)


def cmd_demo(args):
    from .demo import run_demo
    run_demo(out=args.out, seconds=args.seconds, hidden=args.hidden)


# --------------------------------------------------------------------------- train
def run_config(args, **given) -> RunConfig:
    """The ``RunConfig`` of ``rgraph train``'s (or sweep's) options; ``given`` replaces
    some of them. An option not given (None) takes the task's paper default (unless
    ``--no-task-defaults``), else the RunConfig's."""
    a = {**vars(args), **given}
    return RunConfig.from_options(task_defaults=not a.get("no_task_defaults"),
                                  **{k: a.get(k) for k in run_options()})


def defaults_line(args) -> str | None:
    """The line saying which of a new run's options came from the task's paper (None
    with --no-task-defaults, or for a task without defaults)."""
    if getattr(args, "no_task_defaults", False):
        return None
    given = {k: v for k, v in vars(args).items() if v is not None and k in run_options()}
    return paper_defaults(given)[1]


def task_defaults_help() -> str:
    """The papers' defaults of every task, for ``rgraph train --help``."""
    from .tasks import TASKS
    lines = ["the papers' defaults per task (an option given replaces its default;",
             "--no-task-defaults: rgraph's own, Adam 1e-3 constant, batch 1):"]
    for name, cls in TASKS.items():
        d = cls.defaults
        if d is not None:
            lines += [f"  {name:9s} {d.summary()}", f"  {'':9s} from {d.source}"]
            lines += textwrap.wrap(f"reports: {d.evaluation}", 79, initial_indent=" " * 12,
                                   subsequent_indent=" " * 14)
    return "\n".join(lines)


def check_counts(args, names):
    """Counts and sizes given on the command line are integers >= 1 (0 is not "the
    default": an omitted option is)."""
    for name in names:
        val = getattr(args, name, None)
        if val is not None and val < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {val}")


def resume_config(args) -> tuple[RunConfig, Path]:
    """``--resume RUN_DIR``: the run's config (with ``--steps``, if given, recorded in
    its config.json) and its folder; a cell, task or estimator given must be the run's."""
    run_dir = Path(args.resume)
    try:
        cfg = read_config(run_dir)
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot resume from {str(run_dir)!r}: {e}") from None
    for opt in ("cell", "task", "estimator"):
        given, was = getattr(args, opt), getattr(cfg, opt)
        if given is not None and given != was:
            raise CLIError(f"--resume {str(run_dir)!r}: the run is {opt} {was!r}, "
                           f"not {given!r}; resume without it, or start a new run")
    if args.steps is not None and args.steps != cfg.steps:
        cfg = cfg.replace(steps=args.steps)
        write_config(run_dir, cfg)
    return cfg, run_dir


def check_new_run(args):
    """A new run names its task and a known estimator; ``--out`` must not hold a run
    unless ``--force``."""
    if not args.task:
        from .tasks import TASKS
        raise CLIError(f"train needs --task ({', '.join(TASKS)})")
    if not args.estimator:
        raise CLIError("train needs --estimator (e.g. kf-rtrl, uoro, tbptt(16))")
    check_estimator(args.estimator)
    if args.out:
        run_dir = Path(args.out)
        if run_dir.exists() and any(run_dir.iterdir()) and not args.force:
            raise CLIError(f"{str(run_dir)!r} already holds files (a run?); pick another "
                           f"--out, or add --force to replace it")


def cmd_train(args):
    import signal
    from .errors import TrainingWarning
    cfg = run_config(args)              # every option given is checked, resuming too
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise CLIError(f"--max-seconds must be > 0, got {args.max_seconds}")
    if args.resume:
        cfg, run_dir = resume_config(args)
    else:
        check_new_run(args)
        line = defaults_line(args)
        if line:
            print(line)
    # bad options, and buffers that cannot fit, fail here, before any folder exists
    cell, task, est = build_run(cfg, args.force_memory)
    est.check_memory(cfg.batch, cfg.chunk, force=args.force_memory)
    # compile (or load) the loop now: a Ctrl-C during the compile stops the command
    # (one line, exit status 130) before any folder exists
    est.prepare(est.loop_for(cfg.batch))
    if not args.resume:
        run_dir = start_run_dir(Path(args.out), cfg) if args.out else \
            new_run_dir(default_run_dir(cfg), cfg)
    tr = make_trainer(cfg, est, halt_on_divergence=args.halt_on_divergence,
                      force_memory=args.force_memory)
    ck = run_dir / CHECKPOINT
    if args.resume:
        if not ck.exists():
            old = " (its checkpoint.pkl is a pickle, which rgraph no longer loads: loading " \
                "one can run code; start the run again)" \
                if (run_dir / "checkpoint.pkl").exists() else ""
            raise CLIError(f"{str(run_dir)!r} has no checkpoint.npz to resume from{old}")
        tr.load(ck, task)
        print(f"resuming {run_dir} at step {tr.step:,} of {cfg.steps:,}")
    else:
        print(f"{est} on {task!r}; writing to {run_dir}")
        if args.halt_on_divergence:     # a good checkpoint to keep if the run diverges
            tr.save(ck)
    stop = {"flag": False}

    def on_sigint(signum, frame):
        stop["flag"] = True
    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", TrainingWarning)
            warnings.showwarning = _warning_line
            end = train_in_folder(tr, task, cfg, run_dir,
                                  halt_on_divergence=args.halt_on_divergence,
                                  max_seconds=args.max_seconds, progress=not args.quiet,
                                  stop=lambda: stop["flag"])
    finally:
        signal.signal(signal.SIGINT, old)
    write_run_outputs(run_dir, tr, task, est, cfg)
    if end.halted:
        print(f"halted at step {tr.step:,}: the loss diverged from step "
              f"{end.divergence['began']:,}; kept {ck} from step {end.checkpoint_step:,}, "
              f"before the divergence (params.npz and curve.csv show the diverged run)",
              file=sys.stderr)
        return 1
    if tr.step < cfg.steps:
        print(f"stopped at step {tr.step:,}; continue with: rgraph train --resume {run_dir}")
        return 130 if stop["flag"] else 0
    return 0


@contextlib.contextmanager
def quiet_compiles(on: bool):
    """``--quiet``: no compile lines either (``$RGRAPH_QUIET``, for this process and
    those it starts), for the command's duration."""
    from .feedback import ENV_QUIET
    old = os.environ.get(ENV_QUIET)
    if on:
        os.environ[ENV_QUIET] = "1"
    try:
        yield
    finally:
        if on:
            if old is None:
                os.environ.pop(ENV_QUIET, None)
            else:
                os.environ[ENV_QUIET] = old


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """Training warnings on the command line: one line each, no source line."""
    print(f"rgraph train: warning: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ variance
def cmd_variance(args):
    import rgraph as rg
    from . import tasks
    from .estimators.names import split_estimators
    check_counts(args, ("workers",))
    ests = split_estimators(args.estimators, ",")
    sizes = [int(n) for n in args.sizes.split(",")]
    if args.text:
        lm = make_task("charlm", None, args.text)
        ids = lm.train_ids()[:args.steps + 1]
        if len(ids) < args.steps + 1:
            raise CLIError(f"{args.text} has fewer than {args.steps + 1} characters")
        n_in = lm.n_in
    else:
        t = tasks.DistantBrackets(1, 5, 10)
        xs, ys = t.stream(args.steps, np.random.default_rng(args.seed))
        n_in = t.n_in
        ids = np.concatenate([xs.argmax(1), ys[-1:]])
    xs, ys = np.eye(n_in)[ids[:-1]], ids[1:]

    def make(n):
        return load_cell(args.cell, n_in, n, n_in, nonlinearity=args.nonlinearity,
                         form=args.form, layers=args.layers)

    def measure(client=None):
        return rg.variance_vs_size(make, sizes, ests, lambda cell: (xs, ys),
                                   seeds=args.seeds, backend=args.backend,
                                   progress=None if args.quiet else print, client=client)
    if args.scheduler or args.workers:      # the seeds on Dask, as rgraph sweep's runs
        from .sweeps import SweepError, dask_client
        try:
            with dask_client(args.scheduler, args.workers) as client:
                res = measure(client)
        except SweepError as e:
            raise CLIError(str(e)) from None
    else:
        res = measure()
    print(res.table())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res.plot(out / "variance.png", f"{args.cell}: cosine to the true gradient, "
                                   f"{args.steps} steps, {args.seeds} seeds")
    with open(out / "variance.csv", "w") as f:
        keys = list(res.rows[0].as_dict())
        f.write(",".join(keys) + "\n")
        for r in res.rows:
            f.write(",".join(str(v) for v in r.as_dict().values()) + "\n")
    print(f"wrote {out / 'variance.png'} and {out / 'variance.csv'}")


# --------------------------------------------------------------------------- sweep
def cmd_sweep(args):
    """rgraph sweep: a grid of rgraph train runs on Dask (``rgraph.sweeps``)."""
    from . import sweeps as sw
    try:
        if args.summarize:
            records = list(sw.load_records(args.summarize).values())
            csv_path, png = sw.write_summary(args.summarize, records)
            print(sw.summary_table(records))
            print(f"wrote {csv_path} and {png} from {len(records)} record(s)")
            return 0
        if not args.out:
            raise CLIError("sweep needs --out DIR (its records go to DIR/records)")
        if not args.task:
            from .tasks import TASKS
            raise CLIError(f"sweep needs --task ({', '.join(TASKS)})")
        if sum(map(bool, (args.scheduler, args.workers, args.serial))) > 1:
            raise CLIError("give one of --scheduler, --workers and --serial")
        run = run_config(args, hidden=None, lr=None)     # the grid sets these two
        line = defaults_line(args)
        if line:
            print(line)
        check_counts(args, ("workers", "valid_steps"))
        estimators = sw.parse_estimators(args.estimators or "")
        seeds = sw.parse_seeds(args.seeds)
        hidden = None if args.hidden is None else sw.parse_values(args.hidden, int, "hidden")
        lrs = None if args.lr is None else sw.parse_values(args.lr, float, "lr")
        cfgs = sw.grid(sw.sweep_config(run, args.valid_steps), estimators, seeds, hidden,
                       lrs)
        cfgs = sw.check_configs(cfgs, args.skip_inapplicable)
        res = sw.run_sweep(cfgs, args.out, scheduler=args.scheduler, workers=args.workers,
                           serial=args.serial, retry_failed=args.retry_failed,
                           progress=not args.quiet, connect_timeout=args.connect_timeout,
                           force_memory=args.force_memory)
        csv_path, png = sw.write_summary(args.out)
        print(sw.summary_table(list(sw.load_records(args.out).values())))
        print(f"wrote {csv_path} and {png}")
        return 1 if res["failed"] else 0
    except sw.SweepError as e:
        raise CLIError(str(e)) from None


def add_sweep_parser(sub):
    p = sub.add_parser(
        "sweep", help="many train runs (estimators x sizes x lr x seeds) on Dask",
        description="Run a grid of 'rgraph train' runs: one record per run in "
                    "DIR/records/<run-id>.json (the id hashes the run's config), a "
                    "summary over seeds in DIR/summary.csv and summary.png. The same "
                    "command again runs only what has no record. The runs go to a local "
                    "Dask cluster (default), a scheduler (--scheduler), or this process "
                    "(--serial). Every other 'rgraph train' option applies to each run. "
                    "A failed run records its error and the sweep goes on; the exit "
                    "status is then 1. A grid with an estimator that does not apply to "
                    "the cell (or refuses its options) is refused before anything runs, "
                    "with the reason (exit status 2), unless --skip-inapplicable.")
    add_cell_positional(p)
    p.add_argument("--estimators", "--estimator", "-e", dest="estimators",
                   help="comma-separated, e.g. uoro,tbptt(16),projected-uoro[preactivation]")
    p.add_argument("--seeds", "--seed", dest="seeds", default="0",
                   help="seeds A-B (e.g. 0-7), or comma-separated (default 0)")
    p.add_argument("--hidden", "-n",
                   help=f"state sizes, comma-separated (default {RUN.hidden})")
    p.add_argument("--lr", help="learning rates, comma-separated (default: the task's "
                                f"paper's, as in rgraph train --help; else {RUN.lr:g})")
    add_run_args(p)
    p.add_argument("--valid-steps", type=int, default=DEFAULT_VALID_STEPS, metavar="N",
                   help=f"each run's validation loss: on the task's validation split, "
                        f"else on N steps of a held-out stream, the same for every run "
                        f"(default {DEFAULT_VALID_STEPS})")
    p.add_argument("--out", "-o", help="the sweep's folder (records/, summary.csv, "
                                       "summary.png)")
    where = p.add_argument_group("where the runs go (default: a local Dask cluster of "
                                 "one worker process per core)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="an existing Dask scheduler: tcp://host:port, or a scheduler "
                            "file")
    where.add_argument("--workers", type=int, help="local cluster: worker processes "
                                                   "(default: the cores)")
    where.add_argument("--serial", action="store_true",
                       help="run here, in order, without Dask (debugging, comparison)")
    where.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for --scheduler (default 10)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the runs whose record is a failure")
    p.add_argument("--skip-inapplicable", action="store_true",
                   help="leave out the runs whose estimator does not apply to the cell "
                        "(or refuses its options), saying how many and why; without it "
                        "such a grid is refused before anything runs")
    p.add_argument("--summarize", metavar="DIR",
                   help="only rebuild DIR/summary.csv and summary.png from DIR/records")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar, no compile lines")
    p.set_defaults(func=cmd_sweep)
    return p


# --------------------------------------------------------------------------- bench
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmarks():
    """``benchmarks.bench`` from the source checkout (``benchmarks/`` beside ``rgraph/``),
    which is not installed with the package."""
    init = BENCHMARKS / "__init__.py"
    if not (init.is_file() and (BENCHMARKS / "bench.py").is_file()):
        raise CLIError(f"the benchmarks are not installed with rgraph ({BENCHMARKS} does "
                       f"not exist): run 'rgraph bench' from a source checkout")
    spec = importlib.util.spec_from_file_location("benchmarks", init,
                                                  submodule_search_locations=[str(BENCHMARKS)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("benchmarks.bench")


def cmd_bench(args):
    from .estimators.names import split_estimators
    estimators = [check_estimator(e) for e in split_estimators(args.estimators, ";")]
    bench = load_benchmarks().bench
    bench(cells=args.cells.split(","), sizes=[int(n) for n in args.sizes.split(",")],
          batches=[int(b) for b in args.batches.split(",")],
          estimators=estimators,
          seconds=args.seconds, repeats=args.repeats, threads=args.threads,
          hand=not args.no_hand, jax=not args.no_jax, cores=args.cores)


# -------------------------------------------------------------------------- export
def cmd_export(args):
    import rgraph as rg
    from .export import ExportError
    check_estimator(args.estimator)
    cell = load_cell(args.cell, args.n_in, args.hidden, args.n_out,
                     nonlinearity=args.nonlinearity, form=args.form,
                     layers=args.layers)
    loss = args.loss or ("mse" if args.cell == "influence" else "softmax_xent")
    est = rg.compile(cell, args.estimator, loss=loss, backend=args.backend,
                     dtype=args.dtype, force_memory=args.force_memory,
                     **estimator_options(vars(args)))
    try:
        path = est.export(args.output)
    except ExportError as e:
        raise CLIError(str(e)) from None
    print(f"wrote {path}: cell '{cell.name}', {est.name}, {loss}, {args.dtype}, "
          f"{args.backend} (imports only numpy" + (" and numba)" if args.backend == "numba"
                                                   else ")"))


# --------------------------------------------------------------------------- cache
def cmd_cache(args):
    """Show the compiled-code cache (size, entries), prune it or clear it."""
    from . import cache
    loc = cache.location()
    folder = loc.configured or loc.write
    src = f"${cache.ENV_DIR}" if os.environ.get(cache.ENV_DIR) else "default"
    if args.max_size is not None:
        try:
            limit = cache.parse_size(args.max_size)
        except ValueError as e:
            raise CLIError(f"--max-size: {e}") from None
    else:
        limit = cache.max_bytes()
    folders = [folder] + ([loc.write] if loc.problem and loc.write != folder else [])
    if loc.problem:
        print(f"{folder} ({src}) cannot be written ({loc.problem}); new compiled code "
              f"goes to the temporary cache {loc.write}; set {cache.ENV_DIR} to a "
              f"writable folder to keep it")
    if args.clear or args.prune:
        for d in folders:
            if args.clear:
                n, freed, busy = cache.clear(d)
                also = f" ({busy} in use by a running process, kept)" if busy else ""
                print(f"{d}: removed {_count(n, 'entry', 'entries')}, "
                      f"{cache.human(freed)}{also}")
            else:
                n, freed = cache.prune(d, limit)
                left = sum(i.size for i in cache.scan(d))
                print(f"{d}: pruned {_count(n, 'entry', 'entries')} (least recently used), "
                      f"{cache.human(freed)}; {cache.human(left)} left "
                      f"(cap {cache.human(limit)})")
        return 0
    for d in folders:
        items = cache.scan(d)
        entries = sorted((i for i in items if not i.orphan), key=lambda i: -i.last_used)
        left = [i for i in items if i.orphan]
        total = sum(i.size for i in items)
        print(f"{d}{'' if d != folder else f' ({src})'}: "
              f"{_count(len(entries), 'entry', 'entries')}, "
              f"{cache.human(total)} (cap {cache.human(limit)}, "
              f"${cache.ENV_MAX})" + (f"; {len(left)} leftover files of removed "
                                      f"modules" if left else ""))
        shown = entries if args.all else entries[:20]
        if shown:
            print(f"  {'last used':16s}  {'size':>7s}  module")
        for it in shown:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(it.last_used))
            print(f"  {when:16s}  {cache.human(it.size):>7s}  {it.name}.py")
        if len(shown) < len(entries):
            print(f"  ... {len(entries) - len(shown)} more (--all lists them)")
    return 0


def _count(n, one, many):
    return f"{n} {one if n == 1 else many}"


# ------------------------------------------------------------------------ parser
JAX_CELL = ("a file that also defines example() returning (params, state, x) holds a JAX "
            "step(params, state, x) -> (new_state, logits), imported with rg.from_jax "
            "(sizes from the example, whose params are the initial parameter values "
            "at every seed; needs pip install -e '.[jax]')")


def add_cell_args(p, hidden=16):
    p.add_argument("cell", help=f"a built-in cell ({', '.join(BUILTIN)}) or "
                                f"path/to/file.py:function; {JAX_CELL}")
    p.add_argument("--n-in", type=int, default=8, help="input size (default 8)")
    p.add_argument("--hidden", "-n", type=int, default=hidden,
                   help=f"state size per state vector (default {hidden})")
    p.add_argument("--n-out", type=int, default=8, help="output size (default 8)")
    p.add_argument("--nonlinearity", choices=NONLINEARITIES,
                   help="rhn only: the non-linearity")
    add_form_arg(p)


def add_form_arg(p):
    p.add_argument("--form", choices=FORMS,
                   help="tanh, lstm, gru: concat (default, one matrix on [h; x; 1]) or "
                        "pytorch (weight_ih, weight_hh, bias_ih, bias_hh, PyTorch's gates)")
    p.add_argument("--layers", type=int, default=None, metavar="L",
                   help="tanh, lstm, gru: L stacked layers, layer l reading layer l-1's new "
                        "h (PyTorch's num_layers; names get _l0, _l1, ...); default 1")


def add_cell_positional(p):
    p.add_argument("cell", nargs="?", default=None,
                   help=f"a built-in cell ({', '.join(BUILTIN)}) or path/to/file.py:function "
                        f"(default {RUN.cell}); {JAX_CELL}")


def add_estimator_args(p):
    p.add_argument("--backend", choices=list(BACKENDS), default=RUN.backend)
    p.add_argument("--force-memory", action="store_true",
                   help="compile (and train) even where the estimator's buffers exceed the "
                        "memory this machine has available (refused by default, with the "
                        "figure)")
    # the estimators' own options, as each declares them (rgraph.estimators): a number
    # is read here, other text by the estimator's own reader (run.estimator_options)
    for opt, text in command_line_options():
        p.add_argument(opt.cli_flag, type=opt.read if opt.read in (int, float) else str,
                       choices=opt.choices or None, help=text)


def add_run_args(p):
    """The options of a training run that ``rgraph train`` and ``rgraph sweep`` share
    (train adds the cell, size, estimator, lr and seed of its one run)."""
    from .tasks import TASKS
    p.add_argument("--nonlinearity", choices=NONLINEARITIES, help="rhn only")
    add_form_arg(p)
    p.add_argument("--task", "-t", choices=list(TASKS))
    p.add_argument("--task-args", help="task options, e.g. k=1,l=32 (anbn) or "
                                       "n=23,n_minus=13 (influence)")
    p.add_argument("--text", help="charlm: the text file")
    add_estimator_args(p)
    p.add_argument("--steps", type=int,
                   help=f"online steps per stream (default {RUN.steps})")
    p.add_argument("--batch", type=int, help="independent streams (default: the task's "
                                             f"paper's, below; else {RUN.batch})")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS),
                   help=f"default: the task's paper's, else {RUN.optimizer}")
    p.add_argument("--decay", type=float,
                   help="lr / (1 + decay sqrt(t)) schedule (default: the task's paper's, "
                        f"t counted in steps; else {RUN.decay:g}: constant)")
    p.add_argument("--decay-per", choices=DECAY_PER,
                   help="what t counts: optimizer updates (the default for a --decay "
                        "given) or steps per stream, as the papers count characters "
                        "(TBPTT-16 then decays by decay x 4 per update)")
    p.add_argument("--clip", type=float, help=f"gradient norm clip ({RUN.clip:g}: off)")
    p.add_argument("--chunk", type=int, help="steps per compiled call")
    p.add_argument("--reset-prob", type=float,
                   help="reset the state with this probability per step (Mujika §5.2; "
                        "default: the task's paper's, else 0)")
    p.add_argument("--no-task-defaults", action="store_true",
                   help="ignore the task's paper's optimizer, schedule, batch and resets: "
                        "rgraph's own defaults for what is not given")


def build_parser():
    ap = argparse.ArgumentParser(
        prog="rgraph", description="A compiler for online gradient estimators of recurrent "
                                   "networks: inspect cells, train, measure variance and speed.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("inspect", help="the graph, its analysis, and generated code",
                       description="Print a cell's graph listing, its analysis (projection "
                                   "spaces, Kronecker verdict) and, with --estimator E "
                                   "--source, the generated code.")
    add_cell_args(p)
    add_estimator_args(p)
    p.add_argument("--estimator", "-e", help=f"compile this estimator: {estimator_help()}")
    p.add_argument("--source", action="store_true", help="print the generated module")
    p.add_argument("--dot", metavar="FILE", help="write the graph in Graphviz DOT")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("train", help="online training on a task, with a run folder",
                       description=textwrap.fill(
                           "Train a cell online on a task. Writes config.json, curve.csv, "
                           "curve.png, params.npz and checkpoint.npz to the run folder; "
                           "Ctrl-C saves and stops; --resume continues number for number. "
                           "The optimizer, schedule, batch and resets not given are those "
                           "of the task's paper (below).", 79),
                       epilog=task_defaults_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cell_positional(p)
    p.add_argument("--hidden", "-n", type=int, help=f"state size (default {RUN.hidden})")
    p.add_argument("--estimator", "-e", help=estimator_help())
    p.add_argument("--lr", type=float, help="learning rate (default: the task's paper's, "
                                            f"below; else {RUN.lr:g})")
    p.add_argument("--seed", type=int)
    add_run_args(p)
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help=f"save a checkpoint every N steps (default {RUN.checkpoint_every})")
    p.add_argument("--out", help="run folder (default runs/CELL-TASK-ESTIMATOR-sSEED-TIME, "
                                 "made unique); an existing run is never overwritten")
    p.add_argument("--force", action="store_true",
                   help="replace the run folder --out names if it holds one")
    p.add_argument("--full-curve", action="store_true",
                   help="curve.csv with one row per step (default: at most 1,000 rows of "
                        "block means)")
    p.add_argument("--halt-on-divergence", action="store_true",
                   help="stop when the loss diverges (its mean over 100 steps above 10x "
                        "its best and above the uniform-prediction loss for 1,000 steps), "
                        "keeping the last checkpoint from before the divergence")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    p.add_argument("--max-seconds", type=float, help="stop (with a checkpoint) after this "
                                                     "much wall time")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar, no compile lines")
    p.set_defaults(func=cmd_train)

    add_sweep_parser(sub)

    p = sub.add_parser("variance", help="cosine and variance of estimators against BPTT",
                       description="Cosine between each estimator's total gradient and the "
                                   "exact one, over seeds, for several sizes (Mujika et al. "
                                   "Fig. 3b). Prints a table, writes a PNG and a CSV.")
    add_cell_args(p)
    p.add_argument("--estimators", "-e", default="uoro,kf-rtrl",
                   help=f"comma-separated, of: {estimator_help()} (e.g. uoro,kf-rtrl,snap-1,"
                        f"projected-uoro[h_new,c_new])")
    p.add_argument("--sizes", default="16,32,64", help="state sizes (default 16,32,64)")
    p.add_argument("--steps", type=int, default=100, help="sequence length (default 100)")
    p.add_argument("--seeds", type=int, default=100, help="draws per estimator")
    p.add_argument("--text", help="a text file for the sequence (default: distant "
                                  "brackets)")
    p.add_argument("--backend", choices=list(BACKENDS), default=RUN.backend)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/variance", help="folder for the PNG and CSV")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="draw the seeds on this Dask scheduler (tcp://host:port, or a "
                        "scheduler file); same numbers as without")
    p.add_argument("--workers", type=int, help="draw the seeds on a local Dask cluster of "
                                               "this many worker processes")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress lines, no compile lines")
    p.set_defaults(func=cmd_variance)

    p = sub.add_parser("bench", help="µs per online step vs hand-written NumPy and JAX",
                       description="Per-step time of each estimator's compiled training "
                                   "loop, with the same UORO and KF-RTRL written by hand in "
                                   "NumPy, UORO, KF-RTRL and RTRL written by hand in JAX "
                                   "(jit of a scan; needs jax: pip install -e '.[bench]'), "
                                   "and the H·A and D·J GEMMs, all measured in the same run "
                                   "on the same cores.")
    p.add_argument("--cells", default="tanh,lstm")
    p.add_argument("--sizes", default="16,64,256")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--estimators", default="uoro;kf-rtrl;tbptt(16);rtrl;dodge;"
                                            "projected-uoro[preactivation];snap-1;e-prop;ok(2)",
                   help=f"semicolon-separated, of: {estimator_help()}")
    p.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--cores", type=int, default=1,
                   help="pin the process to this many CPUs while it measures (default 1)")
    p.add_argument("--no-hand", action="store_true", help="skip the NumPy baselines")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX baselines")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="one standalone .py file: the estimator and its loop",
                       description="Write a compiled estimator and its training loop as one "
                                   "Python module that imports only numpy and numba: "
                                   "init_params, total_gradient, loss and train give the "
                                   "same numbers as rgraph.")
    add_cell_args(p)
    add_estimator_args(p)
    p.add_argument("--estimator", "-e", required=True,
                   help=estimator_help())
    p.add_argument("--output", "-o", required=True, metavar="FILE.py",
                   help="the module to write")
    p.add_argument("--loss", choices=["softmax_xent", "mse"],
                   help="default: mse for influence, else softmax_xent")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("cache", help="the compiled-code cache: size, entries, prune, clear",
                       description="Show the folder of generated modules and numba's "
                                   "compiled code ($RGRAPH_CACHE_DIR, else "
                                   "~/.cache/rgraph), its size and entries (most recently "
                                   "used first); prune the least recently used entries to "
                                   "a size cap, or clear it.")
    p.add_argument("--prune", action="store_true",
                   help="remove the least recently used entries until the cache fits "
                        "--max-size")
    p.add_argument("--max-size", metavar="SIZE",
                   help="the cap for --prune, e.g. 500M or 2G (default "
                        "$RGRAPH_CACHE_MAX_SIZE, else 1G)")
    p.add_argument("--clear", action="store_true",
                   help="remove every entry (entries a running process holds are kept)")
    p.add_argument("--all", action="store_true", help="list every entry, not the first 20")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("demo", help="a short tour on a built-in LSTM, with a plot",
                       description="Analyse a built-in LSTM, then train it online with "
                                   "KF-RTRL, UORO and TBPTT on a^n b^n and plot the curves.")
    p.add_argument("--out", default="runs/demo", help="folder for the plot and the CSV")
    p.add_argument("--seconds", type=float, default=40.0,
                   help="training time per estimator (default 40)")
    p.add_argument("--hidden", type=int, default=32, help="LSTM size (default 32)")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv=None):
    import rgraph as rg
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        with quiet_compiles(getattr(args, "quiet", False)):
            code = args.func(args)
    except CLIError as e:
        print(f"rgraph {args.command}: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"rgraph {args.command}: {config_line(e)}", file=sys.stderr)
        return 2
    except (rg.RGraphError, ValueError, TypeError, OSError) as e:
        print(f"rgraph {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"rgraph {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rgraph {args.command}: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
