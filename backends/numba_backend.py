"""The numba backend: scalar loops under ``@njit(cache=True)``.

Measured choices (numba 0.68, 2 cores): scalar loops rather than array expressions
(array-expression code compiled 7-12x slower and, at n = 256, ran slower than plain
numpy); "safe" fastmath (reassociation and contraction, as fast as ``fastmath=True``
but never ``nnan``/``ninf``, under which ``np.isnan`` of a real NaN returned False);
numpy's error model (a float division by zero gives inf, which the loop's finiteness
checks report, instead of a branch per division that keeps every loop with a ``/``
from vectorizing: Adam's update ran 8x slower); matrix tangents multiply through
``np.dot(A, B, out)`` (BLAS GEMM, numpy's speed; the allocating form was 1.5x slower
from n = 128) on contiguous row blocks, or through ``rg_gemm_rm`` (BLAS with a leading
dimension) on a block of W's columns; every helper lives in the generated module itself,
because numba's cache is keyed on one file's bytes and was seen to return stale code
when a function in another file changed.
"""
from __future__ import annotations

from sympy.printing.pycode import PythonCodePrinter

from rgraph import kernel as K

from .base import Backend, PrinterRules, split_defs

FASTMATH = "{'reassoc', 'contract', 'arcp', 'nsz'}"


class ScalarPrinter(PrinterRules, PythonCodePrinter):
    """Scalar expressions as ``math`` calls and rgraph's stable helpers."""

    BACKEND = "numba"


IMPORTS = f'''
import math
import numpy as np
from numba import float32, float64, njit
from numba.np.linalg import _BLAS, ensure_blas

FASTMATH = {FASTMATH}

ensure_blas()
_rg_xxgemm_float64 = _BLAS().numba_xxgemm(float64)
_rg_xxgemm_float32 = _BLAS().numba_xxgemm(float32)
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
# numba's own entry to scipy's BLAS (the one np.dot uses, set up in IMPORTS), called with
# leading dimensions so that a block of W's columns needs no copy. Column-major BLAS
# computes C^T = B^T A^T.
GEMM = '''
def rg_gemm_rm_{dt}(C, A, lda, col0, B, beta):
    m, n = C.shape
    k = B.shape[0]
    if m == 0 or n == 0:
        return
    al = np.ones(1, dtype=np.{dt})
    be = np.full(1, beta, dtype=np.{dt})
    _rg_xxgemm_{dt}({kind}, 110, 110, n, m, k, al.ctypes, B.ctypes, n, A[col0:].ctypes, lda,
                    be.ctypes, C.ctypes, n)
'''
HELPERS.update(split_defs(GEMM.format(dt="float64", kind=ord("d"))))
HELPERS.update(split_defs(GEMM.format(dt="float32", kind=ord("s"))))


class NumbaBackend(Backend):
    """Kernels index the flat buffers directly, through integer offsets named after the
    graph's nodes (``v[h + i]``, ``th[W + i * 73 + j]``): an array view costs a
    reference count in numba (~13 ns), and a kernel would otherwise make dozens."""

    name = "numba"
    jit = True

    def __init__(self):
        self.printer = ScalarPrinter({"fully_qualified_modules": True})

    IMPORTS = IMPORTS
    HELPERS = HELPERS

    def aliases(self, dtype: str) -> dict:
        return {"rg_gemm_rm": f"rg_gemm_rm_{dtype}"}

    def decorate(self, src: str) -> str:
        return f"@njit(cache=True, fastmath=FASTMATH, error_model='numpy')\n{src}"

    def kernel(self, k: K.Kernel) -> str:
        return self.decorate(super().kernel(k))

    def declare(self, r: K.Ref, matrix) -> str:
        shape = f" as ({r.n}, {r.cols})" if r.cols else ""
        return f"{r.name} = {r.off}  # {r.buf}[{r.off}:{r.off + r.size}]{shape}"

    def expr(self, e) -> str:
        return self.printer.doprint(e)

    # ------------------------------------------------------------- indexing
    def ix(self, r: K.Ref, i: str) -> str:
        """The flat index of element i of a Ref (a length-1 Ref broadcasts)."""
        base = r.name or str(r.off)
        if r.n == 1 and not r.cols:
            return base
        return f"{base} + {i}" if base != "0" else i

    def el(self, r: K.Ref, i: str, col: str | None = None) -> str:
        idx = self.ix(r, i)
        return f"{r.buf}[{idx}, {col}]" if col is not None else f"{r.buf}[{idx}]"

    def el2(self, r: K.Ref, i: str, j: str, col: str | None = None) -> str:
        """Element (i, j) of a Ref viewed as an (n, cols) matrix."""
        base = r.name or str(r.off)
        idx = f"{base} + {i} * {r.cols} + {j}"
        return f"{r.buf}[{idx}, {col}]" if col is not None else f"{r.buf}[{idx}]"

    def view(self, r: K.Ref, as_matrix=False) -> str:
        """An array view (only for BLAS calls)."""
        base = r.name or str(r.off)
        sl = f"{r.buf}[{base}:{base} + {r.size}]"
        return sl + f".reshape(({r.n}, {r.cols}))" if as_matrix else sl

    def rows(self, r: K.Ref, two_d, body) -> list[str]:
        """A loop over the rows of a Ref (and over the K columns if two_d)."""
        if two_d:
            return [f"for i in range({r.size}):", "    for k in range(rg_K):",
                    f"        {body('k')}"]
        if r.size == 1:      # a length-1 Ref indexes without i (see ix)
            return [body(None)]
        return [f"for i in range({r.size}):", f"    {body(None)}"]

    # ------------------------------------------------------------- statements
    def st_Zero(self, st, matrix):
        return self.rows(st.dst, matrix and st.dst.is_tangent,
                         lambda c: f"{self.el(st.dst, 'i', c)} = 0.0")

    def st_Identity(self, st, matrix):
        return [f"for i in range({st.dst.n}):",
                "    for k in range(rg_K):",
                f"        {self.el(st.dst, 'i', 'k')} = 0.0",
                f"    {self.el(st.dst, 'i', f'{st.off} + i')} = 1.0"]

    def st_Copy(self, st, matrix):
        op = "+=" if st.acc else "="
        return self.rows(st.dst, matrix and st.src.is_tangent,
                         lambda c: f"{self.el(st.dst, 'i', c)} {op} {self.el(st.src, 'i', c)}")

    def st_MatVec(self, st, matrix):
        m, kk = st.W.n, st.a.n
        if st.a.is_tangent and matrix:      # a matrix tangent: one GEMM on row blocks
            a, out = self.view(st.a), self.view(st.out)
            if st.whole and not st.acc:
                return [f"np.dot({self.view(st.W, True)}, {a}, {out})"]
            # a block of W's columns, or accumulating: BLAS with a leading dimension
            return [f"rg_gemm_rm({out}, {self.view(st.W)}, {st.W.cols}, {st.col0}, {a}, "
                    f"{1.0 if st.acc else 0.0})"]
        col = "j" if st.col0 == 0 else f"{st.col0} + j"
        return [f"for i in range({m}):",
                "    rg_s = 0.0",
                f"    for j in range({kk}):",
                f"        rg_s += {self.el2(st.W, 'i', col)} * {self.el(st.a, 'j')}",
                f"    {self.el(st.out, 'i')} {'+=' if st.acc else '='} rg_s"]

    def st_MatVecT(self, st, matrix):
        m, kk = st.W.n, st.W.cols
        return [f"for i in range({m}):",
                f"    rg_s = {self.el(st.z_bar, 'i')}",
                f"    for j in range({kk}):",
                f"        {self.el(st.a_bar, 'j')} += {self.el2(st.W, 'i', 'j')} * rg_s"]

    def st_Outer(self, st, matrix):
        m, kk = st.W_bar.n, st.W_bar.cols
        return [f"for i in range({m}):",
                f"    rg_s = {self.el(st.z_bar, 'i')}",
                f"    for j in range({kk}):",
                f"        {self.el2(st.W_bar, 'i', 'j')} {'+=' if st.acc else '='} rg_s * "
                f"{self.el(st.a, 'j')}"]

    def st_ParamTangent(self, st, matrix):
        out, a = st.out_dot, st.a
        m = out.n
        kk = st.W_dot.cols
        zero = [] if st.acc else ["    for k in range(rg_K):",
                                  f"        {self.el(out, 'i', 'k')} = 0.0"]
        if isinstance(st.W_dot, K.Basis):
            return [f"for i in range({m}):", *zero,
                    f"    for j in range({kk}):",
                    f"        {self.el(out, 'i', f'{st.W_dot.off} + i * {kk} + j')} += "
                    f"{self.el(a, 'j')}"]
        if matrix:
            return [f"for i in range({m}):", *zero,
                    f"    for j in range({kk}):",
                    f"        rg_s = {self.el(a, 'j')}",
                    "        for k in range(rg_K):",
                    f"            {self.el(out, 'i', 'k')} += "
                    f"{self.el2(st.W_dot, 'i', 'j', 'k')} * rg_s"]
        return [f"for i in range({m}):",
                "    rg_s = 0.0",
                f"    for j in range({kk}):",
                f"        rg_s += {self.el2(st.W_dot, 'i', 'j')} * {self.el(a, 'j')}",
                f"    {self.el(out, 'i')} {'+=' if st.acc else '='} rg_s"]

    def st_Ew(self, st, matrix):
        lines = [f"# {ln}" for ln in st.comment.splitlines()]
        lines += [f"for i in range({st.n}):"]
        for s, r in st.loads:
            lines.append(f"    {s} = {self.el(r, 'i')}")
        for s, e in st.assigns:
            lines.append(f"    {s} = {self.expr(e)}")
        for r, s, acc in st.stores:
            lines.append(f"    {self.el(r, 'i')} {'+=' if acc else '='} {s}")
        if st.col_assigns or st.col_stores:
            ind = "    "
            if matrix:
                lines.append("    for k in range(rg_K):")
                ind = "        "
            col = "k" if matrix else None
            for s, r in st.col_loads:
                lines.append(f"{ind}{s} = {self.el(r, 'i', col)}")
            for s, b in st.col_basis:
                c = f"{b.off} + i" if b.n > 1 or st.n == 1 else f"{b.off}"
                lines.append(f"{ind}{s} = 1.0 if k == {c} else 0.0")
            for s, e in st.col_assigns:
                lines.append(f"{ind}{s} = {self.expr(e)}")
            for r, s, acc in st.col_stores:
                lines.append(f"{ind}{self.el(r, 'i', col)} {'+=' if acc else '='} {s}")
        return lines
