"""Checking generated derivatives against finite differences (and backends against
each other), for any cell: ``rg.check_derivatives(cell)``.

Each check is one random direction (autograd's trick, cheap at any size): the jvp
along a direction against the central difference of the step function, and the vjp
through the inner-product identity ⟨u, J w⟩ = ⟨Jᵀ u, w⟩.
"""
from __future__ import annotations

import numpy as np

from . import codegen
from .autodiff import Program
from .backends import get_backend
from .graph import Cell, init_param


class KernelSet:
    """The primitives of one cell compiled on one backend, callable from Python:
    ``step(th, s, x)`` and the jvp/vjp of (new state, outputs) w.r.t. (state, θ, x)."""

    def __init__(self, cell: Cell, backend="numpy"):
        self.cell = cell
        self.p = p = Program(cell)
        targets = p.new_state + p.output_ids
        kernels = [
            p.forward(),
            p.gather("gather_new", p.new_state),
            p.jvp("jvp_state", targets=targets),
            p.jvp("jvp_dense", params="dense", targets=targets),
            p.jvp("jvp_input", seeds=[x.id for x in p.inputs], targets=targets),
            p.jvp("jvp_matrix", params="dense", targets=targets, matrix=True),
            p.vjp("vjp_all", targets, ("params", "state", "input")),
            p.gather("targets_dot", targets, "vd"),
            p.gather("targets_dot_m", targets, "vd", matrix=True),
        ]
        if p.n_rec:
            kernels.append(p.jvp("jvp_basis", params="basis", targets=p.new_state,
                                 matrix=True))
        self.backend = get_backend(backend)
        src = codegen.assemble(f"derivative checks for cell '{cell.name}'", self.backend,
                               p.constants(), kernels)
        self.mod, self.path = codegen.load(src, self.backend, f"{cell.name}_checks")
        self.rows = [(p.loc[t].off, p.loc[t].n) for t in targets]

    def random_point(self, rng):
        p = self.p
        th = np.empty(p.n_params)
        for b in p.param_blocks:
            th[b.off:b.off + b.size] = init_param(self.cell.nodes[b.node], rng).ravel() + \
                0.1 * rng.standard_normal(b.size)
        s = 0.5 * rng.standard_normal(p.n_state)
        x = rng.standard_normal(p.n_in)
        return th, s, x

    def step(self, th, s, x):
        """(new state ++ outputs, all values) of one step."""
        p = self.p
        v = np.zeros(p.n_values)
        v[:p.n_state] = s
        v[p.n_state:p.n_state + p.n_in] = x
        self.mod.forward(th, v)
        return self._targets(v), v

    def _targets(self, buf):
        return np.concatenate([buf[o:o + n] for o, n in self.rows])

    def jvp(self, kernel, th, v, thd, sd, K=None):
        """Call a jvp kernel; returns the tangents of (new state, outputs)."""
        p = self.p
        shape = (p.n_values,) if K is None else (p.n_values, K)
        vd, nd = np.zeros(shape), np.zeros((p.n_state,) + shape[1:])
        getattr(self.mod, kernel)(th, v, thd, sd, vd, nd)
        out = np.zeros((sum(n for _, n in self.rows),) + shape[1:])
        (self.mod.targets_dot if K is None else self.mod.targets_dot_m)(sd, vd, nd, out)
        return out


def _rel(a, b):
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12)
    return float(np.max(np.abs(a - b)) / scale)


def check_derivatives(cell: Cell, backend="numpy", seed: int = 0, eps: float = 1e-6,
                      kernels: KernelSet | None = None) -> dict:
    """Relative errors of every generated derivative against central differences:
    jvp w.r.t. the state, the input and the parameters (one and K columns), the identity
    parameter tangent (RTRL's), and the vjp (inner-product identity)."""
    ks = kernels or KernelSet(cell, backend)
    p, m = ks.p, ks.mod
    rng = np.random.default_rng(seed)
    th, s, x = ks.random_point(rng)
    _, v = ks.step(th, s, x)
    S, X, R = p.n_state, p.n_in, p.n_rec
    err = {}

    def fd(dth, ds, dx):
        return (ks.step(th + eps * dth, s + eps * ds, x + eps * dx)[0]
                - ks.step(th - eps * dth, s - eps * ds, x - eps * dx)[0]) / (2 * eps)

    zth, zs, zx = np.zeros_like(th), np.zeros(S), np.zeros(X)
    # jvp w.r.t. the previous state
    ds = rng.standard_normal(S)
    err["jvp_state"] = _rel(ks.jvp("jvp_state", th, v, np.zeros(max(R, 1)), ds),
                            fd(zth, ds, zx))
    # jvp w.r.t. the input (its tangent rows are the caller's, in vd)
    dx = rng.standard_normal(X)
    vd, nd, sd0 = np.zeros(p.n_values), np.zeros(S), np.zeros(S)
    vd[S:S + X] = dx
    m.jvp_input(th, v, np.zeros(max(R, 1)), sd0, vd, nd)
    out = np.zeros(sum(n for _, n in ks.rows))
    m.targets_dot(sd0, vd, nd, out)
    err["jvp_input"] = _rel(out, fd(zth, zs, dx))
    if R:
        # jvp w.r.t. the recurrent parameters (dense tangent) plus the state
        dr = rng.standard_normal(R)
        dth = np.zeros_like(th)
        dth[:R] = dr
        err["jvp_params"] = _rel(ks.jvp("jvp_dense", th, v, dr, ds), fd(dth, ds, zx))
        # K columns at once
        K = 3
        D = rng.standard_normal((R, K))
        Ds = rng.standard_normal((S, K))
        got = ks.jvp("jvp_matrix", th, v, D, Ds, K)
        want = np.stack([fd(np.concatenate([D[:, c], np.zeros(p.n_params - R)]), Ds[:, c],
                            zx) for c in range(K)], 1)
        err["jvp_matrix"] = _rel(got, want)
        # the identity tangent: G = dS/dθ, checked along dr
        G = np.zeros((S, R))
        m.jvp_basis(th, v, np.zeros((1, 1)), np.zeros((S, R)), np.zeros((p.n_values, R)), G)
        err["jvp_basis"] = _rel(G @ dr, fd(dth, zs, zx)[:S])
    # vjp: <u, J w> = <J^T u, w>
    u = rng.standard_normal(sum(n for _, n in ks.rows))
    vb = np.zeros(p.n_values)
    off = 0
    for o, n in ks.rows:
        vb[o:o + n] += u[off:off + n]
        off += n
    thb = np.zeros(p.n_params)
    m.vjp_all(th, v, vb, thb)
    wth = rng.standard_normal(p.n_params)
    ws, wx = rng.standard_normal(S), rng.standard_normal(X)
    lhs = float(u @ fd(wth, ws, wx))
    rhs = float(thb @ wth + vb[:S] @ ws + vb[S:S + X] @ wx)
    err["vjp"] = abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-12)
    return err


def compare_backends(cell: Cell, seed: int = 0, a: KernelSet | None = None,
                     b: KernelSet | None = None) -> float:
    """Largest relative difference between the numba and numpy kernels of a cell
    (values, tangents with one and K columns, the identity tangent, cotangents)."""
    a = a or KernelSet(cell, "numba")
    b = b or KernelSet(cell, "numpy")
    p = a.p
    rng = np.random.default_rng(seed)
    th, s, x = a.random_point(rng)
    (_, va), (_, vb_) = a.step(th, s, x), b.step(th, s, x)
    worst = _rel(va, vb_)
    S, R = p.n_state, p.n_rec
    args = [("jvp_state", np.zeros(max(R, 1)), (p.n_values,)),
            ("jvp_dense", rng.standard_normal(max(R, 1)), (p.n_values,)),
            ("jvp_matrix", rng.standard_normal((max(R, 1), 3)), (p.n_values, 3))]
    if R:
        args.append(("jvp_basis", np.zeros((1, 1)), (p.n_values, R)))
    for name, thd, shape in args:
        if name != "jvp_state" and not R:
            continue
        seed_rows = rng.standard_normal((S,) + shape[1:])
        outs = []
        for ks in (a, b):
            if name == "jvp_basis":
                nd = np.zeros((S, R))
                ks.mod.jvp_basis(th, va, thd, seed_rows, np.zeros(shape), nd)
                outs.append(nd)
            else:
                outs.append(ks.jvp(name, th, va, thd, seed_rows,
                                   None if len(shape) == 1 else shape[1]))
        worst = max(worst, _rel(*outs))
    u = rng.standard_normal(p.n_values)
    res = []
    for ks in (a, b):
        vb = np.zeros(p.n_values)
        for o, n in ks.rows:
            vb[o:o + n] = u[o:o + n]
        thb = np.zeros(p.n_params)
        ks.mod.vjp_all(th, va, vb, thb)
        res.append(np.concatenate([thb, vb[:S + p.n_in]]))
    return max(worst, _rel(*res))
