"""Template functions several estimators share (names: see ``base``)."""
# ruff: noqa: F821  (the module builder checks these names against the generated module)


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


def backprop_segment(th, traj, ybars, L, trunc, vb, sb, acc):
    """BPTT over the L stored steps of a segment: their losses' gradient is added into
    acc (every parameter), truncated every ``trunc`` steps from the segment start (0: not
    at all); sb is left holding ∂(losses)/∂s at the segment start."""
    rg_zero(sb)
    for k in range(L - 1, -1, -1):
        if trunc > 0 and (k + 1) % trunc == 0:
            rg_zero(sb)
        rg_zero(vb)
        rg_axpy(vb[OUT_OFF:OUT_OFF + NOUT], 1.0, ybars[k])
        scatter_new(sb, vb, acc)
        vjp_step(th, traj[k], vb, acc)
        rg_copy(sb, vb[0:S])


def segment_step(th, s, x, y, w, g, rng, *, pos, traj, ybars):
    """Forward one step and store it; the backward pass waits for the segment end."""
    k = int(pos[0])
    vk = traj[k]
    rg_copy(vk[0:S], s)
    rg_copy(vk[S:S + X], x)
    forward(th, vk)
    loss = rg_loss(vk[OUT_OFF:OUT_OFF + NOUT], y, ybars[k], w)
    gather_new(vk, s)
    pos[0] = k + 1
    return loss
