"""Online training memory does not grow with the number of steps (UORO, KF-RTRL, and
the sparse and Kronecker-sum families: SnAp-1, OK)."""
import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import rgraph as rg
    from rgraph.tasks import AnBn
    steps, name = int(sys.argv[1]), sys.argv[2]
    task = AnBn(1, 32)
    est = rg.compile(rg.cells.lstm(3, 16, 3), name)
    tr = est.trainer(est.init_params(0), rg.Adam(1e-3), chunk=2000)
    tr.run_task(task, 2000, record="chunk")            # compile, warm up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tr.run_task(task, steps, record="chunk")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kb": base, "peak_kb": peak, "steps": tr.step}))
""")


def peak(steps, name):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(steps), name],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["uoro", "kf-rtrl", "snap-1", "ok(2)"])
def test_peak_memory_is_flat_in_the_number_of_steps(name):
    peak(10, name)                          # compile once: later processes load it
    short, long = peak(10_000, name), peak(100_000, name)
    assert long["steps"] == 102_000
    growth_kb = long["peak_kb"] - short["peak_kb"]
    assert long["peak_kb"] - long["base_kb"] < 2048
    print(f"\n{name}: peak RSS {short['peak_kb'] / 1024:.1f} MB after 1e4 steps, "
          f"{long['peak_kb'] / 1024:.1f} MB after 1e5 steps")
    assert growth_kb < 2048, (short, long)
