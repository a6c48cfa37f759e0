"""Code printers, one module per target: ``numba`` (scalar loops, jitted, cached on disk)
and ``numpy`` (array expressions, no compilation; the readable reference). A backend is
registered by its line in ``BACKENDS`` (name -> class); the compiled-code cache finds
entries' backends there."""
from __future__ import annotations

from rgraph import cache

from .base import Backend
from .numba_backend import NumbaBackend
from .numpy_backend import NumpyBackend

BACKENDS = {"numba": NumbaBackend, "numpy": NumpyBackend}
cache.use_backends(BACKENDS)


def get_backend(name) -> Backend:
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]()


__all__ = ["Backend", "BACKENDS", "get_backend", "NumbaBackend", "NumpyBackend"]
