"""The online loop, as template functions copied into every generated module.

These functions are never called here: ``codegen`` copies their source into a
generated module, where the names they use exist (see ``estimators/__init__.py`` for
the contract): the dimension constants, the kernels, the backend's ``rg_*`` helpers and
the estimator's ``est_*`` functions. Under numba each one is ``@njit``: a whole chunk of
training steps, for every stream of the batch, is one call.

Optimizer hyper-parameters travel in one float array ``hp`` (see ``optim.py``):
``[kind (0 sgd, 1 adam), lr, decay, beta1, beta2, eps, clip, weight_decay]``; its state
``opt`` holds ``[step, m (NP), v (NP)]``. The learning rate at update k is
``lr / (1 + decay * sqrt(k))`` (Tallec & Ollivier's schedule; decay 0 is constant).
"""
# ruff: noqa: F821  (names are defined in the generated module)


def opt_update(th, g, opt, hp, scale):
    """One optimizer step on th with gradient g * scale (scale = 1 / batch); zeroes g."""
    step = opt[0] + 1.0
    opt[0] = step
    lr = hp[1] / (1.0 + hp[2] * math.sqrt(step))
    clip = hp[6]
    if clip > 0.0:
        norm = rg_nrm2(g) * scale
        if norm > clip:
            scale = scale * clip / norm
    wd = hp[7]
    n = th.shape[0]
    if hp[0] == 0.0:
        for i in range(n):
            th[i] -= lr * (g[i] * scale + wd * th[i])
            g[i] = 0.0
    else:
        b1, b2, eps = hp[3], hp[4], hp[5]
        c1 = 1.0 - b1 ** step
        c2 = 1.0 - b2 ** step
        for i in range(n):
            gi = g[i] * scale + wd * th[i]
            m = b1 * opt[1 + i] + (1.0 - b1) * gi
            s = b2 * opt[1 + n + i] + (1.0 - b2) * gi * gi
            opt[1 + i] = m
            opt[1 + n + i] = s
            th[i] -= lr * (m / c1) / (math.sqrt(s / c2) + eps)
            g[i] = 0.0


def run(th, states, E, xs, ys, ws, resets, rng, g, opt, hp, losses, t0, update_every,
        train):
    """Steps t0 .. t0+T-1 of B streams. xs (T, B, X), ys (T, B) or (T, B, Y), ws (T, B)
    loss weights, resets (T, B): zero that stream's state before the step. Gradient
    estimates accumulate in g; with ``train`` the parameters take an optimizer step every
    ``update_every`` steps (counted from 0) on the batch mean. losses[t, b] is written.
    Returns 0, or t + 1 if the loss of step t is not finite, or -(t + 1) if the
    gradient is not finite at the update after step t (the caller raises)."""
    T = xs.shape[0]
    B = xs.shape[1]
    W = est_scratch()
    for t in range(T):
        bad = False
        for b in range(B):
            if resets[t, b]:
                est_flush(th, E[b], g, rng, W)
                rg_zero(states[b])
                est_reset(E[b])
            loss = est_step(th, states[b], E[b], xs[t, b], ys[t, b], ws[t, b], g, rng, W)
            losses[t, b] = loss
            if not math.isfinite(loss):
                bad = True
        if bad:
            return t + 1
        if (t0 + t + 1) % update_every == 0:
            for b in range(B):
                est_flush(th, E[b], g, rng, W)
            if train:
                if not rg_allfinite(g):
                    return -(t + 1)
                opt_update(th, g, opt, hp, 1.0 / B)
    return 0


def flush_all(th, E, g, rng):
    """Finish every stream's pending segment (its gradient goes into g)."""
    W = est_scratch()
    for b in range(E.shape[0]):
        est_flush(th, E[b], g, rng, W)


def evaluate(th, states, xs, ys, ws, resets, losses):
    """Forward only: the loss of every step (no gradient, no update)."""
    T = xs.shape[0]
    B = xs.shape[1]
    v = np.zeros(NV, dtype=DT)
    ybar = np.zeros(NOUT, dtype=DT)
    for t in range(T):
        for b in range(B):
            if resets[t, b]:
                rg_zero(states[b])
            rg_copy(v[0:S], states[b])
            rg_copy(v[S:S + X], xs[t, b])
            forward(th, v)
            losses[t, b] = rg_loss(v[OUT_OFF:OUT_OFF + NOUT], ys[t, b], ybar, ws[t, b])
            gather_new(v, states[b])


TEMPLATES = [opt_update, run, flush_all, evaluate]
