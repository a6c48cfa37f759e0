"""The op table: every op's shape rule, forward and derivative rules, side by side.

Two families:

* **Elementwise** ops are a scalar sympy expression of their operands (``a0, a1, ...``).
  Their jvp and vjp are *derived*: sympy differentiates the expression. Arithmetic is
  ``ARITHMETIC`` below; a scalar function (tanh, sigmoid, ...) is one entry of the
  registry in ``rgraph.scalars``, and ``rg.pointwise(fn, ...)`` makes one from user code.
* **Structural** ops (matmul, concat, slice) are short classes holding their shape rule,
  forward statements, one linear jvp rule per operand (the vjp is its transpose) and a
  flop count for the cost model. Rules never see a zero tangent: the drivers in
  ``autodiff`` skip those operands.

Statements are the backend-neutral description of ``rgraph.kernel``; the ops never
know which backend prints them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps
import sympy as sp

from . import kernel as K
from .errors import ShapeError

# ------------------------------------------------------------------------- elementwise

ARG = sp.symbols("a0:8", real=True)


@dataclass(frozen=True)
class Dense:
    """An op's pattern in which every entry can be non-zero (rows x cols), given as such
    so that the structural analysis (``rgraph.sparsity``) never lists its entries."""

    rows: int
    cols: int


@dataclass(frozen=True)
class Elementwise:
    """An elementwise op: ``expr`` is a sympy expression of ``ARG[:arity]``."""

    label: str
    arity: int
    expr: sp.Expr

    def shape(self, shapes, names):
        sizes = {s[0] for s in shapes if len(s) == 1 and s[0] != 1}
        n = max(sizes) if sizes else 1
        for s in shapes:
            if len(s) != 1 or s[0] not in (1, n):
                raise ShapeError(
                    f"elementwise '{self.label}' got operands {list(names)} with shapes "
                    f"{[tuple(x) for x in shapes]}: operands must be vectors of one length "
                    f"(or length 1, which broadcasts); slice or project them to match")
        return (n,)

    def partial(self, j: int) -> sp.Expr:
        """d expr / d a_j as a sympy expression of ARG."""
        return sp.diff(self.expr, ARG[j])

    def flops(self, out_shape, arg_shapes) -> int:
        return out_shape[0] * max(1, sp.count_ops(self.expr))

    def pattern(self, j, out_shape, arg_shapes):
        """The structural pattern of d out / d arg_j (a sparse boolean matrix, or
        ``Dense`` where every entry can be non-zero), or None where the expression does
        not depend on the operand."""
        if self.partial(j) == 0:
            return None
        n, m = out_shape[0], arg_shapes[j][0]
        if m == n:
            return sps.identity(n, dtype=bool, format="csr")
        return Dense(n, 1)      # a broadcast scalar


# The arithmetic of the DSL (+ - * / and negation). Scalar functions (tanh, sigmoid, ...)
# are entries of the registry in rgraph.scalars, which makes their ops.
ARITHMETIC = {op.label: op for op in (
    Elementwise("add", 2, ARG[0] + ARG[1]),
    Elementwise("sub", 2, ARG[0] - ARG[1]),
    Elementwise("mul", 2, ARG[0] * ARG[1]),
    Elementwise("div", 2, ARG[0] / ARG[1]),
    Elementwise("neg", 1, -ARG[0]),
)}


# --------------------------------------------------------------------- structural ops
# A structural op gives its shape rule, its forward statements and one jvp rule per
# operand: the statements adding the op's tangent due to that operand alone, linear in
# the operand's tangent. The autodiff drivers skip operands whose tangent is a symbolic
# zero, and derive the vjp by transposing the same statements (``kernel``'s
# ``transpose``), so forward and reverse mode cannot drift apart.


@dataclass(frozen=True)
class MatMul:
    """z = W @ a with W a matrix (parameter or constant) and a a vector.

    forward  z = W a
    jvp      z' = W a'  (operand a)  +  W' a  (operand W: a dense tangent or the
             identity basis)
    vjp      a_bar += Wᵀ z_bar ;  W_bar += z_bar aᵀ   (the transposes)
    """

    label = "@"

    def shape(self, shapes, names):
        ws, xs = shapes
        if len(ws) != 2 or len(xs) != 1 or ws[1] != xs[0]:
            raise ShapeError(
                f"matmul {names[0]} @ {names[1]}: shapes {tuple(ws)} @ {tuple(xs)} do not "
                f"fit; the left operand must be a matrix (m, k) and the right a vector (k,)")
        return (ws[0],)

    def forward(self, out, args):
        W, a = args
        return [K.MatVec(out, W, a)]

    def jvp(self, j, out_dot, args, arg_dot):
        W, a = args
        if j == 1:
            return [K.MatVec(out_dot, W, arg_dot)]
        return [K.ParamTangent(out_dot, arg_dot, a)]

    def flops(self, out_shape, arg_shapes):
        m, k = arg_shapes[0]
        return 2 * m * k

    def pattern(self, j, out_shape, arg_shapes):
        m, k = arg_shapes[0]
        if j == 1:
            return Dense(m, k)
        # z[q] depends on the row W[q, :] (row-major)
        return sps.csr_matrix((np.ones(m * k, dtype=bool), np.arange(m * k),
                               np.arange(0, m * k + 1, k)), shape=(m, m * k))


@dataclass(frozen=True)
class Concat:
    """Concatenation of vectors: a linear op, its jvp is itself and its vjp splits the
    cotangent (the transposed copies)."""

    label = "concat"

    def shape(self, shapes, names):
        for s, nm in zip(shapes, names, strict=True):
            if len(s) != 1:
                raise ShapeError(f"concat: operand '{nm}' has shape {tuple(s)}; only vectors "
                                 f"can be concatenated")
        return (sum(s[0] for s in shapes),)

    def forward(self, out, args):
        return [st for j, a in enumerate(args) for st in self.jvp(j, out, args, a)]

    def jvp(self, j, out_dot, args, arg_dot):
        off = sum(a.n for a in args[:j])
        return [K.Copy(out_dot.rows(off, args[j].n), arg_dot)]

    def flops(self, out_shape, arg_shapes):
        return out_shape[0]

    def pattern(self, j, out_shape, arg_shapes):
        off = sum(s[0] for s in arg_shapes[:j])
        n = arg_shapes[j][0]
        return sps.csr_matrix((np.ones(n, dtype=bool), (np.arange(off, off + n),
                                                        np.arange(n))),
                              shape=(out_shape[0], n))


@dataclass(frozen=True)
class Slice:
    """A contiguous slice v[start:stop] of a vector: a view. It generates no code; its
    value, tangent and cotangent are the rows ``view_offset ...`` of its operand's (the
    layout places it there), so every kernel reads and writes it in place."""

    start: int
    stop: int
    label = "slice"
    is_view = True

    @property
    def view_offset(self) -> int:
        return self.start

    def shape(self, shapes, names):
        (s,) = shapes
        if len(s) != 1 or not (0 <= self.start < self.stop <= s[0]):
            raise ShapeError(f"slice [{self.start}:{self.stop}] of '{names[0]}' with shape "
                             f"{tuple(s)} is empty or out of range")
        return (self.stop - self.start,)

    def flops(self, out_shape, arg_shapes):
        return 0

    def pattern(self, j, out_shape, arg_shapes):
        n = self.stop - self.start
        return sps.csr_matrix((np.ones(n, dtype=bool), (np.arange(n),
                                                        np.arange(self.start, self.stop))),
                              shape=(n, arg_shapes[0][0]))


STRUCTURAL = (MatMul, Concat, Slice)
