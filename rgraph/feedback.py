"""What a compile tells the user, and several modules compiled at once.

**Never silent.** A module whose compiled code the cache lacks says so on stderr while
it compiles (the backend's loader wraps its compile in ``compiling``)::

    compiling uoro for 'lstm' (n=32, batch path) …
    compiled uoro for 'lstm' (n=32, batch path) in 9.4 s

In a terminal the first line counts the seconds in place and becomes the second (one
line per module; modules compiling at once each keep a line, redrawn together); off a
terminal (a file, a pipe, pytest's capture) both lines are printed as they are. A
module the cache holds prints nothing. ``RGRAPH_QUIET=1`` (any value but ``0``,
``false``, ``no`` or empty) silences the lines.

**Ctrl-C.** The process compiling (a child: ``rgraph.backends.numba_loader``) is
killed, the live lines are erased and ``KeyboardInterrupt`` goes on up: ``rgraph``'s
commands print one line and exit with status 130. The cache keeps no half-compiled
code (compiled files without a record are removed: ``rgraph.cache``).

**Many modules at once.** ``parallel(jobs)`` runs compiles in threads, each waiting on
its own child process, up to the cores this process may use (``cores()``), or
``$RGRAPH_COMPILE_JOBS`` at a time where set (1: one after the other); the cache's
per-entry locks keep two compiles of one module from overlapping.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all

ENV_QUIET = "RGRAPH_QUIET"
ENV_JOBS = "RGRAPH_COMPILE_JOBS"
TICK_S = 0.2                  # a terminal's live lines are redrawn this often
SPINNER = "|/-\\"


def quiet() -> bool:
    """Whether ``$RGRAPH_QUIET`` silences the compile lines (read at each compile)."""
    return os.environ.get(ENV_QUIET, "").strip().lower() not in ("", "0", "false", "no")


def cores() -> int:
    """The CPUs this process may run on (its affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def compile_jobs() -> int:
    """How many modules ``parallel`` compiles at once: ``$RGRAPH_COMPILE_JOBS``, else
    ``cores()``."""
    v = os.environ.get(ENV_JOBS, "").strip()
    if not v:
        return cores()
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV_JOBS}={v!r} is not a number of compiles at once: give a "
                         f"whole number >= 1, or unset it (the cores, {cores()})")
    return n


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _printable(text: str, stream) -> str:
    """``text`` with "…" written "..." where the stream's encoding lacks it."""
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return text.replace("…", "...")
    return text


class _Line:
    """One module's compile: what it is, when it began, and how it ended."""

    def __init__(self, what: str):
        self.what, self.t0 = what, time.perf_counter()
        self.seconds: float | None = None       # set when done
        self.failed = False
        self.dropped = False                    # erased by Ctrl-C: prints nothing more

    def start_text(self) -> str:
        return f"compiling {self.what} …"

    def live_text(self, tick: int) -> str:
        return f"{self.start_text()} {time.perf_counter() - self.t0:.0f} s " \
               f"{SPINNER[tick % len(SPINNER)]}"

    def end_text(self) -> str:
        if self.failed:
            return f"compiling {self.what} failed after {self.seconds:.1f} s"
        return f"compiled {self.what} in {self.seconds:.1f} s"


class _Board:
    """The compile lines of this process on stderr. In a terminal, the lines of the
    compiles going on form a block the cursor sits below, redrawn in place every
    ``TICK_S`` by a ticker thread; the block ends (its lines stay) when the last of
    them is done. Off a terminal, each line is printed once, when it happens."""

    def __init__(self):
        self.lock = threading.RLock()
        self.active: set = set()       # the compiles going on
        self.block: list[_Line] = []   # terminal: the lines drawn, top to bottom
        self.stream = None             # where the block is drawn
        self.ticks = 0
        self.ticker: threading.Thread | None = None

    def _write(self, stream, text: str):
        try:
            stream.write(_printable(text, stream))
            stream.flush()
        except (OSError, ValueError):    # a closed or broken stderr: say nothing
            pass

    def start(self, what: str) -> _Line:
        line = _Line(what)
        with self.lock:
            self.active.add(line)
            stream = sys.stderr
            if not _isatty(stream):
                self._write(stream, line.start_text() + "\n")
                return line
            if self.block and stream is not self.stream:
                self.block = []          # stderr was replaced: a new block there
            self.stream = stream
            self.block.append(line)
            self._draw(new=1)
            if self.ticker is None:
                self.ticker = threading.Thread(target=self._tick, daemon=True,
                                               name="rgraph-compile-lines")
                self.ticker.start()
        return line

    def finish(self, line: _Line, failed: bool = False):
        with self.lock:
            if line.dropped:
                return
            self.active.discard(line)
            line.seconds, line.failed = time.perf_counter() - line.t0, failed
            if line not in self.block:       # off a terminal
                self._write(sys.stderr, line.end_text() + "\n")
                return
            self._draw()
            if all(x.seconds is not None for x in self.block):
                self.block = []              # its lines stay on the screen

    def interrupt(self):
        """Ctrl-C: erase the terminal's block; the compiles going on print nothing
        more."""
        with self.lock:
            if self.block:
                self._write(self.stream, f"\x1b[{len(self.block)}F\x1b[J")
            for x in self.active:
                x.dropped = True
            self.active.clear()
            self.block = []

    def _draw(self, new: int = 0):
        """Redraw the block; its last ``new`` lines are not on the screen yet."""
        up = len(self.block) - new
        text = f"\x1b[{up}F" if up else ""
        for x in self.block:
            body = x.end_text() if x.seconds is not None else x.live_text(self.ticks)
            text += "\r\x1b[2K" + body + "\n"
        self._write(self.stream, text)

    def _tick(self):
        while True:
            time.sleep(TICK_S)
            with self.lock:
                if not any(x.seconds is None for x in self.block):
                    self.ticker = None
                    return
                self.ticks += 1
                self._draw()


BOARD = _Board()


@contextlib.contextmanager
def compiling(what: str):
    """Around one module's compile: its line on stderr (see the module's docstring);
    ``what`` names it, e.g. "uoro for 'lstm' (n=32, batch path)"."""
    if quiet() or _STOPPING.is_set():     # silent too while a Ctrl-C winds down
        yield
        return
    line = BOARD.start(what)
    try:
        yield
    except KeyboardInterrupt:
        BOARD.interrupt()
        raise
    except BaseException:
        BOARD.finish(line, failed=True)
        raise
    BOARD.finish(line)


# ---------------------------------------------------------------- child processes
_CHILDREN: set = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()        # an interrupted ``parallel`` is killing its compiles


@contextlib.contextmanager
def child_process(proc):
    """Hold ``proc`` (a ``subprocess.Popen`` compiling a module) in the list that an
    interrupted ``parallel`` kills; one started while it kills is killed at once."""
    with _CHILDREN_LOCK:
        _CHILDREN.add(proc)
        if _STOPPING.is_set():
            _kill(proc)
    try:
        yield proc
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.discard(proc)


def _kill(proc):
    with contextlib.suppress(OSError):
        proc.kill()


def parallel(jobs, workers: int | None = None) -> list:
    """Run ``jobs`` (callables, each compiling a module in a child process and waiting
    for it) at once, ``workers`` at a time (default: ``compile_jobs()``). Returns each job's
    result, or the exception it raised, in order. Ctrl-C kills the compiles going on,
    starts no more, and raises ``KeyboardInterrupt`` once their threads are done."""
    jobs = list(jobs)
    n = min(len(jobs), workers or compile_jobs())
    if n <= 1:
        return [_outcome(job) for job in jobs]
    pool = ThreadPoolExecutor(n, thread_name_prefix="rgraph-compile")
    futures = []
    try:
        for job in jobs:
            futures.append(pool.submit(_unless_stopping, job))
        wait_all(futures)
    except KeyboardInterrupt:
        _STOPPING.set()
        BOARD.interrupt()
        with _CHILDREN_LOCK:
            for proc in list(_CHILDREN):
                _kill(proc)
        pool.shutdown(wait=True, cancel_futures=True)
        _STOPPING.clear()
        raise
    pool.shutdown(wait=True)
    return [f.exception() or f.result() for f in futures]


def _unless_stopping(job):
    if _STOPPING.is_set():
        raise KeyboardInterrupt
    return job()


def _outcome(job):
    try:
        return job()
    except Exception as e:  # noqa: BLE001 (handed back: the caller decides)
        return e


__all__ = ["ENV_JOBS", "ENV_QUIET", "child_process", "compile_jobs", "compiling", "cores",
           "parallel", "quiet"]
