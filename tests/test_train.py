"""The compiled online training loop: optimizers, schedules, batches, resets,
determinism, backends, checkpoints."""
import numpy as np
import pytest

import rgraph as rg

from conftest import compiled, echo_data, params_for


def test_one_sgd_step_is_minus_lr_gradient():
    est = compiled("lstm", "rtrl")
    p = params_for(est)
    xs, ys = echo_data(1)
    g = est.total_gradient(p, xs, ys)
    out = est.train(p, xs, ys, optimizer=rg.SGD(0.1)).params
    for k in p:
        assert np.allclose(out[k], p[k] - 0.1 * g[k], rtol=1e-12, atol=1e-15)


def test_first_adam_step_and_weight_decay():
    est = compiled("tanh", "rtrl")
    p = params_for(est)
    xs, ys = echo_data(1)
    g = est.total_gradient(p, xs, ys)
    out = est.train(p, xs, ys, optimizer=rg.Adam(0.01, eps=1e-12)).params
    for k in p:   # step 1: m̂ = g, v̂ = g²  ->  -lr sign(g) (where g is not round-off)
        big = np.abs(g[k]) > 1e-8
        assert np.allclose(out[k][big], p[k][big] - 0.01 * np.sign(g[k][big]), atol=1e-9)
    out = est.train(p, xs, ys, optimizer=rg.SGD(0.1, weight_decay=0.5)).params
    assert np.allclose(out["V"], p["V"] - 0.1 * (g["V"] + 0.5 * p["V"]))
    # bptt: one exact update at the end of the sequence handed to train
    bp = compiled("tanh", "bptt")
    xs3, ys3 = echo_data(3)
    g3 = bp.total_gradient(p, xs3, ys3)
    out = bp.train(p, xs3, ys3, optimizer=rg.SGD(0.1)).params
    assert all(np.allclose(out[k], p[k] - 0.1 * g3[k], atol=1e-14) for k in p)


def test_learning_rate_schedule_and_clipping():
    est = compiled("influence", "rtrl")
    p = params_for(est)
    xs, ys = np.ones((3, 1)), np.ones((3, 1))
    tr = est.trainer(p, rg.SGD(0.01, decay=0.5))
    th = [p["theta"][0]]
    for t in range(3):
        g = est.total_gradient(tr.params, xs[:1], ys[:1])["theta"][0] if t == 0 else None
        tr.run(xs[t:t + 1], ys[t:t + 1])
        th.append(tr.params["theta"][0])
        if t == 0:
            assert np.isclose(th[1], th[0] - 0.01 / (1 + 0.5 * 1.0) * g)
    # clipping: the update is at most lr * clip
    p2 = params_for(compiled("lstm", "bptt"))
    xs2, ys2 = echo_data(5)
    est2 = compiled("lstm", "bptt")
    out = est2.train(p2, xs2, ys2, optimizer=rg.SGD(1.0, clip=1e-3)).params
    step = np.sqrt(sum(np.sum((out[k] - p2[k]) ** 2) for k in p2))
    assert np.isclose(step, 1e-3, rtol=1e-9)


@pytest.mark.parametrize("name", ["rtrl", "tbptt(3)", "kf-rtrl"])
def test_a_batch_of_identical_streams_is_one_stream(name):
    est = compiled("lstm", name)
    p = params_for(est)
    xs, ys = echo_data(12)
    one = est.train(p, xs, ys, optimizer=rg.SGD(0.05), seed=3).params
    two = est.train(p, np.stack([xs, xs], 1), np.stack([ys, ys], 1), batch=2,
                    optimizer=rg.SGD(0.05), seed=3).params
    if name == "kf-rtrl":   # streams draw different noise: only the readout's first step
        return
    for k in p:
        assert np.allclose(one[k], two[k], rtol=1e-12, atol=1e-15)


def test_split_into_contiguous_streams():
    est = compiled("tanh", "rtrl")
    p = params_for(est)
    xs, ys = echo_data(20)
    a = est.train(p, xs, ys, batch=4, optimizer=rg.SGD(0.1)).params
    xs3 = np.swapaxes(xs.reshape(4, 5, 3), 0, 1)
    ys3 = np.swapaxes(ys.reshape(4, 5), 0, 1)
    b = est.train(p, xs3, ys3, batch=4, optimizer=rg.SGD(0.1)).params
    assert all(np.array_equal(a[k], b[k]) for k in p)


def test_same_seed_same_numbers_different_seed_different():
    est = compiled("lstm", "uoro")
    p = params_for(est)
    xs, ys = echo_data(50)
    r1 = est.train(p, xs, ys, seed=1, reset_prob=0.1)
    r2 = est.train(p, xs, ys, seed=1, reset_prob=0.1)
    r3 = est.train(p, xs, ys, seed=2, reset_prob=0.1)
    assert np.array_equal(r1.losses, r2.losses)
    assert all(np.array_equal(r1.params[k], r2.params[k]) for k in p)
    assert not np.array_equal(r1.params["W"], r3.params["W"])


@pytest.mark.parametrize("name", ["uoro", "kf-rtrl", "dodge", "tbptt(4)"])
def test_numba_and_numpy_train_alike(name):
    a, b = compiled("lstm", name), compiled("lstm", name, "numba")
    p = params_for(a)
    xs, ys = echo_data(60)
    ra = a.train(p, xs, ys, optimizer=rg.Adam(1e-3), seed=5, batch=2)
    rb = b.train(p, xs, ys, optimizer=rg.Adam(1e-3), seed=5, batch=2)
    assert np.allclose(ra.losses, rb.losses, rtol=1e-9)
    assert all(np.allclose(ra.params[k], rb.params[k], rtol=1e-8, atol=1e-12) for k in p)


def test_tbptt_updates_every_k_steps():
    est = compiled("tanh", "tbptt(4)")
    p = params_for(est)
    xs, ys = echo_data(8)
    tr = est.trainer(p, rg.SGD(0.1))
    tr.run(xs[:3], ys[:3])
    assert all(np.array_equal(tr.params[k], p[k]) for k in p)
    tr.run(xs[3:4], ys[3:4])
    assert not np.array_equal(tr.params["W"], p["W"])


def test_resets_zero_the_state():
    est = compiled("lstm", "rtrl")
    p = params_for(est)
    xs, ys = echo_data(10)
    every = est.train(p, xs, ys, resets=np.ones(10, bool), optimizer=rg.SGD(0.0))
    alone = [est.loss(p, xs[t:t + 1], ys[t:t + 1]) for t in range(10)]
    assert np.allclose(every.losses, alone)
    r1 = est.train(p, xs, ys, reset_prob=1.0, optimizer=rg.SGD(0.0))
    assert np.allclose(r1.losses, alone)


def test_callback_stops_between_chunks_and_chunk_record():
    est = compiled("tanh", "uoro")
    p = params_for(est)
    xs, ys = echo_data(100)
    seen = []
    res = est.trainer(p, chunk=10).run(xs, ys, callback=lambda tr, m: seen.append(m) or
                                       tr.step >= 30, record="chunk")
    assert res.steps == 30 and len(seen) == 3 and len(res.losses) == 3


@pytest.mark.parametrize("name", ["uoro", "kf-rtrl", "tbptt(4)", "rtrl", "dodge"])
def test_training_learns_a_one_step_memory(name):
    est = rg.compile(rg.cells.tanh_rnn(3, 8, 3), name, backend="numba")
    p = est.init_params(0)
    xs, ys = echo_data(6000, seed=1)
    res = est.train(p, xs, ys, optimizer=rg.Adam(1e-2 if name != "dodge" else 3e-3))
    first, last = np.mean(res.losses[:20]), np.mean(res.losses[-500:])
    assert first > 0.9 and last < 0.35, (first, last)


def test_checkpoint_resume_is_bit_for_bit(tmp_path):
    est = compiled("lstm", "uoro", "numba")
    p = params_for(est)
    xs, ys = echo_data(2500, seed=4)
    kw = dict(optimizer=rg.Adam(3e-3), batch=2, seed=9, reset_prob=0.01, chunk=300)
    xs2 = np.swapaxes(xs.reshape(2, 1250, 3), 0, 1)    # two explicit streams
    ys2 = np.swapaxes(ys.reshape(2, 1250), 0, 1)
    whole = est.trainer(p, **kw)
    whole.run(xs2, ys2)
    part = est.trainer(p, **kw)
    part.run(xs2[:500], ys2[:500])                    # cut mid-chunk
    part.save(tmp_path / "ck.npz")
    resumed = est.trainer(p, **kw).load(tmp_path / "ck.npz")
    resumed.run(xs2[500:], ys2[500:])
    assert resumed.step == whole.step == 1250
    assert np.array_equal(resumed.th, whole.th)
    assert np.array_equal(np.array(resumed.curve), np.array(whole.curve))
    assert np.array_equal(resumed.E, whole.E) and np.array_equal(resumed.opt, whole.opt)
    with pytest.raises(rg.DataError, match="batch"):
        est.trainer(p, batch=3).load(tmp_path / "ck.npz")


@pytest.mark.parametrize("old, new, names", [
    ("rgraph.optim", "rgraph.training.optim", ["SGD", "Adam"]),
    ("rgraph.train", "rgraph.training.trainer", ["Trainer", "TrainResult"])])
def test_old_module_paths_still_work_and_warn(old, new, names):
    """rgraph.optim and rgraph.train (the old homes) re-export the same objects, with a
    DeprecationWarning naming the new place."""
    import importlib
    import sys
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        mod = importlib.import_module(old)
    for name in names:
        assert getattr(mod, name) is getattr(importlib.import_module(new), name)
        assert getattr(mod, name) is getattr(rg, name)
