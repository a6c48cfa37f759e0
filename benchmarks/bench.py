"""Speed of the compiled online training loops, against hand-written NumPy in one run.

For each cell, size, batch and estimator: µs per online step (forward + loss +
estimator + parameter update, all streams of the batch), rgraph's compiled loop next to
the same UORO and KF-RTRL written by hand in NumPy (``handwritten``), and, for
KF-RTRL, next to the one product it cannot avoid, H_t A_{t-1}, done alone by numpy's
BLAS. BLAS threads are fixed (threadpoolctl) and printed: a ratio means nothing
otherwise. Timings are the best of ``repeats`` runs, each about ``seconds`` long.
"""
from __future__ import annotations

import time

import numpy as np

from rgraph import SGD
from rgraph import compile as rg_compile
from rgraph.cells import gru, lstm, tanh_rnn
from rgraph.estimators.names import parse_estimator

from .handwritten import HandKFRTRL, HandUORO

CELLS = {"tanh": tanh_rnn, "lstm": lstm,
         # PyTorch's form: W_ih x + b_ih + W_hh h + b_hh, merged into one Kronecker factor
         "rnn_pytorch": lambda i, n, o: tanh_rnn(i, n, o, form="pytorch"),
         "lstm_pytorch": lambda i, n, o: lstm(i, n, o, form="pytorch"),
         "gru_pytorch": lambda i, n, o: gru(i, n, o, form="pytorch")}
ESTIMATORS = ("uoro", "kf-rtrl", "tbptt(16)", "rtrl", "dodge",
              "projected-uoro[preactivation]")
HAND = {"uoro": HandUORO, "kf-rtrl": HandKFRTRL}


def state_and_cols(cell, n):
    """(state size, KF-RTRL's columns of A) of a benchmark cell of n units."""
    return {"lstm": (2 * n, 4 * n), "lstm_pytorch": (2 * n, 4 * n),
            "gru_pytorch": (n, 6 * n)}.get(cell, (n, n))


def too_big(cell, n, batch, est):
    """Configurations that would take minutes per step on 2 cores (skipped)."""
    S = state_and_cols(cell, n)[0]
    if est == "rtrl":
        return n > 64 or batch > 1
    if est == "kf-rtrl":
        return S * n * batch > 64 * 64 * 32 * 2 and n > 64
    return False


def _time(fn, seconds, repeats):
    """Best per-call time of fn(k) = run k steps, with k chosen to last ~seconds."""
    fn(2)
    t = time.perf_counter()
    fn(4)
    per = max((time.perf_counter() - t) / 4, 1e-7)
    k = int(min(max(seconds / per, 4), 200000))
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn(k)
        best = min(best, (time.perf_counter() - t) / k)
    return best


def time_rgraph(cell_name, n, batch, est_name, seconds=0.5, repeats=3, backend="numba",
                threads=1):
    cell = CELLS[cell_name](8, n, 8)
    t0 = time.perf_counter()
    est = rg_compile(cell, est_name, backend=backend, blas_threads=threads)
    p = est.init_params(0)
    rng = np.random.default_rng(0)
    T = 400000
    xs = np.eye(8)[rng.integers(0, 8, (min(T, 20000), batch))]
    ys = rng.integers(0, 8, (min(T, 20000), batch))
    tr = est.trainer(p, SGD(1e-5), batch=batch, chunk=10**9)
    tr.run(xs[:2], ys[:2])
    compile_s = time.perf_counter() - t0
    L = xs.shape[0]

    def run(k):
        done = 0
        while done < k:
            m = min(k - done, L)
            tr.run(xs[:m], ys[:m])
            done += m
    return _time(run, seconds, repeats) * 1e6, compile_s


def time_hand(cell_name, n, batch, est_name, seconds=0.5, repeats=3):
    cls = HAND[est_name]
    params = rg_compile(CELLS[cell_name](8, n, 8), "bptt", backend="numpy").init_params(0)
    h = cls(cell_name, 8, n, 8, params, batch=batch, lr=1e-5)
    rng = np.random.default_rng(0)
    xs = np.eye(8)[rng.integers(0, 8, (1000, batch))]
    ys = rng.integers(0, 8, (1000, batch))

    def run(k):
        for t in range(k):
            h.step(xs[t % 1000], ys[t % 1000])
    return _time(run, seconds, repeats) * 1e6


def time_gemm(cell_name, n, batch, seconds=0.3, repeats=3):
    """numpy's BLAS for H_t A_{t-1} alone: (S x S) @ (S x |z|), once per stream."""
    S, Z = state_and_cols(cell_name, n)
    H, A = np.random.rand(S, S), np.random.rand(S, Z)
    out = np.empty((S, Z))

    def run(k):
        for _ in range(k * batch):
            np.dot(H, A, out)
    return _time(run, seconds, repeats) * 1e6


def bench(cells=("tanh", "lstm"), sizes=(16, 64, 256), batches=(1, 32),
          estimators=ESTIMATORS, seconds=0.5, repeats=3, threads=1, hand=True,
          out=print):
    """Run the benchmark; prints a table and returns its rows (dicts)."""
    from threadpoolctl import threadpool_info, threadpool_limits
    keys = {e: parse_estimator(e)[0] for e in estimators}   # bad names fail before timing
    rows = []
    with threadpool_limits(threads):
        libs = sorted({f"{i['internal_api']} ({i['num_threads']} thread"
                       f"{'s' if i['num_threads'] > 1 else ''})" for i in threadpool_info()})
        out(f"rgraph bench: µs per online step (all streams), best of {repeats}; "
            f"BLAS: {', '.join(libs) or 'none'}")
        out(f"{'cell':<13}{'n':>5}{'B':>4}  {'estimator':<30}{'rgraph':>10}"
            f"{'hand NumPy':>12}{'speed-up':>10}{'GEMM H·A':>10}{'/GEMM':>7}")
        for cell in cells:
            for n in sizes:
                for B in batches:
                    gemm = None
                    for e in estimators:
                        if too_big(cell, n, B, keys[e]):
                            continue
                        us, _ = time_rgraph(cell, n, B, e, seconds, repeats,
                                            threads=threads)
                        row = {"cell": cell, "n": n, "batch": B, "estimator": e,
                               "rgraph_us": us}
                        line = f"{cell:<13}{n:>5}{B:>4}  {e:<30}{us:>10.1f}"
                        if hand and keys[e] in HAND and cell in ("tanh", "lstm"):
                            h = time_hand(cell, n, B, keys[e], seconds, repeats)
                            row.update(hand_us=h, speedup=h / us)
                            line += f"{h:>12.1f}{h / us:>9.1f}x"
                        else:
                            line += " " * 22
                        if keys[e] == "kf-rtrl":
                            gemm = gemm or time_gemm(cell, n, B)
                            row.update(gemm_us=gemm, over_gemm=us / gemm)
                            line += f"{gemm:>10.1f}{us / gemm:>6.2f}x"
                        out(line)
                        rows.append(row)
    return rows
