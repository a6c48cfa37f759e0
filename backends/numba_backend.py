"""The numba backend: scalar loops under ``@njit(cache=True)``.

Measured choices (numba 0.68, 2 cores): scalar loops rather than array expressions
(array-expression code compiled 7-12x slower and, at n = 256, ran slower than plain
numpy); "safe" fastmath (reassociation and contraction, as fast as ``fastmath=True``
but never ``nnan``/``ninf``, under which ``np.isnan`` of a real NaN returned False);
numpy's error model (a float division by zero gives inf, which the loop's finiteness
checks report, instead of a branch per division that keeps every loop with a ``/``
from vectorizing: Adam's update ran 8x slower); matrix tangents multiply through
``rg_gemm_rm`` (BLAS GEMM with a leading dimension, on W or a block of its columns,
without a copy), streams through ``rg_gemm``: both call the CBLAS that numpy's wheels
bundle, registered with LLVM in the module's set-up, not numba's ``np.dot``, which needs
scipy (as fast as ``np.dot(A, B, out)`` and numba's scipy entry, and the same bits; a
3x4 block's product 1.8x faster, no arrays made for alpha and beta); every helper lives
in the generated module itself, because numba's cache is keyed on one file's bytes and
was seen to return stale code when a function in another file changed.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from rgraph import kernel as K

from rgraph.codegen import index, tuple_lines

from . import numba_loader
from .base import Backend, PrinterRules, prints, split_defs, sym_kind, use_counts

FASTMATH = "{'reassoc', 'contract', 'arcp', 'nsz'}"


class ScalarPrinter(PrinterRules, PythonCodePrinter):
    """Scalar expressions as ``math`` calls and rgraph's stable helpers."""

    BACKEND = "numba"


IMPORTS = f'''
import math
import numpy as np
from numba import njit, types

FASTMATH = {FASTMATH}


def _rg_cblas_gemm(kind):
    """numpy's own BLAS's cblas_?gemm (64-bit integers; kind "d" or "s"), registered
    with LLVM under the name the compiled code calls, so that numba can call it, cache
    the caller, and load it in another process; needs neither scipy nor another BLAS."""
    import ctypes
    from llvmlite import binding
    try:
        from numpy._core import _multiarray_umath as linked
    except ImportError:
        from numpy.core import _multiarray_umath as linked
    lib = ctypes.CDLL(linked.__file__)     # its symbols, and those of the BLAS it links
    for symbol in ("scipy_cblas_" + kind + "gemm64_", "cblas_" + kind + "gemm64_"):
        if hasattr(lib, symbol):
            break
    else:
        raise ImportError("numba modules of rgraph call the 64-bit-integer CBLAS that "
                          "numpy's wheels bundle (scipy_cblas_dgemm64_), which this numpy "
                          "(" + np.__version__ + ") lacks: install numpy's wheel from "
                          "PyPI (pip install numpy), or use the numpy backend")
    name = "rg_cblas_" + kind + "gemm64"
    binding.add_symbol(name, ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value)
    real = types.float64 if kind == "d" else types.float32
    i32, i64, ptr = types.int32, types.int64, types.voidptr
    return types.ExternalFunction(name, types.void(i32, i32, i32, i64, i64, i64, real, ptr,
                                                   i64, ptr, i64, real, ptr, i64))


_rg_xxgemm_float64 = _rg_cblas_gemm("d")
_rg_xxgemm_float32 = _rg_cblas_gemm("s")
'''

HELPERS = split_defs('''
def rg_zero(a):
    for i in range(a.shape[0]):
        a[i] = 0.0


def rg_zero2(a):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] = 0.0


def rg_copy(dst, src):
    for i in range(dst.shape[0]):
        dst[i] = src[i]


def rg_copy2(dst, src):
    for i in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[i, j] = src[i, j]


def rg_dot(a, b):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


def rg_nrm2(a):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * a[i]
    return math.sqrt(s)


def rg_nrm2_cols(A, c0, c1):
    """Frobenius norm of the columns c0:c1 of a C-contiguous matrix."""
    s = 0.0
    for i in range(A.shape[0]):
        for j in range(c0, c1):
            s += A[i, j] * A[i, j]
    return math.sqrt(s)


def rg_dot_cols(A, a0, B, b0, n):
    """Σ_ij A[i, a0 + j] B[i, b0 + j], j < n: the inner product of two column blocks
    (four running sums, so the additions do not wait on each other)."""
    s0 = s1 = s2 = s3 = 0.0
    for i in range(A.shape[0]):
        j = 0
        while j + 4 <= n:
            s0 += A[i, a0 + j] * B[i, b0 + j]
            s1 += A[i, a0 + j + 1] * B[i, b0 + j + 1]
            s2 += A[i, a0 + j + 2] * B[i, b0 + j + 2]
            s3 += A[i, a0 + j + 3] * B[i, b0 + j + 3]
            j += 4
        while j < n:
            s0 += A[i, a0 + j] * B[i, b0 + j]
            j += 1
    return (s0 + s1) + (s2 + s3)


def rg_axpy_cols(Y, y0, a, X, x0, n):
    """Y[:, y0:y0+n] += a X[:, x0:x0+n]"""
    for i in range(Y.shape[0]):
        for j in range(n):
            Y[i, y0 + j] += a * X[i, x0 + j]


def rg_axpy(y, a, x):
    """y += a x"""
    for i in range(y.shape[0]):
        y[i] += a * x[i]


def rg_axpby(y, a, x, b):
    """y = a x + b y"""
    for i in range(y.shape[0]):
        y[i] = a * x[i] + b * y[i]


def rg_axpby_nrm2(y, a, x, b):
    """y = a x + b y; returns |y|"""
    s = 0.0
    for i in range(y.shape[0]):
        t = a * x[i] + b * y[i]
        y[i] = t
        s += t * t
    return math.sqrt(s)


def rg_gemv_t(y, A, x):
    """y += A^T x for a matrix A (n, m)"""
    for i in range(A.shape[0]):
        xi = x[i]
        for j in range(A.shape[1]):
            y[j] += A[i, j] * xi


def rg_matvec(out, A, x):
    """out = A x"""
    for i in range(A.shape[0]):
        s = 0.0
        for j in range(A.shape[1]):
            s += A[i, j] * x[j]
        out[i] = s


def rg_rademacher(rng, out):
    for i in range(out.shape[0]):
        out[i] = 1.0 if rng.random() < 0.5 else -1.0


def rg_allfinite(a):
    """True if no entry is inf or nan (x * 0 is nan exactly for those; no early exit,
    so the loop vectorizes)."""
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * 0.0
    return s == 0.0
''')

# C (m, n) = A[:, col0:col0 + k] @ B (k, n) + beta C, A a flat row-major (m, lda) block:
# numpy's BLAS (set up in IMPORTS), called with leading dimensions so that a block of
# W's columns needs no copy. Column-major (102) BLAS computes C^T = B^T A^T; 111: no
# transpose, 112: transpose.
GEMM = '''
def rg_gemm_rm_{dt}(C, A, lda, col0, B, beta):
    m, n = C.shape
    k = B.shape[0]
    _rg_xxgemm_{dt}(102, 111, 111, n, m, k, 1.0, B.ctypes.data, n, A[col0:].ctypes.data,
                    lda, beta, C.ctypes.data, n)
'''
HELPERS.update(split_defs(GEMM.format(dt="float64")))
HELPERS.update(split_defs(GEMM.format(dt="float32")))

# C = A @ B + beta C on 2-D views whose rows or whose columns are contiguous (a block of
# a row-major array, or the transpose of one: ``W.T``), without copies: BLAS with the
# views' leading dimensions. The products of a batch of streams (``kernel.OverStreams``)
# go through it.
GEMM_B = '''
def rg_gemm_{dt}(A, B, C, beta):
    m, k = A.shape
    n = B.shape[1]
    z = A.itemsize
    # a view whose columns are not contiguous is the transpose of a row-major block; a
    # stride along a dimension of length 1 is never used, and BLAS wants the leading
    # dimension at least the row length then
    ta = A.strides[1] != z and k > 1
    tb = B.strides[1] != z and n > 1
    lda = max(A.strides[1] // z, m) if ta else max(A.strides[0] // z, k)
    ldb = max(B.strides[1] // z, k) if tb else max(B.strides[0] // z, n)
    ldc = max(C.strides[0] // z, n)
    _rg_xxgemm_{dt}(102, 112 if tb else 111, 112 if ta else 111, n, m, k, 1.0,
                    B.ctypes.data, ldb, A.ctypes.data, lda, beta, C.ctypes.data, ldc)
'''
HELPERS.update(split_defs(GEMM_B.format(dt="float64")))
HELPERS.update(split_defs(GEMM_B.format(dt="float32")))


class NumbaBackend(Backend):
    """Kernels index the flat buffers directly, through integer offsets named after the
    graph's nodes (``v[h_new + i]``, ``th[W + i * 73 + j]``), defined once at module
    level: an array view costs a reference count in numba (~13 ns), and a kernel would
    otherwise make dozens."""

    name = "numba"
    jit = True
    batch_step = True
    dtypes = ("float64", "float32")
    ELEMENT = "_i"          # a per-element scalar: h_new_i is element i of h_new
    offsets = True          # the module defines one offset per node the kernels index
    unsupported = dict.fromkeys(
        ("np.dot", "np.linalg"),
        "numba runs it on scipy's BLAS or LAPACK, which modules of rgraph (and their "
        "exports) do without: use the module's helpers (rg_gemv_t, rg_matvec, rg_dot, "
        "rg_gemm) or write the loops")

    def __init__(self):
        self.printer = ScalarPrinter({"fully_qualified_modules": True})

    def version(self) -> str:
        import numba
        return f"numba {numba.__version__}"

    def compiled_dir(self, folder):
        return numba_loader.compiled_dir(folder)

    def loader(self, entry, module, text, in_process=False):
        """A child process compiles, every process loads (``numba_loader``)."""
        return numba_loader.NumbaLoaded(entry, module, text, in_process)

    IMPORTS = IMPORTS
    HELPERS = HELPERS

    def aliases(self, dtype: str) -> dict:
        return {"rg_gemm_rm": f"rg_gemm_rm_{dtype}", "rg_gemm": f"rg_gemm_{dtype}"}

    def compile_block(self, functions, mb, inline=()) -> str:
        """Every function of the module goes through numba once, here: compiled on its
        first call and cached on disk (the cache is keyed on this file's bytes). The
        functions called from one place only (``inline``) are compiled into their caller
        (numba's ``inline='always'``): one function less to compile, link into its caller
        and optimize again there."""
        jit, f = mb.g("JIT"), mb.g("f")
        options = f"cache=True, fastmath={mb.g('FASTMATH')}, error_model='numpy'"
        own = [n for n in functions if n not in inline]
        into = [n for n in functions if n in inline]
        lines = [f"# {'-' * 4} numba compiles each function above on its first call and "
                 f"caches it on disk",
                 f"{jit} = {mb.g('njit')}({options})"]
        if into:
            inl = mb.g("INLINE")
            lines += [f"{inl} = {mb.g('njit')}({options}, inline='always')"]
        lines += tuple_lines(f"globals().update({{{f}.__name__: {jit}({f}) for {f} in (",
                             own, ")})", "    ")
        if into:
            lines += tuple_lines(f"globals().update({{{f}.__name__: {inl}({f}) for {f} in (",
                                 into, ")})", "    ")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------- indexing
    def base(self, r: K.Ref, sc) -> str:
        """The flat index of a Ref's first element: its node's offset (plus a delta)."""
        if r.buf == "const":
            return str(r.delta)
        if not r.anchor:
            return str(r.off)
        name = sc.mb.offset(r.anchor, r.aoff, r.buf in ("th", "thd", "thb"))
        return f"{name} + {r.delta}" if r.delta else name

    def el(self, r: K.Ref, i: str, sc, col: str | None = None) -> str:
        """Element i (column col) of a Ref; a length-1 Ref broadcasts."""
        base = self.base(r, sc)
        if r.n == 1 and not r.cols:
            idx = base
        else:
            idx = index(base, i)
        return self._at(r, idx, col, sc)

    def el2(self, r: K.Ref, i: str, j: str, sc, col: str | None = None) -> str:
        """Element (i, j) of a Ref viewed as an (n, cols) matrix."""
        return self._at(r, index(self.base(r, sc), f"{i} * {r.cols}", j), col, sc)

    def _at(self, r, idx, col, sc):
        """buf[idx] (column col); inside a loop over streams, the stream's row of a
        per-stream buffer."""
        if sc.stream is not None and r.buf in sc.k.streams:
            return f"{sc.row(r.buf)}[{idx}]"
        return f"{sc.buf(r)}[{idx}, {col}]" if col is not None else f"{sc.buf(r)}[{idx}]"

    def view(self, r: K.Ref, sc, as_matrix=False) -> str:
        """An array view (only for BLAS calls)."""
        base = self.base(r, sc)
        sl = f"{sc.buf(r)}[{base}:{base} + {r.size}]" if base != "0" else \
            f"{sc.buf(r)}[0:{r.size}]"
        return sl + f".reshape(({r.n}, {r.cols}))" if as_matrix else sl

    def rows(self, r: K.Ref, two_d, sc, body) -> list[str]:
        """A loop over the rows of a Ref (and over the tangent columns if two_d)."""
        i, k = sc.idx["i"], sc.idx["k"]
        if two_d:
            return [f"for {i} in range({r.size}):", f"    for {k} in range({sc.cols}):",
                    f"        {body(i, k)}"]
        if r.size == 1:      # a length-1 Ref indexes without i (see el)
            return [body(i, None)]
        return [f"for {i} in range({r.size}):", f"    {body(i, None)}"]

    # ------------------------------------------------------------- statements
    def statements(self, body, sc) -> list[str]:
        """The statements, with a parameter's pull-back pair (W_bar += z_bar aᵀ, then
        a_bar += Wᵀ z_bar) fused into one pass over W."""
        out, k = [], 0
        while k < len(body):
            st, nxt = body[k], body[k + 1] if k + 1 < len(body) else None
            if isinstance(st, K.Outer) and isinstance(nxt, K.MatVecT) and \
                    nxt.z_bar == st.z_bar and nxt.W.anchor == st.W_bar.anchor and \
                    nxt.W.off == st.W_bar.off and not nxt.a_bar.overlaps(st.z_bar):
                out += self._pullback(st, nxt, sc)
                k += 2
                continue
            out += self.statement(st, sc)
            k += 1
        return out

    def _pullback(self, outer, mvt, sc):
        """The loop of W_bar += z_bar aᵀ, also adding Wᵀ z_bar into a_bar."""
        i, j, s = sc.idx["i"], sc.idx["j"], sc.acc
        return self.st_Outer(outer, sc) + [
            f"        {self.el(mvt.a_bar, j, sc)} += {self.el2(mvt.W, i, j, sc)} * {s}"]

    # ------------------------------------------------------------- streams
    @prints(K.ForStreams)
    def st_ForStreams(self, st, sc):
        """The statements for each stream, on its rows of the per-stream buffers (1-D
        views, so that each statement indexes as in a one-stream kernel)."""
        b = sc.stream_index
        used = {r.buf for x in st.body for r in x.reads() + x.writes()
                if isinstance(r, K.Ref) and r.buf in sc.k.streams}
        bufs = [a for a in sc.k.args if a in used]
        sc.stream = b
        body = self.statements(list(st.body), sc)
        sc.stream = None
        bind = [f"{sc.row(a)} = {sc.arg[a]}[{b}]" for a in bufs]
        return [f"for {b} in range({sc.nstreams}):"] + ["    " + ln for ln in bind + body]

    @prints(K.OverStreams)
    def st_OverStreams(self, st, sc):
        """One GEMM for every stream (``kernel.OverStreams``) on views: a per-stream
        buffer's block is a (B, n) view whose rows are the streams, W a (rows, cols)
        view of θ (``.T``: its transpose)."""
        p = st.st

        def rows(r, n=None):      # the streams' blocks of r, one row each
            base = self.base(r, sc)
            return f"{sc.buf(r)}[:, {base}:{index(base, str(n or r.n))}]"

        def call(A, B, C, beta):
            return [f"{sc.g('rg_gemm')}({A}, {B}, {C}, {beta})"]

        if isinstance(p, K.MatVec):     # out_b (+)= W[:, col0:] a_b, every stream
            W = self.view(p.W, sc, True)
            if not p.all_columns:
                W += f"[:, {p.col0}:{p.col0 + p.a.n}]"
            return call(rows(p.a), f"{W}.T", rows(p.out), 1.0 if p.acc else 0.0)
        if isinstance(p, K.MatVecT):    # a_bar_b += Wᵀ z_bar_b, every stream
            return call(rows(p.z_bar, p.W.n), self.view(p.W, sc, True),
                        rows(p.a_bar, p.W.cols), 1.0)
        # W_bar (+)= Σ_b z_bar_b a_bᵀ
        return call(f"{rows(p.z_bar, p.W_bar.n)}.T", rows(p.a, p.W_bar.cols),
                    self.view(p.W_bar, sc, True), 1.0 if p.acc else 0.0)

    @prints(K.Clear)
    def st_Clear(self, st, sc):
        two_d = sc.k.matrix and st.dst.is_tangent
        return self.rows(st.dst, two_d, sc,
                         lambda i, c: f"{self.el(st.dst, i, sc, c)} = 0.0")

    @prints(K.Identity)
    def st_Identity(self, st, sc):
        i, k = sc.idx["i"], sc.idx["k"]
        return [f"for {i} in range({st.dst.n}):",
                f"    for {k} in range({sc.cols}):",
                f"        {self.el(st.dst, i, sc, k)} = 0.0",
                f"    {self.el(st.dst, i, sc, f'{st.off} + {i}')} = 1.0"]

    @prints(K.Copy)
    def st_Copy(self, st, sc):
        op = "+=" if st.acc else "="
        two_d = sc.k.matrix and st.src.is_tangent
        return self.rows(st.dst, two_d, sc, lambda i, c: f"{self.el(st.dst, i, sc, c)} {op} "
                                                         f"{self.el(st.src, i, sc, c)}")

    @prints(K.MatVec)
    def st_MatVec(self, st, sc):
        j = sc.idx["j"]
        m, kk = st.W.n, st.a.n
        if st.a.is_tangent and sc.k.matrix:      # a matrix tangent: one GEMM on row blocks
            a, out = self.view(st.a, sc), self.view(st.out, sc)
            # BLAS with a leading dimension: W or a block of its columns, no copy
            return [f"{sc.g('rg_gemm_rm')}({out}, {self.view(st.W, sc)}, {st.W.cols}, "
                    f"{st.col0}, {a}, {1.0 if st.acc else 0.0})"]
        col = j if st.col0 == 0 else f"{st.col0} + {j}"
        return self._rows_times(st.out, st.W, st.a, st.acc, col, m, kk, sc)

    def _rows_times(self, out, M, a, acc, col, m, kk, sc):
        """out[i] (+)= Σ_j M[i, col] a[j]: a matrix (rows of a flat block) times a vector."""
        i, j, s = sc.idx["i"], sc.idx["j"], sc.acc
        return [f"for {i} in range({m}):",
                f"    {s} = 0.0",
                f"    for {j} in range({kk}):",
                f"        {s} += {self.el2(M, i, col, sc)} * {self.el(a, j, sc)}",
                f"    {self.el(out, i, sc)} {'+=' if acc else '='} {s}"]

    @prints(K.MatVecT)
    def st_MatVecT(self, st, sc):
        i, j, s = sc.idx["i"], sc.idx["j"], sc.acc
        return [f"for {i} in range({st.W.n}):",
                f"    {s} = {self.el(st.z_bar, i, sc)}",
                f"    for {j} in range({st.W.cols}):",
                f"        {self.el(st.a_bar, j, sc)} += {self.el2(st.W, i, j, sc)} * {s}"]

    @prints(K.Outer)
    def st_Outer(self, st, sc):
        i, j, s = sc.idx["i"], sc.idx["j"], sc.acc
        return [f"for {i} in range({st.W_bar.n}):",
                f"    {s} = {self.el(st.z_bar, i, sc)}",
                f"    for {j} in range({st.W_bar.cols}):",
                f"        {self.el2(st.W_bar, i, j, sc)} {'+=' if st.acc else '='} {s} * "
                f"{self.el(st.a, j, sc)}"]

    @prints(K.ParamTangent)
    def st_ParamTangent(self, st, sc):
        i, j, k, s = sc.idx["i"], sc.idx["j"], sc.idx["k"], sc.acc
        out, a = st.out_dot, st.a
        kk = st.W_dot.cols
        if isinstance(st.W_dot, K.Basis) or sc.k.matrix:
            zero = [] if st.acc else [f"    for {k} in range({sc.cols}):",
                                      f"        {self.el(out, i, sc, k)} = 0.0"]
        if isinstance(st.W_dot, K.Basis):
            return [f"for {i} in range({out.n}):", *zero,
                    f"    for {j} in range({kk}):",
                    f"        {self.el(out, i, sc, f'{st.W_dot.off} + {i} * {kk} + {j}')} "
                    f"+= {self.el(a, j, sc)}"]
        if sc.k.matrix:
            return [f"for {i} in range({out.n}):", *zero,
                    f"    for {j} in range({kk}):",
                    f"        {s} = {self.el(a, j, sc)}",
                    f"        for {k} in range({sc.cols}):",
                    f"            {self.el(out, i, sc, k)} += "
                    f"{self.el2(st.W_dot, i, j, sc, k)} * {s}"]
        return self._rows_times(out, st.W_dot, a, st.acc, j, out.n, kk, sc)

    @prints(K.Ew)
    def st_Ew(self, st, sc):
        """One loop over the elements: each node's scalar on a line of its own, with
        the node's expression as a comment; loads and partials used once are inlined,
        a value only stored is stored directly."""
        i, k = sc.idx["i"], sc.idx["k"]
        outer, inner = use_counts(st)
        if not sc.k.matrix:         # one tangent column: a single level, counts merge
            outer = inner = outer + inner
        notes = dict(st.notes)
        sub = {}
        lines = [f"for {i} in range({st.n}):"]

        def col(r):
            return k if (sc.k.matrix and r.is_tangent) else None

        def store(r, acc):
            return f"{self.el(r, i, sc, col(r))} {'+=' if acc else '='}"

        def emit(ind, s, e, stores, count):
            """Assign s = e (and store it): inline, store directly, or name it."""
            e = e.xreplace(sub)
            note = f"  # {notes[s]}" if s in notes else ""
            mine = [(r, acc) for r, t, acc in stores if t == s]
            if count[s] == 1 and not mine and s not in notes:
                sub[s] = e                      # used once: inlined where it is used
                return
            if count[s] == len(mine) == 1:      # only stored: store the expression
                r, acc = mine[0]
                lines.append(f"{ind}{store(r, acc)} {self.expr(e, sc)}{note}")
                return
            name = sc.name_of(s)
            sub[s] = sp.Symbol(name)
            chain = "".join(f"{store(r, acc)} " for r, acc in mine if not acc)
            lines.append(f"{ind}{chain}{name} = {self.expr(e, sc)}{note}")
            for r, acc in mine:
                if acc:
                    lines.append(f"{ind}{store(r, acc)} {name}")

        def load(ind, s, r, count, c=None):
            text = self.el(r, i, sc, c)
            # read where it is used if that is at most twice, and not once per column
            if count[s] <= 2 and (c is not None or not sc.k.matrix or not inner[s]):
                sub[s] = sp.Symbol(text)
            else:
                sub[s] = sp.Symbol(sc.name_of(s))
                lines.append(f"{ind}{sc.name_of(s)} = {text}")

        def leftover(ind, stores, assigned):
            """Stores of symbols no assignment computes (a load or an alias of one)."""
            for r, s, acc in stores:
                if s not in assigned:
                    lines.append(f"{ind}{store(r, acc)} {self.expr(sub[s], sc)}")

        for s, r in st.loads:
            load("    ", s, r, outer)
        for s, e in st.assigns:
            emit("    ", s, sp.sympify(e), st.stores, outer)
        leftover("    ", st.stores, {s for s, _ in st.assigns})
        if not st.col_assigns and not st.col_stores:
            return lines
        if st.diagonal:
            return lines + self._diagonal(st, sc, sub)
        ind = "    "
        if sc.k.matrix:
            lines.append(f"    for {k} in range({sc.cols}):")
            ind = "        "
        c = k if sc.k.matrix else None
        for s, r in st.col_loads:
            load(ind, s, r, inner, c)
        for s, b in st.col_basis:
            colno = index(b.off, i) if b.n > 1 or st.n == 1 else str(b.off)
            sub[s] = sp.Symbol(sc.name_of(s))
            lines.append(f"{ind}{sc.name_of(s)} = 1.0 if {k} == {colno} else 0.0")
        for s, e in st.col_assigns:
            emit(ind, s, sp.sympify(e), st.col_stores, inner)
        leftover(ind, st.col_stores, {s for s, _ in st.col_assigns})
        return lines

    def _diagonal(self, st, sc, sub):
        """The tangent part when every tangent is an identity basis: element i's tangent
        is non-zero in one column per basis, so only those entries are written."""
        i = sc.idx["i"]
        full = {}
        for s, e in st.col_assigns:
            full[s] = sp.sympify(e).xreplace(full)
        notes = dict(st.notes)
        lines = []
        for r, s, acc in st.col_stores:
            for b_sym, b in st.col_basis:
                coef = sp.diff(full.get(s, s), b_sym)
                if coef == 0:
                    continue
                colno = index(b.off, i) if b.n > 1 or st.n == 1 else str(b.off)
                target = notes[s].split(" = ")[0] if s in notes else ""
                source = sym_kind(b_sym)[1].removesuffix("_dot")
                lines.append(f"    {self.el(r, i, sc, colno)} {'+=' if acc else '='} "
                             f"{self.expr(coef.xreplace(sub), sc)}  # ∂{target}/∂{source}")
        return lines
