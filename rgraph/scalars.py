"""The scalar functions of the DSL, one registry entry each.

Everything about a function sits in its entry, and the rest is generated from it: the
DSL function (``rg.tanh``, ``graph.SCALAR_FUNCTIONS``), the elementwise op it adds
(``ScalarFunction.op``), how each backend's printer prints a call to it
(``lookup`` + ``ScalarFunction.callee``) and the helpers a generated module defines
(``helpers(backend)``). An entry is one of two kinds:

* **Composite**: a python function of sympy scalars built from registered functions and
  arithmetic, e.g. softsign(x) = x / (1 + |x|). It is printed inline: the op's
  expression is the expanded formula, so sympy differentiates it and one ``cse`` shares
  its pieces between forward and derivative code. Nothing else is needed.
* **Primitive**: a sympy ``Function`` class whose derivative (its ``fdiff``, or sympy's
  own for ``sp.tanh``, ``sp.exp``, ...) is an expression of registered functions, with
  one printed form per backend: a callee (``"math.tanh"``) or the undecorated source of a
  helper ``def rg_<name>(x): ...`` (numba: scalar ``math`` code; numpy: vectorized ``np``
  code; the backend adds its decorator).

Adding a function is one ``register`` call (``rg.scalar_function`` from user code);
registration checks that the derivative is printable, so a derivative never fails later.
"""
from __future__ import annotations

import ast
import inspect
import keyword
import math
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import sympy as sp
from sympy.core.function import Application

from . import ops
from .errors import GraphError

ARG = ops.ARG

# --------------------------------------------------------------- sympy classes


class sigmoid(sp.Function):
    """Logistic function with a closed-form derivative (printed as a stable helper)."""

    nargs = 1

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)


class softplus(sp.Function):
    """log(1 + exp(x)), printed as a stable helper; its derivative is sigmoid."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


class step(sp.Function):
    """Heaviside step with step(0) = 0: the derivative of relu (relu'(0) := 0)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class relu(sp.Function):
    """max(x, 0); derivative step(x), with the convention relu'(0) = 0."""

    nargs = 1

    def fdiff(self, argindex=1):
        return step(self.args[0])


class sign(sp.Function):
    """-1, 0 or 1; derivative 0 (sympy's own sign differentiates into a Dirac delta,
    which no printer can print)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class stop_gradient(sp.Function):
    """The value of x with derivative 0 (JAX's ``lax.stop_gradient``): every generated
    derivative treats it as a constant, and the structural analysis sees no dependence
    of it on x (``ops.Elementwise.pattern``), so no tangent or cotangent passes it."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class Spike(sp.Function):
    """Base class of the spike functions of ``rg.spike``, one subclass per surrogate.

    Value: 1 where x > 0, else 0 (the Heaviside step, as ``step``). Derivative in x: the
    class's surrogate ``pseudo`` (an expression of ``ARG``: x, the dampening, then the
    surrogate's shape parameters), which is deliberately *not* the derivative of the
    value (0 almost everywhere): it is the pseudo-derivative through which BPTT, RTRL
    and e-prop pass a learning signal across the threshold. Derivative in the dampening
    and the shape parameters: 0 (they are numbers folded into the op).
    """

    pseudo: sp.Expr = sp.Integer(0)

    def fdiff(self, argindex=1):
        if argindex == 1:
            return self.pseudo.xreplace(dict(zip(ARG, self.args)))
        return sp.Integer(0)


# -------------------------------------------------------------------- entries


def _empty():
    return MappingProxyType({})


@dataclass(frozen=True, eq=False)
class ScalarFunction:
    """One registered scalar function (see the module docstring); made by ``register``."""

    name: str                    # the DSL name (rg.<name>) and the label of its op
    arity: int
    expr: sp.Expr                # its value at ARG[:arity]
    doc: str
    head: type | None = None     # a primitive's sympy class; None for a composite
    calls: Mapping[str, str] = field(default_factory=_empty)    # backend -> callee
    sources: Mapping[str, str] = field(default_factory=_empty)  # backend -> helper source
    aliases: tuple = ()          # sympy classes meaning the same function (sp.sign)
    # its derivative is a surrogate, deliberately not the derivative of its value (a
    # spike function's): finite differences of the value cannot check it
    surrogate: bool = False

    @property
    def op(self) -> ops.Elementwise:
        """The elementwise op that applying the function adds to a cell."""
        return ops.Elementwise(self.name, self.arity, self.expr)

    @property
    def helper_name(self) -> str:
        return f"rg_{self.name}"

    def callee(self, backend: str) -> str:
        """What a call prints as on a backend (``math.tanh``, ``rg_sigmoid``)."""
        if backend not in self.calls:
            raise GraphError(
                f"scalar function '{self.name}' has no {backend} form; register it with "
                f"printed={{'{backend}': ...}}: a callee such as 'np.tanh' or the source of "
                f"a helper 'def {self.helper_name}(...)'")
        return self.calls[backend]

    def __repr__(self):
        if self.head is None:
            return f"ScalarFunction({self.name!r}, inline {self.expr})"
        forms = ", ".join(f"{b}: {c}" for b, c in self.calls.items())
        return f"ScalarFunction({self.name!r}, {self.head.__name__}, {forms})"


REGISTRY: dict[str, ScalarFunction] = {}
_BY_CLASS: dict[type, ScalarFunction] = {}   # head and alias classes -> entry
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_CALLEE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# labels of rgraph's own ops; "pow" is graph.Value.__pow__'s
_OP_LABELS = {*ops.ARITHMETIC, "pow", *(s.label for s in ops.STRUCTURAL)}


def register(name: str, definition, *, printed: Mapping[str, str] | None = None,
             doc: str | None = None, arity: int | None = None,
             aliases: tuple = ()) -> ScalarFunction:
    """Register a scalar function and return its entry.

    definition: a python function of sympy scalars (a composite, printed inline), or a
    sympy ``Function`` class (a primitive) with ``printed``, one form per backend name:
    a callee (``"math.asinh"``) or the source of ``def rg_<name>(...)``. arity: the
    number of arguments, when the definition does not tell. aliases: sympy classes that
    mean the same function; expressions using them are rewritten to this one's class.
    """
    fn = _entry(name, definition, printed, doc, arity, aliases)
    _add((fn,))
    return fn


def unregister(name: str) -> None:
    """Remove a scalar function that user code registered (the built-ins stay)."""
    if name in BUILTIN_NAMES:
        raise GraphError(f"scalar function '{name}' is built in and cannot be removed")
    if name not in REGISTRY:
        raise GraphError(f"no scalar function '{name}' is registered; registered: "
                         f"{sorted(REGISTRY)}")
    fn = REGISTRY[name]
    users = [f.name for f in REGISTRY.values() if f is not fn and fn.head is not None
             and f.expr.has(fn.head)]
    if users:
        raise GraphError(f"scalar function '{name}' is used by {users}; unregister those "
                         f"first")
    _remove(fn)


def lookup(expr) -> ScalarFunction | None:
    """The registered function a sympy expression applies (by its class or an alias)."""
    return _BY_CLASS.get(type(expr))


def helpers(backend: str) -> dict[str, str]:
    """The registered functions' helpers on a backend: rg_<name> -> undecorated source."""
    return {fn.helper_name: fn.sources[backend] for fn in REGISTRY.values()
            if backend in fn.sources}


def check_expr(expr, arity: int, what: str) -> sp.Expr:
    """``expr`` as generated code can print it: an expression of ``ARG[:arity]``,
    registered functions and arithmetic. A sympy class that a registered function aliases
    (``sp.sign``) is rewritten to that function's class."""
    expr = sp.sympify(expr)
    bad = expr.free_symbols - set(ARG[:arity])
    if bad:
        raise GraphError(f"{what}: the expression uses unknown symbols "
                         f"{sorted(map(str, bad))}; it may only use its arguments")
    for fn in REGISTRY.values():
        for alias in fn.aliases:
            expr = expr.replace(alias, fn.head)
    unknown = _unknown(expr)
    if unknown:
        raise GraphError(
            f"{what}: function {', '.join(unknown)} is not supported in generated code; use "
            f"the registered scalar functions ({', '.join(sorted(REGISTRY))}), abs() and "
            f"arithmetic, or register it with rg.scalar_function")
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise GraphError(f"{what}: the expression {expr} is not finite")
    return expr


def parse_helper(src: str, name: str, nargs: int, what: str) -> str:
    """A helper's source, dedented: one undecorated ``def name(...)`` of nargs arguments."""
    src = textwrap.dedent(src).strip("\n") + "\n"
    try:
        body = ast.parse(src).body
    except SyntaxError as e:
        raise GraphError(f"{what}: the helper does not parse ({e.msg}, line {e.lineno})") \
            from None
    if len(body) != 1 or not isinstance(body[0], ast.FunctionDef) or body[0].name != name:
        raise GraphError(f"{what}: the helper must be exactly one function 'def {name}(...)'")
    f = body[0]
    a = f.args
    if len(a.args) != nargs or a.posonlyargs or a.vararg or a.kwonlyargs or a.kwarg \
            or a.defaults:
        raise GraphError(f"{what}: {name} must take exactly {nargs} plain argument(s)")
    if f.decorator_list:
        raise GraphError(f"{what}: {name} must be undecorated; the backend adds its decorator")
    return src


# ------------------------------------------------------------------- internals


def _unknown(expr) -> list[str]:
    return sorted({type(f).__name__ for f in expr.atoms(Application)
                   if type(f) not in _BY_CLASS})


def _entry(name, definition, printed=None, doc=None, arity=None,
           aliases=()) -> ScalarFunction:
    what = f"scalar function {name!r}"
    if not isinstance(name, str) or not _NAME.match(name) or keyword.iskeyword(name):
        raise GraphError(f"{what}: the name must be lower-case letters, digits and '_', "
                         f"starting with a letter (it labels the op and names the helper "
                         f"rg_<name>)")
    if name in REGISTRY:
        how = "" if name in BUILTIN_NAMES else f", or remove it first with " \
              f"rgraph.scalars.unregister({name!r})"
        raise GraphError(f"{what} is already registered as {REGISTRY[name]!r}; choose "
                         f"another name{how}")
    if name in _OP_LABELS:
        raise GraphError(f"{what}: '{name}' is the label of one of rgraph's own ops "
                         f"({sorted(_OP_LABELS)}); choose another name")
    if isinstance(definition, type) and issubclass(definition, sp.Function):
        return _primitive(name, definition, printed, doc, arity, aliases, what)
    if callable(definition):
        return _composite(name, definition, printed, doc, arity, what)
    raise GraphError(f"{what}: the definition must be a python function of sympy scalars "
                     f"(printed inline) or a sympy Function class (printed per backend), "
                     f"got {type(definition).__name__}")


def _check_arity(arity, what):
    if not isinstance(arity, int) or not 1 <= arity <= len(ARG):
        raise GraphError(f"{what}: arity must be an integer from 1 to {len(ARG)}, got "
                         f"{arity!r}")


def _primitive(name, cls, printed, doc, arity, aliases, what):
    nargs = cls.nargs
    if arity is None:
        if not (nargs.is_FiniteSet and len(nargs) == 1):
            raise GraphError(f"{what}: {cls.__name__} takes {nargs} arguments; pass arity=")
        arity = int(next(iter(nargs)))
    _check_arity(arity, what)
    if arity not in nargs:
        raise GraphError(f"{what}: arity {arity}, but {cls.__name__} takes {nargs} arguments")
    for c in (cls, *aliases):
        if c in _BY_CLASS:
            raise GraphError(f"{what}: sympy class {c.__name__} is already registered as "
                             f"'{_BY_CLASS[c].name}'; use rg.{_BY_CLASS[c].name}")
    if not printed:
        raise GraphError(f"{what}: a sympy Function class needs printed={{backend: form}} "
                         f"for each backend, e.g. printed={{'numba': 'math.asinh', "
                         f"'numpy': 'np.arcsinh'}}, or a helper's source 'def rg_{name}(x): "
                         f"...'")
    calls, sources = {}, {}
    for backend, form in printed.items():
        if isinstance(form, str) and form.lstrip().startswith("def "):
            sources[backend] = parse_helper(form, f"rg_{name}", arity,
                                             f"{what} ({backend})")
            calls[backend] = f"rg_{name}"
        elif isinstance(form, str) and _CALLEE.match(form):
            calls[backend] = form
        else:
            raise GraphError(f"{what}: printed[{backend!r}] = {form!r} is neither a callee "
                             f"('math.tanh') nor a helper's source ('def rg_{name}(x): ...')")
    doc = doc or (cls.__doc__ or "").strip() or f"{name}(x), sympy's {cls.__name__}."
    return ScalarFunction(name, arity, cls(*ARG[:arity]), doc, cls,
                          MappingProxyType(calls), MappingProxyType(sources), tuple(aliases))


def _on_symbols(fn, arity: int, what: str, part: str, hint: str) -> sp.Expr:
    """fn applied to sympy symbols, checked (``check_expr``); one line naming ``what``,
    the ``part`` that failed and how to write it (``hint``) if fn fails on them."""
    try:
        expr = sp.sympify(fn(*ARG[:arity]))
    except Exception as e:  # the user's function failed on symbols
        raise GraphError(f"{what}: the {part} failed on sympy symbols "
                         f"({type(e).__name__}: {e}); write it with {hint}") from None
    return check_expr(expr, arity, what)


def _composite(name, fn, printed, doc, arity, what):
    if printed is not None:
        raise GraphError(f"{what}: a python-function definition is printed inline, so "
                         f"printed= does not apply; for a helper, register a sympy Function "
                         f"class with an fdiff")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):     # a builtin without a signature
        params = None
    if params is None or any(p.kind is p.VAR_POSITIONAL for p in params):
        if arity is None:
            raise GraphError(f"{what}: the function's number of arguments is not known; "
                             f"pass arity=")
    else:
        if arity is not None and arity != len(params):
            raise GraphError(f"{what}: arity={arity}, but the function takes "
                             f"{len(params)} argument(s)")
        arity = len(params)
    _check_arity(arity, what)
    expr = _on_symbols(fn, arity, what, "function",
                       "arithmetic and rgraph's scalar functions (rg.sigmoid, rg.tanh, ...)")
    if not doc:
        names = [p.name for p in params] if params and len(params) == arity else \
            [f"x{j}" for j in range(arity)]
        shown = expr.xreplace({a: sp.Symbol(n) for a, n in zip(ARG, names)})
        doc = f"{name}({', '.join(names)}) = {shown}"
    return ScalarFunction(name, arity, expr, doc)


def _add(fns) -> None:
    """Enter entries together (built-ins may differentiate into one another), then check
    that each one's derivatives are printable; on failure none stays registered."""
    for fn in fns:
        REGISTRY[fn.name] = fn
        for cls in (fn.head, *fn.aliases) if fn.head is not None else ():
            _BY_CLASS[cls] = fn
    try:
        for fn in fns:
            _check_derivatives(fn)
    except GraphError:
        for fn in fns:
            _remove(fn)
        raise


def _remove(fn) -> None:
    del REGISTRY[fn.name]
    for key in [k for k, sur in SURROGATES.items() if sur.fn is fn]:
        del SURROGATES[key]
    for cls in (fn.head, *fn.aliases) if fn.head is not None else ():
        del _BY_CLASS[cls]


def _check_derivatives(fn) -> None:
    """Check that each first derivative of ``fn`` can be printed: sympy can form it, and
    it uses registered functions only. This checks that the derivative exists in
    generated code, not that it is right: a primitive's ``fdiff`` is trusted here, and
    a surrogate (``ScalarFunction.surrogate``, the spike functions) is by design not the
    derivative of its value. ``rg.check_derivatives`` checks derivatives numerically
    and refuses a cell that applies a surrogate."""
    for j in range(fn.arity):
        d = sp.diff(fn.expr, ARG[j])
        if d.has(sp.Derivative, sp.Subs):
            raise GraphError(f"scalar function '{fn.name}': sympy cannot differentiate it "
                             f"in argument {j + 1} (it gives {d}); give the class an fdiff "
                             f"returning an expression of registered functions")
        unknown = _unknown(d)
        if unknown:
            raise GraphError(f"scalar function '{fn.name}': its derivative in argument "
                             f"{j + 1}, {d}, uses {', '.join(unknown)}, which is not a "
                             f"registered scalar function; register that first or give the "
                             f"class an fdiff that avoids it")


# ------------------------------------------------------------- spike surrogates


@dataclass(frozen=True, eq=False)
class Surrogate:
    """A surrogate of ``rg.spike``: its registry entry ``spike_<name>`` (value 1 where
    x > 0, else 0; derivative ``dampening * pseudo``) and the names and defaults of its
    shape parameters, which follow x and the dampening as the entry's arguments."""

    name: str
    fn: ScalarFunction
    params: tuple                  # shape parameters' names, after (x, dampening)
    defaults: Mapping[str, float]  # name -> default value

    @property
    def formula(self) -> str:
        """The surrogate derivative in x, with its arguments' names."""
        names = ("x", "dampening", *self.params)
        d = sp.diff(self.fn.expr, ARG[0])
        return str(d.xreplace({a: sp.Symbol(n) for a, n in zip(ARG, names)}))

    def __repr__(self):
        shape = "".join(f", {k}={v!r}" for k, v in self.defaults.items())
        return f"Surrogate({self.name!r}: d/dx = {self.formula}{shape})"


SURROGATES: dict[str, Surrogate] = {}


def _surrogate(name, pseudo, doc, defaults) -> tuple[ScalarFunction, Surrogate]:
    """The registry entry ``spike_<name>`` and its ``Surrogate``, not yet registered."""
    what = f"surrogate {name!r}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise GraphError(f"{what}: the name must be lower-case letters, digits and '_', "
                         f"starting with a letter (the entry is spike_<name>)")
    if name in SURROGATES:
        raise GraphError(f"{what} is already registered ({SURROGATES[name]!r}); choose "
                         f"another name")
    names = ("x", "dampening", *defaults)
    for k, v in defaults.items():
        if not k.isidentifier() or keyword.iskeyword(k) or k in ("x", "dampening"):
            raise GraphError(f"{what}: shape parameter {k!r} must be an identifier other "
                             f"than 'x' and 'dampening'")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise GraphError(f"{what}: shape parameter {k}={v!r} needs a default number")
    arity = len(names)
    if arity > len(ARG):
        raise GraphError(f"{what}: at most {len(ARG) - 2} shape parameters")
    try:
        n_args = len(inspect.signature(pseudo).parameters)
    except (TypeError, ValueError):
        raise GraphError(f"{what}: the derivative must be a python function "
                         f"(x, dampening{''.join(', ' + k for k in defaults)}) of sympy "
                         f"scalars") from None
    if n_args != arity:
        raise GraphError(f"{what}: the derivative takes {n_args} argument(s); it must take "
                         f"(x, dampening{''.join(', ' + k for k in defaults)})")
    expr = _on_symbols(pseudo, arity, what, "derivative",
                       "arithmetic, abs() and rgraph's scalar functions")
    cls = type(f"spike_{name}", (Spike,), {"nargs": arity, "pseudo": expr,
                                           "__module__": __name__})
    sig = ", ".join(names)
    printed = {"numba": f"def rg_spike_{name}({sig}):\n    return 1.0 if x > 0.0 else 0.0",
               "numpy": f"def rg_spike_{name}({sig}):\n"
                        f"    return np.where(x > 0.0, 1.0, 0.0)"}
    shown = expr.xreplace({a: sp.Symbol(n) for a, n in zip(ARG, names)})
    doc = doc or f"spike with the surrogate derivative {shown}"
    fn = replace(_entry(f"spike_{name}", cls, printed, doc), surrogate=True)
    return fn, Surrogate(name, fn, tuple(defaults), MappingProxyType(
        {k: float(v) for k, v in defaults.items()}))


def register_surrogate(name: str, derivative, *, doc: str | None = None,
                       **defaults: float) -> Surrogate:
    """Register a surrogate for ``rg.spike(x, surrogate=name)`` and return it.

    ``derivative(x, dampening, *shape)`` gives the surrogate derivative of the spike in
    x as an expression of sympy scalars (arithmetic, ``abs``, rgraph's scalar
    functions); ``defaults`` names the shape parameters, in order, with their default
    values. The value stays 1 where x > 0, else 0. Example (a Gaussian)::

        rg.register_surrogate("gauss", lambda x, d, width: d * rg.exp(-(x / width)**2),
                              width=0.5)

    It is the registry entry ``spike_<name>`` (``rgraph.scalars.unregister`` removes
    it). Its derivative is marked a surrogate: ``rg.check_derivatives`` refuses cells
    that use it, since finite differences of a step cannot check a pseudo-derivative.
    """
    fn, sur = _surrogate(name, derivative, doc, defaults)
    _add((fn,))
    SURROGATES[name] = sur
    return sur


def surrogate(name) -> Surrogate:
    """The registered surrogate ``name``; an unknown one is one line naming the known."""
    if name not in SURROGATES:
        raise GraphError(f"unknown spike surrogate {name!r}; use one of "
                         f"{', '.join(sorted(SURROGATES))}, or register one with "
                         f"rg.register_surrogate")
    return SURROGATES[name]


# -------------------------------------------------------------------- built-ins

_NUMBA_SIGMOID = '''
def rg_sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
'''
_NUMPY_SIGMOID = '''
def rg_sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
'''


from sympy.codegen.cfunctions import log1p as _log1p  # noqa: E402  (sympy's own class)


def _both(f):
    """A function both backends print as a call: math.f in numba, np.f in numpy."""
    return {"numba": f"math.{f}", "numpy": f"np.{f}"}


BUILTINS = (
    _entry("tanh", sp.tanh, _both("tanh"), "Hyperbolic tangent; its derivative "
           "1 - tanh(x)**2 reuses its value."),
    _entry("sigmoid", sigmoid, {"numba": _NUMBA_SIGMOID, "numpy": _NUMPY_SIGMOID},
           "Logistic function 1 / (1 + exp(-x)), computed without overflow; its "
           "derivative sigmoid(x) (1 - sigmoid(x)) reuses its value."),
    _entry("softplus", softplus, {
        "numba": "def rg_softplus(x):\n    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))",
        "numpy": "def rg_softplus(x):\n"
                 "    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))"},
        "log(1 + exp(x)), computed without overflow; its derivative is sigmoid(x)."),
    _entry("relu", relu, {
        "numba": "def rg_relu(x):\n    return x if x > 0.0 else 0.0",
        "numpy": "def rg_relu(x):\n    return np.where(x > 0.0, x, 0.0)"},
        "max(x, 0); its derivative is step(x), so relu'(0) = 0."),
    _entry("step", step, {
        "numba": "def rg_step(x):\n    return 1.0 if x > 0.0 else 0.0",
        "numpy": "def rg_step(x):\n    return np.where(x > 0.0, 1.0, 0.0)"},
        "Heaviside step: 1 for x > 0, else 0 (step(0) = 0); its derivative is 0."),
    _entry("sign", sign, {
        "numba": "def rg_sign(x):\n    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)",
        "numpy": "np.sign"},
        "-1, 0 or 1 by the sign of x (also sympy's sign inside rg.pointwise); its "
        "derivative is 0.", aliases=(sp.sign,)),
    _entry("absolute", sp.Abs, {"numba": "abs", "numpy": "np.abs"},
           "|x| (python's abs() inside rg.pointwise); its derivative is sign(x)."),
    _entry("exp", sp.exp, _both("exp"), "Exponential e**x."),
    _entry("log", sp.log, _both("log"), "Natural logarithm of a positive x.", arity=1),
    _entry("log1p", _log1p, _both("log1p"), "log(1 + x), accurate for small x (JAX's "
           "log1p); its derivative is 1 / (1 + x).", arity=1),
    _entry("sinh", sp.sinh, _both("sinh"), "Hyperbolic sine."),
    _entry("cosh", sp.cosh, _both("cosh"), "Hyperbolic cosine."),
    _entry("sin", sp.sin, _both("sin"), "Sine."),
    _entry("cos", sp.cos, _both("cos"), "Cosine."),
)
_add(BUILTINS)       # first: the surrogates' derivatives are written in these

_SURROGATES = (
    _surrogate("triangle", lambda x, d: d * relu(1 - sp.Abs(x)),
               "spike with Bellec et al.'s (2020) triangle surrogate: derivative "
               "dampening * max(0, 1 - |x|)", {}),
    _surrogate("fast_sigmoid", lambda x, d, slope: d / (1 + slope * sp.Abs(x)) ** 2,
               "spike with Zenke & Ganguli's (2018, SuperSpike) fast-sigmoid surrogate: "
               "derivative dampening / (1 + slope |x|)**2", {"slope": 1.0}),
    _surrogate("arctan", lambda x, d, slope: d / (1 + (slope * x) ** 2),
               "spike with the arctan surrogate: derivative dampening / (1 + (slope x)**2), "
               "the derivative of the smooth step 1/2 + arctan(slope x) / pi, scaled to "
               "peak at dampening", {"slope": math.pi}),
)
_MORE = (
    _entry("stop_gradient", stop_gradient, {
        "numba": "def rg_stop_gradient(x):\n    return x",
        "numpy": "def rg_stop_gradient(x):\n    return x"},
        "The value of x with derivative 0 (JAX's lax.stop_gradient): no tangent or "
        "cotangent passes it, and the analysis sees no dependence on x."),
    *(fn for fn, _ in _SURROGATES))
_add(_MORE)
BUILTINS = BUILTINS + _MORE
BUILTIN_NAMES = frozenset(fn.name for fn in BUILTINS)
SURROGATES.update({sur.name: sur for _, sur in _SURROGATES})
