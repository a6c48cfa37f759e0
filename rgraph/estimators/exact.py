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
from ..codegen import Template, index
from ..sparsity import association, patterns
from . import common, hprod
from .base import EstimatorSpec, Option, positive_int
from .names import Argument, parse_truncation
from .kron import kron_pieces


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


def rtrl_step_explicit(th, s, x, y, w, g, rng, *, G, G2, which, v, vd, vb, ybar, D, Hs,
                       Hc, vdH):
    """RTRL: exact online gradient, dl/dθ = ∂l/∂θ + (∂l/∂s_{t-1}) G_{t-1}, with H_t
    formed first (the cheaper association for this cell). G_{t-1} and G_t take turns in
    two buffers (``which`` says where G_{t-1} is): no copy."""
    G_old, G_new = (G, G2) if which[0] == 0.0 else (G2, G)
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    rg_gemv_t(g[0:NR], G_old, vb[0:S])
    # G_t = H_t G_{t-1} + Σ_g D_t ⊗ â_t: H_t from its coloured columns, then one GEMM
    # per run of its dense columns; D_t = ∂s_t/∂z_t, the identity injected at the sums
    h_seed(Hs)
    jvp_state_m(th, v, Hs, vdH, Hc)
    h_apply(Hc, G_old, G_new)
    jvp_z_m(th, v, vd, D)
    kron_immediate(v, D, G_new)
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
        return hprod.constants(self.assoc) if self.explicit else {}

    def state_layout(self):
        SR = (self.lay.n_state, self.lay.n_rec)
        return {"G": SR, "G2": SR, "which": (1,)}

    def scratch_layout(self):
        lay = self.lay
        if not self.explicit:
            return {**self.base_scratch(), "vd": (lay.n_values, lay.n_rec)}
        return {**self.base_scratch(), "vd": (lay.n_values, self.nz),
                "D": (lay.n_state, self.nz), **hprod.scratch(lay, self.assoc)}

    def templates(self):
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(rtrl_step_explicit if self.explicit else rtrl_step, "est_step",
                         "step")]

    def rendered(self, mb):
        if not self.explicit:
            return {}
        return {**hprod.rendered(mb, self.lay, self.assoc),
                "kron_immediate": self._immediate(mb)}

    def _immediate(self, mb):
        """G[:, block of each term] += D[:, the sum's columns] ⊗ â on D's structurally
        non-zero entries (tables of (row, column) per sum)."""
        lay = self.lay
        pat = patterns(lay, self.z_ids, lay.new_state).tocoo()
        local = mb.namer.child()
        v, D, G, e, i, r, j, d = (local.claim(x) for x in
                                  ("v", "D", "G", "e", "i", "r", "j", "d"))
        out = [f"def kron_immediate({v}, {D}, {G}):",
               '    """G += F_t = Σ_g D_t ⊗ â_t on the non-zero entries of D_t: every '
               'term\'s parameter block gets D_t[:, its sum\'s columns] ⊗ its input."""']
        for grp, _, _, sums, pieces in kron_pieces(lay, self.groups, mb):
            for q, col, ts in sums:
                m = q.shape[0]
                sel = (pat.col >= col) & (pat.col < col + m)
                rows, cols = pat.row[sel], pat.col[sel] - col
                order = np.lexsort((rows, cols))
                ti = mb.constant(f"D_{q.name}_rows", rows[order].astype(np.int64))
                tr = mb.constant(f"D_{q.name}_cols", cols[order].astype(np.int64))
                out += [f"    # {q.name} ({m}): columns {col}:{col + m} of D_t, "
                        f"{len(rows)} non-zero entries",
                        f"    for {e} in range({len(rows)}):",
                        f"        {i}, {r} = {ti}[{e}], {tr}[{e}]",
                        f"        {d} = {D}[{i}, {col} + {r}]"]
                for t in ts:
                    blk = lay.block_of(t.param_id)
                    at = mb.offset(blk.name, blk.off, param=True)
                    arr, a0, na, _ = pieces[t.input_id]
                    if t.is_bias:
                        out.append(f"        {G}[{i}, {at} + {r}] += {d}")
                    else:
                        src = v if arr == "v" else arr
                        out += [f"        for {j} in range({na}):",
                                f"            {G}[{i}, {at} + {r} * {na} + {j}] += "
                                f"{d} * {src}[{index(a0, j)}]"]
        return "\n".join(out) + "\n"


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
