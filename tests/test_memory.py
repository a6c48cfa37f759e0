"""Online training memory does not grow with the number of steps (UORO, KF-RTRL, and
the sparse and Kronecker-sum families: SnAp-1, OK)."""
import json
import subprocess
import sys
import textwrap

import pytest

# one process per estimator: after a warm-up, the peak RSS after 1e4 more steps and
# after 1e5 (ru_maxrss is a high-water mark, so the second figure covers the whole run)
SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import rgraph as rg
    from rgraph.tasks import AnBn
    name = sys.argv[1]
    task = AnBn(1, 32)
    est = rg.compile(rg.cells.lstm(3, 4, 3), name)     # the zoo's LSTM: modules shared
    tr = est.trainer(est.init_params(0), rg.Adam(1e-3), chunk=2000)
    tr.run_task(task, 2000, record="chunk")            # warm up
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    base = peak()
    tr.run_task(task, 10_000, record="chunk")
    short = peak()
    tr.run_task(task, 90_000, record="chunk")
    print(json.dumps({"base_kb": base, "short_kb": short, "long_kb": peak(),
                      "steps": tr.step}))
""")


@pytest.mark.parametrize("name", ["uoro", "kf-rtrl", "snap-1", "ok(2)"])
def test_peak_memory_is_flat_in_the_number_of_steps(name):
    out = subprocess.run([sys.executable, "-c", SCRIPT, name], capture_output=True,
                         text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["steps"] == 102_000
    print(f"\n{name}: peak RSS {r['short_kb'] / 1024:.1f} MB after 1e4 steps, "
          f"{r['long_kb'] / 1024:.1f} MB after 1e5 steps")
    assert r["long_kb"] - r["short_kb"] < 2048, r
    assert r["long_kb"] - r["base_kb"] < 2048, r
