"""Streaming task generators (rgraph.tasks): interface, known optima, encodings,
curriculum, text loading, checkpoint state and batched forks.  Pure numpy, fast; the
tests on the real data files run only where rgraph.tasks.data_dir() has them."""
import itertools
import math
import pickle
import warnings

import numpy as np
import pytest

from rgraph.tasks import (
    TASKS,
    AnBn,
    CharLM,
    Copy,
    DistantBrackets,
    InfluenceBalancing,
    Task,
    data_dir,
    make_task,
)

DATA = data_dir()
TEXT = "the quick brown fox\njumps over the lazy dog\n" * 4

FACTORIES = {
    "influence": lambda: InfluenceBalancing(n=5, n_minus=3),
    "brackets": lambda: DistantBrackets(1, 5, 10),
    "anbn": lambda: AnBn(1, 32),
    "copy": lambda: Copy(),
    "copy_fixed": lambda: Copy(curriculum=False, T_start=25, spread=0),
    "charlm": lambda: CharLM.from_text(TEXT),
}
GENERATED = ["brackets", "anbn", "copy", "copy_fixed"]
ALL = list(FACTORIES)


def rng(seed=0):
    return np.random.default_rng(seed)


def same(a, b):
    """Tuples of arrays equal element for element (shapes and dtypes included)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def cond_entropy_bits(ctx, y):
    """Plug-in estimate of H(y | ctx) in bits per sample (integer codes)."""
    ctx = np.asarray(ctx, np.int64)
    y = np.asarray(y, np.int64)
    joint = ctx * (int(y.max()) + 1) + y
    n = y.shape[0]

    def h(codes):
        _, c = np.unique(codes, return_counts=True)
        p = c / n
        return float(-(p * np.log2(p)).sum())
    return h(joint) - h(ctx)


def chars_of(task, N, seed=0):
    """The character stream c_0..c_N (class ids) of a symbolic task."""
    xs, ys = task.stream(N, rng(seed))
    return np.concatenate([[xs[0].argmax()], ys])


# ----------------------------------------------------------------------------
# common interface
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("T", [0, 1, 37])
def test_stream_shapes_and_dtypes(name, T):
    t = FACTORIES[name]()
    xs, ys = t.stream(T, rng())
    assert xs.dtype == np.float64 and xs.shape == (T, t.n_in)
    if t.loss == "softmax_xent":
        assert ys.dtype == np.int64 and ys.shape == (T,)
        assert ((ys >= 0) & (ys < t.n_out)).all()
        if T:
            np.testing.assert_array_equal(xs.sum(axis=1), 1.0)  # one-hot
            assert set(np.unique(xs)) <= {0.0, 1.0}
    else:
        assert t.loss == "mse"
        assert ys.dtype == np.float64 and ys.shape == (T, t.n_out)
    t.reset()
    xs2, ys2, w = t.stream_weighted(T, rng())
    same((xs, ys), (xs2, ys2))
    assert w.dtype == np.float64 and w.shape == (T,)
    assert set(np.unique(w)) <= {0.0, 1.0}
    if not t.weighted:
        np.testing.assert_array_equal(w, 1.0)


@pytest.mark.parametrize("name", ALL)
def test_units_and_to_unit(name):
    t = FACTORIES[name]()
    if t.loss == "softmax_xent":
        assert t.unit == "bits/char"
        assert t.to_unit(math.log(2)) == pytest.approx(1.0)
        np.testing.assert_allclose(t.to_unit(np.array([0.0, 2 * math.log(2)])), [0, 2])
    else:
        assert (t.loss, t.unit, t.n_in, t.n_out) == ("mse", "mse", 1, 1)
        assert t.to_unit(0.25) == 0.25
    assert isinstance(t.to_unit(1.0), float)
    assert isinstance(t.to_unit(np.float32(1.0)), float)


@pytest.mark.parametrize("name", GENERATED + ["charlm", "influence"])
def test_split_streams_concatenate(name):
    """stream(a); stream(b); ... == stream(a + b + ...) from the same generator state."""
    sizes = [3, 0, 17, 1, 50, 9]
    t1, t2 = FACTORIES[name](), FACTORIES[name]()
    r1, r2 = rng(7), rng(7)
    parts = [t1.stream_weighted(n, r1) for n in sizes]
    whole = t2.stream_weighted(sum(sizes), r2)
    same(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)), whole)
    assert r1.bit_generator.state == r2.bit_generator.state
    same(t1.stream(40, r1), t2.stream(40, r2))  # and they go on together


@pytest.mark.parametrize("name", ALL)
def test_reset(name):
    t = FACTORIES[name]()
    first = t.stream(60, rng(3))
    t.stream(45, rng(4))
    t.reset()
    same(t.stream(60, rng(3)), first)
    fresh = FACTORIES[name]()
    same(fresh.stream(60, rng(3)), first)


def test_repr():
    assert repr(AnBn(1, 32)) == "AnBn(k=1, l=32)"
    assert repr(DistantBrackets(1, 5, 10)) == "DistantBrackets(s=1, k=5, a=10)"
    assert repr(InfluenceBalancing()) == "InfluenceBalancing(n=23, n_minus=13, target=1.0)"
    c = Copy()
    assert repr(c).startswith("Copy(curriculum=True, n_symbols=2, T_start=1, spread=5")
    assert repr(c).endswith("; T=1)")
    c.report(0.0)
    assert repr(c).endswith("; T=2)")
    r = repr(CharLM.from_text(TEXT, start=5))
    assert r.startswith("CharLM(source='<text of") and "start=5" in r


@pytest.mark.parametrize("name", ALL)
def test_config_is_read_only(name):
    t = FACTORIES[name]()
    attr = {"influence": "n", "brackets": "s", "anbn": "k", "copy": "spread",
            "copy_fixed": "spread", "charlm": "vocab"}[name]
    with pytest.raises(AttributeError, match="read-only"):
        setattr(t, attr, 3)
    with pytest.raises(AttributeError, match="read-only"):
        t.n_in = 99
    assert t.n_in != 99
    if isinstance(t, Copy):
        t.T = 7  # the curriculum length is the one public mutable attribute
        assert t.length_range[1] == 7


# ----------------------------------------------------------------------------
# registry and argument errors
# ----------------------------------------------------------------------------


def test_make_task_good():
    assert set(TASKS) == {"influence", "brackets", "anbn", "copy", "charlm"}
    assert all(issubclass(c, Task) for c in TASKS.values())
    assert repr(make_task("anbn", k=2, l=8)) == "AnBn(k=2, l=8)"
    assert isinstance(make_task(" AnBn "), AnBn)  # case and spaces ignored
    assert isinstance(make_task("brackets", s=2, k=3, a=4), DistantBrackets)
    assert isinstance(make_task("influence"), InfluenceBalancing)
    assert make_task("copy", curriculum=False, T_start=25, spread=0).length_range == (25, 25)
    lm = make_task("charlm", path_or_text=TEXT, valid_fraction=0.0)
    assert isinstance(lm, CharLM) and lm.n_valid == 0


def test_make_task_bad():
    with pytest.raises(ValueError, match="unknown task 'lstm'.*anbn, brackets, charlm, copy"):
        make_task("lstm")
    with pytest.raises(TypeError, match=r"make_task\('anbn'\): bad arguments for AnBn"):
        make_task("anbn", n=3)
    with pytest.raises(TypeError, match="charlm"):
        make_task("charlm")  # the text is required
    with pytest.raises(ValueError, match="k <= l"):
        make_task("anbn", k=5, l=2)


@pytest.mark.parametrize("name", ALL)
def test_stream_bad_arguments(name):
    t = FACTORIES[name]()
    with pytest.raises(ValueError, match="non-negative"):
        t.stream(-1, rng())
    for bad in (2.5, True, "3", None):
        with pytest.raises(TypeError, match="T must be a non-negative int"):
            t.stream(bad, rng())
    assert t.stream(np.int32(4), rng())[0].shape[0] == 4  # numpy ints are fine


@pytest.mark.parametrize("name", GENERATED)
def test_generated_streams_need_a_generator(name):
    t = FACTORIES[name]()
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        t.stream(5)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        t.stream(5, np.random.RandomState(0))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        t.stream_weighted(5, 0)
    t.stream(50, rng())
    # a bad generator is refused even when the buffer could serve the request
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        t.stream(0, "seed")


def test_constructor_errors():
    with pytest.raises(ValueError, match="s must be >= 1"):
        DistantBrackets(s=0)
    with pytest.raises(ValueError, match="k must be >= 0"):
        DistantBrackets(k=-1)
    with pytest.raises(ValueError, match="alphabet size a=70 exceeds 62"):
        DistantBrackets(a=70)
    with pytest.raises(TypeError, match="s must be an int"):
        DistantBrackets(s=1.5)
    with pytest.raises(TypeError, match="a must be an int"):
        DistantBrackets(a=True)
    with pytest.raises(ValueError, match="need k <= l"):
        AnBn(3, 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        AnBn(0, 4)
    with pytest.raises(ValueError, match="n must be >= 1"):
        InfluenceBalancing(n=0)
    with pytest.raises(ValueError, match="exceed n=5"):
        InfluenceBalancing(n=5, p=6)
    with pytest.raises(ValueError, match="inconsistent p=2 and n_minus=2"):
        InfluenceBalancing(n=5, p=2, n_minus=2)
    with pytest.raises(ValueError, match="n_minus=6 exceeds n=5"):
        InfluenceBalancing(n=5, n_minus=6)
    with pytest.warns(UserWarning, match="not negative"):
        InfluenceBalancing(n=5, n_minus=2)
    with pytest.raises(ValueError, match="n_symbols must be >= 2"):
        Copy(n_symbols=1)
    with pytest.raises(ValueError, match="n_symbols=37 exceeds 36"):
        Copy(n_symbols=37)
    with pytest.raises(ValueError, match="T_start must be >= 1"):
        Copy(T_start=0)
    with pytest.raises(ValueError, match="spread must be >= 0"):
        Copy(spread=-1)
    with pytest.raises(TypeError, match="path_or_text must be a str or os.PathLike"):
        CharLM(123)
    with pytest.raises(ValueError, match="valid_fraction must be in"):
        CharLM.from_text(TEXT, 1.0)
    with pytest.raises(ValueError, match="start must be >= 0"):
        CharLM.from_text(TEXT, start=-1)


# ----------------------------------------------------------------------------
# a^n b^n
# ----------------------------------------------------------------------------


def test_anbn_optima():
    t = AnBn(1, 32)
    assert t.optimum == pytest.approx(1 / 7, abs=1e-12)
    assert t.optimum_no_counting == pytest.approx(2 / 7, abs=1e-12)
    assert t.entropy_n_bits == pytest.approx(5.0)
    assert t.mean_period == pytest.approx(35.0)
    for k, m in [(1, 1), (2, 9), (5, 12)]:
        u = AnBn(k, m)
        assert u.optimum == pytest.approx(math.log2(m - k + 1) / (k + m + 2))
        assert u.optimum_no_counting == pytest.approx(2 * u.optimum)
    assert AnBn(4, 4).optimum == 0.0
    assert (t.vocab, t.n_in, t.n_out) == ("\nab", 3, 3)


def test_anbn_format():
    t = AnBn(2, 6)
    text = t.decode(chars_of(t, 3000, seed=1))
    assert text[0] == "\n"  # the virtual line break that starts the stream
    lines = text[1:].split("\n")[:-1]  # drop the unfinished last line
    assert len(lines) > 100
    for i in range(0, len(lines) - 1, 2):
        a, b = lines[i], lines[i + 1]
        assert set(a) == {"a"} and set(b) == {"b"} and len(a) == len(b)
        assert 2 <= len(a) <= 6
    assert {len(a) for a in lines[::2]} == set(range(2, 7))
    assert t.decode(t.encode("aab\n")) == "aab\n"
    np.testing.assert_array_equal(t.encode("ab\n"), [1, 2, 0])
    with pytest.raises(ValueError, match=r"\['c'\] not in vocab"):
        t.encode("abc")


def _anbn_contexts(c):
    """For each target c_j (j >= 1): (line type, position in line, n of the a-line
    that the current b-line answers); all computed from c_0..c_{j-1}."""
    N = c.shape[0] - 1
    idx = np.arange(N + 1)
    nl = c == 0
    last_nl = np.maximum.accumulate(np.where(nl, idx, 0))
    prev = last_nl[:-1]  # last line break before target j = 1..N
    pos = idx[1:] - prev - 1
    kind = (np.cumsum(nl)[:-1] - 1) % 2  # 0 = a-line, 1 = b-line
    prevprev = last_nl[np.maximum(prev - 1, 0)]
    n = np.where(kind == 1, prev - prevprev - 1, 0)
    return kind, pos, n


def test_anbn_generated_entropy_rate():
    """A count-based estimate of the entropy rate of the generated stream matches
    the optimum (counting model) and optimum_no_counting (position-only model)."""
    t = AnBn(1, 32)
    c = chars_of(t, 210_000)
    kind, pos, n = _anbn_contexts(c)
    y = c[1:]
    counting = cond_entropy_bits((kind * 64 + pos) * 64 + n, y)
    no_counting = cond_entropy_bits(kind * 64 + pos, y)
    assert counting == pytest.approx(t.optimum, rel=0.01)
    assert no_counting == pytest.approx(t.optimum_no_counting, rel=0.01)
    # b-lines and the line break after them are fully determined by n
    b = kind == 1
    assert cond_entropy_bits(pos[b] * 64 + n[b], y[b]) == pytest.approx(0.0, abs=1e-12)


def test_anbn_matches_the_papers_definition():
    """Tallec & Ollivier §4 (and their generator, datasets/anbn/generate.lua): n uniform
    on {k, ..., l} inclusive, n a's, a line break, n b's, a line break, nothing else."""
    t = AnBn(1, 32)
    c = chars_of(t, 400_000, seed=3)
    text = t.decode(c)[1:]
    lines = text.split("\n")[:-1]
    lines = lines[:len(lines) // 2 * 2]
    ns = np.array([len(a) for a in lines[::2]])
    assert all(a == "a" * n and b == "b" * n
               for a, b, n in zip(lines[::2], lines[1::2], ns, strict=True))
    counts = np.bincount(ns, minlength=34)
    assert counts[0] == 0 and counts[33] == 0 and (counts[1:33] > 0).all()
    # uniform: chi-square with 31 degrees of freedom, far below its 0.1 % point (61.1)
    expected = len(ns) / 32
    assert ((counts[1:33] - expected) ** 2 / expected).sum() < 61.1


def test_anbn_optimal_bits():
    """The exact optimal predictor: 0 bits on the b-lines and the first a, log2(32)
    bits per complete pair of lines whatever its n; its mean is the stream's own
    optimum, near 1/7."""
    t = AnBn(1, 32)
    _, ys = AnBn(1, 32).stream(60_000, np.random.default_rng(123))
    bits, where, ns = t.optimal_bits(ys)
    assert bits[where != 1].max() == 0.0
    ends = np.flatnonzero((where == 2) & (ys == 0))       # each pair's last character
    per_pair = np.diff(np.concatenate([[0.0], np.cumsum(bits)[ends]]))
    np.testing.assert_allclose(per_pair, 5.0, atol=1e-9)
    assert set(ns[ends]) <= set(range(1, 33))
    assert bits.mean() == pytest.approx(0.14533, abs=1e-5)   # this sample's floor
    many = [t.optimal_bits(AnBn(1, 32).stream(100_000, np.random.default_rng(s))[1])[0]
            .mean() for s in range(5)]
    assert np.mean(many) == pytest.approx(t.optimum, abs=0.003)
    u = AnBn(2, 6)
    with pytest.raises(ValueError, match="cannot follow"):
        u.optimal_bits(u.encode("a\n"))                  # n = 1 < k
    with pytest.raises(ValueError, match="cannot follow"):
        t.optimal_bits(t.encode("aa\nbbb"))


# ----------------------------------------------------------------------------
# distant brackets
# ----------------------------------------------------------------------------


def test_brackets_optimum_formula():
    t = DistantBrackets(1, 5, 10)
    assert t.optimum == pytest.approx(6 * math.log2(10) / 12)
    assert t.optimum == pytest.approx(1.6609640474436813)
    for s, k, a in [(1, 5, 10), (2, 0, 3), (3, 7, 26), (1, 1, 1)]:
        u = DistantBrackets(s, k, a)
        L = 2 * s + k + 5
        assert u.line_length == L
        assert u.optimum == pytest.approx((s + k) * math.log2(a) / L)
        assert u.optimum_no_memory == pytest.approx((2 * s + k) * math.log2(a) / L)
        assert u.n_in == u.n_out == a + 3
        assert u.vocab[:3] == "\n[]"


def test_brackets_format():
    s, k, a = 2, 4, 5
    t = DistantBrackets(s, k, a)
    text = t.decode(chars_of(t, 1300, seed=2))
    assert text[0] == "\n"
    lines = text[1:].split("\n")[:-1]
    assert len(lines) == 1300 // (2 * s + k + 5)
    letters = set("abcde")
    for ln in lines:
        assert len(ln) == 2 * s + k + 4
        assert ln[0] == "[" and ln[s + 1] == "]" and ln[s + k + 2] == "[" and ln[-1] == "]"
        inner, gap, again = ln[1:s + 1], ln[s + 2:s + k + 2], ln[s + k + 3:-1]
        assert inner == again and set(inner + gap) <= letters
    # every letter occurs
    assert set("".join(lines)) == letters | set("[]")


def test_brackets_generated_entropy_rate():
    """Count-based estimate on a long generated stream: conditioning on the position
    in the line and on the character s+k+2 steps back (where the bracketed
    characters repeat) gives the paper's entropy rate; the position alone gives the
    memoryless rate.  The fresh characters are uniform (log2 a bits each)."""
    s, k, a = 1, 5, 10
    t = DistantBrackets(s, k, a)
    L, lag = 2 * s + k + 5, s + k + 2
    c = chars_of(t, 144_000)
    N = c.shape[0] - 1
    y = c[1:]
    pos = (np.arange(1, N + 1) - 1) % L  # position of target j in its line
    # the same, computed from the stream's own line breaks
    idx = np.arange(N + 1)
    last_nl = np.maximum.accumulate(np.where(c == 0, idx, 0))
    np.testing.assert_array_equal(idx[1:] - last_nl[:-1] - 1, pos)
    back = np.concatenate([np.full(lag, -1), c[: N + 1 - lag]])[1:] + 1  # c_{j-lag}
    memory = cond_entropy_bits(pos * 100 + back, y)
    memoryless = cond_entropy_bits(pos, y)
    assert memory == pytest.approx(t.optimum, rel=0.01)
    assert memoryless == pytest.approx(t.optimum_no_memory, rel=0.01)
    # per position: s + k uniformly random characters, the rest determined
    per_pos = np.array([cond_entropy_bits(back[pos == p], y[pos == p]) for p in range(L)])
    random_pos = per_pos > 1.0
    assert random_pos.sum() == s + k
    np.testing.assert_allclose(per_pos[random_pos], math.log2(a), rtol=0.02)
    np.testing.assert_allclose(per_pos[~random_pos], 0.0, atol=1e-12)


# ----------------------------------------------------------------------------
# influence balancing
# ----------------------------------------------------------------------------


def test_influence_matrices():
    for n, n_minus in [(23, 13), (5, 3), (1, 1), (4, 4)]:
        t = InfluenceBalancing(n=n, n_minus=n_minus)
        A, B = t.matrix_A(), t.matrix_B()
        assert A.shape == B.shape == (n, n)
        np.testing.assert_array_equal(np.diag(A), 0.5)
        np.testing.assert_array_equal(np.diag(A, 1), 0.5)
        assert np.count_nonzero(A) == 2 * n - 1
        np.testing.assert_allclose(B, np.linalg.inv(np.eye(n) - A), atol=1e-9)
        b = t.sign_vector()
        assert (b[: t.p] == 1).all() and (b[t.p:] == -1).all() and b.shape == (n,)
        assert t.p + t.n_minus == n
        assert t.dequilibrium_dtheta == 4 * t.p - 2 * n
        # the equilibrium response of s^1 to theta: (B b)_1
        assert (B @ b)[0] == pytest.approx(t.dequilibrium_dtheta)
        np.testing.assert_array_equal(t.readout_vector(), np.eye(1, n))


def test_influence_paper_setup_and_convergence():
    t = InfluenceBalancing(n=23, n_minus=13)
    assert (t.p, t.dequilibrium_dtheta) == (10, -6)
    assert t.theta_star == pytest.approx(-1 / 6)
    assert InfluenceBalancing().n_minus == 13
    assert InfluenceBalancing(n=5).n_minus == 3
    assert InfluenceBalancing(n=23, p=10).n_minus == 13
    states, losses = t.simulate(t.theta_star, 400)
    assert states.shape == (400, 23) and losses.shape == (400,)
    assert states[-1, 0] == pytest.approx(t.target, abs=1e-9)
    assert losses[-1] == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(states[-1], t.matrix_B() @ (t.theta_star * t.sign_vector()),
                               atol=1e-9)
    # short-term influence has the opposite sign of the long-term one
    s1, _ = t.simulate(1.0, 1)
    assert s1[0, 0] == 1.0
    long, _ = t.simulate(1.0, 400)
    assert long[-1, 0] == pytest.approx(-6.0)
    # simulate from a given state; T = 0
    st, _ = t.simulate(0.0, 3, s0=np.ones(23))
    np.testing.assert_allclose(st[0], t.matrix_A() @ np.ones(23))
    assert t.simulate(0.3, 0)[0].shape == (0, 23)
    # the stream is the constant drive and target
    u = InfluenceBalancing(n=5, n_minus=3, target=2.5)
    xs, ys = u.stream(4)
    np.testing.assert_array_equal(xs, 1.0)
    np.testing.assert_array_equal(ys, 2.5)
    assert u.optimum == 0.0 and u.theta_star == pytest.approx(2.5 / -2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert InfluenceBalancing(n=4, n_minus=2).theta_star is None  # 4p - 2n = 0


# ----------------------------------------------------------------------------
# copy with curriculum
# ----------------------------------------------------------------------------


def _lengths(starts):
    """Lengths 2L of the whole sequences marked by ``starts`` (last one dropped)."""
    s = np.flatnonzero(starts)
    return np.diff(s)


def test_copy_encoding():
    t = Copy(curriculum=False, T_start=5, spread=0)
    assert (t.vocab, t.n_in, t.n_out, t.marker, t.optimum) == ("01#", 3, 3, 2, 0.0)
    xs, ys, w, starts = t.stream_weighted(30, rng(0), return_starts=True)
    assert starts.dtype == bool and starts.shape == (30,)
    np.testing.assert_array_equal(np.flatnonzero(starts), [0, 10, 20])
    for s0 in (0, 10, 20):
        inp, tgt = t.decode(xs[s0:s0 + 10]), t.decode(ys[s0:s0 + 10])
        bits = inp[:5]
        assert set(bits) <= {"0", "1"}
        assert inp == bits + "#####" and tgt == "#####" + bits
        np.testing.assert_array_equal(w[s0:s0 + 10], [0] * 5 + [1] * 5)
    # stream() is stream_weighted() without the weights
    t.reset()
    same(t.stream(30, rng(0)), (xs, ys))
    # a whole fresh sequence does not touch the stream buffer
    st = t.get_state()
    sx, sy, sw = t.sequence(rng(1))
    assert sx.shape == (10, 3) and sy.shape == (10,) and sw.shape == (10,)
    assert t.decode(sy)[:5] == "#####" and t.decode(sy)[5:] == t.decode(sx)[:5]
    np.testing.assert_array_equal(sw, [0] * 5 + [1] * 5)
    same(tuple(t.get_state()[k] for k in ("buf_inp", "buf_w")),
         (st["buf_inp"], st["buf_w"]))
    with pytest.raises(TypeError, match="Generator"):
        t.sequence(None)
    # more symbols
    u = Copy(n_symbols=4, curriculum=False, T_start=3, spread=0)
    assert u.vocab == "0123#" and u.n_in == 5
    xs, ys, w = u.stream_weighted(600, rng(2))
    assert set(u.decode(xs)) == set("0123#")
    assert w.sum() == 300


def test_copy_curriculum():
    t = Copy()  # T_start = 1, spread = 5, threshold = 0.15
    assert (t.T, t.length_range) == (1, (1, 1))
    assert t.report(0.2) is False and t.T == 1
    assert t.report(0.15) is False and t.T == 1  # strictly below the threshold
    assert t.report(0.149) is True and t.T == 2
    for _ in range(8):
        t.report(0.0)
    assert t.T == 10 and t.length_range == (5, 10)
    fixed = Copy(curriculum=False, T_start=4)
    assert fixed.report(0.0) is False and fixed.T == 4
    t.reset()
    assert t.T == 1


@pytest.mark.parametrize("T, spread, lo", [(8, 5, 3), (2, 5, 1), (12, 0, 12), (6, 2, 4)])
def test_copy_lengths_drawn_in_range(T, spread, lo):
    t = Copy(T_start=T, spread=spread)
    _, _, w, starts = t.stream_weighted(4000, rng(T), return_starts=True)
    L = _lengths(starts) // 2
    assert set(L) == set(range(lo, T + 1))  # all lengths in [max(1, T - spread), T]
    # weights: the second half of every sequence
    s = np.flatnonzero(starts)
    for a, b in itertools.pairwise(s):
        half = (b - a) // 2
        np.testing.assert_array_equal(w[a:b], [0] * half + [1] * half)


def test_copy_buffered_sequences_keep_their_length():
    t = Copy(T_start=10, spread=0)
    t.stream_weighted(5, rng(0))  # 15 steps of a length-10 sequence stay buffered
    t.T = 3
    assert t.length_range == (3, 3)
    _, _, _, starts = t.stream_weighted(40, rng(1), return_starts=True)
    s = np.flatnonzero(starts)
    assert s[0] == 15  # the buffered rest of the first sequence
    assert (np.diff(s) == 6).all()


def test_copy_dodge_setting():
    t = Copy(curriculum=False, T_start=25, spread=0)
    _, _, w, starts = t.stream_weighted(500, rng(0), return_starts=True)
    np.testing.assert_array_equal(np.flatnonzero(starts), np.arange(0, 500, 50))
    assert w.sum() == 250


# ----------------------------------------------------------------------------
# character-level language modelling
# ----------------------------------------------------------------------------


def test_charlm_from_text_and_string():
    t = CharLM.from_text(TEXT)
    u = CharLM(TEXT)  # a str containing a newline is text
    assert t.vocab == u.vocab == "".join(sorted(set(TEXT)))
    assert t.n_in == t.n_out == len(t.vocab)
    assert (t.loss, t.unit, t.optimum) == ("softmax_xent", "bits/char", None)
    n = len(TEXT)
    assert t.n_valid == round(0.1 * n) and t.n_train == n - t.n_valid
    assert t.decode(t.train_ids()) == TEXT[: t.n_train]
    assert t.decode(t.encode("lazy dog")) == "lazy dog"
    with pytest.raises(ValueError, match="character 'Z' not in the vocabulary"):
        t.encode("Zebra")
    no_nl = CharLM.from_text("abcabcabcabc", 0.25)
    assert (no_nl.vocab, no_nl.n_train, no_nl.n_valid) == ("abc", 9, 3)
    # a str without a newline is a path
    with pytest.raises(ValueError, match="not found"):
        CharLM("abcabcabc")


def test_charlm_stream_walks_the_training_split_cyclically():
    text = "abcdefghij\n"
    t = CharLM.from_text(text, 0.0)
    assert t.n_train == 11 and t.cursor == 0
    xs, ys = t.stream(25)
    ids = t.train_ids()
    idx = np.arange(25) % 11
    np.testing.assert_array_equal(xs.argmax(1), ids[idx])
    np.testing.assert_array_equal(ys, ids[(idx + 1) % 11])  # last char predicts the first
    assert t.cursor == 25 % 11
    s = CharLM.from_text(text, 0.0, start=13)
    assert s.start == 2 and s.cursor == 2
    assert s.decode(s.stream(3)[0]) == "cde"
    s.reset()
    assert s.cursor == 2


def test_charlm_valid_split():
    t = CharLM.from_text(TEXT, 0.25)
    xs, ys = t.valid()
    assert xs.shape == (t.n_valid, t.n_in) and ys.shape == (t.n_valid,)
    assert t.decode(ys) == TEXT[t.n_train:]  # every validation character is a target once
    assert t.decode(xs) == TEXT[t.n_train - 1: -1]  # first input: last training char
    x5, y5 = t.valid(5)
    same((x5, y5), (xs[:5], ys[:5]))
    assert t.valid(10 ** 6)[1].shape == (t.n_valid,)
    # a separate validation text: the whole of it, inputs v[:-1], targets v[1:]
    v = "over the dog\n"
    u = CharLM(TEXT, 0.25, valid_source=v)
    assert u.valid_fraction == 0.0 and u.n_train == len(TEXT) and u.n_valid == len(v) - 1
    vx, vy = u.valid()
    assert u.decode(vx) == v[:-1] and u.decode(vy) == v[1:]
    w = CharLM(TEXT, valid_source="xyz\n")  # vocabulary covers both texts
    assert set("xyz") <= set(w.vocab)
    with pytest.raises(ValueError, match="need at least 2"):
        CharLM(TEXT, valid_source="\n")  # one character: nothing to predict


def test_charlm_from_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    for src in (p, str(p)):
        t = CharLM(src, 0.1)
        assert t.source == str(p)
        assert t.decode(t.train_ids()) == TEXT[: t.n_train]
    q = tmp_path / "with newline\nin name.txt"
    q.write_text("hello world\n" * 3)
    named = CharLM(str(q), is_text=False)  # a path even though it contains a newline
    assert named.source == str(q) and named.decode(named.train_ids())[:5] == "hello"
    with pytest.raises(ValueError, match="is_text=True but got a path object"):
        CharLM(p, is_text=True)


def test_charlm_ptb_char_decoding(tmp_path):
    raw = (" a e r _ b a n k _ < u n k > \n"
           " p i e r r e _ s a y s _ n \n"
           "\n"
           " a _ b \n")
    p = tmp_path / "ptb.char.valid.txt"
    p.write_text(raw)
    t = CharLM(p, 0.0)
    expect = "aer_bank_<unk>\npierre_says_n\n\na_b\n"
    assert t.decode(t.train_ids()) == expect
    assert " " not in t.vocab and "_" in t.vocab
    assert t.vocab == "".join(sorted(set(expect)))
    # off: the raw text, spaces included
    raw_t = CharLM(p, 0.0, ptb_char=False)
    assert raw_t.decode(raw_t.train_ids()) == raw
    # on for another name
    q = tmp_path / "other.txt"
    q.write_text(raw)
    on = CharLM(q, 0.0, ptb_char=True)
    assert on.decode(on.train_ids()) == expect
    # not in the format
    bad = tmp_path / "ptb.char.train.txt"
    bad.write_text("a b cd e\n")
    with pytest.raises(ValueError, match="line 1 is not in ptb.char format.*ptb_char=False"):
        CharLM(bad)


def test_charlm_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not found.*existing, readable UTF-8"):
        CharLM(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="is a directory"):
        CharLM(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        CharLM(empty)
    with pytest.raises(ValueError, match="is empty"):
        CharLM.from_text("")
    short = tmp_path / "short.txt"
    short.write_text("ab")
    with pytest.raises(ValueError, match="only 2 characters, too short"):
        CharLM(short, 0.5)
    assert CharLM(short, 0.0).n_train == 2
    with pytest.raises(ValueError, match="too short"):
        CharLM.from_text("a", 0.0)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00abc\n")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        CharLM(binary)


@pytest.mark.skipif(not (DATA / "tinyshakespeare.txt").exists(), reason="no data files")
def test_charlm_tinyshakespeare():
    t = CharLM(DATA / "tinyshakespeare.txt")
    assert t.n_in == 65
    assert t.n_train + t.n_valid == 1115394
    _, ys = t.valid()
    assert ys.shape == (t.n_valid,)
    assert t.decode(t.stream(14)[0]) == "First Citizen:"
    st = t.get_state()
    assert sum(np.asarray(v).nbytes for v in st.values()) < 2000  # not the text
    forks = [t.fork(i, 4) for i in range(4)]
    assert [f.cursor for f in forks] == [i * t.n_train // 4 for i in range(4)]


@pytest.mark.skipif(not (DATA / "ptb.char.valid.txt").exists(), reason="no data files")
def test_charlm_ptb_file():
    t = CharLM(DATA / "ptb.char.valid.txt", 0.0)
    assert " " not in t.vocab and "_" in t.vocab and "\n" in t.vocab
    assert t.n_in <= 52
    assert t.decode(t.stream(20)[0]) == "consumers_may_want_t"


# ----------------------------------------------------------------------------
# get_state / set_state
# ----------------------------------------------------------------------------


def _advanced(name):
    """A task part-way through its stream (mid-line / mid-sequence, Copy's T moved)."""
    t = FACTORIES[name]()
    t.stream(23, rng(11))
    if isinstance(t, Copy) and t.curriculum:
        t.report(0.0)
        t.report(0.0)
        t.stream(5, rng(12))
    return t


@pytest.mark.parametrize("name", ALL)
def test_state_round_trip(name):
    t = _advanced(name)
    st = t.get_state()
    assert st["task"] == type(t).__name__
    a = t.stream_weighted(70, rng(5))
    t.stream(13, rng(6))  # move on; the snapshot must not follow
    if isinstance(t, Copy):
        t.report(0.0)
    t.set_state(st)
    b = t.stream_weighted(70, rng(5))
    same(a, b)
    # into another task of the same configuration
    u = FACTORIES[name]()
    u.set_state(st)
    same(u.stream_weighted(70, rng(5)), a)


@pytest.mark.parametrize("name", ALL)
def test_state_is_small_plain_and_survives_savez_and_pickle(name, tmp_path):
    t = _advanced(name)
    st = t.get_state()
    for k, v in st.items():
        assert isinstance(k, str)
        assert isinstance(v, (np.ndarray, int, float, bool, str)), (k, type(v))
        if isinstance(v, np.ndarray):
            assert v.ndim == 1 and v.dtype != object
    assert sum(np.asarray(v).nbytes for v in st.values()) < 4000
    a = t.stream_weighted(40, rng(9))
    f = tmp_path / "state.npz"
    np.savez(f, **st)
    with np.load(f) as z:  # allow_pickle=False: no object arrays needed
        loaded = dict(z)
    t.set_state(loaded)
    same(t.stream_weighted(40, rng(9)), a)
    t.set_state(pickle.loads(pickle.dumps(st)))
    same(t.stream_weighted(40, rng(9)), a)


def test_charlm_state_is_only_the_cursor():
    text = "".join(chr(97 + i % 26) for i in range(50_000)) + "\n"
    t = CharLM.from_text(text)
    t.stream(1234)
    st = t.get_state()
    assert st["cursor"] == 1234
    assert {k for k in st if not k.startswith("config.")} == {"task", "cursor"}
    assert sum(np.asarray(v).nbytes for v in st.values()) < 1000


def test_copy_state_holds_the_curriculum_T():
    t = Copy()
    for _ in range(4):
        t.report(0.0)
    st = t.get_state()
    assert st["T"] == 5
    t.reset()
    t.set_state(st)
    assert t.T == 5 and t.length_range == (1, 5)


def test_set_state_refuses_other_tasks_and_configurations():
    st = AnBn(1, 32).get_state()
    with pytest.raises(ValueError, match="from a AnBn task, not a DistantBrackets"):
        DistantBrackets().set_state(st)
    with pytest.raises(ValueError, match=r"different configuration of AnBn \(l: state has 32, "
                                         r"this task has 16\)"):
        AnBn(1, 16).set_state(st)
    with pytest.raises(ValueError, match="spread: state has 5, this task has 3"):
        Copy(spread=3).set_state(Copy().get_state())
    with pytest.raises(ValueError, match="curriculum: state has True, this task has False"):
        Copy(curriculum=False).set_state(Copy().get_state())
    with pytest.raises(ValueError, match="n_minus: state has 3"):
        InfluenceBalancing(n=5, n_minus=4).set_state(InfluenceBalancing(n=5, n_minus=3)
                                                     .get_state())
    lm = CharLM.from_text(TEXT)
    other = CharLM.from_text(TEXT.replace("fox", "cat"))  # same length, other text
    with pytest.raises(ValueError, match="checksum"):
        other.set_state(lm.get_state())
    with pytest.raises(ValueError, match="start: state has 0, this task has 7"):
        CharLM.from_text(TEXT, start=7).set_state(lm.get_state())
    with pytest.raises(ValueError, match="valid_fraction"):
        CharLM.from_text(TEXT, 0.2).set_state(lm.get_state())
    # the data is identified by content, not by where it came from
    same_text = CharLM(TEXT)
    same_text.set_state(lm.get_state())


def test_set_state_refuses_malformed_states():
    t = AnBn(1, 8)
    t.stream(5, rng())
    before = t.get_state()
    with pytest.raises(TypeError, match="state must be a dict"):
        t.set_state([1, 2])
    with pytest.raises(ValueError, match="no 'task' entry"):
        t.set_state({"buf": np.array([0])})
    bad = dict(before, buf=np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="'buf' has values outside"):
        t.set_state(bad)
    with pytest.raises(ValueError, match="'buf' must be a 1-D int array"):
        t.set_state(dict(before, buf=np.array([0.5])))
    with pytest.raises(ValueError, match="'buf' is empty"):
        t.set_state(dict(before, buf=np.zeros(0, np.int64)))
    missing = dict(before)
    del missing["buf"]
    with pytest.raises(ValueError, match=r"\['buf'\] are missing"):
        t.set_state(missing)
    with pytest.raises(ValueError, match="unknown state entries"):
        t.set_state(dict(before, extra=1))
    no_cfg = dict(before)
    del no_cfg["config.l"]
    with pytest.raises(ValueError, match="l is missing from the state"):
        t.set_state(no_cfg)
    with pytest.raises(ValueError, match="cursor.*must be an int"):
        CharLM.from_text(TEXT).set_state(dict(CharLM.from_text(TEXT).get_state(),
                                              cursor=10 ** 6))
    c = Copy()
    c.stream(7, rng())
    cst = c.get_state()
    with pytest.raises(ValueError, match="different lengths"):
        c.set_state(dict(cst, buf_w=np.ones(cst["buf_w"].shape[0] + 2)))
    with pytest.raises(ValueError, match="'T' must be an int"):
        c.set_state(dict(cst, T=0))
    with pytest.raises(ValueError, match="'buf_w' must hold only 0 and 1"):
        c.set_state(dict(cst, buf_w=np.full(cst["buf_w"].shape, 0.5)))
    # failed restores leave the task untouched
    assert t.get_state()["buf"].tolist() == before["buf"].tolist()
    assert c.get_state()["T"] == cst["T"]


# ----------------------------------------------------------------------------
# fork
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_fork_is_a_reset_independent_copy(name):
    t = _advanced(name)
    orig_state = t.get_state()
    fresh_state = FACTORIES[name]().get_state()
    forks = [t.fork(i, 3) for i in range(3)]
    for i, f in enumerate(forks):
        assert f is not t and type(f) is type(t)
        if not isinstance(t, CharLM) or i == 0:
            assert repr(f) == repr(FACTORIES[name]())
            # reset: the start of the stream, whatever the original had consumed
            for k, v in fresh_state.items():
                np.testing.assert_array_equal(f.get_state()[k], v)
    # streaming the forks changes neither the original nor the other forks
    for i, f in enumerate(forks):
        f.stream(31, rng(100 + i))
        if isinstance(f, Copy):
            f.report(0.0)
    for k, v in orig_state.items():
        np.testing.assert_array_equal(t.get_state()[k], v)
    # ... and streaming the original changes no fork
    fork_states = [f.get_state() for f in forks]
    t.stream(29, rng(99))
    for f, st in zip(forks, fork_states):
        for k, v in st.items():
            np.testing.assert_array_equal(f.get_state()[k], v)
    if not isinstance(t, CharLM):  # a fork of a used fork is again a fresh stream
        for k, v in fresh_state.items():
            np.testing.assert_array_equal(forks[1].fork(1, 3).get_state()[k], v)
    # a fork streams what a fresh task streams from the same generator state
    if not isinstance(t, CharLM):
        same(t.fork(2, 3).stream_weighted(50, rng(4)),
             FACTORIES[name]().stream_weighted(50, rng(4)))


@pytest.mark.parametrize("name", GENERATED)
def test_forks_with_different_draws_differ(name):
    t = FACTORIES[name]()
    forks = [t.fork(i, 4) for i in range(4)]
    r = rng(0)  # one generator feeding all forks in turn, as a batched trainer does
    outs = [f.stream(200, r)[0] for f in forks]
    for i in range(4):
        for j in range(i):
            assert not np.array_equal(outs[i], outs[j])
    # each fork's state restores into the same fork of an equal task
    states = [f.get_state() for f in forks]
    r_state = r.bit_generator.state
    nxt = [f.stream(60, r) for f in forks]
    r.bit_generator.state = r_state
    again = [FACTORIES[name]().fork(i, 4) for i in range(4)]
    for g, st in zip(again, states):
        g.set_state(st)
    for g, a in zip(again, nxt):
        same(g.stream(60, r), a)


def test_forks_do_not_share_buffers():
    for t in (AnBn(), DistantBrackets(), Copy()):
        t.stream(9, rng())  # leaves a partial line / sequence in the buffer
        f = t.fork(0, 2)
        assert f._buf is not t._buf
        bufs = [t._buf, f._buf] if isinstance(t._buf, np.ndarray) else [*t._buf, *f._buf]
        for i, a in enumerate(bufs):
            for b in bufs[:i]:
                assert not np.shares_memory(a, b)


def test_copy_forks_start_at_T_start_and_keep_their_own_T():
    t = Copy()
    for _ in range(3):
        t.report(0.0)
    f0, f1 = t.fork(0, 2), t.fork(1, 2)
    assert (t.T, f0.T, f1.T) == (4, 1, 1)
    f0.report(0.0)
    assert (t.T, f0.T, f1.T) == (4, 2, 1)


def test_charlm_forks_start_evenly_spaced():
    text = "".join(chr(97 + i % 7) for i in range(1000)) + "\n"
    t = CharLM.from_text(text, 0.1)  # n_train = 901
    n = t.n_train
    forks = [t.fork(i, 4) for i in range(4)]
    assert [f.start for f in forks] == [0, n // 4, 2 * n // 4, 3 * n // 4]
    assert [f.cursor for f in forks] == [f.start for f in forks]
    ids = t.train_ids()
    for f in forks:
        xs, _ = f.stream(5)
        np.testing.assert_array_equal(xs.argmax(1), ids[f.start:f.start + 5])
    assert t.cursor == 0 and forks[0].cursor == 5 and forks[1].cursor == n // 4 + 5
    # offsets are relative to the task's own start, modulo n_train
    s = CharLM.from_text(text, 0.1, start=800)
    assert [s.fork(i, 2).start for i in range(2)] == [800, (800 + n // 2) % n]
    assert "start=800" in repr(s.fork(0, 2)) and "start=800" not in repr(s.fork(1, 2))
    # the forks share the read-only text, not the cursor
    assert forks[2]._ids is t._ids and not t._ids.flags.writeable
    # a fork's state goes into the same fork of an equal task, not into another
    st = forks[2].get_state()
    CharLM.from_text(text, 0.1).fork(2, 4).set_state(st)
    with pytest.raises(ValueError, match="start"):
        CharLM.from_text(text, 0.1).fork(1, 4).set_state(st)


@pytest.mark.parametrize("name", ["anbn", "charlm", "influence"])
def test_fork_bad_arguments(name):
    t = FACTORIES[name]()
    with pytest.raises(ValueError, match="need 0 <= i < n, got i=3, n=3"):
        t.fork(3, 3)
    with pytest.raises(ValueError, match="i must be >= 0"):
        t.fork(-1, 3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        t.fork(0, 0)
    with pytest.raises(TypeError, match="i must be an int"):
        t.fork(0.0, 2)
    with pytest.raises(TypeError, match="n must be an int"):
        t.fork(0, "2")
    assert repr(t.fork(np.int64(0), np.int64(1))) == repr(t)
