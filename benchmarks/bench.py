"""Speed of the compiled online training loops, against hand-written baselines in one run.

For each cell, size, batch and estimator: µs per online step (forward + loss +
estimator + parameter update, all streams of the batch), rgraph's compiled loop next to

* the same UORO and KF-RTRL written by hand in NumPy (``handwritten``);
* UORO, KF-RTRL and exact RTRL written by hand in JAX (``handjax``: jit of a scan over
  a chunk of steps, vmap over the streams), timed over whole chunks with the compile
  excluded; projected UORO is set against JAX's UORO, which does the same work;
* the one product each cannot avoid, done alone by numpy's BLAS: H_t A_{t-1} for
  KF-RTRL, (S x S) @ (S x |z|), and D_t J_{t-1} for RTRL, (S x S) @ (S x P) with P the
  recurrent parameter count.

The process is pinned to ``cores`` CPUs (every thread, restored afterwards), BLAS
threads are fixed (threadpoolctl) and XLA runs on one thread; all three are printed: a
ratio means nothing otherwise. Timings are the best of ``repeats`` runs, each about
``seconds`` long. Without jax installed the JAX column is left out (one line says so).
"""
from __future__ import annotations

import importlib
import math
import os
import time

import numpy as np

from rgraph import SGD
from rgraph import compile as rg_compile
from rgraph import precompile as rg_precompile
from rgraph.cells import gru, lru, lstm, tanh_rnn
from rgraph.estimators.names import parse_estimator

from .handwritten import HandKFRTRL, HandUORO

CELLS = {"tanh": tanh_rnn, "lstm": lstm,
         # PyTorch's form: W_ih x + b_ih + W_hh h + b_hh, merged into one Kronecker factor
         "rnn_pytorch": lambda i, n, o: tanh_rnn(i, n, o, form="pytorch"),
         "lstm_pytorch": lambda i, n, o: lstm(i, n, o, form="pytorch"),
         "gru_pytorch": lambda i, n, o: gru(i, n, o, form="pytorch"),
         # the LRU with n complex units on a residual stream as wide as the input (8): no
         # encoder, so each layer's own parameters reach only their own units; one layer
         # and Zucchet et al.'s stack of two
         "lru": lambda i, n, o: lru(i, n, o, width=i),
         "lru2": lambda i, n, o: lru(i, n, o, layers=2, width=i)}
ESTIMATORS = ("uoro", "kf-rtrl", "tbptt(16)", "rtrl", "dodge",
              "projected-uoro[preactivation]")
HAND = {"uoro": HandUORO, "kf-rtrl": HandKFRTRL}
# the estimator whose JAX version each rgraph estimator is set against
JAX_OF = {"uoro": "uoro", "projected-uoro": "uoro", "kf-rtrl": "kf-rtrl", "rtrl": "rtrl"}
JAX_MISSING = "JAX column left out: jax is not installed (pip install -e '.[bench]' adds it)"


def load_jax():
    """The ``handjax`` module, or None where jax is not installed."""
    try:
        return importlib.import_module(f"{__package__}.handjax")
    except ImportError:
        return None


def state_and_cols(cell, n):
    """(state size, KF-RTRL's columns of A) of a benchmark cell of n units."""
    return {"lstm": (2 * n, 4 * n), "lstm_pytorch": (2 * n, 4 * n),
            "gru_pytorch": (n, 6 * n), "lru": (2 * n, n),
            "lru2": (4 * n, n)}.get(cell, (n, n))


def too_big(cell, n, batch, est):
    """Configurations that would take minutes per step on 2 cores (skipped)."""
    S = state_and_cols(cell, n)[0]
    if est == "rtrl":      # G is S x P: up to the tanh RNN at n = 128, the LSTM at 64
        P = recurrent_params(cell, n) if cell.startswith("lru") else \
            state_and_cols(cell, n)[1] * (n + 9)
        return batch > 1 or S * P > 2_400_000
    if est == "kf-rtrl":
        return S * n * batch > 64 * 64 * 32 * 2 and n > 64
    return False


def best_time(fn, seconds, repeats):
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


_PARAMS = {}


def init_params(cell_name, n):
    """rgraph's initial parameters of a benchmark cell (8 inputs, 8 classes)."""
    if (cell_name, n) not in _PARAMS:
        est = rg_compile(CELLS[cell_name](8, n, 8), "bptt", backend="numpy")
        _PARAMS[cell_name, n] = est.init_params(0)
    return _PARAMS[cell_name, n]


def recurrent_params(cell_name, n):
    """P: the number of parameters of the recurrent step (all but the readout V, b; for
    the LRU, the analysis's count, which also leaves out the top layer's C and D)."""
    if cell_name.startswith("lru"):
        from rgraph import analyze
        return analyze(CELLS[cell_name](8, n, 8)).layout.n_rec
    return sum(p.size for k, p in init_params(cell_name, n).items() if k not in ("V", "b"))


def build(cell_name, n, est_name, backend="numba", threads=1):
    """rgraph's estimator of a benchmark cell (8 inputs, 8 classes), built once."""
    key = (cell_name, n, est_name, backend, threads)
    if key not in _BUILT:
        _BUILT[key] = rg_compile(CELLS[cell_name](8, n, 8), est_name, backend=backend,
                                 blas_threads=threads)
    return _BUILT[key]


_BUILT = {}


def precompile_all(cells, sizes, batches, estimators, keys, threads, backend="numba"):
    """Compile every module (and loop) the table times, several at once
    (``rg.precompile``), before any timing: the compiles neither wait one after the
    other nor run beside a measurement."""
    items = []
    for cell in cells:
        for n in sizes:
            for B in batches:
                for e in estimators:
                    if not too_big(cell, n, B, keys[e]):
                        est = build(cell, n, e, backend, threads)
                        items.append((est, est.loop_for(B)))
    rg_precompile(items)


def time_rgraph(cell_name, n, batch, est_name, seconds=0.5, repeats=3, backend="numba",
                threads=1):
    t0 = time.perf_counter()
    est = build(cell_name, n, est_name, backend, threads)
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
    return best_time(run, seconds, repeats) * 1e6, compile_s


def time_hand(cell_name, n, batch, est_name, seconds=0.5, repeats=3):
    cls = HAND[est_name]
    h = cls(cell_name, 8, n, 8, init_params(cell_name, n), batch=batch, lr=1e-5)
    rng = np.random.default_rng(0)
    xs = np.eye(8)[rng.integers(0, 8, (1000, batch))]
    ys = rng.integers(0, 8, (1000, batch))

    def run(k):
        for t in range(k):
            h.step(xs[t % 1000], ys[t % 1000])
    return best_time(run, seconds, repeats) * 1e6


def time_jax(cell_name, n, batch, est_name, seconds=0.5, repeats=3, max_chunk=2000):
    """µs per online step (all streams) of the JAX baseline, and its compile seconds.

    ``run`` is one jitted scan over a chunk of steps: a first chunk of 8 steps compiles
    it (the compile time, with those 8 steps) and gives a first per-step time; the chunk
    then grows to a power of two lasting about seconds/4 (at most ``max_chunk`` steps,
    compiled once more, not timed) so that the call overhead is amortized. Each of
    ``repeats`` runs is a whole number of chunks, about ``seconds`` long."""
    hj = load_jax()
    if hj is None:
        raise ImportError(JAX_MISSING)
    est = hj.ESTIMATORS[est_name](cell_name, 8, n, 8, init_params(cell_name, n),
                                  batch=batch, lr=1e-5)
    rng = np.random.default_rng(0)
    eye = np.eye(8)

    def data(L):
        return (hj.jnp.asarray(eye[rng.integers(0, 8, (L, batch))]),
                hj.jnp.asarray(rng.integers(0, 8, (L, batch))))

    L = 8
    xs, ys = data(L)
    t = time.perf_counter()
    est.run(xs, ys)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    est.run(xs, ys)
    per = max((time.perf_counter() - t) / L, 1e-7)
    grow = min(max_chunk, 2 ** int(math.log2(max(seconds / 4 / per, 1))))
    if grow > L:
        L = grow
        xs, ys = data(L)
        est.run(xs, ys)
        t = time.perf_counter()
        est.run(xs, ys)
        per = max((time.perf_counter() - t) / L, 1e-7)
    chunks = max(1, round(seconds / (per * L)))
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(chunks):
            est.run(xs, ys)
        best = min(best, (time.perf_counter() - t) / (chunks * L))
    return best * 1e6, compile_s


def time_gemm(cell_name, n, batch, seconds=0.3, repeats=3, kind="H·A"):
    """numpy's BLAS for the one product an estimator cannot avoid, once per stream:
    KF-RTRL's H_t A_{t-1}, (S x S) @ (S x |z|) (``kind="H·A"``), or RTRL's
    D_t J_{t-1}, (S x S) @ (S x P) with P the recurrent parameter count (``"D·J"``)."""
    S, Z = state_and_cols(cell_name, n)
    cols = Z if kind == "H·A" else recurrent_params(cell_name, n)
    H, A = np.random.rand(S, S), np.random.rand(S, cols)
    out = np.empty((S, cols))

    def run(k):
        for _ in range(k * batch):
            np.dot(H, A, out)
    return best_time(run, seconds, repeats) * 1e6


def _threads():
    return [int(t) for t in os.listdir("/proc/self/task")] if \
        os.path.isdir("/proc/self/task") else [0]


def pin_cores(cpus):
    """Pin every thread of the process (BLAS's, XLA's, numba's, this one) to ``cpus``;
    returns the previous set. Threads started later inherit the main thread's set."""
    before = os.sched_getaffinity(0)
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, cpus)
        except (ProcessLookupError, PermissionError):    # a thread that just ended
            pass
    return before


def bench(cells=("tanh", "lstm"), sizes=(16, 64, 256), batches=(1, 32),
          estimators=ESTIMATORS, seconds=0.5, repeats=3, threads=1, hand=True, jax=True,
          cores=1, out=print):
    """Run the benchmark; prints a table and returns its rows (dicts).

    ``cores``: the process runs on that many CPUs (the first ones it may use) while it
    measures; ``threads``: BLAS threads; ``jax=False`` leaves the JAX column out."""
    from threadpoolctl import threadpool_info, threadpool_limits
    keys = {e: parse_estimator(e)[0] for e in estimators}   # bad names fail before timing
    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= cores <= len(allowed):
        raise ValueError(f"cores must be 1 to {len(allowed)} (the CPUs this process may "
                         f"use), got {cores}")
    cpus = set(allowed[:cores])
    hj = load_jax() if jax else None
    if jax and hj is None:
        out(JAX_MISSING)
    rows = []
    precompile_all(cells, sizes, batches, estimators, keys, threads)  # on every core
    before = pin_cores(cpus)
    try:
        with threadpool_limits(threads):
            libs = sorted({f"{i['internal_api']} ({i['num_threads']} thread"
                           f"{'s' if i['num_threads'] > 1 else ''})"
                           for i in threadpool_info()})
            out(f"rgraph bench: µs per online step (all streams), best of {repeats}; "
                f"{cores} core{'s' if cores > 1 else ''} (CPU "
                f"{','.join(map(str, sorted(cpus)))}); BLAS: {', '.join(libs) or 'none'}"
                + (f"; JAX: {hj.xla_threads()}" if hj else ""))
            out("GEMM: numpy's H·A, (S x S)@(S x |z|), for kf-rtrl and D·J, (S x S)@(S x P), "
                "for rtrl, once per stream"
                + ("; JAX/rgraph > 1: rgraph is faster; projected-uoro's JAX is UORO's"
                   if hj else ""))
            out(f"{'cell':<13}{'n':>5}{'B':>4}  {'estimator':<30}{'rgraph':>10}"
                f"{'hand NumPy':>12}{'speed-up':>10}"
                + (f"{'JAX':>10}{'JAX/rgraph':>12}" if hj else "")
                + f"{'GEMM':>10}{'/GEMM':>7}")
            for cell in cells:
                for n in sizes:
                    for B in batches:
                        _rows(cell, n, B, estimators, keys, seconds, repeats, threads,
                              hand, hj, out, rows)
    finally:
        pin_cores(before)
    return rows


def _rows(cell, n, B, estimators, keys, seconds, repeats, threads, hand, hj, out, rows):
    """The table's rows of one (cell, n, batch)."""
    gemm, jax_times = {}, {}
    for e in estimators:
        k = keys[e]
        if too_big(cell, n, B, k):
            continue
        us, _ = time_rgraph(cell, n, B, e, seconds, repeats, threads=threads)
        row = {"cell": cell, "n": n, "batch": B, "estimator": e, "rgraph_us": us}
        line = f"{cell:<13}{n:>5}{B:>4}  {e:<30}{us:>10.1f}"
        if hand and k in HAND and cell in ("tanh", "lstm"):
            h = time_hand(cell, n, B, k, seconds, repeats)
            row.update(hand_us=h, speedup=h / us)
            line += f"{h:>12.1f}{h / us:>9.1f}x"
        else:
            line += " " * 22
        if hj is not None:
            if k in JAX_OF and cell in hj.CELLS:
                j = JAX_OF[k]
                if j not in jax_times:
                    jax_times[j] = time_jax(cell, n, B, j, seconds, repeats)
                ju, jc = jax_times[j]
                row.update(jax_us=ju, jax_ratio=ju / us, jax_compile_s=jc)
                line += f"{ju:>10.1f}{ju / us:>11.2f}x"
            else:
                line += " " * 22
        if k in ("kf-rtrl", "rtrl"):
            kind = "H·A" if k == "kf-rtrl" else "D·J"
            if kind not in gemm:
                gemm[kind] = time_gemm(cell, n, B, kind=kind)
            g = gemm[kind]
            row.update(gemm_us=g, over_gemm=us / g)
            line += f"{g:>10.1f}{us / g:>6.2f}x"
        out(line.rstrip())
        rows.append(row)
