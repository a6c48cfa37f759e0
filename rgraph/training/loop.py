"""The online loop, as template functions built into every generated module.

The module builder checks the names they use against the module (the sizes ``S``,
``X``, ``NV``, ``NOUT``, ``OUT_OFF``, ``DT``, the kernels, the ``rg_*`` helpers, the
estimator's ``est_step`` / ``est_flush`` / ``est_reset`` and ``est_scratch``) and
resolves their static choices (the optimizers' ``opt_update`` comes from
``optim``): ``FLUSHES`` (the estimator has work pending at segment
ends), ``RESETS`` (it has a reset of its own rather than zeroing its state) and
``BATCHED`` (``run_batch``: ``est_batch`` steps every stream at once, on the scratch of
``est_scratch_batch``). Under
numba each one is ``@njit``: a whole chunk of training steps, for every stream of the
batch, is one call.
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)


def run(th, states, E, xs, ys, ws, resets, rng, g, opt, hp, losses, t0, update_every,
        train):
    """Steps t0.. of B streams; estimates accumulate in g, and with train θ takes a step
    every update_every steps. Returns 0, or ±(t + 1) at a non-finite loss/gradient."""
    T, B = xs.shape[0], xs.shape[1]
    if BATCHED:
        W = est_scratch_batch(B)
    else:
        W = est_scratch()
    for t in range(T):
        for b in range(B):
            if resets[t, b]:
                if FLUSHES:
                    est_flush(th, E[b], g, rng, W)
                rg_zero(states[b])
                if RESETS:
                    est_reset(E[b])
                else:
                    rg_zero(E[b])
            if not BATCHED:
                losses[t, b] = est_step(th, states[b], E[b], xs[t, b], ys[t, b], ws[t, b],
                                        g, rng, W)
        if BATCHED:     # every stream at once
            est_batch(th, states, E, xs[t], ys[t], ws[t], g, rng, losses[t], W)
        for b in range(B):
            if not math.isfinite(losses[t, b]):
                return t + 1
        if (t0 + t + 1) % update_every == 0:
            if FLUSHES:
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
    T, B = xs.shape[0], xs.shape[1]
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
