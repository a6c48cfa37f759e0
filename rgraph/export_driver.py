"""The driver of an exported estimator: plain Python functions that ``rgraph.export``
copies, unchanged and not jitted, after the generated module in the file it writes.

They are never called here. In the exported file the generated module's compiled entry
points ``run``, ``evaluate``, (``_FLUSHES``) ``flush_all`` and (``_BATCHED``)
``run_batch`` exist (see ``rgraph.training.loop``), ``np`` is
numpy, and ``export.py`` defines these constants above the functions:

* ``INFO``: cell, estimator, loss, dtype, backend and sizes (documentation);
* ``PARAMS``: parameter name -> shape;
* ``_LOSS`` ("softmax_xent" | "mse"), ``_DTYPE`` (a numpy dtype), ``_N_PARAMS``,
  ``_N_STATE``, ``_N_IN``, ``_N_OUT``;
* ``_BLOCKS``: ((name, offset, shape, size), ...), each parameter's slice of the flat
  parameter vector;
* ``_INITS``: ((name, shape, scheme, scale, data), ...), each parameter's init scheme
  (data: the hex of a given array's float64 bytes, else None);
* ``_E_BASE``, ``_E_PER_K``: a stream's estimator state holds _E_BASE + _E_PER_K * K
  numbers, for segment length K; ``_K_FIXED``: K, or None when K is the chunk's length;
  ``_SEGMENTED``: parameters update every K steps (else every step); ``_WHOLE``: train's
  default chunk is the whole stream (exact BPTT); ``_FLUSHES``: the estimator has work
  pending at segment ends (``flush_all``); ``_BATCHED``: the module steps several
  streams at once (``run_batch``);
* ``_OPTIMIZERS``: name -> (default hyper-parameters, layout of the hyper-parameter
  vector ``hp`` of the compiled loop: a hyper-parameter's name or a constant per entry).

Each function mirrors one of rgraph's (``Estimator.pack``, ``check_data``,
``total_gradient``, ``loss``, ``Trainer``) so that the exported file gives the same
numbers as rgraph; ``tests/test_export.py`` holds them to it.
"""
# ruff: noqa: F821  (names are defined in the exported file)


def _pack(params):
    """The flat parameter vector of a dict name -> array (checked)."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict name -> array (see init_params), got "
                         f"{type(params).__name__}")
    names = [blk[0] for blk in _BLOCKS]
    missing = [n for n in names if n not in params]
    extra = [n for n in params if n not in names]
    if missing or extra:
        raise ValueError(f"params: missing {missing}, unknown {extra}; expected exactly "
                         f"{names}")
    th = np.empty(_N_PARAMS, dtype=_DTYPE)
    for name, off, shape, size in _BLOCKS:
        a = np.asarray(params[name])
        if a.shape != shape:
            raise ValueError(f"param '{name}' has shape {a.shape}, expected {shape}")
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise ValueError(f"param '{name}' has dtype {a.dtype}; pass real numbers")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"param '{name}' has non-finite entries")
        th[off:off + size] = a.ravel()
    return th


def _unpack(th):
    """The dict name -> float64 array of a flat parameter vector."""
    return {name: np.array(th[off:off + size], dtype=np.float64).reshape(shape)
            for name, off, shape, size in _BLOCKS}


def _check_data(xs, ys, weights, resets, batch_axis):
    """Validated (T, B, ...) inputs, targets, weights and resets for the compiled loop."""
    xs = np.asarray(xs)
    want = "(T, B, n_in)" if batch_axis else "(T, n_in)"
    if xs.ndim != (3 if batch_axis else 2) or xs.shape[-1] != _N_IN or xs.shape[0] == 0:
        raise ValueError(f"xs has shape {xs.shape}; expected {want} with n_in = {_N_IN}")
    if not np.issubdtype(xs.dtype, np.number) or np.iscomplexobj(xs):
        raise ValueError(f"xs has dtype {xs.dtype}; pass real numbers")
    if not np.all(np.isfinite(xs)):
        t = int(np.argwhere(~np.isfinite(xs))[0][0])
        raise ValueError(f"xs has a non-finite value (first at step {t})")
    lead = xs.shape[:-1]
    ys = np.asarray(ys)
    if _LOSS == "softmax_xent":
        if ys.shape != lead:
            raise ValueError(f"ys has shape {ys.shape}; softmax_xent wants integer class "
                             f"ids of shape {lead} (one per step)")
        if not np.issubdtype(ys.dtype, np.integer) and not (
                np.issubdtype(ys.dtype, np.floating) and np.all(np.isfinite(ys))
                and np.all(ys == np.round(ys))):
            raise ValueError(f"ys has dtype {ys.dtype}; softmax_xent wants integer class "
                             f"ids in [0, {_N_OUT})")
        if ys.size and (ys.min() < 0 or ys.max() >= _N_OUT):
            raise ValueError(f"ys has class ids in [{ys.min()}, {ys.max()}] but the "
                             f"output has {_N_OUT} classes")
        ys = ys.astype(np.int64)
    else:
        if ys.shape != lead + (_N_OUT,):
            raise ValueError(f"ys has shape {ys.shape}; mse wants targets of shape "
                             f"{lead + (_N_OUT,)}")
        if not np.all(np.isfinite(ys)):
            raise ValueError("ys has non-finite values; mse targets must be finite")
        ys = ys.astype(_DTYPE)
    if weights is None:
        ws = np.ones(lead, dtype=_DTYPE)
    else:
        ws = np.asarray(weights, dtype=np.float64)
        if ws.shape != lead or not np.all(np.isfinite(ws)) or np.any(ws < 0):
            raise ValueError(f"weights must be finite, >= 0 and of shape {lead}; got "
                             f"shape {ws.shape}")
        ws = ws.astype(_DTYPE)
    if resets is None:
        rs = np.zeros(lead, dtype=np.bool_)
    else:
        rs = np.asarray(resets, dtype=np.bool_)
        if rs.shape != lead:
            raise ValueError(f"resets must have shape {lead}, got {rs.shape}")
    if not batch_axis:
        xs, ys, ws, rs = xs[:, None], ys[:, None], ws[:, None], rs[:, None]
    return (np.ascontiguousarray(xs, dtype=_DTYPE), np.ascontiguousarray(ys),
            np.ascontiguousarray(ws), np.ascontiguousarray(rs))


def _streams(xs, ys, weights, resets, batch):
    """(T, B, ...) arrays: (T, n_in) data split into ``batch`` contiguous streams, or
    (T, B, n_in) data whose B is ``batch``."""
    if np.ndim(xs) == 3:
        if np.shape(xs)[1] != batch:
            raise ValueError(f"xs has {np.shape(xs)[1]} streams but batch is {batch}")
        return _check_data(xs, ys, weights, resets, True)
    xs, ys, ws, rs = _check_data(xs, ys, weights, resets, False)
    T = xs.shape[0] // batch
    if T == 0:
        raise ValueError(f"{xs.shape[0]} steps cannot feed {batch} streams")

    def split(a):   # (T*B, 1, ...) -> (T, B, ...): stream b is the b-th contiguous part
        a = a[:T * batch, 0]
        return np.ascontiguousarray(np.swapaxes(a.reshape((batch, T) + a.shape[1:]), 0, 1))
    return split(xs), split(ys), split(ws), split(rs)


def _segment(T):
    """The estimator's segment length K for runs of T steps per call."""
    return T if _K_FIXED is None else _K_FIXED


def _new_state(batch, T):
    """Zeroed cell states and estimator states of ``batch`` streams."""
    E = np.zeros((batch, _E_BASE + _E_PER_K * _segment(T)), dtype=_DTYPE)
    return np.zeros((batch, _N_STATE), dtype=_DTYPE), E


def _hyper(optimizer, options):
    """The compiled loop's hyper-parameter vector for ``optimizer`` with ``options``."""
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got "
                         f"{optimizer!r}")
    defaults, layout = _OPTIMIZERS[optimizer]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{optimizer} has no option(s) {unknown}; it takes "
                         f"{', '.join(defaults)}")
    values = {**defaults, **options}
    for key, val in values.items():
        if isinstance(val, bool) or not isinstance(val, (int, float, np.integer,
                                                         np.floating)):
            raise ValueError(f"{optimizer}: {key} must be a number, got {val!r}")
    for key in ("lr", "decay", "clip", "weight_decay"):
        if key in values and not (np.isfinite(values[key]) and values[key] >= 0):
            raise ValueError(f"{optimizer}: {key} must be a finite number >= 0, got "
                             f"{values[key]!r}")
    if optimizer == "adam" and not (0 <= values["beta1"] < 1 and 0 <= values["beta2"] < 1
                                    and values["eps"] > 0):
        raise ValueError("adam: need 0 <= beta1, beta2 < 1 and eps > 0")
    return np.array([values[e] if isinstance(e, str) else e for e in layout],
                    dtype=np.float64)


def _raise_if_bad(code, losses, t0, what):
    """Turn the compiled loop's status into an error naming the step."""
    if code == 0:
        return
    t = abs(int(code)) - 1
    if code > 0:
        b = int(np.argwhere(~np.isfinite(losses[t]))[0][0])
        where = f"the loss became non-finite at step {t0 + t} (stream {b})"
    else:
        where = f"the gradient estimate became non-finite at the update after step {t0 + t}"
    raise FloatingPointError(f"{what}: {where}; lower the learning rate, clip gradients "
                             f"(clip=...), or check the data and the cell for overflow")


def _positive_int(x, what):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise ValueError(f"{what} must be a positive integer, got {x!r}")
    return int(x)


def _init_param(name, shape, scheme, scale, data, rng):
    """One parameter's initial value, drawn like rgraph's init_param."""
    fan_in = shape[-1] if len(shape) >= 1 else 1     # rgraph.graph.param_fan_in
    if scheme == "custom":
        raise ValueError(f"init_params: parameter '{name}' was initialised by a Python "
                         f"function of the cell's definition, which the export cannot "
                         f"carry; build the params yourself (shapes in PARAMS)")
    if scheme == "array":
        arr = np.frombuffer(bytes.fromhex(data), dtype="<f8").astype(np.float64)
        arr = arr.reshape(shape)
    elif scheme == "normal":
        arr = rng.standard_normal(shape) * scale / np.sqrt(fan_in)
    elif scheme == "uniform":
        lim = scale / np.sqrt(fan_in)
        arr = rng.uniform(-lim, lim, shape)
    elif scheme == "orthogonal":
        rows, cols = shape if len(shape) == 2 else (shape[0], 1)
        if rows >= cols:   # stacked square orthogonal blocks
            blocks = [np.linalg.qr(rng.standard_normal((cols, cols)))[0]
                      for _ in range(-(-rows // cols))]
            arr = np.concatenate(blocks)[:rows]
        else:              # orthonormal rows
            arr = np.linalg.qr(rng.standard_normal((cols, rows)))[0].T
        arr = arr.reshape(shape) * scale
    elif scheme == "zeros":
        arr = np.zeros(shape)
    elif scheme == "ones":
        arr = np.ones(shape)
    elif scheme == "identity":
        arr = np.eye(*shape) * scale if len(shape) == 2 else np.ones(shape) * scale
    else:   # const
        arr = np.full(shape, scale)
    return arr


# ---------------------------------------------------------------- entry points
def init_params(seed=0):
    """Fresh parameters {name: float64 array} from each parameter's init scheme; the same
    seed gives the same numbers as rgraph's ``Estimator.init_params(seed)``."""
    rng = np.random.default_rng(seed)
    return {name: _init_param(name, shape, scheme, scale, data, rng)
            for name, shape, scheme, scale, data in _INITS}


def total_gradient(params, xs, ys, seed=0, weights=None, resets=None, return_loss=False):
    """The sum over a sequence of the estimator's per-step gradient estimates at fixed
    parameters, states starting at zero (loss: the sum of the per-step losses).

    params: {name: array} (see PARAMS); xs: (T, n_in); ys: (T,) class ids for
    softmax_xent, (T, n_out) targets for mse; weights: (T,) loss weights >= 0; resets:
    (T,) booleans, zero the state before that step; seed: the estimator's noise
    (``np.random.default_rng(seed)``). Returns {name: array} (and the summed loss with
    return_loss=True)."""
    th = _pack(params)
    xs, ys, ws, rs = _check_data(xs, ys, weights, resets, False)
    T = xs.shape[0]
    states, E = _new_state(1, T)
    g = np.zeros(_N_PARAMS, dtype=_DTYPE)
    losses = np.zeros((T, 1), dtype=_DTYPE)
    rng = np.random.default_rng(seed)
    opt, hp = np.zeros(1 + 2 * _N_PARAMS, dtype=_DTYPE), _hyper("sgd", {"lr": 0.0})
    update_every = _segment(T) if _SEGMENTED else 1
    with np.errstate(all="ignore"):
        bad = run(th, states, E, xs, ys, ws, rs, rng, g, opt, hp, losses, 0, update_every,
                  False)
        _raise_if_bad(bad, losses, 0, "total_gradient")
        if _FLUSHES:
            flush_all(th, E, g, rng)
    if not np.all(np.isfinite(g)):
        _raise_if_bad(-T, losses, 0, "total_gradient")
    grad = _unpack(g)
    return (grad, float(losses.sum())) if return_loss else grad


def loss(params, xs, ys, weights=None, resets=None):
    """Mean per-step loss of a forward pass from zero state (no learning)."""
    th = _pack(params)
    xs, ys, ws, rs = _check_data(xs, ys, weights, resets, False)
    states = np.zeros((1, _N_STATE), dtype=_DTYPE)
    losses = np.zeros((xs.shape[0], 1), dtype=_DTYPE)
    with np.errstate(all="ignore"):
        evaluate(th, states, xs, ys, ws, rs, losses)
    return float(losses.sum() / max(float(ws.sum()), 1e-300))


def train(params, xs, ys, optimizer="sgd", batch=1, seed=0, weights=None, resets=None,
          reset_prob=0.0, chunk=None, state=None, **hyper):
    """Online training on a sequence; returns (new params, per-step losses).

    Every step advances the cell, forms the gradient estimate and (every step, or at
    each segment's end for truncated BPTT) updates the parameters with the batch mean.
    optimizer: "sgd" (lr=0.01, decay, clip, weight_decay) or "adam" (lr=0.001, beta1,
    beta2, eps, decay, clip, weight_decay), hyper-parameters as keywords; the learning
    rate at update k is lr / (1 + decay * sqrt(k)), clip > 0 caps the gradient's norm.
    xs: (T, n_in), split into ``batch`` contiguous streams of T // batch steps, or
    (T, batch, n_in); ys, weights, resets likewise (see total_gradient). seed: the
    estimator's noise; reset_prob: zero a stream's state with this probability per
    step. chunk: steps per compiled call (default 1000; for exact BPTT the whole
    stream). losses[t]: the weighted mean loss of step t over the streams.
    state: a dict, empty at first, that keeps the run (optimizer moments, cell and
    estimator states, random generators, step count) between calls: calling again with
    the returned params and the same dict continues the run as if it had not stopped."""
    batch = _positive_int(batch, "batch")
    if not 0.0 <= reset_prob <= 1.0:
        raise ValueError(f"reset_prob must be in [0, 1], got {reset_prob!r}")
    hp = _hyper(optimizer, hyper)
    th = _pack(params)
    xs, ys, ws, rs = _streams(xs, ys, weights, resets, batch)
    T = xs.shape[0]
    if state is not None and not isinstance(state, dict):
        raise ValueError(f"state must be a dict (empty at first), got "
                         f"{type(state).__name__}")
    if state:
        for key, val in (("batch", batch), ("seed", seed), ("chunk", chunk)):
            if state["args"][key] != val:
                raise ValueError(f"state was made with {key}={state['args'][key]!r}, this "
                                 f"call has {key}={val!r}")
        run_state = state
    else:
        args = {"batch": batch, "seed": seed, "chunk": chunk}
        if chunk is None:
            chunk = T if _WHOLE else 1000
        chunk = _positive_int(chunk, "chunk")
        states, E = _new_state(batch, chunk)
        run_state = {"args": args, "chunk": chunk, "step": 0, "states": states, "E": E,
                     "g": np.zeros(_N_PARAMS, dtype=_DTYPE),
                     "opt": np.zeros(1 + 2 * _N_PARAMS, dtype=_DTYPE),
                     "rng": np.random.default_rng(seed),
                     "reset_rng": np.random.default_rng([seed, 1])}
    chunk, step = run_state["chunk"], run_state["step"]
    update_every = _segment(chunk) if _SEGMENTED else 1
    curve = np.empty(T, dtype=np.float64)
    done = 0
    while done < T:
        n = min(chunk - (step % chunk), T - done)
        sl = slice(done, done + n)
        rs_n = rs[sl].copy()
        if reset_prob > 0:
            rs_n |= run_state["reset_rng"].random(rs_n.shape) < reset_prob
        losses = np.zeros((n, batch), dtype=_DTYPE)
        with np.errstate(all="ignore"):
            loop = run_batch if _BATCHED and batch > 1 else run     # as rgraph does
            code = loop(th, run_state["states"], run_state["E"], xs[sl], ys[sl], ws[sl],
                        rs_n, run_state["rng"], run_state["g"], run_state["opt"], hp,
                        losses, step, update_every, True)
            _raise_if_bad(code, losses, step, "train")
            wsum = ws[sl].sum(axis=1)
            curve[sl] = np.where(wsum > 0, losses.sum(axis=1) / wsum, np.nan)
        step += n
        done += n
        run_state["step"] = step
    if state is not None:
        state.update(run_state)
    return _unpack(th), curve


DRIVER = [_pack, _unpack, _check_data, _streams, _segment, _new_state, _hyper,
          _raise_if_bad, _positive_int, _init_param, init_params, total_gradient, loss,
          train]
ENTRY_POINTS = ["init_params", "total_gradient", "loss", "train"]
