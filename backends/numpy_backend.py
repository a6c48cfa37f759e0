"""The numpy backend: array expressions, no compilation — the readable reference.

Every fused elementwise loop becomes a handful of whole-array statements; matrix
tangents keep their element factors as (n, 1) columns so they broadcast over the K
tangent columns. The helpers mirror the numba backend's formula for formula, so the
two agree to round-off and draw the same random numbers from the same generator.
"""
from __future__ import annotations

from sympy.printing.numpy import NumPyPrinter

import sympy as sp

from rgraph import kernel as K

from .base import Backend, PrinterRules, prints, split_defs, use_counts


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


def rg_dot_cols(A, a0, B, b0, n):
    return float(np.sum(A[:, a0:a0 + n] * B[:, b0:b0 + n]))


def rg_axpy_cols(Y, y0, a, X, x0, n):
    Y[:, y0:y0 + n] += a * X[:, x0:x0 + n]


def rg_axpy(y, a, x):
    y += a * x


def rg_axpby(y, a, x, b):
    y[...] = a * x + b * y


def rg_axpby_nrm2(y, a, x, b):
    y[...] = a * x + b * y
    return float(np.sqrt(np.sum(y * y)))


def rg_gemm_rm(C, A, lda, col0, B, beta):
    """C = A[:, col0:col0 + k] B + beta C, A a flat row-major block of leading dimension lda"""
    m, k = C.shape[0], B.shape[0]
    C[...] = A[:m * lda].reshape(m, lda)[:, col0:col0 + k] @ B + beta * C


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
    """Kernels declare a view per node they touch (``f_gate = v[129:145]``, tangents
    ``f_gate_dot``, cotangents ``f_gate_bar``) and work on whole arrays."""

    name = "numpy"
    jit = False
    batch_step = False
    dtypes = ("float64", "float32")
    ELEMENT = ""            # a symbol is the whole array of a node's elements
    offsets = False         # kernels declare views named after the nodes instead
    IMPORTS = IMPORTS
    HELPERS = HELPERS

    def __init__(self):
        self.printer = ArrayPrinter({"fully_qualified_modules": True})

    def version(self) -> str:
        import numpy
        return f"numpy {numpy.__version__}"

    # ------------------------------------------------------------- views
    def view_name(self, r: K.Ref, sc) -> str:
        """The local view of a Ref's whole node block, declared on first use."""
        key = (r.buf, r.anchor, r.role)
        views = sc.views
        if key not in views:
            name = sc.local(r.anchor + (f"_{r.role}" if r.role else ""))
            views[key] = name
            sl = f"{sc.buf(r)}[{r.aoff}:{r.aoff + r.an * max(r.cols, 1)}]"
            if r.cols and not r.is_tangent:
                sl += f".reshape(({r.an}, {r.cols}))"
            sc.prologue.append(f"{name} = {sl}")
        return views[key]

    def sl(self, r: K.Ref, sc) -> str:
        """A Ref as an array expression."""
        if r.buf == "const":
            g = sc.buf(r)
            if r.cols:
                return f"{g}.reshape(({r.n}, {r.cols}))"
            return g if r.whole else f"{g}[{r.delta}:{r.delta + r.n}]"
        if not r.anchor:
            return f"{sc.buf(r)}[{r.off}:{r.off + r.size}]"
        v = self.view_name(r, sc)
        return v if r.whole else f"{v}[{r.delta}:{r.delta + r.n}]"

    def lhs(self, r: K.Ref, sc) -> str:
        s = self.sl(r, sc)
        return s + "[:]" if r.whole and r.anchor else s

    def vec(self, r: K.Ref, n: int, sc, column=False) -> str:
        """A Ref read by an n-element loop (a length-1 Ref broadcasts)."""
        if r.n == 1 and n > 1 and not r.is_tangent:
            return f"{self.sl(r, sc)}[0]"
        s = self.sl(r, sc)
        return f"{s}[:, None]" if column else s

    # ------------------------------------------------------------- statements
    @prints(K.Clear)
    def st_Clear(self, st, sc):
        return [f"{self.lhs(st.dst, sc)} = 0.0"]

    @prints(K.Identity)
    def st_Identity(self, st, sc):
        n = st.dst.n
        np_ = sc.g("np")
        return [f"{self.lhs(st.dst, sc)} = 0.0",
                f"{self.sl(st.dst, sc)}[{np_}.arange({n}), {st.off} + {np_}.arange({n})] = 1.0"]

    @prints(K.Copy)
    def st_Copy(self, st, sc):
        return [f"{self.lhs(st.dst, sc)} {'+=' if st.acc else '='} {self.sl(st.src, sc)}"]

    @prints(K.MatVec)
    def st_MatVec(self, st, sc):
        W = self.sl(st.W, sc) if st.all_columns else \
            f"{self.sl(st.W, sc)}[:, {st.col0}:{st.col0 + st.a.n}]"
        return [f"{self.lhs(st.out, sc)} {'+=' if st.acc else '='} {W} @ {self.sl(st.a, sc)}"]

    @prints(K.MatVecT)
    def st_MatVecT(self, st, sc):
        return [f"{self.lhs(st.a_bar, sc)} += {self.sl(st.W, sc)}.T @ {self.sl(st.z_bar, sc)}"]

    @prints(K.Outer)
    def st_Outer(self, st, sc):
        return [f"{self.lhs(st.W_bar, sc)} {'+=' if st.acc else '='} "
                f"{sc.g('np')}.outer({self.sl(st.z_bar, sc)}, {self.sl(st.a, sc)})"
                + (".ravel()" if not st.W_bar.cols else "")]

    @prints(K.ParamTangent)
    def st_ParamTangent(self, st, sc):
        out, a, m = st.out_dot, st.a, st.out_dot.n
        kk = st.W_dot.cols
        op = "+=" if st.acc else "="
        if isinstance(st.W_dot, K.Basis):
            i = sc.idx["i"]
            lines = [] if st.acc else [f"{self.lhs(out, sc)} = 0.0"]
            return lines + [f"for {i} in range({m}):",
                            f"    {self.sl(out, sc)}[{i}, {st.W_dot.off} + {i} * {kk}:"
                            f"{st.W_dot.off} + ({i} + 1) * {kk}] += {self.sl(a, sc)}"]
        Wd = self.sl(st.W_dot, sc)
        if sc.k.matrix:
            return [f"{self.lhs(out, sc)} {op} {sc.g('np')}.einsum('ijc,j->ic', "
                    f"{Wd}.reshape(({m}, {kk}, {sc.cols})), {self.sl(a, sc)})"]
        return [f"{self.lhs(out, sc)} {op} {Wd}.reshape(({m}, {kk})) @ {self.sl(a, sc)}"]

    @prints(K.Ew)
    def st_Ew(self, st, sc):
        """Whole-array statements, one per node; matrix tangents keep element factors as
        (n, 1) columns that broadcast over the tangent columns."""
        n, matrix = st.n, sc.k.matrix
        outer, inner = use_counts(st)
        counts = outer + inner
        notes = dict(st.notes)
        sub, lines = {}, []

        def assign(s, e, stores):
            e = e.xreplace(sub)
            note = f"  # {notes[s]}" if s in notes else ""
            mine = [(r, acc) for r, t, acc in stores if t == s]
            if counts[s] == 1 and not mine and s not in notes:
                sub[s] = e
                return
            if counts[s] == len(mine) == 1 or (mine and not mine[0][1] and mine[0][0].whole
                                               and mine[0][0].anchor and r_ok(mine[0][0])):
                r, acc = mine[0]
                lines.append(store(r, acc, self.expr(e, sc)) + note)
                if counts[s] > 1:
                    sub[s] = sp.Symbol(self.vec(r, n, sc, column=matrix and not r.is_tangent))
                for r2, acc2 in mine[1:]:
                    lines.append(store(r2, acc2, self.expr(sub[s], sc)))
                return
            name = sc.name_of(s)
            sub[s] = sp.Symbol(name)
            lines.append(f"{name} = {self.expr(e, sc)}{note}")
            for r, acc in mine:
                lines.append(store(r, acc, name))

        def r_ok(r):
            return r.n == n

        def store(r, acc, text):
            if r.n == 1 and n > 1 and not r.is_tangent:
                return (f"{self.sl(r, sc)}[0] += {sc.g('np')}.sum({sc.g('np')}.broadcast_to("
                        f"{text}, ({n},)))")
            return f"{self.lhs(r, sc)} {'+=' if acc else '='} {text}"

        for s, r in st.loads:
            sub[s] = sp.Symbol(self.vec(r, n, sc, column=matrix))
        for s, e in st.assigns:
            assign(s, sp.sympify(e), st.stores)
        for r, s, acc in st.stores:
            if s not in {t for t, _ in st.assigns}:
                lines.append(store(r, acc, self.expr(sub[s], sc)))
        for s, r in st.col_loads:
            sub[s] = sp.Symbol(self.vec(r, n, sc))
        for s, b in st.col_basis:
            sub[s] = sp.Symbol(f"{sc.g('rg_basis')}({n}, {sc.cols}, {b.off}, "
                               f"{b.n == 1 and n > 1})")
        for s, e in st.col_assigns:
            assign(s, sp.sympify(e), st.col_stores)
        for r, s, acc in st.col_stores:
            if s not in {t for t, _ in st.col_assigns}:
                lines.append(store(r, acc, self.expr(sub[s], sc)))
        return lines
