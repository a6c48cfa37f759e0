"""The numpy backend: array expressions, no compilation — the readable reference.

Every fused elementwise loop becomes a handful of whole-array statements; matrix
tangents keep their element factors as (n, 1) columns so they broadcast over the K
tangent columns. The helpers mirror the numba backend's formula for formula, so the
two agree to round-off and draw the same random numbers from the same generator.
"""
from __future__ import annotations

from sympy.printing.numpy import NumPyPrinter

from rgraph import kernel as K

from .base import Backend, PrinterRules, split_defs


class ArrayPrinter(PrinterRules, NumPyPrinter):
    """Array expressions with numpy functions and the stable vectorized helpers."""

    BACKEND = "numpy"
    SQRT = "np.sqrt"

    def _module_format(self, fqn, register=True):
        fqn = super()._module_format(fqn, register)
        return "np." + fqn[len("numpy."):] if fqn.startswith("numpy.") else fqn


IMPORTS = '''
import math
import numpy as np
'''

HELPERS = split_defs('''
def rg_basis(n, ncols, off, broadcast):
    """The identity tangent of n parameter elements starting at column off."""
    out = np.zeros((n, ncols))
    out[np.arange(n), off if broadcast else off + np.arange(n)] = 1.0
    return out


def rg_zero(a):
    a[...] = 0.0


def rg_zero2(a):
    a[...] = 0.0


def rg_copy(dst, src):
    dst[...] = src


def rg_copy2(dst, src):
    dst[...] = src


def rg_dot(a, b):
    return float(np.dot(a, b))


def rg_nrm2(a):
    return float(np.sqrt(np.sum(a * a)))


def rg_nrm2_cols(A, c0, c1):
    return float(np.sqrt(np.sum(A[:, c0:c1] * A[:, c0:c1])))


def rg_axpy(y, a, x):
    y += a * x


def rg_axpby(y, a, x, b):
    y[...] = a * x + b * y


def rg_axpby_nrm2(y, a, x, b):
    y[...] = a * x + b * y
    return float(np.sqrt(np.sum(y * y)))


def rg_gemv_t(y, A, x):
    y += A.T @ x


def rg_matvec(out, A, x):
    out[...] = A @ x


def rg_rademacher(rng, out):
    for i in range(out.shape[0]):
        out[i] = 1.0 if rng.random() < 0.5 else -1.0


def rg_allfinite(a):
    return bool(np.all(np.isfinite(a)))
''')


class NumpyBackend(Backend):
    name = "numpy"
    jit = False

    def __init__(self):
        self.printer = ArrayPrinter({"fully_qualified_modules": True})

    IMPORTS = IMPORTS
    HELPERS = HELPERS

    def expr(self, e) -> str:
        return self.printer.doprint(e)

    def vec(self, r: K.Ref, n: int, column=False) -> str:
        """A whole Ref as an array over the loop's n elements (length 1 broadcasts)."""
        if r.n == 1 and n > 1 and not r.is_tangent:
            return self.el(r, "0")
        if r.n == 1 and n > 1:                  # a broadcast tangent row: (1, K)
            return f"{r.buf}[{r.off}:{r.off + 1}]"
        s = self.sl(r)
        return f"{s}[:, None]" if column else s

    # ------------------------------------------------------------- statements
    def st_Zero(self, st, matrix):
        return [f"{self.lhs(st.dst)} = 0.0"]

    def st_Identity(self, st, matrix):
        n = st.dst.n
        return [f"{self.lhs(st.dst)} = 0.0",
                f"{self.sl(st.dst)}[np.arange({n}), {st.off} + np.arange({n})] = 1.0"]

    def st_Copy(self, st, matrix):
        return [f"{self.lhs(st.dst)} {'+=' if st.acc else '='} {self.sl(st.src)}"]

    def st_MatVec(self, st, matrix):
        W = self.sl(st.W) if st.whole else \
            f"{self.sl(st.W)}[:, {st.col0}:{st.col0 + st.a.n}]"
        return [f"{self.lhs(st.out)} {'+=' if st.acc else '='} {W} @ {self.sl(st.a)}"]

    def st_MatVecT(self, st, matrix):
        return [f"{self.lhs(st.a_bar)} += {self.sl(st.W)}.T @ {self.sl(st.z_bar)}"]

    def st_Outer(self, st, matrix):
        return [f"{self.lhs(st.W_bar)} {'+=' if st.acc else '='} "
                f"np.outer({self.sl(st.z_bar)}, {self.sl(st.a)})"]

    def st_ParamTangent(self, st, matrix):
        out, a, m = st.out_dot, st.a, st.out_dot.n
        kk = st.W_dot.cols
        op = "+=" if st.acc else "="
        if isinstance(st.W_dot, K.Basis):
            lines = [] if st.acc else [f"{self.lhs(out)} = 0.0"]
            return lines + [f"for i in range({m}):",
                            f"    {self.sl(out)}[i, {st.W_dot.off} + i * {kk}:"
                            f"{st.W_dot.off} + (i + 1) * {kk}] += {self.sl(a)}"]
        Wd = self.sl(st.W_dot)
        if matrix:
            return [f"{self.lhs(out)} {op} np.einsum('ijc,j->ic', "
                    f"{Wd}.reshape(({m}, {kk}, rg_K)), {self.sl(a)})"]
        return [f"{self.lhs(out)} {op} {Wd}.reshape(({m}, {kk})) @ {self.sl(a)}"]

    def st_Ew(self, st, matrix):
        n = st.n
        lines = [f"# {ln}" for ln in st.comment.splitlines()]
        for s, r in st.loads:
            lines.append(f"{s} = {self.vec(r, n, column=matrix)}")
        for s, e in st.assigns:
            lines.append(f"{s} = {self.expr(e)}")
        for r, s, acc in st.stores:
            if r.n == 1 and n > 1:
                lines.append(f"{self.el(r, '0')} += np.sum(np.broadcast_to({s}, ({n},)))")
            else:
                lines.append(f"{self.lhs(r)} {'+=' if acc else '='} {s}")
        for s, r in st.col_loads:
            lines.append(f"{s} = {self.vec(r, n)}")
        for s, b in st.col_basis:
            lines.append(f"{s} = rg_basis({n}, rg_K, {b.off}, {b.n == 1 and n > 1})")
        for s, e in st.col_assigns:
            lines.append(f"{s} = {self.expr(e)}")
        for r, s, acc in st.col_stores:
            lines.append(f"{self.lhs(r)} {'+=' if acc else '='} {s}")
        return lines
