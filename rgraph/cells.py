"""Built-in cells, each a few lines of the DSL (and a model for writing new ones).

Every cell here takes ``(n_in, n, n_out)`` and has a linear readout with a bias
(``V @ h + b``), whose parameters get exact gradients from every estimator. Key nodes
are named (``.named``) so that reports and generated code read well.
"""
from __future__ import annotations

from .graph import Cell, concat, const, pointwise, sigmoid, split, tanh
from .tasks.influence import influence_A, influence_b


def _readout(c: Cell, h, n_out: int, name="logits"):
    n = h.shape[0]
    V = c.param("V", (n_out, n))
    b = c.param("b", n_out, init="zeros")
    c.output(name, V @ h + b)


def tanh_rnn(n_in: int, n: int, n_out: int) -> Cell:
    """h_t = tanh(W [h_{t-1}; x_t; 1])."""
    c = Cell("tanh_rnn")
    x, h = c.input("x", n_in), c.state("h", n)
    W = c.param("W", (n, n + n_in + 1))
    z = (W @ concat(h, x, const(1.0)).named("hx")).named("z")
    h_new = tanh(z)
    c.update(h, h_new)
    _readout(c, h_new, n_out)
    return c


def rhn(n_in: int, n: int, n_out: int, nonlinearity: str = "tanh") -> Cell:
    """Recurrent Highway Network, recurrence depth 1, coupled carry gate (Zilly et al.):

        [p; q] = W [s_{t-1}; x_t; 1],   h = φ(p),   t = sigmoid(q)
        s_t = h * t + s_{t-1} * (1 - t)

    ``nonlinearity``: "tanh" or "2sigmoid-1" (Mujika et al.'s choice, footnote 2).
    """
    if nonlinearity not in ("tanh", "2sigmoid-1"):
        raise ValueError(f"rhn: nonlinearity must be 'tanh' or '2sigmoid-1', "
                         f"got {nonlinearity!r}")
    c = Cell("rhn")
    x, s = c.input("x", n_in), c.state("s", n)
    W = c.param("W", (2 * n, n + n_in + 1))
    z = (W @ concat(s, x, const(1.0)).named("sx")).named("z")
    p, q = split(z, 2)
    h = tanh(p) if nonlinearity == "tanh" else \
        pointwise(lambda u: 2 * sigmoid(u) - 1, p, name="sig2m1")
    t = sigmoid(q).named("t_gate")
    s_new = h.named("h_cand") * t + s * (1 - t)
    c.update(s, s_new)
    _readout(c, s_new, n_out)
    return c


def lstm(n_in: int, n: int, n_out: int) -> Cell:
    """LSTM with state (h, c), one matrix for the four gates (input, forget, output,
    candidate, in that order)."""
    c = Cell("lstm")
    x = c.input("x", n_in)
    h, m = c.state("h", n), c.state("c", n)
    W = c.param("W", (4 * n, n + n_in + 1))
    z = (W @ concat(h, x, const(1.0)).named("hx")).named("z")
    i, f, o, g = split(z, 4)
    m_new = sigmoid(f).named("f_gate") * m + sigmoid(i).named("i_gate") * tanh(g)
    h_new = sigmoid(o).named("o_gate") * tanh(m_new)
    c.update(m, m_new)
    c.update(h, h_new)
    _readout(c, h_new, n_out)
    return c


def gru(n_in: int, n: int, n_out: int) -> Cell:
    """GRU (Cho et al.): the reset gate r multiplies h *before* the candidate's matrix,
    so the candidate product's input depends on θ — no Kronecker structure."""
    c = Cell("gru")
    x, h = c.input("x", n_in), c.state("h", n)
    W_zr = c.param("W_zr", (2 * n, n + n_in + 1))
    W_h = c.param("W_h", (n, n + n_in + 1))
    z_zr = (W_zr @ concat(h, x, const(1.0)).named("hx")).named("z_zr")
    u, r = split(sigmoid(z_zr).named("gates"), 2)
    rhx = concat((r.named("r_gate") * h).named("rh"), x, const(1.0)).named("rhx")
    h_cand = tanh((W_h @ rhx).named("z_h")).named("h_cand")
    h_new = (1 - u) * h + u * h_cand
    c.update(h, h_new)
    _readout(c, h_new, n_out)
    return c


def influence_balancing(n: int = 23, n_minus: int = 13, A=None) -> Cell:
    """The linear system of Tallec & Ollivier §4, eq. (8): one scalar parameter θ,

        s_t = A s_{t-1} + θ · b · x_t,    b = (+1, ..., +1, -1, ..., -1),  y_t = s_t[0]

    with A[i, i] = A[i, i+1] = 1/2 (fixed) and x_t = 1 (the task's constant drive).
    The loss ½(y_t - 1)² is ``loss="mse"`` against target 1. A and b are the task's
    (``rgraph.tasks.influence``), so the cell and ``InfluenceBalancing`` are one system.
    """
    b = influence_b(n, n_minus)
    if A is None:
        A = influence_A(n)
    c = Cell("influence")
    x, s = c.input("x", 1), c.state("s", n)
    theta = c.param("theta", 1, init="zeros")
    s_new = c.const(A, "A") @ s + c.const(b, "b") * (theta * x).named("drive")
    c.update(s, s_new)
    c.output("y", s_new[0:1])
    return c


CELLS = {"tanh": tanh_rnn, "rnn": tanh_rnn, "rhn": rhn, "lstm": lstm, "gru": gru,
         "influence": influence_balancing}
