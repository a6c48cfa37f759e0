"""Template functions every estimator's module includes (see the contract in __init__)."""
# ruff: noqa: F821  (names are defined in the generated module)


def forward_and_backprop(th, s, x, y, w, v, vb, thb, ybar):
    """One step forward from state s and input x, the loss, and its backprop through the
    step: thb += ∂l/∂θ at fixed s_{t-1} (every parameter), vb[:S] = ∂l/∂s_{t-1}."""
    rg_copy(v[0:S], s)
    rg_copy(v[S:S + X], x)
    forward(th, v)
    loss = rg_loss(v[OUT_OFF:OUT_OFF + NOUT], y, ybar, w)
    rg_zero(vb)
    rg_axpy(vb[OUT_OFF:OUT_OFF + NOUT], 1.0, ybar)
    vjp_out(th, v, vb, thb)
    return loss


def est_nothing_to_flush(th, E, g, rng, W):
    """This estimator finishes its work every step: nothing is pending."""
    return


def est_zero_state(E):
    """A state reset zeroes the estimator's memory (G_t = 0 when s_t is constant)."""
    rg_zero(E)


TEMPLATES = [forward_and_backprop]
