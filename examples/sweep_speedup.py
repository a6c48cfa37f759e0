"""How much faster is ``rgraph sweep`` on a local Dask cluster than ``--serial``?

Eight equal runs (LSTM-32, UORO, aⁿbⁿ, seeds 0-7, ``--steps`` each), once with
``--serial`` and once with ``--workers 2`` (default: as many workers as cores), each
the whole command, timed end to end from the shell's point of view: Python start, the
cache warm-up, the local cluster's start and stop, the runs, the summary. The folders
are emptied first, so nothing is skipped. The records of the two must agree bit for bit
(``params_sha256``); the script checks that too.

    python examples/sweep_speedup.py                    # ~3 min on 2 idle cores
    python examples/sweep_speedup.py --steps 100000     # smoke run

The machine's load average is printed before and after each command: on a machine
shared with other jobs the parallel run competes for the cores and the figure falls.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def sweep(out, mode, args):
    cmd = [sys.executable, "-m", "rgraph", "sweep", "lstm", "--task", "anbn", "--hidden",
           str(args.hidden), "-e", "uoro", "--seeds", f"0-{args.runs - 1}", "--steps",
           str(args.steps), "--valid-steps", "1000", "--out", str(out), "-q", *mode]
    shutil.rmtree(out, ignore_errors=True)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    recs = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    return {"wall": wall, "train": sum(r["result"]["seconds"] for r in recs),
            "sha": {r["id"]: r["result"]["params_sha256"] for r in recs},
            "load": (load0, os.getloadavg()[0])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000, help="steps per run")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="runs/examples/sweep_speedup")
    args = ap.parse_args(argv)
    out = Path(args.out)
    print(f"{args.runs} runs of LSTM-{args.hidden} UORO on aⁿbⁿ, {args.steps:,} steps each; "
          f"{os.cpu_count()} cores")
    ser = sweep(out / "serial", ["--serial"], args)
    par = sweep(out / "dask", ["--workers", str(args.workers)], args)
    same = ser["sha"] == par["sha"]
    print(f"{'':24}{'wall s':>8}{'training s (sum)':>18}{'load avg before/after':>24}")
    for name, r in (("--serial", ser), (f"--workers {args.workers}", par)):
        print(f"{name:24}{r['wall']:>8.1f}{r['train']:>18.1f}"
              f"{r['load'][0]:>15.2f} / {r['load'][1]:.2f}")
    print(f"speed-up (serial wall / dask wall): {ser['wall'] / par['wall']:.2f}x; "
          f"records identical (params_sha256): {same}")
    (out / "speedup.txt").write_text(
        f"runs {args.runs} steps {args.steps} hidden {args.hidden} workers {args.workers}\n"
        f"serial wall {ser['wall']:.1f} s, training {ser['train']:.1f} s, load "
        f"{ser['load'][0]:.2f}->{ser['load'][1]:.2f}\n"
        f"dask wall {par['wall']:.1f} s, training {par['train']:.1f} s, load "
        f"{par['load'][0]:.2f}->{par['load'][1]:.2f}\n"
        f"speed-up {ser['wall'] / par['wall']:.2f}x, identical records {same}\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
