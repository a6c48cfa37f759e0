"""How close is each estimator to the exact gradient during training? Every family on
one vanilla tanh RNN (n = 64), on the copy and adding tasks.

The setup follows the released runs of sketched-rtrl (vanilla RNN, n = 64, batch 8,
Adam 1e-3), whose figure is the mean cosine between each estimator's gradient and the
exact RTRL gradient along training:

    copy    SnAp-1 0.691, KF-RTRL 0.528, RFLO 0.334, UORO 0.040
    adding  SnAp-1 0.605, RFLO 0.579, KF-RTRL 0.500, UORO 0.103

Here: the network is trained with exact gradients (truncated BPTT over each sequence,
which is exact because the state is reset at every sequence start), Adam 1e-3. At
``--checkpoints`` points of training, a fresh batch of 8 sequences is drawn and every
estimator's gradient over that batch (``total_gradient``, the sum of its per-step
estimates; states reset at each sequence start) is compared with the exact one: the
cosine on the recurrent parameters, averaged over ``--draws`` random seeds (stochastic
estimators) and over checkpoints and training seeds.

    python examples/fidelity.py                  # both tasks, 3 seeds: ~10 min cold
    python examples/fidelity.py --quick          # smoke run: n = 8, 1 seed

Tasks (our encodings):
* copy: a random binary string of length L (default 10), then L markers; the targets
  are the string, scored on the copy steps (Mujika et al.'s copy task, fixed length).
* adding: L steps of (value in U[0, 1], marker); two steps are marked, one in each
  half; the target at the last step is the sum of the two marked values (mean squared
  error, scored at the last step only; Hochreiter & Schmidhuber).
"""
from __future__ import annotations

import argparse
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

import rgraph as rg  # noqa: E402
from rgraph.errors import NotApplicable  # noqa: E402

ESTIMATORS = ["rtrl", "snap-1", "snap-2", "kf-rtrl", "ok(2)", "ok(4)", "e-prop", "rflo",
              "uoro", "projected-uoro[preactivation]", "dodge"]
# e-prop: symmetric feedback (∂l/∂s); rflo: Murray's random feedback
OPTIONS = {"rflo": {"feedback": "random"}}
PUBLISHED = {"copy": {"snap-1": 0.691, "kf-rtrl": 0.528, "rflo": 0.334, "uoro": 0.040},
             "adding": {"snap-1": 0.605, "rflo": 0.579, "kf-rtrl": 0.500, "uoro": 0.103}}


def copy_batch(rng, L, batch):
    """(xs, ys, weights, resets) of `batch` copy sequences, concatenated."""
    xs, ys, ws, rs = [], [], [], []
    for _ in range(batch):
        bits = rng.integers(0, 2, L)
        x = np.zeros((2 * L, 3))
        x[np.arange(L), bits] = 1.0
        x[L:, 2] = 1.0
        y = np.concatenate([np.full(L, 2), bits])
        w = np.concatenate([np.zeros(L), np.ones(L)])
        r = np.zeros(2 * L, dtype=bool)
        r[0] = True
        xs.append(x), ys.append(y), ws.append(w), rs.append(r)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws), np.concatenate(rs)


def adding_batch(rng, L, batch):
    xs, ys, ws, rs = [], [], [], []
    for _ in range(batch):
        vals = rng.uniform(0, 1, L)
        marks = np.zeros(L)
        i, j = rng.integers(0, L // 2), rng.integers(L // 2, L)
        marks[[i, j]] = 1.0
        x = np.stack([vals, marks], axis=1)
        y = np.zeros((L, 1))
        y[-1, 0] = vals[i] + vals[j]
        w = np.zeros(L)
        w[-1] = 1.0
        r = np.zeros(L, dtype=bool)
        r[0] = True
        xs.append(x), ys.append(y), ws.append(w), rs.append(r)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws), np.concatenate(rs)


TASKS = {"copy": (copy_batch, 3, 3, "softmax_xent"), "adding": (adding_batch, 2, 1, "mse")}


def cosine(a, b):
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def run_task(task, n, L, seeds, checkpoints, steps_between, draws, backend, log):
    make, n_in, n_out, loss = TASKS[task]
    cell = rg.cells.tanh_rnn(n_in, n, n_out)
    seq = 2 * L if task == "copy" else L
    trainer_est = rg.compile(cell, f"tbptt({seq})", loss=loss, backend=backend)
    exact = rg.compile(cell, "bptt", loss=loss, backend=backend)
    ests = {}
    for name in ESTIMATORS:
        try:
            ests[name] = rg.compile(cell, name, loss=loss, backend=backend,
                                    **OPTIONS.get(name, {}))
        except NotApplicable as e:
            log(f"{task}: {name} does not apply: {e}")
    rec = [b.name for b in exact.blocks if b.recurrent]
    flat = lambda g: np.concatenate([g[k].ravel() for k in rec])  # noqa: E731
    cos = {name: [] for name in ests}
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        p = trainer_est.init_params(seed)
        opt = rg.Adam(1e-3)
        for c in range(checkpoints):
            xs, ys, ws, rs = make(rng, L, 8)
            g0 = flat(exact.total_gradient(p, xs, ys, weights=ws, resets=rs))
            for name, est in ests.items():
                k = draws if est.spec.stochastic else 1
                cos[name] += [cosine(flat(est.total_gradient(p, xs, ys, seed=d, weights=ws,
                                                             resets=rs)), g0)
                              for d in range(k)]
            log(f"{task} seed {seed} checkpoint {c}: " + ", ".join(
                f"{k} {np.mean(v[-draws:]):.2f}" for k, v in cos.items()))
            # train on fresh sequences (batch 8) until the next checkpoint
            xs, ys, ws, rs = make(rng, L, 8 * steps_between // seq)
            p = trainer_est.train(p, xs, ys, optimizer=opt, weights=ws, resets=rs).params
    return {name: float(np.mean(v)) for name, v in cos.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--length", type=int, default=10, help="L: string / sequence length")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--steps-between", type=int, default=20000,
                    help="training steps between checkpoints (all 8 streams)")
    ap.add_argument("--draws", type=int, default=10, help="seeds per stochastic estimator")
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="fidelity.md")
    a = ap.parse_args()
    if a.quick:
        a.hidden, a.seeds, a.checkpoints, a.steps_between, a.draws = 8, 1, 2, 400, 3
    res = {t: run_task(t, a.hidden, a.length, a.seeds, a.checkpoints, a.steps_between,
                       a.draws, a.backend, print) for t in TASKS}
    lines = ["| estimator | copy | adding | copy (sketched-rtrl) | adding (sketched-rtrl) |",
             "|---|---|---|---|---|"]
    for name in ESTIMATORS:
        cells = [f"{res[t][name]:.3f}" if name in res[t] else "n/a" for t in TASKS]
        pub = [f"{PUBLISHED[t][name]:.3f}" if name in PUBLISHED[t] else "" for t in TASKS]
        lines.append(f"| {name} | " + " | ".join(cells + pub) + " |")
    table = "\n".join(lines)
    print(table)
    with open(a.out, "w") as f:
        f.write(f"tanh RNN n={a.hidden}, L={a.length}, {a.seeds} seeds x {a.checkpoints} "
                f"checkpoints, {a.draws} draws per stochastic estimator\n\n{table}\n")


if __name__ == "__main__":
    main()
