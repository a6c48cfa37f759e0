"""Streaming task generators for online training of recurrent networks.

This module provides the data side of the online-learning experiments of
Tallec & Ollivier (2017, UORO), Mujika et al. (2018, KF-RTRL) and Silver et
al. (2022, DODGE).  Every task is an infinite stream consumed a chunk at a
time by an online learner (RTRL, UORO, KF-RTRL, truncated BPTT, ...).  It is
pure numpy and imports nothing else from ``rgraph``.

One module per task: ``influence`` (:class:`InfluenceBalancing`),
``brackets`` (:class:`DistantBrackets`), ``anbn`` (:class:`AnBn`),
``copy_task`` (:class:`Copy`), ``charlm`` (:class:`CharLM`, ``data_dir``);
``base`` holds the :class:`Task` base class, the symbol-stream base and the
argument and state checks they share.

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
``defaults``
    How the paper the task comes from trains it (a :class:`PaperDefaults`: the
    optimizer, learning rate and schedule, batch, resets, and what the paper
    reports, with the source); ``rgraph train`` and ``rgraph sweep`` use it
    unless told otherwise.
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

Registry (this module): ``TASKS`` maps the names ``"influence"``,
``"brackets"``, ``"anbn"``, ``"copy"``, ``"charlm"`` to the classes;
``make_task(name, **kwargs)`` builds one.  A new task is a module here with
its class, and one line in ``TASKS``.
"""
from __future__ import annotations

import inspect

from .anbn import AnBn
from .base import PaperDefaults, Task
from .brackets import DistantBrackets
from .charlm import CharLM, data_dir, example_text
from .copy_task import Copy
from .influence import InfluenceBalancing

__all__ = [
    "Task",
    "PaperDefaults",
    "InfluenceBalancing",
    "DistantBrackets",
    "AnBn",
    "Copy",
    "CharLM",
    "data_dir",
    "example_text",
    "TASKS",
    "make_task",
]

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
