"""Checkpoints on disk: a trainer's ``state_dict``, pickled, written atomically.

The dict itself (what a run must keep to continue number for number) is the trainer's
business (``Trainer.state_dict``); this module only knows the file.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

from ..errors import DataError

CHECKPOINT_VERSION = 1


def write_checkpoint(path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (a crash mid-write leaves the old file)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return path


def read_checkpoint(path) -> dict:
    """The dict written by ``write_checkpoint`` (a trusted file: it is a pickle)."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise DataError(f"cannot read checkpoint {str(path)!r}: {e}") from None
