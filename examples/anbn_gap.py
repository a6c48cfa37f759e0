"""aⁿbⁿ(1,32), LSTM-64: why rgraph's runs level off above Tallec & Ollivier's 0.143 bpc.

Short controlled runs of one estimator (TBPTT-16 by default: deterministic and cheap),
each changing one thing against the baseline (rgraph's ``lstm``, its init, the
papers' defaults: Adam 1e-3 / (1 + 0.03 √t), t in characters). Every run reports, at
the same character counts, the bits/char of

* ``valid``: the parameters of that moment on a fixed held-out stream of 60,000
  characters (from a zero state), what ``rgraph sweep`` reports as ``valid_loss``;
* ``recent``: the paper's "recent loss", the training loss (each character predicted
  before the update that learns from it) averaged as the authors' code does it: per
  update, L <- (1 - 1/√t) L + ℓ/√t, t the characters seen (TBPTT-16: ℓ is the mean
  over the 16 characters of the update).

Variants (``--variants``):

``base``        rgraph's ``lstm`` (one matrix on [h; x; 1], N(0, 1/68) entries).
``torch-init``  the same cell, initialised as the authors' Torch code initialises
                theirs (ctallec/uoro, train.lua): recurrent and readout weights and
                biases U(±1/8) (nn.Linear), the input columns W_x E with E ~ N(0, 1)
                (nn.Embedding, 64 wide) and W_x ~ U(±1/8), each gate's bias the sum of
                two U(±1/8) (two nn.Linear), the forget gate's -0.3 more.
``paper-lstm``  the authors' LSTM itself: a trained 64-wide embedding E (N(0,1)) of the
                character, each gate W_x e + b_x + W_h h + b_h (nn.Linear inits), the
                forget gate's preactivation -0.3 more (a constant), readout U(±1/8).
``eps``         base with Adam's ε = 1e-6 instead of 1e-8 (Torch's optim.adam: 1e-8).
``decay-upd``   base with the schedule counted in updates (α = 0.03 per update):
                TBPTT-16's rate then falls 4× more slowly than the paper's.

    python examples/anbn_gap.py --steps 3000000 --variants base,paper-lstm --seeds 0 \
        --save-params runs/examples/anbn_gap/params            # ~5-9 min per run
    python examples/anbn_gap.py --relearn 1.05e-5 \
        --diagnose runs/examples/anbn_gap/params/base-seed1-3000000.npz
        # where the excess goes; learning on against frozen parameters
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

import rgraph as rg
from rgraph.graph import Cell, concat, const, sigmoid, split, tanh
from rgraph.tasks import AnBn

VARIANTS = ("base", "torch-init", "paper-lstm", "eps", "decay-upd")
EXCESS = ("total", "a<=16", "a>16", "b<=16", "b>16", "start")


def paper_lstm(n_in: int, n: int, n_out: int, forget_shift: float = -0.3) -> Cell:
    """The LSTM of the authors' Torch code: an embedding of the character, per gate
    Linear(e) + Linear(h) (+ -0.3 on the forget gate), a linear readout."""
    c = Cell("lstm_paper")
    x = c.input("x", n_in)
    h, m = c.state("h", n), c.state("c", n)
    E = c.param("E", (n, n_in), init=lambda rng, s: rng.standard_normal(s))
    e = (E @ x).named("e")
    lim = 1.0 / math.sqrt(n)
    Wx = c.param("Wx", (4 * n, n + 1), init="uniform")     # U(±1/sqrt(n+1)) ~ U(±1/8)
    Wh = c.param("Wh", (4 * n, n + 1), init="uniform")
    shift = np.zeros(4 * n)
    shift[n:2 * n] = forget_shift
    z = (Wx @ concat(e, const(1.0)) + Wh @ concat(h, const(1.0)) + const(shift)).named("z")
    gi, gf, go, gg = split(z, 4)
    m_new = sigmoid(gf) * m + sigmoid(gi) * tanh(gg)
    h_new = sigmoid(go) * tanh(m_new)
    c.update(m, m_new)
    c.update(h, h_new)
    V = c.param("V", (n_out, n), init=lambda rng, s: rng.uniform(-lim, lim, s))
    b = c.param("b", n_out, init=lambda rng, s: rng.uniform(-lim, lim, s))
    c.output("logits", V @ h_new + b)
    return c


def torch_init(params: dict, n: int, n_in: int, seed: int) -> dict:
    """rgraph's concat LSTM's W = [W_h | W_x | b] and readout, drawn as the authors'
    Torch code draws its LSTM (see the module docstring)."""
    rng = np.random.default_rng([seed, 17])
    lim = 1.0 / math.sqrt(n)
    W = np.empty_like(params["W"])
    W[:, :n] = rng.uniform(-lim, lim, (4 * n, n))
    E = rng.standard_normal((n, n_in))
    W[:, n:n + n_in] = rng.uniform(-lim, lim, (4 * n, n)) @ E
    W[:, n + n_in] = rng.uniform(-lim, lim, 4 * n) + rng.uniform(-lim, lim, 4 * n)
    W[n:2 * n, n + n_in] -= 0.3
    return {**params, "W": W, "V": rng.uniform(-lim, lim, params["V"].shape),
            "b": rng.uniform(-lim, lim, params["b"].shape)}


def run(variant, seed, args, task, valid, at):
    n = args.hidden
    cell = (paper_lstm(task.n_in, n, task.n_out) if variant == "paper-lstm"
            else rg.cells.lstm(task.n_in, n, task.n_out))
    est = rg.compile(cell, args.estimator, loss="softmax_xent")
    K = est.spec.update_every(1000)             # characters per update: 16 for TBPTT-16
    params = est.init_params(seed)
    if variant == "torch-init":
        params = torch_init(params, n, task.n_in, seed)
    decay = args.decay * (1.0 if variant == "decay-upd" else math.sqrt(K))
    opt = rg.Adam(args.lr, decay=decay, eps=1e-6 if variant == "eps" else 1e-8)
    tr = est.trainer(params, opt, seed=seed, chunk=args.every)
    vx, vy = valid
    rows = []
    state = {"recent": None, "upd": 0}
    t0 = time.perf_counter()

    def recent_from(losses, start):
        # the authors' moving average, one term per update of K characters
        r = state["recent"]
        for j in range(0, len(losses) - len(losses) % K, K):
            state["upd"] += 1
            t = start + j + K                   # characters seen after this update
            ell = float(np.mean(losses[j:j + K]))
            w = 1.0 / math.sqrt(t)
            r = ell if r is None else (1 - w) * r + w * ell
        state["recent"] = r

    def check(trainer, mean):
        step = trainer.step
        losses = np.asarray(trainer.curve[-args.every:])
        recent_from(losses, step - len(losses))
        if step in at:
            v = task.to_unit(est.loss(trainer.params, vx, vy))
            rec = task.to_unit(state["recent"])
            last = task.to_unit(float(np.mean(trainer.curve[-100_000:])))
            rows.append({"variant": variant, "seed": seed, "chars": step,
                         "valid_bpc": round(v, 5), "recent_bpc": round(rec, 5),
                         "train_last100k_bpc": round(last, 5),
                         "wall_s": round(time.perf_counter() - t0, 1)})
            print(f"  {variant:11s} seed {seed}  {step:>10,} chars  valid {v:.4f}  "
                  f"recent {rec:.4f}  train(last 100k) {last:.4f}  "
                  f"{time.perf_counter() - t0:5.0f} s", flush=True)
        if len(trainer.curve) > 200_000:        # keep memory flat
            del trainer.curve[:-100_000]
        return False
    tr.run_task(task, args.steps, callback=check)
    if args.save_params:
        d = Path(args.save_params)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / f"{variant}-seed{seed}-{tr.step}.npz", **tr.params)
    where = excess_bits(est, tr.params, vx, vy)
    print(f"  {variant:11s} seed {seed}  excess bits/char over the optimum on the held-out "
          f"stream: " + ", ".join(f"{k} {v:+.4f}" for k, v in where.items()), flush=True)
    for r in rows:
        r.update({f"excess_{k}": round(v, 5) for k, v in where.items()})
    return rows


def excess_bits(est, params, xs, ys, task=AnBn(1, 32)):
    """The model's bits minus the exact optimum's (``AnBn.optimal_bits``) on (xs, ys),
    per character of the stream, split by where they are spent: the a-lines (the only
    uncertain characters: when does the line end), the b-lines (determined by the
    count: when to break), each for n <= 16 and n > 16 (beyond TBPTT-16's reach), and
    the certain first a. The total is valid - the stream's own optimum."""
    tr = est.trainer(params, rg.Adam(0.0), chunk=len(ys))     # lr 0: a forward pass
    tr.run(xs, ys)
    model = np.asarray(tr.curve) / math.log(2)
    best, where, ns = task.optimal_bits(ys)
    ex = model - best
    out = {"total": float(ex.sum() / len(ys))}
    for w, name in ((1, "a"), (2, "b")):
        for lo, hi, tag in ((1, 16, "<=16"), (17, 10**9, ">16")):
            m = (where == w) & (ns >= lo) & (ns <= hi)
            out[f"{name}{tag}"] = float(ex[m].sum() / len(ys))
    out["start"] = float(ex[where == 0].sum() / len(ys))
    return out


def diagnose(args):
    """For saved parameters: the held-out excess split by where it is spent, the excess
    per pair of lines on the b-lines by n, and (``--relearn LR``) the same characters
    predicted while learning on (a fresh Adam at LR, decay 0) against the parameters
    frozen at each block's start."""
    task = AnBn(1, 32)
    vx, vy = AnBn(1, 32).stream(240_000 if args.relearn else 60_000,
                                np.random.default_rng(123))
    best, where, ns = task.optimal_bits(vy)
    print(f"held-out excess bits/char over the exact optimum "
          f"({best[:60_000].mean():.4f} on the first 60,000 characters), by where it "
          f"is spent (a/b-lines, n <= or > 16)")
    for f in args.diagnose:
        name = Path(f).name
        cell = (paper_lstm(task.n_in, args.hidden, task.n_out)
                if name.startswith("paper-lstm")
                else rg.cells.lstm(task.n_in, args.hidden, task.n_out))
        est = rg.compile(cell, args.estimator, loss="softmax_xent")
        params = {k: np.asarray(v) for k, v in np.load(f).items()}
        ex = excess_bits(est, params, vx[:60_000], vy[:60_000], task)
        print(f"  {name:32s} " + "  ".join(f"{k} {v:+.4f}" for k, v in ex.items()),
              flush=True)
        tr = est.trainer(params, rg.Adam(0.0), chunk=len(vy))
        tr.run(vx, vy)
        per = np.asarray(tr.curve) / math.log(2) - best
        b = where == 2
        pairs = [per[b & (ns == n)].sum() / max(1, (b & (ns == n) & (vy == 0)).sum())
                 for n in range(1, 33)]
        print("    excess bits per pair on the b-line, n = 1..32: "
              + " ".join(f"{v:.2f}" for v in pairs), flush=True)
        if args.relearn:
            B = 20_000
            tr = est.trainer(params, rg.Adam(args.relearn), chunk=B)
            on, fr = [], []
            for i in range(0, len(vy), B):
                sl = slice(i, i + B)
                frozen = est.loss(tr.params, vx[sl], vy[sl]) / math.log(2)
                fr.append(frozen - best[sl].mean())
                tr.run(vx[sl], vy[sl])
                on.append(np.mean(tr.curve[-B:]) / math.log(2) - best[sl].mean())
            print(f"    per {B:,} characters, learning on at {args.relearn:g}: "
                  + " ".join(f"{v:+.3f}" for v in on), flush=True)
            print("    the same, parameters frozen at the block's start:   "
                  + " ".join(f"{v:+.3f}" for v in fr), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2_000_000, help="characters per run")
    ap.add_argument("--every", type=int, default=50_000, help="characters per chunk")
    ap.add_argument("--at", default="500000,1000000,1500000,2000000",
                    help="character counts to report at")
    ap.add_argument("--variants", default="base,paper-lstm")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--estimator", default="tbptt(16)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--decay", type=float, default=0.03, help="α per character")
    ap.add_argument("--out", default="runs/examples/anbn_gap/runs.csv")
    ap.add_argument("--save-params", help="folder for each run's final parameters (.npz)")
    ap.add_argument("--diagnose", nargs="+", metavar="NPZ",
                    help="only split the held-out excess of saved parameters "
                         "(--save-params files; the variant is the name's start)")
    ap.add_argument("--relearn", type=float, default=0.0,
                    help="--diagnose: also learn on over 240,000 held-out characters at "
                         "this learning rate, against the parameters frozen")
    args = ap.parse_args(argv)
    if args.diagnose:
        return diagnose(args)
    at = {int(a) for a in args.at.split(",")}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}; choose among {VARIANTS}")
    seeds = [int(s) for s in args.seeds.split(",")]
    task = AnBn(1, 32)
    valid = AnBn(1, 32).stream(60_000, np.random.default_rng(123))
    print(f"{task!r}: entropy rate {task.optimum:.4f} bpc; {args.estimator}, "
          f"LSTM-{args.hidden}, Adam {args.lr:g}/(1+{args.decay:g}√chars)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with open(out, "a", newline="") as f:
        w = csv.DictWriter(f, ["estimator", "variant", "seed", "chars", "valid_bpc",
                               "recent_bpc", "train_last100k_bpc", "wall_s"] +
                           [f"excess_{k}" for k in EXCESS])
        if new:
            w.writeheader()
        for seed in seeds:
            for v in variants:
                for r in run(v, seed, args, task, valid, at):
                    w.writerow({"estimator": args.estimator, **r})
                    f.flush()


if __name__ == "__main__":
    main()
