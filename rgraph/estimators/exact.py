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

from .. import autodiff
from ..autodiff import ParamTangents
from ..codegen import Template
from . import common
from .base import EstimatorSpec, positive_int


# ------------------------------------------------------------------------ RTRL
def rtrl_step(th, s, x, y, w, g, rng, *, G, v, vd, vb, ybar, G_new):
    """RTRL: exact online gradient, dl/dθ = ∂l/∂θ + (∂l/∂s_{t-1}) G_{t-1}."""
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    rg_gemv_t(g[0:NR], G, vb[0:S])
    # G_t = H_t G_{t-1} + F_t: one jvp with R columns, G_{t-1} as the previous state's
    # tangent and the identity as the parameters' tangent
    jvp_full(th, v, G, vd, G_new)
    rg_copy2(G, G_new)
    gather_new(v, s)
    return loss


class RTRL(EstimatorSpec):
    name = "rtrl"
    exact = True

    def kernels(self):
        return [self.jvp("jvp_full", params=ParamTangents.IDENTITY, matrix=True)]

    def state_layout(self):
        return {"G": (self.lay.n_state, self.lay.n_rec)}

    def scratch_layout(self):
        lay = self.lay
        return {**self.base_scratch(), "vd": (lay.n_values, lay.n_rec),
                "G_new": (lay.n_state, lay.n_rec)}

    def templates(self):
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(rtrl_step, "est_step", "step")]


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
    name = "tbptt"
    segment = True

    def __init__(self, lay, sched, analysis, k=None, **opts):
        super().__init__(lay, sched, analysis, **opts)
        self.k = None if k is None else positive_int(k, "tbptt: truncation k")

    @property
    def exact(self):
        return self.k is None

    @property
    def whole_sequence(self) -> bool:
        """One segment per run (bptt): a training chunk is one exact update."""
        return self.k is None

    def describe(self):
        return "bptt" if self.k is None else f"tbptt({self.k})"

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


def BPTT(lay, sched, analysis, **opts):
    return TBPTT(lay, sched, analysis, k=None, **opts)
