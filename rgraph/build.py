"""The generated module of one estimator on one cell: its kernels, the estimator's
templates, the online loop, the optimizers' rules and the loss, put together by the
``ModuleBuilder`` (``codegen``).

The module's entry points (its ``__all__``) are ``run`` (a chunk of online steps for a
batch of streams, one stream after the other), ``evaluate`` (forward only), for
estimators with work pending at segment ends ``flush_all``, and for estimators with a
batch step (on backends with ``batch_step``) ``run_batch``: the same loop stepping all
the streams at once, their products GEMMs over the batch. Each entry point is compiled
on first use.
"""
from __future__ import annotations

from .codegen import ModuleBuilder, Template, layout_size, tuple_lines
from .estimators.base import EstimatorSpec
from .training import loop
from .training.optim import OPTIMIZERS, update_source


def build_module(spec: EstimatorSpec, backend, loss_helper: str, dtype: str,
                 title: str, doc: str = "", reserved=()) -> tuple[str, dict]:
    """(the module's text, its entry points: name -> the name it has in the module,
    which differs where a node of the cell took the name)."""
    lay = spec.lay
    mb = ModuleBuilder(backend, title, doc, user_names=[n.name for n in lay.nodes],
                       aliases={"rg_loss": loss_helper,
                                **backend.aliases(dtype)},
                       describe=_describer(lay), reserved=reserved)
    # a batch of streams stepped at once (its products GEMMs over the streams) where
    # the estimator has a batch step and the backend declares one (batch_step)
    batch = spec.batch_templates() if backend.batch_step else []
    if batch and spec.flushes:
        raise ValueError(f"{spec.describe()}: a batch step for an estimator with work "
                         f"pending at segment ends is not supported")
    choices = spec.module_choices()
    templates = [(t, "estimator") for t in spec.templates() + batch] + \
        [(Template(loop.run, "run"), "loop"), (Template(loop.evaluate, "evaluate"), "loop")] + \
        [(Template(cls.rule, cls.rule.__name__), "loop") for cls in OPTIMIZERS.values()]
    entry = ["run", "evaluate"]
    if batch:       # the loop over a batch: its own entry point, compiled when first used
        templates.append((Template(loop.run, "run_batch"), "loop"))
        entry.append("run_batch")
    if spec.flushes:
        templates.append((Template(loop.flush_all, "flush_all"), "loop"))
        entry.append("flush_all")
    kernels = spec.base_kernels() + spec.kernels()
    if batch:
        kernels += spec.batch_kernels(kernels)
    constants = {**spec.base_constants(), **spec.constants()}
    helpers = backend.helpers()
    mb.reserve(list(backend.import_names()) + list(helpers) + ["DT", "FASTMATH"]
               + list(constants) + [k.name for k in kernels]
               + [t.name for t, _ in templates]
               + ["est_scratch", "est_scratch_batch", "opt_update", "Scratch",
                  "ScratchBatch", "namedtuple"])
    mb.imports(backend.IMPORTS)
    mb.imports("from collections import namedtuple\n")     # the scratch, by name
    mb._add(f"{mb.g('DT')} = {mb.g('np')}.{dtype}", "sizes")
    for name, value in constants.items():
        mb.constant(name, value)
    for c in (n for n in lay.nodes if n.kind == "const"):
        mb.constant(c.name, lay.consts[c.name], f"constant {_shape(c)}", "layout", user=True)
    for k in kernels:
        mb.kernel(k)
    # the scratch buffers the estimator's templates use, allocated once per call
    layout = spec.scratch_layout()
    scratch = spec.used_scratch()
    state = spec.state_layout()
    batch_layout = spec.batch_scratch_layout()
    batch_scratch = spec.used_scratch(batch=True) if batch else []
    for t, section in templates:
        mb.template(t, section, {**choices, "BATCHED": t.name == "run_batch"}, state,
                    batch_scratch if t.role == "batch" else scratch)
    _scratch(mb, layout, scratch)
    if batch:
        _scratch(mb, batch_layout, batch_scratch, "B")
    mb.source("opt_update", update_source(), "loop")
    mb.helpers(helpers)
    return mb.render(entry), {e: mb.g(e) for e in entry}


def build_kernels(lay, kernels: list, backend, title: str) -> tuple[str, dict]:
    """A module of kernels alone, for checking derivatives and comparing backends:
    (its text, kernel name -> the name it has in the module)."""
    mb = ModuleBuilder(backend, title, user_names=[n.name for n in lay.nodes],
                       aliases=backend.aliases("float64"), describe=_describer(lay))
    mb.reserve(list(backend.import_names()) + list(backend.helpers()) + ["DT"]
               + [k.name for k in kernels])
    mb.imports(backend.IMPORTS)
    mb._add(f"{mb.g('DT')} = {mb.g('np')}.float64", "sizes")
    for c in (n for n in lay.nodes if n.kind == "const"):
        mb.constant(c.name, lay.consts[c.name], f"constant {_shape(c)}", "layout", user=True)
    for k in kernels:
        mb.kernel(k)
    mb.helpers(backend.helpers())
    return mb.render([k.name for k in kernels]), {k.name: mb.g(k.name) for k in kernels}


def _scratch(mb, layout, names, rows=None):
    """``est_scratch``: the named buffers of one step (a named tuple, ``Scratch``, that
    templates read by name: ``v, vd = W.v, W.vd``), allocated once per call of the
    loop; with ``rows``, ``est_scratch_batch(B)``: each with a leading row per stream."""
    np_, dt = mb.g("np"), mb.g("DT")
    kind, fn = ("ScratchBatch", "est_scratch_batch") if rows else ("Scratch", "est_scratch")
    items = []
    for n in names:
        if layout[n] is None:       # the one-stream scratch, once
            items.append(f"{mb.g('est_scratch')}()")
            continue
        dims = ((rows,) if rows else ()) + tuple(str(d) for d in layout[n])
        items.append(f"{np_}.zeros(({', '.join(dims)}{',' if len(dims) == 1 else ''}), "
                     f"{dt})")
    what = f"one step of {rows} streams (a row each)" if rows else "one step"
    mb._add("\n".join(tuple_lines(f"{mb.g(kind)} = {mb.g('namedtuple')}({kind!r}, (",
                                  [repr(n) for n in names], "))", "    ")) + "\n",
            "estimator", {mb.g(kind)})
    lines = tuple_lines(f"    return {mb.g(kind)}(", items, ")", "        ")
    mb.rendered(fn, f"def {mb.g(fn)}({rows or ''}):\n"
                    f'    """The scratch buffers of {what}, by name."""\n'
                + "\n".join(lines) + "\n", "estimator")


def _shape(n) -> str:
    return "(" + ", ".join(map(str, n.shape)) + ")"


def _describer(lay):
    def describe(name):
        n = lay.cell.node(name)
        if n.kind == "param":
            blk = lay.block_of(n.id)
            return f"{'recurrent' if blk.recurrent else 'readout'} parameter {_shape(n)}, th"
        if n.kind in ("state", "input"):
            return f"{n.kind} {_shape(n)}"
        return f"{lay.cell.describe(n)} {_shape(n)}"
    return describe


__all__ = ["build_module", "build_kernels", "layout_size"]
