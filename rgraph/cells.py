"""Built-in cells, each a few lines of the DSL (and a model for writing new ones).

Every cell here takes ``(n_in, n, n_out)`` and has a linear readout with a bias
(``V @ h + b``), whose parameters get exact gradients from every estimator. Key nodes
are named (``.named``) so that reports and generated code read well.

``tanh_rnn``, ``lstm`` and ``gru`` come in two forms: ``form="concat"`` (the default) is
one matrix on ``[h; x; 1]``; ``form="pytorch"`` is PyTorch's parameterization
(``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, its gate orders, its step
equations and its default init U(-1/sqrt(n), 1/sqrt(n))), so that weights move between
rgraph and PyTorch unchanged: ``save_state_dict`` / ``load_state_dict`` write and read
an ``.npz`` with PyTorch's keys, without importing torch. ``leaky_rnn`` is the leaky
(continuous-time) RNN of Murray's RFLO.

``tanh_rnn``, ``lstm`` and ``gru`` take ``layers=L`` (PyTorch's ``num_layers``): layer l
reads layer l-1's new hidden state (layer 0 reads x), the readout reads the top layer's.
Each layer's nodes carry the suffix ``_l<l>`` (``W_l0``, ``h_l1``; with
``form="pytorch"``, ``weight_ih_l0`` … ``bias_hh_l1``, PyTorch's own names, which are
also the state-dict keys). One layer keeps the unsuffixed names.

Diagonal recurrences: ``indrnn`` (Li et al. 2018) and ``lru``, the Linear Recurrent Unit
(Orvieto et al. 2023) in real arithmetic, stacked as Zucchet et al. (2023) stack it.
Spiking neurons: ``lif`` and ``alif`` (Bellec et al. 2020), built on ``rg.spike`` and
``rg.stop_gradient``; e-prop on them is Bellec et al.'s e-prop. All four take ``layers``.
"""
from __future__ import annotations

import zipfile

import numpy as np

from .errors import DataError
from .graph import (Cell, concat, const, cos, exp, pointwise, relu, sigmoid, sin, spike,
                    split, stop_gradient, tanh)
from .scalars import surrogate as surrogate_of
from .tasks.influence import influence_A, influence_b

FORMS = ("concat", "pytorch")


def _check_form(cell: str, form) -> str:
    if form not in FORMS:
        raise ValueError(f"{cell}: form must be one of {FORMS}, got {form!r}")
    return form


def _torch_scale(fan_in: int, n: int) -> float:
    """The ``scale`` for which init="uniform" (U(±scale/√fan_in)) draws from PyTorch's
    U(±1/√n): the float whose bound equals 1/√n, or is the largest one below it."""
    want, root = 1.0 / np.sqrt(n), np.sqrt(fan_in)
    s = root * want
    for _ in range(64):             # within a few ulps: step down, then up
        if s / root <= want:
            break
        s = np.nextafter(s, 0.0)
    for _ in range(64):
        up = np.nextafter(s, np.inf)
        if up / root > want:
            break
        s = up
    return float(s)


def _torch_params(c: Cell, G: int, n_in: int, n: int, sfx: str = ""):
    """PyTorch's four parameters of a G-gate layer, each drawn from U(±1/√n)."""
    W_ih = c.param("weight_ih" + sfx, (G * n, n_in), init="uniform",
                   scale=_torch_scale(n_in, n))
    W_hh = c.param("weight_hh" + sfx, (G * n, n), init="uniform", scale=_torch_scale(n, n))
    b_ih = c.param("bias_ih" + sfx, G * n, init="uniform", scale=_torch_scale(G * n, n))
    b_hh = c.param("bias_hh" + sfx, G * n, init="uniform", scale=_torch_scale(G * n, n))
    return W_ih, W_hh, b_ih, b_hh


def _check_layers(cell: str, layers) -> int:
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 1:
        raise ValueError(f"{cell}: layers must be a positive integer, got {layers!r}")
    return int(layers)


def _stacked(name: str, n_in: int, n: int, n_out: int, layers: int, layer) -> Cell:
    """A cell of ``layers`` layers: ``layer(c, below, sfx)`` adds one layer reading the
    vector ``below`` (x, or the new hidden state of the layer under it) and returns its
    new hidden state; ``sfx`` ("" for one layer, else "_l<l>") ends its node names."""
    c = Cell(name if layers == 1 else f"{name}_x{layers}")
    below = c.input("x", n_in)
    for k in range(layers):
        below = layer(c, below, "" if layers == 1 else f"_l{k}")
    _readout(c, below, n_out)
    return c


def _readout(c: Cell, h, n_out: int, name="logits"):
    n = h.shape[0]
    V = c.param("V", (n_out, n))
    b = c.param("b", n_out, init="zeros")
    c.output(name, V @ h + b)


def tanh_rnn(n_in: int, n: int, n_out: int, form: str = "concat", layers: int = 1) -> Cell:
    """h_t = tanh(W [h_{t-1}; x_t; 1]); ``form="pytorch"``: PyTorch's ``nn.RNN``,
    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh). ``layers``: stacked layers."""
    layers = _check_layers("tanh_rnn", layers)
    if _check_form("tanh_rnn", form) == "pytorch":
        return _stacked("rnn_pytorch", n_in, n, n_out, layers, _torch_rnn_layer(n))

    def layer(c, below, sfx):
        h = c.state("h" + sfx, n)
        W = c.param("W" + sfx, (n, n + below.shape[0] + 1))
        z = (W @ concat(h, below, const(1.0)).named("hx" + sfx)).named("z" + sfx)
        h_new = tanh(z)
        c.update(h, h_new)
        return h_new

    return _stacked("tanh_rnn", n_in, n, n_out, layers, layer)


rnn = tanh_rnn


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


def lstm(n_in: int, n: int, n_out: int, form: str = "concat", layers: int = 1) -> Cell:
    """LSTM with state (h, c), one matrix for the four gates (input, forget, output,
    candidate, in that order). ``form="pytorch"``: PyTorch's ``nn.LSTM`` (gates i, f, g,
    o; see ``_torch_lstm_layer``). ``layers``: stacked layers."""
    layers = _check_layers("lstm", layers)
    if _check_form("lstm", form) == "pytorch":
        return _stacked("lstm_pytorch", n_in, n, n_out, layers, _torch_lstm_layer(n))

    def layer(c, below, sfx):
        h, m = c.state("h" + sfx, n), c.state("c" + sfx, n)
        W = c.param("W" + sfx, (4 * n, n + below.shape[0] + 1))
        z = (W @ concat(h, below, const(1.0)).named("hx" + sfx)).named("z" + sfx)
        i, f, o, g = split(z, 4)
        m_new = sigmoid(f).named("f_gate" + sfx) * m + \
            sigmoid(i).named("i_gate" + sfx) * tanh(g)
        h_new = sigmoid(o).named("o_gate" + sfx) * tanh(m_new)
        c.update(m, m_new)
        c.update(h, h_new)
        return h_new

    return _stacked("lstm", n_in, n, n_out, layers, layer)


def gru(n_in: int, n: int, n_out: int, form: str = "concat", layers: int = 1) -> Cell:
    """GRU (Cho et al.): the reset gate r multiplies h *before* the candidate's matrix,
    so the candidate product's input depends on θ — no Kronecker structure.
    ``form="pytorch"``: PyTorch's ``nn.GRU``, where r multiplies W_hn h + b_hn *after*
    the matrix (see ``_torch_gru_layer``). ``layers``: stacked layers."""
    layers = _check_layers("gru", layers)
    if _check_form("gru", form) == "pytorch":
        return _stacked("gru_pytorch", n_in, n, n_out, layers, _torch_gru_layer(n))

    def layer(c, below, sfx):
        h = c.state("h" + sfx, n)
        W_zr = c.param("W_zr" + sfx, (2 * n, n + below.shape[0] + 1))
        W_h = c.param("W_h" + sfx, (n, n + below.shape[0] + 1))
        z_zr = (W_zr @ concat(h, below, const(1.0)).named("hx" + sfx)).named("z_zr" + sfx)
        u, r = split(sigmoid(z_zr).named("gates" + sfx), 2)
        rhx = concat((r.named("r_gate" + sfx) * h).named("rh" + sfx), below,
                     const(1.0)).named("rhx" + sfx)
        h_cand = tanh((W_h @ rhx).named("z_h" + sfx)).named("h_cand" + sfx)
        h_new = (1 - u) * h + u * h_cand
        c.update(h, h_new)
        return h_new

    return _stacked("gru", n_in, n, n_out, layers, layer)


# ------------------------------------------------------- PyTorch's parameterization
def _torch_rnn_layer(n: int):
    """A layer of ``nn.RNN`` (tanh): h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""
    def layer(c, below, sfx):
        h = c.state("h" + sfx, n)
        W_ih, W_hh, b_ih, b_hh = _torch_params(c, 1, below.shape[0], n, sfx)
        z = (W_ih @ below + b_ih + W_hh @ h + b_hh).named("z" + sfx)
        h_new = tanh(z)
        c.update(h, h_new)
        return h_new
    return layer


def _torch_lstm_layer(n: int):
    """A layer of ``nn.LSTM``: gates = W_ih x + b_ih + W_hh h + b_hh, split (i, f, g, o);
    c' = σ(f) c + σ(i) tanh(g),  h' = σ(o) tanh(c')."""
    def layer(c, below, sfx):
        h, m = c.state("h" + sfx, n), c.state("c" + sfx, n)
        W_ih, W_hh, b_ih, b_hh = _torch_params(c, 4, below.shape[0], n, sfx)
        gates = (W_ih @ below + b_ih + W_hh @ h + b_hh).named("gates" + sfx)
        i, f, g, o = split(gates, 4)
        m_new = sigmoid(f).named("f_gate" + sfx) * m + sigmoid(i).named("i_gate" + sfx) * \
            tanh(g).named("g_cand" + sfx)
        h_new = sigmoid(o).named("o_gate" + sfx) * tanh(m_new)
        c.update(m, m_new)
        c.update(h, h_new)
        return h_new
    return layer


def _torch_gru_layer(n: int):
    """A layer of ``nn.GRU``: gi = W_ih x + b_ih, gh = W_hh h + b_hh, each split (r, z,
    n); r = σ(gi_r + gh_r), z = σ(gi_z + gh_z), n = tanh(gi_n + r * gh_n),
    h' = (1 - z) n + z h."""
    def layer(c, below, sfx):
        h = c.state("h" + sfx, n)
        W_ih, W_hh, b_ih, b_hh = _torch_params(c, 3, below.shape[0], n, sfx)
        gi = (W_ih @ below + b_ih).named("gi" + sfx)
        gh = (W_hh @ h + b_hh).named("gh" + sfx)
        gi_r, gi_z, gi_n = split(gi, 3)
        gh_r, gh_z, gh_n = split(gh, 3)
        r = sigmoid(gi_r + gh_r).named("r_gate" + sfx)
        z = sigmoid(gi_z + gh_z).named("z_gate" + sfx)
        n_cand = tanh(gi_n + (r * gh_n).named("r_gh" + sfx)).named("n_cand" + sfx)
        h_new = (1 - z) * n_cand + z * h
        c.update(h, h_new)
        return h_new
    return layer


def leaky_rnn(n_in: int, n: int, n_out: int, alpha: float = 0.1) -> Cell:
    """Leaky RNN (vanilla RTRL's and Murray's RFLO form), leak α = dt/τ in (0, 1]:

        a_t = (1 - α) a_{t-1} + α tanh(W_rec a_{t-1} + W_in x_t + b_rec)

    W_rec ~ N(0, 1/n), W_in ~ N(0, 1/n_in), b_rec = 0; readout V a_t + b.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
            or not 0 < alpha <= 1:
        raise ValueError(f"leaky_rnn: alpha must be a number in (0, 1], got {alpha!r}")
    alpha = float(alpha)
    c = Cell("leaky_rnn")
    x, a = c.input("x", n_in), c.state("a", n)
    W_rec = c.param("W_rec", (n, n))
    W_in = c.param("W_in", (n, n_in))
    b_rec = c.param("b_rec", n, init="zeros")
    u = (W_rec @ a + W_in @ x + b_rec).named("u")
    drive = tanh(u).named("phi")
    a_new = drive if alpha == 1.0 else (1 - alpha) * a + alpha * drive
    c.update(a, a_new)
    _readout(c, a_new, n_out)
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


# ------------------------------------------------------------ diagonal recurrences
def indrnn(n_in: int, n: int, n_out: int, layers: int = 1) -> Cell:
    """Independently recurrent network (Li et al. 2018): each unit sees only its own past,

        h_t = relu(W x_t + u ⊙ h_{t-1} + b_h)

    with u a recurrent vector (one weight per unit). W ~ N(0, 1/n_in), u ~ U(-1, 1)
    (|u| ≤ 1 keeps the relu recurrence from growing; Li et al. bound |u| by a power of
    2 tied to the sequence length), b_h = 0; readout V h_t + b. ``layers``: layer l
    reads layer l-1's new h, names end in ``_l<l>``."""
    layers = _check_layers("indrnn", layers)

    def layer(c, below, sfx):
        h = c.state("h" + sfx, n)
        W = c.param("W" + sfx, (n, below.shape[0]))
        u = c.param("u" + sfx, n, init="uniform", scale=float(np.sqrt(n)))
        b_h = c.param("b_h" + sfx, n, init="zeros")
        z = (W @ below + u * h + b_h).named("z" + sfx)
        h_new = relu(z)
        c.update(h, h_new)
        return h_new

    return _stacked("indrnn", n_in, n, n_out, layers, layer)


def _gelu(y):
    """GELU, in its tanh form (Hendrycks & Gimpel 2016)."""
    return pointwise(lambda t: 0.5 * t * (1 + tanh(0.7978845608028654 * (t + 0.044715 * t ** 3))),
                     y, name="gelu")


LRU_NONLINEARITIES = {"gelu": _gelu, "relu": relu, "tanh": tanh}


def lru(n_in: int, n: int, n_out: int, layers: int = 1, width: int | None = None,
        r_min: float = 0.0, r_max: float = 1.0, max_phase: float = 2 * np.pi,
        nonlinearity: str = "gelu") -> Cell:
    """The Linear Recurrent Unit (Orvieto et al. 2023) in real arithmetic, stacked as
    Zucchet et al. (2023) stack it.

    Each layer has n complex units, each a pair of real states (h_re, h_im), and reads
    the residual stream u of width H (``width``, default n):

        a = exp(-exp(ν)) cos(exp(θ)),  b = exp(-exp(ν)) sin(exp(θ)),  γ = exp(γ_log)
        h_re' = a h_re - b h_im + γ (B_re u)
        h_im' = a h_im + b h_re + γ (B_im u)
        y = C_re h_re' - C_im h_im' + D ⊙ u          (= Re(C h') + D u)
        u ← u + σ(y)                                  (σ: ``nonlinearity``, GELU)

    a and b (λ = a + i b) and γ are computed once per step from the parameters. The
    stream starts at u = x if n_in == H, else at the encoder W_enc x + b_enc; the
    readout is V u + b on the top layer's stream.

    Parameters per layer (names end in ``_l<l>`` with several layers): ``nu_log``,
    ``theta_log``, ``gamma_log`` (n each; the init schemes ``lru_nu``, ``lru_theta``,
    ``lru_gamma``: |λ| uniform on the ring [r_min, r_max], phase uniform in
    [0, max_phase], γ_log = log sqrt(1 - |λ|²) of the same λ; the layer's ring is drawn
    from the seed and the layer's name, ``rgraph.runtime.lru_ring``, so an exported
    module draws it too and each of the three can be drawn alone), ``B_re``,
    ``B_im`` (n x H, N(0, 1/(2H)) each: a complex normal of variance 1/H), ``C_re``,
    ``C_im`` (H x n, N(0, 1/n)), ``D`` (H, N(0, 1)). Defaults r_min = 0, r_max = 1,
    max_phase = 2π are Orvieto et al.'s; long-range tasks want r_min near 0.9.
    """
    layers = _check_layers("lru", layers)
    width = n if width is None else width
    for what, v in (("n_in", n_in), ("n", n), ("n_out", n_out), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"lru: {what} must be a positive integer, got {v!r}")
    if not (0.0 <= r_min < r_max <= 1.0):
        raise ValueError(f"lru: the ring needs 0 <= r_min < r_max <= 1, got r_min={r_min!r}, "
                         f"r_max={r_max!r}")
    if not (0.0 < max_phase <= 2 * np.pi + 1e-12):
        raise ValueError(f"lru: max_phase must be in (0, 2π], got {max_phase!r}")
    if nonlinearity not in LRU_NONLINEARITIES:
        raise ValueError(f"lru: nonlinearity must be one of {sorted(LRU_NONLINEARITIES)}, "
                         f"got {nonlinearity!r}")
    sigma = LRU_NONLINEARITIES[nonlinearity]
    H = int(width)
    c = Cell("lru" if layers == 1 else f"lru_x{layers}")
    x = c.input("x", n_in)
    u = x
    if n_in != H:
        W_enc = c.param("W_enc", (H, n_in))
        b_enc = c.param("b_enc", H, init="zeros")
        u = (W_enc @ x + b_enc).named("u_enc")
    for k in range(layers):
        sfx = "" if layers == 1 else f"_l{k}"
        ring = dict(r_min=float(r_min), r_max=float(r_max), max_phase=float(max_phase),
                    ring="lru" + sfx)
        y = _lru_layer(c, u, n, H, sfx, ring)
        u = (u + sigma(y)).named("u" + ("_out" if layers == 1 else f"_l{k + 1}"))
    _readout(c, u, n_out)
    return c


def _lru_layer(c: Cell, u, n: int, H: int, sfx: str, ring: dict):
    """One LRU layer reading the stream u; returns its output y = Re(C h') + D ⊙ u.
    ``ring``: the options of its init schemes (r_min, r_max, max_phase, ring)."""
    h_re, h_im = c.state("h_re" + sfx, n), c.state("h_im" + sfx, n)
    nu_log = c.param("nu_log" + sfx, n, init="lru_nu", **ring)
    theta_log = c.param("theta_log" + sfx, n, init="lru_theta", **ring)
    gamma_log = c.param("gamma_log" + sfx, n, init="lru_gamma", **ring)
    B_re = c.param("B_re" + sfx, (n, H), scale=float(np.sqrt(0.5)))
    B_im = c.param("B_im" + sfx, (n, H), scale=float(np.sqrt(0.5)))
    C_re = c.param("C_re" + sfx, (H, n))
    C_im = c.param("C_im" + sfx, (H, n))
    D = c.param("D" + sfx, H, scale=float(np.sqrt(H)))
    modulus = exp(-exp(nu_log)).named("lam_mod" + sfx)
    phase = exp(theta_log).named("lam_phase" + sfx)
    a = (modulus * cos(phase)).named("lam_re" + sfx)
    b = (modulus * sin(phase)).named("lam_im" + sfx)
    gamma = exp(gamma_log).named("gamma" + sfx)
    bu_re = (B_re @ u).named("Bu_re" + sfx)
    bu_im = (B_im @ u).named("Bu_im" + sfx)
    h_re_new = a * h_re - b * h_im + gamma * bu_re
    h_im_new = a * h_im + b * h_re + gamma * bu_im
    c.update(h_re, h_re_new)
    c.update(h_im, h_im_new)
    return (C_re @ h_re_new - C_im @ h_im_new + D * u).named("y" + sfx)


# --------------------------------------------------------------- spiking neurons
def _decay(what: str, tau, dt) -> float:
    for name, v in ((f"tau_{what}", tau), ("dt", dt)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or \
                not np.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    return float(np.exp(-dt / tau))


def _spiking(name: str, n_in: int, n: int, n_out: int, layers: int, v_th: float,
             surrogate: str, dampening: float, tau_m: float, dt: float, adaptation=None):
    """LIF (``adaptation`` None) or ALIF (``adaptation`` = (ρ, β)) layers, stacked."""
    layers = _check_layers(name, layers)
    if isinstance(v_th, bool) or not isinstance(v_th, (int, float, np.floating)) or \
            not np.isfinite(v_th) or v_th <= 0:
        raise ValueError(f"{name}: v_th must be a positive number, got {v_th!r}")
    v_th = float(v_th)
    alpha = _decay("m", tau_m, dt)
    surrogate_of(surrogate)             # an unknown surrogate is one line, here

    def layer(c, below, sfx):
        v, z = c.state("v" + sfx, n), c.state("z" + sfx, n)
        a = c.state("a" + sfx, n) if adaptation else None
        W_in = c.param("W_in" + sfx, (n, below.shape[0]))
        W_rec = c.param("W_rec" + sfx, (n, n))
        current = (W_rec @ z + W_in @ below).named("i_syn" + sfx)
        # reset by subtraction, a constant for the gradient (Bellec et al.)
        reset = stop_gradient(z) if v_th == 1.0 else v_th * stop_gradient(z)
        v_new = alpha * v + current - reset
        c.update(v, v_new)
        if adaptation:
            rho, beta = adaptation
            a_new = rho * a + z
            c.update(a, a_new)
            threshold = (v_th + beta * a_new).named("A" + sfx)
            over = v_new - threshold
        else:
            over = v_new - v_th
        drive = (over if v_th == 1.0 else over * (1.0 / v_th)).named("drive" + sfx)
        z_new = spike(drive, surrogate=surrogate, dampening=dampening)
        c.update(z, z_new)
        return z_new

    return _stacked(name, n_in, n, n_out, layers, layer)


def lif(n_in: int, n: int, n_out: int, layers: int = 1, tau_m: float = 20.0,
        dt: float = 1.0, v_th: float = 1.0, surrogate: str = "triangle",
        dampening: float = 0.3) -> Cell:
    """Recurrent leaky integrate-and-fire neurons as in Bellec et al. (2020), states the
    membrane v and the spikes z:

        v_t = α v_{t-1} + W_rec z_{t-1} + W_in x_t - v_th · stop_gradient(z_{t-1})
        z_t = spike((v_t - v_th) / v_th)

    α = exp(-dt/τ_m) (τ_m = 20, dt = 1: α ≈ 0.951), v_th = 1, reset by subtraction held
    constant for the gradient. ``spike``'s triangle surrogate with dampening γ_pd = 0.3
    gives ∂z_t/∂v_t = (γ_pd / v_th) max(0, 1 - |v_t - v_th| / v_th), Bellec et al.'s
    pseudo-derivative ψ (``surrogate``, ``dampening``: see ``rg.spike``). No refractory
    period. W_in ~ N(0, 1/n_in), W_rec ~ N(0, 1/n). Readout: linear in the spikes,
    V z_t + b (Bellec et al.'s leaky readout with κ = 0: a leaky readout would be a state
    of its own, which e-prop's learning signal holds fixed). ``layers``: layer l reads
    layer l-1's spikes z_t, names end in ``_l<l>``."""
    return _spiking("lif", n_in, n, n_out, layers, v_th, surrogate, dampening, tau_m, dt)


def alif(n_in: int, n: int, n_out: int, layers: int = 1, tau_m: float = 20.0,
         tau_a: float = 200.0, beta: float = 0.07, dt: float = 1.0, v_th: float = 1.0,
         surrogate: str = "triangle", dampening: float = 0.3) -> Cell:
    """Adaptive LIF neurons (Bellec et al. 2020): ``lif`` with a threshold that rises by
    β after each spike and decays back with ρ = exp(-dt/τ_a); states v, a and z:

        v_t = α v_{t-1} + W_rec z_{t-1} + W_in x_t - v_th · stop_gradient(z_{t-1})
        a_t = ρ a_{t-1} + z_{t-1},   A_t = v_th + β a_t
        z_t = spike((v_t - A_t) / v_th)

    τ_a = 200 (ρ ≈ 0.995), β = 0.07 (a steady rate r raises the threshold by about
    β r τ_a); the rest as ``lif``: the pseudo-derivative is ψ_t = (γ_pd / v_th)
    max(0, 1 - |v_t - A_t| / v_th), the readout V z_t + b."""
    rho = _decay("a", tau_a, dt)
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating)) or \
            not np.isfinite(beta) or beta < 0:
        raise ValueError(f"alif: beta must be a number >= 0, got {beta!r}")
    return _spiking("alif", n_in, n, n_out, layers, v_th, surrogate, dampening, tau_m, dt,
                    adaptation=(rho, float(beta)))


CELLS = {"tanh": tanh_rnn, "rnn": tanh_rnn, "rhn": rhn, "lstm": lstm, "gru": gru,
         "leaky": leaky_rnn, "influence": influence_balancing, "indrnn": indrnn,
         "lru": lru, "lif": lif, "alif": alif}
# the cells that take form="pytorch"
FRAMEWORK_FORMS = ("tanh", "rnn", "lstm", "gru")
# the cells that take layers=
STACKING = ("tanh", "rnn", "lstm", "gru", "indrnn", "lru", "lif", "alif")



# ------------------------------------------------------------- PyTorch state dicts
# A PyTorch module (nn.RNN, nn.LSTM, nn.GRU) keys its parameters by layer (``_l0``,
# ``_l1``, ...); a one-layer cell's rgraph names lack the suffix, a stacked cell's have
# it already. The readout keeps its names.
WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
STATE_DICT_KEYS = {w: w + "_l0" for w in WEIGHTS} | {"V": "V", "b": "b"}  # one layer
_GATES = {1: "RNN", 3: "GRU", 4: "LSTM"}


def _names(layers: int) -> dict:
    """rgraph name -> state-dict key of a ``layers``-layer cell."""
    if layers == 1:
        return dict(STATE_DICT_KEYS)
    return {f"{w}_l{k}": f"{w}_l{k}" for k in range(layers) for w in WEIGHTS} | \
        {"V": "V", "b": "b"}


def _layers_of(keys) -> int:
    """How many layers a set of names or keys describes: 1 for the unsuffixed names,
    else the number of recurrent matrices ``weight_hh_l<k>`` (at least 1)."""
    keys = set(keys)
    if "weight_hh" in keys:
        return 1
    return max(1, sum(f"weight_hh_l{k}" in keys for k in range(len(keys))))


def _shape_str(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _expected_shapes(arrays: dict, key, cell, layers: int) -> dict:
    """rgraph name -> the shape it must have: the cell's, or else what the arrays imply
    (G·n rows for G = 1, 3 or 4, n from the first layer's weight_hh's columns; layers
    above the first read n inputs)."""
    names = _names(layers)
    if cell is not None:
        got = {nd.name: nd.shape for nd in cell.nodes if nd.kind == "param"}
        if set(got) != set(names):
            raise DataError(f"cell '{cell.name}' has parameters {sorted(got)}, not PyTorch's; "
                            f"state dicts are for the cells built with form='pytorch'")
        return got
    first = "weight_hh" if layers == 1 else "weight_hh_l0"
    hh = arrays[first].shape
    if len(hh) != 2 or hh[1] == 0 or hh[0] % hh[1] or hh[0] // hh[1] not in _GATES:
        n = hh[1] if len(hh) == 2 else "n"
        raise DataError(f"{key(first)} has shape {_shape_str(hh)}, expected (G*{n}, {n})"
                        f" with G = 1 (RNN), 3 (GRU) or 4 (LSTM)")
    rows, n = hh
    ih = arrays["weight_ih" if layers == 1 else "weight_ih_l0"].shape
    V = arrays["V"].shape
    n_in = ih[1] if len(ih) == 2 else "n_in"
    n_out = V[0] if len(V) == 2 else "n_out"
    out = {"V": (n_out, n), "b": (n_out,)}
    for k in range(layers):
        sfx = "" if layers == 1 else f"_l{k}"
        out.update({"weight_ih" + sfx: (rows, n_in if k == 0 else n),
                    "weight_hh" + sfx: (rows, n), "bias_ih" + sfx: (rows,),
                    "bias_hh" + sfx: (rows,)})
    return out


def _check_keys(what: str, keys, expected: list):
    """One line naming the missing and the unknown keys."""
    keys = list(keys)
    missing = [k for k in expected if k not in keys]
    extra = [k for k in keys if k not in expected]
    if missing or extra:
        raise DataError(f"{what}: " + ", ".join(
            f"{label} {ks}" for label, ks in (("missing key(s)", missing),
                                              ("unknown key(s)", extra)) if ks) +
            f"; expected exactly {expected} (a form='pytorch' rnn, lstm or gru)")


def _checked(arrays: dict, key, what: str, cell, layers: int) -> dict:
    """The arrays (by rgraph name, all present) as float64 copies, after one-line checks
    of their dtypes and shapes; ``key(name)`` is how the caller names an entry."""
    names = list(_names(layers))
    out = {}
    for k in names:
        a = np.asarray(arrays[k])
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise DataError(f"{what}: {key(k)} has dtype {a.dtype}; expected real numbers")
        out[k] = np.array(a, dtype=np.float64)
    want = _expected_shapes(out, key, cell, layers)
    for k in names:
        if out[k].shape != tuple(want[k]):
            raise DataError(f"{what}: {key(k)} has shape {_shape_str(out[k].shape)}, "
                            f"expected {_shape_str(want[k])}")
    return out


def _cell_layers(cell, keys) -> int:
    return _layers_of(nd.name for nd in cell.nodes if nd.kind == "param") \
        if cell is not None else _layers_of(keys)


def to_state_dict(params: dict, cell: Cell | None = None) -> dict:
    """PyTorch's state dict (numpy arrays) of a form='pytorch' rnn, lstm or gru of any
    number of layers: keys ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
    ``bias_hh_l0``, ``weight_ih_l1``, … (what ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` with
    ``num_layers`` holds) and the readout ``V``, ``b`` (``nn.Linear``'s ``weight``,
    ``bias``). Shapes are checked against ``cell`` if given, else against each other."""
    if not isinstance(params, dict):
        raise DataError(f"params must be a dict name -> array, got {type(params).__name__}")
    layers = _cell_layers(cell, params.keys())
    names = _names(layers)
    _check_keys("params", params, list(names))
    checked = _checked(params, lambda k: k, "params", cell, layers)
    return {names[k]: a for k, a in checked.items()}


def from_state_dict(state_dict: dict, cell: Cell | None = None) -> dict:
    """rgraph's params dict (name -> float64 array) from a state dict with
    ``to_state_dict``'s keys; ``cell`` (a form='pytorch' cell), if given, fixes the
    shapes and the number of layers. Missing or unknown keys and wrong shapes are
    one-line ``DataError``\\ s."""
    if not hasattr(state_dict, "keys"):
        raise DataError(f"state dict must be a mapping key -> array, got "
                        f"{type(state_dict).__name__}")
    layers = _cell_layers(cell, state_dict.keys())
    names = _names(layers)
    _check_keys("state dict", state_dict.keys(), list(names.values()))
    arrays = {k: state_dict[v] for k, v in names.items()}
    return _checked(arrays, names.get, "state dict", cell, layers)


def save_state_dict(params: dict, path, cell: Cell | None = None):
    """Write ``to_state_dict(params)`` to ``path`` as an ``.npz`` (exactly that path).
    In PyTorch: ``m.load_state_dict({k: torch.from_numpy(v) for k, v in
    np.load(path).items() if k.endswith("_l0")})``."""
    sd = to_state_dict(params, cell)
    with open(path, "wb") as f:
        np.savez(f, **sd)
    return path


def load_state_dict(path, cell: Cell | None = None) -> dict:
    """rgraph's params dict from an ``.npz`` with PyTorch's keys (``save_state_dict``'s,
    or ``np.savez(path, **{k: v.numpy() for k, v in m.state_dict().items()}, V=..,
    b=..)``); checked as ``from_state_dict`` checks."""
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as an .npz: {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds one array, not an .npz of named arrays "
                        f"(write it with save_state_dict or np.savez)")
    with z:
        sd = {k: z[k] for k in z.files}
    return from_state_dict(sd, cell)
