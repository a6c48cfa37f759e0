"""The compiled-code cache under faults: damaged files, unwritable and read-only folders,
processes compiling the same module at once, and the same bits in the process that
compiles a module and in the processes that load it.

One class, ``TestCache``, to join the bad-input module's classes. Every test uses cells
of its own: a module loaded earlier in the same process is reused as it is. The damage
cases share one set-up: small modules (one function calling another, so that numba
writes two index and two object files) are compiled into a folder, one file of each is
truncated or corrupted, and one fresh process loads them all.
"""
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rgraph as rg
from rgraph import cache
from rgraph.backends import get_backend
from rgraph.cli import main as cli

TINY = textwrap.dedent('''
    """A module for the cache tests: total calls scale."""
    import numpy as np
    from numba import njit
    __all__ = ["total"]


    def scale(x, a):
        for i in range(x.shape[0]):
            x[i] *= a


    def total(x, a):
        scale(x, a)
        return np.sum(x)


    JIT = njit(cache=True)
    globals().update({f.__name__: JIT(f) for f in (scale, total)})
''')
HEADER = "# a test module for rgraph's cache\n"


def tiny(case):
    """The test module for one case (each case is its own module: its own file and
    its own symbols in numba's JIT)."""
    return cache.load(TINY + f"# case {case}\n", get_backend("numba"), "tiny", HEADER)


def run_tiny(code):
    return float(code.call("total", np.ones(4), 3.0))


# Loads each case's module in a fresh process; prints {case: result} as JSON.
CHECK = textwrap.dedent('''
    import json, os, sys, warnings
    import numpy as np
    sys.path.insert(0, os.environ["TEST_DIR"])
    from test_cache_faults import cache, run_tiny, tiny
    readonly = os.environ.get("READONLY")
    if readonly and os.access(readonly, os.W_OK):    # root writes anywhere: say it cannot
        from pathlib import Path
        real = cache._unwritable
        cache._unwritable = lambda d: ("PermissionError: read-only" if
                                       Path(d).resolve() == Path(readonly).resolve()
                                       else real(d))
    out = {}
    for case in sys.argv[1:]:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            code = tiny(case)
            value = run_tiny(code)
        out[case] = {"value": value, "compiled": code.compiled_here, "path": str(code.path),
                     "warnings": [str(x.message) for x in w
                                  if issubclass(x.category, cache.CacheWarning)]}
    print(json.dumps(out))
''')


def check_in_fresh_process(cases, cache_dir, **env):
    env = dict(os.environ, RGRAPH_CACHE_DIR=str(cache_dir),
               TEST_DIR=os.path.dirname(__file__), **env)
    proc = subprocess.run([sys.executable, "-c", CHECK, *cases], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def damage(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    else:       # flip bytes in the middle, same size
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 16])
                         + data[mid + 16:])


def entry_files(code):
    """The files of a tiny module's entry, by role."""
    e = code.entry
    nb = {p.name.split(".", 1)[1]: p for p in e.numba_files()}
    roles = {"module": e.py, "record": e.record_path, "lock": e.lock_path}
    for key, p in nb.items():        # e.g. scale-7.py311.nbi -> scale.nbi
        fn, ext = key.split("-")[0], key.rsplit(".", 1)[1]
        roles[f"{fn}.{ext}"] = p
    return roles


ROLES = ["module", "record", "scale.nbi", "scale.nbc", "total.nbi", "total.nbc"]
CASES = [f"{role}:{how}" for role in ROLES for how in ("truncate", "corrupt")]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Every case's module compiled into one folder, then one file of it damaged; and
    what a fresh process made of each."""
    d = tmp_path_factory.mktemp("damaged")
    old = os.environ.get("RGRAPH_CACHE_DIR")
    os.environ["RGRAPH_CACHE_DIR"] = str(d)
    try:
        names = CASES + ["lock:corrupt", "numba-refuses", "clean"]
        codes = [tiny(case) for case in names]
        with ThreadPoolExecutor(2) as pool:         # two compiling children at a time
            assert list(pool.map(run_tiny, codes)) == [12.0] * len(codes)
        files = {case: entry_files(code) for case, code in zip(names, codes)}
    finally:
        if old is None:
            del os.environ["RGRAPH_CACHE_DIR"]
        else:
            os.environ["RGRAPH_CACHE_DIR"] = old
    for case in CASES:
        role, how = case.split(":")
        damage(files[case][role], how)
    files["lock:corrupt"]["lock"].write_bytes(b"not a lock")
    # an index file that matches its record but that numba cannot read
    e = tiny("numba-refuses").entry
    bad = files["numba-refuses"]["total.nbi"]
    bad.write_bytes(b"\x80\x04not a pickle")
    rec = json.loads(e.record_path.read_text())
    rec["files"][bad.name] = [bad.stat().st_size, cache.sha256(bad)]
    e.record_path.write_text(json.dumps(rec))
    out, stderr = check_in_fresh_process(CASES + ["lock:corrupt", "numba-refuses", "clean"],
                                         d)
    return out, files, stderr


class TestCache:
    # ------------------------------------------------------------------ damage
    @pytest.mark.parametrize("case", CASES)
    def test_a_damaged_file_is_rebuilt_with_one_warning(self, damaged, case):
        out, files, stderr = damaged
        got = out[case]
        assert got["value"] == 12.0
        assert len(got["warnings"]) == 1, got["warnings"]
        assert files[case][case.split(":")[0]].name in got["warnings"][0]
        assert got["compiled"] > 0                     # rebuilt ...
        assert "Traceback" not in stderr
        entry = cache.Entry(files[case]["module"].parent, files[case]["module"].stem)
        rec = entry.read_record()                      # ... and whole again
        assert rec["compiled"] and set(rec["files"]) == {p.name for p in entry.numba_files()}

    def test_an_intact_entry_loads_without_a_word(self, damaged):
        out, _, _ = damaged
        assert out["clean"]["warnings"] == [] and out["clean"]["compiled"] == 0
        assert out["lock:corrupt"]["warnings"] == [] and out["lock:corrupt"]["value"] == 12.0

    def test_code_numba_cannot_load_is_rebuilt_with_one_warning(self, damaged):
        out, _, _ = damaged
        got = out["numba-refuses"]
        assert got["value"] == 12.0 and got["compiled"] > 0
        assert len(got["warnings"]) == 1 and "numba could not load" in got["warnings"][0]

    def test_a_damaged_estimator_entry_gives_the_same_numbers(self, compiled_together):
        """End to end: an estimator whose loop's object code was corrupted."""
        folder, outs = compiled_together
        target = next(p for p in (folder / "__pycache__").iterdir()
                      if ".run-" in p.name and p.suffix == ".nbc")
        damage(target, "corrupt")
        again = run_estimator(folder)
        assert again["g"] == outs[0]["g"]
        assert again["warnings"] == 1 and target.name in again["stderr"]
        assert "Traceback" not in again["stderr"]

    def test_inner_functions_called_directly_leave_the_cache_alone(self, tmp_path,
                                                                   monkeypatch):
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(tmp_path))
        code = tiny("direct")
        assert run_tiny(code) == 12.0
        before = {p.name: p.read_bytes() for p in code.entry.numba_files()}
        x = np.ones(3, np.float32)               # a signature the cache does not hold
        code.module.scale(x, 2.0)                # compiled here, as numba would ...
        assert x.tolist() == [2.0, 2.0, 2.0]
        assert {p.name: p.read_bytes() for p in code.entry.numba_files()} == before
        assert code.entry.read_record()["compiled"]      # ... and the entry still checks
        with pytest.raises(TypeError):   # an entry point never compiles in this process:
            code.module.total(x, 2.0)
        assert code.call("total", x, 2.0) == 12.0   # a child compiles it, this one loads
        assert code.compiled_here == 2 and code.entry.read_record()["compiled"][1]

    # ------------------------------------------------------ unwritable folders
    def test_cache_dir_that_is_a_file_falls_back_with_a_warning(self, tmp_path, monkeypatch):
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(blocker / "cache"))
        with pytest.warns(cache.CacheWarning) as w:
            est = rg.compile(rg.cells.tanh_rnn(3, 17, 3), "rtrl", backend="numpy")
        assert len(w) == 1
        msg = str(w[0].message)
        assert "RGRAPH_CACHE_DIR" in msg and str(blocker / "cache") in msg
        assert "\n" not in msg
        assert est.path.parent == cache.temporary_dir()
        rng = np.random.default_rng(0)
        g = est.total_gradient(est.init_params(0), rng.standard_normal((5, 3)),
                               rng.integers(0, 3, 5))
        assert np.all(np.isfinite(g["W"]))

    def test_unwritable_home_falls_back_with_a_warning(self, tmp_path, monkeypatch):
        home = tmp_path / "home-is-a-file"
        home.write_text("")
        monkeypatch.delenv("RGRAPH_CACHE_DIR", raising=False)
        monkeypatch.setenv("HOME", str(home))
        with pytest.warns(cache.CacheWarning, match="RGRAPH_CACHE_DIR") as w:
            est = rg.compile(rg.cells.tanh_rnn(3, 18, 3), "rtrl", backend="numpy")
        assert len(w) == 1 and est.path.parent == cache.temporary_dir()

    def test_the_temporary_cache_is_private(self):
        d = cache.temporary_dir()
        st = os.stat(d)
        assert st.st_uid == os.getuid() and not (st.st_mode & 0o077)

    def test_a_read_only_warm_cache_is_used_as_it_is(self, tmp_path, monkeypatch):
        ro = tmp_path / "shared"
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(ro))
        assert run_tiny(tiny("read-only")) == 12.0      # warm it
        before = {p: p.stat().st_mtime_ns for p in ro.rglob("*")}
        for p in [ro, *ro.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            tmp = tmp_path / "tmp"       # a temporary cache of this test's own
            tmp.mkdir()
            out, _ = check_in_fresh_process(["read-only", "read-only-cold"], ro,
                                                 READONLY=str(ro), TMPDIR=str(tmp))
        finally:
            for p in [ro, *ro.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
        warm, cold = out["read-only"], out["read-only-cold"]
        assert warm == {**warm, "value": 12.0, "compiled": 0, "warnings": []}
        assert warm["path"].startswith(str(tmp))        # copied out, loaded from the copy
        assert {p: p.stat().st_mtime_ns for p in ro.rglob("*")} == before
        # what the read-only folder lacks is compiled in the temporary cache, with a word
        assert cold["value"] == 12.0 and cold["compiled"] > 0
        assert len(cold["warnings"]) == 1 and "RGRAPH_CACHE_DIR" in cold["warnings"][0]

    # --------------------------------------------------- processes at once
    def test_two_processes_compiling_one_module_at_once(self, compiled_together):
        """Both succeed with the same numbers; one compiled, the other waited for it
        and loaded its result; nothing half-written was read, nothing was left over."""
        folder, outs = compiled_together
        assert [o["rc"] for o in outs] == [0, 0], [o["stderr"][-2000:] for o in outs]
        assert outs[0]["g"] == outs[1]["g"]
        assert sorted(o["compiled"] > 0 for o in outs) == [False, True]
        assert all(o["warnings"] == 0 and "Traceback" not in o["stderr"] for o in outs)
        assert not [p for p in folder.rglob("*") if ".tmp" in p.name]

    # ------------------------------------------------------------ determinism
    def test_compiling_and_loading_processes_give_the_same_bits(self, tmp_path):
        """KF-RTRL and UORO, 5,000 online steps each: the process that compiles (empty
        cache) and a process that loads from the cache end with the same parameters,
        bit for bit. Before the fix, the KF-RTRL losses parted at step 12."""
        first = train_in_fresh_process(tmp_path)
        second = train_in_fresh_process(tmp_path)
        assert all(c > 0 for c in first["compiled"]) and second["compiled"] == [0, 0]
        assert first["params"] == second["params"]
        assert first["curves"] == second["curves"]

    # --------------------------------------------------------- rgraph cache
    def test_cache_command_lists_prunes_and_clears(self, tmp_path, monkeypatch, capsys):
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(tmp_path))
        ests = [rg.compile(rg.cells.tanh_rnn(3, n, 3), "rtrl", backend="numpy")
                for n in (11, 12, 13)]
        for i, est in enumerate(ests):      # used in this order: n = 4 longest ago
            os.utime(est.code.entry.record_path, (1e9 + i, 1e9 + i))
        (tmp_path / "__pycache__").mkdir(exist_ok=True)
        stray = tmp_path / "__pycache__" / "gone_numba_0123.f-1.py311.nbi"
        stray.write_bytes(b"x")
        os.utime(stray, (1e9, 1e9))
        assert cli(["cache"]) == 0
        out = capsys.readouterr().out
        assert "3 entries" in out and "1 leftover" in out, out
        assert all(e.path.name in out for e in ests)
        sizes = [e.code.entry.size() for e in ests]
        assert cli(["cache", "--prune", "--max-size", str(sum(sizes[1:]))]) == 0
        assert "pruned 1 entry" in capsys.readouterr().out
        assert not ests[0].path.exists() and ests[1].path.exists() and ests[2].path.exists()
        assert not stray.exists()
        assert cli(["cache", "--clear"]) == 0
        assert "removed 2 entries" in capsys.readouterr().out
        assert not list(tmp_path.glob("*.py"))
        assert cli(["cache", "--prune", "--max-size", "lots"]) == 2
        assert "--max-size" in capsys.readouterr().err

    def test_new_entries_prune_the_cache_to_its_cap(self, tmp_path, monkeypatch):
        monkeypatch.setenv("RGRAPH_CACHE_DIR", str(tmp_path))
        old = [rg.compile(rg.cells.tanh_rnn(3, n, 3), "rtrl", backend="numpy")
               for n in (14, 15)]
        for i, est in enumerate(old):
            os.utime(est.code.entry.record_path, (1e9 + i, 1e9 + i))
        cap = old[1].code.entry.size() * 2 + 1000
        monkeypatch.setenv("RGRAPH_CACHE_MAX_SIZE", str(cap))
        (tmp_path / ".last-prune").unlink(missing_ok=True)
        new = rg.compile(rg.cells.tanh_rnn(3, 16, 3), "rtrl", backend="numpy")
        assert new.path.exists() and old[1].path.exists()
        assert not old[0].path.exists()        # the least recently used went
        assert sum(i.size for i in cache.scan(tmp_path)) <= cap

    def test_sizes_parse(self):
        assert cache.parse_size("1G") == 1 << 30
        assert cache.parse_size("500M") == 500 << 20
        assert cache.parse_size("64k") == 64 << 10
        assert cache.parse_size("123") == 123
        with pytest.raises(ValueError, match="number of bytes"):
            cache.parse_size("big")


# ------------------------------------------------------------- fresh processes
ESTIMATOR = textwrap.dedent('''
    import json, warnings
    import numpy as np
    import rgraph as rg
    from rgraph.cache import CacheWarning
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        est = rg.compile(rg.cells.tanh_rnn(3, 5, 3), "uoro", backend="numba")
        rng = np.random.default_rng(0)
        g = est.total_gradient(est.init_params(0), rng.standard_normal((30, 3)),
                               rng.integers(0, 3, 30), seed=3)
    n = sum(issubclass(x.category, CacheWarning) for x in w)
    for x in w:
        print(x.message, file=__import__("sys").stderr)
    print(json.dumps({"g": [float(v) for v in g["W"].ravel()],
                      "compiled": est.code.compiled_here, "warnings": n}))
''')


def run_estimator(folder):
    proc = subprocess.run([sys.executable, "-c", ESTIMATOR], capture_output=True,
                          text=True, env=dict(os.environ, RGRAPH_CACHE_DIR=str(folder)),
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


@pytest.fixture(scope="module")
def compiled_together(tmp_path_factory):
    """Two processes started at once on an empty cache, compiling the same module."""
    folder = tmp_path_factory.mktemp("together")
    env = dict(os.environ, RGRAPH_CACHE_DIR=str(folder))
    procs = [subprocess.Popen([sys.executable, "-c", ESTIMATOR], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = []
    try:
        for p in procs:
            so, se = p.communicate(timeout=600)
            res = json.loads(so.strip().splitlines()[-1]) if p.returncode == 0 else {}
            outs.append({**res, "rc": p.returncode, "stderr": se})
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return folder, outs


TRAIN = textwrap.dedent('''
    import hashlib, json
    import numpy as np
    import rgraph as rg
    from rgraph.tasks import make_task
    task = make_task("anbn")
    out = {"params": [], "curves": [], "compiled": []}
    for cell, est_name in ((rg.cells.lstm(task.n_in, 8, task.n_out), "kf-rtrl"),
                           (rg.cells.tanh_rnn(task.n_in, 16, task.n_out), "uoro")):
        est = rg.compile(cell, est_name, loss=task.loss)
        tr = est.trainer(est.init_params(0), rg.Adam(1e-2), seed=0)
        tr.run_task(task, 5000)
        h = hashlib.sha256()
        for k in sorted(tr.params):
            h.update(np.ascontiguousarray(tr.params[k]).tobytes())
        out["params"].append(h.hexdigest())
        out["curves"].append(hashlib.sha256(np.asarray(tr.curve).tobytes()).hexdigest())
        out["compiled"].append(est.code.compiled_here)
    print(json.dumps(out))
''')


def train_in_fresh_process(folder):
    proc = subprocess.run([sys.executable, "-c", TRAIN], capture_output=True, text=True,
                          env=dict(os.environ, RGRAPH_CACHE_DIR=str(folder)), timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
