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

A ``Ref`` names a block of one buffer. It remembers the node it belongs to (its
*anchor*), so that printers can write ``v[h_new + i]`` or a view named after the node
rather than bare numbers. Statements are frozen dataclasses that declare what they read
and write (``reads()`` / ``writes()``); linear statements know their transpose, which is
how reverse mode is derived from forward mode for the structural ops (see ``ops``).
Backends print each statement type: scalar loops for numba, array expressions for numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

TANGENT_BUFS = ("vd", "thd", "sd", "nd")


@dataclass(frozen=True)
class Ref:
    """Elements ``[off, off + n)`` of buffer ``buf``; ``cols > 0`` views them as (n, cols).

    ``anchor`` is the node the block belongs to (its name), ``aoff`` and ``an`` that
    node's whole block in the same buffer, and ``role`` what the block holds ("" a
    value, "dot" a tangent, "bar" a cotangent). A Ref without an anchor is a scratch
    argument of the kernel (``src``, ``dst``).
    """

    buf: str
    off: int
    n: int
    cols: int = 0
    anchor: str = ""
    aoff: int = 0
    an: int = 0
    role: str = ""

    @property
    def size(self) -> int:
        return self.n * self.cols if self.cols else self.n

    @property
    def is_tangent(self) -> bool:
        return self.buf in TANGENT_BUFS

    @property
    def delta(self) -> int:
        """Offset of the block within its anchor's block."""
        return self.off - self.aoff

    @property
    def whole(self) -> bool:
        """The Ref is its anchor's whole block."""
        return self.off == self.aoff and self.n == self.an

    def rows(self, start: int, n: int) -> "Ref":
        """Rows ``[start, start + n)`` of a vector ref (same anchor)."""
        return replace(self, off=self.off + start, n=n, cols=0)

    def in_buf(self, buf: str, role: str) -> "Ref":
        """The same block in another buffer, at the same offsets (a tangent or cotangent
        of the value)."""
        return replace(self, buf=buf, role=role)

    def overlaps(self, other: "Ref") -> bool:
        return (self.buf == other.buf and self.off < other.off + other.size
                and other.off < self.off + self.size)

    def __repr__(self):
        label = f"{self.anchor}{'_' + self.role if self.role else ''}"
        return f"{self.buf}[{self.off}:{self.off + self.size}]" + (f"({label})" if label else "")


@dataclass(frozen=True)
class Basis:
    """The identity tangent of a recurrent parameter block (RTRL): column ``off + r``
    of the block's row ``r`` is 1, every other entry 0. ``cols`` as in Ref."""

    off: int
    n: int
    cols: int = 0


# ------------------------------------------------------------------------ statements
# ``acc`` means "+=" instead of "=". Every statement lists its reads and writes.


@dataclass(frozen=True)
class Comment:
    text: str

    def reads(self):
        return ()

    def writes(self):
        return ()


@dataclass(frozen=True)
class Clear:
    """dst = 0 (a vector ref; whole rows for a tangent)."""

    dst: Ref

    def reads(self):
        return ()

    def writes(self):
        return (self.dst,)


@dataclass(frozen=True)
class Copy:
    """dst (+)= src, both vectors or both tangents of equal length. Linear in src."""

    dst: Ref
    src: Ref
    acc: bool = False

    def reads(self):
        return (self.src,) + ((self.dst,) if self.acc else ())

    def writes(self):
        return (self.dst,)

    def transpose(self):
        """Read with cotangents in place of tangents: src_bar += dst_bar."""
        return Copy(self.src, self.dst, True)


@dataclass(frozen=True)
class Identity:
    """dst[i, :] = 0 and dst[i, off + i] = 1: an identity tangent written out."""

    dst: Ref
    off: int

    def reads(self):
        return ()

    def writes(self):
        return (self.dst,)


@dataclass(frozen=True)
class MatVec:
    """out (+)= W[:, col0:col0 + a.n] @ a; with tangents (a and out in vd) it is a matrix
    product. ``col0`` and a shorter ``a`` multiply by a block of W's columns only (see
    ``skip_zero_rows``). Linear in a."""

    out: Ref
    W: Ref
    a: Ref
    acc: bool = False
    col0: int = 0

    @property
    def all_columns(self) -> bool:
        return self.col0 == 0 and self.a.n == self.W.cols

    def reads(self):
        return (self.W, self.a) + ((self.out,) if self.acc else ())

    def writes(self):
        return (self.out,)

    def transpose(self):
        """Read with cotangents in place of tangents: a_bar += Wᵀ out_bar."""
        return MatVecT(self.a, self.W, self.out)


@dataclass(frozen=True)
class MatVecT:
    """a_bar += W^T @ z_bar."""

    a_bar: Ref
    W: Ref
    z_bar: Ref

    def reads(self):
        return (self.W, self.z_bar, self.a_bar)

    def writes(self):
        return (self.a_bar,)


@dataclass(frozen=True)
class Outer:
    """W_bar (+)= z_bar a^T (W_bar a block of thb)."""

    W_bar: Ref
    z_bar: Ref
    a: Ref
    acc: bool = True

    def reads(self):
        return (self.z_bar, self.a) + ((self.W_bar,) if self.acc else ())

    def writes(self):
        return (self.W_bar,)


@dataclass(frozen=True)
class ParamTangent:
    """out_dot[i] (+)= sum_j W_dot[i, j] a[j]: the tangent of ``W @ a`` due to W.

    ``W_dot`` is a dense ``thd`` ref (viewed (m, k) per tangent column) or a ``Basis``.
    Linear in W_dot.
    """

    out_dot: Ref
    W_dot: object
    a: Ref
    acc: bool = False

    def reads(self):
        return ((self.a,) + ((self.W_dot,) if isinstance(self.W_dot, Ref) else ())
                + ((self.out_dot,) if self.acc else ()))

    def writes(self):
        return (self.out_dot,)

    def transpose(self):
        """Read with cotangents in place of tangents: W_bar += out_bar aᵀ."""
        return Outer(self.W_dot, self.out_dot, self.a)


@dataclass(frozen=True)
class Ew:
    """A fused elementwise loop over ``n`` elements (index ``i``).

    Per element: ``loads`` (sym, ref) read scalars (a ref of length 1 broadcasts),
    ``assigns`` (sym, expr) compute scalars, ``stores`` (ref, sym, acc) write them.
    Tangent part, when ``col_assigns`` is not empty: for each tangent column, the
    ``col_loads`` (sym, ref), ``col_basis`` (sym, Basis: the identity tangent of an
    element, 1 in column ``off + i``), ``col_assigns`` and ``col_stores``.
    ``notes`` maps an assigned symbol to the user's expression it computes (printed as
    a comment beside it). ``diagonal``: every tangent is an identity basis known
    symbolically and the stores go to ``nd`` only, so element i's tangent is non-zero in
    one column per basis and only those entries are written (the caller keeps the
    others zero).
    """

    n: int
    loads: tuple = ()
    assigns: tuple = ()
    stores: tuple = ()
    col_loads: tuple = ()
    col_basis: tuple = ()
    col_assigns: tuple = ()
    col_stores: tuple = ()
    notes: tuple = ()
    diagonal: bool = False

    def reads(self):
        return (tuple(r for _, r in self.loads + self.col_loads)
                + tuple(r for r, _, acc in self.stores + self.col_stores if acc))

    def writes(self):
        return tuple(r for r, *_ in self.stores + self.col_stores)



@dataclass
class Kernel:
    """A generated function: its name, buffer arguments, docstring and statements.

    ``matrix`` is True when tangents carry K columns (``vd``/``thd`` are 2-D);
    ``streams`` names the arguments with a leading stream axis (see ``batched``).
    """

    name: str
    args: tuple
    doc: str
    matrix: bool = False
    body: list = field(default_factory=list)
    streams: tuple = ()

    def __repr__(self):
        return f"Kernel({self.name!r}, args={self.args}, {len(self.body)} statements)"


# ------------------------------------------------------------------------ passes

def skip_zero_rows(body: list) -> list:
    """Products with a vector some of whose rows are known zeros multiply by the other
    rows only, and read rows that are plain copies from where they were copied.

    A jvp through ``W @ concat(h, x, 1)`` has the tangent ``[h_dot, 0, 0]``: the
    concatenation clears rows and copies ``h_dot``, and the product would multiply
    through the zeros (for KF-RTRL's matrix tangent, a GEMM ``(|z| + |x| + 1)/|z|``
    times too large). Rows last written by a ``Clear`` (or a ``Copy`` of such rows) are
    tracked per buffer, and so are plain copies whose source and destination are
    unchanged since; a ``MatVec`` reading such rows is split into one product per run of
    other rows, each on its block of W's columns (``col0``) and reading a copy's source
    directly, and into nothing (or a ``Clear`` of its output) if every row is zero. The
    copies themselves stay (``drop_dead_writes`` removes them where nothing reads them).
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
        copies[:] = [c for c in copies if not (c.dst.overlaps(r) or c.src.overlaps(r))]

    def source(r):
        """Where the rows of r were copied from, if one live copy holds them all."""
        for c in reversed(copies):
            if c.dst.buf == r.buf and c.dst.off <= r.off and \
                    r.off + r.n <= c.dst.off + c.dst.n:
                return c.src.rows(r.off - c.dst.off, r.n)
        return r

    out = []
    for st in body:
        if isinstance(st, MatVec) and st.all_columns and st.W.buf not in TANGENT_BUFS:
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
                    out.append(Clear(st.out))
                    mark(st.out, True)
                elif runs:
                    mark(st.out, False)
                continue
        if isinstance(st, Clear):
            mark(st.dst, True)
        elif isinstance(st, Copy):
            keep_zero = is_zero(st.src) and (not st.acc or is_zero(st.dst))
            mark(st.dst, keep_zero)
            if not st.acc and not keep_zero and not st.src.overlaps(st.dst):
                copies.append(st)
        else:
            for r in st.writes():
                mark(r, False)
        out.append(st)
    return out


def drop_dead_writes(body: list, keep: list) -> list:
    """Remove the ``Copy`` and ``Clear`` statements into ``vd`` whose rows no later
    statement reads and that are not rows in ``keep`` (what the kernel's caller reads)."""
    live: list[Ref] = list(keep)
    dead = set()
    for i in range(len(body) - 1, -1, -1):
        st = body[i]
        dst = st.dst if isinstance(st, (Copy, Clear)) else None
        if dst is not None and dst.buf == "vd" and not any(dst.overlaps(r) for r in live):
            dead.add(i)
            continue
        live.extend(r for r in st.reads() if isinstance(r, Ref))
    # a comment whose statements (up to the next comment) are all gone goes too
    bounds = [i for i, st in enumerate(body) if isinstance(st, Comment)] + [len(body)]
    for a, b in zip(bounds, bounds[1:]):
        if b > a + 1 and all(j in dead for j in range(a + 1, b)):
            dead.add(a)
    return [st for i, st in enumerate(body) if i not in dead]


# ------------------------------------------------------------------------ streams

@dataclass(frozen=True)
class ForStreams:
    """``body`` for each stream of the batch in turn: inside, a per-stream buffer's Ref
    indexes that stream's row (see ``batched``)."""

    body: tuple

    def reads(self):
        return tuple(r for st in self.body for r in st.reads())

    def writes(self):
        return tuple(r for st in self.body for r in st.writes())


@dataclass(frozen=True)
class OverStreams:
    """A product done once for all the streams: a ``MatVec`` or ``MatVecT`` with a
    shared matrix becomes one GEMM with the streams as the columns of its vectors
    (``W @ [a_1 ... a_B]``), and an ``Outer`` into a shared block sums the streams'
    outer products in one GEMM (``Σ_b z̄_b a_bᵀ``)."""

    st: object

    def reads(self):
        return self.st.reads()

    def writes(self):
        return self.st.writes()


def batched(k: Kernel, name: str, shared=("th", "const")) -> Kernel:
    """The kernel over a batch of streams: every buffer not in ``shared`` gets a leading
    stream axis (``v`` is (B, NV)). Products with a shared matrix run once for all the
    streams (``OverStreams``); the other statements run per stream (``ForStreams``).

    A shared buffer may only be added to (``+=``): the streams' contributions sum, as
    the gradient's do. An ``Outer`` into a shared block is a sum over the streams too.
    """
    if k.matrix:
        raise ValueError(f"kernel {k.name}: batching a kernel with K tangent columns "
                         f"is not supported")
    shared = frozenset(shared)

    def own(r):
        return isinstance(r, Ref) and r.buf not in shared

    def over(st):
        if isinstance(st, MatVec):
            return not own(st.W) and own(st.a) and own(st.out)
        if isinstance(st, MatVecT):
            return not own(st.W) and own(st.z_bar) and own(st.a_bar)
        if isinstance(st, Outer):
            return not own(st.W_bar) and own(st.z_bar) and own(st.a)
        return False

    body, run = [], []

    def close_run():
        notes = []              # the comments ending a run describe what follows it
        while run and isinstance(run[-1], Comment):
            notes.insert(0, run.pop())
        if run:
            body.append(ForStreams(tuple(run)))
        body.extend(notes)
        run.clear()

    for st in k.body:
        if over(st):
            close_run()
            body.append(OverStreams(st))
            continue
        for r in st.writes():
            if not own(r) and not _adds(st, r):
                raise ValueError(f"kernel {k.name}: {type(st).__name__} overwrites the "
                                 f"shared buffer {r.buf} ({r!r}); over a batch of "
                                 f"streams a shared buffer can only be added to")
        run.append(st)
    close_run()
    return Kernel(name, k.args, k.doc + " For every stream of a batch (one row each).",
                  False, body, tuple(a for a in k.args if a not in shared))


def _adds(st, r) -> bool:
    """Whether statement st only adds into r (never overwrites it)."""
    if isinstance(st, (Comment, MatVecT)):
        return True
    if isinstance(st, Ew):
        return all(acc for ref, _, acc in st.stores + st.col_stores if ref == r)
    return bool(getattr(st, "acc", False))      # Clear and Identity have no acc
