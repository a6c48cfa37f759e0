"""The numba backend: scalar loops under ``@njit(cache=True)``.

Measured choices (see NUMBA_NOTES.md): scalar loops rather than array expressions;
"safe" fastmath (reassociation and contraction, never ``nnan``/``ninf`` so NaN checks
still work); matrix tangents multiply through ``np.dot(A, B, out)`` (BLAS GEMM) on
contiguous row blocks; every helper lives in the generated module itself so numba's
file-keyed cache never goes stale.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from rgraph import kernel as K

from .base import Backend

FASTMATH = "{'reassoc', 'contract', 'arcp', 'nsz'}"


class ScalarPrinter(PythonCodePrinter):
    """Scalar expressions as ``math`` calls and rgraph's stable helpers."""

    _kf = dict(PythonCodePrinter._kf)

    def _print_sigmoid(self, e):
        return f"rg_sigmoid({self._print(e.args[0])})"

    def _print_softplus(self, e):
        return f"rg_softplus({self._print(e.args[0])})"

    def _print_relu(self, e):
        return f"rg_relu({self._print(e.args[0])})"

    def _print_step(self, e):
        return f"rg_step({self._print(e.args[0])})"

    def _print_sign(self, e):
        return f"rg_sign({self._print(e.args[0])})"

    def _print_Abs(self, e):
        return f"abs({self._print(e.args[0])})"

    def _print_Pow(self, e, rational=False):
        b, x = e.args
        if x == sp.Rational(1, 2):
            return f"math.sqrt({self._print(b)})"
        if x == -1:
            return f"(1.0/{self.parenthesize(b, sp.printing.precedence.PRECEDENCE['Pow'])})"
        if x == 2:
            s = self.parenthesize(b, sp.printing.precedence.PRECEDENCE['Mul'])
            return f"({s}*{s})"
        return super()._print_Pow(e, rational)

    def _print_Rational(self, e):
        return repr(float(e))

    def _print_Integer(self, e):
        return f"{int(e)}.0"

    def _print_Float(self, e):
        return repr(float(e))


PRELUDE = f'''
import math
import numpy as np
from numba import njit

FASTMATH = {FASTMATH}



@njit(cache=True, fastmath=FASTMATH)
def rg_sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True, fastmath=FASTMATH)
def rg_softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(cache=True, fastmath=FASTMATH)
def rg_relu(x):
    return x if x > 0.0 else 0.0


@njit(cache=True, fastmath=FASTMATH)
def rg_step(x):
    return 1.0 if x > 0.0 else 0.0


@njit(cache=True, fastmath=FASTMATH)
def rg_sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


@njit(cache=True, fastmath=FASTMATH)
def rg_zero(a):
    a[:] = 0.0


@njit(cache=True, fastmath=FASTMATH)
def rg_copy(dst, src):
    dst[:] = src


@njit(cache=True, fastmath=FASTMATH)
def rg_dot(a, b):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@njit(cache=True, fastmath=FASTMATH)
def rg_nrm2(a):
    s = 0.0
    for x in a.flat:
        s += x * x
    return math.sqrt(s)


@njit(cache=True, fastmath=FASTMATH)
def rg_axpy(y, a, x):
    """y += a x"""
    for i in range(y.shape[0]):
        y[i] += a * x[i]


@njit(cache=True, fastmath=FASTMATH)
def rg_axpby(y, a, x, b):
    """y = a x + b y"""
    for i in range(y.shape[0]):
        y[i] = a * x[i] + b * y[i]


@njit(cache=True, fastmath=FASTMATH)
def rg_gemv_t(y, A, x):
    """y += A^T x for a matrix A (n, m)"""
    for i in range(A.shape[0]):
        xi = x[i]
        for j in range(A.shape[1]):
            y[j] += A[i, j] * xi


@njit(cache=True, fastmath=FASTMATH)
def rg_gemm(out, A, B):
    """out = A @ B (BLAS when both are large enough)"""
    np.dot(A, B, out)


@njit(cache=True, fastmath=FASTMATH)
def rg_matvec(out, A, x):
    """out = A x"""
    for i in range(A.shape[0]):
        s = 0.0
        for j in range(A.shape[1]):
            s += A[i, j] * x[j]
        out[i] = s


@njit(cache=True, fastmath=FASTMATH)
def rg_rademacher(rng, out):
    for i in range(out.shape[0]):
        out[i] = 1.0 if rng.random() < 0.5 else -1.0


@njit(cache=True, fastmath=FASTMATH)
def rg_allfinite(a):
    for x in a.flat:
        if not math.isfinite(x):
            return False
    return True


@njit(cache=True, fastmath=FASTMATH)
def rg_softmax_xent(y, target, ybar, w):
    """loss = -w log softmax(y)[target]; ybar = w (softmax(y) - onehot(target))"""
    m = y[0]
    for i in range(1, y.shape[0]):
        if y[i] > m:
            m = y[i]
    s = 0.0
    for i in range(y.shape[0]):
        s += math.exp(y[i] - m)
    lse = m + math.log(s)
    for i in range(y.shape[0]):
        ybar[i] = w * math.exp(y[i] - lse)
    ybar[target] -= w
    return w * (lse - y[target])


@njit(cache=True, fastmath=FASTMATH)
def rg_mse(y, target, ybar, w):
    """loss = w/2 |y - target|^2; ybar = w (y - target)"""
    s = 0.0
    for i in range(y.shape[0]):
        d = y[i] - target[i]
        ybar[i] = w * d
        s += d * d
    return 0.5 * w * s
'''


class NumbaBackend(Backend):
    name = "numba"
    jit = True

    def __init__(self):
        self.printer = ScalarPrinter({"fully_qualified_modules": True})

    def prelude(self) -> str:
        return PRELUDE

    def decorate(self, src: str) -> str:
        return f"@njit(cache=True, fastmath=FASTMATH)\n{src}"

    def kernel(self, k: K.Kernel) -> str:
        return self.decorate(super().kernel(k))

    def expr(self, e) -> str:
        return self.printer.doprint(e)

    # ------------------------------------------------------------- statements
    def st_Zero(self, st, matrix):
        return [f"{self.lhs(st.dst)} = 0.0"]

    def st_Copy(self, st, matrix):
        op = "+=" if st.acc else "="
        return [f"{self.lhs(st.dst)} {op} {self.sl(st.src)}"]

    def st_MatVec(self, st, matrix):
        m, kk = st.W.n, st.W.cols
        if st.a.is_tangent and matrix:      # a matrix tangent: one GEMM on row blocks
            if st.acc:
                return [f"{self.lhs(st.out)} += np.dot({self.sl(st.W)}, {self.sl(st.a)})"]
            return [f"np.dot({self.sl(st.W)}, {self.sl(st.a)}, {self.sl(st.out)})"]
        W = self.sl(st.W)
        return [f"for i in range({m}):",
                "    rg_s = 0.0",
                f"    for j in range({kk}):",
                f"        rg_s += {W}[i, j] * {self.el(st.a, 'j')}",
                f"    {self.el(st.out, 'i')} {'+=' if st.acc else '='} rg_s"]

    def st_MatVecT(self, st, matrix):
        m, kk = st.W.n, st.W.cols
        return [f"for i in range({m}):",
                f"    rg_s = {self.el(st.z_bar, 'i')}",
                f"    for j in range({kk}):",
                f"        {self.el(st.a_bar, 'j')} += {self.sl(st.W)}[i, j] * rg_s"]

    def st_Outer(self, st, matrix):
        m, kk = st.W_bar.n, st.W_bar.cols
        return [f"for i in range({m}):",
                f"    rg_s = {self.el(st.z_bar, 'i')}",
                f"    for j in range({kk}):",
                f"        {self.sl(st.W_bar)}[i, j] += rg_s * {self.el(st.a, 'j')}"]

    def st_ParamTangent(self, st, matrix):
        out, a = st.out_dot, st.a
        m = out.n
        kk = st.W_dot.cols
        if isinstance(st.W_dot, K.Basis):
            lines = [f"for i in range({m}):"]
            if not st.acc:
                lines.append(f"    {self.sl(out)}[i, :] = 0.0")
            lines += [f"    for j in range({kk}):",
                      f"        {self.sl(out)}[i, {st.W_dot.off} + i * {kk} + j] += "
                      f"{self.el(a, 'j')}"]
            return lines
        Wd = self.sl(st.W_dot)
        if matrix:
            lines = [f"for i in range({m}):"]
            if not st.acc:
                lines.append(f"    {self.sl(out)}[i, :] = 0.0")
            lines += [f"    for j in range({kk}):",
                      f"        rg_s = {self.el(a, 'j')}",
                      "        for k in range(rg_K):",
                      f"            {self.sl(out)}[i, k] += {Wd}[i * {kk} + j, k] * rg_s"]
            return lines
        return [f"for i in range({m}):",
                "    rg_s = 0.0",
                f"    for j in range({kk}):",
                f"        rg_s += {Wd}[i * {kk} + j] * {self.el(a, 'j')}",
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
