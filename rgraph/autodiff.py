"""Differentiation: the forward, jvp and vjp kernels of any region of one step.

Given a ``Layout`` and its ``schedule``:

* ``forward(lay, sched)``               all values of one step;
* ``jvp(lay, sched, name, TangentSpec)`` tangents pushed forward, one column or K;
* ``vjp(lay, sched, name, CotangentSpec)`` cotangents pulled back;
* ``gather`` / ``scatter_add``          the copy kernels estimators use to move blocks
  of values, tangents and cotangents in and out of the buffers.

A tangent that is known to be zero is ``ZERO`` (a type, as in JAX): the drivers skip
it, so no rule ever tests for it and a node no tangent reaches generates no code.
Structural ops contribute through their per-operand jvp rules; their vjp is the
transpose of those same statements. Elementwise regions become one fused loop each;
their scalar partials come from sympy, with one ``cse`` per region.
"""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, replace

import sympy as sp

from . import kernel as K
from . import ops
from .errors import GraphError
from .layout import Layout
from .schedule import Block


class Zero:
    """A symbolic zero tangent or cotangent: the drivers skip it, rules never see it."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "ZERO"


ZERO = Zero()


class ParamTangents(enum.Enum):
    """The tangent of the recurrent parameters in a jvp."""

    NONE = "none"          # parameters are constants
    DENSE = "dense"        # the caller fills thd (one column, or K)
    IDENTITY = "identity"  # the identity: one column per recurrent parameter (RTRL)


@dataclass(frozen=True)
class TangentSpec:
    """What a jvp kernel pushes forward, and where from.

    seeds: nodes whose tangent rows the caller fills (None: the previous states).
    params: the recurrent parameters' tangent.
    inject: op nodes whose tangent is exactly the caller's rows, whatever their operands'
    tangents (the inputs z of the downstream map of a projection cut); with
    ``identity`` it is the identity instead, known symbolically (the z nodes take
    consecutive columns in the order given: KF-RTRL's D_t = ∂s_t/∂z_t), *plus* what the
    other injections push into it: a z that another z feeds (nested sums) gets the
    total derivative, ∂s_t/∂z_1 through z_2 included.
    targets: nodes whose tangents the caller reads (None: the new states).
    matrix: K tangent columns instead of one.
    """

    seeds: tuple | None = None
    params: ParamTangents = ParamTangents.NONE
    inject: tuple = ()
    identity: bool = False
    targets: tuple | None = None
    matrix: bool = False


@dataclass(frozen=True)
class CotangentSpec:
    """What a vjp kernel pulls back: from the cotangents of ``seeds`` (the caller clears
    ``vb`` and adds them into their rows) to ``wrt``, a subset of {"params", "state",
    "input"}: parameter cotangents accumulate into ``thb`` (``overwrite``: the recurrent
    blocks are assigned instead, so the caller need not clear them), the previous
    state's are left in ``vb[:S]``, the input's in ``vb[S:S+X]``."""

    seeds: tuple
    wrt: frozenset = frozenset({"params", "state"})
    overwrite: bool = False
    skip: frozenset = frozenset()   # parameters whose cotangents are not formed (the
    #                                 caller reads those of the products they enter)
    stop: frozenset = frozenset()   # op nodes whose cotangents are formed in vb but not
    #                                 pulled back further: the partial derivative with
    #                                 them held fixed (SnAp's and e-prop's ∂l_t/∂s_t)

    def __post_init__(self):
        unknown = set(self.wrt) - {"params", "state", "input"}
        if unknown:
            raise GraphError(f"vjp wrt {sorted(unknown)}: use params, state or input")


def _dummy(name, kind="v"):
    """A fresh scalar of a fused loop: kind "v" for one element's value, tangent or
    cotangent, "p" for a partial derivative or a common subexpression. The printers
    name it (after ``name``) when they print the loop."""
    return sp.Dummy(f"{kind}:{name}", real=True)


def _describe(lay: Layout, nid) -> str:
    n = lay.nodes[nid]
    return f"{n.name} = {lay.cell.describe(n)}"


def _shape(n) -> str:
    return "(" + ", ".join(map(str, n.shape)) + ")"


def _comment(lay: Layout, nid, what="") -> K.Comment:
    return K.Comment(f"{what}{_describe(lay, nid)}   {_shape(lay.nodes[nid])}")


# ------------------------------------------------------------------------- forward
def forward(lay: Layout, sched: tuple[Block, ...], name="forward") -> K.Kernel:
    """All values of one step; v[:S] holds the previous state, v[S:S+X] the input."""
    k = K.Kernel(name, ("th", "v"), "All values of one step: v[:S] holds the previous "
                 "state, v[S:S+X] the input.")
    for block in sched:
        if block.fused:
            k.body.append(_ew_forward(lay, block.nodes))
        else:
            n = lay.nodes[block.key]
            k.body.append(_comment(lay, n.id))
            k.body.extend(n.op.forward(lay.ref(n.id), [lay.ref(a) for a in n.args]))
    return k


def _ew_forward(lay, mem):
    mset = set(mem)
    loads, sym, assigns, stores, notes = [], {}, [], [], []
    for m in mem:
        n = lay.nodes[m]
        for a in n.args:
            if a not in mset and a not in sym:
                sym[a] = _dummy(lay.nodes[a].name)
                loads.append((sym[a], lay.ref(a)))
        sym[m] = _dummy(n.name)
        expr = n.op.expr.xreplace({ops.ARG[j]: sym[a] for j, a in enumerate(n.args)})
        assigns.append((sym[m], expr))
        stores.append((lay.ref(m), sym[m], False))
        notes.append((sym[m], _describe(lay, m)))
    return K.Ew(lay.nodes[mem[0]].shape[0], tuple(loads), tuple(assigns), tuple(stores),
                notes=tuple(notes))


# ----------------------------------------------------------------------------- jvp
def jvp(lay: Layout, sched: tuple[Block, ...], name: str, spec: TangentSpec) -> K.Kernel:
    """A jvp kernel (arguments th, v, thd, sd, vd, nd; see ``TangentSpec``).

    The caller fills sd (the previous state's tangent), thd (dense parameter tangents)
    and the rows of other seeds and injections in vd; it reads the new state's tangent
    from nd and other targets' from vd. Every other row of vd is scratch, left unwritten
    where nothing in the kernel reads it. With an identity injection whose tangents reach
    the new state only through elementwise ops, only the structurally non-zero entries
    of nd are written (the diagonal blocks of D_t): the caller keeps the others zero.
    """
    seeds = set(lay.state_ids if spec.seeds is None else spec.seeds)
    targets = list(lay.new_state if spec.targets is None else spec.targets)
    inject_cols, col = {}, 0
    for z in spec.inject:
        if lay.nodes[z].kind != "op" or lay.is_view(z):
            raise GraphError(f"cannot inject a tangent at '{lay.nodes[z].name}': only "
                             f"op nodes that own their storage (not slices) can be cut")
        inject_cols[z] = col
        col += lay.nodes[z].size
    inject = set(spec.inject)
    # identity injections another injection feeds: their identity is written out and
    # the tangents arriving from the others are added to it
    fed = {z for z in inject if z in lay.live_from(inject - {z})} if spec.identity \
        else set()
    if (spec.params is ParamTangents.IDENTITY or spec.identity) and not spec.matrix:
        raise GraphError("an identity tangent needs matrix tangents")
    rec = set(lay.rec_ids)
    with_params = spec.params is not ParamTangents.NONE
    act = lay.live_from(seeds | inject | (rec if with_params else set())) \
        & lay.needed_for(targets, derivative=True)
    what = sorted(lay.names(seeds | inject))
    extra = {ParamTangents.NONE: "", ParamTangents.DENSE: " and the parameters' (thd)",
             ParamTangents.IDENTITY: " and the identity parameter tangent"}[spec.params]
    k = K.Kernel(name, ("th", "v", "thd", "sd", "vd", "nd"),
                 f"Tangents of {lay.names(targets)} from those of {what}{extra}"
                 f"{'; K columns' if spec.matrix else ''}.", spec.matrix)

    materialized = set()

    def dot(a):
        """The tangent of node a: a Ref, a Basis, or ZERO."""
        if a not in act:
            return ZERO
        n = lay.nodes[a]
        if n.kind == "param":
            if not with_params or a not in rec:
                return ZERO
            if spec.params is ParamTangents.IDENTITY:
                blk = lay.block_of(a)
                return K.Basis(blk.off, n.shape[0], n.shape[1] if len(n.shape) == 2 else 0)
            return lay.ref(a, "vd")
        if n.kind in ("const", "input", "state") and a not in seeds:
            return ZERO
        b = lay.base(a)
        if spec.identity and b in inject and b not in materialized:
            return K.Basis(inject_cols[b] + lay.loc[a].off - lay.loc[b].off, n.size)
        return lay.ref(a, "vd")

    if spec.identity:     # an identity read by a structural op, or itself (or a view
        for z in spec.inject:     # of it) a target the caller reads, is written out
            readers = [c for v in _views_of(lay, z) for c in lay.g.successors(v)
                       if c in act and not lay.is_view(c)]
            if any(not isinstance(lay.nodes[c].op, ops.Elementwise) for c in readers) or \
                    any(lay.base(t) == z for t in targets) or z in fed:
                materialized.add(z)
                k.body.append(K.Comment(f"{lay.nodes[z].name}_dot = the identity"))
                k.body.append(K.Identity(lay.ref(z, "vd"), inject_cols[z]))
    owned = set(lay.new_state) & set(lay.nd_owner)
    for t in targets:   # a target no tangent reaches has tangent zero
        if t not in act and (t not in lay.new_state or t in owned):
            k.body.append(K.Comment(f"{lay.nodes[t].name}_dot = 0: no tangent reaches it"))
            k.body.append(K.Clear(lay.ref(t, "vd")))
    only_nd = all(t in owned for t in targets)
    for block in sched:
        if not any(m in act for m in block.nodes):
            continue
        if block.fused:
            st = _ew_jvp(lay, block.nodes, act, dot, inject, set(targets), only_nd, fed)
            if st is not None:
                k.body.append(st)
            continue
        n = lay.nodes[block.key]
        if n.id in inject and n.id not in fed:
            continue       # an injection keeps its prefilled rows
        out = lay.ref(n.id, "vd")
        # the last operand first: a product's W a' assigns, then W' a adds (a ParamTangent
        # that assigned would clear its output first)
        parts = [st for j, a in reversed(list(enumerate(n.args))) if dot(a) is not ZERO
                 for st in n.op.jvp(j, out, [lay.ref(a) for a in n.args], dot(a))]
        if parts and n.id in fed:       # added to its identity
            k.body.append(_comment(lay, n.id, "tangent (added to the identity) of "))
            k.body.extend(replace(st, acc=True) for st in parts)
        elif parts:
            k.body.append(_comment(lay, n.id, "tangent of "))
            k.body.extend(_sum_into(out, parts))
    for st in lay.states:    # new states that do not own their storage: copy to nd
        new = lay.cell.updates[st.id]
        if new in targets and new not in lay.nd_owner:
            off = lay.state_off[st.id]
            dst = K.Ref("nd", off, st.shape[0], 0, st.name, off, st.shape[0], "new_dot")
            k.body.append(K.Comment(f"{st.name}: new value {lay.nodes[new].name}"))
            k.body.append(K.Copy(dst, lay.ref(new, "vd")) if new in act else K.Clear(dst))
    keep = [lay.ref(t, "vd") for t in targets] + [lay.ref(z, "vd") for z in spec.inject]
    k.body = K.drop_dead_writes(K.skip_zero_rows(k.body), keep)
    return k


def _sum_into(out: K.Ref, parts: list) -> list:
    """A node's tangent as the sum of its operands' contributions: a contribution that
    overlaps rows already written accumulates; rows no contribution writes are cleared
    (a symbolic zero written out, which ``skip_zero_rows`` then exploits)."""
    written: list[K.Ref] = []
    body = []
    for st in parts:
        (dst,) = st.writes()
        body.append(replace(st, acc=any(dst.overlaps(w) for w in written)))
        written.append(dst)
    covered = set()
    for w in written:
        covered.update(range(w.off, w.off + w.n))
    row = out.off
    while row < out.off + out.n:
        if row in covered:
            row += 1
            continue
        start = row
        while row < out.off + out.n and row not in covered:
            row += 1
        body.append(K.Clear(out.rows(start - out.off, row - start)))
    return body


def _views_of(lay, nid):
    """A node and every view of it (transitively)."""
    out = [nid]
    for c in lay.g.successors(nid):
        if lay.is_view(c):
            out += _views_of(lay, c)
    return out


def _consumers_outside(lay, m, region, act):
    return any(c in act and c not in region for c in lay.g.successors(m))


class _Values:
    """The loaded scalars of one fused region (value symbols, loaded on first use)."""

    def __init__(self, lay):
        self.lay, self.sym, self.loads = lay, {}, []

    def __call__(self, a):
        if a not in self.sym:
            self.sym[a] = _dummy(self.lay.nodes[a].name)
            self.loads.append((self.sym[a], self.lay.ref(a)))
        return self.sym[a]


def _partial(n, j, val, partials):
    """d n / d arg_j as a scalar of loaded values: a number, a loaded symbol, or a new
    symbol ``<n>_d<j>`` whose expression joins ``partials``. n's own value is reused
    where its expression reappears (tanh' = 1 - tanh², sigmoid' = s (1 - s), ...)."""
    args = {ops.ARG[i]: val(a) for i, a in enumerate(n.args)}
    expr = n.op.expr.xreplace(args)
    part = n.op.partial(j).xreplace(args)
    if not expr.is_Symbol and not expr.is_number and part.has(expr):
        part = part.xreplace({expr: val(n.id)})
    if part.is_number or part.is_Symbol:
        return part
    p = _dummy(f"{n.name}_d{j}", "p")
    partials.append((p, part))
    return p


def _ew_jvp(lay, allm, act, dot, inject, targets, only_nd, fed=frozenset()):
    mem = [m for m in allm if m in act]
    region = set(allm)
    val = _Values(lay)
    col_loads, col_basis, dsym = [], [], {}
    partials, col_assigns, col_stores, notes = [], [], [], []

    def tangent_of(a):
        if a not in dsym:
            da = dot(a)
            if da is ZERO:
                return None
            dsym[a] = _dummy(f"{lay.nodes[a].name}_dot")
            (col_basis if isinstance(da, K.Basis) else col_loads).append((dsym[a], da))
        return dsym[a]

    for m in mem:
        n = lay.nodes[m]
        terms = []
        if m in inject:     # its tangent is what the caller put in (or the identity)
            own = tangent_of(m)
            if m not in fed:
                continue
            terms.append(own)   # plus what the other injections push into it
        for j, a in enumerate(n.args):
            d = dsym.get(a) if a in region else tangent_of(a)
            if d is not None:
                terms.append(_partial(n, j, val, partials) * d)
        if not terms:
            continue
        dsym[m] = _dummy(f"{n.name}_dot")
        col_assigns.append((dsym[m], sp.Add(*terms)))
        notes.append((dsym[m], _describe(lay, m)))
        if m in targets or _consumers_outside(lay, m, region, act):
            col_stores.append((lay.ref(m, "vd"), dsym[m], False))
    if not col_stores:
        return None
    diagonal = bool(col_basis) and not col_loads and only_nd and \
        all(r.buf == "nd" for r, _, _ in col_stores)
    return _ew(lay.nodes[allm[0]].shape[0], val.loads, _cse(partials), (), col_loads,
               col_basis, col_assigns, col_stores, notes, diagonal)


# ----------------------------------------------------------------------------- vjp
def vjp(lay: Layout, sched: tuple[Block, ...], name: str, spec: CotangentSpec) -> K.Kernel:
    """A vjp kernel (arguments th, v, vb, thb; see ``CotangentSpec``)."""
    src = set()
    if "params" in spec.wrt:
        src |= {b.node for b in lay.param_blocks}
    if "state" in spec.wrt:
        src |= set(lay.state_ids)
    if "input" in spec.wrt:
        src |= {x.id for x in lay.inputs}
    stop = set(spec.stop)
    act = lay.live_from(src | stop) & lay.needed_for(spec.seeds, stop, derivative=True)
    wrt = [w for w in ("params", "state", "input") if w in spec.wrt]
    k = K.Kernel(name, ("th", "v", "vb", "thb"),
                 f"Cotangents of {wrt} from those of {lay.names(spec.seeds)}: vb holds the "
                 f"seeds and zeros; "
                 f"{'the recurrent blocks of thb are overwritten' if spec.overwrite else 'thb accumulates'}"
                 f"{'; ' + ', '.join(lay.names(sorted(spec.skip))) + ' are left alone (the products they enter keep their cotangents in vb)' if spec.skip else ''}.")

    def bar(a):
        if a not in act or lay.nodes[a].kind == "const" or a in spec.skip:
            return ZERO
        return lay.ref(a, "vb")

    for block in reversed(sched):
        if not any(m in act for m in block.nodes):
            continue
        if block.fused:
            st = _ew_vjp(lay, block.nodes, act, bar, set(spec.seeds), stop)
            if st is not None:
                k.body.append(st)
            continue
        n = lay.nodes[block.key]
        if n.id in stop:
            continue       # its cotangent stays in vb, held fixed
        args = [lay.ref(a) for a in n.args]
        out_bar = lay.ref(n.id, "vb")
        parts = [st.transpose() for j, a in enumerate(n.args) if bar(a) is not ZERO
                 for st in n.op.jvp(j, out_bar, args, bar(a))]
        if parts:
            k.body.append(_comment(lay, n.id, "pull back through "))
            k.body.extend(parts)
    if spec.overwrite:
        k.body = _overwrite_params(lay, k.body, spec.skip)
    return k


def _overwrite_params(lay, body, skip=frozenset()):
    """Rewrite a vjp body so that it assigns, rather than adds to, each recurrent
    parameter block's cotangent (but those of ``skip``): the first write of a whole block
    assigns; a block first written in part, or by an elementwise loop, is cleared first;
    unwritten blocks are cleared."""
    blocks = {b.off: b for b in lay.rec_blocks if b.node not in skip}

    def block(ref):
        if ref.buf != "thb":
            return None
        return next((b for off, b in blocks.items() if off <= ref.off < off + b.size), None)

    written, out = set(), []
    for st in body:
        for r in st.writes():
            b = block(r)
            if b is None or b.off in written:
                continue
            written.add(b.off)
            if hasattr(st, "acc") and r.off == b.off and r.size == b.size:
                st = replace(st, acc=False)
            else:
                out.append(K.Clear(K.Ref("thb", b.off, b.size, 0, b.name, b.off, b.size,
                                         "bar")))
        out.append(st)
    missing = [K.Clear(K.Ref("thb", b.off, b.size, 0, b.name, b.off, b.size, "bar"))
               for off, b in blocks.items() if off not in written]
    return missing + out


def _ew_vjp(lay, allm, act, bar, seeds, stop=frozenset()):
    mem = [m for m in allm if m in act]
    region = set(allm)
    val = _Values(lay)
    loads, partials, body, stores, notes = [], [], [], [], []
    contrib: dict[int, list] = {}
    loaded = set()
    for m in mem:   # cotangent arriving from outside the region (or a seed)
        if m in seeds or _consumers_outside(lay, m, region, act):
            s = _dummy(f"{lay.nodes[m].name}_bar")
            loads.append((s, lay.ref(m, "vb")))
            contrib[m] = [s]
            loaded.add(m)
    ext_order = []
    for m in reversed(mem):
        n = lay.nodes[m]
        if m not in contrib:
            continue
        b = _dummy(f"{n.name}_bar")
        body.append((b, sp.Add(*contrib[m])))
        notes.append((b, _describe(lay, m)))
        if m in stop:       # held fixed: its cotangent is stored (unless it is just
            if len(contrib[m]) > 1 or m not in loaded:     # what vb holds), not pulled
                stores.append((lay.ref(m, "vb"), b, False))  # back
            continue
        for j, a in enumerate(n.args):
            if a in region:
                if a not in act:
                    continue
            elif bar(a) is ZERO:
                continue
            if a not in region and a not in contrib:
                ext_order.append(a)
            contrib.setdefault(a, []).append(_partial(n, j, val, partials) * b)
    for a in ext_order:
        s = _dummy(f"{lay.nodes[a].name}_bar")
        body.append((s, sp.Add(*contrib[a])))
        stores.append((bar(a), s, True))
    if not stores:
        return None
    return _ew(lay.nodes[allm[0]].shape[0], loads + val.loads, _cse(partials) + tuple(body),
               stores, notes=notes)


def _ew(n, loads, assigns, stores, col_loads=(), col_basis=(), col_assigns=(),
        col_stores=(), notes=(), diagonal=False) -> K.Ew:
    """An Ew statement without the loads nothing uses and without copy assignments
    (``a = b`` of one symbol to another is substituted away)."""
    assigns, col_assigns = list(assigns), list(col_assigns)
    stores, col_stores = list(stores), list(col_stores)
    alias = {}
    for seq in (assigns, col_assigns):
        kept = []
        for s, e in seq:
            e = sp.sympify(e).xreplace(alias)
            if isinstance(e, sp.Dummy) or e.is_Symbol:
                alias[s] = e
            else:
                kept.append((s, e))
        seq[:] = kept
    stores = [(r, alias.get(s, s), acc) for r, s, acc in stores]
    col_stores = [(r, alias.get(s, s), acc) for r, s, acc in col_stores]
    used = set()
    for _, e in assigns + col_assigns:
        used |= e.free_symbols
    used |= {s for _, s, _ in stores + col_stores}
    notes = tuple((s, t) for s, t in notes if s not in alias)
    return K.Ew(n, tuple((s, r) for s, r in loads if s in used), tuple(assigns),
                tuple(stores), tuple((s, r) for s, r in col_loads if s in used),
                tuple((s, b) for s, b in col_basis if s in used), tuple(col_assigns),
                tuple(col_stores), notes, diagonal)


def _cse(assigns):
    """One sympy cse over a region's independent scalar assignments.

    Every expression must depend only on loaded symbols (never on another assignment's
    target), so hoisting common subexpressions to the front is always valid."""
    if not assigns:
        return ()
    syms = [s for s, _ in assigns]
    exprs = [sp.sympify(e) for _, e in assigns]
    temps = (_dummy(f"c{k}", "p") for k in itertools.count())
    reps, red = sp.cse(exprs, symbols=temps, order="none")
    return tuple(reps) + tuple(zip(syms, red, strict=True))


# -------------------------------------------------------------- moving blocks around
def gather(lay: Layout, name: str, nodes, kind="v", matrix=False) -> K.Kernel:
    """dst[pieces] = the rows of nodes: values (arguments (v, dst)) or tangents after a
    jvp (kind "vd", arguments (sd, vd, nd, dst); ``matrix``: K columns)."""
    args = ("v", "dst") if kind == "v" else ("sd", "vd", "nd", "dst")
    new_of = {lay.cell.updates[st.id]: st for st in lay.states}
    k = K.Kernel(name, args, f"Gathers {lay.names(nodes)} into one block.", matrix)
    off = 0
    for nid in nodes:
        r = lay.ref(nid, kind)
        if kind == "vd" and nid in new_of:    # a jvp leaves new states' tangents in nd
            st = new_of[nid]
            so = lay.state_off[st.id]
            r = K.Ref("nd", so, r.n, 0, st.name, so, st.shape[0], "new_dot")
        k.body.append(K.Copy(K.Ref("dst", off, r.size), r))
        off += r.size
    return k


def scatter_add(lay: Layout, name: str, nodes, kind="vb", clear=False) -> K.Kernel:
    """dst[rows of nodes] (+)= src[pieces]: cotangents (kind "vb", arguments (src, vb,
    thb)) or tangents (kind "vd", arguments (src, vd, nd, thd)); parameter nodes have
    their rows in thb / thd. ``clear``: assign instead of adding."""
    bufs = {"vb": ("vb", "thb"), "vd": ("vd", "nd", "thd")}[kind]
    k = K.Kernel(name, ("src",) + bufs,
                 f"{'Writes' if clear else 'Adds'} a block into the rows of "
                 f"{lay.names(nodes)}.")
    off = 0
    for nid in nodes:
        r = lay.ref(nid, kind)
        k.body.append(K.Copy(r, K.Ref("src", off, r.size), not clear))
        off += r.size
    return k
