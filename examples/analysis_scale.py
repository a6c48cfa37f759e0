"""How long ``rg.analyze(cell).report()`` takes, and how much memory, as cells grow.

Each row runs in a fresh process: the time from the end of ``import rgraph`` to the
report's return (the analysis, every family's spec with its memory and flop figures,
the SnAp-n masks), and the process's peak resident memory above what it held after
the import (``ru_maxrss``). Then the time ``rg.compile(cell, "rtrl")`` takes to refuse
RTRL for memory on the largest cell (``MemoryRefused``), which is computed from the
estimator's declared buffers before anything is generated.

    python examples/analysis_scale.py            # LSTM 64 ... 1024, a 3-layer LSTM-256
    python examples/analysis_scale.py --quick    # LSTM 64 and 256 only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, resource, sys, time
import rgraph as rg
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n, layers, what = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

cell = rg.cells.lstm(n, n, n, layers=layers)
t = time.perf_counter()
if what == "report":
    lines = rg.analyze(cell).report().count("\n") + 1
    refused = ""
else:
    try:
        rg.compile(cell, "rtrl")
        refused = "compiled"
    except rg.MemoryRefused as e:
        refused = str(e).split(" but ")[0]
    lines = 0
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"s": seconds, "peak_mb": peak / 1024, "lines": lines,
                  "refused": refused}))
"""


def measure(n: int, layers: int, what: str = "report") -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, str(n), str(layers), what],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two rows only")
    args = ap.parse_args()
    cells = [(64, 1), (256, 1)] if args.quick else \
        [(64, 1), (128, 1), (256, 1), (512, 1), (1024, 1), (256, 3)]
    print(f"rg.analyze(cell).report(), a fresh process per row, {os.cpu_count()} cores\n")
    print(f"{'cell':<16} {'seconds':>8} {'peak MB':>8}")
    for n, layers in cells:
        r = measure(n, layers)
        label = f"lstm-{n}" + (f" x{layers}" if layers > 1 else "")
        print(f"{label:<16} {r['s']:>8.2f} {r['peak_mb']:>8.0f}", flush=True)
    r = measure(1024, 1, "refuse")
    print(f"\nrg.compile(lstm-1024, 'rtrl'): {r['s']:.2f} s to refuse ({r['refused']})")


if __name__ == "__main__":
    main()
