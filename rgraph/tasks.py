"""Streaming task generators for online training of recurrent networks.

This module provides the data side of the online-learning experiments of
Tallec & Ollivier (2017, UORO), Mujika et al. (2018, KF-RTRL) and Silver et
al. (2022, DODGE).  Every task is an infinite stream consumed a chunk at a
time by an online learner (RTRL, UORO, KF-RTRL, truncated BPTT, ...).  It is
pure numpy and imports nothing else from ``rgraph``.

Common interface of every task object
-------------------------------------
``n_in``, ``n_out``
    Input vector size; output size (number of classes for ``"softmax_xent"``
    tasks, vector size for ``"mse"`` tasks).
``loss``
    ``"softmax_xent"`` (integer class targets) or ``"mse"`` (vector targets).
``stream(T, rng) -> (xs, ys)``
    The next ``T`` steps of the task's infinite stream.  ``xs`` is float64 of
    shape ``(T, n_in)`` (one-hot for symbolic tasks); ``ys`` is int64 ``(T,)``
    for ``"softmax_xent"`` or float64 ``(T, n_out)`` for ``"mse"``.
    Consecutive calls continue the same stream; the result is a deterministic
    function of the ``numpy.random.Generator`` state and the task's own small
    state (a buffer / cursor), which ``reset()`` restores.  For generated
    tasks, ``stream(a) ; stream(b)`` gives exactly ``stream(a + b)`` from the
    same generator state.
``stream_weighted(T, rng) -> (xs, ys, w)``
    Same stream plus float64 weights ``w`` of shape ``(T,)`` in {0, 1}: only
    steps with ``w == 1`` carry loss.  Only :class:`Copy` has a non-trivial
    mask (``weighted = True``); for the other tasks ``w`` is all ones.
``unit``, ``to_unit(mean_loss_nats)``
    Name of the reported loss unit and the conversion of a mean per-step loss
    in nats to it (``"bits/char"``: divide by ln 2; ``"mse"``: identity).
``optimum``
    The best achievable mean loss in ``unit`` where it is known (else None);
    each class documents how it is computed.
``reset()``
    Return to the start of the stream (clears buffers / cursors).
``get_state() -> dict``, ``set_state(state)``
    The task's *dynamic* state (stream buffer, cursor, curriculum ``T``) as a
    small flat dict of numpy arrays and Python scalars (it survives
    ``np.savez`` and pickle), plus the class name and configuration, which
    ``set_state`` checks (``ValueError`` naming what differs).  After
    ``st = t.get_state()``, ``t.set_state(st)`` makes the following stream
    identical for equal generator states.
``fork(i, n) -> Task``
    The ``i``-th of ``n`` independent streams for batched training: a reset
    copy sharing no mutable state with ``self`` (generated tasks differ only
    through the generator the caller passes; :class:`CharLM` forks start at
    evenly spaced offsets of the training split).

Symbolic stream tasks (:class:`DistantBrackets`, :class:`AnBn`) are character
streams ``c_0 c_1 c_2 ...`` with input ``x_t = onehot(c_t)`` and target
``y_t = c_{t+1}`` (next-character prediction).  The stream starts with a
virtual line break ``c_0 = "\\n"`` as if a previous line had just ended, so the
first target is the first character of the first generated line.

Registry: ``TASKS`` maps the names ``"influence"``, ``"brackets"``,
``"anbn"``, ``"copy"``, ``"charlm"`` to the classes; ``make_task(name,
**kwargs)`` builds one.
"""

from __future__ import annotations

import copy as _copy
import inspect
import math
import os
import string
import warnings
import zlib
from collections.abc import Mapping

import numpy as np

__all__ = [
    "Task",
    "InfluenceBalancing",
    "DistantBrackets",
    "AnBn",
    "Copy",
    "CharLM",
    "data_dir",
    "TASKS",
    "make_task",
]

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _check_rng(rng, who: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{who}: rng must be a numpy.random.Generator "
            f"(e.g. numpy.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


def _check_T(T, who: str) -> int:
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)):
        raise TypeError(f"{who}: T must be a non-negative int, got {T!r}")
    T = int(T)
    if T < 0:
        raise ValueError(f"{who}: T must be a non-negative int, got {T}")
    return T


def _check_int(value, name: str, who: str, lo: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{who}: {name} must be an int, got {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{who}: {name} must be >= {lo}, got {value}")
    return value


def _state_scalar(value, key: str, who: str):
    """A Python scalar from a state entry (a scalar or a 0-d array, e.g. after
    ``np.load``)."""
    a = np.asarray(value)
    if a.ndim != 0 or a.dtype == object:
        raise ValueError(f"{who}: state entry {key!r} must be a scalar, got {value!r}")
    return a.item()


def _state_int(state: dict, key: str, who: str, lo: int, hi: int | None = None) -> int:
    """An int state entry in ``[lo, hi)``."""
    v = _state_scalar(state[key], key, who)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v >= hi):
        rng_txt = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        raise ValueError(f"{who}: state entry {key!r} must be an int {rng_txt}, got {v!r}")
    return v


def _state_array(state: dict, key: str, who: str, kind: str, lo=None, hi=None) -> np.ndarray:
    """A 1-D state array of dtype kind ``kind`` ("i" int, "f" float, "b" bool)
    with values in ``[lo, hi)``; returned as a fresh int64/float64/bool copy."""
    a = np.asarray(state[key])
    allowed = {"i": "iu", "f": "fiu", "b": "b"}[kind]
    if a.ndim != 1 or not (a.dtype.kind in allowed or (a.size == 0 and a.dtype.kind in "iufb")):
        what = {"i": "int", "f": "float", "b": "bool"}[kind]
        raise ValueError(f"{who}: state entry {key!r} must be a 1-D {what} array, got "
                         f"{a.dtype} of shape {a.shape}")
    out = a.astype({"i": np.int64, "f": np.float64, "b": bool}[kind])
    if a.size and ((lo is not None and out.min() < lo) or (hi is not None and out.max() >= hi)):
        raise ValueError(f"{who}: state entry {key!r} has values outside [{lo}, {hi})")
    return out


def _one_hot(ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    out = np.zeros((ids.shape[0], n), dtype=np.float64)
    out[np.arange(ids.shape[0]), ids] = 1.0
    return out


# Symbols used to print the random alphabets of the synthetic tasks.
_ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits


# ----------------------------------------------------------------------------
# base classes
# ----------------------------------------------------------------------------


class Task:
    """Base class: read-only configuration, ``__repr__``, unit conversion.

    Public attributes are frozen after construction (assigning one raises
    ``AttributeError``) except the few listed in ``_mutable``; private
    ``_``-prefixed attributes hold the stream state.
    """

    loss: str = "softmax_xent"
    unit: str = "bits/char"
    optimum: float | None = None
    weighted: bool = False  # True when only some steps carry loss
    _mutable: frozenset = frozenset()

    def __setattr__(self, name, value):
        if (
            getattr(self, "_frozen", False)
            and not name.startswith("_")
            and name not in self._mutable
        ):
            raise AttributeError(
                f"{type(self).__name__}.{name} is read-only; build a new task instead"
            )
        object.__setattr__(self, name, value)

    def _freeze(self, **config):
        object.__setattr__(self, "_config", dict(config))
        object.__setattr__(self, "_frozen", True)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({args})"

    def to_unit(self, mean_loss_nats):
        """Convert a mean per-step loss in nats to ``self.unit``.

        Cross-entropy tasks report bits/char (nats / ln 2); regression tasks
        report the loss unchanged.  Accepts a scalar (returns float) or array.
        """
        v = np.asarray(mean_loss_nats, dtype=np.float64)
        if self.loss == "softmax_xent":
            v = v / LN2
        return float(v) if v.ndim == 0 else v

    def reset(self):
        """Restore the start-of-stream state (no-op for stateless tasks)."""

    def stream(self, T, rng=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def stream_weighted(self, T, rng=None):
        """``stream`` plus all-ones weights (every step carries loss)."""
        xs, ys = self.stream(T, rng)
        return xs, ys, np.ones(xs.shape[0], dtype=np.float64)

    # -- checkpointing ---------------------------------------------------------
    #
    # A state is a flat dict: "task" (the class name), "config.<name>" for
    # every item of ``_identity()`` (checked, never restored) and the keys of
    # ``_dynamic_keys`` (restored).  Flat and made of numpy arrays / Python
    # scalars so that ``np.savez(f, **state)`` and ``dict(np.load(f))`` (no
    # pickle needed) round-trip it; loaded 0-d arrays are accepted.

    _dynamic_keys: tuple = ()

    def _identity(self) -> dict:
        """Configuration a state must match to be restored (default: the
        constructor arguments shown by ``repr``)."""
        return dict(self._config)

    def _get_dynamic(self) -> dict:
        return {}

    def _check_dynamic(self, state: dict, who: str) -> dict:
        """Validate the dynamic entries of ``state``; return the values to set."""
        return {}

    def _set_dynamic(self, values: dict):
        pass

    def get_state(self) -> dict:
        """The task's dynamic state (buffer / cursor / curriculum ``T``) as a
        small flat dict of numpy arrays and Python scalars, tagged with the
        class name (``"task"``) and configuration (``"config.<name>"``).

        The dict is a snapshot (later streaming does not change it) and
        survives ``np.savez(f, **state)`` / ``dict(np.load(f))`` and pickle.
        ``set_state`` restores it.
        """
        state = {"task": type(self).__name__}
        for k, v in self._identity().items():
            state["config." + k] = v
        state.update(self._get_dynamic())
        return state

    def set_state(self, state):
        """Restore a state from :meth:`get_state` of a task of the same class
        and configuration (a fork's state goes into the same fork of an equal
        task).  Raises ``ValueError`` naming what differs (class,
        configuration item, missing / unknown / malformed entry) and leaves
        the task untouched in that case; ``TypeError`` if ``state`` is not a
        mapping."""
        cls = type(self).__name__
        who = f"{cls}.set_state"
        if not isinstance(state, Mapping):
            raise TypeError(f"{who}: state must be a dict from get_state(), "
                            f"got {type(state).__name__}")
        state = dict(state)
        if "task" not in state:
            raise ValueError(f"{who}: not a task state (no 'task' entry); "
                             f"pass the dict returned by get_state()")
        theirs = _state_scalar(state["task"], "task", who)
        if theirs != cls:
            raise ValueError(f"{who}: the state is from a {theirs} task, not a {cls}")
        want = {"config." + k: v for k, v in self._identity().items()}
        given = {k for k in state if k.startswith("config.")}
        diffs = [f"{k[7:]} is missing from the state" for k in want if k not in state]
        diffs += [f"{k[7:]} is not a configuration item of {cls}"
                  for k in sorted(given - set(want))]
        for k, v in want.items():
            if k in state:
                got = _state_scalar(state[k], k, who)
                if got != v:
                    diffs.append(f"{k[7:]}: state has {got!r}, this task has {v!r}")
        if diffs:
            raise ValueError(f"{who}: the state is from a different configuration of "
                             f"{cls} ({'; '.join(diffs)}); build the task with the same "
                             f"arguments (see repr) before restoring")
        known = {"task"} | set(want) | set(self._dynamic_keys)
        unknown = sorted(set(state) - known)
        if unknown:
            raise ValueError(f"{who}: unknown state entries {unknown}; {cls} states "
                             f"have {sorted(known)}")
        missing = [k for k in self._dynamic_keys if k not in state]
        if missing:
            raise ValueError(f"{who}: state entries {missing} are missing")
        self._set_dynamic(self._check_dynamic(state, who))

    # -- batching --------------------------------------------------------------

    def fork(self, i: int, n: int) -> Task:
        """The ``i``-th of ``n`` independent streams (``0 <= i < n``) for
        batched training: a new, reset task of the same configuration that
        shares no mutable state with ``self`` or the other forks.

        For generated tasks every fork is the same fresh stream; the streams
        differ because the caller passes them different generator draws.
        :class:`CharLM` overrides the start of each fork.
        """
        who = f"{type(self).__name__}.fork"
        n = _check_int(n, "n", who, lo=1)
        i = _check_int(i, "i", who, lo=0)
        if i >= n:
            raise ValueError(f"{who}: need 0 <= i < n, got i={i}, n={n}")
        new = _copy.copy(self)  # immutable data is shared; buffers are replaced below
        object.__setattr__(new, "_config", dict(self._config))
        new._fork_setup(i, n)
        new.reset()
        return new

    def _fork_setup(self, i: int, n: int):
        """Adjust a fresh shallow copy to be fork ``i`` of ``n`` (before reset)."""


class _SymbolStream(Task):
    """A character stream made of generated lines; target = next character.

    Subclasses define ``vocab`` (a str, one character per class) and
    ``_line(rng)`` returning the next line as an int64 array of class ids
    (ending with the line break).  The state is the buffer of generated but
    not yet consumed symbols; its first element is the next input symbol.
    """

    vocab: str = ""

    def _init_stream(self):
        self._nl = self.vocab.index("\n")
        self.reset()

    _dynamic_keys = ("buf",)

    def reset(self):
        """Back to the start of the stream (the virtual line break)."""
        self._buf = np.array([self._nl], dtype=np.int64)

    def _get_dynamic(self):
        return {"buf": self._buf.copy()}

    def _check_dynamic(self, state, who):
        buf = _state_array(state, "buf", who, "i", 0, self.n_in)
        if buf.shape[0] < 1:
            raise ValueError(f"{who}: state entry 'buf' is empty; it always holds at "
                             f"least the next input symbol")
        return {"buf": buf}

    def _set_dynamic(self, values):
        self._buf = values["buf"]

    def _line(self, rng) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def stream(self, T, rng=None):
        who = f"{type(self).__name__}.stream"
        T = _check_T(T, who)
        buf = self._buf
        # Check a given rng even when the buffer suffices, so that a bad
        # argument fails on every call, not only on those that generate.
        if rng is not None or buf.shape[0] < T + 1:
            rng = _check_rng(rng, who)
        if buf.shape[0] < T + 1:
            parts, have = [buf], buf.shape[0]
            while have < T + 1:
                line = self._line(rng)
                parts.append(line)
                have += line.shape[0]
            buf = np.concatenate(parts)
        xs = _one_hot(buf[:T], self.n_in)
        ys = buf[1 : T + 1].copy()
        self._buf = buf[T:].copy()
        return xs, ys

    def encode(self, text: str) -> np.ndarray:
        """Class ids of the characters of ``text`` (ValueError if unknown)."""
        try:
            return np.array([self.vocab.index(c) for c in text], dtype=np.int64)
        except ValueError:
            bad = sorted(set(text) - set(self.vocab))
            raise ValueError(
                f"{type(self).__name__}.encode: characters {bad!r} not in vocab {self.vocab!r}"
            ) from None

    def decode(self, ids) -> str:
        """The string spelled by class ids (or by one-hot rows)."""
        a = np.asarray(ids)
        if a.ndim == 2:
            a = a.argmax(axis=1)
        return "".join(self.vocab[int(i)] for i in a)


# ----------------------------------------------------------------------------
# 1. influence balancing (Tallec & Ollivier 2017, Sec. 4)
# ----------------------------------------------------------------------------


class InfluenceBalancing(Task):
    r"""Influence balancing, Tallec & Ollivier (2017), Sec. 4, eqs. (8)-(9).

    The paper's system is a linear recurrence with one scalar parameter
    :math:`\theta`::

        s_{t+1} = A s_t + theta * b,      b = (+1,...,+1, -1,...,-1)^T
        l_t     = 1/2 (s_t^1 - 1)^2        (loss on the shallowest unit s^1)

    * ``A`` is n x n with ``A[i,i] = 1/2``, ``A[i,i+1] = 1/2``, 0 elsewhere
      (:meth:`matrix_A`): the influence of theta on unit i+m reaches unit i
      after m steps.
    * ``b`` has ``p`` positive entries first (shallow units) and ``n - p``
      negative entries (deep units) (:meth:`sign_vector`).
    * For every start point the state converges to ``B theta b`` with
      ``B = (I - A)^{-1}``, ``B[i,j] = 2`` for ``j >= i`` and 0 elsewhere
      (:meth:`matrix_B`), so at equilibrium
      ``d s^1 / d theta = 4p - 2n`` (:attr:`dequilibrium_dtheta`).
      The short-term influence is positive (``d s^1_1/d theta = b_1 = +1``)
      while the long-term one is negative when ``n_minus > n/2``: truncated
      gradients get the wrong sign.
    * The paper's experiment (Fig. 3a) uses **n = 23 units with 13 minus
      signs**, i.e. ``n_minus = 13`` and ``p = 10`` positive entries, giving
      ``4p - 2n = -6``; Fig. 1 uses 5 units with 3 minus.

    Stream: the system has no external input; the task supplies the constant
    drive ``x_t = [1.0]`` (so the cell is ``s_{t+1} = A s_t + theta b x_t``)
    and the constant target ``y_t = [target]`` (1.0 in the paper) for the
    output ``s^1`` of the state produced at that step
    (:meth:`readout_vector` gives the 1 x n output map ``C = e_1^T``).
    ``n_in = n_out = 1``, ``loss = "mse"``; the paper's per-step loss is
    ``1/2 (s^1 - 1)^2`` and :meth:`to_unit` is the identity.

    ``optimum = 0``: with ``theta* = target / (4p - 2n)`` (:attr:`theta_star`,
    -1/6 for the paper's setup) the equilibrium output equals the target, so
    the long-run mean loss tends to 0.

    Args:
        n: number of units (paper: 23).
        n_minus: number of negative-theta entries (paper: 13).
        p: alternatively the number of positive entries (the paper's ``p``);
            if given, ``n_minus = n - p`` (must agree with ``n_minus`` if both
            are given explicitly).
        target: target value of ``s^1`` (paper: 1.0).
    """

    loss = "mse"
    unit = "mse"
    optimum = 0.0

    def __init__(self, n: int = 23, n_minus: int | None = None, p: int | None = None,
                 target: float = 1.0):
        who = "InfluenceBalancing"
        n = _check_int(n, "n", who, lo=1)
        if p is not None:
            p = _check_int(p, "p", who, lo=0)
            if p > n:
                raise ValueError(f"{who}: p={p} positive entries exceed n={n}")
            if n_minus is not None and n_minus != n - p:
                raise ValueError(
                    f"{who}: inconsistent p={p} and n_minus={n_minus} for n={n} "
                    f"(need p + n_minus == n)"
                )
            n_minus = n - p
        elif n_minus is None:
            # Paper default (n=23 with 13 minus signs); for other n keep the
            # same proportion of minus signs, rounded up (5 units -> 3 minus).
            n_minus = 13 if n == 23 else int(math.ceil(n * 13 / 23))
        n_minus = _check_int(n_minus, "n_minus", who, lo=0)
        if n_minus > n:
            raise ValueError(f"{who}: n_minus={n_minus} exceeds n={n}")
        self.n = n
        self.n_minus = n_minus
        self.p = n - n_minus
        self.target = float(target)
        self.n_in = 1
        self.n_out = 1
        self.output_index = 0
        self.dequilibrium_dtheta = 4 * self.p - 2 * n
        self.theta_star = (
            self.target / self.dequilibrium_dtheta if self.dequilibrium_dtheta != 0 else None
        )
        if self.dequilibrium_dtheta >= 0 and n > 1:
            warnings.warn(
                f"{who}(n={n}, n_minus={n_minus}): the long-term influence of theta "
                f"(4p - 2n = {self.dequilibrium_dtheta}) is not negative, so there is no "
                f"influence to balance; the paper uses n=23 with 13 MINUS signs "
                f"(n_minus=13, i.e. p=10 positive)",
                stacklevel=2,
            )
        self._freeze(n=n, n_minus=n_minus, target=self.target)

    def matrix_A(self) -> np.ndarray:
        """The fixed n x n matrix A: 1/2 on the diagonal and superdiagonal."""
        A = 0.5 * np.eye(self.n)
        A[np.arange(self.n - 1), np.arange(1, self.n)] = 0.5
        return A

    def matrix_B(self) -> np.ndarray:
        """``B = (I - A)^{-1}``: 2 on and above the diagonal, 0 below."""
        return 2.0 * np.triu(np.ones((self.n, self.n)))

    def sign_vector(self) -> np.ndarray:
        """``b``: ``p`` entries +1 (shallow units) then ``n - p`` entries -1."""
        return np.concatenate([np.ones(self.p), -np.ones(self.n_minus)])

    def readout_vector(self) -> np.ndarray:
        """Output map ``C`` (shape 1 x n): the output is ``y = C s = s^1``."""
        C = np.zeros((1, self.n))
        C[0, self.output_index] = 1.0
        return C

    def simulate(self, theta: float, T: int, s0=None):
        """Reference roll-out: states ``s_1..s_T`` (T x n) and the paper's
        losses ``1/2 (s_t^1 - target)^2`` (T,), from ``s0`` (default 0)."""
        T = _check_T(T, "InfluenceBalancing.simulate")
        A, drive = self.matrix_A(), float(theta) * self.sign_vector()
        s = np.zeros(self.n) if s0 is None else np.array(s0, dtype=np.float64)
        states = np.empty((T, self.n))
        for t in range(T):
            s = A @ s + drive
            states[t] = s
        losses = 0.5 * (states[:, self.output_index] - self.target) ** 2
        return states, losses

    def stream(self, T, rng=None):
        """Constant drive ``xs = 1`` (T x 1) and target ``ys = target`` (T x 1).

        The stream is stateless and ``rng`` is not used.
        """
        T = _check_T(T, "InfluenceBalancing.stream")
        return np.ones((T, 1)), np.full((T, 1), self.target)


# ----------------------------------------------------------------------------
# 2. distant brackets (Tallec & Ollivier 2017, Sec. 4)
# ----------------------------------------------------------------------------


class DistantBrackets(_SymbolStream):
    r"""Distant brackets dataset (s, k, a) of Tallec & Ollivier (2017), Sec. 4.

    Each line is: a left bracket, ``s`` random characters from an alphabet of
    size ``a``, a right bracket, ``k`` random characters from the same
    alphabet, a left bracket, the *same* ``s`` characters again, a right
    bracket and a line break (paper Fig. 2a, (s,k,a) = (1,5,10))::

        [a]eecbe[a]
        [j]fbfjd[j]

    All characters are i.i.d. uniform over the alphabet (letters a, b, c, ...).
    A line has ``2s + k + 5`` characters.  Vocabulary: ``"\n[]"`` followed by
    the ``a`` letters, so ``n_in = n_out = a + 3``.

    ``optimum`` (bits/char) is the paper's entropy rate
    ``(s + k) log2(a) / (2s + k + 5)``: the only uncertain characters are the
    ``s + k`` fresh random ones (log2 a bits each); brackets, line breaks and
    the repeated ``s`` characters are determined by the past.  Example:
    (1, 5, 10) -> 6 log2(10) / 12 = 1.661 bpc.  ``optimum_no_memory =
    (2s + k) log2(a) / (2s + k + 5)`` is the rate of a predictor that knows
    the format but cannot remember the bracketed characters over ``k + 2``
    steps (the "memoryless optimum" the paper mentions for TBPTT-4).

    Note: the caption of the paper's Fig. 3b says "(1, 5, 5, 10)", four
    numbers; we take this to be a typo for the three-parameter (1, 5, 10)
    task of Fig. 2a.
    """

    def __init__(self, s: int = 1, k: int = 5, a: int = 10):
        who = "DistantBrackets"
        s = _check_int(s, "s", who, lo=1)
        k = _check_int(k, "k", who, lo=0)
        a = _check_int(a, "a", who, lo=1)
        if a > len(_ALPHABET):
            raise ValueError(f"{who}: alphabet size a={a} exceeds {len(_ALPHABET)}")
        self.s, self.k, self.a = s, k, a
        self.vocab = "\n[]" + _ALPHABET[:a]
        self.n_in = self.n_out = len(self.vocab)
        self.line_length = 2 * s + k + 5
        self.optimum = (s + k) * math.log2(a) / self.line_length
        self.optimum_no_memory = (2 * s + k) * math.log2(a) / self.line_length
        self._lb, self._rb = 1, 2
        self._init_stream()
        self._freeze(s=s, k=k, a=a)

    def _line(self, rng):
        s, k = self.s, self.k
        r = rng.integers(0, self.a, size=s + k) + 3
        line = np.empty(self.line_length, dtype=np.int64)
        line[0] = self._lb
        line[1 : 1 + s] = r[:s]
        line[1 + s] = self._rb
        line[2 + s : 2 + s + k] = r[s:]
        line[2 + s + k] = self._lb
        line[3 + s + k : 3 + 2 * s + k] = r[:s]
        line[3 + 2 * s + k] = self._rb
        line[4 + 2 * s + k] = self._nl
        return line


# ----------------------------------------------------------------------------
# 3. a^n b^n (Tallec & Ollivier 2017, Sec. 4)
# ----------------------------------------------------------------------------


class AnBn(_SymbolStream):
    r"""The a^n b^n(k, l) dataset of Tallec & Ollivier (2017), Sec. 4.

    Repeatedly draw ``n`` uniformly from {k, ..., l} (inclusive), and output
    ``n`` a's, a line break, ``n`` b's and a line break (paper Fig. 2b)::

        aaaaaa
        bbbbbb

    Vocabulary ``"\nab"`` (``n_in = n_out = 3``).  ``k >= 1`` is required so
    that every line is non-empty.

    ``optimum`` (bits/char) is the exact entropy rate of the character
    process.  The only randomness is ``n``: by the chain rule the bits an
    optimal predictor spends on the run of a's (deciding after each ``a``
    between another ``a`` and the line break) sum to ``H(n)`` per period, and
    the b's and line breaks are then determined.  By the renewal-reward
    theorem the rate is ``H(n) / E[2n + 2] = log2(l - k + 1) / (k + l + 2)``.
    For (1, 32): ``5 / 35 = 1/7 = 0.142857...`` bpc, the "0.14" of the paper.
    (The paper prints ``log2(k - l + 1)``, an evident typo for
    ``log2(l - k + 1)``.)  ``optimum_no_counting = 2 H(n) / (k + l + 2)``
    (0.2857 for (1, 32)) is the rate of a model that knows the distribution
    of ``n`` but not that the numbers of a's and b's coincide.
    """

    def __init__(self, k: int = 1, l: int = 32):  # noqa: E741 - paper's name
        who = "AnBn"
        k = _check_int(k, "k", who, lo=1)
        l = _check_int(l, "l", who, lo=1)  # noqa: E741
        if l < k:
            raise ValueError(f"{who}: need k <= l, got k={k}, l={l}")
        self.k, self.l = k, l
        self.vocab = "\nab"
        self.n_in = self.n_out = 3
        p = np.full(l - k + 1, 1.0 / (l - k + 1))
        ns = np.arange(k, l + 1)
        h_n = float(-(p * np.log2(p)).sum())  # entropy of n, bits
        mean_len = float((p * (2 * ns + 2)).sum())  # chars per period
        self.entropy_n_bits = h_n
        self.mean_period = mean_len
        self.optimum = h_n / mean_len
        self.optimum_no_counting = 2.0 * h_n / mean_len
        self._init_stream()
        self._freeze(k=k, l=l)

    def _line(self, rng):
        n = int(rng.integers(self.k, self.l + 1))
        line = np.empty(2 * n + 2, dtype=np.int64)
        line[:n] = 1
        line[n] = self._nl
        line[n + 1 : 2 * n + 1] = 2
        line[2 * n + 1] = self._nl
        return line


# ----------------------------------------------------------------------------
# 4. copy task with curriculum (Mujika et al. 2018, Sec. 5.1)
# ----------------------------------------------------------------------------


class Copy(Task):
    r"""Copy task with curriculum, Mujika et al. (2018), Sec. 5.1.

    A random string of length ``L`` over ``n_symbols`` symbols (binary in the
    paper) is presented one symbol per step; then the network must reproduce
    it "without any further information".  Our encoding of one sequence
    (the paper's Fig. 1b is not available as text, so this is our
    interpretation, in the style of its "input / output" pairs)::

        step     0 .. L-1        L .. 2L-1
        input    b_1 ... b_L     #  ...  #        (# = marker / blank)
        target   #  ...  #       b_1 ... b_L
        weight   0  ...  0       1  ...  1

    e.g. with L = 5: input ``01101#####``, target ``#####01101``.  The first
    marker signals the end of the string; later markers carry no information.
    Inputs are one-hot over ``n_symbols + 1`` classes (symbols then marker),
    targets are classes over the same ``n_symbols + 1`` (the marker is the
    target while the string is being read), so ``n_in = n_out = n_symbols +
    1``.  Only the copy steps are scored: use :meth:`stream_weighted`
    (``w = 1`` on the copy part); :meth:`stream` returns all steps.

    Curriculum (paper): start with ``T = T_start = 1``; each sequence length
    is drawn uniformly from ``[max(1, T - spread), T]`` (``spread = 5``);
    whenever the error on the scored steps drops *strictly* below
    ``threshold = 0.15`` bits/char, ``T`` increases by one:
    call :meth:`report` with the measured mean bits/char on scored steps.
    Sequences already generated (buffered) keep their length.  With
    ``curriculum=False`` ``T`` stays fixed (e.g. DODGE's copy task with
    ``Copy(curriculum=False, T_start=25, spread=0)``).  The paper resets the
    hidden state after each sequence: :meth:`stream_weighted` can return the
    sequence starts (``return_starts=True``), and :meth:`sequence` draws one
    whole fresh sequence.  :meth:`get_state` includes the current ``T``;
    :meth:`fork` gives a reset copy (``T = T_start``, empty buffer), so ``n``
    forks that hear the same :meth:`report` calls keep the same ``T``.

    ``optimum = 0`` bits/char: the targets are a deterministic function of
    the inputs seen so far.
    """

    weighted = True
    _mutable = frozenset({"T"})

    def __init__(self, curriculum: bool = True, n_symbols: int = 2, T_start: int = 1,
                 spread: int = 5, threshold: float = 0.15):
        who = "Copy"
        n_symbols = _check_int(n_symbols, "n_symbols", who, lo=2)
        if n_symbols > 36:
            raise ValueError(f"{who}: n_symbols={n_symbols} exceeds 36")
        self.curriculum = bool(curriculum)
        self.n_symbols = n_symbols
        self.T_start = _check_int(T_start, "T_start", who, lo=1)
        self.spread = _check_int(spread, "spread", who, lo=0)
        self.threshold = float(threshold)
        self.marker = n_symbols
        self.vocab = (string.digits + string.ascii_lowercase)[:n_symbols] + "#"
        self.n_in = self.n_out = n_symbols + 1
        self.optimum = 0.0
        self.T = self.T_start
        self.reset()
        self._freeze(curriculum=self.curriculum, n_symbols=n_symbols, T_start=self.T_start,
                     spread=self.spread, threshold=self.threshold)

    def __repr__(self):
        return super().__repr__()[:-1] + f"; T={self.T})"

    _dynamic_keys = ("T", "buf_inp", "buf_tgt", "buf_w", "buf_starts")

    def reset(self):
        """Back to ``T = T_start`` with an empty buffer."""
        self.T = self.T_start
        self._buf = [np.zeros(0, np.int64), np.zeros(0, np.int64),
                     np.zeros(0, np.float64), np.zeros(0, bool)]

    def _get_dynamic(self):
        inp, tgt, w, starts = (b.copy() for b in self._buf)
        return {"T": int(self.T), "buf_inp": inp, "buf_tgt": tgt, "buf_w": w,
                "buf_starts": starts}

    def _check_dynamic(self, state, who):
        T = _state_int(state, "T", who, lo=1)
        buf = [_state_array(state, "buf_inp", who, "i", 0, self.n_in),
               _state_array(state, "buf_tgt", who, "i", 0, self.n_out),
               _state_array(state, "buf_w", who, "f"),
               _state_array(state, "buf_starts", who, "b")]
        if len({b.shape[0] for b in buf}) != 1:
            raise ValueError(f"{who}: the buffer entries have different lengths "
                             f"{[b.shape[0] for b in buf]}")
        if not np.isin(buf[2], (0.0, 1.0)).all():
            raise ValueError(f"{who}: state entry 'buf_w' must hold only 0 and 1")
        return {"T": T, "buf": buf}

    def _set_dynamic(self, values):
        self.T = values["T"]
        self._buf = values["buf"]

    @property
    def length_range(self) -> tuple[int, int]:
        """Inclusive range of sequence lengths ``L`` at the current ``T``."""
        return max(1, self.T - self.spread), self.T

    def report(self, mean_bits_on_scored_steps: float) -> bool:
        """Feed back the error (bits/char on scored steps); advance ``T`` by
        one if it is strictly below ``threshold`` and the curriculum is on.
        Returns whether ``T`` advanced."""
        if self.curriculum and float(mean_bits_on_scored_steps) < self.threshold:
            self.T = self.T + 1
            return True
        return False

    def _sequence_ids(self, rng):
        lo, hi = self.length_range
        L = int(rng.integers(lo, hi + 1))
        bits = rng.integers(0, self.n_symbols, size=L)
        mark = np.full(L, self.marker, dtype=np.int64)
        inp = np.concatenate([bits, mark])
        tgt = np.concatenate([mark, bits])
        w = np.concatenate([np.zeros(L), np.ones(L)])
        starts = np.zeros(2 * L, dtype=bool)
        starts[0] = True
        return inp, tgt, w, starts

    def sequence(self, rng):
        """One whole fresh sequence at the current ``T`` (does not touch the
        stream buffer): ``(xs, ys, w)`` with ``2L`` steps."""
        inp, tgt, w, _ = self._sequence_ids(_check_rng(rng, "Copy.sequence"))
        return _one_hot(inp, self.n_in), tgt, w

    def stream_weighted(self, T, rng=None, return_starts: bool = False):
        """Next ``T`` steps of the stream of concatenated sequences:
        ``(xs, ys, w)``, plus ``starts`` (bool (T,), True at the first step of
        each sequence, where the paper resets the hidden state) if
        ``return_starts``."""
        who = "Copy.stream_weighted"
        T = _check_T(T, who)
        buf = self._buf
        if rng is not None or buf[0].shape[0] < T:
            rng = _check_rng(rng, who)
        if buf[0].shape[0] < T:
            parts = [[b] for b in buf]
            have = buf[0].shape[0]
            while have < T:
                seq = self._sequence_ids(rng)
                for lst, a in zip(parts, seq):
                    lst.append(a)
                have += seq[0].shape[0]
            buf = [np.concatenate(lst) for lst in parts]
        inp, tgt, w, starts = (b[:T].copy() for b in buf)
        self._buf = [b[T:].copy() for b in buf]
        out = (_one_hot(inp, self.n_in), tgt, w)
        return out + (starts,) if return_starts else out

    def stream(self, T, rng=None):
        """All steps of the stream (targets on unscored steps are the marker)."""
        xs, ys, _ = self.stream_weighted(T, rng)
        return xs, ys

    def decode(self, ids) -> str:
        a = np.asarray(ids)
        if a.ndim == 2:
            a = a.argmax(axis=1)
        return "".join(self.vocab[int(i)] for i in a)


# ----------------------------------------------------------------------------
# 5. character-level language modelling on a text file
# ----------------------------------------------------------------------------


def data_dir():
    """Where the example text files are: ``$RGRAPH_DATA_DIR``, else ``shared/data`` next
    to the repository (``../shared/data`` from its root). May not exist: callers fall
    back to synthetic text."""
    from pathlib import Path
    env = os.environ.get("RGRAPH_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _read_text(path, who: str) -> str:
    p = os.fspath(path)
    hint = ("pass the path of an existing, readable UTF-8 text file "
            f"(e.g. {data_dir() / 'tinyshakespeare.txt'}), or the text itself "
            "(a str containing a newline, or is_text=True / CharLM.from_text)")
    if not os.path.exists(p):
        raise ValueError(f"{who}: text file {p!r} not found; {hint}")
    if os.path.isdir(p):
        raise ValueError(f"{who}: {p!r} is a directory, not a text file; {hint}")
    try:
        with open(p, "r", encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{who}: {p!r} is not valid UTF-8 text ({e}); {hint}") from None
    except OSError as e:
        raise ValueError(f"{who}: cannot read {p!r} ({e.strerror or e}); {hint}") from None


def _ptb_char_to_text(raw: str, src: str) -> str:
    """Undo the ptb.char.* format: one character per space-separated token,
    ``_`` for word boundaries, one sentence per line (kept as ``\\n``)."""
    lines = []
    for i, line in enumerate(raw.splitlines()):
        toks = line.split()
        if any(len(t) != 1 for t in toks):
            raise ValueError(
                f"CharLM: {src!r} line {i + 1} is not in ptb.char format "
                f"(space-separated single characters); pass ptb_char=False"
            )
        lines.append("".join(toks))
    return "\n".join(lines) + "\n"


class CharLM(Task):
    r"""Character-level language modelling on any text (file or string).

    Next-character prediction as in Tallec & Ollivier (2017) and Mujika et
    al. (2018), Sec. 5.2: input ``onehot(c_t)``, target ``c_{t+1}``.

    * The vocabulary ``vocab`` is the sorted unique characters of the whole
      text (training and validation), ``n_in = n_out = len(vocab)``.
    * The text is split into the first ``1 - valid_fraction`` (training) and
      the last ``valid_fraction`` (validation), rounded to whole characters.
    * :meth:`stream` walks the training split cyclically from a cursor
      (initially ``start``): step ``t`` has input ``train[i]`` and target
      ``train[(i + 1) % n_train]`` (the last character predicts the first
      one when wrapping).  ``rng`` is not used.  :meth:`reset` moves the
      cursor back to ``start``.
    * :meth:`valid` returns the validation split as ``(xs, ys)`` in which
      every validation character is a target once: the first input is the
      last training character.  With a separate ``valid_source`` the
      validation text is that whole text, with inputs ``v[:-1]`` and targets
      ``v[1:]``.

    ``path_or_text``: an ``os.PathLike`` is a path; a ``str`` containing a
    newline is the text itself, any other ``str`` is a path (override with
    ``is_text``).  ``ptb_char``: decode the ``ptb.char.*`` format
    (space-separated characters, ``_`` between words); ``None`` (default)
    turns it on when the file name starts with ``ptb.char``; the ``_``
    word separators are kept as characters (the usual ptb.char vocabulary).
    Unreadable, missing, empty or too short input raises ``ValueError``
    naming the source and what to do.  ``optimum`` is None (unknown).

    :meth:`get_state` holds only the cursor (plus the configuration, the
    vocabulary, the split sizes and a checksum of the text, which
    :meth:`set_state` checks); :meth:`fork` ``(i, n)`` starts stream ``i``
    at ``start + i * n_train // n`` (modulo ``n_train``), so ``n`` forks
    read evenly spaced parts of the training split.  Forks share the
    (read-only) encoded text.
    """

    def __init__(self, path_or_text, valid_fraction: float = 0.1, *, start: int = 0,
                 is_text: bool | None = None, ptb_char: bool | None = None,
                 valid_source=None):
        who = "CharLM"
        text, src = self._load(path_or_text, is_text, ptb_char, who)
        vf = float(valid_fraction)
        if not (0.0 <= vf < 1.0):
            raise ValueError(f"{who}: valid_fraction must be in [0, 1), got {valid_fraction!r}")
        if not text:
            raise ValueError(f"{who}: {src} is empty; pass a non-empty text file or text")
        vtext = None
        if valid_source is not None:
            vtext, vsrc = self._load(valid_source, None, ptb_char, who)
            if len(vtext) < 2:
                raise ValueError(f"{who}: validation text {vsrc} has {len(vtext)} characters; "
                                 f"need at least 2")
            vf = 0.0
        self.source = src
        self.valid_fraction = vf
        self.vocab = "".join(sorted(set(text) | set(vtext or "")))
        self.n_in = self.n_out = len(self.vocab)
        self._index = {c: i for i, c in enumerate(self.vocab)}
        ids = self.encode(text)
        n = ids.shape[0]
        n_valid = int(round(vf * n))
        n_train = n - n_valid
        if n_train < 2 or (vf > 0 and n_valid < 1):
            raise ValueError(
                f"{who}: {src} has only {n} characters, too short for "
                f"valid_fraction={vf}: need at least 2 training and 1 validation "
                f"characters; use a longer text or a smaller valid_fraction (0 allowed)"
            )
        self._ids = ids
        self.n_train = n_train
        if vtext is not None:
            v = self.encode(vtext)
            self._valid_in, self._valid_out = v[:-1], v[1:]
        else:
            self._valid_in, self._valid_out = ids[n_train - 1 : n - 1], ids[n_train:]
        self.n_valid = int(self._valid_out.shape[0])
        for a in (self._ids, self._valid_in, self._valid_out):
            a.setflags(write=False)  # shared by forks: never written
        self._checksum = None
        self.start = _check_int(start, "start", who, lo=0) % n_train
        self.reset()
        self._freeze(source=src, valid_fraction=vf, start=self.start)

    @classmethod
    def from_text(cls, text: str, valid_fraction: float = 0.1, **kwargs) -> "CharLM":
        """Build from a literal string (even one without a newline)."""
        return cls(text, valid_fraction, is_text=True, **kwargs)

    @staticmethod
    def _load(path_or_text, is_text, ptb_char, who):
        if isinstance(path_or_text, os.PathLike):
            if is_text:
                raise ValueError(f"{who}: is_text=True but got a path object {path_or_text!r}")
            is_text = False
        elif isinstance(path_or_text, str):
            if is_text is None:
                is_text = "\n" in path_or_text
        else:
            raise TypeError(f"{who}: path_or_text must be a str or os.PathLike, "
                            f"got {type(path_or_text).__name__}")
        if is_text:
            text, src, name = path_or_text, f"<text of {len(path_or_text)} chars>", ""
        else:
            text = _read_text(path_or_text, who)
            src = os.fspath(path_or_text)
            name = os.path.basename(src)
        if ptb_char is None:
            ptb_char = name.startswith("ptb.char")
        if ptb_char and text:
            text = _ptb_char_to_text(text, src)
        return text, src

    @property
    def cursor(self) -> int:
        """Position in the training split of the next input character."""
        return self._cursor

    def reset(self):
        """Move the cursor back to ``start``."""
        self._cursor = self.start

    _dynamic_keys = ("cursor",)

    @property
    def checksum(self) -> int:
        """CRC-32 of the encoded training and validation text (with the
        vocabulary and sizes it identifies the data in :meth:`get_state`)."""
        if self._checksum is None:
            c = zlib.crc32(self.vocab.encode("utf-8"))
            for a in (self._ids, self._valid_in, self._valid_out):
                c = zlib.crc32(np.ascontiguousarray(a, dtype=np.int64).tobytes(), c)
            self._checksum = c
        return self._checksum

    def _identity(self):
        # The data is identified by its content, not by ``source``: a
        # checkpoint survives moving the text file (or passing it as text).
        return {"valid_fraction": self.valid_fraction, "start": self.start,
                "n_train": self.n_train, "n_valid": self.n_valid,
                "vocab": self.vocab, "checksum": self.checksum}

    def _get_dynamic(self):
        return {"cursor": int(self._cursor)}

    def _check_dynamic(self, state, who):
        return {"cursor": _state_int(state, "cursor", who, 0, self.n_train)}

    def _set_dynamic(self, values):
        self._cursor = values["cursor"]

    def _fork_setup(self, i, n):
        start = (self.start + i * self.n_train // n) % self.n_train
        object.__setattr__(self, "start", start)
        self._config["start"] = start

    def stream(self, T, rng=None):
        T = _check_T(T, "CharLM.stream")
        n = self.n_train
        idx = (self._cursor + np.arange(T)) % n
        xs = _one_hot(self._ids[idx], self.n_in)
        ys = self._ids[(idx + 1) % n].copy()
        self._cursor = int((self._cursor + T) % n)
        return xs, ys

    def valid(self, T: int | None = None):
        """Validation split (or its first ``T`` steps) as ``(xs, ys)``."""
        m = self.n_valid if T is None else min(_check_T(T, "CharLM.valid"), self.n_valid)
        return _one_hot(self._valid_in[:m], self.n_in), self._valid_out[:m].copy()

    def train_ids(self) -> np.ndarray:
        """The training split as class ids."""
        return self._ids[: self.n_train].copy()

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as e:
            raise ValueError(f"CharLM.encode: character {e.args[0]!r} "
                             "not in the vocabulary") from None

    def decode(self, ids) -> str:
        a = np.asarray(ids)
        if a.ndim == 2:
            a = a.argmax(axis=1)
        return "".join(self.vocab[int(i)] for i in a)


# ----------------------------------------------------------------------------
# 6. registry
# ----------------------------------------------------------------------------

TASKS = {
    "influence": InfluenceBalancing,
    "brackets": DistantBrackets,
    "anbn": AnBn,
    "copy": Copy,
    "charlm": CharLM,
}


def make_task(name: str, **kwargs) -> Task:
    """Build the task registered under ``name`` with constructor ``kwargs``."""
    key = str(name).strip().lower()
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    cls = TASKS[key]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise TypeError(f"make_task({key!r}): bad arguments for "
                        f"{cls.__name__}{inspect.signature(cls)}: {e}") from None
    return cls(**kwargs)
