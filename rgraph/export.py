"""Standalone export: one compiled estimator, with its training loop, as one Python file
that needs only numpy (and numba, for the numba backend), not rgraph
(``est.export(path)``, ``rgraph export``).

The file is the estimator's generated module (``est.source``, minus its "do not edit"
and content-hash header lines), then ``rgraph/runtime.py`` copied unchanged (the
parameter layout, data checks, init schemes and driver loop rgraph itself runs), then
a few lines that describe this estimator to the runtime (``INFO``, ``PARAMS``, its
``runtime.Model``) and offer ``init_params``, ``total_gradient``, ``loss`` and
``train``. Under numba the entry points are compiled as rgraph compiles them: by a
child process into numba's cache next to the file, then loaded from there (``LOADER``),
so that the first process runs the machine code every later one, and rgraph, runs.
"""
from __future__ import annotations

import ast
from importlib.metadata import version
import builtins
import dataclasses
import re
import symtable
from pathlib import Path

import numpy as np

from . import runtime
from .backends.numba_loader import CHILD
from .errors import RGraphError

API = ["init_params", "total_gradient", "loss", "train"]
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


def runtime_source() -> str:
    """``rgraph/runtime.py``, as the exported file carries it."""
    return Path(runtime.__file__).read_text(encoding="utf-8")


def reserved_names() -> set:
    """The module-level names the runtime and the export's own lines define (every
    generated module leaves them free, so that the export can append them to any cell's
    module); numpy and math are the exception: the runtime imports them as ``np`` and
    ``math``, which generated modules bind to the same modules unless a node takes the
    name (see ``module_text``)."""
    own = top_level_names(runtime_source()) | top_level_names(LOADER) | set(TAIL) | \
        set(API) | {"__all__"}
    return own - {"np", "math"}


def module_text(est, stem: str = "model") -> str:
    """The full text of the exported module of ``est`` (``stem``: its import name)."""
    body = generated_body(est.source)
    defined = top_level_names(body)
    entry = est.entry_points        # the entry points' names in this module
    missing = [n for n in entry.values() if n not in defined]
    if missing:
        raise ExportError(f"the generated module of {est.name} lacks {missing}")
    clash = sorted(reserved_names() & defined)
    if clash:
        raise ExportError(f"the generated module of {est.name} already defines {clash}")
    imported = imports_of(body)
    for name, mod in (("np", "numpy"), ("math", "math")):
        if name in defined and imported.get(name) != mod:
            raise ExportError(f"cell '{est.cell.name}' has a node named {name!r}, which the "
                              f"exported module's runtime needs for {mod}; rename the node "
                              f"to export it")
    rt = runtime_source()
    tail = tail_text(est, entry)
    free = free_names(tail) - reserved_names() - set(entry.values()) - \
        {"np", "math", "__file__"} - set(dir(builtins))
    if free:
        raise ExportError(f"the export's own lines use undefined names {sorted(free)}")
    parts = [docstring(est, stem),
             (f"# Exported by rgraph {version('rgraph')}: the generated module of {est.name}, "
              f"then rgraph's runtime, then this estimator's description."),
             "# Standalone: imports only math, numpy" +
             (" and numba (with llvmlite, which numba installs)" if est.backend.jit
              else "") + "."]
    parts += [body.rstrip("\n"), "", "",
              "# " + "-" * 30 + " rgraph's runtime (rgraph/runtime.py, unchanged)",
              rt.rstrip("\n"), "", "",
              "# " + "-" * 30 + f" {est.name} on cell '{est.cell.name}'",
              tail, ""]
    text = "\n".join(parts)
    compile(text, f"{stem}.py", "exec")      # a template or header change fails here
    return text


def imports_of(source: str) -> dict:
    """name -> module of a module's top-level ``import m [as name]`` statements."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name
    return out


# --------------------------------------------------------- the export's own lines
TAIL = ("INFO", "PARAMS", "_INITS", "_OPTIMIZERS", "_ENTRY", "_invoke", "_MODEL")

# the child that compiles is rgraph's own (the same requests, the same caching)
LOADER = '\n_CHILD = r"""' + CHILD + '"""\n' + '''_LOADED = []


def _invoke(fn, *args):
    """Call the entry point ``fn`` (its role: run, run_batch, evaluate, flush_all) of
    the module above, compiled as rgraph compiles it: on the first call a child process
    compiles the entry points into numba's cache (next to this file, in __pycache__)
    and this process loads them from there, like every later process. Code compiled in
    the process that calls it was seen to round differently in the last bits."""
    f = _ENTRY[fn]
    if not _LOADED:
        _load(_MODEL.example_calls(fn))
        _LOADED.append(True)
    if tuple(f.typeof_pyval(a) for a in args) not in f.overloads:
        _load([(fn, args)])
    return f(*args)


def _load(calls):
    """Compile (fn, example arguments) pairs in a child process, then load them."""
    import pickle
    import subprocess
    import sys
    import warnings
    reqs = [(_ENTRY[fn], tuple(_ENTRY[fn].typeof_pyval(a) for a in args))
            for fn, args in calls]
    todo = [(f, sig) for f, sig in reqs if sig not in f.overloads]
    if not todo:
        return
    done = subprocess.run([sys.executable, "-c", _CHILD, __file__, __name__],
                          input=pickle.dumps([(f.__name__, sig) for f, sig in todo]),
                          capture_output=True, check=False)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()[-20:]
        raise RuntimeError(f"numba could not compile {__file__} in a child process:\\n"
                           + "\\n".join(err))
    for f, sig in todo:
        f.compile(sig)
        if not f.stats.cache_hits.get(sig):
            warnings.warn(f"{__file__}: numba did not load {f.__name__} from its cache "
                          f"(compiled it here instead): results may differ from rgraph's "
                          f"in the last bits", stacklevel=3)
'''

DIRECT = '''

def _invoke(fn, *args):
    """Call the entry point ``fn`` (its role: run, run_batch, evaluate, flush_all) of
    the module above."""
    return _ENTRY[fn](*args)
'''

API_TEXT = '''

def init_params(seed=0):
    """Fresh parameters {name: float64 array} from each parameter's init scheme; the
    same seed gives the same numbers as rgraph's ``Estimator.init_params(seed)``."""
    return draw_params(_INITS, seed)


def total_gradient(params, xs, ys, seed=0, weights=None, resets=None, return_loss=False):
    """The sum over a sequence of the estimator's per-step gradient estimates at fixed
    parameters, states starting at zero (loss: the sum of the per-step losses).

    params: {name: array} (see PARAMS); xs: (T, n_in); ys: (T,) class ids for
    softmax_xent, (T, n_out) targets for mse; weights: (T,) loss weights >= 0; resets:
    (T,) booleans, zero the state before that step; seed: the estimator's noise
    (``np.random.default_rng(seed)``). Returns {name: array} (and the summed loss with
    return_loss=True)."""
    return _MODEL.total_gradient(params, xs, ys, seed, weights, resets, return_loss)


def loss(params, xs, ys, weights=None, resets=None):
    """Mean per-step loss of a forward pass from zero state (no learning)."""
    return _MODEL.loss(params, xs, ys, weights, resets)


def train(params, xs, ys, optimizer="sgd", batch=1, seed=0, weights=None, resets=None,
          reset_prob=0.0, chunk=None, state=None, **options):
    """Online training on a sequence; returns (new params, per-step losses).

    Every step advances the cell, forms the gradient estimate and (every step, or at
    each segment's end for truncated BPTT) updates the parameters with the batch mean.
    optimizer: "sgd" (lr=0.01, decay, clip, weight_decay) or "adam" (lr=0.001, beta1,
    beta2, eps, decay, clip, weight_decay), options as keywords; the learning rate at
    update k is lr / (1 + decay * sqrt(k)), clip > 0 caps the gradient's norm.
    xs: (T, n_in), split into ``batch`` contiguous streams of T // batch steps, or
    (T, batch, n_in); ys, weights, resets likewise (see total_gradient). seed: the
    estimator's noise; reset_prob: zero a stream's state with this probability per
    step. chunk: steps per compiled call (default 1000; for exact BPTT the whole
    stream). losses[t]: the weighted mean loss of step t over the streams.
    state: a dict, empty at first, that keeps the run (optimizer moments, cell and
    estimator states, random generators, step count) between calls: calling again with
    the returned params and the same dict continues the run as if it had not stopped."""
    return train_model(_MODEL, _OPTIMIZERS, params, xs, ys, optimizer, batch, seed,
                       weights, resets, reset_prob, chunk, state, **options)
'''


def tail_text(est, entry: dict) -> str:
    """The export's own lines: this estimator's constants and model, the way into the
    compiled entry points, and the functions the module offers."""
    m = est.model
    info = {"cell": est.cell.name, "estimator": est.name, "loss": est.loss_name,
            "dtype": est.dtype.name, "backend": est.backend.name, "n_in": int(est.n_in),
            "n_out": int(est.n_out), "n_state": int(est.n_state),
            "n_params": int(est.n_params), "rgraph": version('rgraph')}
    lines = [f"INFO = {info!r}",
             f"PARAMS = {dict((name, shape) for name, _, shape, _ in m.blocks)!r}",
             "_INITS = (\n" + "".join(f"    {r!r},\n" for r in init_specs(est)) + ")",
             f"_OPTIMIZERS = {optimizer_layouts()!r}",
             "_ENTRY = {" + ", ".join(f"{role!r}: {name}" for role, name in entry.items())
             + "}"]
    lines.append((LOADER if est.backend.jit else DIRECT).rstrip("\n"))
    lines += ["", "",
              f"_MODEL = Model(_invoke, cell={m.cell!r}, loss={m.loss_name!r}, "
              f"dtype={m.dtype.name!r},",
              f"               n_in={m.n_in}, n_out={m.n_out}, n_state={m.n_state},",
              f"               blocks={m.blocks!r},",
              f"               state={m.state!r}, segmented={m.segmented}, "
              f"whole={m.whole}, flushes={m.flushes}, batched={m.batched},",
              f"               opt_size={m.opt_size})",
              API_TEXT.rstrip("\n"), "", "",
              f"__all__ = {API + ['PARAMS', 'INFO']!r}"]
    return "\n".join(lines)


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
        run = ("The first call compiles in a child process into numba's cache next to "
               "this file;\nevery process loads the code from there. One BLAS thread "
               "(OPENBLAS_NUM_THREADS=1) is\nfastest.")
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


def init_specs(est):
    """((name, shape, scheme, scale, data), ...) of the parameters, in est.blocks order
    (data: an array's bytes in hex, a scheme's options as a dict, else None)."""
    rows = []
    for b in est.blocks:
        init, scale, options = est.cell.nodes[b.node].value
        shape = tuple(int(d) for d in b.shape)
        if callable(init):
            rows.append((b.name, shape, "custom", float(scale), None))
        elif not isinstance(init, str):
            data = np.asarray(init, dtype="<f8").tobytes().hex()
            rows.append((b.name, shape, "array", float(scale), data))
        else:
            rows.append((b.name, shape, init, float(scale), dict(options) or None))
    return tuple(rows)


def optimizer_layouts() -> dict:
    """name -> (defaults, layout, bounds) of rgraph's optimizers: the layout names, for
    each entry of ``hyper()``, the field it holds, or the constant it is (found by giving
    every field a distinct value); bounds: each field's interval."""
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
        out[name] = (defaults, layout, dict(cls.bounds))
    return out
