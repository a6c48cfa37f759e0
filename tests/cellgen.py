"""Generated cell shapes for the differential tests (hypothesis strategies).

``shaped_cells()`` draws cells of the shapes people train, not a hand-picked zoo:
several states of several sizes, each updated by a sum (in a drawn order) of

* dense products of the input, of any state's previous value, and of the *new* value
  of a state updated before it (stacked layers written as frameworks write them);
* biases, sometimes two split across the terms (``W_ih x + b_ih + W_hh h + b_hh``);
* a diagonal term: the state times a constant (a leak), times an elementwise parameter
  (IndRNN, a diagonal LRU-like recurrence) or times a gate;
* an elementwise function of an earlier state's new value (a leaky neuron whose
  membrane ``v_new`` is itself a state, read by the spike-like ``z_new``);

then a non-linearity (none, tanh, sigmoid, or tanh((q - 0.5) * 2) after the sum), and
sometimes a reset (minus half of another vector of its size). The readout reads a new
state, several new states, or a value the loss sees past the new states (a bypass).
"""
from __future__ import annotations

from hypothesis import strategies as st

import rgraph as rg

NONLINEAR = ("identity", "tanh", "sigmoid", "shifted")
DIAGONAL = ("none", "const", "param", "gate")
READOUT = ("last", "concat", "any_new", "bypass")


@st.composite
def shaped_cells(draw, max_states=3, max_size=4):
    """A random cell of the shapes above (see the module docstring)."""
    c = rg.Cell("shape")
    count = [0]

    def param(shape, prefix="W"):
        count[0] += 1
        return c.param(f"{prefix}{count[0]}", shape)

    n_in = draw(st.integers(1, 3))
    x = c.input("x", n_in)
    k = draw(st.integers(1, max_states))
    states = [c.state(f"s{i}", draw(st.integers(1, max_size))) for i in range(k)]
    news, pres = [], []
    for i, s in enumerate(states):
        n = s.shape[0]
        sources = [x] + states + news
        picks = draw(st.lists(st.integers(0, len(sources) - 1), min_size=0, max_size=3,
                              unique=True))
        terms = [param((n, sources[j].shape[0])) @ sources[j] for j in picks]
        terms += [param((n,), "b") for _ in range(draw(st.integers(0, 2)))]
        diag = draw(st.sampled_from(DIAGONAL))
        if diag == "const":
            terms.append(draw(st.sampled_from([0.9, 0.5, -0.7])) * s)
        elif diag == "param":
            terms.append(param((n,), "u") * s)
        elif diag == "gate":
            src = sources[draw(st.integers(0, len(sources) - 1))]
            terms.append(rg.sigmoid(param((n, src.shape[0]), "G") @ src) * s)
        same = [v for v in news if v.shape[0] == n]
        if same and draw(st.booleans()):
            terms.append(rg.tanh(draw(st.sampled_from(same))))
        if not terms:                       # every state reads something
            terms.append(param((n, n_in)) @ x)
        order = draw(st.permutations(range(len(terms))))
        q = terms[order[0]]
        for j in order[1:]:
            q = q + terms[j]
        kind = draw(st.sampled_from(NONLINEAR))
        new = {"identity": lambda a: a, "tanh": rg.tanh, "sigmoid": rg.sigmoid,
               "shifted": lambda a: rg.tanh((a - 0.5) * 2.0)}[kind](q)
        if new.node.kind == "param":        # a lone bias: carried through a function
            new = rg.tanh(new)
        resets = [v for v in states + news if v.shape[0] == n]
        if resets and draw(st.booleans()):
            new = new - draw(st.sampled_from(resets)) * 0.5
        c.update(s, new)
        news.append(new)
        pres.append(q)
    how = draw(st.sampled_from(READOUT))
    if how == "last":
        read = news[-1]
    elif how == "concat" and len(news) > 1:
        read = rg.concat(*news)
    elif how == "bypass":      # the loss sees a value past the new states
        read = rg.concat(news[-1], rg.tanh(draw(st.sampled_from(pres + states))))
    else:
        read = draw(st.sampled_from(news))
    c.output("y", param((2, read.shape[0]), "V") @ read)
    return c


def usable(cell) -> bool:
    """Whether the analysis accepts the drawn cell (every parameter reaches something)."""
    try:
        rg.analyze(cell)
        return True
    except rg.GraphError:
        return False


LAYER_KINDS = ("rnn", "lstm", "gru", "indrnn", "lru")


@st.composite
def framework_stacks(draw, max_layers=3, max_size=4):
    """Stacked layers written as frameworks write them (``num_layers`` of torch.nn.RNN,
    LSTM or GRU, kinds mixed): layer l reads layer l-1's *new* value through W_ih and
    its own previous state through W_hh, each product with its bias (b_ih, b_hh: a bias
    split across terms); sometimes every layer also reads the input (a shared input) and
    the readout reads every layer's output."""
    c = rg.Cell("stack")
    n_in = draw(st.integers(1, 3))
    x = c.input("x", n_in)
    below, outs = x, []
    shared = draw(st.booleans())
    for layer in range(draw(st.integers(2, max_layers))):
        kind = draw(st.sampled_from(LAYER_KINDS))
        n = draw(st.integers(1, max_size))
        h = c.state(f"h{layer}", n)

        def W(name, m, k):
            return c.param(f"{name}{layer}", (m, k))

        def b(name, m):
            return c.param(f"{name}{layer}", (m,))

        if kind in ("indrnn", "lru"):
            h_new = diagonal_layer(c, kind, h, below, x if shared and layer else None,
                                   W, b)
            outs.append(h_new)
            below = h_new
            continue
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]

        gi = W("W_ih", gates * n, below.shape[0]) @ below + b("b_ih", gates * n)
        if shared and layer:
            gi = gi + W("W_x", gates * n, n_in) @ x
        gh = W("W_hh", gates * n, n) @ h + b("b_hh", gates * n)
        if kind == "rnn":
            h_new = rg.tanh(gi + gh)
        elif kind == "lstm":
            cs = c.state(f"c{layer}", n)
            i, f, g, o = rg.split(gi + gh, 4)
            c_new = rg.sigmoid(f) * cs + rg.sigmoid(i) * rg.tanh(g)
            h_new = rg.sigmoid(o) * rg.tanh(c_new)
            c.update(cs, c_new)
        else:
            i_r, i_z, i_n = rg.split(gi, 3)
            h_r, h_z, h_n = rg.split(gh, 3)
            r, z = rg.sigmoid(i_r + h_r), rg.sigmoid(i_z + h_z)
            cand = rg.tanh(i_n + r * h_n)
            h_new = (1.0 - z) * cand + z * h
        c.update(h, h_new)
        outs.append(h_new)
        below = h_new
    read = rg.concat(*outs) if draw(st.booleans()) else outs[-1]
    c.output("y", c.param("V", (2, read.shape[0])) @ read)
    return c


def diagonal_layer(c, kind, h, below, x, W, b):
    """A layer whose recurrence is elementwise: IndRNN's relu(W x + u * h + b) (Li et
    al. 2018), or an LRU's complex diagonal recurrence in real arithmetic (h = h_re, a
    second state for h_im; λ = exp(-exp(ν) + i exp(θ)), γ scaling B u) whose output
    C h + D the next layer reads (so C and D enter the layer above). Returns the value the layer above reads."""
    n = h.shape[0]
    drive = W("W_ih", n, below.shape[0]) @ below
    if x is not None:
        drive = drive + W("W_x", n, x.shape[0]) @ x
    if kind == "indrnn":
        h_new = rg.relu(drive + b("u", n) * h + b("b", n))
        c.update(h, h_new)
        return h_new
    layer = h.name[-1]
    h_im = c.state(f"g{layer}", n)
    modulus = rg.exp(-rg.exp(b("nu", n)))
    phase = rg.exp(b("th", n))
    a, s = modulus * rg.cos(phase), modulus * rg.sin(phase)
    gamma = rg.exp(b("ga", n))
    im = W("W_im", n, below.shape[0]) @ below
    h_new = a * h - s * h_im + gamma * drive
    c.update(h, h_new)
    c.update(h_im, a * h_im + s * h + gamma * im)
    return W("C", n, n) @ h_new + b("D", n)
