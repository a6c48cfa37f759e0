"""The exact references: RTRL (forward) and BPTT / truncated BPTT (backward).

* ``rtrl`` keeps G_t = ds_t/dθ (S x R) and updates it with one matrix-tangent jvp whose
  parameter tangent is the identity: G_t = H_t G_{t-1} + F_t (Williams & Zipser).
* ``tbptt(k)`` stores k steps of values, then backpropagates through them: the loss
  gradient truncated at the segment start (segments end every k steps and at state
  resets). ``bptt`` is the same with one segment per run (``total_gradient``: the whole
  sequence; training: the whole chunk handed to one compiled call).
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

import numpy as np

from .. import autodiff
from ..autodiff import ParamTangents
from ..codegen import Template
from ..sparsity import association, patterns
from . import common, hprod, kron
from .base import EstimatorSpec, Option, positive_int
from .names import Argument, parse_truncation


# ------------------------------------------------------------------------ RTRL
def rtrl_step(th, s, x, y, w, g, rng, *, G, G2, which, v, vd, vb, ybar):
    """RTRL: exact online gradient, dl/dθ = ∂l/∂θ + (∂l/∂s_{t-1}) G_{t-1}. G_{t-1} and
    G_t take turns in two buffers (``which`` says where G_{t-1} is): no copy."""
    G_old, G_new = (G, G2) if which[0] == 0.0 else (G2, G)
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    rg_gemv_t(g[0:NR], G_old, vb[0:S])
    # G_t = H_t G_{t-1} + F_t: one jvp with R columns, G_{t-1} as the previous state's
    # tangent and the identity as the parameters' tangent
    jvp_full(th, v, G_old, vd, G_new)
    which[0] = 1.0 - which[0]
    gather_new(v, s)
    return loss


def rtrl_step_explicit(th, s, x, y, w, g, rng, *, G, G2, which, v, vd, vb, ybar, D,
                       ahat, Hs, Hc, vdH):
    """RTRL: exact online gradient, dl/dθ = ∂l/∂θ + (∂l/∂s_{t-1}) G_{t-1}, with H_t
    formed first (the cheaper association for this cell). G_{t-1} and G_t take turns in
    two buffers (``which`` says where G_{t-1} is): no copy."""
    G_old, G_new = (G, G2) if which[0] == 0.0 else (G2, G)
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    rg_gemv_t(g[0:NR], G_old, vb[0:S])
    # G_t = H_t G_{t-1} + Σ_g D_t ⊗ â_t: H_t formed first; D_t = ∂s_t/∂z_t, the
    # identity injected at the sums
    h_apply(th, v, G_old, G_new, Hs, vdH, Hc)
    jvp_z_m(th, v, vd, D)
    kron_input(v, ahat)
    kron_immediate(ahat, D, G_new)
    which[0] = 1.0 - which[0]
    gather_new(v, s)
    return loss


class RTRL(EstimatorSpec):
    """G_t = H_t G_{t-1} + F_t through one jvp of R columns or, where the parameters enter
    as Kronecker terms and the cost model prefers it, with H_t formed first and
    F_t = Σ_g D_t ⊗ â_t added on its non-zero entries."""
    name = "rtrl"
    exact = True

    def __init__(self, lay, sched, analysis, **opts):
        super().__init__(lay, sched, analysis, **opts)
        k = analysis.kronecker
        self.assoc = association(lay, lay.n_rec)
        self.explicit = bool(k.ok and self.assoc.explicit and lay.n_rec)
        if self.explicit:
            self.groups = k.groups
            self.z_ids, self.nz = k.z_ids, k.nz

    def flops(self):
        """base + H G (P columns) + 4 S P (F_t added, the gradient's L_t G_t)."""
        S, P = self.lay.n_state, self.lay.n_rec
        return self.base_flops() + self.push_flops(P) + 4 * S * P

    def kernels(self):
        if not self.explicit:
            return [self.jvp("jvp_full", params=ParamTangents.IDENTITY, matrix=True)]
        return [self.jvp("jvp_state_m", matrix=True),
                self.jvp("jvp_z_m", seeds=[], inject=tuple(self.z_ids), matrix=True,
                         identity=True)]

    def constants(self):
        if not self.explicit:
            return {}
        return {**self.immediate_tables(), **hprod.constants(self.assoc)}

    def choices(self):
        if not self.explicit:
            return {}
        return {**kron.choices(self.lay, self.groups), **hprod.choices(self.assoc)}

    def state_layout(self):
        SR = (self.lay.n_state, self.lay.n_rec)
        return {"G": SR, "G2": SR, "which": (1,)}

    def scratch_layout(self):
        lay = self.lay
        if not self.explicit:
            return {**self.base_scratch(), "vd": (lay.n_values, lay.n_rec)}
        return {**self.base_scratch(), "vd": (lay.n_values, self.nz),
                "D": (lay.n_state, self.nz), "ahat": (sum(g.dim_input for g in self.groups),),
                **hprod.scratch(lay, self.assoc)}

    def templates(self):
        if not self.explicit:
            return [Template(common.forward_and_backprop, "forward_and_backprop"),
                    Template(rtrl_step, "est_step", "step")]
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(kron.kron_input, "kron_input"),
                Template(kron_immediate, "kron_immediate"),
                *hprod.templates(self.assoc),
                Template(rtrl_step_explicit, "est_step", "step")]

    def immediate_tables(self) -> dict:
        """``kron_immediate``'s tables: per term (``IMMEDIATE_TERMS``) its block in th,
        its sum's first column in D_t, input length and offset in â, and the range of
        its sum's entries in ``D_ROWS`` / ``D_COLS``, D_t's structurally non-zero
        entries sum by sum (row, column within the sum), column-major."""
        lay = self.lay
        pat = patterns(lay, self.z_ids, lay.new_state).tocoo()
        rows, cols, at, out = [], [], {}, []
        for t in kron.terms(lay, self.groups):
            if t.col not in at:         # the sum's entries, once
                sel = (pat.col >= t.col) & (pat.col < t.col + t.rows)
                r, c = pat.row[sel], pat.col[sel] - t.col
                order = np.lexsort((r, c))
                at[t.col] = (len(rows), len(rows) + len(r))
                rows += r[order].tolist()
                cols += c[order].tolist()
            out.append((t.param, t.col, t.na, t.uo) + at[t.col])
        return {"IMMEDIATE_TERMS": tuple(out), "D_ROWS": np.array(rows, dtype=np.int64),
                "D_COLS": np.array(cols, dtype=np.int64),
                **kron.constants(lay, self.groups)}


def kron_immediate(ahat, D, G):
    """G += F_t = Σ_g D_t ⊗ â_tᵀ on the non-zero entries of D_t: every term's parameter
    block gets D_t[:, its sum's columns] ⊗ its input (``IMMEDIATE_TERMS``: the block's
    offset in th, the sum's first column in D_t, the input's length and offset in â,
    and the sum's entries e0:e1 of ``D_ROWS`` / ``D_COLS``)."""
    for p, col, na, uo, e0, e1 in IMMEDIATE_TERMS:
        for e in range(e0, e1):
            i, r = D_ROWS[e], D_COLS[e]
            d = D[i, col + r]
            for j in range(na):
                G[i, p + r * na + j] += d * ahat[uo + j]


# ------------------------------------------------------------------------ TBPTT
def tbptt_flush(th, g, rng, *, pos, traj, ybars, vb, sb):
    """Backpropagate the stored segment's losses to θ, truncated at the segment start."""
    backprop_segment(th, traj, ybars, int(pos[0]), 0, vb, sb, g)
    pos[0] = 0.0


def segment_kernels(spec: EstimatorSpec) -> list:
    """The kernels of backpropagation through a stored segment."""
    lay = spec.lay
    return [spec.vjp("vjp_step", [lay.loss_output_id] + lay.new_state),
            autodiff.scatter_add(lay, "scatter_new", lay.new_state, "vb")]


def segment_layout(spec: EstimatorSpec) -> dict:
    """A stored segment: the write position, each step's values and loss cotangent."""
    return {"pos": (1,), "traj": ("K", spec.lay.n_values), "ybars": ("K", spec.nout)}


class TBPTT(EstimatorSpec):
    """Backprop through the last k steps, every k steps (segments of k)."""
    name = "tbptt"
    segment = True
    options = (Option("k", "the truncation length (also written tbptt(K))", read=None),)
    argument = Argument("(", "k", parse_truncation, "tbptt(K), K the truncation length")
    shown = ("tbptt(16)",)

    def __init__(self, lay, sched, analysis, k=None, **opts):
        super().__init__(lay, sched, analysis, **opts)
        if k is None:
            raise ValueError("tbptt needs a truncation length: 'tbptt(16)' or k=16")
        self.k = positive_int(k, "tbptt: truncation k")

    @property
    def exact(self):
        return self.k is None

    @property
    def whole_sequence(self) -> bool:
        """One segment per run (bptt): a training chunk is one exact update."""
        return self.k is None

    def describe(self):
        return "bptt" if self.k is None else f"tbptt({self.k})"

    def flops(self):
        """base + 2 F: one backward step per step, taken at the segment's end."""
        return self.base_flops() + 2 * self.lay.flops()

    def kernels(self):
        return segment_kernels(self)

    def state_layout(self):
        return segment_layout(self)

    def scratch_layout(self):
        return {"vb": (self.lay.n_values,), "sb": (self.lay.n_state,)}

    def segment_length(self, T=None):
        if self.k is not None:
            return self.k
        if T is None:
            raise ValueError("bptt needs the sequence length")
        return T

    def templates(self):
        return [Template(common.backprop_segment, "backprop_segment"),
                Template(common.segment_step, "est_step", "step"),
                Template(tbptt_flush, "est_flush", "flush")]


class BPTT(TBPTT):
    """Backprop through the whole sequence: one segment per run, the exact gradient."""
    name = "bptt"
    options = ()
    argument = None
    shown = ()

    def __init__(self, lay, sched, analysis, **opts):
        EstimatorSpec.__init__(self, lay, sched, analysis, **opts)
        self.k = None
