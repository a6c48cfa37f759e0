"""The backend-neutral kernel description that backends print.

A kernel is a function over flat buffers of one stream:

* ``th``   (P,)         trainable parameters, each a contiguous row-major block;
* ``v``    (NV,)        the value of every non-parameter node of one step;
  ``v[:S]`` is the previous state, ``v[S:S+X]`` the input;
* ``vd``   (NV,) or (NV, K)   tangents of values (one column, or K at once), except
* ``sd``   (S,) or (S, K)     the previous state's tangents (the caller's seed) and
* ``nd``   (S,) or (S, K)     the new state's tangents (the result), in state order;
* ``thd``  (R,) or (R, K)     tangents of the recurrent parameters (dense);
* ``vb``   (NV,)        cotangents of values; ``thb`` (P,) of parameters.

Constants are module-level arrays ``C_<name>`` (their values are printed as literals).
A ``Ref`` names a block of one buffer; statements read and write Refs. Backends print
each statement type: scalar loops for numba, array expressions for numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TANGENT_BUFS = ("vd", "thd", "sd", "nd")


@dataclass(frozen=True)
class Ref:
    """Elements ``[off, off + n)`` of buffer ``buf``; ``cols > 0`` views them as (n, cols).

    ``name`` is the readable local name a backend gives the view (a node name plus
    ``_dot`` / ``_bar``), or empty for an unnamed piece of a larger view.
    """

    buf: str
    off: int
    n: int
    name: str = ""
    cols: int = 0

    @property
    def size(self) -> int:
        return self.n * self.cols if self.cols else self.n

    @property
    def is_tangent(self) -> bool:
        return self.buf in TANGENT_BUFS

    def rows(self, start: int, n: int) -> "Ref":
        """Rows ``[start, start + n)`` of a vector ref (an unnamed view)."""
        return Ref(self.buf, self.off + start, n)

    def __repr__(self):
        return self.name or f"{self.buf}[{self.off}:{self.off + self.size}]"


@dataclass(frozen=True)
class Basis:
    """The identity tangent of a recurrent parameter block (RTRL): column ``off + r``
    of the block's row ``r`` is 1, every other entry 0. ``cols`` as in Ref."""

    off: int
    n: int
    cols: int = 0


# ------------------------------------------------------------------------ statements
# Every statement names what it writes first. ``acc`` means "+=" instead of "=".


@dataclass(frozen=True)
class Comment:
    text: str


@dataclass(frozen=True)
class Zero:
    """dst = 0 (a vector ref; whole rows for a tangent)."""

    dst: Ref


@dataclass(frozen=True)
class Copy:
    """dst (+)= src, both vectors or both tangents of equal length."""

    dst: Ref
    src: Ref
    acc: bool = False


@dataclass(frozen=True)
class Identity:
    """dst[i, :] = 0 and dst[i, off + i] = 1: an identity tangent written out."""

    dst: Ref
    off: int


@dataclass(frozen=True)
class MatVec:
    """out (+)= W[:, col0:col0 + a.n] @ a; with tangents (a and out in vd) it is a matrix
    product. ``col0`` and a shorter ``a`` multiply by a block of W's columns only (see
    ``skip_zero_rows``)."""

    out: Ref
    W: Ref
    a: Ref
    acc: bool = False
    col0: int = 0

    @property
    def whole(self) -> bool:
        return self.col0 == 0 and self.a.n == self.W.cols


@dataclass(frozen=True)
class MatVecT:
    """a_bar += W^T @ z_bar."""

    a_bar: Ref
    W: Ref
    z_bar: Ref


@dataclass(frozen=True)
class Outer:
    """W_bar (+)= z_bar a^T (W_bar a block of thb)."""

    W_bar: Ref
    z_bar: Ref
    a: Ref
    acc: bool = True


@dataclass(frozen=True)
class ParamTangent:
    """out_dot[i] (+)= sum_j W_dot[i, j] a[j]: the tangent of ``W @ a`` due to W.

    ``W_dot`` is a dense ``thd`` ref (viewed (m, k) per tangent column) or a ``Basis``.
    """

    out_dot: Ref
    W_dot: object
    a: Ref
    acc: bool = False


@dataclass(frozen=True)
class Ew:
    """A fused elementwise loop over ``n`` elements (index ``i``).

    Per element: ``loads`` (sym, ref) read scalars (a ref of length 1 broadcasts),
    ``assigns`` (sym, expr) compute scalars, ``stores`` (ref, sym, acc) write them.
    Tangent part, when ``col_assigns`` is not empty: for each tangent column, the
    ``col_loads`` (sym, ref), ``col_basis`` (sym, Basis: the identity tangent of a
    parameter element, 1 in column ``off + i``), ``col_assigns`` and ``col_stores``.
    """

    n: int
    comment: str
    loads: tuple = ()
    assigns: tuple = ()
    stores: tuple = ()
    col_loads: tuple = ()
    col_basis: tuple = ()
    col_assigns: tuple = ()
    col_stores: tuple = ()


@dataclass
class Kernel:
    """A generated function: its name, buffer arguments, docstring and statements.

    ``matrix`` is True when tangents carry K columns (``vd``/``thd`` are 2-D).
    """

    name: str
    args: tuple
    doc: str
    matrix: bool = False
    body: list = field(default_factory=list)

    def refs(self) -> list[Ref]:
        """Every named Ref the body uses, once each (backends declare them as views)."""
        seen: dict[str, Ref] = {}

        def visit(x):
            if isinstance(x, Ref):
                if x.name and x.name not in seen:
                    seen[x.name] = x
            elif isinstance(x, tuple):
                for y in x:
                    visit(y)

        for st in self.body:
            for val in vars(st).values():
                visit(val)
        return list(seen.values())

    def __repr__(self):
        return f"Kernel({self.name!r}, args={self.args}, {len(self.body)} statements)"


# ------------------------------------------------------------------------ passes

def written(st) -> list:
    """The Refs a statement writes."""
    if isinstance(st, Comment):
        return []
    if isinstance(st, Ew):
        return [r for r, *_ in st.stores + st.col_stores]
    return [next(iter(vars(st).values()))]        # statements name what they write first


def read(st) -> list | None:
    """The Refs a statement reads (None: unknown, assume everything)."""
    if isinstance(st, (Comment, Zero, Identity)):
        return []
    if isinstance(st, Copy):
        return [st.src] + ([st.dst] if st.acc else [])
    if isinstance(st, MatVec):
        return [st.W, st.a] + ([st.out] if st.acc else [])
    if isinstance(st, MatVecT):
        return [st.W, st.z_bar, st.a_bar]
    if isinstance(st, Outer):
        return [st.z_bar, st.a] + ([st.W_bar] if st.acc else [])
    if isinstance(st, ParamTangent):
        return [st.a] + ([st.W_dot] if isinstance(st.W_dot, Ref) else []) + \
            ([st.out_dot] if st.acc else [])
    if isinstance(st, Ew):
        return [r for _, r in st.loads + st.col_loads] + \
            [r for r, _, acc in st.stores + st.col_stores if acc]
    return None


def _overlap(r: Ref, q: Ref) -> bool:
    return r.buf == q.buf and r.off < q.off + q.size and q.off < r.off + r.size


def skip_zero_rows(body: list) -> list:
    """Products with a vector some of whose rows are known zeros multiply by the other
    rows only, and read rows that are plain copies from where they were copied.

    A jvp through ``W @ concat(h, x, 1)`` has the tangent ``[h_dot, 0, 0]``: the
    concatenation writes ``Zero`` rows and copies ``h_dot``, and the product would
    multiply through the zeros (for KF-RTRL's matrix tangent, a GEMM
    ``(|z| + |x| + 1)/|z|`` times too large). Rows last written by a ``Zero`` (or a
    ``Copy`` of such rows) are tracked per buffer, and so are plain copies whose source
    and destination are unchanged since; a ``MatVec`` reading such rows is split into
    one product per run of other rows, each on its block of W's columns (``col0``) and
    reading a copy's source directly, and into nothing (or a ``Zero`` of its output) if
    every row is zero. The copies themselves stay (``drop_dead_writes`` removes them
    where nothing reads them).
    """
    zero: dict[str, set] = {}
    copies: list[Copy] = []          # live plain copies, most recent last

    def is_zero(r):
        return all(i in zero.get(r.buf, ()) for i in range(r.off, r.off + r.n))

    def mark(r, z):
        rows = zero.setdefault(r.buf, set())
        span = range(r.off, r.off + r.size)
        if z:
            rows.update(span)
        else:
            rows.difference_update(span)
        copies[:] = [c for c in copies if not (_overlap(c.dst, r) or _overlap(c.src, r))]

    def source(r):
        """Where the rows of r were copied from, if one live copy holds them all."""
        for c in reversed(copies):
            if c.dst.buf == r.buf and c.dst.off <= r.off and \
                    r.off + r.n <= c.dst.off + c.dst.n:
                return c.src.rows(r.off - c.dst.off, r.n)
        return r

    out = []
    for st in body:
        if isinstance(st, MatVec) and st.whole and st.W.buf not in TANGENT_BUFS:
            zs = zero.get(st.a.buf, set())
            flags = [st.a.off + j in zs for j in range(st.a.n)]
            runs, j = [], 0
            while j < len(flags):
                if flags[j]:
                    j += 1
                    continue
                j0 = j
                while j < len(flags) and not flags[j]:
                    j += 1
                runs.append((j0, j - j0))
            srcs = [source(st.a.rows(j0, n)) for j0, n in runs]
            if any(flags) or any(r.buf != st.a.buf or r.off != st.a.off + j0
                                 for r, (j0, _) in zip(srcs, runs, strict=True)):
                acc = st.acc
                for (j0, n), r in zip(runs, srcs, strict=True):
                    out.append(MatVec(st.out, st.W, r, acc, j0))
                    acc = True
                if not acc:                 # every row zero, nothing to add to
                    out.append(Zero(st.out))
                    mark(st.out, True)
                elif runs:
                    mark(st.out, False)
                continue
        if isinstance(st, Zero):
            mark(st.dst, True)
        elif isinstance(st, Copy):
            keep_zero = is_zero(st.src) and (not st.acc or is_zero(st.dst))
            mark(st.dst, keep_zero)
            if not st.acc and not keep_zero and not _overlap(st.src, st.dst):
                copies.append(st)
        else:
            for r in written(st):
                mark(r, False)
        out.append(st)
    return out


def drop_dead_writes(body: list, keep: list) -> list:
    """Remove the ``Copy`` and ``Zero`` statements into ``vd`` whose rows no later
    statement reads and that are not rows in ``keep`` (what the kernel's caller reads).
    Conservative: a statement of unknown reads keeps everything before it."""
    live: list[Ref] = list(keep)
    dead = set()
    for i in range(len(body) - 1, -1, -1):
        st = body[i]
        dst = st.dst if isinstance(st, (Copy, Zero)) else None
        if dst is not None and dst.buf == "vd" and not any(_overlap(dst, r) for r in live):
            dead.add(i)
            continue
        reads = read(st)
        if reads is None:
            break
        live.extend(r for r in reads if isinstance(r, Ref))
    # a comment whose statements (up to the next comment) are all gone goes too
    bounds = [i for i, st in enumerate(body) if isinstance(st, Comment)] + [len(body)]
    for a, b in zip(bounds, bounds[1:]):
        if b > a + 1 and all(j in dead for j in range(a + 1, b)):
            dead.add(a)
    return [st for i, st in enumerate(body) if i not in dead]
