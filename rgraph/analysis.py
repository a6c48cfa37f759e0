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

from . import ops
from .layout import Layout
from .errors import GraphError
from .graph import Cell

INF = float("inf")


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
class KroneckerGroup:
    """Products ``z = W @ â`` sharing one θ-independent input â: F_g = D_g ⊗ âᵀ."""

    input: str                # â's node name
    input_id: int
    z: tuple                  # names of the product nodes
    z_ids: tuple
    params: tuple             # their matrices
    dim_z: int
    dim_input: int


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
    def is_sum(self) -> bool:
        return self.ok and len(self.groups) > 1

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return f"KroneckerVerdict(ok={self.ok}, {self.reason!r})"


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
        nodes = [self.cell.nodes[i] for i in ids]
        if all(n.kind == "op" and isinstance(n.op, ops.MatMul) and n.args[0] in rec
               for n in nodes):
            return "preactivation"
        return "cut"

    @cached_property
    def projection_spaces(self) -> list[ProjectionSpace]:
        """The candidate cuts, smallest dimension first (ties: state, preactivation,
        parameter, other cuts)."""
        p = self.layout
        cands = [list(p.new_state), sorted(self._rec_ids(), key=p.pos.get)]
        consumers = sorted({c for r in self._rec_ids() for c in self.graph.successors(r)},
                           key=p.pos.get)
        cands.append(consumers)
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

    # ---------------------------------------------------------------- Kronecker
    @cached_property
    def kronecker(self) -> KroneckerVerdict:
        g, nodes = self.graph, self.cell.nodes
        rec = self._rec_ids()
        if not rec:
            return KroneckerVerdict(False, "the cell has no recurrent parameter")
        prods = []
        for p in rec:
            for c in g.successors(p):
                n = nodes[c]
                if not (n.kind == "op" and isinstance(n.op, ops.MatMul) and n.args[0] == p):
                    why = ("enters elementwise" if isinstance(n.op, ops.Elementwise)
                           else f"enters through {type(n.op).__name__.lower()}")
                    return KroneckerVerdict(
                        False,
                        f"parameter '{nodes[p].name}' {why} at node '{n.name}' "
                        f"({self.cell.describe(n)}), not as the matrix of a product W @ a, "
                        f"as KF-RTRL needs (a bias can become a column of W against a "
                        f"constant 1: W @ concat(..., rg.const(1.0))). Use an estimator that "
                        f"needs no Kronecker structure: uoro, projected-uoro, dodge or rtrl",
                        offending=n.name, path=(nodes[p].name, n.name))
                prods.append(c)
        recset = set(rec)
        for z in prods:
            a = nodes[z].args[1]
            hit = sorted(nx.ancestors(g, a) & recset, key=self.layout.pos.get)
            if hit:
                path = self._names(nx.shortest_path(g, hit[0], z))
                return KroneckerVerdict(
                    False,
                    f"the input '{nodes[a].name}' of the product '{nodes[z].name} = "
                    f"{self.cell.describe(nodes[z])}' depends on parameter "
                    f"'{nodes[hit[0]].name}' within the step, along "
                    f"{' -> '.join(path)}; KF-RTRL needs every recurrent product's input "
                    f"to be independent of the parameters (a GRU's reset gate breaks this). "
                    f"Use uoro, projected-uoro, dodge or rtrl instead",
                    offending=nodes[z].name, path=path)
        groups = {}
        for z in sorted(prods, key=self.layout.pos.get):
            groups.setdefault(nodes[z].args[1], []).append(z)
        out = []
        for a, zs in groups.items():
            out.append(KroneckerGroup(nodes[a].name, a, self._names(zs), tuple(zs),
                                      tuple(nodes[nodes[z].args[0]].name for z in zs),
                                      sum(nodes[z].size for z in zs), nodes[a].size))
        if len(out) == 1:
            grp = out[0]
            reason = (f"every recurrent parameter enters as W @ {grp.input} with "
                      f"{grp.input} independent of θ: F_t = D_t ⊗ {grp.input}ᵀ, "
                      f"D_t = ∂s_t/∂({', '.join(grp.z)}) of shape "
                      f"({self.n_state}, {grp.dim_z})")
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
                 + ", ".join(f"{b.name}{list(b.shape)}" for b in p.rec_blocks),
                 f"  readout parameters ({p.n_params - p.n_rec:,}, exact gradients): "
                 + (", ".join(f"{b.name}{list(b.shape)}" for b in p.param_blocks
                              if not b.recurrent) or "none"),
                 "", "projection spaces (cuts between θ and s_t), for projected UORO:",
                 f"  {'kind':<14}{'dim':>7}{'flop/step':>12}{'memory':>9}  nodes"]
        for s in self.projection_spaces:
            mark = "  <- default" if s == self.default_projection else ""
            lines.append(f"  {s.kind:<14}{s.dim:>7}{s.cost['flops']:>12,}"
                         f"{s.cost['memory']:>9,}  {', '.join(s.nodes)}{mark}")
        lines.append(f"  default: {self.default_projection.label}, {self.default_reason}")
        lines += ["", "Kronecker structure (KF-RTRL):"]
        k = self.kronecker
        if k.ok:
            lines.append(f"  yes{' (a sum)' if k.is_sum else ''}: {k.reason}")
            for grp in k.groups:
                lines.append(f"    input {grp.input}[{grp.dim_input}] -> "
                             f"{', '.join(grp.z)} via {', '.join(grp.params)}: "
                             f"A is {self.n_state}x{grp.dim_z}, u is {grp.dim_input}")
        else:
            lines.append(f"  no: {k.reason}")
        return "\n".join(lines)


def analyze(cell: Cell) -> Analysis:
    """Analyse a cell: parameters, projection spaces, Kronecker verdict (``.report()``)."""
    return Analysis(cell)
