"""Standalone export: one compiled estimator, with its training loop, as one Python file
that imports only math, numpy and numba (``est.export(path)``, ``rgraph export``).

The file is the estimator's generated module (``est.source``, minus its "do not edit"
and content-hash header lines) followed by a driver: the constants that describe the
parameter layout, the estimator state's size, the optimizers and the init schemes,
then the plain Python functions of ``export_driver.py`` (``init_params``,
``total_gradient``, ``loss``, ``train``), which call the generated module's compiled
entry points ``run``, ``flush_all`` and ``evaluate``. Nothing in the file refers to
rgraph, so it runs in a project that does not have it.
"""
from __future__ import annotations

import ast
from importlib.metadata import version
import builtins
import dataclasses
import inspect
import re
import symtable
import textwrap
from pathlib import Path

import numpy as np

from . import export_driver
from .codegen import Namer, rename
from .errors import RGraphError

ENTRY = ("run", "run_batch", "flush_all", "evaluate")   # the generated module's functions we call
_HEADER = re.compile(r"^#.*(do not edit|content hash)", re.IGNORECASE)


class ExportError(RGraphError):
    """An estimator or a path that cannot be exported."""


def export(est, path) -> Path:
    """Write ``est`` as one standalone module at ``path`` (a .py file). Returns the path."""
    path = Path(path)
    if path.suffix != ".py":
        raise ExportError(f"{str(path)!r} is not a .py file; name the module "
                          f"file e.g. {path.stem or 'model'}.py")
    if path.is_dir():
        raise ExportError(f"{str(path)!r} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError(f"cannot write {str(path)!r}: no such directory "
                          f"{str(parent)!r}")
    text = module_text(est, path.stem)
    try:
        path.write_text(text)
    except OSError as e:
        raise ExportError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    return path


def driver_names() -> set:
    """The module-level names the driver defines (every generated module leaves them
    free, so that the export can append the driver to any cell's module)."""
    return {fn.__name__ for fn in export_driver.DRIVER} | set(CONSTANTS) | {"__all__"}


def module_text(est, stem: str = "model") -> str:
    """The full text of the exported module of ``est`` (``stem``: its import name)."""
    body = generated_body(est.source)
    defined = top_level_names(body)
    entry = est.entry_points        # the entry points' names in this module
    missing = [n for n in entry.values() if n not in defined]
    if missing:
        raise ExportError(f"the generated module of {est.name} lacks {missing}")
    consts = constants(est)
    funcs = [textwrap.dedent(inspect.getsource(fn)) for fn in export_driver.DRIVER]
    driver = "\n\n".join(funcs)
    mine = set(consts) | {fn.__name__ for fn in export_driver.DRIVER}
    clash = sorted(mine & defined)
    if clash:
        raise ExportError(f"the generated module of {est.name} already defines "
                          f"{clash}")
    free = free_names(driver) - mine - set(ENTRY) - {"np", "math"} - set(dir(builtins))
    if free:
        raise ExportError(f"the driver uses undefined names {sorted(free)}")
    # numpy and math under names the generated module leaves free (a cell's node may be
    # called np or math: the generated module then imports numpy under another name)
    namer = Namer(defined | mine)
    mods = {"np": namer.claim("np"), "math": namer.claim("math"), **entry}
    driver = rename(driver, mods)
    consts = {k: rename(v, mods) for k, v in consts.items()}
    parts = [docstring(est, stem),
             (f"# Exported by rgraph {version('rgraph')}: the generated module of {est.name}, "
              f"then a driver."),
             "# Standalone: imports only math, numpy" + (" and numba." if est.backend.jit
                                                         else "."),
             body.rstrip("\n"), "", "",
             "# " + "-" * 30 + " exported driver (plain Python around the compiled loop)",
             "import math" + (f" as {mods['math']}" if mods["math"] != "math" else ""),
             "import numpy" + (f" as {mods['np']}" if mods["np"] != "numpy" else ""), ""]
    parts += [f"{name} = {value}" for name, value in consts.items()]
    parts += ["", "", driver, "", "",
              f"__all__ = {export_driver.ENTRY_POINTS + ['PARAMS', 'INFO']!r}", ""]
    text = "\n".join(parts)
    compile(text, f"{stem}.py", "exec")      # a template or header change fails here
    return text


def docstring(est, stem: str) -> str:
    """The exported module's docstring: what it is and how to use it."""
    mod = stem if stem.isidentifier() else "model"
    ys = (f"ys: (T,) class ids in [0, {est.n_out})" if est.loss_name == "softmax_xent"
          else f"ys: (T, {est.n_out}) targets")
    custom = [r[0] for r in init_specs(est) if r[2] == "custom"]
    init = ("init_params(seed) draws as rgraph does." if not custom else
            f"init_params cannot draw {custom} (a Python init function).")
    if est.backend.jit:
        needs = "numpy and numba"
        run = ("Numba-compiled, cached next to this file (numba's np.dot needs scipy); one "
               "BLAS\nthread (OPENBLAS_NUM_THREADS=1) is fastest.")
    else:
        needs, run = "numpy", "Plain numpy code: nothing is compiled."
    return "\n".join([
        (f'"""Cell \'{est.cell.name}\' with the {est.name} gradient estimator, loss '
         f'{est.loss_name}, {est.dtype.name}.'),
        "",
        f"Exported by rgraph {version('rgraph')}; needs only {needs}, not rgraph. Use:",
        "",
        f"    import {mod} as m",
        ("    params = m.init_params(seed=0)                # {name: array}; shapes in "
         "m.PARAMS"),
        "    g = m.total_gradient(params, xs, ys, seed=1)  # the summed per-step estimates",
        '    params, losses = m.train(params, xs, ys, optimizer="adam", lr=1e-3, batch=4)',
        ("    m.loss(params, xs, ys)                        # mean per-step loss, forward "
         "only"),
        "",
        f"xs: (T, {est.n_in}) inputs; {ys}. {init}",
        f"{run} The functions' docstrings give their options.",
        '"""'])


def generated_body(source: str) -> str:
    """The generated module without its leading "do not edit" / content-hash comment
    lines and without its docstring (the export has its own)."""
    lines = source.splitlines(keepends=True)
    head = 0
    while head < len(lines) and lines[head].startswith("#"):
        head += 1
    lines = [ln for i, ln in enumerate(lines) if i >= head or not _HEADER.match(ln)]
    lines = [ln for ln in lines if not ln.startswith("__all__ = ")]
    tree = ast.parse("".join(lines))
    if tree.body and isinstance(tree.body[0], ast.Expr) and \
            isinstance(getattr(tree.body[0], "value", None), ast.Constant) and \
            isinstance(tree.body[0].value.value, str):
        doc = tree.body[0]
        lines[doc.lineno - 1:doc.end_lineno] = []
    return "".join(lines)


def top_level_names(source: str) -> set:
    """Names a module binds at its top level."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def free_names(source: str) -> set:
    """Global names the functions of ``source`` read (builtins included)."""
    out = set()

    def walk(table):
        for sym in table.get_symbols():
            if sym.is_global() and sym.is_referenced():
                out.add(sym.get_name())
        for child in table.get_children():
            walk(child)
    for child in symtable.symtable(source, "<driver>", "exec").get_children():
        walk(child)
    return out


# ------------------------------------------------------------------ constants
CONSTANTS = ("INFO", "PARAMS", "_LOSS", "_DTYPE", "_N_PARAMS", "_N_STATE", "_N_IN", "_N_OUT",
             "_BLOCKS", "_INITS", "_E_BASE", "_E_PER_K", "_K_FIXED", "_SEGMENTED", "_WHOLE",
             "_FLUSHES", "_BATCHED", "_OPTIMIZERS")


def constants(est) -> dict:
    """name -> Python source of each constant the driver reads (see export_driver)."""
    blocks = tuple((b.name, int(b.off), tuple(int(d) for d in b.shape), int(b.size))
                   for b in est.blocks)
    base, per_k, k_fixed = state_size(est)
    info = {"cell": est.cell.name, "estimator": est.name, "loss": est.loss_name,
            "dtype": est.dtype.name, "backend": est.backend.name, "n_in": int(est.n_in),
            "n_out": int(est.n_out), "n_state": int(est.n_state),
            "n_params": int(est.n_params), "rgraph": version('rgraph')}
    spec = est.spec
    out = {
        "INFO": repr(info),
        "PARAMS": repr({name: shape for name, _, shape, _ in blocks}),
        "_LOSS": repr(est.loss_name),
        "_DTYPE": f"np.dtype({est.dtype.name!r})",
        "_N_PARAMS": repr(int(est.n_params)),
        "_N_STATE": repr(int(est.n_state)),
        "_N_IN": repr(int(est.n_in)),
        "_N_OUT": repr(int(est.n_out)),
        "_BLOCKS": repr(blocks),
        "_INITS": "(\n" + "".join(f"    {r!r},\n" for r in init_specs(est)) + ")",
        "_E_BASE": repr(base),
        "_E_PER_K": repr(per_k),
        "_K_FIXED": repr(k_fixed),
        "_SEGMENTED": repr(bool(spec.segment)),
        "_WHOLE": repr(bool(spec.whole_sequence)),
        "_FLUSHES": repr(bool(spec.flushes)),
        "_BATCHED": repr("run_batch" in est.entry_points),
        "_OPTIMIZERS": repr(optimizer_layouts()),
    }
    assert tuple(out) == CONSTANTS, "driver_names() must list every constant"
    return out


def state_size(est):
    """(base, per_k, k_fixed): a stream's estimator state holds base + per_k * K numbers
    for the segment length K, which is k_fixed or, when that is None, the number of
    steps of a call. Measured through ``est.new_state`` and checked at several lengths."""
    spec = est.spec
    try:
        k_fixed = int(spec.segment_length(None))
    except (ValueError, TypeError):
        k_fixed = None

    def size(T):
        return int(est.new_state(1, T)[1].shape[1])
    probes = (1, 2, 7, 100)
    ks = [spec.segment_length(T) for T in probes]
    if k_fixed is None:
        if ks != list(probes):
            raise ExportError(f"{est.name}'s segment length is neither fixed nor "
                              f"the sequence length ({dict(zip(probes, ks))})")
        base, per_k = size(1) - (size(2) - size(1)), size(2) - size(1)
    else:
        if ks != [k_fixed] * len(probes):
            raise ExportError(f"{est.name}'s segment length varies: "
                              f"{dict(zip(probes, ks))}")
        base, per_k = size(1), 0
    for T in probes:
        K = T if k_fixed is None else k_fixed
        want_update = K if spec.segment else 1
        if size(T) != base + per_k * K or spec.update_every(T) != want_update:
            raise ExportError(f"{est.name}'s state size or update period is not "
                              f"the affine form the exported driver supports")
    return base, per_k, k_fixed


def init_specs(est):
    """((name, shape, scheme, scale, data), ...) of the parameters, in est.blocks order."""
    rows = []
    for b in est.blocks:
        init, scale = est.cell.nodes[b.node].value
        shape = tuple(int(d) for d in b.shape)
        if callable(init):
            rows.append((b.name, shape, "custom", float(scale), None))
        elif not isinstance(init, str):
            data = np.asarray(init, dtype="<f8").tobytes().hex()
            rows.append((b.name, shape, "array", float(scale), data))
        else:
            rows.append((b.name, shape, init, float(scale), None))
    return tuple(rows)


def optimizer_layouts() -> dict:
    """name -> (defaults, layout) of rgraph's optimizers: the layout names, for each
    entry of ``hyper()``, the field it holds, or the constant it is (found by giving
    every field a distinct value)."""
    from .training.optim import OPTIMIZERS
    out = {}
    for name, cls in OPTIMIZERS.items():
        fields = [f.name for f in dataclasses.fields(cls)]
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        marks = {f: 0.0101 * (i + 1) + 0.00037 for i, f in enumerate(fields)}
        hp = cls(**marks).hyper()
        by_value = {v: f for f, v in marks.items()}
        layout = tuple(by_value.get(float(v), float(v)) for v in hp)
        again = [defaults[e] if isinstance(e, str) else e for e in layout]
        if not np.array_equal(np.array(again, dtype=np.float64), cls().hyper()):
            raise ExportError(f"cannot read the layout of {cls.__name__}.hyper()")
        out[name] = (defaults, layout)
    return out
