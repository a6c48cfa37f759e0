"""The op table: every op's shape rule, forward and derivative rules, side by side.

Two families:

* **Elementwise** ops are a scalar sympy expression of their operands (``a0, a1, ...``).
  Their jvp and vjp are *derived*: sympy differentiates the expression. Arithmetic is
  ``ARITHMETIC`` below; a scalar function (tanh, sigmoid, ...) is one entry of the
  registry in ``rgraph.scalars``, and ``rg.pointwise(fn, ...)`` makes one from user code.
* **Structural** ops (matmul, concat, slice) are short classes holding their shape rule,
  forward, jvp and vjp statements next to each other, and a flop count for the cost
  model. A tangent argument that is ``None`` is a symbolic zero: rules skip it.

Statements are the backend-neutral description of ``rgraph.kernel``; the ops never
know which backend prints them.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from . import kernel as K
from .errors import ShapeError

# ------------------------------------------------------------------------- elementwise

ARG = sp.symbols("a0:8", real=True)


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


@dataclass(frozen=True)
class MatMul:
    """z = W @ a with W a matrix (parameter or constant) and a a vector.

    forward  z = W a
    jvp      z' = W a' + W' a        (W' a dense tangent, or the identity basis)
    vjp      a_bar += W^T z_bar ;    W_bar += z_bar a^T
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

    def jvp(self, out_dot, args, arg_dots, acc):
        W, a = args
        W_dot, a_dot = arg_dots
        st = []
        if a_dot is not None:
            st.append(K.MatVec(out_dot, W, a_dot, acc))
            acc = True
        if W_dot is not None:
            st.append(K.ParamTangent(out_dot, W_dot, a, acc))
        return st

    def vjp(self, out_bar, args, arg_bars):
        W, a = args
        W_bar, a_bar = arg_bars
        st = []
        if a_bar is not None:
            st.append(K.MatVecT(a_bar, W, out_bar))
        if W_bar is not None:
            st.append(K.Outer(W_bar, out_bar, a))
        return st

    def flops(self, out_shape, arg_shapes):
        m, k = arg_shapes[0]
        return 2 * m * k


@dataclass(frozen=True)
class Concat:
    """Concatenation of vectors: copies forward and in jvp, splits the cotangent in vjp."""

    label = "concat"

    def shape(self, shapes, names):
        for s, nm in zip(shapes, names, strict=True):
            if len(s) != 1:
                raise ShapeError(f"concat: operand '{nm}' has shape {tuple(s)}; only vectors "
                                 f"can be concatenated")
        return (sum(s[0] for s in shapes),)

    def forward(self, out, args):
        return [K.Copy(out.rows(o, a.n), a) for o, a in _parts(args)]

    def jvp(self, out_dot, args, arg_dots, acc):
        st = []
        for (o, a), ad in zip(_parts(args), arg_dots, strict=True):
            dst = out_dot.rows(o, a.n)
            if ad is not None:
                st.append(K.Copy(dst, ad, acc))
            elif not acc:
                st.append(K.Zero(dst))
        return st

    def vjp(self, out_bar, args, arg_bars):
        return [K.Copy(ab, out_bar.rows(o, a.n), True)
                for (o, a), ab in zip(_parts(args), arg_bars, strict=True) if ab is not None]

    def flops(self, out_shape, arg_shapes):
        return out_shape[0]


def _parts(args):
    off = 0
    for a in args:
        yield off, a
        off += a.n


@dataclass(frozen=True)
class Slice:
    """A contiguous slice v[start:stop] of a vector. It is a view: it generates no code,
    its value, tangent and cotangent are rows of its operand's."""

    start: int
    stop: int
    label = "slice"

    def shape(self, shapes, names):
        (s,) = shapes
        if len(s) != 1 or not (0 <= self.start < self.stop <= s[0]):
            raise ShapeError(f"slice [{self.start}:{self.stop}] of '{names[0]}' with shape "
                             f"{tuple(s)} is empty or out of range")
        return (self.stop - self.start,)

    def flops(self, out_shape, arg_shapes):
        return 0


STRUCTURAL = (MatMul, Concat, Slice)
