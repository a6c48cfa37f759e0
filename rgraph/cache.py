"""The compiled-code cache: generated modules and numba's object code, on disk.

One **entry** per generated module, in the cache folder (``$RGRAPH_CACHE_DIR``, else
``~/.cache/rgraph``)::

    NAME.py                       the module (named by a hash of its text)
    NAME.json                     the entry's record: what was compiled, for which CPU,
                                  and the SHA-256 of every file numba wrote
    NAME.lock                     a lock file (flock), held while the entry changes
    __pycache__/NAME.*.nbi|.nbc   numba's index and object code, one pair per entry point

**Integrity.** The module's text is compared with the text rgraph generates, and numba's
files with the checksums of the record, before anything is imported or loaded. A
mismatch (a truncated or corrupted file) removes the entry's compiled code and rebuilds
it, with one ``CacheWarning``. numba's files without a record (an interrupted compile,
an older cache) are rebuilt silently.

**Determinism.** numba links a copy of every callee into each caller and re-optimizes
it; in the process that compiles, calls resolve to the callees' own (once-optimized)
code, while a process that loads the cache runs the copies inside the entry point's
object code. With fastmath the two round differently. So the code is compiled in a
child process and every process, the first included, loads it from the cache: all of
them run the same machine code (``compile_in_child``).

**Sharing.** Writes go through a temporary file and ``os.replace``; compiling and
loading hold the entry's lock, so processes that compile the same module at once wait
for one compile and load its result. A folder that cannot be written (or a missing
HOME) falls back to a private temporary cache, with a warning naming
``RGRAPH_CACHE_DIR``; entries already complete in a read-only folder are copied from it
and used without a word. Entries unused the longest are pruned when the folder grows
past ``$RGRAPH_CACHE_MAX_SIZE`` (default 1 GB), checked at most every 10 minutes when a
new entry is written; ``rgraph cache`` shows, prunes and clears.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:          # no flock (Windows): single-process use stays safe
    fcntl = None

ENV_DIR = "RGRAPH_CACHE_DIR"
ENV_MAX = "RGRAPH_CACHE_MAX_SIZE"
DEFAULT_MAX_BYTES = 1 << 30
PRUNE_EVERY_S = 600          # automatic pruning: at most this often per folder
STALE_TMP_S = 3600           # a temporary file this old is left over from a killed write
FORMAT = 1                   # of NAME.json


class CacheWarning(UserWarning):
    """The compiled-code cache was damaged, or cannot be written: rgraph repaired it or
    used a temporary one (the message says which file, and what to do)."""


class CompileError(RuntimeError):
    """numba could not compile a generated module (a bug in rgraph: please report it)."""


_warned: set = set()


def warn(msg: str, key=None):
    """One CacheWarning, attributed to the first caller outside rgraph (once per key)."""
    key = key or msg
    if key in _warned:
        return
    _warned.add(key)
    here = str(Path(__file__).resolve().parent)
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(here):
        frame, level = frame.f_back, level + 1
    warnings.warn(msg, CacheWarning, stacklevel=level + 1 if frame is not None else 2)


# -------------------------------------------------------------------------- where
@dataclass
class Location:
    """Where entries are written (``write``) and other folders complete entries may be
    copied from (``read``: a configured folder that cannot be written)."""
    write: Path
    read: list = field(default_factory=list)
    configured: Path | None = None
    problem: str | None = None      # why the configured folder is not written to


def configured_dir() -> Path | None:
    """$RGRAPH_CACHE_DIR, else ~/.cache/rgraph (None: no home folder)."""
    d = os.environ.get(ENV_DIR)
    if d:
        return Path(d).expanduser()
    try:
        return Path.home() / ".cache" / "rgraph"
    except (RuntimeError, KeyError):
        return None


def _unwritable(d: Path) -> str | None:
    """Why ``d`` cannot hold the cache (None: it can)."""
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


_TEMP: list = []


def temporary_dir() -> Path:
    """A private (0700, ours) folder under the system's temporary folder, shared by this
    user's processes; a fresh one if that name is taken by anything else."""
    if _TEMP and _TEMP[0].is_dir():
        return _TEMP[0]
    base = Path(tempfile.gettempdir())
    d = base / f"rgraph-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(d)
        ok = stat.S_ISDIR(st.st_mode) and not (st.st_mode & 0o077) and \
            (not hasattr(os, "getuid") or st.st_uid == os.getuid())
        if not ok or _unwritable(d):
            raise PermissionError
    except OSError:
        d = Path(tempfile.mkdtemp(prefix="rgraph-cache-"))
    _TEMP[:] = [d]
    return d


def location() -> Location:
    """The folders this process uses now (the environment is read each time)."""
    conf = configured_dir()
    if conf is not None:
        problem = _unwritable(conf)
        if problem is None:
            return Location(conf, [], conf)
        read = [conf] if conf.is_dir() and os.access(conf, os.R_OK | os.X_OK) else []
        return Location(temporary_dir(), read, conf, problem)
    return Location(temporary_dir(), [], None, "no home folder")


def fallback_warning(loc: Location):
    where = f"{loc.configured}" if loc.configured else "the default cache folder"
    warn(f"rgraph: cannot write the compiled-code cache {where} ({loc.problem}); "
         f"using the temporary cache {loc.write} for now. Set {ENV_DIR} to a writable "
         f"folder to keep compiled code between runs.", key=("fallback", str(where)))


def max_bytes() -> int:
    """The size cap: $RGRAPH_CACHE_MAX_SIZE (e.g. 500M, 2G), default 1 GB."""
    v = os.environ.get(ENV_MAX)
    if not v:
        return DEFAULT_MAX_BYTES
    try:
        return parse_size(v)
    except ValueError as e:
        warn(f"rgraph: {ENV_MAX}={v!r} is not a size ({e}); using 1G", key=("max", v))
        return DEFAULT_MAX_BYTES


def parse_size(text: str) -> int:
    """'1G', '500M', '64k', '123' (bytes) -> bytes."""
    t = str(text).strip().upper().removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMGT" and t else t
    try:
        val = float(num)
    except ValueError:
        raise ValueError(f"expected a number of bytes with an optional K, M, G or T, "
                         f"got {text!r}") from None
    if not val >= 0:
        raise ValueError(f"a size must be >= 0, got {text!r}")
    return int(val * mult)


# ------------------------------------------------------------------------ files
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes):
    """Write through a temporary file in the same folder and os.replace: a reader sees
    the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{time.monotonic_ns()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _unlink(p: Path):
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        p.unlink()


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True):
    """An exclusive flock on ``path`` (created if needed). Yields the open file's
    descriptor, or None where the folder is read-only or flock is missing; yields False
    if ``blocking`` is off and another process holds the lock."""
    if fcntl is None:
        yield None
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield None            # read-only folder: nobody can change it through us
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        # the file may have been removed (clear, prune) between open and flock
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield fd
    finally:
        os.close(fd)


class Damaged(Exception):
    """An entry's record or a file it lists does not match (the message says which)."""


class Entry:
    """One generated module's files in one folder."""

    def __init__(self, folder: Path, name: str):
        self.folder, self.name = Path(folder), name
        self.py = self.folder / f"{name}.py"
        self.record_path = self.folder / f"{name}.json"
        self.lock_path = self.folder / f"{name}.lock"

    def __repr__(self):
        return f"Entry({self.py})"

    @property
    def numba_dir(self) -> Path:
        """Where numba keeps this module's index and object code."""
        from numba.core import config
        if config.CACHE_DIR:
            from numba.core.caching import _CacheLocator
            return Path(config.CACHE_DIR) / _CacheLocator.get_suitable_cache_subpath(
                str(self.py))
        return self.folder / "__pycache__"

    def lock(self, blocking=True):
        return file_lock(self.lock_path, blocking)

    # ------------------------------------------------------------ the module
    def module_state(self, text: str) -> str:
        """'ok', 'missing' or 'damaged': the file against the text it must hold."""
        try:
            data = self.py.read_bytes()
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "damaged"
        return "ok" if data == text.encode() else "damaged"

    def write_module(self, text: str):
        write_atomic(self.py, text.encode())

    # ---------------------------------------------------------- numba's files
    def numba_files(self) -> list[Path]:
        d = self.numba_dir
        try:
            return sorted(p for p in d.iterdir() if p.name.startswith(self.name + "."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def remove_compiled(self):
        """numba's files and the record (the module stays)."""
        for p in self.numba_files():
            _unlink(p)
        _unlink(self.record_path)

    def remove(self):
        self.remove_compiled()
        _unlink(self.py)
        _unlink(self.lock_path)

    # -------------------------------------------------------------- the record
    def read_record(self) -> dict | None:
        """The record, checked against the files it lists (None: no record). Raises
        Damaged naming the first file that does not match."""
        try:
            raw = self.record_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            rec = json.loads(raw)
            if rec.get("format") != FORMAT or not isinstance(rec.get("files"), dict) or \
                    not isinstance(rec.get("compiled"), list):
                raise ValueError("not an rgraph cache record")
        except (ValueError, AttributeError) as e:
            raise Damaged(f"{self.record_path.name} is unreadable ({e})") from None
        d, where = self.numba_dir, f"listed in {self.record_path.name}"
        for fname, item in rec["files"].items():
            if not (isinstance(fname, str) and fname.startswith(self.name + ".")
                    and os.sep not in fname and isinstance(item, list) and len(item) == 2):
                raise Damaged(f"{self.record_path.name} lists {fname!r}, not one of "
                              f"numba's files for {self.py.name}")
            size, digest = item
            p = d / fname
            try:
                if p.stat().st_size != size:
                    raise Damaged(f"{p} has {p.stat().st_size} bytes, not the {size} "
                                  f"{where}")
                if sha256(p) != digest:
                    raise Damaged(f"{p} does not match the checksum {where}")
            except FileNotFoundError:
                raise Damaged(f"{p}, {where}, is missing") from None
        return rec

    def checked_record(self) -> dict:
        """The record after repairs: compiled code that does not match its record is
        removed (one warning), code without a record removed silently, and stray files
        (left over from killed writes) dropped."""
        try:
            rec = self.read_record()
        except Damaged as e:
            warn(f"rgraph: damaged compiled-code cache entry {self.py.name}: {e}; "
                 f"removed its compiled code, rebuilding it",
                 key=("damaged", str(self.py), str(e)))
            self.remove_compiled()
            rec = None
        if rec is None:
            for p in self.numba_files():
                _unlink(p)
            return {"format": FORMAT, "module": self.py.name, "compiled": [], "files": {}}
        listed = set(rec["files"])
        for p in self.numba_files():
            if p.name not in listed:
                _unlink(p)
        return rec

    def write_record(self, rec: dict):
        """Record every numba file of the module as it is now, and what was compiled."""
        rec = dict(rec, files={p.name: [p.stat().st_size, sha256(p)]
                               for p in self.numba_files() if ".tmp." not in p.name})
        write_atomic(self.record_path, (json.dumps(rec, indent=1) + "\n").encode())
        return rec

    def complete_for(self, text: str) -> bool:
        """Module and compiled code present and intact (read-only use)."""
        if self.module_state(text) != "ok":
            return False
        try:
            rec = self.read_record()
        except Damaged:
            return False
        return bool(rec and rec["compiled"])

    def copy_to(self, other: Entry):
        """Copy module, record and numba's files (a read-only folder's entry into the
        writable one)."""
        dst = other.numba_dir
        dst.mkdir(parents=True, exist_ok=True)
        for p in self.numba_files():
            if ".tmp." not in p.name:
                shutil.copy2(p, dst / p.name)
        shutil.copy2(self.py, other.py)
        shutil.copy2(self.record_path, other.record_path)

    def touch(self):
        """Mark the entry used now (pruning removes the least recently used)."""
        with contextlib.suppress(OSError):
            os.utime(self.record_path)

    # ----------------------------------------------------------- bookkeeping
    def files(self) -> list[Path]:
        return [p for p in (self.py, self.record_path, self.lock_path) if p.exists()] + \
            self.numba_files()

    def size(self) -> int:
        total = 0
        for p in self.files():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def last_used(self) -> float:
        for p in (self.record_path, self.py):
            with contextlib.suppress(OSError):
                return p.stat().st_mtime
        return 0.0


# ------------------------------------------------------------- loading a module
_LOADED: dict = {}


def load(source: str, backend, stem: str, header: str, in_process=False) -> Loaded:
    """Write ``header + source`` to the cache (once) and import it. ``in_process``: its
    functions compile in this process, on their first call (modules whose numbers need
    not repeat across processes: the derivative checks)."""
    digest = hashlib.sha256((header + source).encode()).hexdigest()[:16]
    text = header + f"# content hash: {digest}\n" + source
    name = f"{stem}_{backend.name}_{digest}"
    modname = f"rgraph_gen_{name}"
    if modname in _LOADED:
        return _LOADED[modname]
    loc = location()
    entry = Entry(loc.write, name)
    with entry.lock():
        state = entry.module_state(text)
        if state != "ok":
            for folder in loc.read:          # complete in a read-only cache: copy it
                ro = Entry(folder, name)
                if ro.complete_for(text):
                    entry.remove_compiled()
                    ro.copy_to(entry)
                    state = "ok"
                    break
        if loc.problem and not any(Entry(d, name).complete_for(text) for d in loc.read):
            fallback_warning(loc)       # silent only where a read-only cache serves it
        if state != "ok":
            if state == "damaged":
                warn(f"rgraph: damaged compiled-code cache entry: {entry.py} does not "
                     f"hold the module it is named after; rebuilding it",
                     key=("damaged", str(entry.py)))
            entry.remove_compiled()
            entry.write_module(text)
            maybe_prune(entry.folder, keep={entry.name})
        if not backend.jit and not entry.record_path.exists():
            entry.write_record({"format": FORMAT, "module": entry.py.name,
                                "compiled": [], "files": {}})
        entry.touch()
        module = backend.load(str(entry.py), modname)
    loaded = Loaded(entry, module, text, backend.jit, in_process)
    if backend.jit and not in_process:
        entry_points = set(getattr(module, "__all__", ()))
        for name, f in loaded.dispatchers().items():
            if name in entry_points:    # compiled by a child, loaded by prepare()
                _allow_compile(f, False)
            else:                       # called directly (debugging, tests): numba's
                f._cache.save_overload = _unsaved   # usual way, but nothing it compiles
                                                    # here goes to the cache
    _LOADED[modname] = loaded
    return loaded


def target_id() -> str:
    """This machine's compilation target as numba keys its cache (triple, CPU, features)."""
    from numba.core.registry import cpu_target
    magic = cpu_target.target_context.codegen().magic_tuple()
    return hashlib.sha256(repr(magic).encode()).hexdigest()[:16]


class Loaded:
    """A generated module imported from the cache, and its compiled functions.

    ``prepare(calls)`` makes sure the functions are compiled for the given example
    arguments and loads them from the cache, in the given order; ``call(name, *args)``
    calls one (compiling a new signature the same way). A jitted module's entry points
    (its ``__all__``) never compile in this process (unless ``in_process``): a child
    process compiles, this one loads (see the module's docstring). Inner functions called
    directly from Python load or compile as numba does, without writing to the cache."""

    def __init__(self, entry: Entry, module, text: str, jit: bool, in_process=False):
        self.entry, self.module, self.text, self.jit = entry, module, text, jit
        self.in_process = in_process
        self.compiled_here = 0      # functions compiled by this process (or its children)
        self.loaded = 0             # functions loaded from the cache

    @property
    def path(self) -> Path:
        return self.entry.py

    def dispatchers(self) -> dict:
        from numba.core.dispatcher import Dispatcher
        return {n: f for n, f in vars(self.module).items() if isinstance(f, Dispatcher)}

    def call(self, name, *args):
        f = getattr(self.module, name)
        if not self.jit:
            return f(*args)
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

    def prepare(self, calls):
        """Compile (if the cache lacks them) and load ``calls``: (name, example args) or
        (name, signature) pairs, in order."""
        if not self.jit:
            return
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
                self._prepare(reqs)
                return
            except _Retry as e:
                if attempt:
                    raise CompileError(str(e)) from None
                warn(f"rgraph: compiled-code cache entry {self.entry.py.name}: {e}; "
                     f"removed its compiled code, rebuilding",
                     key=("retry", str(self.entry.py), str(e)))
                with self.entry.lock():
                    self.entry.remove_compiled()

    def _prepare(self, reqs):
        entry, target = self.entry, target_id()
        with entry.lock() as fd:
            if entry.module_state(self.text) != "ok":   # pruned or damaged since import
                entry.remove_compiled()
                entry.write_module(self.text)
            rec = entry.checked_record()
            have = {(c["function"], c["signature"], c["target"]) for c in rec["compiled"]}
            missing = [(n, s) for n, s in reqs if (n, str(s), target) not in have]
            if missing:
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
            if not self.in_process or not missing:
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


class _Retry(Exception):
    pass


def _warm_numba():
    """numba's one-time set-up of its target (what loading would do first), done while
    the child compiles."""
    from numba.core.registry import cpu_target
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
    even if this process is killed."""
    payload = pickle.dumps(list(reqs))
    fds = (lock_fd,) if isinstance(lock_fd, int) and not isinstance(lock_fd, bool) else ()
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen([sys.executable, "-c", CHILD, str(entry.py), modname],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=errors, pass_fds=fds,
                                    env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        except OSError as e:
            raise CompileError(f"cannot start a process to compile {entry.py}: "
                               f"{e}") from None
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
            if meanwhile is not None:
                meanwhile()
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        errors.seek(0)
        err = errors.read().decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        tail = "\n".join(err[-25:]) if err else f"exit status {proc.returncode}"
        raise CompileError(f"numba could not compile {entry.py} (a bug in rgraph's "
                           f"generated code; please report it):\n{tail}")


# ------------------------------------------------------------ the whole folder
@dataclass
class Item:
    name: str
    size: int
    last_used: float
    orphan: bool          # numba files or temporaries whose module is gone
    paths: list


def scan(folder: Path) -> list[Item]:
    """Every entry of a cache folder, and the leftovers (files of no module)."""
    folder = Path(folder)
    groups: dict = {}
    try:
        top = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    pyc = folder / "__pycache__"
    inner = list(pyc.iterdir()) if pyc.is_dir() else []
    for p in top + inner:
        if p.is_dir():
            continue
        n = p.name
        if n.startswith(".") and ".tmp" not in n:    # .last-prune and the like
            continue
        key = n.lstrip(".").split(".")[0]
        groups.setdefault(key, []).append(p)
    items = []
    for key, paths in groups.items():
        names = {p.name: p for p in paths if p.parent == folder}
        orphan = f"{key}.py" not in names
        size, used = 0, 0.0
        for p in paths:
            with contextlib.suppress(OSError):
                st = p.stat()
                size += st.st_size
                if orphan:
                    used = max(used, st.st_mtime)
        if not orphan:      # last use: the record's time (touched on every load)
            with contextlib.suppress(OSError):
                used = (names.get(f"{key}.json") or names[f"{key}.py"]).stat().st_mtime
        items.append(Item(key, size, used, orphan, paths))
    return items


def prune(folder: Path, limit: int, keep=frozenset()) -> tuple[int, int]:
    """Remove leftovers, then the least recently used entries until the folder holds at
    most ``limit`` bytes; entries in use (locked) or in ``keep`` stay. Returns (entries
    removed, bytes freed)."""
    items = scan(folder)
    now = time.time()
    removed = freed = 0
    total = sum(i.size for i in items)
    for it in items:      # leftovers of killed writes and of removed modules
        if it.orphan and now - it.last_used > STALE_TMP_S:
            for p in it.paths:
                _unlink(p)
            total -= it.size
            freed += it.size
    for it in sorted((i for i in items if not i.orphan), key=lambda i: i.last_used):
        if total <= limit:
            break
        if it.name in keep:
            continue
        e = Entry(folder, it.name)
        with e.lock(blocking=False) as got:
            if got is False:
                continue
            for p in e.files():
                if p != e.lock_path:
                    _unlink(p)
            _unlink(e.lock_path)
        total -= it.size
        freed += it.size
        removed += 1
    return removed, freed


def clear(folder: Path) -> tuple[int, int, int]:
    """Remove every entry not in use and every leftover: (entries removed, bytes freed,
    entries skipped because another process holds them)."""
    removed = freed = busy = 0
    for it in scan(folder):
        if it.orphan:
            for p in it.paths:
                _unlink(p)
            freed += it.size
            continue
        e = Entry(folder, it.name)
        with e.lock(blocking=False) as got:
            if got is False:
                busy += 1
                continue
            for p in e.files():
                if p != e.lock_path:
                    _unlink(p)
            _unlink(e.lock_path)
        removed += 1
        freed += it.size
    _unlink(Path(folder) / ".last-prune")
    return removed, freed, busy


def maybe_prune(folder: Path, keep=frozenset()):
    """Prune to the size cap, at most every PRUNE_EVERY_S seconds per folder."""
    stamp = Path(folder) / ".last-prune"
    try:
        if time.time() - stamp.stat().st_mtime < PRUNE_EVERY_S:
            return
    except FileNotFoundError:
        pass
    try:
        stamp.touch()
        prune(folder, max_bytes(), keep)
    except OSError:
        pass


def human(n: float) -> str:
    """Bytes in the units parse_size reads (K = 1024)."""
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}G"


__all__ = ["CacheWarning", "CompileError", "Entry", "Loaded", "Location", "clear",
           "configured_dir", "load", "location", "max_bytes", "parse_size", "prune",
           "scan"]
