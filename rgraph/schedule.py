"""The order in which one step's ops run, with elementwise ops fused into loops.

Elementwise nodes of one length are grouped into fused regions that are convex (no path
leaves a region and re-enters it); regions and the structural ops are ordered by a
topological sort of the quotient graph. Every kernel (forward, jvp, vjp) walks the same
schedule, the vjp in reverse.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from . import ops
from .layout import Layout


@dataclass(frozen=True)
class Block:
    """One unit of the schedule: a fused elementwise region (``fused``, its nodes in
    topological order) or one structural op (a single node)."""

    nodes: tuple
    fused: bool

    @property
    def key(self) -> int:
        return self.nodes[0]


def schedule(lay: Layout) -> tuple[Block, ...]:
    """The blocks of one step, in an order that respects every dependency."""
    nodes, g = lay.nodes, lay.g
    region, members = {}, {}
    anc = {nid: nx.ancestors(g, nid) for nid in lay.topo}
    for nid in lay.topo:
        n = nodes[nid]
        if not (n.kind == "op" and isinstance(n.op, ops.Elementwise)):
            continue
        cands = {region[a] for a in n.args if a in region and nodes[a].shape == n.shape}
        merged = set().union(*(members[r] for r in cands)) | {nid}
        convex = all(not (anc[a] & merged)
                     for m in merged for a in nodes[m].args if a not in merged)
        if cands and convex:
            rid = min(cands)
            for r in cands:
                del members[r]
        else:
            rid, merged = nid, {nid}
        members[rid] = merged
        for m in merged:
            region[m] = rid

    def key(nid):
        return ("fused", region[nid]) if nid in region else ("op", nid)

    q = nx.DiGraph()
    first = {}
    for nid in lay.topo:
        if nodes[nid].kind != "op" or lay.is_view(nid):
            continue
        q.add_node(key(nid))
        first.setdefault(key(nid), lay.pos[nid])
    for nid in lay.topo:
        if nodes[nid].kind != "op" or lay.is_view(nid):
            continue
        for a in nodes[nid].args:
            b = lay.base(a)
            if nodes[b].kind == "op" and key(b) != key(nid):
                q.add_edge(key(b), key(nid))
    out = []
    for kind, k in nx.lexicographical_topological_sort(q, key=first.get):
        if kind == "fused":
            out.append(Block(tuple(sorted(members[k], key=lay.pos.get)), True))
        else:
            out.append(Block((k,), False))
    return tuple(out)
