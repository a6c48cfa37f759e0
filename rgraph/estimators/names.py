"""Estimator names: the one grammar ``rg.compile``, ``rg.variance``, ``rgraph bench`` and
the command line all read.

    uoro, kf-rtrl, rtrl, bptt, dodge, ...   a registered name (``ESTIMATORS``)
    tbptt(16)                               the truncation length k
    snap(2), snap-2                         SnAp's level n
    ok(4)                                   OK's rank r
    projected-uoro[preactivation]           the projection: a space ("state",
    projected-uoro[h_new,c_new]             "preactivation", "parameter") or node names

The name is case-insensitive and ``_`` reads as ``-`` (``KF_RTRL`` is ``kf-rtrl``);
node names are kept as written. Whether the name is registered is the registry's
check (``make_spec``); this module knows only the syntax. Which names take a bracketed
argument, and the other spellings of names, are the estimators' own declarations: the
registry (``rgraph.estimators``) enters them in ``ARGUMENTS`` and ``ALIASES``.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Argument:
    """The option an estimator's name carries in brackets: its bracket ("(" or "["), the
    option it sets, how its text is read, and the form (for messages)."""
    bracket: str
    option: str
    read: Callable[[str], object]
    form: str


def _positive(what):
    def read(text: str) -> int:
        if not re.fullmatch(r"\s*\d+\s*", text) or int(text) < 1:
            raise ValueError(f"the {what} {text!r} is not a positive integer")
        return int(text)
    return read


parse_truncation = _positive("truncation length")      # tbptt's K


def parse_projection(text: str):
    """A projection as written in a name or on the command line: a space kind
    ("preactivation") or one node name as a string, several comma-separated node names
    as a list."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise ValueError(f"the projection {text!r} has an empty entry")
    return items[0] if len(items) == 1 else items


parse_level = _positive("level")                       # snap's N
parse_rank = _positive("rank")                         # ok's R

# registered name -> the Argument its name takes, and other spelling -> registered name
# (the registry's entries)
ARGUMENTS: dict[str, Argument] = {}
ALIASES: dict[str, str] = {}
_CLOSE = {"(": ")", "[": "]"}
_SNAP_LEVEL = re.compile(r"snap-(\d+)")
_NAME = re.compile(r"([A-Za-z][\w-]*)\s*(?:\((.*)\)|\[(.*)\])?", re.DOTALL)


def parse_estimator(name) -> tuple[str, dict]:
    """``"tbptt(16)"`` -> ``("tbptt", {"k": 16})``; ``"projected-uoro[h_new,c_new]"``
    -> ``("projected-uoro", {"projection": ["h_new", "c_new"]})``; ``"UORO"`` ->
    ``("uoro", {})``. Raises ValueError saying what is wrong with a malformed name."""
    if not isinstance(name, str):
        raise TypeError(f"estimator must be a name such as 'uoro' or 'tbptt(16)', got "
                        f"{type(name).__name__}")
    m = _NAME.fullmatch(name.strip())
    if m is None:
        raise ValueError(f"estimator name {name!r} is not understood: write a name "
                         f"(uoro, kf-rtrl, ...), tbptt(K) or projected-uoro[SPACE or NODES]")
    key = m.group(1).lower().replace("_", "-")
    key = ALIASES.get(key, key)
    bracket, arg = ("(", m.group(2)) if m.group(2) is not None else ("[", m.group(3))
    level = _SNAP_LEVEL.fullmatch(key)
    if level and arg is None:       # snap-2: snap at level 2
        try:
            return "snap", {"level": parse_level(level.group(1))}
        except ValueError as e:
            raise ValueError(f"estimator {name!r}: {e}; write snap-N or snap(N)") from None
    if arg is None:
        return key, {}
    if key not in ARGUMENTS or ARGUMENTS[key].bracket != bracket:
        forms = " and ".join(a.form.split(",")[0] for a in ARGUMENTS.values())
        raise ValueError(f"estimator {name!r}: {key} takes no {bracket}...{_CLOSE[bracket]} "
                         f"in its name (only {forms} do); pass its options as keywords")
    a = ARGUMENTS[key]
    try:
        return key, {a.option: a.read(arg)}
    except ValueError as e:
        raise ValueError(f"estimator {name!r}: {e}; write {a.form}") from None


def split_estimators(text: str, sep: str = ",") -> list[str]:
    """Estimator names separated by ``sep``, where a separator inside (...) or [...]
    belongs to the name: ``"uoro,projected-uoro[h_new,c_new]"`` -> two names."""
    names, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"estimators {text!r}: unbalanced {ch!r}")
        elif ch == sep and depth == 0:
            names.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"estimators {text!r}: an opening bracket is never closed")
    names.append(text[start:])
    return [n.strip() for n in names if n.strip()]
