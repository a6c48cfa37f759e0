"""The estimator registry: each name maps to its spec (``base.EstimatorSpec``), or to a
function choosing one from the options (``uoro`` with T > 1 is UORO-T; ``dodge`` with
``directions="candidate"`` is DODGE along a candidate direction; ``base.chooser``).

A spec says which kernels it composes and which template functions implement it; the
module builder checks the templates against the generated module (names, kernel
arities), resolves their static choices and unpacks their state and scratch (see
``base``). A generated module's loop (``rgraph.training.loop``) calls its
``est_step(th, s, E, x, y, w, g, rng, W)`` every step, and ``est_flush`` /
``est_reset`` where the spec has them.

A spec also declares what the rest of rgraph reads about it: its options, the argument
its name takes in brackets, other spellings, its flop model, and the instances the
families table shows. Adding an estimator is its file and one line in ``ESTIMATORS``
(or, outside the package, one ``register`` call): ``rg.compile``, the name grammar,
``Analysis.report``'s families table and the command line's options follow.
"""
from __future__ import annotations

import re

from ..errors import NotApplicable
from . import names
from .base import EstimatorSpec, Option
from .dodge import dodge
from .exact import BPTT, RTRL, TBPTT
from .kfrtrl import KFRTRL
from .names import parse_estimator
from .ok import OK
from .snap import RFLO, EProp, LayerRTRL, SnAp
from .uoro import ProjectedUORO, uoro

# name -> the spec class (or a chooser), in the order of the families table
ESTIMATORS = {
    "rtrl": RTRL,
    "bptt": BPTT,
    "tbptt": TBPTT,
    "uoro": uoro,
    "projected-uoro": ProjectedUORO,
    "kf-rtrl": KFRTRL,
    "ok": OK,
    "snap": SnAp,
    "e-prop": EProp,
    "rflo": RFLO,
    "layer-rtrl": LayerRTRL,
    "dodge": dodge,
}
_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def _specs(entry) -> tuple:
    """The spec classes an entry builds (itself, or a chooser's)."""
    return getattr(entry, "specs", (entry,))


def _declared(name: str, entry) -> None:
    """Check what ``entry`` declares, and enter its argument and aliases in the name
    grammar; ValueError or TypeError saying what is missing."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"estimator name {name!r}: use lower-case letters, digits and "
                         f"single hyphens ('my-estimator')")
    for spec in _specs(entry):
        if not (isinstance(spec, type) and issubclass(spec, EstimatorSpec)):
            raise TypeError(f"estimator {name!r}: {spec!r} is not an EstimatorSpec subclass "
                            f"(or a function declared with estimators.base.chooser)")
        if spec.flops is EstimatorSpec.flops:
            raise TypeError(f"estimator {name!r}: {spec.__name__} declares no flop model; "
                            f"define its flops() (flops per online step)")
    options = getattr(entry, "options", ())
    if not all(isinstance(o, Option) for o in options):
        raise TypeError(f"estimator {name!r}: options must be estimators.base.Option")
    arg = entry.argument
    if arg is not None and arg.option not in {o.name for o in options}:
        raise ValueError(f"estimator {name!r}: its bracketed argument sets {arg.option!r}, "
                         f"which is not one of its options")
    for alias in entry.aliases:
        owner = names.ALIASES.get(alias, name)
        if owner != name or alias in ESTIMATORS:
            raise ValueError(f"estimator {name!r}: the spelling {alias!r} is taken")
    flags = {}
    for other, e in ESTIMATORS.items():
        for o in e.options if other != name else ():
            flags[o.cli_flag] = (other, o)
    for o in options:
        if o.read is not None and o.cli_flag in flags:
            other, known_ = flags[o.cli_flag]
            if (known_.read, known_.choices) != (o.read, o.choices):
                raise ValueError(f"estimator {name!r}: option {o.name!r} ({o.cli_flag}) is "
                                 f"read differently from {other}'s; name it differently "
                                 f"(Option(flag=...))")
    if arg is not None:
        names.ARGUMENTS[name] = arg
    names.ALIASES.update({a: name for a in entry.aliases})


def register(name: str, entry) -> None:
    """Add an estimator: ``register("my-est", MySpec)``, with ``MySpec`` an
    ``EstimatorSpec`` subclass declaring its options and flops (or a function declared
    with ``base.chooser``). It then compiles by name, appears in the families table and
    takes its options on the command line."""
    if name in ESTIMATORS:
        raise ValueError(f"estimator {name!r} is registered already")
    _declared(name, entry)
    ESTIMATORS[name] = entry


def unregister(name: str) -> None:
    """Remove an estimator ``register`` added (and its argument and aliases)."""
    entry = ESTIMATORS.pop(name)
    names.ARGUMENTS.pop(name, None)
    for alias in entry.aliases:
        names.ALIASES.pop(alias, None)


for _name, _entry in ESTIMATORS.items():
    _declared(_name, _entry)


def known(name: str) -> str:
    """The registry key of an estimator name ("tbptt(16)" -> "tbptt"); ValueError, one
    line, for a malformed name or one the registry does not know."""
    key, _ = parse_estimator(name)
    if key not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of "
                         f"{', '.join(sorted(ESTIMATORS))}")
    return key


def shown() -> list[str]:
    """The estimator instances the families table lists, in registry order."""
    return [s for key, entry in ESTIMATORS.items() for s in (entry.shown or (key,))]


def command_line_options() -> list[tuple[Option, str]]:
    """Each option a command line can give (``read`` set), once per flag, with its
    help: the estimators that take it, each with its own text ("uoro, projected-uoro:
    rank-one pairs, averaged; ok: Kronecker pairs per input group")."""
    by_flag: dict[str, tuple[Option, dict]] = {}
    for key, entry in ESTIMATORS.items():
        for o in entry.options:
            if o.read is None:
                continue
            first, helps = by_flag.setdefault(o.cli_flag, (o, {}))
            helps.setdefault(o.help, []).append(key)
    return [(o, "; ".join(f"{', '.join(keys)}: {text}" for text, keys in helps.items()))
            for o, helps in by_flag.values()]


def make_spec(name: str, lay, sched, analysis, **opts) -> EstimatorSpec:
    """The spec for ``name`` ("uoro", "kf-rtrl", "tbptt(16)",
    "projected-uoro[preactivation]", ...: the grammar of ``names``) on one cell, with
    ``opts`` added to the options the name carries."""
    if isinstance(name, EstimatorSpec):
        return name
    key = known(name)
    _, named = parse_estimator(name)
    twice = sorted(set(named) & set(opts))
    if twice:
        raise ValueError(f"estimator {name!r}: {twice[0]!r} is given both in the name and "
                         f"as an option; give it once")
    try:
        return ESTIMATORS[key](lay, sched, analysis, **{**named, **opts})
    except TypeError as e:
        raise TypeError(f"estimator {key!r}: {e}") from None


__all__ = ["ESTIMATORS", "EstimatorSpec", "Option", "known", "make_spec", "register",
           "unregister", "shown", "command_line_options", "NotApplicable"]
