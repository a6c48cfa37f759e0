"""The exact references: RTRL (forward) and BPTT / truncated BPTT (backward).

* ``rtrl`` keeps G_t = ds_t/dθ (S x R) and updates it with one matrix-tangent jvp whose
  parameter tangent is the identity: G_t = H_t G_{t-1} + F_t (Williams & Zipser).
* ``tbptt(k)`` stores k steps of values, then backpropagates through them: the loss
  gradient truncated at the segment start (segments end every k steps and at state
  resets). ``bptt`` is the same with one segment per run (``total_gradient``: the whole
  sequence; training: the whole chunk handed to one compiled call).
"""
# ruff: noqa: F821  (template names are defined in the generated module)
from __future__ import annotations

from . import common
from .base import EstimatorSpec, positive_int, renamed


# ------------------------------------------------------------------------ RTRL
def rtrl_step(th, s, E, x, y, w, g, rng, W):
    """RTRL: exact online gradient, dl/dθ = ∂l/∂θ + (∂l/∂s_{t-1}) G_{t-1}."""
    (G,) = est_views(E)
    v, vd, vb, ybar, thd, G_new = W
    loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
    rg_gemv_t(g[0:NR], G, vb[0:S])
    # G_t = H_t G_{t-1} + F_t: one jvp with R columns, G_{t-1} as the previous state's
    # tangent and the identity as the parameters' tangent
    jvp_full(th, v, thd, G, vd, G_new)
    rg_copy2(G, G_new)
    gather_new(v, s)
    return loss


class RTRL(EstimatorSpec):
    name = "rtrl"
    exact = True

    def kernels(self):
        p = self.prog
        return [p.jvp("jvp_full", params="basis", matrix=True)]

    def state_layout(self):
        return {"G": (self.prog.n_state, self.prog.n_rec)}

    def scratch_layout(self):
        p = self.prog
        return {"v": (p.n_values,), "vd": (p.n_values, p.n_rec), "vb": (p.n_values,),
                "ybar": (self.nout,), "thd": (1, 1), "G_new": (p.n_state, p.n_rec)}

    def functions(self):
        return common.TEMPLATES + [renamed(rtrl_step, "est_step"),
                                   renamed(common.est_nothing_to_flush, "est_flush"),
                                   renamed(common.est_zero_state, "est_reset")]


# ------------------------------------------------------------------------ TBPTT
def tbptt_step(th, s, E, x, y, w, g, rng, W):
    """Forward one step and store it; the backward pass waits for the segment end."""
    pos, traj, ybars = seg_views(E)
    k = int(pos[0])
    vk = traj[k]
    rg_copy(vk[0:S], s)
    rg_copy(vk[S:S + X], x)
    forward(th, vk)
    loss = rg_loss(vk[OUT_OFF:OUT_OFF + NOUT], y, ybars[k], w)
    gather_new(vk, s)
    pos[0] = k + 1
    return loss


def tbptt_flush(th, E, g, rng, W):
    """Backpropagate the stored segment's losses to θ, truncated at the segment start."""
    pos, traj, ybars = seg_views(E)
    vb, sb = W
    backprop_segment(th, traj, ybars, int(pos[0]), 0, vb, sb, g)
    pos[0] = 0.0


class TBPTT(EstimatorSpec):
    name = "tbptt"
    segment = True

    def __init__(self, prog, analysis, k=None, **opts):
        super().__init__(prog, analysis, **opts)
        self.k = None if k is None else positive_int(k, "tbptt: truncation k")

    @property
    def exact(self):
        return self.k is None

    def describe(self):
        return "bptt" if self.k is None else f"tbptt({self.k})"

    def kernels(self):
        p = self.prog
        return [p.vjp("vjp_step", p.output_ids_loss + p.new_state, ("params", "state")),
                p.scatter_add("scatter_new", p.new_state, "vb")]

    def state_layout(self):
        p = self.prog
        return {"pos": (1,), "traj": ("K", p.n_values), "ybars": ("K", self.nout)}

    def scratch_layout(self):
        p = self.prog
        return {"vb": (p.n_values,), "sb": (p.n_state,)}

    def segment_length(self, T=None):
        if self.k is not None:
            return self.k
        if T is None:
            raise ValueError("bptt needs the sequence length")
        return T

    def functions(self):
        return [common.backprop_segment, renamed(tbptt_step, "est_step"),
                renamed(tbptt_flush, "est_flush"), renamed(common.est_zero_state, "est_reset")]


def BPTT(prog, analysis, **opts):
    return TBPTT(prog, analysis, k=None, **opts)
