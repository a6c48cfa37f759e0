"""What a ``RunConfig`` names, made: the cell, the task, the compiled estimator, the
optimizer and the trainer at step 0 (``rgraph train``, each run of a sweep, a resumed
run: the same config always makes the same run)."""
from __future__ import annotations

import importlib.util
import inspect
import math
import os
from pathlib import Path

from .config import ConfigError, RunConfig

BUILTIN = ("tanh", "rhn", "lstm", "gru", "leaky", "influence", "indrnn", "lru", "lif", "alif")


def load_cell(spec: str, n_in: int, hidden: int, n_out: int, **kw):
    """A built-in cell name, or ``path/to/file.py:function`` (called with
    (n_in, hidden, n_out) when it takes three arguments, else with none; a file that
    defines ``example()`` holds a JAX step function, read by ``rg.from_jax``). ``form``
    ("pytorch") picks PyTorch's parameterization of tanh, lstm and gru, ``layers`` how
    many of their layers are stacked."""
    from .. import cells
    form, layers = kw.get("form"), kw.get("layers") or 1
    framework = ", ".join(c for c in BUILTIN if c in cells.FRAMEWORK_FORMS)
    stacking = ", ".join(c for c in BUILTIN if c in cells.STACKING)
    if form and form != "concat" and spec not in cells.FRAMEWORK_FORMS:
        raise ConfigError(f"--form {form}: only the built-in cells {framework} have a "
                          f"PyTorch form")
    if layers != 1 and spec not in cells.STACKING:
        raise ConfigError(f"--layers {layers}: only the built-in cells {stacking} stack "
                          f"layers; a cell of your own stacks them in its function")
    if spec in BUILTIN:
        if spec == "influence":
            return cells.influence_balancing(hidden if hidden else 23,
                                             kw.get("n_minus") or 13)
        fn = cells.CELLS[spec]
        extra = {"nonlinearity": kw["nonlinearity"]} if spec == "rhn" and \
            kw.get("nonlinearity") else {}
        if form:
            extra["form"] = form
        if layers != 1:
            extra["layers"] = layers
        return fn(n_in, hidden, n_out, **extra)
    if ":" not in spec:
        raise ConfigError(f"unknown cell {spec!r}: use one of {', '.join(BUILTIN)} or "
                          f"path/to/file.py:function")
    path, func = spec.rsplit(":", 1)
    if path in BUILTIN:
        raise ConfigError(f"{spec!r}: built-in cells take their sizes as options, e.g. "
                          f"'{path} --hidden {func}' (see --n-in, --hidden, --n-out)")
    return _cell_from_file(spec, path, func, n_in, hidden, n_out, kw.get("task_sizes"))


def _cell_from_file(spec, path, func, n_in, hidden, n_out, task_sizes=False):
    """The cell ``func`` in the file ``path`` builds; every failure is one line."""
    from ..errors import RGraphError
    from ..graph import Cell
    if not os.path.isfile(path):
        raise ConfigError(f"cannot read {path!r}: no such file")
    try:
        mspec = importlib.util.spec_from_file_location(Path(path).stem, path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
    except Exception as e:  # the user's file failed to import
        raise ConfigError(f"cannot import {path!r}: {type(e).__name__}: {e}") from None
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise ConfigError(f"{path!r} has no function {func!r}")
    if callable(getattr(mod, "example", None)):
        return _cell_from_jax(spec, fn, mod.example, n_in, n_out, task_sizes)
    try:
        nparams = len(inspect.signature(fn).parameters)
        cell = fn(n_in, hidden, n_out) if nparams >= 3 else fn()
    except RGraphError as e:
        raise ConfigError(f"{spec}: {e}") from None
    except Exception as e:
        raise ConfigError(f"{spec}: {type(e).__name__}: {e}") from None
    if not isinstance(cell, Cell):
        raise ConfigError(f"{spec} returned {type(cell).__name__}, not an rgraph Cell")
    return cell


def _cell_from_jax(spec, step, example, n_in, n_out, task_sizes):
    """The cell of a JAX step function ``step(params, state, x)`` in a file that also
    defines ``example()`` returning ``(params, state, x)`` (``rg.from_jax``); its
    parameters start at the example's values. Its sizes are the example's; with
    ``task_sizes`` they must be (n_in, n_out), the task's."""
    from ..errors import RGraphError
    from ..jaxio import from_jax
    try:
        params, state, x = example()
        cell = from_jax(step, params, state, x)
    except (RGraphError, ImportError) as e:
        raise ConfigError(f"{spec}: {e}") from None
    except Exception as e:
        raise ConfigError(f"{spec}: example() must return (params, state, x) of step "
                          f"({type(e).__name__}: {e})") from None
    got_in = cell.node("x").shape[0]
    got_out = {k: cell.nodes[v].shape[0] for k, v in cell.outputs.items()}
    if not task_sizes:
        return cell
    if got_in != n_in:
        raise ConfigError(f"{spec}: example()'s x has {got_in} entries, but the task's "
                          f"inputs have {n_in}")
    if len(got_out) == 1 and next(iter(got_out.values())) != n_out:
        raise ConfigError(f"{spec}: step's logits have {next(iter(got_out.values()))} "
                          f"entries, but the task's outputs have {n_out}")
    return cell


def parse_kv(text: str | None) -> dict:
    """"k=1,l=32" -> {"k": 1, "l": 32} (python literals, else strings)."""
    import ast
    out = {}
    for part in filter(None, (text or "").split(",")):
        if "=" not in part:
            raise ConfigError(f"bad argument {part!r}: write name=value (e.g. k=1,l=32)")
        key, val = part.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(val.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = val.strip()
    return out


def make_task(name, task_args, text):
    """The task ``name`` with its options (``task_args``: "k=1,l=32") and, for charlm,
    the text file."""
    from .. import tasks
    kw = parse_kv(task_args)
    if name == "charlm":
        if not text:
            raise ConfigError(f"--task charlm needs --text FILE ({tasks.example_text()})")
        kw["path_or_text"] = Path(text)
    try:
        return tasks.make_task(name, **kw)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


def build_run(cfg: RunConfig, force_memory: bool = False):
    """(cell, task, estimator) of a run's config (the command line's, or config.json's)."""
    from .. import cells
    from ..api import compile as rg_compile
    task = make_task(cfg.task, cfg.task_args, cfg.text)
    if cfg.cell == "influence":
        cell = cells.influence_balancing(task.n, task.n_minus)
    else:
        cell = load_cell(cfg.cell, task.n_in, cfg.hidden, task.n_out,
                         nonlinearity=cfg.nonlinearity, form=cfg.form, layers=cfg.layers,
                         task_sizes=True)
    est = rg_compile(cell, cfg.estimator, loss=task.loss, backend=cfg.backend,
                     force_memory=force_memory, **cfg.estimator_options)
    return cell, task, est


def estimator_spec(cfg: RunConfig, cell):
    """The estimator a config names, built on ``cell`` without compiling anything: what
    a sweep checks before any run starts. Raises what ``rg.compile`` would for it:
    ``NotApplicable`` (the analysis's reason), or ``ValueError`` / ``TypeError`` for
    options the estimator refuses."""
    from ..analysis import Analysis
    from ..estimators import make_spec
    from ..layout import Layout
    from ..schedule import schedule
    lay = Layout(cell)
    return make_spec(cfg.estimator, lay, schedule(lay), Analysis(cell, lay),
                     **cfg.estimator_options)


def make_trainer(cfg: RunConfig, est, **kw):
    """The trainer a run's config describes, at step 0 (``rgraph train`` and each run of
    ``rgraph sweep``); ``kw``: the trainer's other options (``halt_on_divergence``,
    ``force_memory``)."""
    return est.trainer(est.init_params(cfg.seed), optimizer_from(cfg, est),
                       batch=cfg.batch, seed=cfg.seed, reset_prob=cfg.reset_prob,
                       chunk=cfg.chunk, **kw)


def optimizer_from(cfg: RunConfig, est=None):
    """The optimizer of a run's config (a name in the registry, ``optim.OPTIMIZERS``)
    with its lr, decay and clip. The compiled schedule counts updates; a decay per step
    (``decay_per="step"``) becomes ``decay * sqrt(K)`` per update for an estimator that
    updates every K steps (TBPTT-16: 4x), so that the learning rate falls with the steps
    as the papers' does; that needs the compiled estimator ``est``."""
    from ..training.optim import make
    return make(cfg.optimizer, cfg.lr, decay=decay_per_update(cfg, est), clip=cfg.clip)


def decay_per_update(cfg: RunConfig, est=None) -> float:
    """The decay of ``lr / (1 + decay sqrt(update))`` that a config's schedule means for
    the estimator ``est`` (see ``optimizer_from``)."""
    if cfg.decay_per == "update" or not cfg.decay:
        return cfg.decay
    if est is None:
        raise ValueError("a decay per step needs the compiled estimator, to count its "
                         "updates: optimizer_from(cfg, est)")
    return cfg.decay * math.sqrt(est.spec.update_every(cfg.chunk))
