"""A toy estimator, written the way a user adds one: this file and one ``register``
line. It is the immediate gradient (∂l_t/∂θ with s_{t-1} held fixed, TBPTT with k = 1)
times a gain, so its numbers can be checked against ``tbptt(1)``."""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from rgraph.codegen import Template
from rgraph.estimators import common, register
from rgraph.estimators.base import EstimatorSpec, Option


def immediate_step(th, s, x, y, w, g, rng, *, v, vb, thb, ybar):
    """g += GAIN ∂l_t/∂θ at fixed s_{t-1}."""
    rg_zero(thb)
    loss = forward_and_backprop(th, s, x, y, w, v, vb, thb, ybar)
    rg_axpy(g, GAIN, thb)
    gather_new(v, s)
    return loss


class Immediate(EstimatorSpec):
    name = "toy-immediate"
    options = (Option("gain", "multiplies the immediate gradient", read=float),)

    def __init__(self, lay, sched, analysis, gain=1.0, **opts):
        super().__init__(lay, sched, analysis, **opts)
        self.gain = float(gain)

    def flops(self):
        return self.base_flops()

    def kernels(self):
        return []

    def constants(self):
        return {"GAIN": self.gain}

    def scratch_layout(self):
        return {**self.base_scratch(), "thb": (self.lay.n_params,)}

    def templates(self):
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(immediate_step, "est_step", "step")]


register("toy-immediate", Immediate)
