"""The analysis: recurrent/readout split, projection spaces, the Kronecker verdict."""
import pytest

import rgraph as rg


def test_kronecker_verdicts():
    for cell in (rg.cells.tanh_rnn(3, 4, 2), rg.cells.rhn(3, 4, 2), rg.cells.lstm(3, 4, 2)):
        k = rg.analyze(cell).kronecker
        assert k.ok and not k.is_sum and k.input is not None, cell.name
        assert k.groups[0].dim_input == 4 + 3 + 1
    gru = rg.analyze(rg.cells.gru(3, 4, 2)).kronecker
    assert not gru.ok
    # the reason names the reset gate's path into the candidate matmul
    assert gru.path[0] == "W_zr" and "W_h" in gru.reason and "Cho's GRU" in gru.reason
    assert gru.offending == gru.path[-1]


def test_kronecker_sums_merged_terms_and_biases():
    # two products summed unscaled share their D: one factor with their inputs stacked
    c = rg.Cell("two_inputs")
    x, h = c.input("x", 3), c.state("h", 4)
    U, Wx = c.param("U", (4, 4)), c.param("Wx", (4, 3))
    h_new = rg.tanh(U @ h + Wx @ x)
    c.update(h, h_new)
    c.output("y", h_new)
    k = rg.analyze(c).kronecker
    assert k.ok and not k.is_sum and k.groups[0].input == "[x; h]"
    # products reaching the state through different paths: a Kronecker sum
    c1 = rg.Cell("gated")
    x, h = c1.input("x", 3), c1.state("h", 4)
    U, Wx = c1.param("U", (4, 4)), c1.param("Wx", (4, 3))
    h_new = rg.tanh(U @ h) * rg.sigmoid(Wx @ x)
    c1.update(h, h_new)
    c1.output("y", h_new)
    k1 = rg.analyze(c1).kronecker
    assert k1.ok and k1.is_sum and {g.input for g in k1.groups} == {"h", "x"}
    # a bias added elementwise is a term whose input is the constant 1
    c2 = rg.Cell("bias")
    x, h = c2.input("x", 3), c2.state("h", 4)
    W, b = c2.param("W", (4, 7)), c2.param("b", 4)
    h_new = rg.tanh(W @ rg.concat(h, x) + b)
    c2.update(h, h_new)
    c2.output("y", h_new)
    k2 = rg.analyze(c2).kronecker
    assert k2.ok and k2.groups[0].bias and k2.groups[0].dim_input == 8


def test_projection_spaces():
    an = rg.analyze(rg.cells.lstm(3, 4, 2))
    kinds = {s.kind: s for s in an.projection_spaces}
    assert {"state", "preactivation", "parameter"} <= set(kinds)
    assert kinds["state"].dim == 8 and kinds["preactivation"].dim == 16
    assert kinds["parameter"].dim == 16 * 8
    assert an.default_projection.dim == min(s.dim for s in an.projection_spaces)
    for s in an.projection_spaces:
        assert s.cost["flops"] > 0 and s.cost["memory"] > 0
    rep = an.report()
    for word in ("state", "preactivation", "parameter", "Kronecker", "default"):
        assert word in rep
    ib = rg.analyze(rg.cells.influence_balancing(23, 13))
    param = next(s for s in ib.projection_spaces if s.kind == "parameter")
    assert param.dim == 1 and ib.recurrent == ["theta"] and ib.readout == []


def test_space_lookup_and_errors():
    cell = rg.cells.lstm(3, 4, 2)
    an = rg.analyze(cell)
    z = cell.nodes[next(n.id for n in cell.nodes if n.name == "c_new")]
    with pytest.raises(rg.GraphError, match="do not separate"):
        an.space(["c_new"])                     # h also depends on the output gate
    with pytest.raises(rg.GraphError, match="slice"):
        an.space([n.name for n in cell.nodes if n.expr_src.endswith("[0:4]")][:1])
    with pytest.raises(rg.GraphError, match="no preactivation"):
        rg.analyze(rg.cells.influence_balancing(5, 3)).space("preactivation")
    # a GRU's two preactivations form a cut even though one feeds the other
    assert rg.analyze(rg.cells.gru(3, 4, 2)).space("preactivation").dim == 12
    assert z.kind == "op"


def test_readout_and_recurrent_split():
    an = rg.analyze(rg.cells.tanh_rnn(3, 4, 2))
    assert an.recurrent == ["W"] and an.readout == ["V", "b"]
    assert an.graph.number_of_nodes() == len(an.cell.nodes)


def test_entries_one_record_per_use_of_a_recurrent_parameter():
    """rg.analyze(cell).entries: each use of a recurrent parameter with its kind, node,
    product input and sum; the Kronecker terms, UORO's one-pass condition and the
    sparse families' tables are queries on it."""
    c = rg.Cell("entries")
    x = c.input("x", 2)
    h, m = c.state("h", 3), c.state("m", 3)
    W, b, u, P = (c.param("W", (3, 2)), c.param("b", (3,)), c.param("u", (3,)),
                  c.param("P", (3,)))
    h_new = rg.tanh(W @ x + b + u * h)
    m_new = rg.concat(P, h)[0:3] + W @ x * 0.5       # P through a concat; W again
    c.update(h, h_new)
    c.update(m, m_new)
    c.output("y", c.param("V", (2, 3)) @ h_new)
    an = rg.analyze(c)
    kinds = {(e.param, e.kind) for e in an.entries}
    assert kinds == {("W", "matrix"), ("b", "bias"), ("u", "elementwise"), ("P", "other")}
    uses_W = an.entries_of("W")
    assert len(uses_W) == 2 and all(e.input == "x" for e in uses_W)
    sums = {c.nodes[e.sum].name for e in an.entries if e.param == "b"}
    assert len(sums) == 1 and all(e.sum is None for e in an.entries_of("P"))
    assert not an.kronecker.ok and "'u'" in an.kronecker.reason
    assert an.one_term_each is None
    with pytest.raises(rg.NotApplicable, match="parameter 'W' is used by 2 nodes"):
        rg.compile(c, "snap-1", backend="numpy")


def test_one_term_each_on_a_framework_cell():
    an = rg.analyze(rg.cells.tanh_rnn(3, 4, 3, form="pytorch"))
    assert sorted(e.kind for e in an.entries) == ["bias", "bias", "matrix", "matrix"]
    assert an.one_term_each == an.kronecker.groups
    assert an.kronecker.z_ids == [z for g in an.kronecker.groups for z in g.z_ids]
