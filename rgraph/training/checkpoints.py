"""Checkpoints on disk: a trainer's ``state_dict`` in one ``.npz`` file, written
atomically, that loading never executes.

The arrays go in the archive as they are; everything else (numbers, strings, the random
generators' states, nested dicts, lists and tuples) goes in one JSON document stored in
it as a string, with the schema version, the rgraph version and a SHA-256 checksum of
the arrays. Loading uses ``np.load(allow_pickle=False)`` and ``json``: a file from
someone else cannot run code. A pickle (an old ``checkpoint.pkl``, or a crafted file) is
refused with a one-line reason. The dict itself (what a run must keep to continue number
for number) is the trainer's business (``Trainer.state_dict``).
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib.metadata import version
from pathlib import Path

import numpy as np

from ..errors import DataError

CHECKPOINT_VERSION = 2          # 2: npz + JSON (1 was a pickle)
_META = "__checkpoint__"


def write_checkpoint(path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (a crash mid-write leaves the old file)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    doc = {"schema": CHECKPOINT_VERSION, "rgraph": version("rgraph"),
           "state": _encode(state, arrays, "state")}
    doc["sha256"] = arrays_sha256(arrays)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays, **{_META: np.array(json.dumps(doc))})
    os.replace(tmp, path)
    return path


def read_checkpoint(path) -> dict:
    """The dict written by ``write_checkpoint``; never unpickles anything."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise DataError(f"cannot read checkpoint {str(path)!r}: {e.strerror or e}") from None
    if head[:1] == b"\x80":
        raise DataError(f"checkpoint {str(path)!r} is a pickle (an old checkpoint or one made "
                        f"elsewhere); rgraph does not load pickles, because loading one can "
                        f"run arbitrary code: start the run again")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
        doc = json.loads(str(files.pop(_META)))
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{str(path)!r} is not an rgraph checkpoint ({e})") from None
    if doc.get("schema") != CHECKPOINT_VERSION:
        raise DataError(f"checkpoint {str(path)!r} has schema {doc.get('schema')!r}; this "
                        f"rgraph reads schema {CHECKPOINT_VERSION}")
    if doc.get("sha256") != arrays_sha256(files):
        raise DataError(f"checkpoint {str(path)!r} is corrupted: its arrays do not match "
                        f"their checksum")
    return _decode(doc["state"], files)


def _encode(x, arrays, where):
    """JSON-able form of x; arrays are moved to ``arrays`` and referred to by key."""
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            raise DataError(f"checkpoint: {where} is an object array; only numbers can be "
                            f"stored")
        key = f"a{len(arrays)}"
        arrays[key] = x
        return {"__array__": key}
    if isinstance(x, dict):
        bad = [k for k in x if not isinstance(k, str)]
        if bad:
            raise DataError(f"checkpoint: {where} has non-string keys {bad[:3]}")
        return {"__dict__": {k: _encode(v, arrays, f"{where}.{k}") for k, v in x.items()}}
    if isinstance(x, (list, tuple)):
        items = [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(x)]
        return {"__tuple__": items} if isinstance(x, tuple) else items
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise DataError(f"checkpoint: cannot store {where} of type {type(x).__name__}")


def _decode(x, arrays):
    if isinstance(x, list):
        return [_decode(v, arrays) for v in x]
    if isinstance(x, dict):
        if "__array__" in x:
            return arrays[x["__array__"]]
        if "__tuple__" in x:
            return tuple(_decode(v, arrays) for v in x["__tuple__"])
        return {k: _decode(v, arrays) for k, v in x["__dict__"].items()}
    return x


def arrays_sha256(arrays: dict) -> str:
    """SHA-256 over named arrays (sorted by name): each one's name, dtype, shape and
    bytes in C order."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()
