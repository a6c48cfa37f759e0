"""What every estimator shares: the kernels it asks for, its state, its templates.

An ``EstimatorSpec`` subclass is one algorithm applied to one cell. It is built from the
cell's ``Layout`` (memory), ``schedule`` and ``Analysis``, and says

* ``kernels()``: the forward/jvp/vjp kernels it composes (``autodiff``);
* ``state_layout()``: what each stream keeps between steps (name -> shape; a shape may
  contain "K", a segment length chosen at run time);
* ``scratch_layout()``: the buffers one step may use (only those a template uses are
  allocated);
* ``constants()`` and ``choices()``: module constants, and the static choices its
  templates branch on (resolved when the module is generated, so only what the options
  select is emitted);
* ``templates()``: its ``step`` (and ``flush`` / ``reset``) template functions, plain
  Python in the estimator's file, reading like the paper's algorithm;
* ``flops()``: its cost model, flops per online step (the families table);

and, as class attributes the registry, the report and the command line read, what a
user can ask of it:

* ``options``: its keyword options (``Option``: name, help, how a command line reads it);
* ``argument``: the option its name carries in brackets (``Argument``: ``tbptt(16)``);
* ``aliases``: other spellings of its name; ``shown``: the instances the families table
  lists (``("snap-1", "snap-2")``; default: the registered name).

A function that chooses one of several specs from the options (``uoro`` with T > 1 is
UORO-T) declares the same through ``chooser``.

Templates see the module's names: ``S``, ``X``, ``NV``, ``NP``, ``NR``, ``OUT_OFF``,
``NOUT``, ``DT``, the kernels, the ``rg_*`` helpers, ``rg_loss`` and the estimator's own
constants. A step template takes ``(th, s, x, y, w, g, rng, *, <state and scratch>)``:
advance s in place, add this step's gradient estimate into g, return the loss.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import autodiff
from .. import kernel as K
from ..analysis import Analysis
from ..autodiff import CotangentSpec, ParamTangents, TangentSpec
from ..codegen import Template, template_needs
from ..layout import Layout
from ..schedule import Block
from ..sparsity import association
from . import common
from .names import Argument


@dataclass(frozen=True)
class Option:
    """A keyword option of an estimator (``rg.compile(cell, "ok", rank=4)``): what it
    does, and how the command line reads it: ``read`` parses the flag's text (None: the
    API only, e.g. an array), ``choices`` lists its values where they are few, ``flag``
    names the flag where it is not ``--<name>``."""
    name: str
    help: str
    read: Callable[[str], object] | None = int
    choices: tuple = ()
    flag: str = ""

    @property
    def cli_flag(self) -> str:
        return "--" + (self.flag or self.name.replace("_", "-"))


class EstimatorSpec:
    """One estimator applied to one cell. Subclasses fill in the pieces."""

    name = "base"
    options: tuple[Option, ...] = ()
    argument: Argument | None = None
    aliases: tuple[str, ...] = ()
    shown: tuple[str, ...] = ()       # the families table's instances (default: its name)
    segment = False         # keeps a trajectory; its flush does the work at segment ends
    exact = False           # deterministic and equal to the true gradient
    stochastic = False      # draws random numbers
    whole_sequence = False  # one segment per run: a training chunk is one exact update

    def __init__(self, lay: Layout, sched: tuple[Block, ...], analysis: Analysis, **opts):
        if opts:
            raise TypeError(f"{self.name} has no option(s) {sorted(opts)}")
        self.lay = lay
        self.sched = sched
        self.analysis = analysis

    @property
    def nout(self) -> int:
        """Length of the output the loss sees."""
        return self.lay.loc[self.lay.loss_output_id].n

    # -- building kernels
    def jvp(self, name, seeds=None, params=ParamTangents.NONE, **kw):
        """A jvp kernel; its arguments are (th, v, [thd], [sd], vd, nd): thd when the
        caller gives the parameters' tangent, sd when the previous states are seeds."""
        spec = TangentSpec(None if seeds is None else tuple(seeds), params, **kw)
        k = autodiff.jvp(self.lay, self.sched, name, spec)
        args = ("th", "v") + (("thd",) if params is ParamTangents.DENSE else ()) + \
            (("sd",) if seeds is None or any(s in self.lay.state_ids for s in seeds) else ()) \
            + ("vd", "nd")
        k.args = args
        return k

    def vjp(self, name, seeds, wrt=("params", "state"), overwrite=False, skip=(),
            stop=()):
        return autodiff.vjp(self.lay, self.sched, name,
                            CotangentSpec(tuple(seeds), frozenset(wrt), overwrite,
                                          frozenset(skip), frozenset(stop)))

    # -- what subclasses define
    def kernels(self) -> list:
        return []

    def constants(self) -> dict:
        return {}

    def choices(self) -> dict:
        return {}

    def state_layout(self) -> dict:
        return {}

    def scratch_layout(self) -> dict:
        return {}

    def templates(self) -> list[Template]:
        raise NotImplementedError

    @property
    def flushes(self) -> bool:
        """Whether the estimator has a flush (work pending at segment ends)."""
        return any(t.role == "flush" for t in self.templates())

    def module_choices(self) -> dict:
        """The static choices the module's templates are resolved with."""
        return {**self.choices(), "FLUSHES": self.flushes,
                "RESETS": any(t.role == "reset" for t in self.templates())}

    def used_scratch(self, batch=False) -> list[str]:
        """The scratch buffers (``scratch_layout()`` names, in its order) the module's
        ``est_scratch`` allocates: those the role templates read (``rgraph.resources``
        counts memory from them); with ``batch``, those of ``est_scratch_batch``."""
        choices = self.module_choices()
        if batch:
            used = {n for t in self.batch_templates() if t.role == "batch"
                    for n in template_needs(t, choices)}
            return [n for n in self.batch_scratch_layout() if n in used]
        used = {n for t in self.templates() if t.role for n in template_needs(t, choices)}
        return [n for n in self.scratch_layout() if n in used]

    # -- a batch of streams at once (compiled backends)
    def batch_templates(self) -> list[Template]:
        """A "batch" template that steps every stream at once, and the "part" templates
        it calls for what is each stream's own; [] where the loop steps the streams one
        by one. Kernels over the batch (``kernel.batched``) make its products GEMMs over
        the streams. The default, for a step of the form ``forward_and_backprop``, the
        rest, ``gather_new``: the forward pass and backprop for the whole batch, then
        each stream's rest of the step (``common.batch_step``, ``common.rest_of_step``).
        """
        step = next(t for t in self.templates() if t.role == "step")
        rest = common.rest_of_step(step.fn, self.module_choices())
        if rest is None or self.flushes:
            return []
        return [Template(common.forward_and_backprop_b, "forward_and_backprop_b"),
                Template(common.batch_step, "est_batch", "batch"),
                Template(rest, "est_rest", "part")]

    def batch_kernels(self, kernels: list) -> list:
        """The kernels over the batch the batch template calls, built from the
        module's one-stream ``kernels``."""
        by = {k.name: k for k in kernels}
        return [K.batched(by["forward"], "forward_b", ("th", "const")),
                K.batched(by["vjp_out"], "vjp_out_b", ("th", "const", "thb"))]

    def batch_scratch_layout(self) -> dict:
        """The batch template's scratch buffers, name -> shape of one stream's row
        (``W1``: the one-stream scratch of ``est_scratch``, allocated once)."""
        lay = self.lay
        return {"v": (lay.n_values,), "vb": (lay.n_values,), "ybar": (self.nout,),
                "W1": None}

    def update_every(self, T: int | None = None) -> int:
        """Steps between parameter updates (a segment length, or 1)."""
        return self.segment_length(T) if self.segment else 1

    def segment_length(self, T: int | None = None) -> int:
        """The K of a "K" layout dimension for a run of T steps."""
        return 1

    def describe(self) -> str:
        return self.name

    def flops(self) -> int:
        """Flops per online step, by the estimator's cost model (every registered spec
        declares one: the registry refuses a spec without)."""
        raise NotImplementedError(f"{type(self).__name__} declares no flop model")

    def base_flops(self) -> int:
        """What every estimator does each step: the forward step, the loss and the
        backprop through the step, 3 F."""
        return 3 * self.lay.flops()

    def push_flops(self, K: int) -> int:
        """H_t X for a state tangent of K columns, by the cheaper association."""
        return association(self.lay, K).flops

    # -- shared pieces
    def base_kernels(self) -> list:
        lay = self.lay
        return [autodiff.forward(lay, self.sched),
                self.vjp("vjp_out", [lay.loss_output_id]),
                autodiff.gather(lay, "gather_new", lay.new_state)]

    def base_constants(self) -> dict:
        lay = self.lay
        ref = lay.loc[lay.loss_output_id]
        return {"S": lay.n_state, "X": lay.n_in, "NV": lay.n_values, "NP": lay.n_params,
                "NR": lay.n_rec, "OUT_OFF": ref.off, "NOUT": ref.n}

    def base_scratch(self) -> dict:
        """The buffers of one step most estimators use."""
        lay = self.lay
        return {"v": (lay.n_values,), "vd": (lay.n_values,), "vb": (lay.n_values,),
                "ybar": (self.nout,)}


def positive_int(value, what, lo=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{what} must be an integer >= {lo}, got {value!r}")
    return int(value)


def chooser(*specs: type[EstimatorSpec], argument: Argument | None = None,
            aliases: tuple[str, ...] = (), shown: tuple[str, ...] = ()):
    """Declare a function that builds one of ``specs`` from its options (``uoro``: UORO,
    or UORO-T for T > 1) as the registry reads a spec: its options are theirs (each once,
    in order), its bracketed argument, aliases and families-table instances as given."""
    def declare(fn):
        seen = {}
        for spec in specs:
            for opt in spec.options:
                seen.setdefault(opt.name, opt)
        fn.options, fn.specs = tuple(seen.values()), specs
        fn.argument, fn.aliases, fn.shown = argument, aliases, shown
        return fn
    return declare
