"""Memory an estimator needs, known before it is allocated.

Every figure comes from the buffers the estimator's spec declares, the same
declarations the generated module and ``Estimator.new_state`` allocate from:

* per stream: the cell state (``Layout.n_state``) and the estimator state
  (``spec.state_layout()``; a "K" dimension is a segment: TBPTT's window, UORO-T's
  transition, BPTT's whole sequence);
* once per process: the scratch buffers the estimator's templates read
  (``spec.used_scratch()``: what ``est_scratch`` allocates), the parameters, their
  gradient and the optimizer's moments.

So an estimator added to ``estimators/`` is covered as soon as it declares its buffers.
``check_fits`` refuses, in one line with the figure, a configuration that would not fit
in the memory this machine has available (``available_memory``), unless forced.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import MemoryRefused
from .training.optim import state_size


def _floats(shape, K: int = 1) -> int:
    return int(np.prod([K if d == "K" else d for d in shape], dtype=np.int64))


@dataclass(frozen=True)
class Memory:
    """One estimator's buffers, in floats (``itemsize`` bytes each).

    ``stream``: name -> floats each stream keeps whatever the segment length;
    ``stream_per_k``: name -> floats per step of a segment (a "K" dimension);
    ``shared``: name -> floats allocated once (scratch, parameters, optimizer);
    ``K``: the segment length, None where it is the sequence's (BPTT)."""

    estimator: str
    itemsize: int
    stream: dict
    stream_per_k: dict
    shared: dict
    K: int | None

    def per_stream(self, K: int | None = None) -> int:
        """Bytes each stream keeps (for a segment of K steps where it has one)."""
        K = self.K if K is None else K
        per_k = sum(self.stream_per_k.values())
        if per_k and K is None:
            raise ValueError(f"{self.estimator}: the memory per stream depends on the "
                             f"sequence length; pass K")
        return self.itemsize * (sum(self.stream.values()) + (K or 0) * per_k)

    def shared_bytes(self) -> int:
        """Bytes allocated once, whatever the batch."""
        return self.itemsize * sum(self.shared.values())

    def total(self, batch: int = 1, K: int | None = None) -> int:
        """Bytes a run of ``batch`` streams needs."""
        return self.shared_bytes() + batch * self.per_stream(K)

    def largest(self) -> tuple[str, int]:
        """(name, bytes) of the largest buffer (a segment's at K = 1)."""
        every = {**self.stream, **self.stream_per_k, **self.shared}
        name = max(every, key=every.get)
        return name, self.itemsize * every[name]

    def describe_stream(self) -> str:
        """'12.3 kB' or, for a segment of the sequence's length, '1.2 kB + 96 B/step'."""
        if self.stream_per_k and self.K is None:
            return (f"{nbytes(self.itemsize * sum(self.stream.values()))} + "
                    f"{nbytes(self.itemsize * sum(self.stream_per_k.values()))}/step")
        return nbytes(self.per_stream())


def memory(spec, dtype="float64", K: int | None = None, batch_step: bool = True) -> Memory:
    """The memory of an estimator spec (``est.spec``), from its declared buffers.
    ``K``: the segment length where the spec's depends on the run (BPTT);
    ``batch_step``: the module steps several streams at once where the spec can (a
    compiled backend), with a row of scratch per stream."""
    lay = spec.lay
    state = spec.state_layout()
    stream = {"cell state": lay.n_state}
    stream.update({n: _floats(s) for n, s in state.items() if "K" not in s})
    per_k = {n: _floats(s) for n, s in state.items() if "K" in s}
    if per_k and K is None:
        try:
            K = spec.segment_length(None)
        except ValueError:          # the whole sequence (bptt, dodge without a window)
            K = None
    if batch_step:      # a batch step's scratch has a row per stream
        batch = spec.batch_scratch_layout()
        stream.update({f"{n} (batch step)": _floats(batch[n])
                       for n in spec.used_scratch(batch=True) if batch[n] is not None})
    layout = spec.scratch_layout()
    shared = {n: _floats(layout[n]) for n in spec.used_scratch()}
    P = lay.n_params
    shared.update({"parameters": P, "gradient": P, "optimizer moments": state_size(P)})
    return Memory(spec.describe(), np.dtype(dtype).itemsize, stream, per_k, shared,
                  K if per_k else None)


def nbytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def available_memory() -> int | None:
    """Bytes this machine can still give a process: MemAvailable from /proc/meminfo,
    else free physical pages (os.sysconf); None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(mem: Memory, batch: int, cell: str, K: int | None = None,
               force: bool = False, fix: str = "force_memory=True") -> None:
    """Refuse (``MemoryRefused``, one line with the figures) a run of ``batch`` streams
    that needs more than the available memory. ``force`` skips the check; where the
    available memory cannot be read, nothing is checked."""
    if force:
        return
    have = available_memory()
    if have is None:
        return
    K = K if K is not None else (mem.K if mem.K is not None else 1)
    need = mem.total(batch, K)
    if need <= have:
        return
    big, big_bytes = mem.largest()
    raise MemoryRefused(
        f"{mem.estimator} on cell '{cell}' needs {nbytes(need)} "
        f"({nbytes(mem.per_stream(K))} per stream x batch {batch} + "
        f"{nbytes(mem.shared_bytes())} shared; largest buffer {big}: {nbytes(big_bytes)}) "
        f"but this machine has {nbytes(have)} available; use a smaller cell, batch or "
        f"another estimator (uoro, kf-rtrl keep O(n) per stream), or pass {fix} to try "
        f"anyway")


__all__ = ["Memory", "memory", "available_memory", "check_fits", "nbytes"]
