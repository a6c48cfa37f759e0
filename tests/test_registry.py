"""The estimator registry reads what each spec declares: a toy estimator added in one
file and one ``register`` line compiles by name, appears in the families table and
takes its option on the command line; declarations that cannot work are refused."""
import importlib
import inspect
import sys

import numpy as np
import pytest

import rgraph as rg
from rgraph.estimators import (ESTIMATORS, command_line_options, known, make_spec,
                               register, shown, unregister)
from rgraph.estimators.base import EstimatorSpec, Option
from rgraph.estimators.names import ALIASES, ARGUMENTS, Argument, parse_estimator
from rgraph.schedule import schedule

from conftest import rgraph_cli

TESTS = str(__import__("pathlib").Path(__file__).resolve().parent)


@pytest.fixture
def toy():
    """The toy estimator registered (its module's one line), and removed afterwards."""
    sys.modules.pop("toy_estimator", None)
    module = importlib.import_module("toy_estimator")
    yield module
    unregister("toy-immediate")
    sys.modules.pop("toy_estimator", None)


def test_a_toy_estimator_compiles_and_gives_its_numbers(toy):
    cell = rg.cells.tanh_rnn(3, 4, 3)
    est = rg.compile(cell, "toy-immediate", backend="numpy", gain=2.0)
    ref = rg.compile(cell, "tbptt(1)", backend="numpy")
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((12, 3)), rng.integers(0, 3, 12)
    p = est.init_params(0)
    got, want = est.total_gradient(p, xs, ys), ref.total_gradient(p, xs, ys)
    for k in want:
        np.testing.assert_allclose(got[k], 2.0 * want[k], rtol=1e-12, atol=1e-15)
    assert type(est.spec).__name__ == "Immediate" and "GAIN" in est.source


def test_a_toy_estimator_is_in_the_families_table_and_the_grammar(toy):
    assert shown()[-1] == "toy-immediate" and known("TOY_immediate") == "toy-immediate"
    an = rg.analyze(rg.cells.tanh_rnn(3, 4, 3))
    fam = {f.key: f for f in rg.families.families(an)}["toy-immediate"]
    assert fam.applies and fam.flops == 3 * an.layout.flops()
    line = next(ln for ln in an.report().splitlines() if "toy-immediate" in ln)
    assert f"{fam.flops:,}" in line
    flags = {o.cli_flag: text for o, text in command_line_options()}
    assert flags["--gain"] == "toy-immediate: multiplies the immediate gradient"


def test_a_toy_estimator_option_is_on_the_command_line(toy):
    code = ("import sys; sys.path.insert(0, %r); import toy_estimator; "
            "from rgraph.cli import main; main(['train', '--help'])" % TESTS)
    out = rgraph_cli_python(code)
    assert "--gain" in out and "toy-immediate: multiplies the immediate gradient" in \
        " ".join(out.split())


def rgraph_cli_python(code):
    import subprocess
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_the_command_line_without_the_toy_has_no_gain():
    assert "--gain" not in rgraph_cli("train", "--help").stdout


class _NoFlops(EstimatorSpec):
    name = "no-flops"

    def templates(self):
        return []


class _WithArgument(_NoFlops):
    argument = Argument("(", "depth", int, "x(D)")

    def flops(self):
        return 0


class _RankAsText(_WithArgument):
    argument = None
    options = (Option("rank", "a rank read as text", read=str),)


@pytest.mark.parametrize("name,entry,msg", [
    ("no-flops", _NoFlops, "declares no flop model"),
    ("with-arg", _WithArgument, "not one of its options"),
    ("rank-text", _RankAsText, "read differently"),
    ("Bad Name", _RankAsText, "lower-case letters"),
    ("uoro", _RankAsText, "registered already"),
    ("a-function", lambda lay, sched, analysis: None, "not an EstimatorSpec"),
])
def test_declarations_that_cannot_work_are_refused(name, entry, msg):
    before = (dict(ESTIMATORS), dict(ARGUMENTS), dict(ALIASES))
    if not hasattr(entry, "options"):
        entry.options, entry.argument, entry.aliases, entry.shown = (), None, (), ()
    with pytest.raises((TypeError, ValueError), match=msg):
        register(name, entry)
    assert (ESTIMATORS, ARGUMENTS, ALIASES) == before


def _keywords(entry) -> set:
    """The keywords an entry's constructors name (through the **opts they pass up)."""
    found = set()
    for cls in getattr(entry, "specs", (entry,)):
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                found |= {p for p, v in inspect.signature(klass.__init__).parameters.items()
                          if v.kind is v.POSITIONAL_OR_KEYWORD
                          and p not in ("self", "lay", "sched", "analysis")}
    if not isinstance(entry, type):
        found |= {p for p, v in inspect.signature(entry).parameters.items()
                  if v.kind is v.POSITIONAL_OR_KEYWORD
                  and p not in ("lay", "sched", "analysis")}
    return found


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_declared_options_are_the_keywords_each_estimator_takes(name):
    """Every declared option is a keyword of the spec, and a keyword it does not
    declare is refused (``uoro`` refuses projected-uoro's ``projection``)."""
    entry = ESTIMATORS[name]
    declared = {o.name for o in entry.options}
    keywords = _keywords(entry)
    assert declared <= keywords, declared - keywords
    an = rg.analyze(rg.cells.lstm(3, 4, 3))
    lay = an.layout
    base = {"tbptt": {"k": 4}}.get(name, {})
    for kw in sorted(keywords - declared):
        with pytest.raises((TypeError, ValueError)):
            make_spec(name, lay, schedule(lay), an, **{**base, kw: None})


def test_a_bracketed_argument_reads_into_its_option():
    for name, arg in ARGUMENTS.items():
        assert arg.option in {o.name for o in ESTIMATORS[name].options}, name
    assert parse_estimator("ok(3)") == ("ok", {"rank": 3})
    assert parse_estimator("kfrtrl") == ("kf-rtrl", {})


def test_optimizers_declare_their_state_and_bounds_and_the_export_reads_them():
    """The loop's optimizer state is sized by the registered rules' moments; the
    exported module's hyper-parameters come from the same layouts and intervals."""
    from rgraph import runtime
    from rgraph.export import optimizer_layouts
    from rgraph.training import optim
    assert optim.state_size(10) == 1 + max(c.moments for c in optim.OPTIMIZERS.values()) * 10
    est = rg.compile(rg.cells.tanh_rnn(3, 4, 3), "uoro", backend="numpy")
    assert est.model.opt_size == optim.state_size(est.n_params)
    layouts = optimizer_layouts()
    assert set(layouts) == set(optim.OPTIMIZERS)
    for name, cls in optim.OPTIMIZERS.items():
        np.testing.assert_array_equal(runtime.hyper(name, {"lr": 0.5}, layouts),
                                      cls(0.5).hyper())
    for bad, msg in [({"lr": -1.0}, r"lr must be in \[0, inf\)"),
                     ({"beta2": 1.0}, r"beta2 must be in \[0, 1\)"),
                     ({"eps": 0.0}, r"eps must be in \(0, inf\)"),
                     ({"clip": float("nan")}, "clip must be a finite number")]:
        with pytest.raises(ValueError, match=msg):
            runtime.hyper("adam", bad, layouts)
        with pytest.raises(ValueError, match=msg):
            optim.Adam(**{"lr": 1e-3, **bad}).hyper()
    assert optim.make("sgd", 0.1, clip=1.0) == optim.SGD(0.1, clip=1.0)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; choose one of sgd"):
        optim.make("rmsprop", 0.1)
