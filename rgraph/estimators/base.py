"""What every estimator shares: kernels, state layouts, and how a module is assembled.

An ``EstimatorSpec`` subclass says which kernels it needs (built from the cell's
``Program``), what each stream keeps between steps (``state_layout``), what scratch
one step needs (``scratch_layout``) and which template functions implement it. The
templates are plain functions in the estimator's file, written against the names of
the generated module (contract in ``estimators/__init__.py``).

Layouts are ordered name -> shape; a shape may contain the string "K" (a segment length
chosen at run time, e.g. BPTT's whole sequence). ``views_source`` turns a layout into
the ``est_views`` function that cuts a stream's flat state array into named views.
"""
from __future__ import annotations

import numpy as np

from ..autodiff import Program


def _size(shape, K=1):
    return int(np.prod([K if d == "K" else d for d in shape]))


def layout_size(layout: dict, K: int = 1) -> int:
    return sum(_size(s, K) for s in layout.values())


def views_source(layout: dict, name: str, arg: str, select=None) -> str:
    """Source of ``name(arg)`` returning views into a flat array laid out as ``layout``
    (all of them, or the ``select``ed names in that order)."""
    fixed = [(n, s) for n, s in layout.items() if "K" not in s]
    per_k = [(n, s) for n, s in layout.items() if "K" in s]
    nfix = layout_size(dict(fixed))
    nper = layout_size(dict(per_k))
    views, pos = {}, 0
    for n, s in fixed:
        views[n] = _view(arg, str(pos), str(pos + _size(s)), s)
        pos += _size(s)
    off = str(pos)
    for n, s in per_k:
        end = f"{off} + K * {_size(s)}"      # _size(s): the size per unit of K
        views[n] = _view(arg, off, end, s)
        off = f"({end})"
    names = list(layout) if select is None else list(select)
    lines = [f"def {name}({arg}):", f'    """Views {names} of one stream."""']
    if per_k and any("K" in layout[n] for n in names):
        lines.append(f"    K = ({arg}.shape[0] - {nfix}) // {nper}")
    out = [views[n] for n in names]
    lines.append("    return (" + ", ".join(out) + ("," if len(out) == 1 else "") + ")")
    return "\n".join(lines) + "\n"


def _view(arg, start, end, shape):
    sl = f"{arg}[{start}:{end}]"
    if len(shape) > 1:
        sl += f".reshape(({', '.join(str(d) for d in shape)}))"
    return sl


def scratch_source(layout: dict) -> str:
    items = [f"np.zeros(({', '.join(str(d) for d in s)},), dtype=DT)" if len(s) == 1 else
             f"np.zeros(({', '.join(str(d) for d in s)}), dtype=DT)" for s in layout.values()]
    return ("def est_scratch():\n"
            f'    """Scratch buffers {list(layout)} (allocated once per call)."""\n'
            f"    return ({', '.join(items)}{',' if len(items) == 1 else ''})\n")


def renamed(fn, name: str) -> str:
    """A template function's source under another name (shared bodies, fixed names)."""
    from ..codegen import function_source
    src = function_source(fn)
    return src.replace(f"def {fn.__name__}(", f"def {name}(", 1)


class EstimatorSpec:
    """One estimator applied to one cell. Subclasses fill in the pieces."""

    name = "base"
    segment = False         # keeps a trajectory; est_flush does the work at segment ends
    exact = False           # deterministic and equal to the true gradient
    stochastic = False      # draws random numbers

    def __init__(self, prog: Program, analysis, **opts):
        if opts:
            raise TypeError(f"{self.name} has no option(s) {sorted(opts)}")
        self.prog = prog
        self.analysis = analysis

    @property
    def nout(self) -> int:
        """Length of the output the loss sees."""
        return self.prog.loc[self.prog.output_ids_loss[0]].n

    # -- what subclasses define
    def kernels(self) -> list:
        return []

    def constants(self) -> dict:
        return {}

    def state_layout(self) -> dict:
        return {}

    def scratch_layout(self) -> dict:
        return {}

    def functions(self) -> list:
        raise NotImplementedError

    def update_every(self, T: int | None = None) -> int:
        """Steps between parameter updates (a segment length, or 1)."""
        return self.segment_length(T) if self.segment else 1

    def segment_length(self, T: int | None = None) -> int:
        """The K of a "K" layout dimension for a run of T steps."""
        return 1

    def describe(self) -> str:
        return self.name

    # -- shared pieces
    def base_kernels(self) -> list:
        p = self.prog
        return [p.forward(), p.vjp("vjp_out", p.output_ids_loss, ("params", "state")),
                p.gather("gather_new", p.new_state)]

    def base_constants(self) -> dict:
        p = self.prog
        out = p.constants()
        ref = p.loc[p.output_ids_loss[0]]
        out.update({"OUT_OFF": ref.off, "NOUT": ref.n})
        return out

    def module_parts(self):
        """(constants, kernels, functions) of the generated module."""
        consts = self.base_constants()
        consts.update(self.constants())
        kernels = self.base_kernels() + self.kernels()
        layout = self.state_layout()
        funcs = [views_source(layout, "est_views", "E"), scratch_source(self.scratch_layout())]
        if "traj" in layout:     # the stored segment, for the shared segment templates
            funcs.append(views_source(layout, "seg_views", "E", ("pos", "traj", "ybars")))
        funcs += list(self.functions())
        return consts, kernels, funcs


def positive_int(value, what, lo=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{what} must be an integer >= {lo}, got {value!r}")
    return int(value)
