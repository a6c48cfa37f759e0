"""Character-level language modelling on any text file or string."""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from .base import PaperDefaults, Task, check_int, check_T, one_hot, state_int


def data_dir():
    """Where the example text files are: ``$RGRAPH_DATA_DIR``, else ``shared/data`` next
    to the repository (``../shared/data`` from its root). May not exist: callers fall
    back to synthetic text."""
    env = os.environ.get("RGRAPH_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


TINYSHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                       "tinyshakespeare/input.txt")


def example_text() -> str:
    """Where to find a text to train on: the example file where it exists (see
    ``data_dir``), else how to get one. Never names a path that does not exist."""
    path = data_dir() / "tinyshakespeare.txt"
    if path.is_file():
        return f"e.g. {path}"
    return (f"any UTF-8 text file works; for the papers' text, download {TINYSHAKESPEARE_URL}"
            f" and pass its path (or save it as tinyshakespeare.txt in a folder named by "
            f"$RGRAPH_DATA_DIR)")


def _read_text(path, who: str) -> str:
    p = os.fspath(path)
    hint = (f"pass the path of an existing, readable UTF-8 text file ({example_text()}), "
            "or the text itself (a str containing a newline, or is_text=True / "
            "CharLM.from_text)")
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

    ``defaults``: Mujika et al.'s Penn TreeBank training (Sec. 5.2): that of the copy
    task (Adam, constant rate, batch 256), and the state reset to zero with
    probability 0.01 per step.
    """

    defaults = PaperDefaults(
        source="Mujika et al. (2018), Sec. 5.2, Penn TreeBank characters",
        optimizer="adam", lr=1e-3, decay=0.0, batch=256, reset_prob=0.01,
        evaluation="validation bits/char (Table 1, RHN-256): KF-RTRL 1.77, UORO 2.63, "
                   "TBPTT-5 1.64; rgraph sweep's valid_loss is on the validation split",
        notes="the paper picks each estimator's best lr of {10^-2.5, 10^-3, 10^-3.5, "
              "10^-4} without saying which; 10^-3 is rgraph's (best for KF-RTRL and "
              "UORO in examples/charlm.py's sweep)")

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
        self.start = check_int(start, "start", who, lo=0) % n_train
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
        return {"cursor": state_int(state, "cursor", who, 0, self.n_train)}

    def _set_dynamic(self, values):
        self._cursor = values["cursor"]

    def _fork_setup(self, i, n):
        start = (self.start + i * self.n_train // n) % self.n_train
        object.__setattr__(self, "start", start)
        self._config["start"] = start

    def stream(self, T, rng=None):
        T = check_T(T, "CharLM.stream")
        n = self.n_train
        idx = (self._cursor + np.arange(T)) % n
        xs = one_hot(self._ids[idx], self.n_in)
        ys = self._ids[(idx + 1) % n].copy()
        self._cursor = int((self._cursor + T) % n)
        return xs, ys

    def valid(self, T: int | None = None):
        """Validation split (or its first ``T`` steps) as ``(xs, ys)``."""
        m = self.n_valid if T is None else min(check_T(T, "CharLM.valid"), self.n_valid)
        return one_hot(self._valid_in[:m], self.n_in), self._valid_out[:m].copy()

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
