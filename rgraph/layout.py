"""Where every value of one step lives: the flat buffers of ``kernel``, built once per
compile and shared by the analysis and code generation.

``Layout(cell)`` orders the nodes, splits the parameters into recurrent ones (they reach
a new state; their blocks come first in ``th`` and are the rows of ``thd``) and readout
ones, and gives every node its block: parameters in ``th``, constants in their own
arrays, states, inputs and op results in ``v``. A view op (a slice) owns no storage:
its block is rows of its operand's. ``ref(node, kind)`` returns the block of a node's
value, tangent or cotangent as a ``kernel.Ref``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import networkx as nx
import numpy as np

from . import kernel as K
from . import ops
from .errors import GraphError
from .graph import Cell


@dataclass(frozen=True)
class ParamBlock:
    """Where a parameter lives in ``th``; recurrent blocks come first (rows of ``thd``)."""

    name: str
    node: int
    off: int
    shape: tuple
    recurrent: bool

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class Layout:
    """The memory layout of one cell's step (see the module docstring)."""

    def __init__(self, cell: Cell, output: str | None = None):
        cell.validate()
        self.cell = cell
        self.nodes = cell.nodes
        self.g = cell.graph()
        self.dg = _derivative_graph(self.g)
        self.topo = list(nx.lexicographical_topological_sort(self.g))
        self.pos = {nid: p for p, nid in enumerate(self.topo)}
        self.states = [n for n in self.nodes if n.kind == "state"]
        self.inputs = [n for n in self.nodes if n.kind == "input"]
        self.state_ids = [s.id for s in self.states]
        self.new_state = [cell.updates[s.id] for s in self.states]
        self.output_ids = list(cell.outputs.values())
        if output is None and len(cell.outputs) == 1:
            output = next(iter(cell.outputs))
        if output is not None and output not in cell.outputs:
            raise GraphError(f"cell '{cell.name}' has no output {output!r}; its outputs are "
                             f"{list(cell.outputs)}")
        self.loss_output = cell.outputs[output] if output is not None else None
        self._params()
        self._values()

    def __repr__(self):
        return (f"Layout(cell '{self.cell.name}': {self.n_values} values, "
                f"{self.n_params} params ({self.n_rec} recurrent))")

    @property
    def loss_output_id(self) -> int:
        """The output the loss sees; an error names the choices if ambiguous."""
        if self.loss_output is None:
            raise GraphError(f"cell '{self.cell.name}' has outputs {list(self.cell.outputs)};"
                             f" say which one the loss sees with output=...")
        return self.loss_output

    # ------------------------------------------------------------------ blocks
    def _params(self):
        reach_state = self.needed_for(self.new_state)
        reach_out = self.needed_for(self.output_ids)
        params = [n for n in self.nodes if n.kind == "param"]
        unused = [p.name for p in params if p.id not in reach_state | reach_out]
        if unused:
            raise GraphError(f"parameter(s) {unused} of cell '{self.cell.name}' reach neither "
                             f"a new state nor an output; remove them or use them")
        rec = [p for p in params if p.id in reach_state]
        readout = [p for p in params if p.id not in reach_state]
        self.loc: dict[int, K.Ref] = {}
        self.param_blocks: list[ParamBlock] = []
        off = 0
        for p in rec + readout:
            self.param_blocks.append(ParamBlock(p.name, p.id, off, p.shape, p in rec))
            self.loc[p.id] = _block("th", off, p)
            off += p.size
        self.n_rec = sum(b.size for b in self.param_blocks if b.recurrent)
        self.n_params = off
        self.consts = {}
        for c in (n for n in self.nodes if n.kind == "const"):
            self.consts[c.name] = c.value.ravel()
            self.loc[c.id] = _block("const", 0, c)

    def _values(self):
        voff = 0
        for n in self.states + self.inputs:
            self.loc[n.id] = _block("v", voff, n)
            voff += n.shape[0]
        self.n_state = sum(s.shape[0] for s in self.states)
        self.n_in = sum(x.shape[0] for x in self.inputs)
        self.state_off = {st.id: self.loc[st.id].off for st in self.states}
        # new-state nodes that own their storage keep their tangent in nd directly
        uses = {}
        for st in self.states:
            uses.setdefault(self.cell.updates[st.id], []).append(st.id)
        self.nd_owner = {nid: sts[0] for nid, sts in uses.items()
                         if len(sts) == 1 and self.nodes[nid].kind == "op"
                         and not self.is_view(nid)}
        for nid in self.topo:
            n = self.nodes[nid]
            if n.kind != "op":
                continue
            if self.is_view(nid):
                base = self.loc[n.args[0]]
                self.loc[nid] = _block(base.buf, base.off + n.op.view_offset, n)
            else:
                self.loc[nid] = _block("v", voff, n)
                voff += n.shape[0]
        self.n_values = voff
        for name, nid in self.cell.outputs.items():
            if self.loc[nid].buf != "v":
                raise GraphError(f"output '{name}' is a parameter or constant; an output must "
                                 f"be computed from the step's values")

    @cached_property
    def rec_blocks(self) -> list[ParamBlock]:
        return [b for b in self.param_blocks if b.recurrent]

    @cached_property
    def rec_ids(self) -> list[int]:
        return [b.node for b in self.rec_blocks]

    def block_of(self, nid) -> ParamBlock:
        return next(b for b in self.param_blocks if b.node == nid)

    def is_view(self, nid) -> bool:
        """A node whose op owns no storage (its value is rows of its operand's)."""
        n = self.nodes[nid]
        return n.kind == "op" and getattr(n.op, "is_view", False)

    def base(self, nid) -> int:
        """The node whose storage nid's value lives in (through views)."""
        while self.is_view(nid):
            nid = self.nodes[nid].args[0]
        return nid

    def ref(self, nid, kind="v") -> K.Ref:
        """The block of node nid's value ('v'), tangent ('vd') or cotangent ('vb').

        Tangents of the previous state live in ``sd``, those of the new state in ``nd``
        (when its node owns its storage; anchored at the state, in state order),
        parameters' in ``thd``/``thb``, everything else in ``vd``/``vb`` at the value's
        offset; views are rows of their base's."""
        r = self.loc[nid]
        if kind == "v":
            return r
        role = {"vd": "dot", "vb": "bar"}[kind]
        if r.buf == "th":
            return r.in_buf("thd" if kind == "vd" else "thb", role=role)
        if kind == "vb":
            return r.in_buf("vb", role=role)
        b = self.base(nid)
        delta = r.off - self.loc[b].off
        if self.nodes[b].kind == "state":
            st = self.nodes[b]
            return K.Ref("sd", self.state_off[b] + delta, r.n, 0, st.name, self.state_off[b],
                         st.shape[0], "dot")
        if b in self.nd_owner:
            st = self.nodes[self.nd_owner[b]]
            off = self.state_off[st.id]
            return K.Ref("nd", off + delta, r.n, 0, st.name, off, st.shape[0], "new_dot")
        return r.in_buf("vd", role=role)

    # ------------------------------------------------------------- reachability
    def live_from(self, sources) -> set:
        """Nodes a tangent from ``sources`` reaches (inclusive): along the edges of
        ``dg``, so not past an operand the op's derivative does not depend on (the
        operand of ``stop_gradient``, of ``step``)."""
        live = set()
        for s in sources:
            live |= nx.descendants(self.dg, s) | {s}
        return live

    def needed_for(self, targets, stop=(), derivative=False) -> set:
        """Nodes that ``targets`` depend on (inclusive); with ``stop``, along paths that
        do not pass through a node of ``stop`` (they may start at one); ``derivative``:
        the nodes whose derivatives reach them (the edges of ``dg``)."""
        g = self.dg if derivative else self.g
        if stop:
            return _reach(targets, set(stop), g.predecessors)
        need = set()
        for t in targets:
            need |= nx.ancestors(g, t) | {t}
        return need

    def flops(self, nodes=None) -> int:
        """Forward flops of the given op nodes (default: the whole step)."""
        nodes = [n for n in self.nodes if n.kind == "op"] if nodes is None else \
            [self.nodes[i] for i in nodes if self.nodes[i].kind == "op"]
        return sum(n.op.flops(n.shape, [self.nodes[a].shape for a in n.args]) for n in nodes)

    def names(self, ids) -> list[str]:
        return [self.nodes[i].name for i in ids]


def _derivative_graph(g: nx.DiGraph) -> nx.DiGraph:
    """The step graph without the edges that carry no derivative: an operand of an
    elementwise op whose partial derivative in it is identically zero (the operand of
    ``stop_gradient``, ``step``, ``sign``), as ``Elementwise.pattern`` says."""
    dg = g.copy()
    for nid, data in g.nodes(data=True):
        node = data["node"]
        if not isinstance(node.op, ops.Elementwise):
            continue
        for a in set(node.args):
            if all(node.op.partial(j) == 0 for j, b in enumerate(node.args) if b == a):
                dg.remove_edge(a, nid)
    return dg


def _reach(sources, stop, step) -> set:
    """The nodes reached from ``sources`` by ``step`` (predecessors), never stepping on
    from a node of ``stop`` that is not itself a source."""
    seen, todo = set(sources), list(sources)
    while todo:
        a = todo.pop()
        if a in stop and a not in sources:
            continue
        for b in step(a):
            if b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def _block(buf, off, node) -> K.Ref:
    cols = node.shape[1] if len(node.shape) == 2 else 0
    return K.Ref(buf, off, node.shape[0], cols, node.name, off, node.shape[0])
