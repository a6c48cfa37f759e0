"""The estimator-name grammar (rgraph.estimators.names), read the same way by
rg.compile, rg.variance, rgraph bench and the command line."""
import numpy as np
import pytest

import rgraph as rg
from rgraph.estimators.names import parse_estimator, split_estimators

from conftest import ZOO, params_for, sequence


@pytest.mark.parametrize("name, key, options", [
    ("uoro", "uoro", {}),
    (" KF_RTRL ", "kf-rtrl", {}),
    ("tbptt(16)", "tbptt", {"k": 16}),
    ("projected-uoro[preactivation]", "projected-uoro", {"projection": "preactivation"}),
    ("projected-uoro[z]", "projected-uoro", {"projection": "z"}),
    ("projected-uoro[h_new, c_new]", "projected-uoro", {"projection": ["h_new", "c_new"]}),
])
def test_names_parse(name, key, options):
    assert parse_estimator(name) == (key, options)


@pytest.mark.parametrize("name, msg", [
    ("tbptt(0)", "not a positive integer"),
    ("tbptt(x)", "not a positive integer"),
    ("uoro(3)", r"uoro takes no \(...\)"),
    ("kf-rtrl[state]", r"kf-rtrl takes no \[...\]"),
    ("projected-uoro[a,,b]", "empty entry"),
    ("projected-uoro[]", "empty entry"),
    ("tbptt(16", "not understood"),
    ("", "not understood"),
])
def test_malformed_names_say_what_is_wrong(name, msg):
    with pytest.raises(ValueError, match=msg):
        parse_estimator(name)


def test_lists_of_names_split_outside_brackets():
    assert split_estimators("uoro, projected-uoro[h_new,c_new],tbptt(16),") == \
        ["uoro", "projected-uoro[h_new,c_new]", "tbptt(16)"]
    assert split_estimators("uoro;kf-rtrl", ";") == ["uoro", "kf-rtrl"]
    with pytest.raises(ValueError, match="never closed"):
        split_estimators("uoro,projected-uoro[h_new")


@pytest.mark.parametrize("name, projection", [
    ("projected-uoro[preactivation]", "preactivation"),
    ("projected-uoro[h_new,c_new]", ["h_new", "c_new"]),
])
def test_compile_reads_the_projection_in_the_name(name, projection):
    """rg.compile(cell, "projected-uoro[...]") is the estimator compiled with the
    projection as a keyword: same name, same numbers."""
    by_name = rg.compile(ZOO["lstm"](), name, backend="numpy")
    by_option = rg.compile(ZOO["lstm"](), "projected-uoro", projection=projection,
                           backend="numpy")
    assert by_name.name == by_option.name
    p, (xs, ys) = params_for(by_name), sequence("lstm")
    g1, g2 = by_name.total_gradient(p, xs, ys, seed=3), by_option.total_gradient(p, xs, ys,
                                                                               seed=3)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


@pytest.mark.parametrize("name, kwargs, error, msg", [
    ("uoor", {}, ValueError, "unknown estimator 'uoor'"),
    ("uoro(3)", {}, ValueError, "takes no"),
    ("tbptt(16)", {"k": 8}, ValueError, "'k' is given both in the name and as an option"),
    ("projected-uoro[state]", {"projection": "parameter"}, ValueError, "given both"),
    ("projected-uoro[no_such_node]", {}, rg.RGraphError, "no_such_node"),
    (3, {}, TypeError, "estimator must be a name"),
])
def test_compile_rejects_bad_names_clearly(name, kwargs, error, msg):
    with pytest.raises(error, match=msg):
        rg.compile(ZOO["lstm"](), name, backend="numpy", **kwargs)


def test_variance_fails_on_a_malformed_name_before_any_work():
    xs, ys = sequence("tanh")
    with pytest.raises(ValueError, match="not a positive integer"):
        rg.variance(ZOO["tanh"](), ["uoro", "tbptt(0)"], xs, ys, backend="numpy")
