"""The run-time half of a compiled estimator: everything between the user's arrays and
the generated module's compiled entry points.

``Model`` packs the parameters into the flat vector the compiled code reads, checks the
data (``DataError``, naming what is wrong), sizes the states, and drives the generated
module's ``run`` / ``run_batch``, ``evaluate`` and ``flush_all`` (see
``rgraph.training.loop``) for ``total_gradient`` and ``loss``; ``Run`` is a training
run's state, advanced a piece of a chunk at a time (``train_model``: a run kept in a
dict between calls, an exported module's ``train``); ``draw`` gives a parameter's
initial value from its init scheme. rgraph's ``Estimator`` and ``Trainer`` are built on
them, and ``rgraph.export`` copies this file, unchanged, into the standalone module it
writes: so this module imports nothing but numpy and math.
"""
import numpy as np


class RGraphError(ValueError):
    """Base class of every error rgraph raises on bad input."""


class DataError(RGraphError):
    """Arrays passed at run time with the wrong shape, dtype, or non-finite values."""


# ---------------------------------------------------------------- initial values
def fan_in(shape) -> int:
    """The fan-in ``normal`` and ``uniform`` scale by: a matrix's column count; a
    vector's length (Keras's rule for one-dimensional weights: a bias or a gain draws
    N(0, scale²/n), never N(0, scale²), so a vector of 64 entries starts near 0.1, not 1)."""
    return int(shape[-1]) if len(shape) >= 1 else 1


# init schemes that take options (``Cell.param(..., init=scheme, **options)``), with
# their options in order. The LRU's (Orvieto et al. 2023): one layer's eigenvalues
# λ_j = exp(-exp(ν_j) + i exp(θ_j)) and input normalizations γ_j = sqrt(1 - |λ_j|²),
# |λ| uniform on the ring r_min <= |λ| <= r_max (uniform in area), the phase exp(θ)
# uniform on [0, max_phase]; ``ring`` names the layer (ν, θ and γ of one layer share it).
OPTION_SCHEMES = {
    "lru_nu": ("r_min", "r_max", "max_phase", "ring"),
    "lru_theta": ("r_min", "r_max", "max_phase", "ring"),
    "lru_gamma": ("r_min", "r_max", "max_phase", "ring"),
}
_RING_TAG = 0x6C7275          # a spawn-key word that sets the LRU's streams apart


def check_options(scheme: str, options: dict) -> str | None:
    """Why ``options`` do not fit the init scheme ``scheme`` (one line), or None."""
    want = OPTION_SCHEMES.get(scheme, ())
    if set(options) != set(want):
        if not want:
            return (f"init {scheme!r} takes no options, got {sorted(options)}; options "
                    f"are for {sorted(OPTION_SCHEMES)}")
        return (f"init {scheme!r} takes the options {', '.join(want)}, got "
                f"{sorted(options) or 'none'}")
    if scheme.startswith("lru_"):
        nums = [options[k] for k in ("r_min", "r_max", "max_phase")]
        if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer,
                                                         np.floating)) for v in nums):
            return f"init {scheme!r}: r_min, r_max and max_phase must be numbers, got {nums}"
        r_min, r_max, max_phase = map(float, nums)
        if not (0.0 <= r_min < r_max <= 1.0):
            return (f"init {scheme!r}: the ring needs 0 <= r_min < r_max <= 1, got "
                    f"r_min={r_min!r}, r_max={r_max!r}")
        if not (0.0 < max_phase <= 2 * np.pi + 1e-12):
            return f"init {scheme!r}: max_phase must be in (0, 2π], got {max_phase!r}"
        if not isinstance(options["ring"], str) or not options["ring"]:
            return (f"init {scheme!r}: ring must be a non-empty string naming the layer, "
                    f"got {options['ring']!r}")
    return None


def lru_ring(shape, rng, r_min, r_max, max_phase, ring):
    """(|λ|², phase) of one LRU layer: |λ|² ~ U(r_min², r_max²), phase ~ U(0, max_phase).

    They are drawn from a stream of their own, a function of the seed of ``rng`` and of
    ``ring`` alone (the generator's ``SeedSequence`` spawned with the ring's name), not
    of ``rng``'s position: ν, θ and γ, each drawn in its own call, see the same ring, a
    parameter drawn alone (``init_param``) gets what the whole draw gives it, and the
    other parameters' draws do not depend on whether the cell has LRU layers."""
    bits = getattr(rng, "bit_generator", None)
    seq = getattr(bits, "seed_seq", None) or getattr(bits, "_seed_seq", None)
    if not isinstance(seq, np.random.SeedSequence):
        raise RGraphError(f"the LRU's init draws from the seed of a numpy Generator "
                          f"(np.random.default_rng(seed)); got {type(rng).__name__}")
    name = ring.encode()
    child = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, _RING_TAG,
                                                           len(name), *name),
                                   pool_size=seq.pool_size)
    g = np.random.default_rng(child)
    u, w = g.uniform(size=shape), g.uniform(size=shape)
    return u * (r_max ** 2 - r_min ** 2) + r_min ** 2, max_phase * w


def draw(scheme: str, shape: tuple, scale: float, rng, options=None) -> np.ndarray:
    """A parameter's initial value from the named init scheme (``rgraph.graph.INITS``):
    ``normal`` N(0, scale²/fan_in), ``uniform`` U(±scale/√fan_in), ``orthogonal``
    stacked orthogonal square blocks times scale, ``identity`` scale·I (a vector:
    scale), ``zeros``, ``ones``, ``const`` (filled with scale); with ``options`` (see
    ``OPTION_SCHEMES``; scale unused) ``lru_nu`` ν = log(-log |λ|), ``lru_theta``
    θ = log(phase), ``lru_gamma`` γ_log = log sqrt(1 - |λ|²) of the ring ``lru_ring``
    draws."""
    if scheme in OPTION_SCHEMES:
        options = dict(options or {})
        bad = check_options(scheme, options)
        if bad is not None:
            raise RGraphError(bad)
        m2, phase = lru_ring(shape, rng, float(options["r_min"]), float(options["r_max"]),
                             float(options["max_phase"]), options["ring"])
        if scheme == "lru_nu":
            return np.log(-0.5 * np.log(m2))
        if scheme == "lru_theta":
            return np.log(phase)
        return 0.5 * np.log1p(-m2)
    if options:
        raise RGraphError(check_options(scheme, dict(options)))
    if scheme == "normal":
        return rng.standard_normal(shape) * scale / np.sqrt(fan_in(shape))
    if scheme == "uniform":
        lim = scale / np.sqrt(fan_in(shape))
        return rng.uniform(-lim, lim, shape)
    if scheme == "orthogonal":
        rows, cols = shape if len(shape) == 2 else (shape[0], 1)
        if rows >= cols:   # stacked square orthogonal blocks
            blocks = [np.linalg.qr(rng.standard_normal((cols, cols)))[0]
                      for _ in range(-(-rows // cols))]
            arr = np.concatenate(blocks)[:rows]
        else:              # orthonormal rows
            arr = np.linalg.qr(rng.standard_normal((cols, rows)))[0].T
        return arr.reshape(shape) * scale
    if scheme == "zeros":
        return np.zeros(shape)
    if scheme == "ones":
        return np.ones(shape)
    if scheme == "identity":
        return np.eye(*shape) * scale if len(shape) == 2 else np.ones(shape) * scale
    if scheme == "const":
        return np.full(shape, scale)
    raise RGraphError(f"unknown init scheme {scheme!r}; use normal, uniform, orthogonal, "
                      f"zeros, ones, identity, const, {', '.join(OPTION_SCHEMES)}")


def draw_params(inits, seed=0) -> dict:
    """{name: float64 array} from ``inits``: (name, shape, scheme, scale, data) rows in
    the parameters' order, drawn from one generator as rgraph's
    ``Estimator.init_params(seed)`` does; scheme "array" holds a given value (data: the
    hex of its little-endian float64 bytes), "custom" a Python function that is not
    here; a scheme of ``OPTION_SCHEMES`` has its options in data (a dict)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape, scheme, scale, data in inits:
        if scheme == "custom":
            raise RGraphError(f"init_params: parameter '{name}' was initialised by a Python "
                              f"function of the cell's definition, which the export cannot "
                              f"carry; build the params yourself (shapes in PARAMS)")
        if scheme == "array":
            out[name] = np.frombuffer(bytes.fromhex(data), dtype="<f8").astype(
                np.float64).reshape(shape)
        else:
            out[name] = draw(scheme, shape, scale, rng,
                             data if scheme in OPTION_SCHEMES else None)
    return out


# ------------------------------------------------------------------ small checks
def positive_int(x, what) -> int:
    """``x`` as an int, or a ValueError when it is not an integer >= 1."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise ValueError(f"{what} must be a positive integer, got {x!r}")
    return int(x)


def raise_if_bad(code, losses, t0, what):
    """Turn the loop's status (see ``rgraph.training.loop.run``) into an error naming
    the step."""
    if code == 0:
        return
    t = abs(int(code)) - 1
    if code > 0:
        b = int(np.argwhere(~np.isfinite(losses[t]))[0][0])
        where = f"the loss became non-finite at step {t0 + t} (stream {b})"
    else:
        where = f"the gradient estimate became non-finite at the update after step {t0 + t}"
    raise FloatingPointError(
        f"{what}: {where}; lower the learning rate, clip gradients (optimizer clip=...), "
        f"or check the data and the cell for overflow")


def check_hyper(optimizer, values, bounds) -> None:
    """Each of an optimizer's hyper-parameters ``values`` is a finite number in its
    interval ``bounds[name]``, written "[0, inf)", "(0, inf)" or "[0, 1)"; ValueError,
    one line, naming the first that is not."""
    for key, val in values.items():
        if isinstance(val, bool) or not isinstance(val, (int, float, np.integer,
                                                         np.floating)) \
                or not np.isfinite(val):
            raise ValueError(f"{optimizer}: {key} must be a finite number, got {val!r}")
        lo, hi = bounds[key][1:-1].split(",")
        low, high = float(lo), float(hi)
        inside = (low <= val if bounds[key][0] == "[" else low < val) and \
            (val <= high if bounds[key][-1] == "]" else val < high)
        if not inside:
            raise ValueError(f"{optimizer}: {key} must be in {bounds[key]}, got {val!r}")


def hyper(optimizer, options, optimizers) -> np.ndarray:
    """The compiled loop's hyper-parameter vector for ``optimizer`` (a name) with
    ``options``; ``optimizers``: name -> (defaults, layout, bounds), the layout naming,
    per entry of the vector, the option it holds or the constant it is, the bounds each
    option's interval (``check_hyper``)."""
    if optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got "
                         f"{optimizer!r}")
    defaults, layout, bounds = optimizers[optimizer]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{optimizer} has no option(s) {unknown}; it takes "
                         f"{', '.join(defaults)}")
    values = {**defaults, **options}
    check_hyper(optimizer, values, bounds)
    return np.array([values[e] if isinstance(e, str) else e for e in layout],
                    dtype=np.float64)


# ------------------------------------------------------------------------ the model
class Model:
    """The parameter layout, data checks and driver of one generated module.

    ``invoke(name, *args)`` calls the module's compiled entry point ``name`` (``run``,
    ``run_batch``, ``evaluate``, ``flush_all``). ``blocks``: ((name, offset, shape,
    size), ...), each parameter's slice of the flat vector; ``state``: (base, per_k,
    k_fixed), a stream's estimator state holding base + per_k * K numbers for the
    segment length K, which is k_fixed or, when that is None, the steps of a call;
    ``segmented``: parameters update at each segment's end (else every step);
    ``whole``: a training chunk is the whole stream by default (exact BPTT);
    ``flushes``: the estimator has work pending at segment ends (``flush_all``);
    ``batched``: the module steps several streams at once (``run_batch``); ``opt_size``:
    the length of the optimizer state the compiled loop keeps."""

    def __init__(self, invoke, *, cell, loss, dtype, n_in, n_out, n_state, blocks, state,
                 segmented, whole, flushes, batched, opt_size):
        self.invoke = invoke
        self.cell, self.loss_name, self.dtype = cell, loss, np.dtype(dtype)
        self.n_in, self.n_out, self.n_state = int(n_in), int(n_out), int(n_state)
        self.blocks = tuple(blocks)
        self.n_params = sum(size for _, _, _, size in self.blocks)
        self.state = state
        self.segmented, self.whole = bool(segmented), bool(whole)
        self.flushes, self.batched = bool(flushes), bool(batched)
        self.opt_size = int(opt_size)

    # ------------------------------------------------------------- parameters
    def pack(self, params) -> np.ndarray:
        """The flat parameter vector of a dict name -> array (checked)."""
        if not isinstance(params, dict):
            raise DataError(f"params must be a dict name -> array (see init_params), got "
                            f"{type(params).__name__}")
        names = [name for name, _, _, _ in self.blocks]
        missing = [n for n in names if n not in params]
        extra = [n for n in params if n not in names]
        if missing or extra:
            raise DataError(f"params for cell '{self.cell}': missing {missing}, "
                            f"unknown {extra}; expected exactly {names}")
        th = np.empty(self.n_params, dtype=self.dtype)
        for name, off, shape, size in self.blocks:
            a = np.asarray(params[name])
            if a.shape != tuple(shape):
                raise DataError(f"param '{name}' has shape {a.shape}, expected "
                                f"{tuple(shape)}")
            if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
                raise DataError(f"param '{name}' has dtype {a.dtype}; pass real numbers")
            if not np.all(np.isfinite(a)):
                raise DataError(f"param '{name}' has non-finite entries")
            th[off:off + size] = a.ravel()
        return th

    def unpack(self, flat) -> dict:
        """The dict name -> float64 array of a flat parameter vector."""
        return {name: np.array(flat[off:off + size], dtype=np.float64).reshape(shape)
                for name, off, shape, size in self.blocks}

    # ------------------------------------------------------------------ data
    def check_data(self, xs, ys, weights=None, resets=None, batch_axis=False):
        """Validated (T, B, X) inputs, targets, weights and resets for the compiled loop.

        xs: (T, X) or, with batch_axis, (T, B, X); ys: class ids (T[, B]) for
        softmax_xent or vectors (T[, B], n_out) for mse."""
        xs = np.asarray(xs)
        want = "(T, B, n_in)" if batch_axis else "(T, n_in)"
        nd = 3 if batch_axis else 2
        if xs.ndim != nd or xs.shape[-1] != self.n_in or xs.shape[0] == 0:
            raise DataError(f"xs has shape {xs.shape}; expected {want} with n_in = "
                            f"{self.n_in} for cell '{self.cell}'")
        if not np.issubdtype(xs.dtype, np.number) or np.iscomplexobj(xs):
            raise DataError(f"xs has dtype {xs.dtype}; pass real numbers")
        if not np.all(np.isfinite(xs)):
            t = int(np.argwhere(~np.isfinite(xs))[0][0])
            raise DataError(f"xs has a non-finite value (first at step {t}); clean the data "
                            f"before training")
        lead = xs.shape[:-1]
        ys = np.asarray(ys)
        if self.loss_name == "softmax_xent":
            if ys.shape != lead:
                raise DataError(f"ys has shape {ys.shape}; softmax_xent wants integer class "
                                f"ids of shape {lead} (one per step)")
            if not np.issubdtype(ys.dtype, np.integer):
                if np.issubdtype(ys.dtype, np.floating) and np.all(np.isfinite(ys)) and \
                        np.all(ys == np.round(ys)):
                    ys = ys.astype(np.int64)
                else:
                    raise DataError(f"ys has dtype {ys.dtype}; softmax_xent wants integer "
                                    f"class ids in [0, {self.n_out})")
            if ys.size and (ys.min() < 0 or ys.max() >= self.n_out):
                raise DataError(f"ys has class ids in [{ys.min()}, {ys.max()}] but the output "
                                f"has {self.n_out} classes")
            ys = ys.astype(np.int64)
        else:
            if ys.shape != lead + (self.n_out,):
                raise DataError(f"ys has shape {ys.shape}; mse wants targets of shape "
                                f"{lead + (self.n_out,)}")
            if not np.all(np.isfinite(ys)):
                raise DataError("ys has non-finite values; mse targets must be finite")
            ys = ys.astype(self.dtype)
        if weights is None:
            ws = np.ones(lead, dtype=self.dtype)
        else:
            ws = np.asarray(weights, dtype=np.float64)
            if ws.shape != lead or not np.all(np.isfinite(ws)) or np.any(ws < 0):
                raise DataError(f"weights must be finite, >= 0 and of shape {lead}; got "
                                f"shape {ws.shape}")
            ws = ws.astype(self.dtype)
        if resets is None:
            rs = np.zeros(lead, dtype=np.bool_)
        else:
            rs = np.asarray(resets, dtype=np.bool_)
            if rs.shape != lead:
                raise DataError(f"resets must have shape {lead}, got {rs.shape}")
        if not batch_axis:
            xs, ys, ws, rs = xs[:, None], ys[:, None], ws[:, None], rs[:, None]
        return (np.ascontiguousarray(xs, dtype=self.dtype), np.ascontiguousarray(ys),
                np.ascontiguousarray(ws), np.ascontiguousarray(rs))

    def streams(self, xs, ys, weights, resets, batch):
        """(T, B, ...) arrays: (T, n_in) data split into ``batch`` contiguous streams, or
        (T, B, n_in) data whose B is ``batch``."""
        if np.ndim(xs) == 3:
            if np.shape(xs)[1] != batch:
                raise DataError(f"xs has {np.shape(xs)[1]} streams but the batch is {batch}")
            return self.check_data(xs, ys, weights, resets, batch_axis=True)
        xs, ys, ws, rs = self.check_data(xs, ys, weights, resets)
        T = xs.shape[0] // batch
        if T == 0:
            raise DataError(f"{xs.shape[0]} steps cannot feed {batch} streams")

        def split(a):   # (T*B, 1, ...) -> (T, B, ...): stream b is the b-th contiguous part
            a = a[:T * batch, 0]
            return np.ascontiguousarray(np.swapaxes(a.reshape((batch, T) + a.shape[1:]), 0, 1))
        return split(xs), split(ys), split(ws), split(rs)

    # ---------------------------------------------------------------- states
    def segment_length(self, T) -> int:
        """The estimator's segment length K for runs of T steps per call."""
        base, per_k, k_fixed = self.state
        return T if k_fixed is None else k_fixed

    def update_every(self, T) -> int:
        """Steps between parameter updates for runs of T steps per call."""
        return self.segment_length(T) if self.segmented else 1

    def new_state(self, batch, T=None):
        """Zeroed (cell states, estimator states) of ``batch`` streams."""
        base, per_k, _ = self.state
        size = base + per_k * (self.segment_length(T) if per_k else 0)
        return (np.zeros((batch, self.n_state), dtype=self.dtype),
                np.zeros((batch, size), dtype=self.dtype))

    # ------------------------------------------------------------ the module
    def call(self, fn, *args):
        """Call the entry point ``fn`` (non-finite values are checked, not warned
        about); ``run`` on several streams is ``run_batch`` where the module has it."""
        if fn == "run" and args[1].shape[0] > 1 and self.batched:
            fn = "run_batch"
        with np.errstate(all="ignore"):
            return self.invoke(fn, *args)

    def example_calls(self, first="run"):
        """(entry point, arguments) of zero-step calls of the loop (``first`` if that is
        ``run_batch``, else ``run``), ``evaluate`` and (if the estimator flushes)
        ``flush_all``: the argument types every later call has, to compile the entry
        points for."""
        loop = first if first in ("run", "run_batch") else "run"
        dt, P, B = self.dtype, self.n_params, 1
        th, g = np.zeros(P, dt), np.zeros(P, dt)
        states, E = self.new_state(B, 1)
        xs = np.zeros((0, B, self.n_in), dt)
        ys = (np.zeros((0, B), np.int64) if self.loss_name == "softmax_xent"
              else np.zeros((0, B, self.n_out), dt))
        ws, rs, losses = np.zeros((0, B), dt), np.zeros((0, B), np.bool_), np.zeros((0, B), dt)
        rng = np.random.default_rng(0)
        opt, hp = np.zeros(self.opt_size, dt), np.zeros(5)
        calls = [(loop, (th, states, E, xs, ys, ws, rs, rng, g, opt, hp, losses, 0, 1,
                         False)),
                 ("evaluate", (th, states, xs, ys, ws, rs, losses))]
        if self.flushes:
            calls.append(("flush_all", (th, E, g, rng)))
        return calls

    # ------------------------------------------------------------- gradients
    def total_gradient(self, params, xs, ys, seed=0, weights=None, resets=None,
                       return_loss=False):
        """The sum over a sequence of the estimator's per-step gradient estimates at
        fixed parameters, states starting at zero (loss Σ_t l_t). seed: the estimator's
        noise (``np.random.default_rng(seed)``). Returns {name: array} (and the summed
        loss with return_loss)."""
        th = self.pack(params)
        xs, ys, ws, rs = self.check_data(xs, ys, weights, resets)
        T = xs.shape[0]
        states, E = self.new_state(1, T)
        g = np.zeros(self.n_params, dtype=self.dtype)
        losses = np.zeros((T, 1), dtype=self.dtype)
        rng = np.random.default_rng(seed)
        # no update (train=False): the optimizer's vectors are never read
        opt, hp = np.zeros(self.opt_size, dtype=self.dtype), np.zeros(5)
        bad = self.call("run", th, states, E, xs, ys, ws, rs, rng, g, opt, hp, losses, 0,
                        self.update_every(T), False)
        raise_if_bad(bad, losses, 0, "total_gradient")
        if self.flushes:
            self.call("flush_all", th, E, g, rng)
        if not np.all(np.isfinite(g)):
            raise_if_bad(-T, losses, 0, "total_gradient")
        grad = self.unpack(g)
        return (grad, float(losses.sum())) if return_loss else grad

    def loss(self, params, xs, ys, weights=None, resets=None) -> float:
        """Mean per-step loss of a forward pass from zero state (no learning)."""
        th = self.pack(params)
        xs, ys, ws, rs = self.check_data(xs, ys, weights, resets)
        states = np.zeros((1, self.n_state), dtype=self.dtype)
        losses = np.zeros((xs.shape[0], 1), dtype=self.dtype)
        self.call("evaluate", th, states, xs, ys, ws, rs, losses)
        return float(losses.sum() / max(float(ws.sum()), 1e-300))


class Run:
    """A training run's state: parameters ``th``, the optimizer's ``hp`` and moments
    ``opt``, each stream's cell and estimator states, the gradient being summed ``g``,
    the random generators and the step count. Steps run a chunk at a time, chunks
    aligned to the step count, so a run cut anywhere and continued draws and computes
    exactly what an uninterrupted one would."""

    def __init__(self, model, th, hp, batch=1, seed=0, reset_prob=0.0, chunk=1000):
        self.model = model
        self.th, self.hp = th, hp
        self.batch = positive_int(batch, "batch")
        self.chunk = positive_int(chunk, "chunk")
        if not 0.0 <= reset_prob <= 1.0:
            raise ValueError(f"reset_prob must be in [0, 1], got {reset_prob!r}")
        self.reset_prob = float(reset_prob)
        self.seed = int(seed)
        self.opt = np.zeros(model.opt_size, dtype=model.dtype)
        self.states, self.E = model.new_state(self.batch, self.chunk)
        self.g = np.zeros(model.n_params, dtype=model.dtype)
        # one generator per use, each consumed the same way however the steps are cut
        # into chunks (so a resumed run draws exactly what an uninterrupted one would)
        self.rng = np.random.default_rng(seed)                   # the estimator's noise
        self.reset_rng = np.random.default_rng([seed, 1])         # random state resets
        self.update_every = model.update_every(self.chunk)
        self.step = 0

    def piece(self, remaining) -> int:
        """Steps of the next call: to the end of the current chunk, at most
        ``remaining``."""
        return min(self.chunk - (self.step % self.chunk), remaining)

    def resets(self, rs):
        """The given resets of a piece with the random ones (``reset_prob``) added."""
        rs = rs.copy()
        if self.reset_prob > 0:
            rs |= self.reset_rng.random(rs.shape) < self.reset_prob
        return rs

    def advance(self, xs, ys, ws, rs):
        """Train on one piece ((n, B, ...) arrays, n <= ``piece``; ``rs`` with its
        random resets): returns the (n, B) losses."""
        n = xs.shape[0]
        losses = np.zeros((n, self.batch), dtype=self.model.dtype)
        code = self.model.call("run", self.th, self.states, self.E, xs, ys, ws, rs,
                               self.rng, self.g, self.opt, self.hp, losses, self.step,
                               self.update_every, True)
        raise_if_bad(code, losses, self.step, "train")
        self.step += n
        return losses

    def train(self, xs, ys, ws, rs):
        """Train on (T, B, ...) streams; returns the per-step weighted mean losses (nan
        where no step is weighted)."""
        T = xs.shape[0]
        curve = np.empty(T, dtype=np.float64)
        done = 0
        while done < T:
            sl = slice(done, done + self.piece(T - done))
            losses = self.advance(xs[sl], ys[sl], ws[sl], self.resets(rs[sl]))
            curve[sl] = per_step(losses, ws[sl])
            done = sl.stop
        return curve


def per_step(losses, ws):
    """The weighted mean loss of each step over the streams (nan where no weight)."""
    wsum = ws.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, losses.sum(axis=1) / wsum, np.nan)


def train_model(model, optimizers, params, xs, ys, optimizer="sgd", batch=1, seed=0,
                weights=None, resets=None, reset_prob=0.0, chunk=None, state=None, **options):
    """Online training on a sequence; returns (new params, per-step losses).

    Every step advances the cell, forms the gradient estimate and (every step, or at
    each segment's end for truncated BPTT) updates the parameters with the batch mean.
    optimizer: a name of ``optimizers`` (name -> (defaults, layout), see ``hyper``), its
    options as keywords. xs: (T, n_in), split into ``batch`` contiguous streams of
    T // batch steps, or (T, batch, n_in); ys, weights, resets likewise. seed: the
    estimator's noise; reset_prob: zero a stream's state with this probability per step.
    chunk: steps per compiled call (default 1000; for exact BPTT the whole stream).
    state: a dict, empty at first, that keeps the run between calls: calling again with
    the returned params and the same dict continues the run as if it had not stopped."""
    batch = positive_int(batch, "batch")
    if not 0.0 <= reset_prob <= 1.0:
        raise ValueError(f"reset_prob must be in [0, 1], got {reset_prob!r}")
    hp = hyper(optimizer, options, optimizers)
    th = model.pack(params)
    xs, ys, ws, rs = model.streams(xs, ys, weights, resets, batch)
    if state is not None and not isinstance(state, dict):
        raise ValueError(f"state must be a dict (empty at first), got "
                         f"{type(state).__name__}")
    args = {"batch": batch, "seed": seed, "chunk": chunk}
    if state:
        for key, val in args.items():
            if state["args"][key] != val:
                raise ValueError(f"state was made with {key}={state['args'][key]!r}, this "
                                 f"call has {key}={val!r}")
        run = state["run"]
        run.th, run.hp, run.reset_prob = th, hp, float(reset_prob)
    else:
        if chunk is None:
            chunk = xs.shape[0] if model.whole else 1000
        run = Run(model, th, hp, batch, seed, reset_prob, chunk)
    curve = run.train(xs, ys, ws, rs)
    if state is not None:
        state.update(args=args, run=run, step=run.step)
    return model.unpack(run.th), curve
