"""What long runs need: the papers' defaults per task (and the schedule counted in
steps), the collapse rule (on a synthetic curve like an MGU's jump and on a real aⁿbⁿ
curve), the block curve that keeps a run's log and checkpoint the same size at any
length, and a full per-step curve that survives a resume bit for bit."""
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

import rgraph as rg
from rgraph.run import (ConfigError, RunConfig, build_run, make_trainer, optimizer_from,
                        paper_defaults, train_in_folder)
from rgraph.run.folders import STEP_LOSSES, read_step_losses
from rgraph.tasks import TASKS, Copy
from rgraph.training.curve import BlockCurve
from rgraph.training.health import CollapseMonitor, DivergenceMonitor

DATA = Path(__file__).resolve().parent / "data"
LN2 = math.log(2)


# ------------------------------------------------------------- the papers' defaults
def test_every_task_declares_its_papers_training():
    """Each task names its paper and the optimizer, schedule, batch and resets of the
    paper's text (Tallec & Ollivier Sec. 4: Adam 1e-3/(1+α√t), α 0.03 for aⁿbⁿ and 0.015
    for brackets, SGD η/(1+√t) for influence balancing; Mujika et al. Sec. 5: Adam,
    batch 256, resets 0.01 on Penn TreeBank), and what the paper reports."""
    want = {"anbn": ("Tallec & Ollivier", "adam", 1e-3, 0.03, 1, 0.0),
            "brackets": ("Tallec & Ollivier", "adam", 1e-3, 0.015, 1, 0.0),
            "influence": ("Tallec & Ollivier", "sgd", 3e-4, 1.0, 1, 0.0),
            "copy": ("Mujika et al.", "adam", 1e-3, 0.0, 256, 0.0),
            "charlm": ("Mujika et al.", "adam", 1e-3, 0.0, 256, 0.01)}
    assert set(want) == set(TASKS)
    for name, (paper, opt, lr, decay, batch, reset) in want.items():
        d = TASKS[name].defaults
        assert d.source.startswith(paper) and d.evaluation, name
        assert d.settings() == {"optimizer": opt, "lr": lr, "decay": decay, "batch": batch,
                                "reset_prob": reset}, name
        RunConfig(task=name, **d.settings())      # every value is a valid run option
    assert "0.142" in TASKS["anbn"].defaults.evaluation
    assert "T = 36" in TASKS["copy"].defaults.evaluation


def test_options_not_given_take_the_papers_and_the_line_says_which():
    cfg = RunConfig.from_options(task="copy", estimator="kf-rtrl", batch=16, cell="rhn")
    assert (cfg.batch, cfg.lr, cfg.decay, cfg.optimizer) == (16, 1e-3, 0.0, "adam")
    taken, line = paper_defaults({"task": "copy", "batch": 16})
    assert "batch" not in taken and line.startswith(
        "defaults of Mujika et al. (2018), Sec. 5.1, copy task: optimizer adam, lr 0.001")
    assert line.endswith("given: --batch")
    lm = RunConfig.from_options(task="charlm", text="x.txt", estimator="uoro")
    assert (lm.batch, lm.reset_prob) == (256, 0.01)
    # a decay given is per update, as before; the paper's is per step
    assert RunConfig.from_options(task="anbn", decay=0.1).decay_per == "update"
    assert RunConfig.from_options(task="anbn").decay_per == "step"
    assert RunConfig.from_options(task="anbn", decay=0.1, decay_per="step").decay_per == \
        "step"
    plain = RunConfig.from_options(task="anbn", task_defaults=False)
    assert plain == RunConfig(task="anbn")
    assert paper_defaults({"cell": "lstm"}) == ({}, None)


def test_config_json_keeps_its_old_form_and_reads_decay_per():
    """decay_per is written only where it is not "update": a config.json (and a sweep
    run id) from before it is the same; a bad value is one line naming the field."""
    old = RunConfig(task="anbn", estimator="uoro", decay=0.03)
    assert "decay_per" not in old.to_dict()
    assert RunConfig.from_json(old.to_json()) == old
    new = old.replace(decay_per="step")
    assert new.to_dict()["decay_per"] == "step"
    assert RunConfig.from_json(new.to_json()) == new
    with pytest.raises(ConfigError, match="decay_per must be one of update, step"):
        RunConfig(decay_per="char")


@pytest.mark.parametrize("name, k", [("uoro", 1), ("tbptt(4)", 4)])
def test_a_decay_per_step_falls_with_the_steps_whatever_the_update_period(name, k):
    """The paper's t counts characters; TBPTT-4 updates once per 4 of them, so its
    decay per update is 2x: both learning rates are then the same function of the
    steps. The trainer a config makes runs exactly that optimizer."""
    cfg = RunConfig(cell="tanh", hidden=4, task="anbn", estimator=name, backend="numpy",
                    decay=0.03, decay_per="step", steps=600, chunk=200)
    _, task, est = build_run(cfg)
    assert optimizer_from(cfg, est).decay == pytest.approx(0.03 * math.sqrt(k))
    assert optimizer_from(cfg.replace(decay_per="update"), est).decay == 0.03
    with pytest.raises(ValueError, match="needs the compiled estimator"):
        optimizer_from(cfg)
    tr = make_trainer(cfg, est)
    tr.run_task(task, cfg.steps, record="blocks")
    by_hand = est.trainer(est.init_params(0), rg.Adam(1e-3, decay=0.03 * math.sqrt(k)),
                          seed=0, chunk=200)
    by_hand.run_task(task, cfg.steps, record="blocks")
    assert np.array_equal(tr.th, by_hand.th)


# ---------------------------------------------------------------- collapse warnings
def feed(monitor, per_step, reference, chunk=1000, t0=0):
    events = []
    for a in range(0, len(per_step), chunk):
        ev = monitor.update(t0 + a, per_step[a:a + chunk], reference)
        if ev is not None:
            events.append(ev)
    return events


def mgu_like(steps=1_500_000, jump=570_000, seed=0):
    """An MGU-16 on aⁿbⁿ as issue 25 saw it: down to 0.33 bits/char, then up to 1.33 at
    step 570k and there for 900k steps (per-step losses, exponentially noisy)."""
    t = np.arange(steps)
    level = (np.where(t < jump, 0.33, 1.33) + 1.2 * np.exp(-t / 20_000)) * LN2
    return level * np.random.default_rng(seed).exponential(1.0, steps)


def test_the_collapse_rule_sees_a_jump_held_for_long():
    events = feed(CollapseMonitor(), mgu_like(), math.log(4))
    assert len(events) == 1
    ev = events[0]
    assert 570_000 < ev["began"] < 585_000 and ev["step"] == ev["began"] + 49_000
    assert ev["best"] / LN2 == pytest.approx(0.33, abs=0.02) and ev["best_step"] < 570_000
    assert ev["level"] / LN2 == pytest.approx(1.33, abs=0.05)
    # the divergence rule (10x the best and above uniform) does not see it
    div = DivergenceMonitor()
    assert feed(div, mgu_like(), math.log(4)) == []


def test_the_collapse_rule_on_a_real_anbn_run_that_degrades():
    """The old defaults' aⁿbⁿ run (LSTM-32, UORO, Adam 1e-3 constant, seed 0, tests/data):
    its 10,000-step level reaches 0.297 bits/char at step 328k, then rises above 0.8 for
    tens of thousands of steps, three times; the rule reports each, not before."""
    data = np.loadtxt(DATA / "anbn_uoro_adam_constant_chunks.csv", delimiter=",",
                      skiprows=4)
    steps, means = data[:, 0].astype(int), data[:, 1]
    assert np.array_equal(steps, np.arange(1, len(steps) + 1) * 1000)
    m = CollapseMonitor()
    events = feed(m, np.repeat(means, 1000), math.log(3), chunk=1000)
    assert [e["began"] for e in events] == [538_000, 823_000, 1_602_000]
    assert all(e["best_step"] == 328_000 for e in events)
    assert m.best / LN2 == pytest.approx(0.297, abs=1e-3)
    assert events[0]["level"] / LN2 > 0.8


def test_no_collapse_on_a_healthy_noisy_curve_nor_near_zero():
    rng = np.random.default_rng(1)
    t = np.arange(600_000)
    healthy = (0.15 + 1.4 * np.exp(-t / 50_000)) * LN2 * rng.exponential(1.0, t.size)
    # a bump of 30 % for 100k steps: within the margin
    healthy[300_000:400_000] *= 1.3
    assert feed(CollapseMonitor(), healthy, math.log(3)) == []
    # a loss near 0 that doubles is not a collapse: the floor is 5 % of uniform
    tiny = np.where(t < 300_000, 0.005, 0.01)
    assert feed(CollapseMonitor(), tiny, math.log(3)) == []


def test_the_collapse_monitor_resumes_where_it_stopped():
    per = mgu_like(800_000)
    whole = feed(CollapseMonitor(), per, math.log(4))
    first = CollapseMonitor()
    feed(first, per[:575_500], math.log(4), chunk=500)
    again = CollapseMonitor()
    again.set_state(first.state())
    rest = feed(again, per[575_500:], math.log(4), t0=575_500)
    assert [e["began"] for e in rest] == [e["began"] for e in whole]
    with pytest.raises(ValueError, match="fed step 3, expected 0"):
        CollapseMonitor().update(3, [1.0], 1.0)


def test_a_trainer_warns_once_and_not_on_a_curriculum():
    """A real run (numpy backend) whose data turns harder half-way: the trainer says so
    with a CollapseWarning and keeps the event; the copy task's curriculum is not
    watched."""
    est = rg.compile(rg.cells.tanh_rnn(3, 8, 3), "tbptt(4)", backend="numpy")
    tr = est.trainer(est.init_params(0), rg.Adam(1e-2), seed=0, chunk=100)
    tr.collapse = CollapseMonitor(block=100, window=1000, sustain=2000)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, 8000)
    ys = np.roll(ids, 1)                                   # recall the previous symbol
    noisy = rng.random(8000) < 0.5                         # then half the targets random
    ys[4000:][noisy[4000:]] = rng.integers(0, 3, int(noisy[4000:].sum()))
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        res = tr.run(np.eye(3)[ids], ys)
    msgs = [str(w.message) for w in got if issubclass(w.category, rg.CollapseWarning)]
    assert len(msgs) == 1 and "the loss collapsed: from step 4," in msgs[0]
    assert res.extra["collapses"] == tr.collapses and tr.collapses[0]["began"] >= 4000
    copy = Copy()
    est2 = rg.compile(rg.cells.tanh_rnn(3, 4, 3), "rtrl", backend="numpy")
    tr2 = est2.trainer(est2.init_params(0), rg.Adam(1e-2), chunk=100)
    tr2.run_task(copy, 200)
    assert not tr2.watch_collapse


# ----------------------------------------------------- curves and checkpoints O(1)
def test_block_curve_rows_are_the_means_of_their_steps_at_any_length():
    rng = np.random.default_rng(2)
    for n in (1, 999, 1000, 1001, 12_345, 250_000):
        x = rng.random(n)
        x[3::7] = np.nan                       # unscored steps
        c = BlockCurve.of(x)
        ends, means = c.curve()
        assert len(ends) <= 1000 and (n < 500 or len(ends) >= 500) and ends[-1] == n - 1
        b = c.block
        rows = [x[k * b:(k + 1) * b] for k in range(len(ends))]
        direct = [np.nanmean(r) if np.any(~np.isnan(r)) else np.nan for r in rows]
        np.testing.assert_allclose(means, direct, rtol=1e-12)
        assert c.recent(0.1) == pytest.approx(np.nanmean(x[ends[-1] - len(x) // 10:]),
                                              rel=0.05)
    # the same curve whatever the pieces it was fed in
    x = rng.random(54_321)
    d = BlockCurve()
    i = 0
    while i < len(x):
        k = int(rng.integers(1, 4000))
        d.add(x[i:i + k])
        i += k
    assert all(np.array_equal(a, b) for a, b in zip(BlockCurve.of(x).curve(), d.curve()))
    st = d.state()
    assert st["sums"].shape == st["counts"].shape == (1000,)
    assert all(np.array_equal(a, b) for a, b in
               zip(BlockCurve.from_state(st).curve(), d.curve()))
    with pytest.raises(ValueError, match="does not add up"):
        BlockCurve.from_state({**st, "seen": st["seen"] + 1})


def test_what_a_checkpoint_keeps_of_the_curve_does_not_grow(tmp_path):
    """A real short run's checkpoint, then the same trainer's curve and monitors fed a
    million more steps' losses directly (what grows with a run's length): within 10 %."""
    cfg = RunConfig(cell="tanh", hidden=2, task="anbn", estimator="uoro", backend="numpy",
                    steps=10_000, chunk=1000)
    _, task, est = build_run(cfg)
    tr = make_trainer(cfg, est)
    tr.run_task(task, cfg.steps, record="blocks")
    small = tr.save(tmp_path / "a.npz").stat().st_size
    losses = np.random.default_rng(0).exponential(0.3, 1_000_000)
    for a in range(0, losses.size, 10_000):
        piece = losses[a:a + 10_000]
        tr.blocks.add(piece)
        tr.health.update(tr.step + a, piece, math.log(3))
        tr.collapse.update(tr.step + a, piece, math.log(3))
    assert tr.blocks.seen == 1_010_000 and len(tr.blocks) <= 1000
    big = tr.save(tmp_path / "b.npz").stat().st_size
    assert abs(big / small - 1) < 0.1, (small, big)


def test_checkpoint_size_does_not_grow_with_steps(tmp_path):
    """A real run of a tiny cell in its folder (numba, as rgraph train runs): its
    checkpoint at 1e6 steps is within 10 % of its size at 1e4 steps (and the block
    curve of its curve.csv stays at most 1,000 rows). About 3 s once compiled."""
    sizes = {}
    for steps in (10_000, 1_000_000):
        cfg = RunConfig(cell="tanh", hidden=2, task="anbn", estimator="uoro", steps=steps,
                        chunk=10_000, checkpoint_every=10 ** 9)
        _, task, est = build_run(cfg)
        tr = make_trainer(cfg, est)
        run_dir = tmp_path / f"s{steps}"
        run_dir.mkdir()
        train_in_folder(tr, task, cfg, run_dir, progress=False)
        assert tr.step == steps and tr.curve == [] and len(tr.blocks) <= 1000
        sizes[steps] = (run_dir / "checkpoint.npz").stat().st_size
    print(f"\ncheckpoint bytes: {sizes}")
    assert abs(sizes[1_000_000] / sizes[10_000] - 1) < 0.1, sizes


def test_full_curve_survives_a_resume_bit_for_bit(tmp_path):
    """--full-curve appends every step's loss to losses.f64; a run stopped, run on past
    its checkpoint (a crash before the next one) and resumed from the checkpoint ends
    with the file an uninterrupted run writes."""
    cfg = RunConfig(cell="tanh", hidden=4, task="anbn", estimator="uoro", backend="numpy",
                    steps=3000, chunk=250, checkpoint_every=1000, full_curve=True)
    _, task, est = build_run(cfg)
    whole = tmp_path / "whole"
    whole.mkdir()
    tw = make_trainer(cfg, est)
    train_in_folder(tw, task, cfg, whole, progress=False)
    part = tmp_path / "part"
    part.mkdir()
    tr = make_trainer(cfg, est)
    train_in_folder(tr, task, cfg, part, progress=False, stop=lambda: tr.step >= 1500)
    assert tr.step == 1500
    tr.on_steps = lambda t0, x, path=part / STEP_LOSSES: open(path, "ab").write(
        np.asarray(x, "<f8").tobytes())                   # past the checkpoint, then lost
    tr.run_task(task, 500)
    assert (part / STEP_LOSSES).stat().st_size == 2000 * 8
    again = make_trainer(cfg, est).load(part / "checkpoint.npz", task)
    train_in_folder(again, task, cfg, part, progress=False)
    a, b = read_step_losses(whole, 3000), read_step_losses(part, 3000)
    assert np.array_equal(a, b) and not np.isnan(a).any()
    assert (part / STEP_LOSSES).read_bytes() == (whole / STEP_LOSSES).read_bytes()
    assert np.array_equal(again.th, tw.th)
    np.testing.assert_array_equal(again.blocks.curve()[1], BlockCurve.of(a).curve()[1])


def test_a_checkpoint_from_before_block_curves_loads(tmp_path):
    """A checkpoint without the block curve and the collapse monitor (written before
    them) loads: the block curve is rebuilt from its per-step curve, and the run goes on
    as an uninterrupted one."""
    est = rg.compile(rg.cells.tanh_rnn(3, 4, 3), "uoro", backend="numpy")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, 1200)
    xs, ys = np.eye(3)[ids], np.roll(ids, 1)
    whole = est.trainer(est.init_params(0), rg.Adam(1e-2), chunk=200)
    whole.run(xs, ys)
    part = est.trainer(est.init_params(0), rg.Adam(1e-2), chunk=200)
    part.run(xs[:600], ys[:600])
    sd = part.state_dict()
    del sd["blocks"], sd["collapse"]
    old = est.trainer(est.init_params(0), rg.Adam(1e-2), chunk=200)
    old.load_state_dict(sd)
    assert old.blocks.seen == 600 and old.collapse.seen == 600
    old.run(xs[600:], ys[600:])
    assert np.array_equal(old.th, whole.th)
    assert all(np.array_equal(a, b) for a, b in zip(old.blocks.curve(),
                                                     whole.blocks.curve()))
