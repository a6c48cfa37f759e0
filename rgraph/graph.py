"""The cell DSL and its graph IR: one step of a recurrent cell as a networkx DAG.

A ``Cell`` records nodes as the user writes them; every value handed back is a ``Value``
(a handle with operator overloads). Shapes are checked as the graph is built. Node kinds:
``input``, ``state`` (the previous state), ``param``, ``const`` and ``op``; ``update``
marks the op giving a state's new value, ``output`` names what the loss sees.

User names become identifiers in generated code, so ``check_name`` is the one gate they
pass: any valid Python identifier that is not a keyword.
"""
from __future__ import annotations

import inspect
import keyword
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import numpy as np
import sympy as sp

from . import ops, scalars
from .errors import GraphError, NameError_, ShapeError
from .runtime import OPTION_SCHEMES, check_options, draw

def check_name(name, what: str) -> str:
    """Validate a user-given name: any Python identifier that is not a keyword. Names
    appear in generated code as they are; the code generator renames its own
    identifiers around them (``rgraph.codegen``)."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise NameError_(f"{what} name {name!r} is not a valid identifier: use letters, digits "
                         f"and '_', not starting with a digit and not a Python keyword "
                         f"(e.g. 'h', 'W_in')")
    return name


INITS = ("normal", "uniform", "orthogonal", "zeros", "ones", "identity", "const",
         *OPTION_SCHEMES)


@dataclass(frozen=True)
class Node:
    """One vertex of the step graph."""

    id: int
    name: str
    kind: str                      # input | state | param | const | op
    shape: tuple
    op: Any = None                 # an ops.Elementwise | MatMul | Concat | Slice
    args: tuple = ()
    value: Any = None              # const: the array; param: the init spec
    #                                (init, scale, options: ((key, value), ...))
    expr_src: str = ""             # how the user wrote it, for listings and comments

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __repr__(self):
        return f"Node({self.name!r}, {self.kind}, shape={self.shape})"


class Value:
    """A handle on a node of a cell, with the DSL's operators."""

    __array_priority__ = 1000

    def __init__(self, cell: "Cell", node: Node):
        self.cell, self.node = cell, node

    @property
    def shape(self):
        return self.node.shape

    @property
    def name(self):
        return self.node.name

    def __len__(self):
        return self.node.shape[0]

    def __repr__(self):
        return f"<{self.node.kind} {self.node.name}: {self.node.shape}>"

    def named(self, name: str) -> "Value":
        """Give this op node a readable name (listings, reports, generated code)."""
        return self.cell.name_node(self, name)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __add__(self, other):
        return _binary("add", "+", self, other)

    def __radd__(self, other):
        return _binary("add", "+", other, self)

    def __sub__(self, other):
        return _binary("sub", "-", self, other)

    def __rsub__(self, other):
        return _binary("sub", "-", other, self)

    def __mul__(self, other):
        return _binary("mul", "*", self, other)

    def __rmul__(self, other):
        return _binary("mul", "*", other, self)

    def __truediv__(self, other):
        return _binary("div", "/", self, other)

    def __rtruediv__(self, other):
        return _binary("div", "/", other, self)

    def __neg__(self):
        return _apply(ops.ARITHMETIC["neg"], self)

    def __pow__(self, p):
        if not isinstance(p, (int, float)) or isinstance(p, bool):
            raise ShapeError(f"node '{self.name}': only a python number can be an exponent, "
                             f"got {type(p).__name__}")
        expr = ops.ARG[0] ** (sp.Integer(p) if float(p).is_integer() else sp.Float(p))
        return _elementwise(ops.Elementwise("pow", 1, expr), (self,), f"{{0}}**{p}")

    def __getitem__(self, key):
        n = self.node.shape[0]
        if isinstance(key, (int, np.integer)):
            k = int(key) + (n if key < 0 else 0)
            key = slice(k, k + 1)
        if not isinstance(key, slice):
            raise ShapeError(f"node '{self.name}': only slices v[a:b] (or one index) are "
                             f"supported, got {key!r}")
        if len(self.node.shape) != 1:
            raise ShapeError(f"node '{self.name}' has shape {self.node.shape}; only vectors "
                             f"can be sliced")
        start, stop, stride = key.indices(n)
        if stride != 1:
            raise ShapeError(f"node '{self.name}': slice {key} has step {stride}; only "
                             f"contiguous slices are supported (use split or concat)")
        return self.cell._op(ops.Slice(start, stop), (self,), f"{{0}}[{start}:{stop}]")


def _cell_of(*vals):
    cells = {id(v.cell): v.cell for v in vals if isinstance(v, Value)}
    if not cells:
        raise GraphError("an op needs at least one rgraph value from a Cell as operand")
    if len(cells) > 1:
        names = [v.name for v in vals if isinstance(v, Value)]
        raise GraphError(f"operands {names} belong to different cells; build each cell from "
                         f"its own inputs, states and params")
    return next(iter(cells.values()))


def _is_symbolic(x):
    return isinstance(x, sp.Basic) and not isinstance(x, Value)


def _apply(op: ops.Elementwise, *args):
    """Apply an elementwise op: on rgraph values it adds a node; on sympy scalars (inside
    a ``pointwise`` function) it returns the scalar expression."""
    if all(_is_symbolic(a) or isinstance(a, (int, float)) for a in args):
        return op.expr.xreplace({ops.ARG[j]: sp.sympify(a) for j, a in enumerate(args)})
    return _elementwise(op, args)


def _binary(opname, sym, a, b):
    return _elementwise(ops.ARITHMETIC[opname], (a, b))


def _number(a):
    return isinstance(a, (int, float, np.floating, np.integer)) and not isinstance(a, bool)


def _elementwise(op: ops.Elementwise, args, src=None):
    """Fold python scalars (and length-1 constants) into the expression as literals."""
    cell = _cell_of(*[a for a in args if isinstance(a, Value)] or [None])
    kept, subs, shown = [], {}, []
    for j, a in enumerate(args):
        if isinstance(a, _PendingConst):
            a = float(a.value[0]) if a.value.size == 1 else cell.const(a.value)
        if _number(a):
            f = float(a)
            subs[ops.ARG[j]] = sp.Integer(int(f)) if f.is_integer() else sp.Float(f)
            shown.append(repr(f))
        elif isinstance(a, Value):
            if a.node.kind == "const" and a.node.size == 1:
                subs[ops.ARG[j]] = sp.Float(float(np.ravel(a.node.value)[0]))
                shown.append(repr(float(np.ravel(a.node.value)[0])))
            else:
                subs[ops.ARG[j]] = ops.ARG[len(kept)]
                shown.append(f"{{{len(kept)}}}")
                kept.append(a)
        else:
            raise ShapeError(f"elementwise '{op.label}': operand {j} is a {type(a).__name__}; "
                             f"use rgraph values or python numbers")
    if not kept:
        raise ShapeError(f"elementwise '{op.label}' has only constant operands; compute it "
                         f"in python and pass rg.const(...)")
    expr = op.expr.xreplace(subs)
    return cell._op(ops.Elementwise(op.label, len(kept), expr), tuple(kept),
                    src or _render(op.label, shown))


_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _render(label, shown):
    """How an elementwise op reads in listings: a template over its operands {0}, {1}.."""
    if label in _INFIX and len(shown) == 2:
        return f"{shown[0]} {_INFIX[label]} {shown[1]}"
    if label == "neg":
        return f"-{shown[0]}"
    return f"{label}({', '.join(shown)})"


# --------------------------------------------------------------------- op functions


def matmul(W, a):
    """``W @ a``: W a parameter or constant matrix, a a vector."""
    for x in (W, a):
        if not isinstance(x, Value):
            raise ShapeError(f"matmul operand {x!r} must be an rgraph value; wrap arrays with "
                             f"cell.const")
    cell = _cell_of(W, a)
    if W.node.kind not in ("param", "const"):
        raise ShapeError(f"matmul {W.name} @ {a.name}: the left operand must be a parameter "
                         f"or constant matrix, got a {W.node.kind} node; write the product "
                         f"the other way round or make it a cell.param")
    return cell._op(ops.MatMul(), (W, a), "{0} @ {1}")


def _dsl_function(fn: scalars.ScalarFunction):
    """The DSL function of a registered scalar function (``rg.tanh``)."""
    params = ["x"] if fn.arity == 1 else [f"x{j}" for j in range(fn.arity)]

    def apply(*args):
        if scalars.REGISTRY.get(fn.name) is not fn:
            raise GraphError(f"scalar function '{fn.name}' was unregistered; register it "
                             f"again with rg.scalar_function and use the function returned")
        if len(args) != fn.arity:
            raise GraphError(f"{fn.name} takes {fn.arity} operand(s), got {len(args)}")
        return _apply(fn.op, *args)

    apply.__name__ = apply.__qualname__ = fn.name
    apply.__signature__ = inspect.Signature(
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_ONLY) for p in params])
    apply.__doc__ = (f"{fn.doc}\n\nElementwise on rgraph values, where it adds a node; on "
                     f"sympy scalars (inside rg.pointwise) it returns the expression.")
    return apply


# rg.tanh, rg.sigmoid, rg.stop_gradient, ...: one DSL function per built-in entry of the
# scalar registry (the spike functions are reached through rg.spike)
SCALAR_FUNCTIONS = {fn.name: _dsl_function(fn) for fn in scalars.BUILTINS
                    if not fn.surrogate}
globals().update(SCALAR_FUNCTIONS)


def spike(x, surrogate: str = "triangle", dampening: float = 0.3, **shape):
    """A spike: 1 where x > 0, else 0, with a surrogate derivative in x.

    The step's true derivative is 0 almost everywhere; every generated derivative uses
    the surrogate instead (``dampening`` times a bump around 0), so a learning signal
    crosses the threshold:

    * ``"triangle"`` (the default; Bellec et al. 2020): dampening · max(0, 1 - |x|);
    * ``"fast_sigmoid"`` (Zenke & Ganguli 2018): dampening / (1 + slope·|x|)², slope 1
      by default (half its peak at |x| ≈ 0.41, near the triangle's 0.5);
    * ``"arctan"``: dampening / (1 + (slope·x)²), slope π by default: the derivative of
      the smooth step 1/2 + arctan(π x)/π, scaled to peak at dampening;
    * any surrogate added with ``rg.register_surrogate``.

    ``shape`` sets the surrogate's shape parameters (``slope=``). A spiking neuron
    passes its threshold-scaled membrane: ``rg.spike((v - v_th) / v_th)`` has the
    derivative (dampening / v_th) · max(0, 1 - |v - v_th| / v_th) in v, Bellec et al.'s
    pseudo-derivative ψ. Works on rgraph values and inside ``rg.pointwise``.
    """
    sur = scalars.surrogate(surrogate)
    unknown = sorted(set(shape) - set(sur.params))
    if unknown:
        have = ", ".join(sur.params) if sur.params else "none"
        raise GraphError(f"spike: surrogate {surrogate!r} has no parameter "
                         f"{', '.join(map(repr, unknown))}; its shape parameters: {have}")
    values = {"dampening": dampening, **sur.defaults, **shape}
    for k, v in values.items():
        if not _number(v) or not np.isfinite(v) or v <= 0:
            raise GraphError(f"spike: {k} must be a positive finite number, got {v!r}")
    args = (x, float(dampening), *(float(values[k]) for k in sur.params))
    if _is_symbolic(x) or _number(x):
        return _apply(sur.fn.op, *args)
    return _elementwise(sur.fn.op, args, _render(f"spike[{surrogate}]", [
        "{0}", *(repr(a) for a in args[1:])]))


def register_surrogate(name: str, derivative, *, doc: str | None = None, **defaults):
    """Add a surrogate for ``rg.spike(x, surrogate=name)``: ``derivative(x, dampening,
    *shape)`` is its derivative in x, written with arithmetic, ``abs`` and the DSL's
    scalar functions, and ``defaults`` its shape parameters with their defaults::

        rg.register_surrogate("gauss", lambda x, d, width: d * rg.exp(-(x / width)**2),
                              width=0.5)
        z = rg.spike(v - 1.0, surrogate="gauss", width=0.3)

    The value stays 1 where x > 0, else 0 (see ``rgraph.scalars.register_surrogate``)."""
    return scalars.register_surrogate(name, derivative, doc=doc, **defaults)


def scalar_function(name: str, definition, *, printed: dict | None = None,
                    doc: str | None = None, arity: int | None = None):
    """Add a scalar function in one place and return its DSL function.

    ``definition`` is either a python function of sympy scalars, built from arithmetic
    and the DSL's scalar functions (printed inline; sympy derives its derivative)::

        softsign = rg.scalar_function("softsign", lambda x: x / (1 + abs(x)))

    or a sympy ``Function`` class whose derivative is closed-form (its ``fdiff``), with
    ``printed`` giving, per backend, a callee or the source of an undecorated helper
    ``def rg_<name>(...)`` (numba: scalar ``math`` code; numpy: vectorized ``np`` code)::

        asinh = rg.scalar_function("asinh", sympy.asinh,
                                   printed={"numba": "math.asinh", "numpy": "np.arcsinh"})

    The returned function works on rgraph values and inside ``rg.pointwise``; generated
    modules define its helper. ``rgraph.scalars.unregister(name)`` removes it.
    """
    return _dsl_function(scalars.register(name, definition, printed=printed, doc=doc,
                                          arity=arity))


def pointwise(fn, *args, name: str = "pointwise"):
    """An elementwise op from a python function of scalars.

    ``fn`` receives one sympy symbol per operand and may use arithmetic, the DSL's scalar
    functions (``rg.sigmoid``, ``rg.tanh``, ..., those of ``rg.scalar_function``), python's
    ``abs`` and the sympy functions they stand for (``sympy.exp``).
    Its derivative is derived symbolically. Example (Mujika et al.'s RHN
    non-linearity): ``rg.pointwise(lambda z: 2 * rg.sigmoid(z) - 1, s)``.
    """
    check_name(name, "pointwise")
    if not args:
        raise GraphError(f"pointwise {name!r} needs at least one operand")
    if len(args) > len(ops.ARG):
        raise GraphError(f"pointwise {name!r}: at most {len(ops.ARG)} operands")
    syms = ops.ARG[:len(args)]
    try:
        expr = sp.sympify(fn(*syms))
    except Exception as e:  # the user's function failed on symbols
        raise GraphError(f"pointwise function {getattr(fn, '__name__', fn)!r} failed on "
                         f"sympy symbols ({type(e).__name__}: {e}); write it with arithmetic, "
                         f"rg.sigmoid / rg.tanh / ... and sympy functions") from None
    expr = scalars.check_expr(expr, len(args), f"pointwise {name!r}")
    return _elementwise(ops.Elementwise(name, len(args), expr), args)


def concat(*vals):
    """Concatenate vectors (python numbers and ``rg.const`` become constants)."""
    cell = _cell_of(*vals)
    vals = [cell.const(v.value if isinstance(v, _PendingConst) else v)
            if not isinstance(v, Value) else v for v in vals]
    return cell._op(ops.Concat(), tuple(vals),
                    "concat(" + ", ".join(f"{{{k}}}" for k in range(len(vals))) + ")")


def split(v, parts):
    """Split a vector into ``parts`` equal pieces, or into pieces of the given sizes."""
    if not isinstance(v, Value):
        raise ShapeError(f"split: expected an rgraph value, got {type(v).__name__}")
    n = v.shape[0]
    if isinstance(parts, (int, np.integer)):
        if parts <= 0 or n % parts:
            raise ShapeError(f"split('{v.name}', {parts}): length {n} is not divisible by "
                             f"{parts}; pass a list of sizes instead")
        sizes = [n // int(parts)] * int(parts)
    else:
        sizes = [int(s) for s in parts]
        if sum(sizes) != n or min(sizes) <= 0:
            raise ShapeError(f"split('{v.name}', {sizes}): sizes must be positive and sum to "
                             f"the length {n}")
    out, off = [], 0
    for s in sizes:
        out.append(v[off:off + s])
        off += s
    return out


def const(value):
    """A constant not yet attached to a cell (``rg.concat(h, x, rg.const(1.0))``)."""
    return _PendingConst(value)


class _PendingConst:
    """A constant not yet attached to a cell (attached on first use)."""

    def __init__(self, value):
        self.value = np.atleast_1d(np.asarray(value, dtype=np.float64))

    def __repr__(self):
        return f"const({self.value.tolist()})"


# ----------------------------------------------------------------------------- Cell


class Cell:
    """One step of a recurrent cell, built node by node."""

    def __init__(self, name: str = "cell"):
        self.name = check_name(name, "cell")
        self.nodes: list[Node] = []
        self._names: dict[str, int] = {}
        self._auto: set[int] = set()            # op nodes still under their automatic name
        self.updates: dict[int, int] = {}      # state node id -> new value node id
        self.outputs: dict[str, int] = {}      # output name -> node id

    # -- leaves
    def _claim(self, name, what):
        """Make ``name`` free for a node the user names: a node holding it under an
        automatic name (t7, k4) moves to another; a node the user named keeps it."""
        if name not in self._names:
            return
        nid = self._names[name]
        if nid not in self._auto:
            raise NameError_(f"{what} name {name!r} is already used by node "
                             f"{self.nodes[nid]!r}; names must be unique in a cell")
        auto = name
        while auto in self._names:
            auto = "_" + auto
        del self._names[name]
        self.nodes[nid] = replace(self.nodes[nid], name=auto)
        self._names[auto] = nid

    def _leaf(self, name, kind, shape, value=None):
        check_name(name, kind)
        self._claim(name, kind)
        dims = shape if isinstance(shape, (tuple, list)) else (shape,)
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in dims):
            raise ShapeError(f"{kind} {name!r}: shape {shape!r} must be a positive integer "
                             f"size n or (rows, cols) of integers; sizes are not rounded")
        shape = tuple(int(d) for d in dims)
        if not shape or any(d <= 0 for d in shape) or len(shape) > 2:
            raise ShapeError(f"{kind} {name!r}: shape {shape} must be a positive size n or "
                             f"(rows, cols)")
        node = Node(len(self.nodes), name, kind, shape, value=value, expr_src=kind)
        self.nodes.append(node)
        self._names[name] = node.id
        return Value(self, node)

    def input(self, name: str, n: int) -> Value:
        """The input vector x_t of size n."""
        return self._leaf(name, "input", (n,))

    def state(self, name: str, n: int) -> Value:
        """A state vector of size n: its previous value s_{t-1}; give its new value with
        ``update``."""
        return self._leaf(name, "state", (n,))

    def param(self, name: str, shape, init="normal", scale: float = 1.0,
              **options) -> Value:
        """A trainable parameter. ``init``: one of INITS, an array, or ``f(rng, shape)``.

        ``normal`` (the default) draws N(0, scale²/fan_in); ``uniform`` U(±scale/√fan_in);
        fan_in is a matrix's column count and a vector's length (``runtime.fan_in``).
        ``orthogonal`` stacks orthogonal square blocks (times scale); ``identity`` is
        scale·I (a vector: scale); ``zeros``, ``ones``; ``const`` fills with ``scale``.
        ``lru_nu``, ``lru_theta``, ``lru_gamma`` take ``options`` r_min, r_max,
        max_phase and ring: one LRU layer's ν, θ and γ_log (``rg.cells.lru``;
        ``runtime.draw``, ``runtime.lru_ring``). A named scheme is carried by
        ``rg.export``, so the exported module's ``init_params`` draws it too; a function
        is not.
        """
        if isinstance(init, str) and init not in INITS:
            raise GraphError(f"param {name!r}: unknown init {init!r}; use one of {INITS}, an "
                             f"array, or a function (rng, shape) -> array")
        if options or (isinstance(init, str) and init in OPTION_SCHEMES):
            bad = check_options(init if isinstance(init, str) else "custom", options)
            if bad is not None:
                raise GraphError(f"param {name!r}: {bad}")
            options = tuple((k, options[k] if k == "ring" else float(options[k]))
                            for k in OPTION_SCHEMES[init])
        if not isinstance(init, str) and not callable(init):
            arr = np.asarray(init, dtype=np.float64)
            shape_t = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
            if arr.shape != shape_t:
                raise ShapeError(f"param {name!r}: init array has shape {arr.shape}, "
                                 f"expected {shape_t}")
            init = arr.copy()
        return self._leaf(name, "param", shape, value=(init, float(scale), tuple(options)))

    def const(self, value, name: str | None = None) -> Value:
        """A constant vector or matrix (its values become literals in generated code)."""
        arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
        auto = name is None
        if auto:
            name = f"k{len(self.nodes)}"
            while name in self._names:
                name = "_" + name
        if not np.all(np.isfinite(arr)):
            raise ShapeError(f"constant {name!r} has non-finite entries; constants must be "
                             f"finite numbers")
        if auto:
            self._auto.add(len(self.nodes))
        return self._leaf(name, "const", arr.shape, value=arr)

    # -- ops
    def _op(self, op, args, src):
        vals = []
        for a in args:
            if isinstance(a, _PendingConst):
                a = self.const(a.value)
            if not isinstance(a, Value):
                raise ShapeError(f"operand {a!r} of {op.label} is not an rgraph value")
            if a.cell is not self:
                raise GraphError(f"operand '{a.name}' of {op.label} belongs to cell "
                                 f"'{a.cell.name}', not '{self.name}'")
            vals.append(a)
        shape = op.shape([a.node.shape for a in vals], [a.name for a in vals])
        auto = f"t{len(self.nodes)}"
        while auto in self._names:
            auto = "_" + auto
        self._auto.add(len(self.nodes))
        node = Node(len(self.nodes), auto, "op", tuple(shape), op=op,
                    args=tuple(a.node.id for a in vals), expr_src=src)
        self.nodes.append(node)
        self._names[node.name] = node.id
        return Value(self, node)

    def name_node(self, value: Value, name: str) -> Value:
        """Give an op node a readable name (used in listings and generated code)."""
        check_name(name, "node")
        if not isinstance(value, Value) or value.cell is not self:
            raise GraphError(f"name({value!r}, {name!r}): not a value of cell '{self.name}'")
        node = self.nodes[value.node.id]
        if node.kind != "op":
            raise GraphError(f"only op nodes can be renamed; {node.name!r} is a {node.kind}")
        if name == node.name:
            return value
        self._claim(name, "node")
        self._names.pop(node.name, None)
        new = replace(node, name=name)
        self.nodes[node.id] = new
        self._names[name] = node.id
        self._auto.discard(node.id)
        value.node = new
        return value

    def update(self, state: Value, new_value: Value):
        """Declare ``new_value`` as the next value of ``state``."""
        if not isinstance(state, Value) or state.node.kind != "state":
            what = state.node.kind if isinstance(state, Value) else type(state).__name__
            nm = state.name if isinstance(state, Value) else repr(state)
            raise GraphError(f"update({nm}, ...): {nm} is a {what}, not a state; declare it "
                             f"with cell.state(name, n)")
        if not isinstance(new_value, Value):
            raise GraphError(f"update of '{state.name}': the new value must be an rgraph "
                             f"value, got {type(new_value).__name__}")
        if state.cell is not self or new_value.cell is not self:
            raise GraphError(f"update of '{state.name}' mixes values from different cells")
        if state.node.id in self.updates:
            raise GraphError(f"state '{state.name}' is updated twice")
        if new_value.node.shape != state.node.shape:
            raise ShapeError(f"update of state '{state.name}' {state.node.shape} with node "
                             f"'{new_value.name}' {new_value.node.shape}: shapes differ")
        if new_value.node.kind == "param":
            raise GraphError(f"update of state '{state.name}': its new value is the parameter "
                             f"'{new_value.name}' itself; a parameter is read by the step, "
                             f"not carried as a state: use it in an expression (e.g. "
                             f"1.0 * {new_value.name}) or make '{state.name}' a parameter")
        if new_value.node.id in self._auto:
            auto = f"{state.name}_new"
            if auto not in self._names:
                self.name_node(new_value, auto)
        self.updates[state.node.id] = new_value.node.id

    def output(self, name: str, value: Value):
        """Declare a named output (what the loss sees)."""
        check_name(name, "output")
        if name in self.outputs:
            raise NameError_(f"output {name!r} declared twice")
        if not isinstance(value, Value) or value.cell is not self:
            raise GraphError(f"output {name!r} must be a value of cell '{self.name}'")
        if len(value.node.shape) != 1:
            raise ShapeError(f"output {name!r} has shape {value.node.shape}; outputs are vectors")
        if value.node.kind == "param":
            raise GraphError(f"output {name!r} is the parameter '{value.name}' itself; an "
                             f"output is computed by the step: use it in an expression "
                             f"(e.g. 1.0 * {value.name})")
        if value.node.id in self._auto and name not in self._names:
            self.name_node(value, name)
        self.outputs[name] = value.node.id

    # -- views
    def graph(self) -> nx.DiGraph:
        """The step graph as a networkx DiGraph (node ids; attributes carry the Node)."""
        g = nx.DiGraph(name=self.name)
        new = set(self.updates.values())
        outs = set(self.outputs.values())
        for nd in self.nodes:
            g.add_node(nd.id, node=nd, name=nd.name, kind=nd.kind, shape=nd.shape,
                       new_state=nd.id in new, output=nd.id in outs)
        for nd in self.nodes:
            for pos, a in enumerate(nd.args):
                g.add_edge(a, nd.id, pos=pos)
        return g

    def validate(self):
        """Check the cell is complete: every state updated, an output, an acyclic step."""
        states = [n for n in self.nodes if n.kind == "state"]
        if not states:
            raise GraphError(f"cell '{self.name}' has no state; declare one with cell.state")
        missing = [n.name for n in states if n.id not in self.updates]
        if missing:
            raise GraphError(f"cell '{self.name}': state(s) {missing} have no update; call "
                             f"cell.update(state, new_value) for each")
        if not self.outputs:
            raise GraphError(f"cell '{self.name}' has no output; call cell.output(name, value)")
        g = self.graph()
        if not nx.is_directed_acyclic_graph(g):
            cyc = nx.find_cycle(g)
            raise GraphError(f"cell '{self.name}' has a cycle within one step: "
                             f"{[self.nodes[a].name for a, _ in cyc]}; a value may depend on "
                             f"the previous step only through cell.state")
        for nd in self.nodes:
            if nd.kind == "op" and not isinstance(nd.op, (ops.Elementwise,) + ops.STRUCTURAL):
                raise GraphError(f"node '{nd.name}' has unknown op {nd.op!r}; add it in "
                                 f"rgraph/ops.py (shape, forward, jvp and vjp rules)")
        return self

    def describe(self, node: Node) -> str:
        """How a node reads, with its operands' current names."""
        if node.kind != "op":
            return node.expr_src
        return node.expr_src.format(*[self.nodes[a].name for a in node.args])

    def node(self, name: str) -> Node:
        if name not in self._names:
            raise GraphError(f"cell '{self.name}' has no node {name!r}; nodes: "
                             f"{sorted(self._names)}")
        return self.nodes[self._names[name]]

    def __str__(self):
        lines = [f"cell {self.name}:"]
        new = {v: k for k, v in self.updates.items()}
        outs = {v: k for k, v in self.outputs.items()}
        for nd in self.nodes:
            shape = "x".join(map(str, nd.shape))
            if nd.kind == "op":
                rhs = self.describe(nd)
            elif nd.kind == "param":
                rhs = f"param(init={nd.value[0] if isinstance(nd.value[0], str) else 'custom'})"
            elif nd.kind == "const":
                rhs = (f"const({np.array2string(nd.value.ravel()[:4], precision=3)}"
                       f"{'...' if nd.size > 4 else ''})")
            else:
                rhs = nd.kind
            marks = ""
            if nd.id in new:
                marks += f"   -> new {self.nodes[new[nd.id]].name}"
            if nd.id in outs:
                marks += f"   -> output {outs[nd.id]}"
            lines.append(f"  {nd.name:>10} : {shape:<8} = {rhs}{marks}")
        return "\n".join(lines)

    def __repr__(self):
        return (f"Cell({self.name!r}, {len(self.nodes)} nodes, states="
                f"{[self.nodes[s].name for s in self.updates]}, outputs={list(self.outputs)})")

    def to_dot(self, path=None) -> str:
        """The graph in Graphviz DOT; writes it to ``path`` if given."""
        colors = {"input": "lightblue", "state": "gold", "param": "lightgreen",
                  "const": "lightgrey", "op": "white"}
        out = [f'digraph "{self.name}" {{', "  rankdir=LR;"]
        new = set(self.updates.values())
        outs = set(self.outputs.values())
        for nd in self.nodes:
            label = f"{nd.name}\\n{self.describe(nd)} {nd.shape}"
            label = label.replace('"', "'")
            shape = "doublecircle" if nd.id in new else ("box" if nd.id in outs else "ellipse")
            out.append(f'  n{nd.id} [label="{label}", style=filled, '
                       f'fillcolor={colors[nd.kind]}, shape={shape}];')
        for nd in self.nodes:
            for a in nd.args:
                out.append(f"  n{a} -> n{nd.id};")
        out.append("}")
        text = "\n".join(out) + "\n"
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text


def init_param(node: Node, rng: np.random.Generator) -> np.ndarray:
    """Draw a parameter's initial value from its init spec: a function (rng, shape) ->
    array, an array, or a scheme of ``INITS`` with its options (``runtime.draw``, fan-in
    as ``runtime.fan_in``). The LRU's schemes depend on rng's seed, not its position
    (``runtime.lru_ring``): drawn alone, a parameter gets what ``init_params(seed)``
    gives it for ``rng = np.random.default_rng(seed)``."""
    init, scale, options = node.value
    shape = node.shape
    if callable(init):
        arr = np.asarray(init(rng, shape), dtype=np.float64)
    elif not isinstance(init, str):
        arr = np.array(init, dtype=np.float64)
    else:
        arr = draw(init, shape, scale, rng, dict(options))
    if arr.shape != shape:
        raise ShapeError(f"param '{node.name}': init gave shape {arr.shape}, expected {shape}")
    return arr
