"""Cells from JAX functions, and JAX functions from cells: ``rg.from_jax``, ``rg.to_jax``.

A JAX user's recurrent cell is a function ``step(params, state, x) -> (new_state,
logits)``. ``from_jax`` traces it with ``jax.make_jaxpr`` and translates the jaxpr, one
equation at a time, into the DSL of ``rgraph.graph``: ``dot_general`` becomes a matmul,
elementwise primitives become elementwise nodes (their derivatives are then derived by
sympy, as for any DSL cell), ``concatenate`` / ``split`` / ``slice`` the structural ops,
and constants captured by the trace ``const`` nodes. Equations whose operands are all
constants are evaluated by JAX itself and become constants. A single-output ``jit``
whose body is elementwise (``jax.nn.relu``, ``jax.nn.softplus``, a user's jitted gate
function) becomes one ``pointwise`` node labelled with the function's name;
``stop_gradient`` becomes ``rg.stop_gradient``. A ``custom_jvp`` named
``spike_<surrogate>`` that is the Heaviside step with that surrogate as its derivative
becomes ``rg.spike``; any other ``jit``, and ``custom_jvp`` / ``custom_vjp`` calls, are
read by their primal (rgraph differentiates the primal; the custom derivative rule is
dropped, with a warning where the primal has derivative 0 in an operand).

Node names: an equation under ``jax.named_scope(name)`` that gives the scope's one
result is named ``name``; otherwise, where the equation's source line assigns its
result to a variable (``c_new = f * c + i * g``, ``i, f, g, o = jnp.split(z, 4)``),
the node takes the variable's name. Other nodes keep rgraph's automatic names.

A matrix the step uses as ``x @ W`` (vector times matrix) becomes a parameter of the
transposed shape (rgraph's products are matrix times vector); ``jax_params`` and
``jax_grads`` convert between the user's dicts and the cell's.

``to_jax(cell)`` goes the other way, for any cell: a pure ``step(params, state, x)`` in
``jax.numpy``. It puts every node under ``jax.named_scope(<node name>)`` and a composite
elementwise node into a ``jax.jit`` named after its label, ``rg.stop_gradient`` is
``jax.lax.stop_gradient`` and ``rg.spike`` a ``jax.custom_jvp`` named after the
surrogate's registry entry (``spike_triangle``: the step, with the surrogate as its
jvp), so ``from_jax`` of its result rebuilds the cell with the same names.

JAX is an optional extra (``pip install -e '.[jax]'``); it is imported only when these
functions run.
"""
from __future__ import annotations

import ast
import functools
import inspect
import keyword
import linecache
import warnings
from dataclasses import dataclass

import numpy as np
import sympy as sp

from . import graph, ops, scalars
from .errors import GraphError, NameError_, ShapeError
from .graph import Cell, Value

EXTRA = "pip install -e '.[jax]'"
ARG = ops.ARG
# the placeholders of expressions under construction: _S[k] is operand k
_S = sp.symbols("s0:64", real=True)

# JAX primitive -> the registered scalar function it is (rgraph's name)
_FUNCTIONS = {"tanh": "tanh", "logistic": "sigmoid", "exp": "exp", "log": "log",
              "abs": "absolute", "sign": "sign", "sin": "sin", "cos": "cos",
              "log1p": "log1p"}
_ARITHMETIC = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
               "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
               "neg": lambda a: -a}
_COMPARE = ("gt", "lt", "ge", "le", "eq", "ne")
_ELEMENTWISE = (*_ARITHMETIC, "integer_pow", "pow", "max", "min", "select_n", *_COMPARE)
_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr")
_CUSTOM = ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr")
SUPPORTED = ("dot_general", "add", "sub", "mul", "div", "neg", "integer_pow", "pow",
             "tanh", "logistic", "exp", "log", "log1p", "max", "min", "abs", "sign", "sin",
             "cos", "concatenate", "split", "slice", "squeeze", "reshape", "expand_dims",
             "broadcast_in_dim", "transpose", "convert_element_type", "stop_gradient",
             "select_n", *_COMPARE, "jit", "custom_jvp_call", "custom_vjp_call")


def _import_jax():
    """jax, or an ImportError naming rgraph's extra."""
    try:
        import jax
        import jax.numpy  # noqa: F401
    except ImportError as e:
        raise ImportError(f"rg.from_jax and rg.to_jax need JAX, an optional extra of "
                          f"rgraph: {EXTRA} (or pip install 'jax[cpu]')") from e
    return jax


# ------------------------------------------------------------------ values of the trace
# While a jaxpr is translated, each of its variables stands for one of these (or for an
# rgraph Value: a vector node, or a 2-D parameter / constant node).


@dataclass(frozen=True)
class Const:
    """A constant the trace computed (a captured array, a literal, a folded equation);
    ``name`` is the name its equation carried, for the node it becomes."""

    value: np.ndarray
    name: str | None = None


@dataclass(frozen=True)
class Bcast:
    """A length-1 value broadcast to length n (JAX broadcasts explicitly; rgraph's
    elementwise ops broadcast length 1 implicitly)."""

    value: Value
    n: int


@dataclass(frozen=True)
class Transposed:
    """The transpose of a 2-D parameter or constant node; only a product reads it."""

    value: Value


@dataclass(frozen=True)
class Sym:
    """An elementwise expression not yet a node: ``expr`` over ``_S[:len(args)]``, the
    placeholders of ``args`` (Values, or python floats kept for the node's listing)."""

    expr: sp.Expr
    args: tuple
    label: str = "where"


class _Retry(Exception):
    """A parameter turned out to be used as ``x @ W``: translate again with it
    transposed."""

    def __init__(self, name):
        self.name = name


class _NotElementwise(Exception):
    """A jit body that is not one elementwise function (it is inlined instead)."""


def _where(eqn) -> str:
    """The user's source line of an equation, as JAX summarizes it ("" if unknown)."""
    try:
        from jax._src import source_info_util
        return source_info_util.summarize(eqn.source_info)
    except Exception:           # a JAX without this helper: say nothing rather than fail
        return ""


def _number(v) -> sp.Expr:
    f = float(v)
    return sp.Integer(int(f)) if f.is_integer() else sp.Float(f)


# --------------------------------------------------------------------------- naming
class _Names:
    """The names the user's code gives equations: its ``jax.named_scope``\\ s, and the
    variables its source lines assign."""

    def __init__(self):
        self._files: dict[str, dict] = {}

    def scope(self, eqns, live_out) -> dict:
        """eqn index -> scope name, for the one equation of each scope whose result is
        used outside it (or leaves the jaxpr: ``live_out``)."""
        stacks = [str(e.source_info.name_stack) for e in eqns]
        used_from = {}
        for k, e in enumerate(eqns):
            for v in e.invars:
                used_from.setdefault(id(v), set()).add(stacks[k])
        groups: dict[str, list] = {}
        for k, e in enumerate(eqns):
            if not stacks[k]:
                continue
            escapes = any(id(v) in live_out or used_from.get(id(v), set()) - {stacks[k]}
                          for v in e.outvars)
            if escapes:
                groups.setdefault(stacks[k], []).append(k)
        out = {}
        for stack, ks in groups.items():
            if len(ks) == 1 and len(eqns[ks[0]].outvars) == 1:
                out[ks[0]] = stack.rsplit("/", 1)[-1]
        return out

    def assigned(self, eqn) -> list | None:
        """The variable names the equation's source line assigns its outputs to, if the
        equation computes the whole right-hand side of that assignment."""
        try:
            from jax._src import source_info_util
            fr = source_info_util.user_frame(eqn.source_info.traceback)
        except Exception:
            return None
        if fr is None:
            return None
        table = self._assignments(fr.file_name)
        return table.get((fr.start_line, fr.start_column, fr.end_line, fr.end_column))

    def _assignments(self, filename) -> dict:
        if filename not in self._files:
            table = {}
            try:
                tree = ast.parse("".join(linecache.getlines(filename)))
            except (SyntaxError, ValueError):
                tree = None
            for node in ast.walk(tree) if tree is not None else ():
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target, value = node.targets[0], node.value
                elif isinstance(node, ast.AnnAssign) and node.value is not None:
                    target, value = node.target, node.value
                else:
                    continue
                if isinstance(target, ast.Name):
                    names = [target.id]
                elif isinstance(target, (ast.Tuple, ast.List)) and all(
                        isinstance(t, ast.Name) for t in target.elts):
                    names = [t.id for t in target.elts]
                else:
                    continue
                table[(value.lineno, value.col_offset, value.end_lineno,
                       value.end_col_offset)] = names
            self._files[filename] = table
        return self._files[filename]


def _name(value, name):
    """Name a node if the name is free (or held by an automatic name); else leave it."""
    if not isinstance(value, Value) or value.node.kind != "op" or not name:
        return
    if not name.isidentifier() or keyword.iskeyword(name) or name == "_" \
            or value.node.name == name:
        return
    try:
        value.named(name)
    except NameError_:
        pass


# ------------------------------------------------------------------------ from_jax
def from_jax(step, params, state, x, *, name: str | None = None) -> Cell:
    """The rgraph cell of a JAX step function ``step(params, state, x) -> (new_state,
    logits)``.

    ``params``: a dict name -> array (the cell's parameters, with these names, shapes and,
    as their init, these values); ``state``: a dict name -> 1-D array, or one array (the
    state ``h``); ``x``: an example input (1-D). ``step`` returns ``new_state`` with the
    structure of ``state`` and ``logits``, a 1-D array (the output ``logits``) or a dict
    of named outputs. ``name``: the cell's name (default: the function's).

    Supported primitives: ``dot_general`` (matrix-vector, vector-matrix), ``add``,
    ``sub``, ``mul``, ``div``, ``neg``, ``integer_pow``, ``pow`` by a constant, ``tanh``,
    ``logistic``, ``exp``, ``log``, ``log1p``, ``max``, ``min``, ``abs``, ``sign``,
    ``sin``, ``cos``, any primitive named like a registered scalar function
    (``rg.scalar_function``), comparisons with ``select_n``, ``concatenate``, ``split``,
    ``slice``, ``squeeze`` / ``reshape`` / ``expand_dims`` / ``broadcast_in_dim`` where
    they relabel a vector or broadcast a scalar, ``transpose`` of a parameter matrix,
    ``convert_element_type``, ``stop_gradient`` (``rg.stop_gradient``), ``jit``,
    ``custom_jvp_call`` and ``custom_vjp_call``, and constants. Anything else is a
    ``GraphError`` naming the primitive and the source line.

    Custom derivatives: a ``jax.custom_jvp`` function named ``spike_<surrogate>``
    (``spike_triangle``, ``spike_fast_sigmoid``, ``spike_arctan``, or one registered with
    ``rg.register_surrogate``) of ``(x, dampening, *shape)``, the options constants,
    whose primal is the Heaviside step (1 where x > 0, else 0) and whose jvp in x is that
    surrogate's derivative (checked at 97 points of [-3, 3]) becomes
    ``rg.spike(x, surrogate, dampening, **shape)``: ``to_jax`` writes spikes so, and a
    hand-written spiking cell named so keeps its surrogate. Every other ``custom_jvp`` /
    ``custom_vjp`` is read by its primal: rgraph differentiates the primal and **drops the
    custom derivative**. Where that primal has derivative 0 in an operand it depends on
    (a Heaviside, a sign: the custom rule was then what carried the gradient),
    ``from_jax`` warns, once per call, naming the functions and their lines.
    """
    jax = _import_jax()
    if not callable(step):
        raise GraphError(f"from_jax: step must be a function step(params, state, x), got "
                         f"{type(step).__name__}")
    params = _check_params(params)
    state, single = _check_state(state)
    x = _check_vector(x, "x", "the example input x")
    if name is None:
        name = getattr(step, "__name__", "")
        name = name if name.isidentifier() and not keyword.iskeyword(name) else "cell"
    graph.check_name(name, "cell")
    with jax.enable_x64(True):
        args = ({k: np.asarray(v, np.float64) for k, v in params.items()},
                state["h"] if single else dict(state), x)
        try:
            closed, out_shape = jax.make_jaxpr(step, return_shape=True)(*args)
        except GraphError:
            raise
        except Exception as e:
            raise GraphError(f"from_jax: tracing {name} with jax.make_jaxpr failed "
                             f"({type(e).__name__}: {e}); step must be a function of "
                             f"(params, state, x) that JAX can trace") from e
        transposed: set = set()
        while True:
            try:
                t = _Translator(jax, closed, out_shape, params, state, single, x, name,
                                transposed)
            except _Retry as r:
                if r.name in transposed:    # pragma: no cover - guarded in _matmul
                    raise GraphError(f"from_jax: parameter '{r.name}' is used both as "
                                     f"W @ x and x @ W") from None
                transposed.add(r.name)
                continue
            if t.dropped:
                warnings.warn(
                    f"from_jax: {'; '.join(dict.fromkeys(t.dropped))}: a custom_jvp / "
                    f"custom_vjp function whose primal has derivative 0 in an operand (a "
                    f"step, such as a spike's Heaviside); rgraph differentiates the primal, "
                    f"so its custom derivative is dropped and no gradient passes there. For "
                    f"a spike with a surrogate derivative, name the custom_jvp "
                    f"spike_<surrogate> with arguments (x, dampening, *shape), as rg.to_jax "
                    f"writes it ({', '.join('spike_' + k for k in scalars.SURROGATES)}), "
                    f"and it is read as rg.spike", UserWarning, stacklevel=2)
            return t.cell


def _check_params(params) -> dict:
    if not isinstance(params, dict):
        raise GraphError(f"from_jax: params must be a dict name -> array, got "
                         f"{type(params).__name__}")
    out = {}
    for k, v in params.items():
        graph.check_name(k, "param")
        a = np.asarray(v)
        if not np.issubdtype(a.dtype, np.floating) or a.ndim > 2 or a.size == 0:
            raise ShapeError(f"from_jax: param '{k}' has dtype {a.dtype} and shape "
                             f"{a.shape}; a parameter is a non-empty float scalar, vector "
                             f"or matrix")
        out[k] = a
    return out


def _check_vector(a, key, what) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.floating):
        raise ShapeError(f"from_jax: {what} has shape {a.shape} and dtype {a.dtype}; "
                         f"expected a non-empty 1-D float array")
    return a.astype(np.float64)


def _check_state(state):
    if isinstance(state, dict):
        if not state:
            raise GraphError("from_jax: state is an empty dict; a cell has at least one "
                             "state")
        out = {}
        for k, v in state.items():
            graph.check_name(k, "state")
            out[k] = _check_vector(v, k, f"state '{k}'")
        return out, False
    return {"h": _check_vector(state, "h", "the state")}, True


def _path_key(path) -> str:
    keys = [getattr(p, "key", getattr(p, "idx", None)) for p in path]
    return "/".join(str(k) for k in keys)


class _Translator:
    """One translation of a closed jaxpr into a new cell."""

    def __init__(self, jax, closed, out_shape, params, state, single, x, name, transposed):
        self.jax = jax
        from jax.extend.core import Literal
        self.literal = Literal
        self.names = _Names()
        self.calls = []             # the call equations being inlined, outermost first
        self.transposed = transposed
        self.const_nodes: dict[int, Value] = {}
        self.dropped: list[str] = []    # custom derivatives of step-like primals
        self.dry = False                # True while a check reads a call's body
        c = self.cell = Cell(name)
        leaves = {"x": c.input("x", x.shape[0])}
        svals = {k: c.state(k, v.shape[0]) for k, v in state.items()}
        pvals = {}
        for k, v in params.items():
            if v.ndim == 2 and k in transposed:
                pvals[k] = c.param(k, v.shape[::-1], init=v.T.copy())
            else:
                shape = v.shape if v.ndim else (1,)
                pvals[k] = c.param(k, shape, init=v.reshape(shape).astype(np.float64))
        self.params, self.param_names = pvals, {id(v): k for k, v in pvals.items()}
        # the jaxpr's inputs, in JAX's flattening order of (params, state, x)
        flat, _ = jax.tree_util.tree_flatten_with_path(
            (params, state["h"] if single else state, x))
        env = {}
        for (path, _), var in zip(flat, closed.jaxpr.invars, strict=True):
            top, key = path[0].idx, _path_key(path[1:])
            env[var] = pvals[key] if top == 0 else \
                (svals["h"] if single else svals[key]) if top == 1 else leaves["x"]
        for var, val in zip(closed.jaxpr.constvars, closed.consts, strict=True):
            env[var] = Const(np.asarray(val))
        outs = self.run(closed.jaxpr, env, set(map(id, closed.jaxpr.outvars)))
        if not isinstance(out_shape, (tuple, list)) or len(out_shape) != 2:
            raise GraphError(f"from_jax: step must return (new_state, logits), got "
                             f"{jax.tree_util.tree_structure(out_shape)}")
        parts = [jax.tree_util.tree_flatten_with_path(o)[0] for o in out_shape]
        n_state = len(parts[0])
        news = {("h" if single else _path_key(path)): (val, shp)
                for (path, shp), val in zip(parts[0], outs[:n_state], strict=True)}
        if set(news) != set(state) or (single and n_state != 1):
            raise GraphError(f"from_jax: step returned new states {sorted(news)}, but the "
                             f"state has {sorted(state)}; return the new state with the "
                             f"state's structure")
        for k in state:
            val, shp = news[k]
            if tuple(shp.shape) != state[k].shape:
                raise ShapeError(f"from_jax: the new value of state '{k}' has shape "
                                 f"{tuple(shp.shape)}, the state {state[k].shape}")
            c.update(svals[k], self.vector(val, f"the new value of state '{k}'",
                                           state[k].shape[0]))
        if not parts[1]:
            raise GraphError("from_jax: step returned no logits; return (new_state, logits)")
        for (path, shp), val in zip(parts[1], outs[n_state:], strict=True):
            k = _path_key(path) or "logits"
            if len(shp.shape) != 1:
                raise ShapeError(f"from_jax: output '{k}' has shape {tuple(shp.shape)}; "
                                 f"outputs are 1-D arrays")
            c.output(graph.check_name(k, "output"),
                     self.vector(val, f"output '{k}'", shp.shape[0]))
        c.validate()

    def refuse(self, eqn, what: str):
        """A GraphError naming the primitive and the user's line (that of the nearest
        enclosing call where the equation, inside a jnp function, has none)."""
        where = next((w for w in map(_where, (eqn, *reversed(self.calls))) if w),
                     "an unknown line")
        raise GraphError(f"from_jax: {what} (primitive '{eqn.primitive.name}' at {where})")

    # -- values
    def vector(self, val, what, n=None) -> Value:
        """A node for a vector value (constants and broadcasts are made nodes)."""
        if isinstance(val, Value) and len(val.shape) == 1:
            if n is not None and val.shape[0] != n:
                val = Bcast(val, n)
            else:
                return val
        if isinstance(val, Bcast):
            return val.value * graph.const(np.ones(val.n))
        if isinstance(val, Sym):
            return self.node(val)
        if isinstance(val, Const):
            raise GraphError(f"from_jax: {what} is a constant ({np.ravel(val.value)[:4]}"
                             f"...); it must depend on the state, the input or the "
                             f"parameters")
        raise GraphError(f"from_jax: {what} is a matrix; it must be a vector")

    def const(self, c: Const) -> Value:
        """The const node of a constant (one per constant)."""
        if self.dry:                # a check reading a call: it adds no node
            raise _NotElementwise
        key = id(c)
        if key not in self.const_nodes:
            value = np.asarray(c.value, np.float64)
            value = value.reshape(1) if value.ndim == 0 else value
            nm = c.name if c.name and c.name not in self.cell._names else None
            self.const_nodes[key] = self.cell.const(value, name=nm)
        return self.const_nodes[key]

    def node(self, s: Sym, label=None) -> Value:
        """An elementwise node from an expression of its operands."""
        expr, args = s.expr, s.args
        return graph.pointwise(lambda *a: expr.xreplace(dict(zip(_S, a))), *args,
                               name=label or s.label)

    # -- the jaxpr
    def run(self, jaxpr, env, live_out) -> list:
        """Translate the equations of a jaxpr (its inputs bound in env); its outputs."""
        live = _live(jaxpr)
        scoped = self.names.scope(jaxpr.eqns, live_out)
        spans = {}
        for k, eqn in enumerate(jaxpr.eqns):
            if any(id(v) in live for v in eqn.outvars):
                spans[_span(eqn)] = k      # the last live equation of each source span
        for k, eqn in enumerate(jaxpr.eqns):
            if not any(id(v) in live for v in eqn.outvars):
                continue
            outs = self.eqn(eqn, [self.read(env, v) for v in eqn.invars])
            names = [scoped[k]] if k in scoped else \
                self.names.assigned(eqn) if spans.get(_span(eqn)) == k else None
            if names is not None and len(names) == len(outs):
                outs = [Const(o.value, nm) if isinstance(o, Const) else o
                        for o, nm in zip(outs, names, strict=True)]
                for o, nm in zip(outs, names, strict=True):
                    _name(o, nm)
            for v, val in zip(eqn.outvars, outs, strict=True):
                env[v] = val
        return [self.read(env, v) for v in jaxpr.outvars]

    def read(self, env, v):
        if isinstance(v, self.literal):
            return Const(np.asarray(v.val))
        return env[v]

    def eqn(self, eqn, ins) -> list:
        p = eqn.primitive.name
        if p in _CALLS:
            return self.call(eqn, ins)
        if all(isinstance(a, Const) for a in ins):
            return self.fold(eqn, ins)
        if p == "dot_general":
            return [self.matmul(eqn, *ins)]
        if p == "concatenate":
            if eqn.params["dimension"] != 0 or any(len(v.aval.shape) != 1
                                                   for v in eqn.invars):
                self.refuse(eqn, "only vectors can be concatenated")
            vals = [self.const(a) if isinstance(a, Const) else
                    self.vector(a, "an operand of concatenate") for a in ins]
            return [graph.concat(*vals)]
        if p in ("split", "slice"):
            return self.slices(eqn, ins[0])
        if p in ("squeeze", "reshape", "expand_dims", "broadcast_in_dim",
                 "convert_element_type", "transpose"):
            return [self.relabel(eqn, ins[0])]
        if p == "stop_gradient":
            return [graph.stop_gradient(self.vector(ins[0], "the operand of stop_gradient"))]
        if p not in _ELEMENTWISE and self.function(p) is None:
            self.refuse(eqn, _unsupported(p))
        return [self.elementwise(eqn, ins)]

    def fold(self, eqn, ins) -> list:
        """An equation of constants: JAX evaluates it."""
        vals = [a.value for a in ins]
        try:
            out = eqn.primitive.bind(*vals, **eqn.params)
        except Exception as e:
            self.refuse(eqn, f"evaluating this equation of constants failed ({e})")
        out = out if eqn.primitive.multiple_results else [out]
        return [Const(np.asarray(o)) for o in out]

    def call(self, eqn, ins) -> list:
        """A nested jaxpr: one elementwise node if it is a jit of one elementwise
        function, else its equations inlined (a custom derivative: its primal)."""
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr",
                                                         eqn.params.get("fun_jaxpr")))
        if inner is None:
            self.refuse(eqn, "this call has no jaxpr to read")
        jaxpr = getattr(inner, "jaxpr", inner)
        consts = getattr(inner, "consts", ())
        p = eqn.primitive.name
        if p in ("jit", "pjit") and not all(isinstance(a, Const) for a in ins):
            fused = self.fuse(eqn, jaxpr, consts, ins)
            if fused is not None:
                return [fused]
        if p in _CUSTOM and not all(isinstance(a, Const) for a in ins):
            spike = self.spike(eqn, jaxpr, consts, ins)
            if spike is not None:
                sur, options = spike
                return [graph.spike(self.vector(ins[0], "the operand of a spike"),
                                    surrogate=sur.name, **options)]
            self.check_custom(eqn, jaxpr, consts, ins)
        env = dict(zip(jaxpr.constvars, (Const(np.asarray(c)) for c in consts),
                       strict=True))
        env.update(zip(jaxpr.invars, ins, strict=True))
        self.calls.append(eqn)
        try:
            return self.run(jaxpr, env, set(map(id, jaxpr.outvars)))
        finally:
            self.calls.pop()

    def fuse(self, eqn, jaxpr, consts, ins):
        """A jit whose body is one elementwise function of vectors of one length (and
        scalars) as one pointwise node labelled with the jit's name, or None."""
        if len(jaxpr.outvars) != 1:
            return None
        out = jaxpr.outvars[0].aval
        if len(out.shape) > 1 or not np.issubdtype(out.dtype, np.floating):
            return None
        label = str(eqn.params.get("name", "")).lstrip("_")
        if not label.isidentifier() or keyword.iskeyword(label):
            return None
        env = {}
        for v, a in zip(jaxpr.invars, ins, strict=True):
            if isinstance(a, Bcast):
                a = a.value
            if isinstance(a, Const):
                env[v] = a
            elif isinstance(a, Sym):
                env[v] = a
            elif isinstance(a, Value) and len(a.shape) == 1:
                env[v] = Sym(_S[0], (a,))
            else:
                return None
        for v, c in zip(jaxpr.constvars, consts, strict=True):
            env[v] = Const(np.asarray(c))
        try:
            sym = self.symbolic(jaxpr, env)
        except _NotElementwise:
            return None
        if isinstance(sym, Const):
            return None
        if len(sym.args) > len(ARG):
            return None
        val = self.node(sym, label)
        n = out.shape[0] if out.shape else 1
        return Bcast(val, n) if val.shape[0] != n else val

    def symbolic(self, jaxpr, env):
        """The body of a jit as one expression (Sym), or _NotElementwise."""
        for eqn in jaxpr.eqns:
            p = eqn.primitive.name
            ins = [self.read(env, v) for v in eqn.invars]
            if p in _CALLS:
                inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
                if inner is None:
                    raise _NotElementwise
                sub = getattr(inner, "jaxpr", inner)
                spike = self.spike(eqn, sub, getattr(inner, "consts", ()), ins) \
                    if p in _CUSTOM and isinstance(ins[0], Sym) else None
                if spike is not None:
                    sur, options = spike
                    x = ins[0]
                    env[eqn.outvars[0]] = Sym(graph.spike(x.expr, surrogate=sur.name,
                                                          **options), x.args)
                    continue
                e2 = dict(zip(sub.constvars, (Const(np.asarray(c)) for c in
                                              getattr(inner, "consts", ())), strict=True))
                e2.update(zip(sub.invars, ins, strict=True))
                if len(sub.outvars) != 1:
                    raise _NotElementwise
                outs = [self.symbolic(sub, e2)]
            elif all(isinstance(a, Const) for a in ins):
                outs = self.fold(eqn, ins)
            elif p in ("convert_element_type", "broadcast_in_dim", "squeeze", "reshape",
                       "expand_dims"):
                a = ins[0]
                if any(len(v.aval.shape) > 1 for v in (*eqn.invars, *eqn.outvars)):
                    raise _NotElementwise
                if p == "convert_element_type" and not (
                        np.issubdtype(eqn.outvars[0].aval.dtype, np.floating)
                        or eqn.outvars[0].aval.dtype == np.bool_):
                    raise _NotElementwise
                outs = [a]
            elif p in _COMPARE or p in ("select_n", "max", "min", "integer_pow", "pow") \
                    or p in _ARITHMETIC or self.function(p) is not None:
                if any(len(v.aval.shape) > 1 for v in eqn.invars):
                    raise _NotElementwise
                try:
                    outs = [self.expression(eqn, ins, fold=True)]
                except GraphError:
                    raise _NotElementwise from None
            else:
                raise _NotElementwise
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
        return self.read(env, jaxpr.outvars[0])

    # -- custom derivatives
    def spike(self, eqn, jaxpr, consts, ins):
        """(surrogate, options) where a ``custom_jvp`` call is ``rg.spike`` as ``to_jax``
        writes it, else None: a function named ``spike_<surrogate>`` of (x, dampening,
        *shape) with constant positive options, whose primal is the Heaviside step
        (1 where x > 0, else 0) and whose jvp is that surrogate's derivative (checked
        at 97 points of [-3, 3])."""
        if eqn.primitive.name != "custom_jvp_call" or eqn.params.get("num_consts", 0) \
                or len(consts) or len(jaxpr.outvars) != 1:
            return None
        name = _func_name(jaxpr)
        if not name.startswith("spike_"):
            return None
        sur = scalars.SURROGATES.get(name[len("spike_"):])
        if sur is None or len(ins) != 2 + len(sur.params) or isinstance(ins[0], Const):
            return None
        if not all(isinstance(a, Const) and np.size(a.value) == 1 for a in ins[1:]):
            return None
        vals = [float(np.reshape(a.value, ())) for a in ins[1:]]
        if not all(np.isfinite(v) and v > 0 for v in vals):
            return None
        env = {jaxpr.invars[0]: Sym(_S[0], ("x",))}
        env.update(zip(jaxpr.invars[1:], ins[1:], strict=True))
        primal = self.read_only(jaxpr, env)
        if not isinstance(primal, Sym) or primal.expr != scalars.step(_S[0]) \
                or not _jvp_is(self.jax, eqn, sur, vals):
            return None
        return sur, dict(zip(("dampening", *sur.params), vals, strict=True))

    def read_only(self, jaxpr, env):
        """A call's body as one expression (Sym) without adding nodes to the cell, or
        None where it is not one elementwise function of scalars and its operands."""
        dry, self.dry = self.dry, True
        try:
            return self.symbolic(jaxpr, env)
        except (_NotElementwise, GraphError):
            return None
        finally:
            self.dry = dry

    def check_custom(self, eqn, jaxpr, consts, ins):
        """Note a custom_jvp / custom_vjp function read by its primal whose primal has
        derivative 0 in an operand it depends on (a Heaviside, a sign, ...): its custom
        derivative, dropped, was then what carried the gradient (one warning per
        from_jax, ``from_jax`` gives it)."""
        if len(jaxpr.outvars) != 1:
            return
        env = dict(zip(jaxpr.constvars, (Const(np.asarray(c)) for c in consts),
                       strict=True))
        for k, (v, a) in enumerate(zip(jaxpr.invars, ins, strict=True)):
            env[v] = a if isinstance(a, Const) else Sym(_S[0], (f"operand {k}",))
        primal = self.read_only(jaxpr, env)
        if not isinstance(primal, Sym):
            return                  # not one elementwise function: no verdict
        expr = primal.expr
        if any(sp.diff(expr, s) == 0 for s in expr.free_symbols & set(_S)):
            where = next((w for w in map(_where, (eqn, *reversed(self.calls))) if w),
                         "an unknown line")
            self.dropped.append(f"{_func_name(jaxpr) or eqn.primitive.name} at {where}")

    # -- equations
    def matmul(self, eqn, a, b):
        (ca, cb), (ba, bb) = eqn.params["dimension_numbers"]
        if ba or bb:
            self.refuse(eqn, "batched products are not supported; write one matrix-vector "
                    "product per step")
        sa, sb = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
        if len(sa) == 1 and len(sb) == 1:
            self.refuse(eqn, "an inner product of two vectors (a reduction) has no rgraph "
                    "counterpart; write it as a product with a matrix (a 1 x n parameter)")
        if len(sa) + len(sb) != 3:
            self.refuse(eqn, "only matrix-vector and vector-matrix products are supported")
        if len(sa) == 2:
            mat, vec, contract = a, b, tuple(ca)[0]
        else:
            mat, vec, contract = b, a, tuple(cb)[0]
        # contract == 1: mat @ vec; contract == 0: mat.T @ vec (x @ W)
        if isinstance(mat, Transposed):
            mat, contract = mat.value, 1 - contract
        want_t = contract == 0
        if isinstance(mat, Const):
            value = np.asarray(mat.value, np.float64)
            m = self.const(Const(value.T.copy(), mat.name) if want_t else mat)
        elif isinstance(mat, Value) and mat.node.kind == "const":
            m = self.cell.const(mat.node.value.T.copy()) if want_t else mat
        elif isinstance(mat, Value) and mat.node.kind == "param":
            name = self.param_names[id(mat)]
            stored_t = name in self.transposed
            if want_t and not stored_t:
                raise _Retry(name)
            if stored_t and not want_t:
                self.refuse(eqn, f"parameter '{name}' is used both as x @ {name} and as "
                        f"{name} @ x; rgraph stores a matrix one way, so use it one way")
            m = mat
        else:
            self.refuse(eqn, "the matrix of a product must be a parameter or a constant (the "
                    "step may not compute it); a product of computed values is not "
                    "supported")
        v = self.const(vec) if isinstance(vec, Const) else \
            self.vector(vec, "the vector of a product")
        return graph.matmul(m, v)

    def slices(self, eqn, a) -> list:
        if len(eqn.invars[0].aval.shape) != 1:
            self.refuse(eqn, "only vectors can be split or sliced")
        v = self.vector(a, "the operand of a slice")
        if eqn.primitive.name == "slice":
            (start,), (stop,) = eqn.params["start_indices"], eqn.params["limit_indices"]
            strides = eqn.params.get("strides")
            if strides not in (None, (1,)):
                self.refuse(eqn, f"a strided slice (step {strides[0]}) is not supported; use "
                        f"contiguous slices")
            return [v[int(start):int(stop)]]
        out, off = [], 0
        for size in eqn.params["sizes"]:
            out.append(v[off:off + int(size)])
            off += int(size)
        return out

    def relabel(self, eqn, a):
        """Ops that only relabel a vector or broadcast a scalar."""
        p = eqn.primitive.name
        src, dst = eqn.invars[0].aval, eqn.outvars[0].aval
        n_src, n_dst = int(np.prod(src.shape)), int(np.prod(dst.shape))
        if p == "transpose":
            if isinstance(a, Value) and a.node.kind in ("param", "const") \
                    and len(src.shape) == 2:
                return Transposed(a)
            if isinstance(a, Transposed):
                return a.value
            self.refuse(eqn, "only a parameter or constant matrix can be transposed (and only "
                    "for a product)")
        if p == "convert_element_type":
            if src.dtype == np.bool_ and np.issubdtype(dst.dtype, np.floating):
                return self.node(a, a.label) if isinstance(a, Sym) else a
            if np.issubdtype(src.dtype, np.floating) and np.issubdtype(dst.dtype,
                                                                        np.floating):
                return a
            self.refuse(eqn, f"converting {src.dtype} to {dst.dtype}: only float types (and "
                    f"comparisons to float) are supported")
        if len(src.shape) > 1 or len(dst.shape) > 1:
            self.refuse(eqn, f"shape {tuple(src.shape)} -> {tuple(dst.shape)}: rgraph's "
                    f"values are vectors; only relabelling a vector or broadcasting a "
                    f"scalar is supported")
        if n_src == n_dst:
            return a
        if n_src == 1:
            if isinstance(a, Bcast):
                a = a.value
            return Bcast(a, n_dst) if isinstance(a, Value) else a
        self.refuse(eqn, f"shape {tuple(src.shape)} -> {tuple(dst.shape)} is not a relabelling "
                f"or a broadcast of a scalar")

    def function(self, p):
        """The registered scalar function a JAX primitive applies, or None."""
        name = _FUNCTIONS.get(p, p)
        fn = scalars.REGISTRY.get(name)
        if fn is None:
            cls = getattr(sp, p, None)
            if isinstance(cls, type) and issubclass(cls, sp.Function):
                try:
                    fn = scalars.lookup(cls(ARG[0]))
                except Exception:
                    fn = None
        return fn

    def elementwise(self, eqn, ins):
        """A node (or, for a comparison, a pending predicate) from an elementwise
        equation."""
        for v in eqn.invars:
            if len(v.aval.shape) > 1:
                self.refuse(eqn, f"an elementwise operation on a matrix ({tuple(v.aval.shape)})"
                        f"; rgraph's values are vectors, and matrices are parameters or "
                        f"constants read only by products")
        p = eqn.primitive.name
        sym = self.expression(eqn, ins, fold=p not in _ARITHMETIC)
        if p in _COMPARE:
            return sym
        out = eqn.outvars[0].aval
        n = out.shape[0] if out.shape else 1
        base = ins[0].value if isinstance(ins[0], Bcast) else ins[0]
        if p == "integer_pow" and isinstance(base, Value):
            val = base ** int(eqn.params["y"])          # listed as the user wrote it
        elif p in ("max", "min") and sym.expr == scalars.relu(_S[0]):
            val = self.node(sym, "relu")
        else:
            fn = self.function(p) if p not in _ARITHMETIC else None
            label = p if fn is None else fn.name
            val = self.node(sym, {"select_n": "where", "pow": "pow"}.get(p, label))
        return Bcast(val, n) if val.shape[0] != n else val

    def expression(self, eqn, ins, fold: bool) -> Sym:
        """The expression of an elementwise equation over its operands (a Sym). With
        ``fold``, constants become numbers in the expression (a jit body); without, a
        scalar constant stays an operand (so the node lists as the user wrote it)."""
        p = eqn.primitive.name
        syms = []
        for a, v in zip(ins, eqn.invars, strict=True):
            if isinstance(a, Bcast):
                a = a.value
            if isinstance(a, Sym):
                syms.append(a)
            elif isinstance(a, Const):
                val = np.asarray(a.value)
                # in a jit body, a constant vector of one value (a broadcast scalar:
                # jnp.where(c, x, 0.0)) is that number
                if val.size == 1 or (fold and val.ndim == 1 and np.all(val == val.flat[0])):
                    f = float(val.reshape(-1)[0])
                    if not np.isfinite(f):
                        self.refuse(eqn, f"the constant {f} is not finite")
                    syms.append(Sym(_number(f), ()) if fold else Sym(_S[0], (f,)))
                elif val.ndim == 1:
                    syms.append(Sym(_S[0], (self.const(a),)))
                else:
                    self.refuse(eqn, "an elementwise operation on a constant matrix")
            elif isinstance(a, Value):
                if len(a.shape) != 1:
                    self.refuse(eqn, "an elementwise operation on a matrix")
                syms.append(Sym(_S[0], (a,)))
            else:
                self.refuse(eqn, "an elementwise operation on a transposed matrix")
        exprs, args = _merge(syms, dedupe=fold)
        return Sym(self.rule(eqn, exprs), args, p)

    def rule(self, eqn, e) -> sp.Expr:
        """The scalar expression of an elementwise primitive applied to expressions."""
        p = eqn.primitive.name
        step = scalars.step
        if p in _ARITHMETIC:
            return _ARITHMETIC[p](*e)
        if p == "integer_pow":
            return e[0] ** sp.Integer(int(eqn.params["y"]))
        if p == "pow":
            if not e[1].is_number:
                self.refuse(eqn, "a power with a computed exponent; only a constant exponent "
                        "is supported")
            return e[0] ** e[1]
        if p in ("max", "min"):
            a, b = e
            if b.is_number and not a.is_number:
                a, b = b, a
            if a.is_number and a == 0:      # max(0, x) = relu(x); min(0, x) = -relu(-x)
                return scalars.relu(b) if p == "max" else -scalars.relu(-b)
            d = step(a - b) if p == "max" else step(b - a)
            return a * d + b * (1 - d)      # exact where it selects; derivative: the pick
        if p in _COMPARE:
            a, b = e
            if sp.simplify(a - b) == 0:     # x == x (JAX's NaN tests): constant
                return sp.Integer(1 if p in ("ge", "le", "eq") else 0)
            return {"gt": step(a - b), "lt": step(b - a), "ge": 1 - step(b - a),
                    "le": 1 - step(a - b), "eq": 1 - step(a - b) - step(b - a),
                    "ne": step(a - b) + step(b - a)}[p]
        if p == "select_n":
            pred, *cases = e
            if eqn.invars[0].aval.dtype != np.bool_ or len(cases) != 2:
                self.refuse(eqn, "select_n with an integer index (more than two cases); only "
                        "jnp.where(comparison, a, b) is supported")
            if pred.is_number:
                return cases[int(pred != 0)]
            return cases[1] * pred + cases[0] * (1 - pred)
        fn = self.function(p)
        if fn is not None and fn.arity == len(e):
            return fn.expr.xreplace(dict(zip(ARG, e)))
        self.refuse(eqn, _unsupported(p))


def _unsupported(p) -> str:
    return (f"'{p}' is not supported: rewrite that line with the supported operations "
            f"({', '.join(SUPPORTED)}), or register a scalar function named '{p}' "
            f"(rg.scalar_function('{p}', ...): a primitive named like a registered "
            f"function is translated to it)")


def _merge(syms, dedupe: bool):
    """The expressions of several Syms over one argument list; with ``dedupe``, a node
    that several operands read is one argument."""
    exprs, args = [], []
    for s in syms:
        mapping = {}
        for k, a in enumerate(s.args):
            j = next((i for i, b in enumerate(args) if _same(a, b)), None) if dedupe \
                else None
            if j is None:
                j = len(args)
                args.append(a)
            mapping[_S[k]] = _S[j]
        exprs.append(s.expr.xreplace(mapping))
    return exprs, tuple(args)


def _span(eqn):
    """The source span (file, lines, columns) of an equation's user frame, or None."""
    try:
        from jax._src import source_info_util
        fr = source_info_util.user_frame(eqn.source_info.traceback)
    except Exception:
        return None
    return None if fr is None else (fr.file_name, fr.start_line, fr.start_column,
                                    fr.end_line, fr.end_column)


def _same(a, b) -> bool:
    if isinstance(a, str):          # a placeholder of a check (spike, check_custom)
        return a == b
    return isinstance(a, Value) and isinstance(b, Value) and a.node.id == b.node.id \
        and a.cell is b.cell


def _func_name(jaxpr) -> str:
    """The name of the function a nested jaxpr was traced from ("" if unknown)."""
    name = getattr(getattr(jaxpr, "debug_info", None), "func_name", None)
    return name if isinstance(name, str) else ""


def _jvp_is(jax, eqn, sur, vals) -> bool:
    """Whether a custom_jvp call's derivative in its first operand is the surrogate
    ``sur`` with options ``vals`` (dampening, *shape), at 97 points of [-3, 3]."""
    try:
        from jax.extend import core as jc
        jnp = jax.numpy
        shape = tuple(eqn.invars[0].aval.shape)
        n = int(np.prod(shape)) if shape else 1
        grid = np.linspace(-3.0, 3.0, 97)
        rows = -(-grid.size // n)
        X = np.resize(grid, rows * n).reshape((rows, *shape))
        free = [v for v in eqn.invars if not isinstance(v, jc.Literal)]
        if not free or free[0] is not eqn.invars[0]:
            return False
        given = dict(zip(map(id, eqn.invars[1:]), vals, strict=True))
        fn = jc.jaxpr_as_fun(jc.ClosedJaxpr(jc.Jaxpr([], free, list(eqn.outvars), [eqn]),
                                            []))

        def one(row):
            return fn(row, *[jnp.asarray(given[id(v)], row.dtype) for v in free[1:]])[0]

        _, got = jax.jvp(jax.vmap(one), (X,), (np.ones_like(X),))
        pseudo = sp.diff(sur.fn.expr, ARG[0])
        want = _lambdify(pseudo, sur.fn.arity, jax, f"the surrogate {sur.name!r}")(
            jnp.asarray(X), *vals)
        return bool(np.allclose(np.asarray(got), np.asarray(want) * np.ones_like(X),
                                rtol=1e-7, atol=1e-12))
    except Exception:           # a call JAX cannot re-evaluate alone: not verified
        return False


def _live(jaxpr) -> set:
    """ids of the variables a jaxpr's outputs depend on."""
    live = {id(v) for v in jaxpr.outvars}
    for eqn in reversed(jaxpr.eqns):
        if any(id(v) in live for v in eqn.outvars):
            live.update(id(v) for v in eqn.invars)
    return live


def jax_params(cell: Cell, params: dict) -> dict:
    """A JAX params dict as the cell's parameters: float64 arrays, scalars as length-1
    vectors, and the matrices ``from_jax`` stored transposed (used as x @ W) transposed."""
    out = {}
    for nd in cell.nodes:
        if nd.kind != "param":
            continue
        if nd.name not in params:
            raise GraphError(f"jax_params: params has no '{nd.name}' (the cell's "
                             f"parameters: {[n.name for n in cell.nodes if n.kind == 'param']})")
        a = np.asarray(params[nd.name], np.float64)
        if a.ndim == 2 and a.shape != nd.shape and a.shape[::-1] == nd.shape:
            a = a.T
        out[nd.name] = np.ascontiguousarray(a.reshape(nd.shape))
    return out


def jax_grads(cell: Cell, grads: dict, like: dict) -> dict:
    """The cell's gradients (or parameters) in the shapes of the JAX dict ``like``."""
    out = {}
    for k, g in grads.items():
        shape = np.shape(like[k])
        g = np.asarray(g)
        out[k] = g.T if g.ndim == 2 and g.shape != shape else g.reshape(shape)
    return out


# -------------------------------------------------------------------------- to_jax
def _jax_functions(jax):
    """Each built-in scalar function in jax.numpy, with rgraph's derivative conventions
    (relu'(0) = 0, step' = sign' = 0)."""
    jnp = jax.numpy
    return {
        "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "exp": jnp.exp, "log": jnp.log,
        "sinh": jnp.sinh, "cosh": jnp.cosh, "sin": jnp.sin, "cos": jnp.cos,
        "absolute": jnp.abs, "sign": jnp.sign, "softplus": jax.nn.softplus,
        "relu": jax.nn.relu,            # relu'(0) = 0, as rgraph's
        "step": lambda z: jnp.where(z > 0.0, 1.0, 0.0),
        "log1p": jnp.log1p, "stop_gradient": jax.lax.stop_gradient,
    }


@functools.cache
def _jax_spike(fn: scalars.ScalarFunction):
    """``rg.spike``'s registry entry ``spike_<surrogate>`` in JAX: a ``jax.custom_jvp``
    named after the entry, of (x, dampening, *shape): the Heaviside step (1 where x > 0,
    else 0) with the surrogate as its derivative in x (0 in the options), so that
    ``from_jax`` reads it back as the spike."""
    jax = _import_jax()
    pseudo = _lambdify(sp.diff(fn.expr, ARG[0]), fn.arity, jax,
                       f"the surrogate of {fn.name}")

    def heaviside(x, *options):
        return (x > 0.0).astype(jax.numpy.result_type(x, float))

    heaviside.__name__ = heaviside.__qualname__ = fn.name
    spike = jax.custom_jvp(heaviside)

    def jvp(primals, tangents):
        return spike(*primals), pseudo(*primals) * tangents[0]

    spike.defjvp(jvp)
    return spike


def _lambdify(expr, arity, jax, what):
    """A jax.numpy function of an elementwise op's expression."""
    jnp = jax.numpy
    forms = _jax_functions(jax)
    modules = {}
    # a spike's options as floats (a custom_jvp's operands), and every float a value
    # passed in, at full precision (sympy's printer would round it to 15 digits)
    expr = expr.replace(lambda e: isinstance(e, scalars.Spike),
                        lambda e: type(e)(e.args[0], *(sp.Float(float(a)) if a.is_number
                                                       else a for a in e.args[1:])))
    floats = sorted(expr.atoms(sp.Float), key=float)
    dummies = sp.symbols(f"_f0:{len(floats)}", real=True)
    expr = expr.xreplace(dict(zip(floats, dummies)))
    values = [float(f) for f in floats]
    for f in expr.atoms(sp.Function):
        fn = scalars.lookup(f)
        if fn is None:
            continue
        name = type(f).__name__
        if fn.name in forms:
            modules[name] = forms[fn.name]
        elif fn.surrogate:
            modules[name] = _jax_spike(fn)
        elif fn.head is None:      # a composite: its expansion is already in expr
            continue
        else:
            try:
                modules[name] = sp.lambdify(ARG[:fn.arity], fn.expr, modules="jax")
                modules[name](*[jnp.zeros(1)] * fn.arity)
            except Exception:
                raise GraphError(f"to_jax: {what} applies the scalar function '{fn.name}', "
                                 f"which has no jax.numpy form (sympy cannot print "
                                 f"{type(f).__name__} for JAX); write the cell without it "
                                 f"or register it as an expression of rgraph's functions "
                                 f"(rg.scalar_function(name, lambda x: ...))") from None
    f = sp.lambdify((*ARG[:arity], *dummies), expr, modules=[modules, "jax"])
    if not values:
        return f

    def with_floats(*a):
        return f(*a, *values)
    return with_floats


def _infix(node):
    """(left, op, right) of an arithmetic node as the user wrote it, operands as
    ('arg', k) or ('num', value), or None."""
    label = node.op.label
    sym = graph._INFIX.get(label)
    if sym is None:
        return None
    parts = node.expr_src.split(f" {sym} ")
    if len(parts) != 2:
        return None
    out = []
    for s in parts:
        if s.startswith("{") and s.endswith("}") and s[1:-1].isdigit():
            out.append(("arg", int(s[1:-1])))
        else:
            try:
                out.append(("num", float(s)))
            except ValueError:
                return None
    sub = [ARG[v] if kind == "arg" else _number(v) for kind, v in out]
    if sp.sympify(_ARITHMETIC[label](*sub)) != node.op.expr:
        return None
    return out


def _emitter(cell, nd, jax):
    """A function (operand arrays) -> the node's value, in jax.numpy."""
    jnp = jax.numpy
    op = nd.op
    if isinstance(op, ops.MatMul):
        return lambda W, a: W @ a
    if isinstance(op, ops.Concat):
        return lambda *a: jnp.concatenate(a)
    if isinstance(op, ops.Slice):
        return lambda a: a[op.start:op.stop]
    label = op.label
    infix = _infix(nd)
    if infix is not None:
        f = _ARITHMETIC[label]

        def arith(*a):
            return f(*[a[v] if kind == "arg" else v for kind, v in infix])
        return arith
    if label == "neg" and op.expr == -ARG[0]:
        return lambda a: -a
    if label == "pow" and op.expr.is_Pow and op.expr.base == ARG[0] and op.expr.exp.is_number:
        p = op.expr.exp
        p = int(p) if p.is_Integer else float(p)
        return lambda a: a ** p
    fn = scalars.REGISTRY.get(label)
    forms = _jax_functions(jax)
    if fn is not None and fn.arity == op.arity and fn.expr == op.expr and label in forms:
        return forms[label]
    if fn is not None and fn.surrogate and type(op.expr) is fn.head and op.arity == 1 \
            and op.expr.args[0] == ARG[0] and all(a.is_number for a in op.expr.args[1:]):
        spike, options = _jax_spike(fn), [float(a) for a in op.expr.args[1:]]
        return lambda a: spike(a, *options)      # rg.spike(x, ...): one custom_jvp call
    f = _lambdify(op.expr, op.arity, jax, f"node '{nd.name}'")
    # one jit named by the label, so from_jax reads it back as one pointwise node
    f.__name__ = f.__qualname__ = label
    return jax.jit(f)


def to_jax(cell: Cell):
    """A pure JAX function ``step(params, state, x) -> (new_state, logits)`` computing one
    step of ``cell`` in ``jax.numpy``.

    ``params``: name -> array, the cell's shapes; ``state``: name -> 1-D array, one per
    state; ``x``: the input. ``new_state`` is a dict by state name; ``logits`` the
    output's array (a dict by name if the cell has several outputs). Every node is
    computed under ``jax.named_scope(<node name>)``, so profiles and ``jax.make_jaxpr``
    speak the cell's names, and ``from_jax(to_jax(cell), ...)`` rebuilds the cell.
    """
    jax = _import_jax()
    jnp = jax.numpy
    cell.validate()
    emit, consts = {}, {}
    for nd in cell.nodes:
        if nd.kind == "op":
            emit[nd.id] = _emitter(cell, nd, jax)
        elif nd.kind == "const":
            value = np.array(nd.value, dtype=np.float64)

            def const(value=value):
                return jnp.asarray(value)
            const.__name__ = const.__qualname__ = nd.name
            consts[nd.id] = jax.jit(const)
    states = [nd for nd in cell.nodes if nd.kind == "state"]
    inputs = [nd for nd in cell.nodes if nd.kind == "input"]
    params = [nd for nd in cell.nodes if nd.kind == "param"]
    outputs = dict(cell.outputs)

    def step(params_, state_, x_):
        if not isinstance(params_, dict) or not isinstance(state_, dict):
            raise GraphError(f"{cell.name} step: params and state must be dicts by name "
                             f"(params {[p.name for p in params]}, states "
                             f"{[s.name for s in states]})")
        vals = {}
        for nd in inputs:
            vals[nd.id] = jnp.asarray(x_)
        for nd in states:
            vals[nd.id] = jnp.asarray(state_[nd.name])
        for nd in params:
            vals[nd.id] = jnp.reshape(jnp.asarray(params_[nd.name]), nd.shape)
        for nd in cell.nodes:
            if nd.kind == "const":
                with jax.named_scope(nd.name):
                    vals[nd.id] = consts[nd.id]()
            elif nd.kind == "op":
                with jax.named_scope(nd.name):
                    vals[nd.id] = emit[nd.id](*[vals[a] for a in nd.args])
        new = {nd.name: vals[cell.updates[nd.id]] for nd in states}
        outs = {k: vals[v] for k, v in outputs.items()}
        return new, (next(iter(outs.values())) if len(outs) == 1 else outs)

    step.__name__ = step.__qualname__ = cell.name
    step.__doc__ = (f"One step of rgraph cell '{cell.name}' in jax.numpy: (params, state, "
                    f"x) -> (new_state, {'logits' if len(outputs) == 1 else 'outputs'}).")
    step.__signature__ = inspect.Signature(
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD)
         for p in ("params", "state", "x")])
    return step
