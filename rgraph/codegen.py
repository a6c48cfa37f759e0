"""The module builder: kernels, constants, templates and helpers -> one generated file.

A generated module is self-contained (numba's cache is keyed on one file's bytes and
does not notice edits elsewhere) and reads top-down: a docstring naming the cell and the
estimator, the imports, the sizes, where each node lives, the kernels, the estimator,
the online loop, and last the small helpers. ``ModuleBuilder`` owns every identifier in
it:

* **Names.** The user's node names are claimed first, as they are; every identifier
  the builder itself introduces (kernels, constants, helpers, imports, arguments, loop
  indices, temporaries) is handed out by a ``Namer`` around them, with a numeric suffix
  where the preferred name is taken. Templates and helpers are written with their
  preferred names and renamed token by token.
* **Templates** are ordinary Python functions (``rgraph.estimators``,
  ``rgraph.training.loop``). Their free names are checked against what the module
  defines; their static choices (``if CHOICE:`` on a name the spec fixes) are resolved
  when the module is built, so only the branch taken is emitted; their estimator state
  and scratch buffers, declared as keyword-only parameters, are unpacked by generated
  lines, and calls to kernels are checked against the kernels' generated signatures.
* **Only what is used.** Definitions are emitted only if reachable from the module's
  entry points (its ``__all__``).

The file is named by a hash of its content and imported from the cache folder
(``rgraph.cache``), so tracebacks point at real lines and every process loads numba's
compiled code from disk.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import io
import keyword
import re
import symtable
import textwrap
import tokenize
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import kernel as K
from .errors import RGraphError

BUILTINS = frozenset(dir(builtins))


class CodegenError(RGraphError):
    """A template, helper or kernel does not fit the module it is put into."""


def cache_dir() -> Path:
    """Where new generated modules go: $RGRAPH_CACHE_DIR, else ~/.cache/rgraph, or a
    temporary folder where that cannot be written (see ``rgraph.cache``)."""
    from .cache import location
    return location().write


# ---------------------------------------------------------------------------- names
def identifier(name: str) -> str:
    """``name`` as Python source would see it (NFKC-normalized), or a safe stand-in."""
    norm = unicodedata.normalize("NFKC", name)
    if norm.isidentifier() and not keyword.iskeyword(norm):
        return norm
    cleaned = "".join(c if (c.isalnum() or c == "_") else "_" for c in norm)
    return cleaned if cleaned.isidentifier() and not keyword.iskeyword(cleaned) \
        else "n_" + cleaned


class Namer:
    """Hands out identifiers in one scope: each request gets its preferred name if it is
    free (not taken, not a keyword, not a builtin the code uses), else the name with the
    first free numeric suffix."""

    def __init__(self, taken=(), avoid=()):
        self.taken = set(taken)
        self.avoid = set(avoid)

    def claim(self, preferred: str) -> str:
        base = identifier(preferred)
        name, k = base, 1
        while name in self.taken or name in self.avoid or name in BUILTINS:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        return name

    def child(self) -> "Namer":
        return Namer(self.taken, self.avoid)


def index(*terms) -> str:
    """An index expression: the terms joined by " + ", without zero terms."""
    parts = [str(t) for t in terms if str(t) != "0"]
    return " + ".join(parts) if parts else "0"


def tuple_lines(opening: str, items, closing: str, indent: str, width: int = 88,
                sep: str = ", ") -> list:
    """``opening`` + the items as a tuple's elements (or joined by ``sep``) +
    ``closing``, wrapped into lines of at most ``width`` characters (continuation lines
    start with ``indent``)."""
    lines, line = [], opening
    for it in items:
        if len(line) + len(it) > width - len(sep):
            lines.append(line.rstrip())
            line = indent
        line += it + sep
    one = "," if len(items) == 1 and sep == ", " else ""
    return lines + [line.removesuffix(sep) + one + closing]


def rename(src: str, mapping: dict) -> str:
    """Rename the identifiers of ``src`` per ``mapping``, token by token (comments,
    strings and attribute names after a dot are left alone)."""
    if not any(a != b for a, b in mapping.items()):
        return src
    lines = src.splitlines(keepends=True)
    edits: dict[int, list] = {}
    prev = None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.NAME and tok.string in mapping and \
                mapping[tok.string] != tok.string and not (prev is not None and
                                                           prev.string == "."):
            edits.setdefault(tok.start[0], []).append((tok.start[1], tok.end[1],
                                                       mapping[tok.string]))
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            prev = tok
    for row, es in edits.items():
        line = lines[row - 1]
        for a, b, new in sorted(es, reverse=True):
            line = line[:a] + new + line[b:]
        lines[row - 1] = line
    return "".join(lines)


def names_in(src: str) -> tuple[set, set]:
    """(defined, used) module-level names of a block of top-level statements: what it
    binds, and what it and its functions read from the module's globals."""
    try:
        table = symtable.symtable(src, "<generated>", "exec")
    except SyntaxError as e:
        raise CodegenError(f"generated code does not parse ({e.msg}, line {e.lineno}):\n"
                           f"{src}") from None
    defined, used = set(), set()
    for s in table.get_symbols():
        if s.is_assigned() or s.is_imported() or s.is_namespace():
            defined.add(s.get_name())
        if s.is_referenced():
            used.add(s.get_name())
    stack = list(table.get_children())
    while stack:
        t = stack.pop()
        if t.get_type() == "function":
            used.update(t.get_globals())
        stack.extend(t.get_children())
    return defined, used - defined


# ------------------------------------------------------------------------ templates
@dataclass(frozen=True)
class Template:
    """A template function as it goes into a module: ``fn`` (a function, or the source
    of one) emitted under ``name``.

    With ``role`` ("step", "flush", "reset" or "batch") its signature is the role's, and
    its keyword-only parameters name the estimator-state views and scratch buffers it
    uses (unpacked by generated lines). A "batch" template steps every stream at once:
    its scratch buffers have a row per stream, and it reaches a stream's state through
    "part" templates, which take the stream's ``E`` (and the one-stream scratch ``W``)
    among parameters of their own and name its state views (and scratch buffers) as
    keyword-only parameters."""

    fn: object
    name: str
    role: str | None = None


ROLES = {
    "step": ("th", "s", "E", "x", "y", "w", "g", "rng", "W"),
    "flush": ("th", "E", "g", "rng", "W"),
    "reset": ("E",),
    "batch": ("th", "states", "E", "x", "y", "w", "g", "rng", "losses", "W"),
    "part": None,       # parameters of its own, with its stream's E (and W: scratch)
}


def template_source(fn) -> str:
    """A template's source: a function's, or a string holding one function."""
    return textwrap.dedent(fn if isinstance(fn, str) else inspect.getsource(fn))


def template_name(fn) -> str:
    if isinstance(fn, str):
        return ast.parse(textwrap.dedent(fn)).body[0].name
    return f"{fn.__name__} ({inspect.getsourcefile(fn)})"


def template_needs(t: Template, choices: dict) -> list[str]:
    """The keyword-only (state and scratch) names a role template reads once its
    static choices are resolved; a name the template first assigns is its own."""
    src = resolve_choices(template_source(t.fn), choices, template_name(t.fn))
    fn = ast.parse(src).body[0]
    kwonly = [a.arg for a in fn.args.kwonlyargs]
    first = {}
    for n in sorted((n for n in ast.walk(fn) if isinstance(n, ast.Name)),
                    key=lambda n: (n.lineno, n.col_offset)):
        first.setdefault(n.id, n)
    return [k for k in kwonly if k in first and isinstance(first[k].ctx, ast.Load)]


def resolve_choices(src: str, choices: dict, where: str) -> str:
    """Keep only the branch taken of every ``if CHOICE:`` / ``if not CHOICE:`` whose
    name is a static choice; the taken branch is dedented in place."""
    while True:
        tree = ast.parse(src)
        node = next((n for n in ast.walk(tree) if isinstance(n, ast.If)
                     and _choice(n.test, choices) is not None), None)
        if node is None:
            break
        taken = _choice(node.test, choices)
        lines = src.splitlines(keepends=True)
        end = node.end_lineno
        if taken:
            first, last = node.lineno + 1, node.body[-1].end_lineno
        elif node.orelse:
            first = next(i for i in range(node.body[-1].end_lineno + 1, end + 1)
                         if lines[i - 1].strip().startswith("else")) + 1
            last = node.orelse[-1].end_lineno
        else:
            first, last = 1, 0
        indent = len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())
        kept = lines[first - 1:last]
        inner = min((len(ln) - len(ln.lstrip()) for ln in kept if ln.strip()),
                    default=indent)
        kept = [ln[inner - indent:] if ln.strip() else ln for ln in kept]
        src = "".join(lines[:node.lineno - 1] + kept + lines[end:])
    for n in ast.walk(ast.parse(src)):
        if isinstance(n, ast.Name) and n.id in choices:
            raise CodegenError(f"{where}: static choice {n.id} is used outside "
                               f"'if {n.id}:' / 'if not {n.id}:'")
    return src


def _choice(test, choices):
    if isinstance(test, ast.Name) and test.id in choices:
        return bool(choices[test.id])
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and \
            isinstance(test.operand, ast.Name) and test.operand.id in choices:
        return not choices[test.operand.id]
    return None


def _shape_size(shape, K=1):
    return int(np.prod([K if d == "K" else d for d in shape]))


def layout_size(layout: dict, K: int = 1) -> int:
    """Floats a layout (name -> shape, "K" a run-time length) takes for a given K."""
    return sum(_shape_size(s, K) for s in layout.values())


def _views(mb, layout: dict, arg: str, names) -> list[str]:
    """Generated lines binding ``names`` to views of the flat array ``arg`` laid out as
    ``layout`` (fixed-size entries first, then the ones with a "K" dimension), each
    from the module-level offset named after it (``E_S_TILDE``)."""
    fixed = [(n, s) for n, s in layout.items() if "K" not in s]
    per_k = [(n, s) for n, s in layout.items() if "K" in s]
    nfix = layout_size(dict(fixed))
    views, pos = {}, 0
    for n, s in fixed:
        at = mb.state_offset(n, pos, s)
        views[n] = _slice(arg, at, f"{at} + {_shape_size(s)}", s)
        pos += _shape_size(s)
    off = mb.state_offset(per_k[0][0], pos, per_k[0][1]) if per_k else ""
    for n, s in per_k:
        end = f"{off} + K * {_shape_size(s)}"
        views[n] = _slice(arg, off, end, s)
        off = f"({end})"
    lines = []
    if any("K" in layout[n] for n in names):
        lines.append(f"K = ({arg}.shape[0] - {nfix}) // {layout_size(dict(per_k))}")
    lines += [f"{n} = {views[n]}" for n in names]
    return lines


def _unpack(names) -> str:
    """The line binding ``names`` to their scratch buffers (fields of the named tuple
    W)."""
    return f"{', '.join(names)} = " + ", ".join(f"W.{n}" for n in names)


def _slice(arg, start, end, shape):
    sl = f"{arg}[{start}:{end}]"
    if len(shape) > 1:
        sl += f".reshape(({', '.join(str(d) for d in shape)}))"
    return sl


# -------------------------------------------------------------------------- builder
@dataclass
class _Def:
    """One top-level piece of the module: its text and the names it binds and reads."""

    text: str
    section: str
    defines: set = field(default_factory=set)
    uses: set = field(default_factory=set)
    parts: list = field(default_factory=list)   # an import's (text, bound name) pairs;
    #                                             its text is then "import " / "from m import "
    order: int = 0             # position within its section (offsets: by value)


SECTIONS = ("imports", "sizes", "layout", "kernels", "estimator", "loop", "helpers")
SECTION_TITLES = {
    "sizes": "sizes and constants",
    "layout": "node offsets in v, vd, vb (states also in sd, nd); parameters' in th, thd, "
              "thb",
    "kernels": "kernels of one step",
    "estimator": "the estimator, one step of one stream",
    "loop": "the online loop",
    "helpers": "helpers",
}


class ModuleBuilder:
    """Builds one generated module (see the module docstring)."""

    def __init__(self, backend, title: str, doc: str = "", user_names=(),
                 aliases: dict | None = None, describe=None, reserved=()):
        self.backend = backend
        self.title = title
        self.doc = doc
        # the user's names first: builder globals are allocated around them (and around
        # ``reserved``: names code appended to the module will define, e.g. an export's)
        users = Namer(reserved)
        self.user = {n: users.claim(n) for n in user_names}
        self.namer = Namer(users.taken)
        self.gmap: dict[str, str] = {}          # preferred global name -> final name
        self.defs: list[_Def] = []
        self.kernel_args: dict[str, tuple] = {}
        self.aliases = dict(aliases or {})
        self.describe = describe or (lambda name: "")
        self.offsets: dict[str, int] = {}
        self.state_offsets: dict[str, int] = {}
        self.template_names: dict[str, str] = {}    # a template's own name -> its name here
        self.user_globals: set[str] = set()     # user names defined at module level

    def reserve(self, names):
        """Claim builder globals before any function is printed, so that no local name
        of a function shadows a global it reads."""
        for n in names:
            self.g(n)

    def offset(self, anchor: str, value: int, param: bool = False) -> str:
        """The module-level constant holding a node's offset (the node's own name);
        ``param``: an offset in th (listed after the values')."""
        name = self.user_name(anchor)
        self.user_globals.add(name)
        if anchor not in self.offsets:
            self.offsets[anchor] = value
            note = self.describe(anchor)
            self._add(f"{name} = {value}" + (f"  # {note}" if note else ""), "layout",
                      {name})
            self.defs[-1].order = value + (1 << 40 if param else 0)
        elif self.offsets[anchor] != value:
            raise CodegenError(f"node '{anchor}' is placed at two offsets ({value} and "
                               f"{self.offsets[anchor]})")
        return name

    def state_offset(self, buffer: str, value: int, shape) -> str:
        """The module-level constant holding where a stream's estimator state buffer
        starts in its flat E (``E_S_TILDE = 1``), defined once."""
        name = self.g(f"E_{buffer.upper()}")
        if name not in self.state_offsets:
            self.state_offsets[name] = value
            dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
            self._add(f"{name} = {value}  # {buffer} ({dims}) in a stream's state E",
                      "sizes", {name})
        return name

    def rendered(self, name: str, src: str, section: str):
        """A function written for this module with its final names already in place."""
        self._add(src, section, {self.g(name)})

    # -- names
    def g(self, preferred: str) -> str:
        """The final name of a module-level identifier the builder introduces."""
        if preferred in self.aliases:
            return self.g(self.aliases[preferred])
        if preferred not in self.gmap:
            self.gmap[preferred] = self.namer.claim(preferred)
        return self.gmap[preferred]

    def user_name(self, name: str) -> str:
        """The module-level identifier of a user's node (its own name where valid)."""
        return self.user[name]

    def _rename_map(self, src: str) -> dict:
        """Preferred -> final for every name ``src`` reads from the module's globals."""
        _, used = names_in(src)
        return {n: self.g(n) for n in used if n not in BUILTINS or n in self.gmap}

    def _local_map(self, src: str) -> dict:
        """A new name for every local a function of ``src`` assigns (not its parameters)
        that is also a module-level name (a user's node offset, a constant): no local
        shadows a global, whatever the user named the nodes."""
        module = set(self.gmap.values()) | self.user_globals
        out = {}
        for fn in symtable.symtable(src, "<generated>", "exec").get_children():
            params = set(fn.get_parameters()) if fn.get_type() == "function" else set()
            clash = [n.get_name() for n in fn.get_symbols() if n.is_assigned() and
                     n.is_local() and n.get_name() not in params and n.get_name() in module]
            if clash:
                own = Namer(module | set(re.findall(r"\w+", src)))
                out.update({n: own.claim(n) for n in clash})
        return out

    def needs(self, t: Template, choices: dict) -> list[str]:
        """The keyword-only (state and scratch) names a role template reads once its
        static choices are resolved (see ``template_needs``)."""
        return template_needs(t, choices)

    def _add(self, text: str, section: str, defines=None):
        d, u = names_in(text)
        self.defs.append(_Def(text.rstrip() + "\n", section, set(defines or d), u))

    # -- pieces
    def constant(self, preferred: str, value, comment: str = "", section="sizes",
                 user: bool = False) -> str:
        """A module-level number, array or table (``user``: a constant node of the cell,
        under the node's name). An array of several dimensions is the backend's flat
        array reshaped. A table is a tuple of rows of ints, written as Python literals
        (templates unpack its rows: ``for p, m in TABLE:``), a row a line where they do
        not fit one."""
        name = self.user_name(preferred) if user else self.g(preferred)
        if user:
            self.user_globals.add(name)
        note = f"  # {comment}" if comment else ""
        if isinstance(value, tuple):
            rows = [repr(tuple(int(x) for x in row)) for row in value]
            text = "\n".join(tuple_lines(f"{name} = (", rows, ")" + note, "    "))
            if len(text.splitlines()) > 1:
                text = "\n".join([f"{name} = (" + note] + [f"    {r}," for r in rows] + [")"])
            self._add(text, section, {name})
            return name
        rhs = self.backend.constant_value(value)
        if getattr(value, "ndim", 0) > 1:
            rhs += f".reshape({tuple(int(d) for d in value.shape)})"
        rhs = rename(rhs, self._rename_map(rhs))
        self._add(f"{name} = {rhs}{note}", section, {name})
        return name

    def kernel(self, k: K.Kernel):
        name = self.g(k.name)
        text = self.backend.kernel(k, name, self)
        self.kernel_args[k.name] = k.args
        self._add(text, "kernels", {name})

    def source(self, preferred: str, src: str, section: str):
        """A function given as source, under its preferred name (renamed as needed)."""
        name = self.g(preferred)
        src = rename(src, {**self._rename_map(src), **self._local_map(src), preferred: name})
        self._add(src, section, {name})

    def template(self, t: Template, section: str, choices: dict, state_layout: dict,
                 scratch: list):
        """A template function (see ``Template``); ``scratch`` collects the scratch
        buffers its role needs, in order."""
        where = f"template {template_name(t.fn)}"
        src = resolve_choices(template_source(t.fn), choices, where)
        tree = ast.parse(src)
        last = {name.rsplit(".", 1)[1] for name in self.backend.unsupported}
        for n in ast.walk(tree):
            call = ast.unparse(n) if isinstance(n, ast.Attribute) and n.attr in last else ""
            if call in self.backend.unsupported:
                raise CodegenError(f"{where} calls {call}, which the {self.backend.name} "
                                   f"backend does not allow: {self.backend.unsupported[call]}")
        fn = tree.body[0]
        kwonly = [a.arg for a in fn.args.kwonlyargs]
        head_end = fn.body[0].lineno - 1
        if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant):
            doc_end = fn.body[0].end_lineno
            body_start = fn.body[1].lineno if len(fn.body) > 1 else doc_end + 1
        else:
            doc_end, body_start = head_end, fn.body[0].lineno
        lines = src.splitlines(keepends=True)
        if t.role is None:
            if kwonly:
                raise CodegenError(f"{where}: only estimator roles take keyword-only "
                                   f"state and scratch parameters")
            params = [a.arg for a in fn.args.args]
            unpack = []
        else:
            positional = [a.arg for a in fn.args.args]
            if t.role == "part":
                params = positional
                if "E" not in params:
                    raise CodegenError(f"{where}: a part template takes its stream's "
                                       f"state E as a parameter")
                if "W" not in params:       # W: the one-stream scratch
                    scratch = []
            else:
                params = list(ROLES[t.role])
                expected = [p for p in params
                            if p != "W" and (p != "E" or t.role == "batch")]
                if positional != expected:
                    raise CodegenError(f"{where}: a {t.role} template takes "
                                       f"({', '.join(expected)}, *, <state and scratch "
                                       f"names>), got ({', '.join(positional)})")
                if t.role == "batch":
                    state_layout = {}
            kwonly = self.needs(t, choices)
            unknown = [n for n in kwonly if n not in state_layout and n not in scratch]
            state = [n for n in kwonly if n in state_layout]
            if unknown:
                raise CodegenError(f"{where}: {unknown} are neither estimator state "
                                   f"{list(state_layout)} nor scratch {scratch}")
            unpack = _views(self, state_layout, "E", state) if state else []
            bufs = [n for n in kwonly if n in scratch]
            while bufs:                     # the scratch buffers, as many as fit a line
                k = len(bufs)
                while k > 1 and len(_unpack(bufs[:k])) > 84:
                    k -= 1
                part, bufs = bufs[:k], bufs[k:]
                unpack.append(_unpack(part))
        indent = " " * (fn.body[0].col_offset)
        header = f"def {t.name}({', '.join(params)}):\n"
        text = (header + "".join(lines[head_end:doc_end])
                + "".join(indent + u + "\n" for u in unpack)
                + "".join(lines[body_start - 1:]))
        self._check_calls(text, where)
        mapping = self._rename_map(text)
        mapping[t.name] = self.g(t.name)
        for p in params:          # parameters and locals are the template's own
            mapping.pop(p, None)
        text = rename(text, {**mapping, **self._local_map(text)})
        self.template_names[template_name(t.fn).split(" (")[0]] = self.g(t.name)
        self._add(text, section, {self.g(t.name)})

    def _check_calls(self, src, where):
        for n in ast.walk(ast.parse(src)):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and \
                    n.func.id in self.kernel_args:
                want = self.kernel_args[n.func.id]
                if len(n.args) != len(want) or n.keywords:
                    raise CodegenError(f"{where}: calls kernel {n.func.id} with "
                                       f"{len(n.args)} arguments; it takes "
                                       f"({', '.join(want)})")

    def helpers(self, helpers: dict):
        """Offer helper definitions (name -> source); only the reachable ones are kept."""
        for name, src in helpers.items():
            self.source(name, src, "helpers")

    def imports(self, src: str):
        """The import lines and module-level set-up of the backend. Each imported name
        and each assignment is kept only if used."""
        tree = ast.parse(src)
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                parts, bound_order = [], []
                for a in node.names:
                    final = self.g(a.asname or a.name.split(".")[0])
                    bound_order.append(final)
                    parts.append(a.name + (f" as {final}" if final != a.name else ""))
                bound = set(bound_order)
                head = (f"from {node.module} import " if isinstance(node, ast.ImportFrom)
                        else "import ")
                self.defs.append(_Def(head, "imports", bound, set(),
                                      parts=list(zip(parts, bound_order))))
                continue
            text = ast.get_source_segment(src, node)
            bound, _ = names_in(text)
            text = rename(text, {**self._rename_map(text), **{n: self.g(n) for n in bound}})
            d, u = names_in(text)
            if not d:
                raise CodegenError(f"backend {self.backend.name}: its set-up statement "
                                   f"{text!r} binds no name; module-level code must define "
                                   f"what it sets up, so that it is kept where used")
            self.defs.append(_Def(text + "\n", "imports", d, u))

    # -- output
    def render(self, entry: list[str]) -> str:
        """The module's text: the definitions reachable from ``entry`` (the ``__all__``)
        and from the backend's compile block, each checked to read only names the
        module defines."""
        final_entry = [self.g(e) for e in entry]
        by_name = {}
        for d in self.defs:
            for n in d.defines:
                by_name.setdefault(n, []).append(d)
        keep = set()

        def reach(names):
            todo = list(names)
            while todo:
                n = todo.pop()
                if n in BUILTINS and n not in by_name:
                    continue
                if n not in by_name:
                    raise CodegenError(self._undefined(n))
                for d in by_name[n]:
                    if id(d) not in keep:
                        keep.add(id(d))
                        todo.extend(d.uses)

        reach(final_entry)
        fdefs = [(n.name, d.section, n) for sec in SECTIONS if sec != "imports"
                 for d in sorted((d for d in self.defs if id(d) in keep and
                                  d.section == sec), key=lambda d: d.order)
                 for n in ast.parse(d.text).body if isinstance(n, ast.FunctionDef)]
        functions = [name for name, _, _ in fdefs]
        block = self.backend.compile_block(functions, self,
                                           inline=self._inlined(fdefs, final_entry))
        if block:
            reach(names_in(block)[1])
        kept = [d for d in self.defs if id(d) in keep]
        # a docstring names a template by the name it has in this module
        refs = re.compile(r"``(" + "|".join(map(re.escape, self.template_names)) + r")``") \
            if self.template_names else None
        for d in kept if refs else ():
            d.text = refs.sub(lambda m: f"``{self.template_names[m.group(1)]}``", d.text)
        out = [self._docstring(), ""]
        for sec in SECTIONS:
            items = sorted((d for d in kept if d.section == sec), key=lambda d: d.order)
            if not items:
                continue
            if sec == "imports":
                used = set().union(*(d.uses for d in kept)) | set(final_entry) | \
                    (names_in(block)[1] if block else set())
                for d in items:      # an import statement keeps the names the module uses
                    parts = [p for p, name in d.parts if name in used]
                    out.append(d.text + ", ".join(parts) if d.parts else d.text.rstrip())
                out.append(f"__all__ = [{', '.join(repr(e) for e in final_entry)}]")
                continue
            out += ["", f"# {'-' * 4} {SECTION_TITLES[sec]}"]
            compact = sec in ("sizes", "layout")
            for d in items:
                out.append(d.text.rstrip() if compact else "\n" + d.text.rstrip())
        if block:
            out += ["", block.rstrip()]
        return "\n".join(out).rstrip() + "\n"

    @staticmethod
    def _inlined(fdefs, entry) -> list[str]:
        """The templates (estimator and loop sections) called from exactly one place and
        not entry points: a backend may compile them into their caller rather than as
        functions of their own (kernels and helpers stay functions: they are large, or
        called from many places)."""
        calls: dict = {}
        for _, _, node in fdefs:
            for c in ast.walk(node):
                if isinstance(c, ast.Call) and isinstance(c.func, ast.Name):
                    calls[c.func.id] = calls.get(c.func.id, 0) + 1
        return [name for name, sec, _ in fdefs
                if sec in ("estimator", "loop") and name not in entry
                and calls.get(name, 0) == 1]

    def _undefined(self, n):
        users = [d.text.splitlines()[0] for d in self.defs if n in d.uses]
        return (f"generated module for {self.title}: '{n}' is used by {users[:3]} but "
                f"defined nowhere (a template or helper names something the module does "
                f"not define)")

    def _docstring(self) -> str:
        body = self.title + ("\n\n" + self.doc if self.doc else "")
        return '"""' + body.replace('"""', "'''") + '"""'


def load(source: str, backend, stem: str, in_process: bool = False):
    """Write ``source`` to the cache (once) and import it: the backend's loader (a
    ``Loaded``: its ``module``, ``path``, and ``prepare``/``call`` for its functions)."""
    from importlib.metadata import version

    from . import cache
    header = (f"# Generated by rgraph {version('rgraph')} ({backend.version()}); "
              f"do not edit.\n")
    return cache.load(source, backend, stem, header, in_process)
