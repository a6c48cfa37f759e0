"""DODGE: directional gradient descent (Silver et al. 2022).

The directional derivative of the loss along a direction u of the recurrent parameters,
∂L/∂θ · u, is forward-mode: ṡ_t = H_t ṡ_{t-1} + F_t u, and (∂l_t/∂θ · u) =
∂l/∂y · ẏ_t. The estimate is (∂L/∂θ · u) u (eq. 3); readout parameters get their exact
gradient. A direction is held for a window of ``window`` steps (default: until the
state resets, i.e. the whole sequence for ``total_gradient``); at a window's start the
tangents restart from zero.

Directions (§3.3, §4.2-4.3, §5.4):
* ``random``: k independent Rademacher directions, estimates averaged — unbiased;
* ``partitioned``: one Rademacher vector cut into k zero-padded parts, estimates summed
  — unbiased, lower variance;
* ``candidate``: the normalized direction of a cheap approximate gradient, computed over
  the window before the forward-mode pass (the paper's two passes): ``"tbptt"`` (TBPTT
  with truncation ``candidate_k`` over the window), ``"average"`` (a moving average, rate
  ``beta``, of those TBPTT gradients), or a fixed direction (a dict of recurrent
  parameter arrays). Always a descent direction; not unbiased.
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

import numpy as np

from .. import autodiff
from ..autodiff import ParamTangents
from ..codegen import Template
from . import common
from .base import EstimatorSpec, Option, chooser, positive_int
from .exact import segment_kernels, segment_layout


def draw_random(rng, U):
    """k independent Rademacher directions (the columns of U)."""
    for j in range(KD):
        for i in range(NR):
            U[i, j] = 1.0 if rng.random() < 0.5 else -1.0


def draw_partitioned(rng, U):
    """One Rademacher vector cut into KD contiguous zero-padded parts."""
    rg_zero2(U)
    for j in range(KD):
        for i in range(j * NR // KD, (j + 1) * NR // KD):
            U[i, j] = 1.0 if rng.random() < 0.5 else -1.0


def dodge_step(th, s, x, y, w, g, rng, *, pos, U, sdot, v, vd, vb, thb, ybar, sdot_new,
               ydot):
    """One step: the forward tangents along the window's directions, and the estimate
    Σ_j (∂l/∂θ · u_j) u_j · SCALE (readout parameters exact)."""
    if pos[0] == 0.0:
        draw_directions(rng, U)
        rg_zero2(sdot)
    rg_zero(thb)
    loss = forward_and_backprop(th, s, x, y, w, v, vb, thb, ybar)
    rg_axpy(g[NR:NP], 1.0, thb[NR:NP])
    jvp_dir(th, v, U, sdot, vd, sdot_new)
    out_dot(sdot, vd, sdot_new, ydot)
    for j in range(KD):
        d = 0.0
        for o in range(NOUT):
            d += ybar[o] * ydot[o, j]
        for i in range(NR):
            g[i] += SCALE * d * U[i, j]
    rg_copy2(sdot, sdot_new)
    pos[0] += 1.0
    if WINDOWED:
        if pos[0] >= WINDOW:
            pos[0] = 0.0
    gather_new(v, s)
    return loss


def candidate_flush(th, g, rng, *, pos, gbar, traj, ybars, vd, vb, sb, sd, sd_new, ydot,
                    cand, u):
    """At a window's end: the candidate direction from a backward pass over the stored
    window, then the directional derivative along it from a forward pass over it."""
    L = int(pos[0])
    if L == 0:
        return
    # 1. TBPTT(CK) over the window (chunks of CK steps; CK = 0: the whole window)
    rg_zero(cand)
    backprop_segment(th, traj, ybars, L, CK, vb, sb, cand)
    rg_axpy(g[NR:NP], 1.0, cand[NR:NP])     # readout: exact
    # 2. the direction
    if FROM_TBPTT:
        rg_copy(u, cand[0:NR])
    if FROM_AVERAGE:
        rg_axpby(gbar, BETA, cand[0:NR], 1.0 - BETA)
        rg_copy(u, gbar)
    if GIVEN:
        rg_copy(u, DIRECTION)
    norm = rg_nrm2(u)
    if norm > 0.0:
        # 3. forward mode along u through the window, tangents from zero
        for i in range(NR):
            u[i] /= norm
        rg_zero(sd)
        d = 0.0
        for k in range(L):
            jvp_dir(th, traj[k], u, sd, vd, sd_new)
            out_dot(sd, vd, sd_new, ydot)
            d += rg_dot(ybars[k], ydot)
            rg_copy(sd, sd_new)
        rg_axpy(g[0:NR], d, u)
    pos[0] = 0.0


def candidate_reset(*, pos):
    """A state reset ends the window (already flushed); the moving average stays."""
    pos[0] = 0.0


class DODGE(EstimatorSpec):
    """DODGE with random or partitioned Rademacher directions (unbiased)."""

    name = "dodge"
    stochastic = True
    options = (Option("directions", "how directions are drawn", read=str,
                      choices=("random", "partitioned", "candidate")),
               Option("k", "number of directions", flag="k-dirs"),
               Option("window", "steps a direction is held"))

    def __init__(self, lay, sched, analysis, directions="random", k=1, window=None, **opts):
        super().__init__(lay, sched, analysis, **opts)
        if directions not in ("random", "partitioned"):
            raise ValueError(f"dodge: directions must be 'random', 'partitioned' or "
                             f"'candidate', got {directions!r}")
        self.directions = directions
        self.k = positive_int(k, "dodge: k (number of directions)")
        if directions == "partitioned" and self.k > lay.n_rec:
            raise ValueError(f"dodge: {self.k} parts for {lay.n_rec} recurrent parameters")
        self.window = None if window is None else positive_int(window, "dodge: window")

    def describe(self):
        return f"dodge[{self.directions}, k={self.k}]" if self.k > 1 or \
            self.directions != "random" else "dodge"

    def flops(self):
        """base + 2 F k: the parameters' tangent along k directions."""
        return self.base_flops() + 2 * self.lay.flops() * self.k

    def kernels(self):
        return dodge_kernels(self, matrix=True)

    def choices(self):
        return {"WINDOWED": self.window is not None}

    def constants(self):
        out = {"KD": self.k, "SCALE": 1.0 / self.k if self.directions == "random" else 1.0}
        if self.window is not None:
            out["WINDOW"] = self.window
        return out

    def state_layout(self):
        lay = self.lay
        return {"pos": (1,), "U": (lay.n_rec, self.k), "sdot": (lay.n_state, self.k)}

    def scratch_layout(self):
        lay = self.lay
        return {**self.base_scratch(), "vd": (lay.n_values, self.k),
                "thb": (lay.n_params,), "sdot_new": (lay.n_state, self.k),
                "ydot": (self.nout, self.k)}

    def templates(self):
        draw = draw_random if self.directions == "random" else draw_partitioned
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(draw, "draw_directions"),
                Template(dodge_step, "est_step", "step")]


class DODGECandidate(EstimatorSpec):
    """DODGE along a candidate direction (the paper's two passes over a window): TBPTT's
    gradient, its moving average, or a fixed direction. A descent direction; biased."""

    name = "dodge"
    segment = True
    options = (Option("window", "steps a direction is held"),
               Option("candidate", "'tbptt', 'average' or a dict of recurrent parameter "
                                   "arrays", read=None),
               Option("candidate_k", "the truncation of the TBPTT candidate", read=None),
               Option("beta", "the moving average's weight ('average')", read=None))

    def __init__(self, lay, sched, analysis, window=None, candidate="tbptt",
                 candidate_k=None, beta=0.1, **opts):
        super().__init__(lay, sched, analysis, **opts)
        self.window = None if window is None else positive_int(window, "dodge: window")
        self.direction = None
        if isinstance(candidate, dict):
            self.direction = self._pack_direction(candidate)
            self.candidate = "given"
        elif candidate in ("tbptt", "average"):
            self.candidate = candidate
        else:
            raise ValueError(f"dodge: candidate must be 'tbptt', 'average' or a dict of "
                             f"recurrent parameter arrays, got {candidate!r}")
        self.candidate_k = 0 if candidate_k is None else positive_int(
            candidate_k, "dodge: candidate_k")
        self.beta = float(beta)
        if not 0 < self.beta <= 1:
            raise ValueError(f"dodge: beta must be in (0, 1], got {beta!r}")

    def _pack_direction(self, d):
        out = np.zeros(self.lay.n_rec)
        names = [b.name for b in self.lay.rec_blocks]
        if set(d) != set(names):
            raise ValueError(f"dodge: a candidate direction needs exactly the recurrent "
                             f"parameters {names}, got {sorted(d)}")
        for b in self.lay.rec_blocks:
            a = np.asarray(d[b.name], dtype=np.float64)
            if a.shape != tuple(b.shape) or not np.all(np.isfinite(a)):
                raise ValueError(f"dodge: direction for '{b.name}' must be finite with shape "
                                 f"{tuple(b.shape)}, got {a.shape}")
            out[b.off:b.off + b.size] = a.ravel()
        return out

    def describe(self):
        c = self.candidate + (f"({self.candidate_k})" if self.candidate_k else "")
        return f"dodge[candidate {c}]"

    def flops(self):
        """base + 2 F (the window's backprop) + 2 F (the tangent along the candidate)."""
        return self.base_flops() + 4 * self.lay.flops()

    def kernels(self):
        return dodge_kernels(self, matrix=False) + segment_kernels(self)

    def choices(self):
        return {"FROM_TBPTT": self.candidate == "tbptt",
                "FROM_AVERAGE": self.candidate == "average",
                "GIVEN": self.candidate == "given"}

    def constants(self):
        out = {"CK": self.candidate_k}
        if self.candidate == "average":
            out["BETA"] = self.beta
        if self.direction is not None:
            out["DIRECTION"] = self.direction
        return out

    def state_layout(self):
        avg = {"gbar": (self.lay.n_rec,)} if self.candidate == "average" else {}
        return {**avg, **segment_layout(self)}

    def scratch_layout(self):
        lay = self.lay
        return {"vd": (lay.n_values,), "vb": (lay.n_values,), "sb": (lay.n_state,),
                "sd": (lay.n_state,), "sd_new": (lay.n_state,), "ydot": (self.nout,),
                "cand": (lay.n_params,), "u": (lay.n_rec,)}

    def segment_length(self, T=None):
        if self.window is not None:
            return self.window
        if T is None:
            raise ValueError("dodge with candidate directions needs a window (or the "
                             "sequence length)")
        return T

    def templates(self):
        return [Template(common.backprop_segment, "backprop_segment"),
                Template(common.segment_step, "est_step", "step"),
                Template(candidate_flush, "est_flush", "flush"),
                Template(candidate_reset, "est_reset", "reset")]


def dodge_kernels(spec, matrix: bool) -> list:
    """The forward tangents along the directions (dense parameter tangents, K of them
    with ``matrix``) and the output's tangent."""
    lay = spec.lay
    targets = lay.new_state + [lay.loss_output_id]
    return [spec.jvp("jvp_dir", params=ParamTangents.DENSE, targets=tuple(targets),
                     matrix=matrix),
            autodiff.gather(lay, "out_dot", [lay.loss_output_id], "vd", matrix=matrix)]


@chooser(DODGE, DODGECandidate)
def dodge(lay, sched, analysis, directions="random", **opts) -> EstimatorSpec:
    """``dodge``: random or partitioned directions, or a candidate direction."""
    if directions == "candidate":
        return DODGECandidate(lay, sched, analysis, **opts)
    return DODGE(lay, sched, analysis, directions=directions, **opts)
