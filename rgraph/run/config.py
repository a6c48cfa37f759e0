"""``RunConfig``: one training run, as ``rgraph train`` writes it to ``config.json``.

The defaults of a run live here and only here: the command line leaves an option it
was not given as None and ``RunConfig.from_options`` fills it, and ``rg.sweep`` builds
its runs the same way. A task's paper comes first: the optimizer, learning rate,
schedule, batch and resets its ``defaults`` declare (``rgraph.tasks.PaperDefaults``)
fill what the options do not give (``task_defaults``), and the fields' own defaults
the rest. Every value is checked when the config is made, so a bad one fails before
anything is built, with a ``ConfigError`` naming the field.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from ..backends import BACKENDS
from ..errors import RGraphError
from ..estimators import command_line_options
from ..training.optim import OPTIMIZERS

# config.json's format; a config.json without a "version" (written before it had one)
# has the same keys and reads as version 1
CONFIG_VERSION = 1
NONLINEARITIES = ("tanh", "2sigmoid-1")
FORMS = ("concat", "pytorch")
# what the t of lr / (1 + decay sqrt(t)) counts: the optimizer's updates, or the steps
# of one stream (the characters of Tallec & Ollivier's schedule)
DECAY_PER = ("update", "step")
# the fields a task's PaperDefaults set
TASK_DEFAULTS = ("optimizer", "lr", "decay", "decay_per", "batch", "reset_prob")


def estimator_flags() -> dict:
    """rgraph train's estimator options, from the estimators' declarations: the Python
    name (the flag's: ``k_dirs`` for ``--k-dirs``) -> the ``Option`` (its ``name`` is
    the estimator's keyword, ``k``)."""
    return {o.cli_flag[2:].replace("-", "_"): o for o, _ in command_line_options()}


class ConfigError(RGraphError):
    """A run that cannot be made: a bad value (``key`` names the field), an unknown key,
    a cell or task that cannot be built. One line, for the user."""

    def __init__(self, problem: str, key: str | None = None):
        super().__init__(f"{key} {problem}" if key else problem)
        self.key, self.problem = key, problem


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A training run: the cell and its size, the task, the estimator, the optimizer,
    the stream and the run folder's options. ``to_json`` is its config.json."""
    version: int = CONFIG_VERSION
    cell: str = "lstm"               # a built-in cell or path/to/file.py:function
    hidden: int = 32
    nonlinearity: str | None = None  # rhn only
    form: str | None = None          # tanh, lstm, gru: "concat" or "pytorch"
    layers: int = 1                  # tanh, lstm, gru: stacked layers
    task: str | None = None
    task_args: str | None = None     # "k=1,l=32"
    text: str | None = None          # charlm: the text file
    estimator: str | None = None
    estimator_options: dict = field(default_factory=dict, hash=False)
    backend: str = "numba"
    steps: int = 100000
    batch: int = 1
    optimizer: str = "adam"
    lr: float = 1e-3
    decay: float = 0.0
    decay_per: str = "update"        # t of lr / (1 + decay sqrt(t)): "update" or "step"
    clip: float = 0.0
    seed: int = 0
    chunk: int = 1000
    reset_prob: float = 0.0
    checkpoint_every: int = 20000    # the run folder's: a sweep's runs have none
    full_curve: bool = False

    def __post_init__(self):
        if not isinstance(self.estimator_options, dict):
            raise ConfigError(f"must be a mapping of option names to values, got "
                              f"{self.estimator_options!r}", "estimator_options")
        object.__setattr__(self, "estimator_options", dict(self.estimator_options))
        self._check()

    def _check(self):
        if not _is_int(self.version) or not 1 <= self.version <= CONFIG_VERSION:
            raise ConfigError(f"is {self.version!r}: this rgraph reads run configs of "
                              f"version 1 to {CONFIG_VERSION} (a newer rgraph wrote it?)",
                              "version")
        for key in ("hidden", "layers", "steps", "batch", "chunk", "checkpoint_every"):
            _count(key, getattr(self, key), 1)
        _count("seed", self.seed, 0)
        for key in ("cell", "task", "task_args", "text", "estimator"):
            val = getattr(self, key)
            if val is not None and not isinstance(val, str):
                raise ConfigError(f"must be a string, got {val!r}", key)
        if not self.cell:
            raise ConfigError("must name a cell (e.g. lstm), got ''", "cell")
        for key, allowed in (("backend", BACKENDS), ("optimizer", OPTIMIZERS),
                             ("nonlinearity", (None, *NONLINEARITIES)),
                             ("form", (None, *FORMS)), ("decay_per", DECAY_PER)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"must be one of {', '.join(filter(None, allowed))}, got "
                                  f"{getattr(self, key)!r}", key)
        for key in ("lr", "decay", "clip"):
            _number(key, getattr(self, key), 0.0, math.inf)
        _number("reset_prob", self.reset_prob, 0.0, 1.0)
        if not isinstance(self.full_curve, bool):
            raise ConfigError(f"must be true or false, got {self.full_curve!r}", "full_curve")
        known = {o.name for o in estimator_flags().values()}
        bad = sorted(set(self.estimator_options) - known)
        if bad:
            raise ConfigError(f"has unknown option {bad[0]!r} (the options: "
                              f"{', '.join(sorted(known))})", "estimator_options")

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_options(cls, *, task_defaults: bool = True, **options) -> RunConfig:
        """From ``rgraph train``'s options by their Python names, the estimator's options
        flat (``rank=2``, ``k_dirs=4``); None is an option not given. An option not given
        takes the task's paper default (``task_defaults``; ``task_defaults=False``: not),
        else the field's default."""
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - set(run_options()))
        if unknown:
            raise TypeError(f"unknown run option {unknown[0]!r}; the options: "
                            f"{', '.join(run_options())}")
        flags = estimator_flags()
        fields = {k: v for k, v in given.items() if k not in flags}
        if task_defaults:
            fields = {**paper_defaults(given)[0], **fields}
        return cls(**fields, estimator_options=estimator_options(given))

    # fields written to config.json only where they differ from these values, so that
    # the configs (and sweep run ids) of runs from before the field existed stay as
    # they were
    OMITTED_AT = {"layers": 1, "decay_per": "update"}

    def to_dict(self) -> dict:
        """The config as config.json holds it (plain JSON values, the fields in order).
        ``layers`` and ``decay_per`` are written only where they are not 1 and "update"
        (``OMITTED_AT``): the configs of runs from before them stay as they were."""
        return {f.name: getattr(self, f.name) if f.name != "estimator_options"
                else dict(self.estimator_options) for f in dataclasses.fields(self)
                if not (f.name in self.OMITTED_AT and
                        getattr(self, f.name) == self.OMITTED_AT[f.name])}

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """The config a dict (a config.json) describes: a missing key takes its default
        (a missing version is 1), an unknown key is an error naming it."""
        if not isinstance(data, dict):
            raise ConfigError(f"a run config is a JSON object, got {type(data).__name__}")
        unknown = [k for k in data if k not in FIELDS]
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in a run config (the keys: "
                              f"{', '.join(FIELDS)}); remove it, or read it with the "
                              f"rgraph that wrote it")
        return cls(**data)

    def to_json(self) -> str:
        """config.json's text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"a run config is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def replace(self, **changes) -> RunConfig:
        """A copy with some fields changed (and checked)."""
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def paper_defaults(given: dict) -> tuple[dict, str | None]:
    """What the task's paper sets among the run options not in ``given`` (by their
    Python names; ``given["task"]`` names the task), and one line saying which values
    came from which paper and which were given. ({}, None) without a task, or for a
    task that declares no defaults. A paper's schedule counts steps (``decay_per``
    "step"); a ``decay`` given keeps the field's default count, updates."""
    from ..tasks import TASKS
    given = {k: v for k, v in given.items() if v is not None}
    cls = TASKS.get(str(given.get("task") or "").strip().lower())
    spec = getattr(cls, "defaults", None)
    if spec is None:
        return {}, None
    paper = spec.settings()
    paper["decay_per"] = "step" if paper["decay"] else "update"
    taken = {k: v for k, v in paper.items() if k not in given and
             not (k == "decay_per" and "decay" in given)}
    shown = []
    for k in ("optimizer", "lr", "decay", "batch", "reset_prob"):
        if k in taken and (k != "reset_prob" or taken[k]):
            v = taken[k]
            text = f"{v:g}" if isinstance(v, float) else str(v)
            if k == "decay" and v:
                text += " (lr / (1 + decay sqrt(t)), t counted in steps)"
            shown.append(f"{k.replace('_', '-')} {text}")
    kept = [k for k in TASK_DEFAULTS if k in given and k != "decay_per"]
    line = (f"defaults of {spec.source}: {', '.join(shown)}" if shown else
            f"no defaults of {spec.source} used")
    if kept:
        line += f"; given: {', '.join('--' + k.replace('_', '-') for k in kept)}"
    return taken, line


def run_options() -> tuple:
    """What ``from_options`` takes: every field but the version, and the registered
    estimators' options flat, by their Python names."""
    return tuple(k for k in FIELDS if k not in ("version", "estimator_options")) + \
        tuple(estimator_flags())


def estimator_options(options: dict) -> dict:
    """The estimator's options among ``options`` (rgraph train's Python names: ``k_dirs``
    is the estimator's ``k``), text read as the option declares (a projection "h_new,
    c_new" is a list of node names)."""
    out = {}
    for key, opt in estimator_flags().items():
        val = options.get(key)
        if val is not None:
            out[opt.name] = opt.read(val) if isinstance(val, str) else val
    return out


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _count(key, val, low):
    if not _is_int(val):
        raise ConfigError(f"must be an integer, got {val!r}", key)
    if val < low:
        raise ConfigError(f"must be >= {low}, got {val}", key)


def _number(key, val, low, high):
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
        raise ConfigError(f"must be a finite number, got {val!r}", key)
    if not low <= val <= high:
        raise ConfigError(f"must be {'>= 0' if high == math.inf else f'in [{low:g}, {high:g}]'}"
                          f", got {val}", key)
