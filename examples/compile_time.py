"""How long the first use of a compiled estimator takes, as cells grow.

For each cell: ``rg.compile(cell, "uoro")`` and the first ``trainer.run`` in a fresh
process with an empty cache folder (cold: the module is generated, a child process
compiles it with numba, this one loads it), then the same in a second fresh process
with that folder (warm: everything is loaded from the cache). Both times are measured
from the end of ``import rgraph``.

Two curves: the width n of a tanh RNN and of an LSTM (the kernels loop over n, so
their code does not grow with it), and the number of nodes of a cell (stacked LSTM
layers, each with its own state, under one readout), which sets the size of the
generated code.

    python examples/compile_time.py             # the whole table (several minutes)
    python examples/compile_time.py --quick     # n = 32 and the smallest stacks only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

WORKER = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import rgraph as rg
t1 = time.perf_counter()
kind, n, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

if kind == "tanh":
    cell = rg.cells.tanh_rnn(8, n, 8)
elif kind == "lstm":
    cell = rg.cells.lstm(8, n, 8)
else:
    cell = rg.cells.lstm(8, n, 8, layers=layers)
est = rg.compile(cell, "uoro")
t2 = time.perf_counter()
ids = np.random.default_rng(0).integers(0, 8, 20)
trainer = est.trainer(est.init_params(seed=0), batch=1, seed=0)
trainer.run(np.eye(8)[ids], np.roll(ids, 1))
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "generate": t2 - t1, "ready": t3 - t1,
                  "nodes": len(cell.nodes), "compiled": est.code.compiled_here}))
"""


def measure(kind: str, n: int, layers: int, cache: str) -> dict:
    env = dict(os.environ, RGRAPH_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", WORKER, kind, str(n), str(layers)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(label: str, kind: str, n: int, layers: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="rgraph-ctime-") as cache:
        cold = measure(kind, n, layers, cache)
        warm = measure(kind, n, layers, cache)
    assert cold["compiled"] > 0 and warm["compiled"] == 0
    print(f"{label:<18} {n:>5} {cold['nodes']:>6} {cold['ready']:>9.2f} "
          f"{warm['ready']:>9.3f} {warm['generate']:>9.3f}", flush=True)
    return {"cell": label, "n": n, "nodes": cold["nodes"], "cold_s": cold["ready"],
            "warm_s": warm["ready"], "warm_generate_s": warm["generate"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few rows only")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    widths = [32] if args.quick else [16, 32, 64, 128, 256]
    stacks = [1, 2] if args.quick else [1, 2, 3, 6]    # about 25, 45, 65, 125 nodes
    print("UORO, softmax_xent, float64; seconds from the end of `import rgraph` to the "
          "first run's return\n(cold: empty cache folder; warm: a second process; "
          "generate: rg.compile, warm)\n")
    print(f"{'cell':<18} {'n':>5} {'nodes':>6} {'cold s':>9} {'warm s':>9} "
          f"{'generate':>9}")
    rows = [row("tanh_rnn", "tanh", n) for n in widths]
    rows += [row("lstm", "lstm", n) for n in widths]
    rows += [row(f"lstm x{k} (stacked)", "stack", 16, k) for k in stacks]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
