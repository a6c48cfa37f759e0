"""From the step graph to kernels: memory layout, fused regions, forward / jvp / vjp.

``Program(cell)`` fixes where every value lives in the flat buffers (see ``kernel``),
groups elementwise nodes into fused, convex regions, and builds the three primitives
for any region of the step graph:

* ``forward()``                            all values of one step;
* ``jvp(name, seeds, params, inject, targets)``  tangents pushed forward (one column
  or K at once); a node no tangent reaches generates no code (a symbolic zero);
* ``vjp(name, seeds, wrt)``                cotangents pulled back to parameters and/or
  the previous state.

and the small copy kernels estimators need to move state in and out of the buffers.
Elementwise regions become one loop each; their scalar derivatives come from sympy, with
one ``cse`` per region over everything computed per element.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import sympy as sp

from . import kernel as K
from . import ops
from .errors import GraphError
from .graph import Cell, Node


def _sym(name):
    return sp.Symbol(name, real=True)


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


class Program:
    """The compiled layout of one cell: buffers, regions and kernel builders."""

    def __init__(self, cell: Cell, output: str | None = None):
        cell.validate()
        self.cell = cell
        self.nodes = cell.nodes
        self.g = cell.graph()
        self.topo = list(nx.lexicographical_topological_sort(self.g))
        self.pos = {nid: p for p, nid in enumerate(self.topo)}
        self.states = [n for n in self.nodes if n.kind == "state"]
        self.inputs = [n for n in self.nodes if n.kind == "input"]
        self.new_state = [cell.updates[s.id] for s in self.states]
        if len(cell.outputs) == 0:
            raise GraphError(f"cell '{cell.name}' has no output")
        self.output_ids = list(cell.outputs.values())
        if output is None and len(cell.outputs) == 1:
            output = next(iter(cell.outputs))
        if output is not None and output not in cell.outputs:
            raise GraphError(f"cell '{cell.name}' has no output {output!r}; its outputs are "
                             f"{list(cell.outputs)}")
        self.loss_output = cell.outputs[output] if output is not None else None
        self._layout()
        self._regions()

    def __repr__(self):
        return (f"Program(cell '{self.cell.name}': {self.n_values} values, "
                f"{self.n_params} params ({self.n_rec} recurrent), {len(self.blocks)} blocks)")

    @property
    def output_ids_loss(self) -> list[int]:
        """The output the loss sees (one); an error names the choices if ambiguous."""
        if self.loss_output is None:
            raise GraphError(f"cell '{self.cell.name}' has outputs {list(self.cell.outputs)};"
                             f" say which one the loss sees with output=...")
        return [self.loss_output]

    # ------------------------------------------------------------------ layout
    def _layout(self):
        nodes, g = self.nodes, self.g
        reach_state = set()
        for nid in self.new_state:
            reach_state |= nx.ancestors(g, nid) | {nid}
        reach_out = set()
        for nid in self.output_ids:
            reach_out |= nx.ancestors(g, nid) | {nid}
        params = [n for n in nodes if n.kind == "param"]
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
            self.loc[p.id] = K.Ref("th", off, p.shape[0], p.name,
                                   p.shape[1] if len(p.shape) == 2 else 0)
            off += p.size
        self.n_rec = sum(b.size for b in self.param_blocks if b.recurrent)
        self.n_params = off
        self.consts = {}
        for c in (n for n in nodes if n.kind == "const"):
            self.consts[f"C_{c.name}"] = c.value.ravel()
            self.loc[c.id] = K.Ref(f"C_{c.name}", 0, c.shape[0], c.name,
                                   c.shape[1] if len(c.shape) == 2 else 0)
        voff = 0
        for n in self.states + self.inputs:
            self.loc[n.id] = K.Ref("v", voff, n.shape[0], n.name)
            voff += n.shape[0]
        self.n_state = sum(s.shape[0] for s in self.states)
        self.n_in = sum(x.shape[0] for x in self.inputs)
        self.state_off, off = {}, 0
        for st in self.states:
            self.state_off[st.id] = off
            off += st.shape[0]
        # new-state nodes that own their storage keep their tangent in nd directly
        uses = {}
        for st in self.states:
            uses.setdefault(self.cell.updates[st.id], []).append(st.id)
        self.nd_nodes = {nid: self.state_off[sts[0]] for nid, sts in uses.items()
                         if len(sts) == 1 and nodes[nid].kind == "op"
                         and not isinstance(nodes[nid].op, ops.Slice)}
        for nid in self.topo:
            n = nodes[nid]
            if n.kind != "op":
                continue
            if isinstance(n.op, ops.Slice):
                base = self.loc[n.args[0]]
                self.loc[nid] = K.Ref(base.buf, base.off + n.op.start, n.shape[0], n.name)
            else:
                self.loc[nid] = K.Ref("v", voff, n.shape[0], n.name)
                voff += n.shape[0]
        self.n_values = voff
        for name, nid in self.cell.outputs.items():
            if self.loc[nid].buf != "v":
                raise GraphError(f"output '{name}' is a parameter or constant; an output must "
                                 f"be computed from the step's values")

    def constants(self) -> dict:
        """Module-level names every generated module of this cell defines."""
        out = {"S": self.n_state, "X": self.n_in, "NV": self.n_values, "NP": self.n_params,
               "NR": self.n_rec}
        out.update(self.consts)
        return out

    @property
    def rec_blocks(self) -> list[ParamBlock]:
        return [b for b in self.param_blocks if b.recurrent]

    def block_of(self, nid) -> ParamBlock:
        return next(b for b in self.param_blocks if b.node == nid)

    def ref(self, nid, kind="v") -> K.Ref:
        """The Ref of node nid's value ('v'), tangent ('vd') or cotangent ('vb').

        Tangents of the previous state live in ``sd``, those of the new state in ``nd``
        (when its node owns its storage), everything else in ``vd``; slices are rows of
        their base's."""
        r = self.loc[nid]
        if kind == "v":
            return r
        suffix = {"vd": "_dot", "vb": "_bar"}[kind]
        name = (r.name + suffix) if r.name else ""
        if r.buf == "th":
            return K.Ref("thd" if kind == "vd" else "thb", r.off, r.n, name, r.cols)
        if kind == "vb":
            return K.Ref("vb", r.off, r.n, name, r.cols)
        b = self.base(nid)
        delta = r.off - self.loc[b].off
        if self.nodes[b].kind == "state":
            buf, off = "sd", self.state_off[b]
        elif b in self.nd_nodes:
            buf, off = "nd", self.nd_nodes[b]
        else:
            buf, off = "vd", self.loc[b].off
        return K.Ref(buf, off + delta, r.n, name)

    def base(self, nid) -> int:
        """The node whose storage nid's value lives in (through slices)."""
        n = self.nodes[nid]
        while n.kind == "op" and isinstance(n.op, ops.Slice):
            n = self.nodes[n.args[0]]
        return n.id

    def is_view(self, nid) -> bool:
        n = self.nodes[nid]
        return n.kind == "op" and isinstance(n.op, ops.Slice)

    # ----------------------------------------------------------------- regions
    def _regions(self):
        """Group elementwise nodes of one length into fused regions that are convex (no
        path leaves a region and re-enters it), then order regions and structural nodes
        by a topological sort of the quotient graph."""
        region, members = {}, {}
        anc = {nid: nx.ancestors(self.g, nid) for nid in self.topo}
        for nid in self.topo:
            n = self.nodes[nid]
            if not (n.kind == "op" and isinstance(n.op, ops.Elementwise)):
                continue
            cands = {region[a] for a in n.args
                     if a in region and self.nodes[a].shape == n.shape}
            merged = set().union(*(members[r] for r in cands)) | {nid}
            convex = all(not (anc[a] & merged)
                         for m in merged for a in self.nodes[m].args if a not in merged)
            if cands and convex:
                rid = min(cands)
                for r in cands:
                    del members[r]
            else:
                rid, merged = nid, {nid}
            members[rid] = merged
            for m in merged:
                region[m] = rid
        self.region_of = region
        self.region_members = {r: sorted(ms, key=self.pos.get) for r, ms in members.items()}

        def key(nid):
            return ("ew", region[nid]) if nid in region else ("op", nid)

        q = nx.DiGraph()
        first = {}
        for nid in self.topo:
            n = self.nodes[nid]
            if n.kind != "op" or self.is_view(nid):
                continue
            kb = key(nid)
            q.add_node(kb)
            first.setdefault(kb, self.pos[nid])
        for nid in self.topo:
            if nid not in self.loc or self.nodes[nid].kind != "op" or self.is_view(nid):
                continue
            for a in self.nodes[nid].args:
                b = self.base(a)
                if self.nodes[b].kind == "op" and key(b) != key(nid):
                    q.add_edge(key(b), key(nid))
        self.blocks = list(nx.lexicographical_topological_sort(q, key=first.get))

    def block_nodes(self, block) -> list[int]:
        kind, key = block
        return self.region_members[key] if kind == "ew" else [key]

    # ----------------------------------------------------------- reachability
    def live_from(self, sources) -> set:
        live = set()
        for s in sources:
            live |= nx.descendants(self.g, s) | {s}
        return live

    def needed_for(self, targets) -> set:
        need = set()
        for t in targets:
            need |= nx.ancestors(self.g, t) | {t}
        return need

    def _comment(self, n: Node, what="") -> K.Comment:
        return K.Comment(f"{what}{n.name} = {self.cell.describe(n)}   {shape_str(n)}")

    def _line(self, m, what=""):
        n = self.nodes[m]
        return f"{what}{n.name} = {self.cell.describe(n)}"

    # --------------------------------------------------------------- forward
    def forward(self, name="forward") -> K.Kernel:
        k = K.Kernel(name, ("th", "v"),
                     "All values of one step; v[:S] holds the previous state, v[S:S+X] "
                     "the input.")
        for block in self.blocks:
            if block[0] == "ew":
                k.body.append(self._ew_forward(block[1]))
            else:
                n = self.nodes[block[1]]
                k.body.append(self._comment(n))
                k.body.extend(n.op.forward(self.ref(n.id), [self.ref(a) for a in n.args]))
        return k

    def _ew_forward(self, rid):
        mem = self.region_members[rid]
        mset = set(mem)
        loads, sym, full = [], {}, {}
        for m in mem:
            for a in self.nodes[m].args:
                if a not in mset and a not in sym:
                    sym[a] = _sym(self.nodes[a].name + "_e")
                    loads.append((sym[a], self.ref(a)))
        for m in mem:   # inline members so that cse never hoists above a definition
            n = self.nodes[m]
            full[m] = n.op.expr.xreplace(
                {ops.ARG[j]: full.get(a, sym.get(a)) for j, a in enumerate(n.args)})
        outs = [(_sym(self.nodes[m].name + "_e"), full[m]) for m in mem]
        stores = tuple((self.ref(m), s, False) for m, (s, _) in zip(mem, outs, strict=True))
        lines = "\n".join(self._line(m) for m in mem)
        return _ew(self.nodes[mem[0]].shape[0], lines, loads, _cse(outs), stores)

    # ------------------------------------------------------------------- jvp
    def jvp(self, name, seeds=None, params="zero", inject=(), targets=None,
            matrix=False, inject_basis=False) -> K.Kernel:
        """Tangents of ``targets`` (default: the new states) from tangents at ``seeds``.

        seeds: nodes whose tangent rows the caller fills (default: the previous states).
        params: "zero" (parameters have no tangent), "dense" (the caller fills ``thd``
        rows of the recurrent parameters) or "basis" (the identity: K = n_rec columns).
        inject: op nodes whose tangent is exactly the caller's prefilled rows, whatever
        their operands' tangents (the inputs z of the downstream map of a projection cut:
        a tangent injected at one z node does not flow into another through it).
        matrix: K tangent columns instead of one. inject_basis: the injected tangent is
        the identity (z nodes take consecutive columns, in the order given), known
        symbolically rather than read from memory (KF-RTRL's D_t).

        Arguments (th, v, thd, sd, vd, nd): the caller fills sd (previous state) and
        thd (dense parameter tangents) and reads the new state's tangent from nd (other
        targets' from vd); every other row of vd is scratch, left unwritten where
        nothing in the kernel reads it.
        """
        seeds = set(self.states_ids if seeds is None else seeds)
        inject_cols, col = {}, 0
        for z in inject:
            inject_cols[z] = col
            col += self.nodes[z].size
        inject = set(inject)
        targets = list(self.new_state if targets is None else targets)
        for z in inject:
            if self.nodes[z].kind != "op" or self.is_view(z):
                raise GraphError(f"cannot inject a tangent at '{self.nodes[z].name}': only "
                                 f"op nodes that own their storage (not slices) can be cut")
        if (params == "basis" or inject_basis) and not matrix:
            raise GraphError("an identity tangent needs matrix tangents")
        rec = {b.node for b in self.rec_blocks}
        src = seeds | inject | (rec if params != "zero" else set())
        act = self.live_from(src) & self.needed_for(targets)
        what = sorted(self.nodes[s].name for s in seeds | inject)
        k = K.Kernel(name, ("th", "v", "thd", "sd", "vd", "nd"),
                     f"Tangents of {[self.nodes[t].name for t in targets]} from {what}"
                     f"{'' if params == 'zero' else ' and parameter tangents (' + params + ')'}"
                     f"{'; K columns' if matrix else ''}.", matrix)

        def dot(a):
            """The tangent of node a: a Ref, a Basis, or None (a symbolic zero)."""
            if a not in act:
                return None
            n = self.nodes[a]
            if n.kind == "param":
                if params == "zero" or a not in rec:
                    return None
                if params == "basis":
                    blk = self.block_of(a)
                    return K.Basis(blk.off, n.shape[0], n.shape[1] if len(n.shape) == 2 else 0)
                return self.ref(a, "vd")
            if n.kind in ("const", "input", "state") and a not in seeds:
                return None
            b = self.base(a)
            if inject_basis and b in inject and b not in materialized:
                return K.Basis(inject_cols[b] + self.loc[a].off - self.loc[b].off, n.size)
            return self.ref(a, "vd")

        materialized = set()
        if inject_basis:     # an identity read by a structural op is written out
            for z in inject:
                readers = [c for v in self._views_of(z) for c in self.g.successors(v)
                           if c in act and not self.is_view(c)]
                if any(not isinstance(self.nodes[c].op, ops.Elementwise) for c in readers):
                    materialized.add(z)
                    k.body.append(K.Comment(f"{self.nodes[z].name}_dot = the identity"))
                    k.body.append(K.Identity(self.ref(z, "vd"), inject_cols[z]))
        owned = {self.cell.updates[st.id] for st in self.states} & set(self.nd_nodes)
        for t in targets:   # a target no tangent reaches has tangent zero
            new_not_owned = t in self.new_state and t not in owned
            if t not in act and not new_not_owned:
                k.body.append(K.Comment(f"{self.nodes[t].name}_dot = 0: no tangent reaches it"))
                k.body.append(K.Zero(self.ref(t, "vd")))
        for block in self.blocks:
            if not any(m in act for m in self.block_nodes(block)):
                continue
            if block[0] == "ew":
                st = self._ew_jvp(block[1], act, dot, inject, set(targets), matrix)
                if st is not None:
                    k.body.append(st)
            else:
                n = self.nodes[block[1]]
                arg_dots = [dot(a) for a in n.args]
                if n.id in inject or all(d is None for d in arg_dots):
                    continue       # an injection keeps its prefilled rows
                k.body.append(self._comment(n, "tangent of "))
                k.body.extend(n.op.jvp(self.ref(n.id, "vd"), [self.ref(a) for a in n.args],
                                       arg_dots, False))
        for st in self.states:    # new states that do not own their storage: copy to nd
            new = self.cell.updates[st.id]
            if new in targets and new not in self.nd_nodes:
                dst = K.Ref("nd", self.state_off[st.id], st.shape[0])
                k.body.append(K.Comment(f"{st.name}: new value {self.nodes[new].name}"))
                k.body.append(K.Copy(dst, self.ref(new, "vd")) if new in act else K.Zero(dst))
        keep = [self.ref(t, "vd") for t in targets] + [self.ref(z, "vd") for z in inject]
        k.body = K.drop_dead_writes(K.skip_zero_rows(k.body), keep)
        return k

    def _views_of(self, nid):
        """A node and every slice of it (transitively)."""
        out = [nid]
        for c in self.g.successors(nid):
            if self.is_view(c):
                out += self._views_of(c)
        return out

    @property
    def states_ids(self):
        return [s.id for s in self.states]

    def _consumers_outside(self, m, region, act):
        return any(c in act and c not in region for c in self.g.successors(m))

    def _ew_jvp(self, rid, act, dot, inject, targets, matrix):
        allm = self.region_members[rid]
        mem = [m for m in allm if m in act]
        region = set(allm)
        loads, vsym = [], {}
        col_loads, col_basis, dsym = [], [], {}
        partials, col_assigns, col_stores, lines = [], [], [], []

        def val(a):
            if a not in vsym:
                vsym[a] = _sym(self.nodes[a].name + "_e")
                loads.append((vsym[a], self.ref(a)))
            return vsym[a]

        for m in mem:
            n = self.nodes[m]
            if m in inject:     # its tangent is what the caller put in (or the identity)
                dsym[m] = _sym(n.name + "_dot_e")
                dz = dot(m)
                if isinstance(dz, K.Basis):
                    col_basis.append((dsym[m], dz))
                else:
                    col_loads.append((dsym[m], dz))
                continue
            terms = []
            for j, a in enumerate(n.args):
                d = dsym.get(a)
                if d is None and a not in region:
                    da = dot(a)
                    if da is not None:
                        d = dsym[a] = _sym(self.nodes[a].name + "_dot_e")
                        if isinstance(da, K.Basis):
                            col_basis.append((d, da))
                        else:
                            col_loads.append((d, da))
                if d is None:
                    continue
                terms.append(self._partial(n, j, val, partials) * d)
            dm = _sym(n.name + "_dot_e")
            if not terms:
                continue
            dsym[m] = dm
            col_assigns.append((dm, sp.Add(*terms)))
            if m in targets or self._consumers_outside(m, region, act):
                col_stores.append((self.ref(m, "vd"), dm, False))
            lines.append(self._line(m, "tangent of "))
        if not col_stores:
            return None
        return _ew(self.nodes[allm[0]].shape[0], "\n".join(lines), loads, _cse(partials),
                   (), col_loads, col_basis, col_assigns, col_stores)

    def _partial(self, n, j, val, partials):
        """d n / d arg_j as a scalar of loaded values: a number, a loaded symbol, or a new
        symbol ``<n>_p<j>`` whose expression joins ``partials``. n's own value is reused
        where its expression reappears (tanh' = 1 - tanh², sigmoid' = s (1 - s), ...)."""
        args = {ops.ARG[i]: val(a) for i, a in enumerate(n.args)}
        expr = n.op.expr.xreplace(args)
        part = n.op.partial(j).xreplace(args)
        if not expr.is_Symbol and not expr.is_number and part.has(expr):
            part = part.xreplace({expr: val(n.id)})
        if part.is_number or part.is_Symbol:
            return part
        p = _sym(f"{n.name}_p{j}")
        partials.append((p, part))
        return p

    # ------------------------------------------------------------------- vjp
    def vjp(self, name, seeds, wrt=("params", "state"), fresh=False) -> K.Kernel:
        """Cotangents pulled back from ``seeds``.

        The caller zeroes ``vb`` and adds the seed cotangents into their rows. wrt:
        "params" accumulates the parameter cotangents into ``thb`` (or, with ``fresh``,
        overwrites the recurrent blocks, so the caller need not zero them); "state" leaves
        the previous-state cotangent in ``vb[:S]``; "input" in ``vb[S:S+X]``.
        """
        unknown = set(wrt) - {"params", "state", "input"}
        if unknown:
            raise GraphError(f"vjp wrt {sorted(unknown)}: use params, state or input")
        src = set()
        if "params" in wrt:
            src |= {b.node for b in self.param_blocks}
        if "state" in wrt:
            src |= set(self.states_ids)
        if "input" in wrt:
            src |= {x.id for x in self.inputs}
        act = self.live_from(src) & self.needed_for(seeds)
        k = K.Kernel(name, ("th", "v", "vb", "thb"),
                     f"Cotangents of {list(wrt)} from {[self.nodes[s].name for s in seeds]}; "
                     f"vb holds the seeds and zeros, thb accumulates.")

        def bar(a):
            if a not in act or self.nodes[a].kind == "const":
                return None
            return self.ref(a, "vb")

        for block in reversed(self.blocks):
            if not any(m in act for m in self.block_nodes(block)):
                continue
            if block[0] == "ew":
                st = self._ew_vjp(block[1], act, bar, set(seeds))
                if st is not None:
                    k.body.append(st)
            else:
                n = self.nodes[block[1]]
                arg_bars = [bar(a) for a in n.args]
                if all(b is None for b in arg_bars):
                    continue
                k.body.append(self._comment(n, "pull back through "))
                k.body.extend(n.op.vjp(self.ref(n.id, "vb"), [self.ref(a) for a in n.args],
                                       arg_bars))
        if fresh:
            k.body = self._overwrite_params(k.body)
            k.doc = k.doc.replace("thb accumulates", "thb's recurrent blocks are overwritten")
        return k

    def _overwrite_params(self, body):
        """Rewrite a vjp body so that it assigns, rather than adds to, each recurrent
        parameter block's cotangent: the first full write of a block assigns; a block
        first written in part or by accumulation is zeroed first; unwritten blocks are
        zeroed."""
        blocks = {b.off: b for b in self.rec_blocks}

        def block(ref):
            if ref.buf != "thb":
                return None
            return next((b for off, b in blocks.items()
                         if off <= ref.off < off + b.size), None)

        written, out = set(), []
        for st in body:
            if isinstance(st, K.Outer):
                b = block(st.W_bar)
                if b is not None and b.off not in written:
                    written.add(b.off)
                    if st.W_bar.off == b.off and st.W_bar.size == b.size:
                        st = K.Outer(st.W_bar, st.z_bar, st.a, acc=False)
                    else:
                        out.append(K.Zero(K.Ref("thb", b.off, b.size)))
            else:
                targets = []
                if isinstance(st, K.Ew):
                    targets = [r for r, _, _ in st.stores]
                elif isinstance(st, (K.Copy, K.MatVecT)):
                    targets = [st.dst if isinstance(st, K.Copy) else st.a_bar]
                for r in targets:
                    b = block(r)
                    if b is not None and b.off not in written:
                        written.add(b.off)
                        out.append(K.Zero(K.Ref("thb", b.off, b.size)))
            out.append(st)
        missing = [K.Zero(K.Ref("thb", b.off, b.size)) for off, b in blocks.items()
                   if off not in written]
        return missing + out

    def _ew_vjp(self, rid, act, bar, seeds):
        allm = self.region_members[rid]
        mem = [m for m in allm if m in act]
        region = set(allm)
        loads, vsym, partials, body, stores, lines = [], {}, [], [], [], []

        def val(a):
            if a not in vsym:
                vsym[a] = _sym(self.nodes[a].name + "_e")
                loads.append((vsym[a], self.ref(a)))
            return vsym[a]

        contrib: dict[int, list] = {}
        for m in mem:   # cotangent arriving from outside the region (or a seed)
            if m in seeds or self._consumers_outside(m, region, act):
                s = _sym(self.nodes[m].name + "_bar_e")
                loads.append((s, self.ref(m, "vb")))
                contrib[m] = [s]
        ext_order = []
        for m in reversed(mem):
            n = self.nodes[m]
            if m not in contrib:
                continue
            b = _sym(n.name + "_bar_e")
            if contrib[m] != [b]:
                body.append((b, sp.Add(*contrib[m])))
            lines.append(self._line(m, "cotangent of "))
            for j, a in enumerate(n.args):
                if a in region:
                    if a not in act:
                        continue
                elif bar(a) is None:
                    continue
                if a not in region and a not in contrib:
                    ext_order.append(a)
                contrib.setdefault(a, []).append(self._partial(n, j, val, partials) * b)
        for a in ext_order:
            s = _sym(self.nodes[a].name + "_bar_e")
            body.append((s, sp.Add(*contrib[a])))
            stores.append((bar(a), s, True))
        if not stores:
            return None
        return _ew(self.nodes[allm[0]].shape[0], "\n".join(lines), loads,
                   _cse(partials) + tuple(body), stores)

    # ------------------------------------------------------- moving state around
    def _pieces(self, nodes, kind):
        off = 0
        for nid in nodes:
            r = self.ref(nid, kind)
            yield off, r, self.nodes[nid]
            off += r.size

    def gather(self, name, nodes, kind="v", matrix=False) -> K.Kernel:
        """dst[pieces] = the rows of nodes: values (arguments (v, dst)) or tangents after
        a jvp (kind "vd", arguments (sd, vd, nd, dst); ``matrix``: K columns)."""
        args = ("v", "dst") if kind == "v" else ("sd", "vd", "nd", "dst")
        new_of = {self.cell.updates[st.id]: st for st in self.states}
        k = K.Kernel(name, args,
                     f"Gathers {[self.nodes[n].name for n in nodes]} into one block.",
                     matrix)
        for off, r, n in self._pieces(nodes, kind):
            if kind == "vd" and n.id in new_of:    # a jvp leaves new states' tangents in nd
                r = K.Ref("nd", self.state_off[new_of[n.id].id], r.n)
            k.body.append(K.Comment(f"{n.name}"))
            k.body.append(K.Copy(K.Ref("dst", off, r.size), K.Ref(r.buf, r.off, r.size)))
        return k

    def scatter_add(self, name, nodes, kind="vb", zero_first=False) -> K.Kernel:
        """dst[rows of nodes] (+)= src[pieces]: cotangents (kind "vb", arguments
        (src, vb, thb)) or tangents (kind "vd", arguments (src, vd, nd, thd)); parameter
        nodes have their rows in thb / thd, new states' tangents theirs in nd."""
        bufs = {"vb": ("vb", "thb"), "vd": ("vd", "nd", "thd")}[kind]
        k = K.Kernel(name, ("src",) + bufs,
                     f"Adds a block into the rows of {[self.nodes[n].name for n in nodes]}.")
        for off, r, n in self._pieces(nodes, kind):
            k.body.append(K.Comment(f"{n.name}"))
            k.body.append(K.Copy(K.Ref(r.buf, r.off, r.size), K.Ref("src", off, r.size),
                                 not zero_first))
        return k

    # ----------------------------------------------------------------- costs
    def flops(self, nodes=None) -> int:
        """Forward flops of the given op nodes (default: the whole step)."""
        nodes = [n for n in self.nodes if n.kind == "op"] if nodes is None else \
            [self.nodes[i] for i in nodes if self.nodes[i].kind == "op"]
        return sum(n.op.flops(n.shape, [self.nodes[a].shape for a in n.args]) for n in nodes)


def _ew(n, comment, loads, assigns, stores, col_loads=(), col_basis=(), col_assigns=(),
        col_stores=()) -> K.Ew:
    """An Ew statement without the loads nothing uses."""
    used = set()
    for _, e in tuple(assigns) + tuple(col_assigns):
        used |= sp.sympify(e).free_symbols
    used |= {s for _, s, _ in tuple(stores) + tuple(col_stores)}
    return K.Ew(n, comment, tuple((s, r) for s, r in loads if s in used), tuple(assigns),
                tuple(stores), tuple((s, r) for s, r in col_loads if s in used),
                tuple((s, b) for s, b in col_basis if s in used), tuple(col_assigns),
                tuple(col_stores))


def _cse(assigns):
    """One sympy cse over a region's independent scalar assignments; temporaries u0, u1..

    Every expression must depend only on loaded symbols (never on another assignment's
    target), so hoisting common subexpressions to the front is always valid."""
    if not assigns:
        return ()
    syms = [s for s, _ in assigns]
    exprs = [sp.sympify(e) for _, e in assigns]
    reps, red = sp.cse(exprs, symbols=sp.numbered_symbols("u", real=True), order="none")
    return tuple(reps) + tuple(zip(syms, red, strict=True))


def shape_str(n: Node) -> str:
    return "(" + ", ".join(map(str, n.shape)) + ")"
