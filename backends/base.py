"""What every backend shares: the printer registry, view declarations, element
indexing, its declared capabilities and the loading of its modules.

A backend is a printer over ``rgraph.kernel`` statements. It knows nothing of graphs or
analysis: it receives ``Kernel`` objects and template functions and returns source text.
Each statement class has a printer method, registered with ``@prints``. A backend that
compiles (``jit``) also provides a loader (``Loaded``'s subclass) that compiles and
loads its modules through the cache's entries (``rgraph.cache``).
"""
from __future__ import annotations

import ast
import re
import sys
import types
from collections import Counter

import sympy as sp
from sympy.core.function import Application

from rgraph import kernel as K
from rgraph import losses, scalars
from rgraph.codegen import CodegenError, Namer
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


def prints(*classes):
    """Register the decorated method as the backend's printer of the kernel statements of
    ``classes`` (``rgraph.kernel``): ``method(self, st, sc) -> list of lines``."""
    def register(method):
        method.prints = classes
        return method
    return register


class Loaded:
    """A generated module imported from the cache, and its functions, for a backend that
    compiles nothing: ``call(name, *args)`` calls one as plain Python and ``prepare``
    has nothing to do. A compiling backend's loader subclasses it: ``prepare(calls)``
    compiles (if the cache lacks them) and loads the functions for the given (name,
    example arguments) pairs, in order; ``call`` does the same for a new signature."""

    def __init__(self, entry, module, text: str, in_process=False):
        self.entry, self.module, self.text = entry, module, text
        self.in_process = in_process
        self.compiled_here = 0      # functions compiled by this process (or its children)
        self.loaded = 0             # functions loaded from the cache

    @property
    def path(self):
        return self.entry.py

    def call(self, name, *args):
        return getattr(self.module, name)(*args)

    def prepare(self, calls, what=None):
        """Nothing is compiled: the functions run as they are (``what`` would name the
        module in a compiling backend's message on stderr)."""


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
    """Base printer. Subclasses register a printer per kernel statement class
    (``@prints``; ``PRINTERS``: statement class -> method name), hold the module's
    ``IMPORTS`` (import lines and module-level setup) and ``HELPERS`` (helper name ->
    undecorated ``def`` source; ``compile_block`` compiles them), and declare what they
    can do:

    * ``jit``: compiles its modules, which its ``loader`` compiles and loads;
    * ``batch_step``: steps a batch of streams at once, its products GEMMs (prints
      ``ForStreams`` and ``OverStreams``), where an estimator has a batch step;
    * ``dtypes``: the float types its modules compute in;
    * ``version()``: what its code runs on, for the modules' header."""

    name = "base"
    jit = False
    batch_step = False
    dtypes: tuple = ()
    offsets = False     # kernels index node offsets named at module level (else views)
    # numpy functions its modules must not call, "np.<name>" -> why and what instead
    # (a template that calls one is refused when its module is built)
    unsupported: dict[str, str] = {}
    IMPORTS: str
    HELPERS: dict[str, str]
    PRINTERS: dict

    def __init_subclass__(cls, **kwargs):
        """Collect the ``@prints`` methods (a subclass's own override its parents'), and
        refuse a capability the class cannot back."""
        super().__init_subclass__(**kwargs)
        cls.PRINTERS = {c: name for klass in reversed(cls.__mro__)
                        for name, f in vars(klass).items() for c in getattr(f, "prints", ())}
        if cls.jit and cls.loader is Backend.loader:
            raise TypeError(f"backend {cls.name}: jit = True needs a loader of its own "
                            f"(define loader(), returning a subclass of Loaded)")
        lacking = [c.__name__ for c in (K.ForStreams, K.OverStreams) if c not in cls.PRINTERS]
        if cls.batch_step and lacking:
            raise TypeError(f"backend {cls.name}: batch_step = True needs printers of "
                            f"{', '.join(lacking)} (@prints)")

    # ------------------------------------------------------------ capabilities
    def version(self) -> str:
        """What the generated code runs on, and its version (``numpy 2.1.0``)."""
        raise NotImplementedError(f"backend {self.name} does not say what its code runs "
                                  f"on; define version()")

    def check_dtype(self, dtype: str):
        """Refuse a float type the backend does not declare in ``dtypes``."""
        if dtype not in self.dtypes:
            raise ValueError(f"backend {self.name} does not compute in {dtype} (its dtypes: "
                             f"{', '.join(self.dtypes) or 'none declared'}); choose one of "
                             f"those, or another backend")

    @property
    def printed_as(self) -> str:
        """The backend name whose printed forms the modules use: of the registered scalar
        functions (``rgraph.scalars``, ``printed={name: form}``) and of the losses'
        helpers. Its printer's ``BACKEND``: its own name, or an existing backend's to
        print them as that one does."""
        return self.printer.BACKEND

    # ------------------------------------------------------------ module parts
    def helpers(self) -> dict[str, str]:
        """Every helper a generated module may call, name -> undecorated source: the
        registered scalar functions' (``rgraph.scalars``), the losses' and the backend's
        own."""
        own = {**losses.helpers(self.printed_as), **self.HELPERS}
        scalar = scalars.helpers(self.printed_as)
        for name in sorted(scalar.keys() & own.keys()):
            raise GraphError(f"scalar function {name[len('rg_'):]!r} has the helper {name}, "
                             f"which a loss or the {self.name} backend defines too; register "
                             f"the function under another name")
        return {**scalar, **own}

    def aliases(self, dtype: str) -> dict:
        """Module names bound per float type (after the prelude): name -> target."""
        return {}

    def compile_block(self, functions: list[str], mb, inline=()) -> str:
        """The module's last statements, handing its functions to the backend's compiler
        (none: the functions run as plain Python); ``inline``: the functions called from
        one place only, which the compiler may put into their caller."""
        return ""

    def import_names(self) -> set:
        """The names ``IMPORTS`` binds at module level."""
        out = set()
        for n in ast.parse(self.IMPORTS).body:
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                out.update(a.asname or a.name.split(".")[0] for a in n.names)
            elif isinstance(n, ast.Assign):
                out.update(t.id for t in n.targets if isinstance(t, ast.Name))
        return out

    def constant_value(self, value) -> str:
        """The source of a module-level number or flat array (a float array in the
        module's float type ``DT``, so that a float32 module computes in float32)."""
        if hasattr(value, "ravel"):
            if value.dtype.kind in "iub":
                vals = ", ".join(str(int(x)) for x in value.ravel())
                return f"np.array([{vals}], dtype=np.int64)"
            vals = ", ".join(repr(float(x)) for x in value.ravel())
            return f"np.array([{vals}], dtype=DT)"
        if isinstance(value, float):
            return repr(float(value))
        return repr(int(value))

    # ---------------------------------------------------------------- kernels
    def kernel(self, k: K.Kernel, name: str, mb) -> str:
        """The kernel's function under ``name``; every identifier comes from
        the module builder ``mb`` (globals) or a scope of its own (locals)."""
        sc = Scope(self, mb, k)
        body = self.statements(k.body, sc)
        if not body:
            raise ValueError(f"kernel {k.name} has no statements; the estimator should not "
                             f"ask for it")
        lines = [f"def {name}({', '.join(sc.arg[a] for a in k.args)}):",
                 f'    """{sc.doc()}"""']
        lines += ["    " + ln for ln in sc.prologue + body]
        return "\n".join(lines) + "\n"

    def statements(self, body, sc) -> list[str]:
        return [ln for st in body for ln in self.statement(st, sc)]

    def statement(self, st, sc) -> list[str]:
        """The lines of one statement, from the printer registered for its class."""
        meth = self.PRINTERS.get(type(st))
        if meth is None:
            raise CodegenError(f"backend {self.name} has no printer for the kernel "
                               f"statement {type(st).__name__}; register one with "
                               f"@prints(kernel.{type(st).__name__})")
        return getattr(self, meth)(st, sc)

    @prints(K.Comment)
    def st_Comment(self, st, sc):
        return [f"# {ln}" for ln in st.text.splitlines()]

    def expr(self, e, sc) -> str:
        """A scalar expression with its symbols under their final names."""
        return sc.rename_modules(self.printer.doprint(e))


    # ----------------------------------------------------------------- loading
    def compiled_dir(self, folder):
        """The folder where the backend's compiler writes the code of the modules in the
        cache folder ``folder``, as files named ``NAME.*`` after the module's entry
        (None: it writes none). The cache checksums them in the entry's record and
        counts, prunes and clears them with the entry."""
        return None

    def loader(self, entry, module, text: str, in_process=False) -> Loaded:
        """The imported module ``module`` of the cache entry ``entry`` (``rgraph.cache``),
        ready to call: a ``Loaded``."""
        return Loaded(entry, module, text, in_process)

    def load(self, path, modname):
        """Import a generated module file (registered in sys.modules before executing,
        which numba's on-disk cache needs). The source is compiled directly, so nothing
        but the module itself is written next to it (no .pyc to go stale or corrupt)."""
        if modname in sys.modules:
            return sys.modules[modname]
        with open(path, encoding="utf-8") as f:
            text = f.read()
        mod = types.ModuleType(modname)
        mod.__file__ = path
        sys.modules[modname] = mod
        try:
            exec(compile(text, path, "exec", dont_inherit=True), mod.__dict__)
        except BaseException:
            del sys.modules[modname]
            raise
        return mod


def sym_kind(s) -> tuple[str, str]:
    """(kind, base name) of an Ew symbol: "v" a value, tangent or cotangent of one
    element, "p" a partial derivative or a common subexpression."""
    kind, _, base = s.name.partition(":")
    return kind, base


class Scope:
    """The identifiers of one generated function: its arguments, loop indices and
    temporaries, allocated around the module's globals and the user's names."""

    def __init__(self, backend, mb, k: K.Kernel):
        self.backend, self.mb, self.k = backend, mb, k
        # locals avoid every module global; where the backend names no node offsets at
        # module level, the user's node names stay free for its locals (views)
        taken = set(mb.namer.taken)
        if not backend.offsets:
            taken -= set(mb.user.values()) - mb.user_globals
        self.namer = Namer(taken)
        self.sym: dict = {}
        self.views: dict = {}           # (buffer, node, role) -> a view's local name
        self.prologue: list[str] = []
        self.arg = {a: self.namer.claim(a) for a in k.args}
        self.idx = {c: self.namer.claim(c) for c in ("i", "j", "k")}
        self.acc = self.namer.claim("acc")
        self._cols = None
        self._nstreams = None
        self._b = None
        self._rows = {}
        self.stream = None      # the stream index, inside a loop over the streams

    @property
    def cols(self) -> str:
        """The number of tangent columns (a local, defined on first use)."""
        if self._cols is None:
            self._cols = self.namer.claim("ncols")
            self.prologue.append(f"{self._cols} = {self.arg['vd']}.shape[1]")
        return self._cols

    @property
    def nstreams(self) -> str:
        """The number of streams of a batched kernel (a local, defined on first use)."""
        if self._nstreams is None:
            self._nstreams = self.namer.claim("nstreams")
            self.prologue.append(f"{self._nstreams} = {self.arg[self.k.streams[0]]}"
                                 f".shape[0]")
        return self._nstreams

    def row(self, arg: str) -> str:
        """The name of one stream's row of a per-stream argument (a local)."""
        if arg not in self._rows:
            self._rows[arg] = self.namer.claim(self.arg[arg] + "_b")
        return self._rows[arg]

    @property
    def stream_index(self) -> str:
        if self._b is None:
            self._b = self.namer.claim("b")
        return self._b

    def name_of(self, s) -> str:
        if s not in self.sym:
            kind, base = sym_kind(s)
            self.sym[s] = self.namer.claim(base + (self.backend.ELEMENT if kind == "v"
                                                   else ""))
        return self.sym[s]

    def local(self, preferred: str) -> str:
        return self.namer.claim(preferred)

    def g(self, name: str) -> str:
        return self.mb.g(name)

    def buf(self, r: K.Ref) -> str:
        """The array a Ref indexes: a kernel argument, or a constant's array."""
        if r.buf == "const":
            return self.mb.user_name(r.anchor)
        return self.arg[r.buf]

    def rename_modules(self, text: str) -> str:
        for mod in ("math", "np"):
            final = self.g(mod) if mod + "." in text else mod
            if final != mod:
                text = re.sub(rf"(?<![\w.]){mod}\.", final + ".", text)
        for helper in set(re.findall(r"(?<![\w.])(rg_\w+)\(", text)):
            final = self.g(helper)
            if final != helper:
                text = re.sub(rf"(?<![\w.]){helper}\(", final + "(", text)
        return text

    def doc(self) -> str:
        args = ", ".join(self.arg[a] for a in self.k.args)
        return f"{self.k.doc}" + (f" ({args})" if any(self.arg[a] != a for a in self.k.args)
                                  else "")


def use_counts(st: K.Ew) -> tuple[Counter, Counter]:
    """How often each symbol is read: by the per-element part, by the per-column part."""
    return _reads(st.assigns, st.stores), _reads(st.col_assigns, st.col_stores)


def _reads(assigns, stores) -> Counter:
    count = Counter()
    for _, e in assigns:
        e = sp.sympify(e)
        for s in e.free_symbols:
            count[s] += e.count(s)
    for _, s, _ in stores:
        count[s] += 1
    return count
