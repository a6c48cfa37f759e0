"""The compiled-code cache: generated modules and their backends' compiled code, on disk.

One **entry** per generated module, in the cache folder (``$RGRAPH_CACHE_DIR``, else
``~/.cache/rgraph``)::

    NAME.py                       the module (named by a hash of its text and its backend:
                                  STEM_BACKEND_HASH)
    NAME.json                     the entry's record: what was compiled, for which CPU,
                                  and the SHA-256 of every file the backend's compiler wrote
    NAME.lock                     a lock file (flock), held while the entry changes
    COMPILED/NAME.*               the compiled code, in the folder the backend names
                                  (``Backend.compiled_dir``; none for a backend that
                                  compiles nothing)

The cache stores and checks; the backend's loader (``Backend.loader``) compiles and
loads, through the entry's lock, module check and record (``Entry``).

**Integrity.** The module's text is compared with the text rgraph generates, and the
compiled files with the checksums of the record, before anything is imported or loaded.
A mismatch (a truncated or corrupted file) removes the entry's compiled code and
rebuilds it, with one ``CacheWarning``. Compiled files without a record (an interrupted
compile, an older cache) are rebuilt silently.

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
import shutil
import stat
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
    """A backend's compiler could not compile a generated module (a bug in rgraph:
    please report it)."""


_warned: set = set()


def warn(msg: str, key=None):
    """One CacheWarning, attributed to the first caller outside rgraph and its backends
    (once per key)."""
    key = key or msg
    if key in _warned:
        return
    _warned.add(key)
    here = Path(__file__).resolve().parent
    inside = (str(here), str((here / "backends").resolve()))
    frame, level = sys._getframe(1), 1
    while frame is not None and \
            str(Path(frame.f_code.co_filename).resolve()).startswith(inside):
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


def entry_name(stem: str, backend: str, digest: str) -> str:
    """The name of a module's entry: its stem, its backend's name and its text's hash."""
    return f"{stem}_{backend}_{digest}"


# The registered backends, name -> Backend class: ``rgraph.backends`` hands over its
# ``BACKENDS`` when imported (the cache finds an entry's backend by the name in the
# entry's name, and the folders the backends' compilers write to).
_BACKENDS: dict = {}


def use_backends(registry: dict):
    """Find the backends of entries and their compiled code in ``registry`` (the dict
    itself: backends registered in it later are found too)."""
    global _BACKENDS
    _BACKENDS = registry


def backend_of(name: str):
    """The registered backend an entry's name names (None: none registered by that
    name, e.g. one registered only for a test)."""
    head = name.rpartition("_")[0]
    found = [b for b in _BACKENDS if head == b or head.endswith("_" + b)]
    return _BACKENDS[max(found, key=len)]() if found else None


class Entry:
    """One generated module's files in one folder; ``backend`` (else the one its name
    names) says where the compiled code lies."""

    def __init__(self, folder: Path, name: str, backend=None):
        self.folder, self.name = Path(folder), name
        self.backend = backend if backend is not None else backend_of(name)
        self.py = self.folder / f"{name}.py"
        self.record_path = self.folder / f"{name}.json"
        self.lock_path = self.folder / f"{name}.lock"

    def __repr__(self):
        return f"Entry({self.py})"

    @property
    def compiled_dir(self) -> Path | None:
        """Where the backend's compiler keeps this module's code (None: nowhere)."""
        return self.backend.compiled_dir(self.folder) if self.backend is not None else None

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

    # ----------------------------------------------------------- compiled code
    def compiled_files(self) -> list[Path]:
        """The files the backend's compiler wrote for this module (``NAME.*`` in its
        ``compiled_dir``)."""
        d = self.compiled_dir
        if d is None:
            return []
        try:
            return sorted(p for p in d.iterdir() if p.name.startswith(self.name + "."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def remove_compiled(self):
        """The compiled files and the record (the module stays)."""
        for p in self.compiled_files():
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
        d, where = self.compiled_dir, f"listed in {self.record_path.name}"
        for fname, item in rec["files"].items():
            if not (d is not None and isinstance(fname, str)
                    and fname.startswith(self.name + ".") and os.sep not in fname
                    and isinstance(item, list) and len(item) == 2):
                who = self.backend.name if self.backend is not None else "no backend"
                raise Damaged(f"{self.record_path.name} lists {fname!r}, not one of "
                              f"the compiled files of {self.py.name} ({who})")
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
            for p in self.compiled_files():
                _unlink(p)
            return {"format": FORMAT, "module": self.py.name, "compiled": [], "files": {}}
        listed = set(rec["files"])
        for p in self.compiled_files():
            if p.name not in listed:
                _unlink(p)
        return rec

    def write_record(self, rec: dict):
        """Record every compiled file of the module as it is now, and what was compiled."""
        rec = dict(rec, files={p.name: [p.stat().st_size, sha256(p)]
                               for p in self.compiled_files() if ".tmp." not in p.name})
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
        """Copy module, record and compiled files (a read-only folder's entry into the
        writable one)."""
        files = [p for p in self.compiled_files() if ".tmp." not in p.name]
        if files:
            dst = other.compiled_dir
            dst.mkdir(parents=True, exist_ok=True)
            for p in files:
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
            self.compiled_files()

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


def load(source: str, backend, stem: str, header: str, in_process=False):
    """Write ``header + source`` to the cache (once), import it and hand it to the
    backend's loader (``Backend.loader``: its ``module``, ``path``, ``prepare`` and
    ``call``). ``in_process``: its functions compile in this process, on their first
    call (modules whose numbers need not repeat across processes: the derivative
    checks)."""
    digest = hashlib.sha256((header + source).encode()).hexdigest()[:16]
    text = header + f"# content hash: {digest}\n" + source
    name = entry_name(stem, backend.name, digest)
    modname = f"rgraph_gen_{name}"
    if modname in _LOADED:
        return _LOADED[modname]
    loc = location()
    entry = Entry(loc.write, name, backend)
    with entry.lock():
        state = entry.module_state(text)
        if state != "ok":
            for folder in loc.read:          # complete in a read-only cache: copy it
                ro = Entry(folder, name, backend)
                if ro.complete_for(text):
                    entry.remove_compiled()
                    ro.copy_to(entry)
                    state = "ok"
                    break
        if loc.problem and not any(Entry(d, name, backend).complete_for(text)
                                   for d in loc.read):
            fallback_warning(loc)       # silent only where a read-only cache serves it
        if state != "ok":
            if state == "damaged":
                warn(f"rgraph: damaged compiled-code cache entry: {entry.py} does not "
                     f"hold the module it is named after; rebuilding it",
                     key=("damaged", str(entry.py)))
            entry.remove_compiled()
            entry.write_module(text)
            maybe_prune(entry.folder, keep={entry.name})
        if not backend.jit and not entry.record_path.exists():   # nothing to compile
            entry.write_record({"format": FORMAT, "module": entry.py.name,
                                "compiled": [], "files": {}})
        entry.touch()
        module = backend.load(str(entry.py), modname)
    loaded = backend.loader(entry, module, text, in_process)
    _LOADED[modname] = loaded
    return loaded


# ------------------------------------------------------------ the whole folder
@dataclass
class Item:
    name: str
    size: int
    last_used: float
    orphan: bool          # compiled files or temporaries whose module is gone
    paths: list


def compiled_dirs(folder: Path) -> list[Path]:
    """The folders the registered backends' compilers write to for modules in
    ``folder`` (other than ``folder`` itself), those that exist."""
    dirs = {cls().compiled_dir(folder) for cls in _BACKENDS.values()}
    return sorted(d for d in dirs if d is not None and d != folder and d.is_dir())


def scan(folder: Path) -> list[Item]:
    """Every entry of a cache folder, and the leftovers (files of no module)."""
    folder = Path(folder)
    groups: dict = {}
    try:
        top = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    inner = [p for d in compiled_dirs(folder) for p in d.iterdir()]
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


__all__ = ["CacheWarning", "CompileError", "Entry", "Location", "clear", "configured_dir",
           "load", "location", "max_bytes", "parse_size", "prune", "scan"]
