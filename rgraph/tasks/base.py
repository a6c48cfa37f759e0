"""What every task shares: the ``Task`` base class (read-only configuration, unit
conversion, checkpoint state, forks), the symbol-stream base of the character tasks,
and the checks of arguments and of restored states. The interface is described in the
package docstring (``rgraph.tasks``).
"""
from __future__ import annotations

import copy as _copy
import math
import string
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

LN2 = math.log(2.0)


def check_rng(rng, who: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{who}: rng must be a numpy.random.Generator "
            f"(e.g. numpy.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


def check_T(T, who: str) -> int:
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)):
        raise TypeError(f"{who}: T must be a non-negative int, got {T!r}")
    T = int(T)
    if T < 0:
        raise ValueError(f"{who}: T must be a non-negative int, got {T}")
    return T


def check_int(value, name: str, who: str, lo: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{who}: {name} must be an int, got {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{who}: {name} must be >= {lo}, got {value}")
    return value


def state_scalar(value, key: str, who: str):
    """A Python scalar from a state entry (a scalar or a 0-d array, e.g. after
    ``np.load``)."""
    a = np.asarray(value)
    if a.ndim != 0 or a.dtype == object:
        raise ValueError(f"{who}: state entry {key!r} must be a scalar, got {value!r}")
    return a.item()


def state_int(state: dict, key: str, who: str, lo: int, hi: int | None = None) -> int:
    """An int state entry in ``[lo, hi)``."""
    v = state_scalar(state[key], key, who)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v >= hi):
        rng_txt = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        raise ValueError(f"{who}: state entry {key!r} must be an int {rng_txt}, got {v!r}")
    return v


def state_array(state: dict, key: str, who: str, kind: str, lo=None, hi=None) -> np.ndarray:
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


def one_hot(ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    out = np.zeros((ids.shape[0], n), dtype=np.float64)
    out[np.arange(ids.shape[0]), ids] = 1.0
    return out


@dataclass(frozen=True)
class PaperDefaults:
    """How the paper a task comes from trains it: the optimizer, its learning rate and
    schedule, the batch and the state resets that ``rgraph train`` and ``rgraph sweep``
    use for the task unless told otherwise, and what the paper reports (``evaluation``).

    The schedule is the papers' ``lr / (1 + decay sqrt(t))`` with ``t`` counted in
    steps of one stream (characters, for the text tasks), as Tallec & Ollivier count it;
    a run converts it to the optimizer's updates for its estimator (TBPTT-16 updates
    once per 16 steps, so its decay per update is ``decay * 4``). ``notes`` says which
    values the paper does not give, and where rgraph's choice comes from instead.
    """

    source: str             # the paper and section
    optimizer: str = "adam"
    lr: float = 1e-3
    decay: float = 0.0      # per sqrt(step); 0: a constant learning rate
    batch: int = 1
    reset_prob: float = 0.0
    evaluation: str = ""    # what the paper reports, and how rgraph measures it
    notes: str = ""

    def settings(self) -> dict:
        """The run options these defaults set, by their ``RunConfig`` names."""
        return {"optimizer": self.optimizer, "lr": self.lr, "decay": self.decay,
                "batch": self.batch, "reset_prob": self.reset_prob}

    def summary(self) -> str:
        """One line: the settings, as a command line would give them."""
        sched = (f"{self.lr:g}/(1+{self.decay:g}√t), t in steps" if self.decay
                 else f"{self.lr:g} constant")
        line = f"{self.optimizer.capitalize() if self.optimizer != 'sgd' else 'SGD'} " \
            f"{sched}, batch {self.batch}"
        if self.reset_prob:
            line += f", state reset with probability {self.reset_prob:g} per step"
        return line


# Symbols used to print the random alphabets of the synthetic tasks.
ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits


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
    defaults: PaperDefaults | None = None   # how the task's paper trains it
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
        theirs = state_scalar(state["task"], "task", who)
        if theirs != cls:
            raise ValueError(f"{who}: the state is from a {theirs} task, not a {cls}")
        want = {"config." + k: v for k, v in self._identity().items()}
        given = {k for k in state if k.startswith("config.")}
        diffs = [f"{k[7:]} is missing from the state" for k in want if k not in state]
        diffs += [f"{k[7:]} is not a configuration item of {cls}"
                  for k in sorted(given - set(want))]
        for k, v in want.items():
            if k in state:
                got = state_scalar(state[k], k, who)
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
        n = check_int(n, "n", who, lo=1)
        i = check_int(i, "i", who, lo=0)
        if i >= n:
            raise ValueError(f"{who}: need 0 <= i < n, got i={i}, n={n}")
        new = _copy.copy(self)  # immutable data is shared; buffers are replaced below
        object.__setattr__(new, "_config", dict(self._config))
        new._fork_setup(i, n)
        new.reset()
        return new

    def _fork_setup(self, i: int, n: int):
        """Adjust a fresh shallow copy to be fork ``i`` of ``n`` (before reset)."""


class SymbolStream(Task):
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
        buf = state_array(state, "buf", who, "i", 0, self.n_in)
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
        T = check_T(T, who)
        buf = self._buf
        # Check a given rng even when the buffer suffices, so that a bad
        # argument fails on every call, not only on those that generate.
        if rng is not None or buf.shape[0] < T + 1:
            rng = check_rng(rng, who)
        if buf.shape[0] < T + 1:
            parts, have = [buf], buf.shape[0]
            while have < T + 1:
                line = self._line(rng)
                parts.append(line)
                have += line.shape[0]
            buf = np.concatenate(parts)
        xs = one_hot(buf[:T], self.n_in)
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
