"""The speed benchmark: µs per online training step of every estimator, next to the
same UORO and KF-RTRL written by hand in NumPy, UORO, KF-RTRL and RTRL written by hand
in JAX (if jax is installed: pip install -e '.[bench]'), and numpy's GEMMs for H_t A_{t-1}
and D_t J_{t-1}, all measured in one run on pinned cores with the BLAS and XLA thread
counts fixed (``rgraph bench`` runs the same).

    python examples/bench.py [--threads 1] [--cores 1] [--sizes 16,64,128,256] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's benchmarks/
from benchmarks.bench import ESTIMATORS, bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="tanh,lstm")
    ap.add_argument("--sizes", default="16,64,128,256")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--estimators", help="semicolon-separated (default: "
                                         f"{';'.join(ESTIMATORS)})")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads")
    ap.add_argument("--cores", type=int, default=1, help="CPUs the process is pinned to")
    ap.add_argument("--no-hand", action="store_true", help="skip the NumPy baselines")
    ap.add_argument("--no-jax", action="store_true", help="skip the JAX baselines")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--out", default="runs/examples/bench")
    ap.add_argument("--quick", action="store_true", help="n=16, batch 1, a few estimators")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.batches, args.seconds = "16", "1", 0.1
    ests = ESTIMATORS if not args.quick else ("uoro", "kf-rtrl", "tbptt(16)")
    if args.estimators:
        ests = [e.strip() for e in args.estimators.split(";") if e.strip()]
    lines = []

    def show(line):
        print(line, flush=True)
        lines.append(line)
    rows = bench(cells=args.cells.split(","), sizes=[int(n) for n in args.sizes.split(",")],
                 batches=[int(b) for b in args.batches.split(",")], estimators=ests,
                 seconds=args.seconds, threads=args.threads, cores=args.cores,
                 hand=not args.no_hand, jax=not args.no_jax, out=show)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(rows, indent=1))
    (out / "bench.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'bench.txt'} and {out / 'bench.json'}")


if __name__ == "__main__":
    main()
