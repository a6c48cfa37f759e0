"""Generated modules are files named by their content; numba compiles a module once, in
a child process, and every process (the first included) loads the compiled code from the
on-disk cache. Faults of the cache: test_bad_input.py, class TestCache."""
import json
import os
import subprocess
import sys
import textwrap

import rgraph as rg

SCRIPT = textwrap.dedent("""
    import json, time, numpy as np
    t0 = time.perf_counter()
    import rgraph as rg
    from numba.core.registry import CPUDispatcher
    est = rg.compile(rg.cells.tanh_rnn(3, 5, 3), "uoro", backend="numba")
    p = est.init_params(0)
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    t1 = time.perf_counter()
    g = est.total_gradient(p, xs, ys, seed=3)
    t2 = time.perf_counter()
    disp = [f for f in vars(est.module).values() if isinstance(f, CPUDispatcher)]
    print(json.dumps({
        "path": str(est.path), "first_call": t2 - t1, "process": t2 - t0,
        "misses": sum(sum(d.stats.cache_misses.values()) for d in disp),
        "hits": sum(sum(d.stats.cache_hits.values()) for d in disp),
        "compiled": est.code.compiled_here, "g": float(np.sum(g["W"]))}))
""")


def run_child(cache):
    env = dict(os.environ, RGRAPH_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_from_cache(tmp_path):
    first = run_child(tmp_path)
    second = run_child(tmp_path)
    # the first process had its module compiled (by a child) and loaded it, as the
    # second does: nothing is ever compiled in the process that calls it
    assert first["compiled"] > 0 and second["compiled"] == 0
    assert first["misses"] == second["misses"] == 0
    assert first["hits"] == second["hits"] > 0
    assert second["path"] == first["path"] and second["g"] == first["g"]
    assert str(tmp_path) in second["path"]
    print(f"\ncold compile + call {first['first_call']:.2f}s, "
          f"warm load + call {second['first_call']:.3f}s")


def test_files_are_named_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("RGRAPH_CACHE_DIR", str(tmp_path))
    a = rg.compile(rg.cells.tanh_rnn(3, 5, 3), "rtrl", backend="numpy")
    b = rg.compile(rg.cells.tanh_rnn(3, 5, 3), "rtrl", backend="numpy")
    c = rg.compile(rg.cells.tanh_rnn(3, 6, 3), "rtrl", backend="numpy")
    assert a.path == b.path != c.path
    assert a.path.parent == tmp_path
    head = a.source.splitlines()[:3]
    assert "rgraph" in head[0] and "content hash" in head[1]
    assert a.path.name.endswith(head[1].split()[-1] + ".py")
