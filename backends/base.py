"""What every backend shares: view declarations, element indexing, module loading.

A backend is a printer over ``rgraph.kernel`` statements. It knows nothing of graphs or
analysis: it receives ``Kernel`` objects and template functions and returns source text.
"""
from __future__ import annotations

import ast
import importlib.util
import sys

import sympy as sp
from sympy.core.function import Application

from rgraph import kernel as K
from rgraph import losses, scalars
from rgraph.errors import GraphError

VALUE_BUFS = ("th", "v")


class PrinterRules:
    """Printing rules both backends' sympy printers share (mixed into a sympy printer): a
    registered scalar function prints as its entry's callee for ``BACKEND`` (``math.tanh``,
    the module's helper ``rg_sigmoid``), and numbers print as float literals. ``SQRT``
    names the backend's square root."""

    BACKEND: str
    SQRT = "math.sqrt"

    def _print(self, expr, **kwargs):
        fn = scalars.lookup(expr)
        if fn is not None:
            return f"{fn.callee(self.BACKEND)}({', '.join(self._print(a) for a in expr.args)})"
        if isinstance(expr, Application):
            raise GraphError(f"{type(expr).__name__} is not a registered scalar function "
                             f"(was it unregistered?); register it with rg.scalar_function")
        return super()._print(expr, **kwargs)

    def _print_Pow(self, e, rational=False):
        b, x = e.args
        prec = sp.printing.precedence.PRECEDENCE
        if x == sp.Rational(1, 2):
            return f"{self.SQRT}({self._print(b)})"
        if x == -1:
            return f"(1.0/{self.parenthesize(b, prec['Pow'])})"
        if x == 2:
            s = self.parenthesize(b, prec["Mul"])
            return f"({s}*{s})"
        return super()._print_Pow(e, rational)

    def _print_Rational(self, e):
        return repr(float(e))

    def _print_Integer(self, e):
        return f"{int(e)}.0"

    def _print_Float(self, e):
        return repr(float(e))


def split_defs(text: str) -> dict[str, str]:
    """Top-level function definitions in source text: name -> source of its ``def``."""
    lines = text.splitlines(keepends=True)
    out = {}
    for node in ast.parse(text).body:
        if not isinstance(node, ast.FunctionDef) or node.decorator_list:
            raise ValueError(f"line {node.lineno}: helper text may hold only undecorated "
                             f"functions")
        out[node.name] = "".join(lines[node.lineno - 1:node.end_lineno])
    return out


class Backend:
    """Base printer. Subclasses implement the statement printers and hold the module's
    ``IMPORTS`` (import lines and module-level setup) and ``HELPERS`` (helper name ->
    undecorated ``def`` source; ``decorate`` adds what the backend needs)."""

    name = "base"
    jit = False
    IMPORTS: str
    HELPERS: dict[str, str]

    # ------------------------------------------------------------ module parts
    def helpers(self) -> dict[str, str]:
        """Every helper a generated module may call, name -> undecorated source: the
        registered scalar functions' (``rgraph.scalars``), the losses' and the backend's
        own."""
        own = {**losses.helpers(self.name), **self.HELPERS}
        scalar = scalars.helpers(self.name)
        for name in sorted(scalar.keys() & own.keys()):
            raise GraphError(f"scalar function {name[len('rg_'):]!r} has the helper {name}, "
                             f"which a loss or the {self.name} backend defines too; register "
                             f"the function under another name")
        return {**scalar, **own}

    def prelude(self) -> str:
        """The start of a generated module: its imports, then every helper, decorated."""
        parts = [self.IMPORTS.strip("\n")]
        parts += [self.decorate(src).rstrip("\n") for src in self.helpers().values()]
        return "\n\n\n".join(parts) + "\n"

    def aliases(self, dtype: str) -> dict:
        """Module names bound per float type (after the prelude): name -> target."""
        return {}

    def decorate(self, src: str) -> str:
        """A template function's source as it goes into the module."""
        return src

    def constant(self, name: str, value) -> str:
        """A module-level constant array (flat) or number."""
        if hasattr(value, "ravel"):
            if value.dtype.kind in "iub":
                vals = ", ".join(str(int(x)) for x in value.ravel())
                return f"{name} = np.array([{vals}], dtype=np.int64)"
            vals = ", ".join(repr(float(x)) for x in value.ravel())
            return f"{name} = np.array([{vals}])"
        if isinstance(value, float):
            return f"{name} = {float(value)!r}"
        return f"{name} = {int(value)!r}"

    # ---------------------------------------------------------------- kernels
    def kernel(self, k: K.Kernel) -> str:
        lines = [f"def {k.name}({', '.join(k.args)}):", f'    """{k.doc}"""']
        body = []
        if k.matrix:
            body.append("rg_K = vd.shape[1]")
        for r in k.refs():
            body.append(self.declare(r, k.matrix))
        for st in k.body:
            body.extend(self.statement(st, k.matrix))
        if not k.body:
            body.append("pass")
        lines += ["    " + ln for ln in body]
        return "\n".join(lines) + "\n"

    def declare(self, r: K.Ref, matrix) -> str:
        """The line naming a Ref at the top of a kernel (a view of its buffer)."""
        sl = f"{r.buf}[{r.off}:{r.off + r.size}]"
        if r.cols and r.buf not in K.TANGENT_BUFS:
            sl += f".reshape(({r.n}, {r.cols}))"
        return f"{r.name} = {sl}"

    def statement(self, st, matrix) -> list[str]:
        meth = getattr(self, "st_" + type(st).__name__, None)
        if meth is None:
            raise NotImplementedError(f"backend {self.name} cannot print {type(st).__name__}")
        return meth(st, matrix)

    def st_Comment(self, st, matrix):
        return [f"# {ln}" for ln in st.text.splitlines()]

    def sl(self, r: K.Ref) -> str:
        """A slice expression of a whole Ref (its view name when it has one)."""
        if r.name:
            return r.name
        return f"{r.buf}[{r.off}:{r.off + r.size}]"

    def lhs(self, r: K.Ref) -> str:
        """The target of a whole-Ref assignment."""
        return f"{r.name}[:]" if r.name else f"{r.buf}[{r.off}:{r.off + r.size}]"

    def el(self, r: K.Ref, i: str, col: str | None = None) -> str:
        """Element i (column col) of a Ref; a length-1 Ref broadcasts."""
        if r.n == 1 and not r.cols:
            i = "0"
        if r.name:
            idx = i
            base = r.name
        else:
            idx = f"{r.off} + {i}" if i != "0" else str(r.off)
            base = r.buf
        return f"{base}[{idx}, {col}]" if col is not None else f"{base}[{idx}]"

    # ----------------------------------------------------------------- loading
    def load(self, path, modname):
        """Import a generated module file (registered in sys.modules before executing,
        which numba's on-disk cache needs)."""
        if modname in sys.modules:
            return sys.modules[modname]
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[modname]
            raise
        return mod
