"""What a cell allows: recurrent and readout parameters, projection spaces, Kronecker check.

* A **projection space** is a vertex set z that every path from the recurrent
  parameters θ to the new state s_t crosses (docs/compiler.md). Candidates: the state
  itself, the parameters, the direct consumers of θ (the preactivations ``W â`` of most
  cells) and the minimum cuts weighted by dimension (networkx max-flow on the graph
  with every node split in two), the one nearest θ and the one nearest s_t.
* The **Kronecker verdict** (Mujika et al. Lemma 1, generalized): every
  recurrent parameter enters only as the matrix of products ``z = W â`` whose input â
  does not depend on θ within the step; then F_t = Σ_groups J^{s}_{z_g} ⊗ â_gᵀ.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
import numpy as np
import sympy as sp

from . import ops
from .layout import Layout
from .errors import GraphError
from .graph import Cell

INF = float("inf")
# what layers above add to ``Analysis.report``: functions analysis -> lines (the
# families table, ``rgraph.families``: it builds estimator specs, which import this
# module, so it enters its section here instead of being imported)
REPORT_SECTIONS: list = []
NO_RECURRENT = ("the cell has no recurrent parameter: only the readout learns, and its "
                "gradient is exact (bptt, rtrl and dodge give it; projected UORO and KF-RTRL "
                "have nothing to estimate)")


@dataclass(frozen=True)
class ProjectionSpace:
    """A cut z between θ and s_t where UORO can project its noise."""

    kind: str                 # "state" | "preactivation" | "parameter" | "cut"
    nodes: tuple              # node names
    ids: tuple                # node ids
    dim: int
    cost: dict = field(default_factory=dict, compare=False)   # flops/step, memory

    @property
    def label(self) -> str:
        return self.kind if self.kind != "cut" else "{" + ", ".join(self.nodes) + "}"

    def __repr__(self):
        return (f"ProjectionSpace({self.kind!r}, nodes={list(self.nodes)}, dim={self.dim}, "
                f"~{self.cost.get('flops', 0):,} flop/step)")


@dataclass(frozen=True)
class Entry:
    """One use of a recurrent parameter in the step (an edge from it to a node).

    kind: ``"matrix"``, the matrix of a product ``W @ a`` (``input`` is a);
    ``"bias"``, added elementwise and unscaled (∂node/∂θ = I); ``"elementwise"``, an
    elementwise operand of the node's size otherwise (IndRNN's ``u * h``, a gain);
    ``"other"``, anything else (a slice of it, a broadcast, the input of a product).
    ``sum``: the sum the node reaches unscaled (``Analysis._sum_of``), None for
    "other". Every question of how parameters enter (the Kronecker verdict, UORO's
    one pass, SnAp's and e-prop's run tables) is a query on these records."""

    param: str
    param_id: int
    kind: str
    node: int
    input: str | None = None
    input_id: int | None = None
    sum: int | None = None


@dataclass(frozen=True)
class Term:
    """One way a recurrent parameter enters the step: the matrix of ``W @ a`` (``input``
    is a's node), or a bias added elementwise (``input`` None: the constant 1)."""

    param: str
    param_id: int
    node: int                 # the product node, or the parameter node of a bias
    input: str | None
    input_id: int | None
    sum: int                  # the sum q it reaches unscaled

    @property
    def is_bias(self) -> bool:
        return self.input_id is None


@dataclass(frozen=True)
class KroneckerGroup:
    """Sums ``q`` whose terms have the same inputs: F_g = D_g ⊗ âᵀ with D_g = ∂s/∂q
    (the sums' columns side by side) and â the terms' inputs stacked, then a 1 if the
    sums have biases. ``terms`` lists each sum's terms (products in input order, then
    its biases); ``merged``: some sum adds several terms."""

    input: str                # â, as it reads: "hx" or "[x; h; 1]"
    inputs: tuple             # the ids of the product inputs stacked in â
    bias: bool                # â ends with a constant 1
    z: tuple                  # names of the sums q
    z_ids: tuple
    params: tuple             # the parameters of its terms
    dim_z: int
    dim_input: int
    terms: tuple              # per sum: its Terms

    @property
    def merged(self) -> bool:
        return any(len(t) > 1 for t in self.terms)


@dataclass(frozen=True)
class KroneckerVerdict:
    ok: bool
    reason: str
    groups: tuple = ()
    offending: str | None = None       # the node where the structure breaks
    path: tuple = ()                   # a parameter-to-node path, as names

    @property
    def input(self) -> str | None:
        """â when there is one group (the common case), else None."""
        return self.groups[0].input if len(self.groups) == 1 else None

    @property
    def z_ids(self) -> list:
        """Every group's sums, in order: the columns of D_t = ∂s_t/∂z."""
        return [z for grp in self.groups for z in grp.z_ids]

    @property
    def nz(self) -> int:
        """The number of columns of D_t."""
        return sum(grp.dim_z for grp in self.groups)

    @property
    def is_sum(self) -> bool:
        return self.ok and len(self.groups) > 1

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return f"KroneckerVerdict(ok={self.ok}, {self.reason!r})"


@dataclass(frozen=True)
class Component:
    """A recurrent component: a strongly connected component of the graph of states
    (state a -> state b when b's update reads a, at t-1 or a's new value at t). In
    topological order they are a stacked cell's layers; an LSTM's {h, c} is one.
    ``params``: the recurrent parameters that enter its updates directly (along a path
    into its new states that crosses no other component's new state); ``rows``: its
    states' rows of s (``range``s, in state order)."""

    index: int
    states: tuple             # state names
    state_ids: tuple
    params: tuple             # recurrent parameter names
    param_ids: tuple
    rows: tuple               # (offset, size) per state
    diagonal: bool            # ∂s_K,t/∂s_K,t-1 is block-diagonal per unit (no product
    #                           mixes the component's units): a parameter that reaches
    #                           one unit keeps O(1) influence entries (the report's
    #                           per-component table counts them)

    @property
    def size(self) -> int:
        return sum(n for _, n in self.rows)

    def __repr__(self):
        return (f"Component({self.index}: states {list(self.states)}, params "
                f"{list(self.params)}{', diagonal' if self.diagonal else ''})")


class Analysis:
    """The analysis of one cell; ``report()`` renders it."""

    def __init__(self, cell: Cell, layout: Layout | None = None):
        self.cell = cell
        self.layout = Layout(cell) if layout is None else layout
        self.graph = self.layout.g
        p = self.layout
        self.recurrent = [b.name for b in p.param_blocks if b.recurrent]
        self.readout = [b.name for b in p.param_blocks if not b.recurrent]
        self.n_state = p.n_state
        self.n_rec = p.n_rec

    def __repr__(self):
        return (f"Analysis({self.cell.name!r}: state {self.n_state}, recurrent params "
                f"{self.n_rec}, {len(self.projection_spaces)} projection spaces, "
                f"kronecker={self.kronecker.ok})")

    # --------------------------------------------------------------- cuts
    def _names(self, ids):
        return tuple(self.cell.nodes[i].name for i in ids)

    def _rec_ids(self):
        return [b.node for b in self.layout.rec_blocks]

    def _cuttable(self, nid) -> bool:
        n = self.cell.nodes[nid]
        if n.kind == "param":
            return nid in self._rec_ids()
        return n.kind == "op" and not self.layout.is_view(nid)

    def _is_cut(self, ids) -> bool:
        g = self.graph.copy()
        g.remove_nodes_from(ids)
        targets = [t for t in self.layout.new_state if t in g]
        return not any(nx.has_path(g, p, t) for p in self._rec_ids() if p in g
                       for t in targets)

    def _min_cuts(self):
        """Minimum vertex cuts (weights = dimensions) nearest θ and nearest s_t."""
        g = nx.DiGraph()
        for nid in self.graph.nodes:
            cap = self.cell.nodes[nid].size if self._cuttable(nid) else INF
            g.add_edge(("in", nid), ("out", nid), capacity=cap)
        for a, b in self.graph.edges:
            g.add_edge(("out", a), ("in", b), capacity=INF)
        for p in self._rec_ids():
            g.add_edge("SRC", ("in", p), capacity=INF)
        for t in self.layout.new_state:
            g.add_edge(("out", t), "SNK", capacity=INF)
        cuts = []
        for rev in (False, True):
            h = g.reverse() if rev else g
            s, t = ("SNK", "SRC") if rev else ("SRC", "SNK")
            _, (reach, _) = nx.minimum_cut(h, s, t)
            if rev:   # reachable from the sink in the reversed graph: the sink side
                ids = [nid for nid in self.graph.nodes
                       if ("out", nid) in reach and ("in", nid) not in reach]
            else:
                ids = [nid for nid in self.graph.nodes
                       if ("in", nid) in reach and ("out", nid) not in reach]
            cuts.append(sorted(ids, key=self.layout.pos.get))
        return cuts

    def _kind(self, ids) -> str:
        rec = set(self._rec_ids())
        if set(ids) == set(self.layout.new_state):
            return "state"
        if set(ids) == rec:
            return "parameter"
        if self.preactivations and set(ids) == set(self.preactivations):
            return "preactivation"
        return "cut"

    @cached_property
    def projection_spaces(self) -> list[ProjectionSpace]:
        """The candidate cuts, smallest dimension first (ties: state, preactivation,
        parameter, other cuts); none when no parameter is recurrent."""
        if not self._rec_ids():
            return []
        p = self.layout
        cands = [list(p.new_state), sorted(self._rec_ids(), key=p.pos.get)]
        consumers = sorted({c for r in self._rec_ids() for c in self.graph.successors(r)},
                           key=p.pos.get)
        cands += [self.preactivations, consumers]
        cands += self._min_cuts()
        seen, out = set(), []
        for ids in cands:
            key = frozenset(ids)
            if not ids or key in seen or not self._is_cut(ids):
                continue
            if any(not self._cuttable(i) for i in ids) and set(ids) != set(p.new_state):
                continue
            seen.add(key)
            dim = sum(self.cell.nodes[i].size for i in ids)
            out.append(ProjectionSpace(self._kind(ids), self._names(ids), tuple(ids), dim,
                                       self._cost(ids)))
        order = {"state": 0, "preactivation": 1, "parameter": 2, "cut": 3}
        return sorted(out, key=lambda s: (s.dim, order[s.kind]))

    def _flops(self, ids, tangent_cols=1, backward=False):
        total = 0
        for nid in ids:
            n = self.cell.nodes[nid]
            if n.kind != "op":
                continue
            f = n.op.flops(n.shape, [self.cell.nodes[a].shape for a in n.args])
            total += f * (2 if backward else tangent_cols)
        return total

    def _cost(self, ids) -> dict:
        """Per-step cost of projected UORO at z = ids (flops) and its memory (floats)."""
        p = self.layout
        rec = set(self._rec_ids())
        zset = set(ids)
        fwd = p.flops()
        state_jvp = p.live_from(p.state_ids) & p.needed_for(p.new_state)
        if zset == rec:
            down = p.live_from(rec) & p.needed_for(p.new_state)
            up = set()
        else:
            down = p.live_from(zset) & p.needed_for(p.new_state)
            up = p.live_from(rec) & p.needed_for(list(zset))
        loss_vjp = p.live_from(set(p.state_ids) | rec) & p.needed_for(p.output_ids)
        flops = (fwd + self._flops(state_jvp) + self._flops(down - zset)
                 + self._flops(up, backward=True) + self._flops(loss_vjp, backward=True)
                 + 6 * p.n_params)
        dim = sum(self.cell.nodes[i].size for i in ids)
        return {"flops": int(flops), "memory": int(p.n_state + p.n_rec + dim)}

    def space(self, spec) -> ProjectionSpace:
        """A projection space by kind ("state", "preactivation", "parameter"), by node
        name(s), or the default (None)."""
        if not self._rec_ids():
            raise GraphError(f"cell '{self.cell.name}': {NO_RECURRENT}")
        if spec is None:
            return self.default_projection
        if isinstance(spec, ProjectionSpace):
            return spec
        if isinstance(spec, str) and spec in ("state", "preactivation", "parameter"):
            for s in self.projection_spaces:
                if s.kind == spec:
                    return s
            raise GraphError(
                f"cell '{self.cell.name}' has no {spec} projection space; its spaces are "
                f"{[s.label for s in self.projection_spaces]}"
                + (" (preactivation needs every recurrent parameter to enter as W @ a)"
                   if spec == "preactivation" else ""))
        names = [spec] if isinstance(spec, str) else list(spec)
        ids = []
        for nm in names:
            n = self.cell.node(nm)
            if self.layout.is_view(n.id):
                raise GraphError(f"node '{nm}' is a slice (a view of "
                                 f"'{self.cell.nodes[n.args[0]].name}'); cut at the op that "
                                 f"consumes it or at the whole vector")
            if not self._cuttable(n.id):
                raise GraphError(f"node '{nm}' is a {n.kind}; a projection space is made of "
                                 f"op nodes or recurrent parameters")
            ids.append(n.id)
        if not self._is_cut(ids):
            raise GraphError(f"nodes {names} do not separate the recurrent parameters "
                             f"{self.recurrent} from the new state; add the nodes of the "
                             f"other paths (see analyze(cell).report())")
        ids = sorted(ids, key=self.layout.pos.get)
        for s in self.projection_spaces:
            if set(s.ids) == set(ids):
                return s
        return ProjectionSpace(self._kind(ids), self._names(ids), tuple(ids),
                               sum(self.cell.nodes[i].size for i in ids), self._cost(ids))

    @cached_property
    def default_projection(self) -> ProjectionSpace:
        return self.projection_spaces[0]

    @property
    def default_reason(self) -> str:
        d = self.default_projection
        return (f"the smallest cut (dim {d.dim}): UORO's spatial noise grows with the "
                f"dimension of the space it projects in")

    # ------------------------------------------------------- affine preactivations
    @cached_property
    def entries(self) -> tuple[Entry, ...]:
        """One ``Entry`` per use of a recurrent parameter, parameters in layout order,
        each one's uses in topological order."""
        g, nodes, lay = self.graph, self.cell.nodes, self.layout
        out = []
        for p in self._rec_ids():
            for c in sorted(g.successors(p), key=lay.pos.get):
                n = nodes[c]
                name = nodes[p].name
                if isinstance(n.op, ops.MatMul) and n.args[0] == p:
                    a = n.args[1]
                    out.append(Entry(name, p, "matrix", c, nodes[a].name, a,
                                     self._sum_of(c)))
                elif isinstance(n.op, ops.Elementwise) and n.shape == nodes[p].shape \
                        and not lay.is_view(c):
                    kind = "bias" if self._adds(c, p) else "elementwise"
                    out.append(Entry(name, p, kind, c, sum=self._sum_of(c)))
                else:
                    out.append(Entry(name, p, "other", c))
        return tuple(out)

    def entries_of(self, param) -> list[Entry]:
        """The uses of one recurrent parameter (by node id or name)."""
        return [e for e in self.entries if param in (e.param_id, e.param)]

    @cached_property
    def one_term_each(self) -> tuple | None:
        """The Kronecker groups, if every recurrent parameter enters exactly one term (a
        product's matrix or a bias of one sum) and the terms' inputs are free of θ
        within the step: then uᵀ J^z_θ is Σ_terms ν_q ⊗ â and UORO visits each block
        once. None otherwise (weight sharing, or no such structure)."""
        if not self.kronecker.ok:
            return None
        if any(len(self.entries_of(p)) != 1 for p in self._rec_ids()):
            return None
        return self.kronecker.groups

    @cached_property
    def terms(self) -> tuple[list, KroneckerVerdict | None]:
        """(the terms of every recurrent parameter, or a refusal naming the first that
        enters otherwise: elementwise but not as an added bias, or through a structural
        op other than a product's matrix)."""
        nodes = self.cell.nodes
        out = []
        for e in self.entries:
            p, c, n = e.param_id, e.node, nodes[e.node]
            if e.kind == "matrix":
                out.append(Term(e.param, p, c, e.input, e.input_id, e.sum))
            elif e.kind == "bias":
                out.append(Term(e.param, p, p, None, None, e.sum))
            else:
                why = (f"enters elementwise at node '{n.name}' ({self.cell.describe(n)}) "
                       f"other than as a bias added to a preactivation"
                       if isinstance(n.op, ops.Elementwise) else
                       f"enters through {type(n.op).__name__.lower()} at node "
                       f"'{n.name}' ({self.cell.describe(n)})")
                return out, KroneckerVerdict(
                    False,
                    f"parameter '{nodes[p].name}' {why}; KF-RTRL needs every recurrent "
                    f"parameter as the matrix of a product W @ a or as a bias added to "
                    f"one. Use an estimator that needs no Kronecker structure: uoro, "
                    f"projected-uoro, snap-1, layer-rtrl, e-prop, dodge or rtrl",
                    offending=n.name, path=(nodes[p].name, n.name))
        return out, None

    def _adds(self, c, a) -> bool:
        """Node c adds node a to something, unscaled and without broadcasting: ∂c/∂a = I."""
        n = self.cell.nodes[c]
        if not isinstance(n.op, ops.Elementwise) or n.shape != self.cell.nodes[a].shape:
            return False
        return all(sp.diff(n.op.expr, ops.ARG[j]) == 1
                   for j, x in enumerate(n.args) if x == a)

    def _sum_of(self, node) -> int:
        """The sum a term reaches unscaled: up through additions while it is the only use.
        A node read outside the step (a new state or an output) is a use the graph's
        edges do not show: the climb stops there, or the sums above it (``v_new - 0.5``
        after ``v_new = 0.9 v + W z``) would hide the paths into that state."""
        g = self.graph
        external = set(self.layout.new_state) | set(self.layout.output_ids)
        while True:
            users = list(g.successors(node))
            if node in external or len(users) != 1 or not self._adds(users[0], node) or \
                    self.layout.is_view(users[0]):
                return node
            node = users[0]

    @cached_property
    def preactivations(self) -> list[int]:
        """The sums the recurrent parameters enter (empty if one enters otherwise)."""
        terms, refused = self.terms
        if refused is not None:
            return []
        return sorted({t.sum for t in terms}, key=self.layout.pos.get)

    # ---------------------------------------------------------- components
    @cached_property
    def components(self) -> tuple[Component, ...]:
        """The recurrent components in topological order (see ``Component``)."""
        lay, g, nodes = self.layout, self.graph, self.cell.nodes
        news = dict(zip(lay.state_ids, lay.new_state, strict=True))
        sg = nx.DiGraph()
        sg.add_nodes_from(lay.state_ids)
        for b in lay.state_ids:
            up = nx.ancestors(g, news[b]) | {news[b]}
            for a in lay.state_ids:
                if a in up or (a != b and news[a] in up):
                    sg.add_edge(a, b)
        cond = nx.condensation(sg)
        order = {st: i for i, st in enumerate(lay.state_ids)}
        comps = [sorted(cond.nodes[c]["members"], key=order.get)
                 for c in nx.lexicographical_topological_sort(
                     cond, key=lambda c: min(order[m] for m in cond.nodes[c]["members"]))]
        rec = self._rec_ids()
        out, self._reach = [], []
        for k, members in enumerate(comps):
            own = {news[m] for m in members}
            others = set(lay.new_state) - own
            h = g.subgraph([n for n in g.nodes if n not in others or n in own])
            reach = own.union(*(nx.ancestors(h, t) for t in own))
            self._reach.append(frozenset(reach))
            params = [p for p in rec if p in reach]
            out.append(Component(
                k, tuple(nodes[m].name for m in members), tuple(members),
                tuple(nodes[p].name for p in params), tuple(params),
                tuple((lay.state_off[m], nodes[m].size) for m in members),
                self._diagonal(members)))
        return tuple(out)

    @cached_property
    def units(self):
        """A unit id per state row: entry i of every state of one component (states of
        one size; a component of several sizes has a unit per row), -1 for none."""
        unit = np.full(self.n_state, -1, dtype=np.int64)
        base = 0
        for c in self.components:
            sizes = {n for _, n in c.rows}
            for k, (off, n) in enumerate(c.rows):
                unit[off:off + n] = base + (np.arange(n) if len(sizes) == 1
                                            else sum(m for _, m in c.rows[:k]) + np.arange(n))
            base += max(sizes) if len(sizes) == 1 else c.size
        return unit

    def enters(self, node) -> tuple:
        """The components whose updates node (an id) enters directly: it has a path
        into their new states that crosses no other component's new state."""
        self.components
        return tuple(k for k, reach in enumerate(self._reach) if node in reach)

    def _diagonal(self, members) -> bool:
        """Whether ∂s_K,t/∂s_K,t-1 is block-diagonal by unit: no entry couples two
        units of the component (the states' rows of one unit: entry i of every state,
        so an LRU's (h_re_i, h_im_i) pair is one block)."""
        from .sparsity import patterns
        lay = self.layout
        sizes = {self.cell.nodes[m].size for m in members}
        if len(sizes) != 1:
            return False
        n = sizes.pop()
        D = patterns(lay, list(members), [lay.cell.updates[m] for m in members])
        for R, C in D.outers:         # a dense block couples units unless it is one unit
            units = np.unique(np.concatenate([np.flatnonzero(R), np.flatnonzero(C)]) % n)
            if len(units) > 1:
                return False
        E = D.E.tocoo()
        return bool(np.all(E.row % n == E.col % n))

    # ---------------------------------------------------------------- Kronecker
    @cached_property
    def kronecker(self) -> KroneckerVerdict:
        g, nodes = self.graph, self.cell.nodes
        rec = self._rec_ids()
        if not rec:
            return KroneckerVerdict(False, NO_RECURRENT)
        terms, refused = self.terms
        if refused is not None:
            return refused
        recset = set(rec)
        for t in terms:
            if t.is_bias:
                continue
            hit = sorted(nx.ancestors(g, t.input_id) & recset, key=self.layout.pos.get)
            if hit:
                z = nodes[t.node]
                path = self._names(nx.shortest_path(g, hit[0], t.node))
                return KroneckerVerdict(
                    False,
                    f"the input '{t.input}' of the product '{z.name} = "
                    f"{self.cell.describe(z)}' depends on parameter "
                    f"'{nodes[hit[0]].name}' within the step, along "
                    f"{' -> '.join(path)}; KF-RTRL needs every recurrent product's input "
                    f"to be independent of the parameters (Cho's GRU, whose reset gate "
                    f"scales h before the product W_h @ (r * h), breaks this; PyTorch's GRU, "
                    f"r * (W_hn @ h + b_hn), does not). "
                    f"Use uoro, projected-uoro, snap-1, layer-rtrl, e-prop, dodge or rtrl "
                    f"instead",
                    offending=z.name, path=path)
        by_sum = {}
        for t in terms:
            by_sum.setdefault(t.sum, []).append(t)
        groups = {}
        for q in sorted(by_sum, key=self.layout.pos.get):
            ts = sorted(by_sum[q], key=lambda t: (t.is_bias, self.layout.pos.get(
                t.input_id if not t.is_bias else t.param_id)))
            key = (tuple(t.input_id for t in ts if not t.is_bias), any(t.is_bias for t in ts))
            groups.setdefault(key, []).append((q, tuple(ts)))
        out = []
        for (inputs, bias), sums in groups.items():
            names = [nodes[i].name for i in inputs] + (["1"] if bias else [])
            label = names[0] if len(names) == 1 else "[" + "; ".join(names) + "]"
            out.append(KroneckerGroup(
                label, inputs, bias, self._names([q for q, _ in sums]),
                tuple(q for q, _ in sums),
                tuple(dict.fromkeys(t.param for _, ts in sums for t in ts)),
                sum(nodes[q].size for q, _ in sums),
                sum(nodes[i].size for i in inputs) + int(bias),
                tuple(ts for _, ts in sums)))
        if len(out) == 1:
            grp = out[0]
            reason = (f"every recurrent parameter enters {', '.join(grp.z)} affinely, with "
                      f"input {grp.input} independent of θ: F_t = D_t ⊗ {grp.input}ᵀ, "
                      f"D_t = ∂s_t/∂({', '.join(grp.z)}) of shape ({self.n_state}, "
                      f"{grp.dim_z})")
        else:
            reason = ("F_t is a sum of Kronecker products, one per input group: "
                      + "; ".join(f"D ⊗ {grp.input}ᵀ for {', '.join(grp.z)} "
                                  f"(D: {self.n_state}x{grp.dim_z})" for grp in out))
        return KroneckerVerdict(True, reason, tuple(out))

    # ---------------------------------------------------------------- report
    def report(self) -> str:
        p = self.layout
        lines = [f"cell '{self.cell.name}': state {p.n_state} "
                 f"({', '.join(f'{s.name}[{s.shape[0]}]' for s in p.states)}), "
                 f"input {p.n_in}, {len(self.cell.nodes)} nodes, "
                 f"{p.flops():,} flop/step forward",
                 f"  recurrent parameters ({p.n_rec:,}): "
                 + (", ".join(f"{b.name}{list(b.shape)}" for b in p.rec_blocks) or "none"),
                 f"  readout parameters ({p.n_params - p.n_rec:,}, exact gradients): "
                 + (", ".join(f"{b.name}{list(b.shape)}" for b in p.param_blocks
                              if not b.recurrent) or "none"),
                 "", "projection spaces (cuts between θ and s_t), for projected UORO:",
                 f"  {'kind':<14}{'dim':>7}{'flop/step':>12}{'memory':>9}  nodes"]
        for s in self.projection_spaces:
            mark = "  <- default" if s == self.default_projection else ""
            lines.append(f"  {s.kind:<14}{s.dim:>7}{s.cost['flops']:>12,}"
                         f"{s.cost['memory']:>9,}  {', '.join(s.nodes)}{mark}")
        if self.projection_spaces:
            lines.append(f"  default: {self.default_projection.label}, "
                         f"{self.default_reason}")
        else:
            lines.append("  none: " + NO_RECURRENT)
        if self.preactivations:
            terms, _ = self.terms
            lines += ["", "preactivations (sums the recurrent parameters enter affinely):"]
            for q in self.preactivations:
                parts = [_term(t) for t in terms if t.sum == q]
                lines.append(f"  {self.cell.nodes[q].name} ({self.cell.nodes[q].size}): "
                             f"{' + '.join(parts)}")
        if self.components:
            lines += ["", "recurrent components (states that read each other; a stacked "
                          "cell's layers), in order:"]
            for c in self.components:
                states = ", ".join(f"{nm}[{n}]" for nm, (_, n) in zip(c.states, c.rows,
                                                                      strict=True))
                kind = "diagonal recurrence" if c.diagonal else "dense recurrence"
                lines.append(f"  {c.index}: {states}; parameters "
                             f"{', '.join(c.params) or 'none'} ({kind})")
        lines += ["", "Kronecker structure (KF-RTRL):"]
        k = self.kronecker
        if k.ok:
            lines.append(f"  yes{' (a sum)' if k.is_sum else ''}: {k.reason}")
            for grp in k.groups:
                merged = "; merged: " + ", ".join(
                    " + ".join(_term(t) for t in ts) for ts in grp.terms if len(ts) > 1) \
                    if grp.merged else ""
                lines.append(f"    input {grp.input}[{grp.dim_input}] -> "
                             f"{', '.join(grp.z)} via {', '.join(grp.params)}: "
                             f"A is {self.n_state}x{grp.dim_z}, u is {grp.dim_input}{merged}")
        else:
            lines.append(f"  no: {k.reason}")
        if p.n_rec and p.n_state:
            from .sparsity import association
            lines += ["", "H_t X, a state tangent of many columns pushed through one step "
                          "(rgraph.sparsity.association):"]
            uses = [("RTRL's H G", p.n_rec)]
            if k.ok:
                uses.append(("KF-RTRL's H A", sum(g.dim_z for g in k.groups)))
            for what, K in uses:
                a = association(p, K)
                if what.startswith("RTRL") and a.explicit and not k.ok:
                    lines.append(f"  {what} ({K:,} columns): through the step's jvp (forming "
                                 f"H_t first needs the Kronecker structure for F_t)")
                    continue
                lines.append(f"  {what} {a.describe(f'{K:,}')}")
        for section in REPORT_SECTIONS:
            lines += [""] + section(self)
        return "\n".join(lines)


def _term(t: Term) -> str:
    return t.param if t.is_bias else f"{t.param} @ {t.input}"


def analyze(cell: Cell) -> Analysis:
    """Analyse a cell: parameters, projection spaces, Kronecker verdict (``.report()``)."""
    return Analysis(cell)
