"""Template functions several estimators share (names: see ``base``)."""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
import ast

from ..codegen import resolve_choices, template_name, template_source


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


def forward_and_backprop_b(th, states, x, y, w, v, vb, thb, ybar, losses):
    """``forward_and_backprop`` for every stream of a batch at once: each row of v, vb
    and ybar is a stream's; thb accumulates every stream's ∂l/∂θ (the products are GEMMs
    over the streams)."""
    for b in range(states.shape[0]):
        rg_copy(v[b, 0:S], states[b])
        rg_copy(v[b, S:S + X], x[b])
    forward_b(th, v)
    rg_zero2(vb)
    for b in range(states.shape[0]):
        losses[b] = rg_loss(v[b, OUT_OFF:OUT_OFF + NOUT], y[b], ybar[b], w[b])
        rg_axpy(vb[b, OUT_OFF:OUT_OFF + NOUT], 1.0, ybar[b])
    vjp_out_b(th, v, vb, thb)


def batch_step(th, states, E, x, y, w, g, rng, losses, *, v, vb, ybar, W1):
    """One step of every stream: the forward pass and the loss's backprop for the whole
    batch, then each stream's own rest of the step (``est_rest``: the estimator's step
    after its ``forward_and_backprop``), stream after stream, so that random numbers are
    drawn in the one-stream loop's order. W1: the one-stream scratch, used in turn."""
    forward_and_backprop_b(th, states, x, y, w, v, vb, g, ybar, losses)
    for b in range(states.shape[0]):
        est_rest(th, E[b], v[b], vb[b], g, rng, W1)
        gather_new(v[b], states[b])


def rest_of_step(fn, choices):
    """The source of a "part" template ``(th, E, v, vb, g, rng, W, *, ...)`` doing what
    the step template ``fn`` does (its static ``choices`` resolved) after ``loss =
    forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)`` (``batch_step`` does that for
    the whole batch), without its closing ``gather_new(v, s)`` and ``return loss``; None
    if the step is not of that form (its statements before the forward pass must not
    read the step's values)."""
    src = resolve_choices(template_source(fn), choices, template_name(fn))
    f = ast.parse(src).body[0]
    body = f.body[1:] if _is_doc(f.body[0]) else f.body
    head = "loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)"
    calls = [i for i, st in enumerate(body) if ast.unparse(st) == head]
    if len(calls) != 1 or len(body) < 3 or ast.unparse(body[-2]) != "gather_new(v, s)" \
            or ast.unparse(body[-1]) != "return loss":
        return None
    k = calls[0]
    rest = body[:k] + body[k + 1:-2]
    step_only = {"s", "x", "y", "w", "loss", "ybar"}
    if any(isinstance(n, ast.Name) and (n.id in step_only or
                                        (n.id in ("v", "vb") and i < k))
           for i, st in enumerate(rest) for n in ast.walk(st)):
        return None
    kwonly = [a.arg for a in f.args.kwonlyargs if a.arg not in ("v", "vb", "ybar")]
    lines = src.splitlines()
    text = [f"def {f.name}_rest(th, E, v, vb, g, rng, W, *, {', '.join(kwonly)}):",
            f'    """{f.name} for one stream of a batch, after the forward pass and the '
            f'backprop\n    (done for the whole batch)."""']
    end = f.body[0].end_lineno if _is_doc(f.body[0]) else f.lineno
    for st in body[:-2]:            # each kept statement with the comments above it
        if st is not body[k]:
            text += lines[end:st.end_lineno]
        end = st.end_lineno
    return "\n".join(text) + "\n"


def _is_doc(st):
    return isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and \
        isinstance(st.value.value, str)


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
