"""A sweep's grid and its records.

A sweep run's config is a run's ``RunConfig`` (``rgraph.run``) as JSON, less the
run-folder options (``FOLDER_ONLY``) and the version, plus ``valid_steps``: the length
of the held-out stream its validation loss is measured on. Its run id hashes that
config's canonical JSON, so the same run always has the same id and record,
``DIR/records/<run-id>.json``, written atomically by the driver.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from ..run import RunConfig

RECORDS = "records"
# rgraph train's options that manage its run folder: a sweep run has no folder
FOLDER_ONLY = ("checkpoint_every", "full_curve")
DEFAULT_VALID_STEPS = 10_000


class SweepError(ValueError):
    """Bad input to a sweep (a grid, a seed range, a scheduler): one line for the user."""


# ------------------------------------------------------------------ the grid
def parse_seeds(text) -> list[int]:
    """"0-7" -> [0, ..., 7]; "3" -> [3]; "0-3,8,10-11"; an int or a list passes."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        seeds = list(text)
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0
                   for s in seeds) or not seeds:
            raise SweepError(f"seeds must be non-negative integers, got {text!r}")
        return _unique([int(s) for s in seeds], "seed")
    seeds = []
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise SweepError(f"bad seed range {text!r}: write A-B (e.g. 0-7), or seeds "
                             f"separated by commas") from None
        if a < 0 or b < a:
            raise SweepError(f"bad seed range {part!r} in {text!r}: write A-B with "
                             f"0 <= A <= B")
        seeds.extend(range(a, b + 1))
    return _unique(seeds, "seed")


def parse_values(text, kind, name) -> list:
    """"16,32" -> [16, 32] (kind int: sizes >= 1; kind float: > 0); a number or a list
    passes."""
    items = text.split(",") if isinstance(text, str) else \
        (list(text) if isinstance(text, (list, tuple, range)) else [text])
    out = []
    for item in items:
        try:
            if kind is int:
                val = float(item) if isinstance(item, str) else item
                if isinstance(val, bool) or float(val) != int(val):
                    raise ValueError
                val = int(val)
            else:
                val = float(item)
        except (TypeError, ValueError):
            raise SweepError(f"--{name} {text!r}: {str(item).strip()!r} is not "
                             f"{'an integer' if kind is int else 'a number'}") from None
        if not val > 0 or (kind is float and not math.isfinite(val)):
            raise SweepError(f"--{name} {text!r}: every value must be > 0, got {val}")
        out.append(val)
    return _unique(out, name)


def _unique(values, name):
    if len(set(values)) != len(values):
        dup = sorted({v for v in values if values.count(v) > 1})
        raise SweepError(f"{name} {', '.join(map(str, dup))} given twice")
    return values


def parse_estimators(names) -> list[str]:
    """Estimator names ("uoro,tbptt(16)" or a list); an unknown or malformed one fails
    here, before anything runs."""
    from ..estimators import known
    from ..estimators.names import split_estimators
    names = split_estimators(names, ",") if isinstance(names, str) else list(names)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise SweepError("no estimator given (e.g. --estimators uoro,tbptt(16))")
    for n in names:
        try:
            known(n)
        except (TypeError, ValueError) as e:
            raise SweepError(str(e)) from None
    return _unique(names, "estimator")


def grid(base: dict, estimators, seeds, hidden=None, lr=None) -> list[dict]:
    """One config per (estimator, hidden, lr, seed), in that order of nesting: ``base``
    (a run's config, as ``rgraph train`` builds it) with the four set."""
    hidden = [base["hidden"]] if hidden is None else hidden
    lr = [base["lr"]] if lr is None else lr
    return [{**base, "estimator": e, "hidden": n, "lr": r, "seed": s}
            for e in estimators for n in hidden for r in lr for s in seeds]


def canonical(cfg: dict) -> str:
    """The config as canonical JSON (sorted keys, no spaces): what the run id hashes."""
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def run_id(cfg: dict) -> str:
    """A stable id of a run: the first 16 hex digits of SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical(cfg).encode()).hexdigest()[:16]


def group_id(cfg: dict) -> str:
    """The id of the config a run belongs to over seeds (its config without the seed)."""
    return run_id({k: v for k, v in cfg.items() if k != "seed"})


def sweep_config(run: RunConfig, valid_steps: int) -> dict:
    """A sweep run's config: the run's, less the version and the run-folder options, plus
    the length of the held-out stream its validation loss is measured on."""
    if isinstance(valid_steps, bool) or not isinstance(valid_steps, int) or valid_steps < 1:
        raise SweepError(f"--valid-steps must be an integer >= 1, got {valid_steps!r}")
    cfg = {k: v for k, v in run.to_dict().items() if k not in ("version", *FOLDER_ONLY)}
    cfg["valid_steps"] = valid_steps
    return cfg


def run_config_of(cfg: dict) -> RunConfig:
    """The ``RunConfig`` of a sweep run's config (its ``valid_steps`` aside)."""
    return RunConfig.from_dict({k: v for k, v in cfg.items() if k != "valid_steps"})


# ------------------------------------------------------------------- records
def records_dir(out) -> Path:
    return Path(out) / RECORDS


def write_record(out, rec: dict) -> Path:
    """``out/records/<id>.json``, written atomically: a temporary file beside it, then
    ``os.replace``; a reader sees the old file or the whole new one, never a part."""
    d = records_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{rec['id']}.json"
    tmp = d / f".{rec['id']}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(rec, indent=1, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_records(out) -> dict:
    """{run id: record} of every record under ``out/records`` whose id is the hash of
    its config (a file that is not such a record is reported and ignored)."""
    found = {}
    d = records_dir(out)
    if not d.is_dir():
        return found
    for path in sorted(d.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            ok = rec["id"] == path.stem == run_id(rec["config"])
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            print(f"rgraph sweep: ignoring {path}: not a record of this sweep format",
                  file=sys.stderr)
            continue
        found[rec["id"]] = rec
    return found
