"""The numba backend's loader: its modules compile in a child process, and every
process loads the machine code from numba's on-disk cache.

numba writes, next to the cache folder's modules (or under ``$NUMBA_CACHE_DIR``)::

    __pycache__/NAME.*.nbi|.nbc   numba's index and object code, one pair per entry point

The cache (``rgraph.cache``) checksums them in the entry's record, with what was
compiled (function, signature and this machine's target, ``target_id``), and repairs an
entry whose files do not match.

**Determinism.** numba links a copy of every callee into each caller and re-optimizes
it; in the process that compiles, calls resolve to the callees' own (once-optimized)
code, while a process that loads the cache runs the copies inside the entry point's
object code. With fastmath the two round differently. So the code is compiled in a
child process and every process, the first included, loads it from the cache: all of
them run the same machine code (``compile_in_child``). A cache entry numba cannot load
is rebuilt once, with one ``CacheWarning``; a second failure is a ``CompileError``.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from rgraph.cache import CompileError, Entry, warn
from rgraph.feedback import child_process, compiling

from .base import Loaded


def compiled_dir(folder: Path) -> Path:
    """Where numba keeps the index and object code of the modules in ``folder``."""
    from numba.core import config
    if config.CACHE_DIR:
        from numba.core.caching import _CacheLocator
        return Path(config.CACHE_DIR) / _CacheLocator.get_suitable_cache_subpath(
            str(Path(folder) / "module.py"))
    return Path(folder) / "__pycache__"


def target_id() -> str:
    """This machine's compilation target as numba keys its cache (triple, CPU, features)."""
    from numba.core.registry import cpu_target
    magic = cpu_target.target_context.codegen().magic_tuple()
    return hashlib.sha256(repr(magic).encode()).hexdigest()[:16]


class NumbaLoaded(Loaded):
    """A generated module of the numba backend, imported from the cache, and its
    compiled functions.

    ``prepare(calls)`` makes sure the functions are compiled for the given example
    arguments and loads them from the cache, in the given order; ``call(name, *args)``
    calls one (compiling a new signature the same way). The module's entry points (its
    ``__all__``) never compile in this process (unless ``in_process``): a child process
    compiles, this one loads (see the module's docstring). Inner functions called
    directly from Python load or compile as numba does, without writing to the cache."""

    def __init__(self, entry: Entry, module, text: str, in_process=False):
        super().__init__(entry, module, text, in_process)
        if in_process:
            return
        entry_points = set(getattr(module, "__all__", ()))
        for name, f in self.dispatchers().items():
            if name in entry_points:    # compiled by a child, loaded by prepare()
                _allow_compile(f, False)
            else:                       # called directly (debugging, tests): numba's
                f._cache.save_overload = _unsaved   # usual way, but nothing it compiles
                                                    # here goes to the cache

    def dispatchers(self) -> dict:
        from numba.core.dispatcher import Dispatcher
        return {n: f for n, f in vars(self.module).items() if isinstance(f, Dispatcher)}

    def call(self, name, *args):
        f = getattr(self.module, name)
        if self.in_process:
            if _signature(f, args) not in f.overloads:
                self.prepare([(name, args)])
            return f(*args)
        try:
            return f(*args)
        except TypeError:      # compiling is disabled here: a signature not loaded yet
            if _signature(f, args) in f.overloads:
                raise
        self.prepare([(name, args)])
        return f(*args)

    def prepare(self, calls, what=None):
        """Compile (if the cache lacks them) and load ``calls``: (name, example args) or
        (name, signature) pairs, in order. A compile says so on stderr
        (``rgraph.feedback``), naming the module ``what`` (default: the functions and
        the module's file)."""
        reqs = []
        for name, args in calls:
            f = getattr(self.module, name)
            sig = args if _is_signature(args) else _signature(f, args)
            if sig not in f.overloads:
                reqs.append((name, sig))
        if not reqs:
            return
        for attempt in (0, 1):
            try:
                self._prepare(reqs, what)
                return
            except _Retry as e:
                if attempt:
                    raise CompileError(str(e)) from None
                warn(f"rgraph: compiled-code cache entry {self.entry.py.name}: {e}; "
                     f"removed its compiled code, rebuilding",
                     key=("retry", str(self.entry.py), str(e)))
                with self.entry.lock():
                    self.entry.remove_compiled()

    def _prepare(self, reqs, what):
        entry, target = self.entry, target_id()
        with entry.lock() as fd:
            if entry.module_state(self.text) != "ok":   # pruned or damaged since import
                entry.remove_compiled()
                entry.write_module(self.text)
            rec = entry.checked_record()
            have = {(c["function"], c["signature"], c["target"]) for c in rec["compiled"]}
            missing = [(n, s) for n, s in reqs if (n, str(s), target) not in have]
            if not missing:         # in the cache: loaded without a word
                self._load(reqs, allow_compile=False)
                entry.touch()
                return
            what = what or f"{', '.join(n for n, _ in missing)} of {entry.py.name}"
            with compiling(what):   # the one place a compile is announced
                if self.in_process:
                    self._load(reqs, allow_compile=True)
                else:
                    # compile every request, in order, in one child: its object code is
                    # what this and every later process run
                    compile_in_child(entry, self.module.__name__, reqs, fd,
                                     meanwhile=_warm_numba)
                self.compiled_here += len(missing)
                rec["compiled"] += [{"function": n, "signature": str(s), "target": target}
                                    for n, s in missing]
                entry.write_record(rec)
                if not self.in_process:
                    self._load(reqs, allow_compile=False)
            entry.touch()

    def _load(self, reqs, allow_compile):
        """numba's ``compile(sig)`` for each request: a load from the cache, or (only
        with ``allow_compile``) a compile here where the cache lacks it."""
        for name, sig in reqs:
            f = getattr(self.module, name)
            if sig in f.overloads:
                continue
            _allow_compile(f, True)
            if not allow_compile:       # a miss must not compile in this process
                f._compiler.compile = _refuse
            try:
                with holding_ctrl_c():
                    f.compile(sig)
            except _NotCached:
                raise _Retry(f"numba's cache did not hold {name}{sig}") from None
            except Exception as e:  # noqa: BLE001 (whatever numba raises on bad data)
                raise _Retry(f"numba could not load {name} "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
                    from None
            finally:
                vars(f._compiler).pop("compile", None)
                if not self.in_process:
                    _allow_compile(f, False)
            if not allow_compile:
                self.loaded += 1


@contextlib.contextmanager
def holding_ctrl_c():
    """Ctrl-C (SIGINT) held back until the block ends, then handled as it would have
    been: numba's work in this process runs in LLVM's ctypes callbacks, which swallow a
    KeyboardInterrupt raised inside them (printing "Exception ignored on calling ctypes
    callback function") and carry on. Only the main thread receives signals; elsewhere
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if got:
        if callable(old):           # the default handler raises KeyboardInterrupt
            old(signal.SIGINT, got[0])
        elif old == signal.SIG_DFL:
            raise KeyboardInterrupt


class _Retry(Exception):
    pass


_WARM_LOCK = threading.Lock()


def _warm_numba():
    """numba's one-time set-up of its target (what loading would do first), done while
    the child compiles (one thread at a time: several compile at once in ``parallel``)."""
    from numba.core.registry import cpu_target
    with _WARM_LOCK:
        cpu_target.target_context.refresh()


class _NotCached(Exception):
    pass


def _refuse(*args, **kwargs):
    """Stands in for numba's compiler while loading: the cache must hold the code."""
    raise _NotCached


def _unsaved(sig, data):
    """Stands in for numba's cache writes of functions called directly from Python: the
    cache holds only what a child compiled (and the entry's record lists)."""


def _allow_compile(f, allowed: bool):
    """numba's switch for compiling at call time (``disable_compile`` without its
    requirement that something be compiled already): off, a call with a signature not
    loaded raises TypeError instead of compiling in this process."""
    f._can_compile = allowed


def _is_signature(x) -> bool:
    from numba.core import types
    return isinstance(x, tuple) and all(isinstance(t, types.Type) for t in x) and len(x) > 0


def _signature(f, args) -> tuple:
    return tuple(f.typeof_pyval(a) for a in args)


CHILD = r"""
import pickle, sys
path, name = sys.argv[1], sys.argv[2]
requests = pickle.load(sys.stdin.buffer)
with open(path, encoding="utf-8") as fh:
    text = fh.read()
module = type(sys)(name)
module.__file__ = path
sys.modules[name] = module
exec(compile(text, path, "exec", dont_inherit=True), module.__dict__)
# functions only ever called from compiled code: nothing of theirs is cached (the entry
# points carry a copy of their code, and no process loads them)
from numba.core.caching import NullCache
from numba.core.dispatcher import Dispatcher
entry = set(getattr(module, "__all__", ())) | {fn for fn, _ in requests}
for n, f in vars(module).items():
    if isinstance(f, Dispatcher) and n not in entry:
        f._cache = NullCache()
for fn, sig in requests:
    getattr(module, fn).compile(sig)
"""


def compile_in_child(entry: Entry, modname: str, reqs, lock_fd=None, meanwhile=None):
    """numba compiles ``reqs`` ((function, signature), in order) of the module in a
    fresh process and writes them to the cache; ``meanwhile()`` runs here while it does.
    The child inherits the entry's lock, so the lock stays held until the child is gone,
    even if this process is killed. It runs in a session of its own, so a terminal's
    Ctrl-C reaches this process alone, which kills the child (no traceback of the
    child's) and raises KeyboardInterrupt; the entry then has no record, and its
    compiled files, if any, are removed at the next use (``rgraph.cache``)."""
    payload = pickle.dumps(list(reqs))
    fds = (lock_fd,) if isinstance(lock_fd, int) and not isinstance(lock_fd, bool) else ()
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen([sys.executable, "-c", CHILD, str(entry.py), modname],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=errors, pass_fds=fds, start_new_session=True,
                                    env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        except OSError as e:
            raise CompileError(f"cannot start a process to compile {entry.py}: "
                               f"{e}") from None
        try:
            with child_process(proc):   # killed by an interrupted parallel compile
                proc.stdin.write(payload)
                proc.stdin.close()
                if meanwhile is not None:
                    with holding_ctrl_c():
                        meanwhile()
                proc.wait()
        except BaseException:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            raise
        errors.seek(0)
        err = errors.read().decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        tail = "\n".join(err[-25:]) if err else f"exit status {proc.returncode}"
        raise CompileError(f"numba could not compile {entry.py} (a bug in rgraph's "
                           f"generated code; please report it):\n{tail}")
