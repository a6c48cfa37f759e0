"""Sparse influence estimators: SnAp-n (Menick et al. 2021), e-prop / RFLO (Bellec et
al. 2020; Murray 2019) and layer-rtrl (exact learning per layer, Zucchet et al. 2023).
All keep the influence J = ds_t/dθ only on a fixed mask M, stored compactly, and update
it as

    J_t = M ⊙ (D_t J_{t-1} + I_t)

* **SnAp-n**: D_t is the whole ∂s_t/∂s_{t-1}; M is where θ reaches s within n steps
  (``sparsity.snap_mask``). SnAp-1 keeps, for a weight of unit i, unit i's own state
  components (``unit_coupling``), and its D block includes the self-recurrent weight's
  term.
* **e-prop**: D_t is D̂_t, the paths from s_{t-1} to s_t through no recurrent parameter
  product (a leaky cell's 1 - α, the LSTM's forget path); M is the pattern of I closed
  under D̂ (the eligibility traces). ``rflo`` is the same on rate cells.
* **layer-rtrl**: D_t whole; M is I on the recurrent components each parameter enters
  (``Analysis.components``, a stacked cell's layers), closed under D's diagonal blocks:
  exact RTRL inside each component. Its learning signal is per component (one backprop
  each, the component's own new states held apart): the same-step error through the
  components above.

The immediate Jacobian is exact and never formed densely: every recurrent parameter
enters one sum z (a preactivation) as a product's matrix row W[q, :] (I[:, W[q, c]] =
∂s_t/∂z_q · a_c), an elementwise vector (∂s_t/∂z_q · ∂m_q/∂u_q) or a bias
(∂s_t/∂z_q). ∂s_t/∂z comes from one jvp with the identity injected at the sums, as in
KF-RTRL.

J is stored as *runs*: consecutive parameters (a matrix row, or one vector entry) that
share their mask rows R; a run is the |R| x k block J[R, θ0:θ0+k]. The run table is a
set of module constants; ``sparse_update`` walks it.

The gradient of step t is the exact immediate ∂l_t/∂θ plus L_t · (J_t - I_t), with the
learning signal L_t = ∂l_t/∂s_t (``feedback="symmetric"``). With ``feedback="random"``
(random e-prop, Murray's RFLO with random feedback) L_t = B ∂l_t/∂y_t for a fixed random
B (S x NOUT, seed ``feedback_seed``) and the recurrent gradient is L_t · J_t; the
readout's gradient stays exact.
"""
# ruff: noqa: F821  (the module builder checks these names against the generated module)
from __future__ import annotations

import numpy as np
import scipy.sparse as sps

from .. import sparsity
from ..autodiff import ParamTangents
from ..codegen import Template
from ..errors import NotApplicable
from ..analysis import NO_RECURRENT
from . import common
from .base import EstimatorSpec, Option, positive_int
from .names import Argument, parse_level

FEEDBACKS = ("symmetric", "random")
# how a run's immediate Jacobian is formed: ∂s/∂z_q times a_c (a product's input),
# times ∂m_q/∂u_q (an elementwise parameter), or times 1 (a bias)
RUN_KINDS = {"matrix": 0, "elementwise": 1, "bias": 2}


def sparse_step(th, s, x, y, w, g, rng, *, J, v, vd, vb, ybar, Dm, Dc, seed, vz, DZ, thd,
                vf, Ls, T, gb, vs, Lt, Lb):
    """One step for one stream: J ← M ⊙ (D J + I) on the mask, and the gradient."""
    if RANDOM_FEEDBACK:
        rg_zero(gb)
        loss = forward_and_backprop(th, s, x, y, w, v, vb, gb, ybar)
        rg_axpy(g[NR:NP], 1.0, gb[NR:NP])      # the readout's gradient is exact
        rg_matvec(Ls, FEEDBACK, ybar)          # learning signal B ∂l/∂y
    else:
        loss = forward_and_backprop(th, s, x, y, w, v, vb, g, ybar)
        if LAYERED:
            # each component's learning signal ∂l_t/∂s_K,t: its own new states held
            # apart, the loss's paths through the components above it followed
            layer_signals(th, v, vb, vs, g, Ls, Lt, Lb)
        else:
            # learning signal ∂l_t/∂s_t, the new states held apart: the loss's backprop
            # stopped at the new states (vs[:S] keeps ∂l_t/∂s_{t-1} along the paths
            # that bypass s_t)
            rg_zero(vs)
            rg_copy(vs[OUT_OFF:OUT_OFF + NOUT], vb[OUT_OFF:OUT_OFF + NOUT])
            vjp_signal(th, v, vs, g)
            gather_new(vs, Ls)
    # ∂s_t/∂z at the sums the recurrent parameters enter
    jvp_z_m(th, v, vz, DZ)
    if COMPRESSED_D:
        # D_t on the entries the runs read: D̂ and the product inputs' Â from one jvp
        # per column colour, then Σ_z ∂s/∂z_q W[q, c] Â[c, j] for the products
        for j in range(S):
            seed[j, COLOR[j]] = 1.0
        jvp_D(th, v, seed, vd, Dc)
        needed_D(Dm, Dc, vd, seed, DZ, th)
    else:
        # D_t (e-prop: D̂_t) whole: the jvp with the identity as s_{t-1}'s tangent
        for i in range(S):
            seed[i, i] = 1.0
        jvp_D(th, v, seed, vd, Dm)
    if ELEMENTWISE_PARAMS:
        # ∂m/∂u of the elementwise parameters: a jvp with their tangent set to one (a
        # node m that is a new state keeps its tangent in the new-state part, vf[NV:])
        for r in range(ELEMENTWISE_BLOCKS.shape[0] // 2):
            thd[ELEMENTWISE_BLOCKS[2 * r]:ELEMENTWISE_BLOCKS[2 * r + 1]] = 1.0
        jvp_factors(th, v, thd, vf[0:NV], vf[NV:NV + S])
    sparse_update(J, Dm, DZ, v, vf, Ls, g, T, vs)
    gather_new(v, s)
    return loss


def needed_D(Dm, Dc, vd, seed, DZ, th):
    """D[i, j] on the needed entries: D̂[i, j] (column j's colour of the compressed jvp)
    plus, for every product z = W a the entry reaches, ∂s_i/∂z_q W[q, c] Â[c, j]."""
    for e in range(NK):
        i, j = K_I[e], K_J[e]
        col = COLOR[j]
        d = Dc[i, col] if K_HAT[e] else 0.0
        for t in range(K_PTR[e], K_PTR[e + 1]):
            a = seed[T_A[t], col] if T_SEED[t] else vd[T_A[t], col]
            d += DZ[i, T_Z[t]] * th[T_W[t]] * a
        Dm[i, j] = d


def sparse_update(J, Dm, DZ, v, vf, Ls, g, T, vs):
    """Every run: T = D[R, R] J_run; the gradient; J_run = T + ∂s/∂z_q[R] ⊗ factor."""
    for run in range(NRUNS):
        r0, r1 = RUN_ROWS[run], RUN_ROWS[run + 1]
        nr = r1 - r0
        t0, k, j0 = RUN_THETA[run], RUN_K[run], RUN_J[run]
        zq, kind, f0 = RUN_Z[run], RUN_KIND[run], RUN_FACTOR[run]
        if BYPASS:
            # (∂l_t/∂s_{t-1} past s_t) J_{t-1}: the loss's paths that bypass the new state
            for b in range(nr):
                lb = vs[ROWS[r0 + b]]
                if lb != 0.0:
                    for c in range(k):
                        g[t0 + c] += lb * J[j0 + b * k + c]
        # T = D[R, R] J_{t-1}[R, θ0:θ0+k], row by row (contiguous in c)
        for a in range(nr):
            ia = ROWS[r0 + a]
            for c in range(k):
                T[a * k + c] = 0.0
            for b in range(nr):
                d = Dm[ia, ROWS[r0 + b]]
                if d != 0.0:
                    for c in range(k):
                        T[a * k + c] += d * J[j0 + b * k + c]
        if not RANDOM_FEEDBACK:
            # L_t · (J_t - I_t): the immediate part is already in g, exactly
            for a in range(nr):
                la = Ls[ROWS[r0 + a]]
                for c in range(k):
                    g[t0 + c] += la * T[a * k + c]
        # J_t = T + I_t, I_t[R, θ] = ∂s/∂z_q[R] times the run's factor: the product's
        # input a (kind 0), ∂m_q/∂u_q (kind 1) or 1 (a bias, kind 2)
        for a in range(nr):
            dz = DZ[ROWS[r0 + a], zq]
            row = j0 + a * k
            if kind == 0:
                for c in range(k):
                    J[row + c] = T[a * k + c] + dz * v[f0 + c]
            else:
                f = vf[f0] if kind == 1 else 1.0
                for c in range(k):
                    J[row + c] = T[a * k + c] + dz * f
        if RANDOM_FEEDBACK:
            for a in range(nr):
                la = Ls[ROWS[r0 + a]]
                for c in range(k):
                    g[t0 + c] += la * J[j0 + a * k + c]


class SparseInfluence(EstimatorSpec):
    """J on a fixed mask (see the module docstring); subclasses choose D and the mask."""

    cut_products = False      # e-prop: D̂ drops the paths through recurrent products

    options = (Option("feedback", "the learning signal ∂l/∂s (symmetric, the default) or a "
                                  "fixed random matrix times ∂l/∂y (random)", read=str,
                      choices=FEEDBACKS),
               Option("feedback_seed", "the seed of the random feedback matrix", read=None))

    def __init__(self, lay, sched, analysis, feedback="symmetric", feedback_seed=0,
                 **opts):
        super().__init__(lay, sched, analysis, **opts)
        if feedback not in FEEDBACKS:
            raise ValueError(f"{self.name}: feedback must be one of {FEEDBACKS}, got "
                             f"{feedback!r}")
        self.feedback = feedback
        self.feedback_seed = positive_int(feedback_seed, f"{self.name}: feedback_seed", 0)
        self.analysis = analysis
        if not lay.rec_blocks:
            raise NotApplicable(f"{self.name} does not apply to cell '{lay.cell.name}': "
                                f"{NO_RECURRENT}")
        self.terms = entry_terms(lay, analysis, self.name)
        self.products = [t.node for t in self.terms if t.kind == "matrix"]
        # e-prop's D̂ drops the paths through the recurrent products; its I_t is exact,
        # those paths within the step included (a lower layer's weight reaching the
        # layer above through the product that reads its new value)
        D, I, self.sums, self.zcol, self.weights = influence_patterns(
            lay, self.terms, self.products if self.cut_products else ())
        self.nz = len(self.weights)
        self.mask = self.make_mask(D, I)
        self.runs = self._runs()
        self.plan = self._needed_D()
        self.bypass = self._bypass()

    def flops(self):
        """base + H I (S columns: D_t) + Σ_runs 2 |R| k (|R| + 2): each run's rows of
        D_t J_{t-1}, its immediate term and its share of the gradient."""
        return self.base_flops() + self.push_flops(self.lay.n_state) + \
            sum(2 * len(rows) * k * (len(rows) + 2) for rows, _, k, *_ in self.runs)

    def _bypass(self) -> bool:
        """Whether the loss reads s_{t-1} along a path that avoids the new states (with
        symmetric feedback). The learning signal ∂l_t/∂s_t has a backprop of its own
        (``vjp_signal``), because the loss's backprop does not hold the new states
        apart: a new state inside a fused loop (read by ``tanh(h_new)``) keeps its
        cotangent in a register, and one that feeds another (a stacked cell's lower
        layer) would count the upper layer's path twice."""
        if self.feedback == "random":
            return False
        lay = self.lay
        new = set(lay.new_state)
        out = lay.loss_output_id
        bypass = any(st in lay.needed_for([out], new) and st not in new
                     for st in lay.state_ids)
        feeds = any(a != b and a in lay.needed_for([b]) for a in new for b in new)
        views = [lay.nodes[a].name for a in new if lay.is_view(a)]
        if views and (bypass or feeds):
            raise NotApplicable(
                f"{self.name} does not apply to cell '{lay.cell.name}': its learning "
                f"signal ∂l_t/∂s_t holds each new state fixed, and the new state "
                f"'{views[0]}' is a slice of another node; give it a node of its own "
                f"(e.g. 1.0 * {views[0]}) or use rtrl, uoro or bptt")
        return bypass

    def make_mask(self, D, I):
        raise NotImplementedError

    def _read_rows(self) -> np.ndarray:
        """The state rows random feedback reaches: those of the new states the loss reads
        other than through another new state (a LIF cell's spikes z, not its membrane v;
        an LSTM's h, not c), as symmetric feedback's ∂l_t/∂s_t, which holds the new states
        apart, is zero on the others (Bellec et al. feed the error back to the units'
        observable output only)."""
        lay = self.lay
        new = lay.new_state
        read = lay.needed_for([lay.loss_output_id], stop=new, derivative=True)
        rows = np.zeros(lay.n_state, dtype=bool)
        for st, nid in zip(lay.states, new, strict=True):
            off = lay.state_off[st.id]
            rows[off:off + st.shape[0]] = nid in read
        return rows

    def _runs(self):
        """The run table: per run its rows, first parameter, length, J offset, sum
        column, factor kind and factor offset. A run's rows are its sum entry's column
        of the mask (every parameter entering z_q shares it). Also keeps the runs'
        distinct row sets, each with its base (``Pattern.column_sets``), for
        ``_needed_D``: ``row_sets``."""
        lay = self.lay
        sets, which, base = self.mask.column_sets()
        used = sorted(set(which[zq] for t in self.terms
                          for zq in range(self.zcol[t.sum],
                                          self.zcol[t.sum] + lay.nodes[t.param_id].shape[0])))
        self.row_sets = [(sets[i], sets[base[i]]) for i in used if len(sets[i])]
        runs, joff = [], 0
        for t in self.terms:
            blk = lay.block_of(t.param_id)
            m = lay.nodes[t.param_id].shape[0]
            k = blk.size // m if t.kind == "matrix" else 1
            for q in range(m):
                zq = self.zcol[t.sum] + q
                rows = sets[which[zq]]
                factor = {"matrix": lambda: lay.loc[t.input_id].off,
                          "elementwise": lambda: self._factor(t.node) + q,
                          "bias": lambda: 0}[t.kind]()
                runs.append((rows, blk.off + q * k, k, joff, zq, RUN_KINDS[t.kind],
                             factor))
                joff += len(rows) * k
        self.nj = joff
        return runs

    def _factor(self, node) -> int:
        """Where ``jvp_factors`` leaves an elementwise node's tangent in vf: its rows of
        the values' tangents, or (a new state's) of the new state's, after them."""
        ref = self.lay.ref(node, "vd")
        return ref.off if ref.buf == "vd" else self.lay.n_values + ref.off

    def _needed_D(self):
        """How ``needed_D`` forms D_t: None where D_t is cheaper whole, else the jvp's
        column colouring (``NCOLORS``, ``COLOR``); its other tables are built when the
        module is (``_needed_tables``). D = D̂ + Σ_z ∂s/∂z · W_z · Â_z, where D̂ and Â_z
        (the product inputs' derivatives) follow the paths through no recurrent product:
        they are structurally sparse, so one jvp per column colour recovers them; the
        products' part is summed on the entries the runs read: for entry (i, j) and each
        product, every q with ∂s_i/∂z_q and every c with Â[c, j]. Those terms are
        counted without listing them where the runs' row sets are disjoint (SnAp-1, and a
        saturated mask, whose one set is every row)."""
        lay, S = self.lay, self.lay.n_state
        products = [t for t in self.terms if t.kind == "matrix"]
        for t in products:
            if lay.ref(t.input_id, "vd").buf not in ("sd", "vd"):
                return None
        cut = [t.node for t in products]
        hat = sparsity.patterns(lay, lay.state_ids, lay.new_state, cut).tocsr()
        A = {t.node: sparsity.patterns(lay, lay.state_ids, [t.input_id], cut).tocsc()
             for t in products}
        stacked = sps.vstack([hat] + list(A.values()))
        colors = sparsity.color_columns(stacked)
        if self.cut_products:
            products = []
        dz = sparsity.patterns(lay, self.sums, lay.new_state).tocsr()
        blocks = []
        for t in products:
            m, k = lay.nodes[t.param_id].shape
            z0 = self.zcol[t.sum]
            dzt = sps.csr_matrix(dz[:, z0:z0 + m])
            dzt.sort_indices()
            A[t.node].sort_indices()
            blocks.append((t, z0, k, dzt, A[t.node]))
        sets = [R for R, _ in self.row_sets]

        def terms(R):       # the terms of the entries R x R
            return sum(int(np.diff(dzt.indptr)[R].sum()) * int(np.diff(At.indptr)[R].sum())
                       for _, _, _, dzt, At in blocks)

        per_set = [terms(R) for R in sets]
        if any(n > 4 * S * S for n in per_set):
            return None       # D_t whole is cheaper (a saturated mask)
        self._D_parts = (hat, blocks)
        rows = np.concatenate(sets) if sets else np.zeros(0, np.int64)
        if len(np.unique(rows)) < len(rows):            # overlapping sets: list them
            I, J = self._entries()
            total = sum(int((np.diff(dzt.indptr)[I] * np.diff(At.indptr)[J]).sum())
                        for _, _, _, dzt, At in blocks)
        else:
            total = sum(per_set)
        if total > 4 * S * S:
            return None
        return {"NCOLORS": int(colors.max(initial=-1)) + 1,
                "COLOR": np.asarray(colors, dtype=np.int64)}

    def _entries(self) -> tuple:
        """(I, J): the entries of D_t the runs read, the union of every run row set's
        R x R, in (i, j) order. A set is its base U (the rows its group of rectangles
        covers, shared by many sets: a stacked cell's upper layers) and its own rows X,
        so R x R is U x U, listed once per base, and U x X, X x U and X x X."""
        S = self.lay.n_state
        bases, own, codes = {}, {}, []
        for R, U in self.row_sets:
            bases[U.tobytes()] = U
            X = np.setdiff1d(R, U, assume_unique=True)
            own.setdefault(U.tobytes(), []).append(X)
            codes.append(np.add.outer(X * S, X).ravel())
        for key, U in bases.items():        # ∪_i U x X_i = U x ∪_i X_i
            X = np.unique(np.concatenate(own[key]))
            codes += [np.add.outer(U * S, U).ravel(), np.add.outer(U * S, X).ravel(),
                      np.add.outer(X * S, U).ravel()]
        codes = np.sort(np.concatenate(codes) if codes else np.zeros(0, np.int64))
        if len(codes):
            codes = codes[np.concatenate([[True], codes[1:] != codes[:-1]])]
        return codes // S, codes % S

    def _needed_tables(self) -> dict:
        """The entry and term tables of ``needed_D``: each entry's terms, product by
        product, q then c ascending (array operations, not a loop per entry)."""
        lay = self.lay
        hat, blocks = self._D_parts
        I, J = self._entries()
        parts = []
        for b, (t, z0, k, dzt, At) in enumerate(blocks):
            nq, na = np.diff(dzt.indptr)[I], np.diff(At.indptr)[J]
            sizes = nq * na
            e = np.repeat(np.arange(len(I)), sizes)
            pos = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            q = dzt.indices[dzt.indptr[I[e]] + pos // na[e]]
            c = At.indices[At.indptr[J[e]] + pos % na[e]]
            ref = lay.ref(t.input_id, "vd")
            parts.append((e, np.full(len(e), b), z0 + q,
                          lay.block_of(t.param_id).off + q * k + c, ref.off + c,
                          np.full(len(e), int(ref.buf == "sd"))))
        e, b, T_Z, T_W, T_A, T_SEED = (np.concatenate([p[i] for p in parts]) if parts else
                                       np.zeros(0, np.int64) for i in range(6))
        order = np.lexsort((b, e))       # stable: within a block, the order built
        ptr = np.concatenate([[0], np.cumsum(np.bincount(e, minlength=len(I)))])
        ints = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
        return {"NK": len(I), "K_I": ints(I), "K_J": ints(J),
                "K_HAT": ints(np.asarray(hat[I, J]).ravel() if len(I) else []),
                "K_PTR": ints(ptr), "T_Z": ints(T_Z[order]), "T_W": ints(T_W[order]),
                "T_A": ints(T_A[order]), "T_SEED": ints(T_SEED[order])}

    # -- the analysis' figures
    @property
    def kept(self) -> int:
        """Influence entries kept: each parameter entering z_q keeps its column's."""
        return self.mask.count(self.weights)

    @property
    def label(self) -> str:
        """The name as the user writes it (snap-2, e-prop)."""
        return self.name

    def describe(self):
        fb = "" if self.feedback == "symmetric" else ", random feedback"
        return f"{self.label}{fb}"

    def kernels(self):
        ks = [self.D_kernel()]
        if self.feedback == "symmetric":
            ks.append(self.vjp("vjp_signal", [self.lay.loss_output_id],
                               wrt=("state",) if self.bypass else (),
                               stop=self.lay.new_state))
        # ∂s_t/∂z at every sum at once: a sum that another feeds (Cho's GRU: z_h =
        # W_h (r * h) after z_r) adds what arrives to its identity
        ks.append(self.jvp("jvp_z_m", seeds=[], inject=tuple(self.sums), matrix=True,
                           identity=True))
        elementwise = [t.node for t in self.terms if t.kind == "elementwise"]
        if elementwise:
            ks.append(self.jvp("jvp_factors", seeds=[], params=ParamTangents.DENSE,
                               targets=tuple(elementwise)))
        return ks

    def D_kernel(self):
        """D_t whole (e-prop: D̂_t), or D̂ and the products' inputs compressed."""
        if self.plan is not None:
            targets = list(self.lay.new_state) + [
                t.input_id for t in self.terms if t.kind == "matrix"
                and self.lay.ref(t.input_id, "vd").buf == "vd"]
            return self.jvp("jvp_D", inject=tuple(self.products), matrix=True,
                            targets=tuple(dict.fromkeys(targets)))
        if self.cut_products:
            return self.jvp("jvp_D", inject=tuple(self.products), matrix=True)
        return self.jvp("jvp_D", matrix=True)

    def constants(self):
        rows = [r for run in self.runs for r in run[0]]
        ptr = np.cumsum([0] + [len(run[0]) for run in self.runs])
        elementwise = [t for t in self.terms if t.kind == "elementwise"]
        blocks = [x for t in elementwise for x in
                  (self.lay.block_of(t.param_id).off,
                   self.lay.block_of(t.param_id).off + self.lay.block_of(t.param_id).size)]
        out = {"NRUNS": len(self.runs),
               "RUN_ROWS": np.array(ptr, dtype=np.int64),
               "ROWS": np.array(rows, dtype=np.int64),
               "RUN_THETA": np.array([r[1] for r in self.runs], dtype=np.int64),
               "RUN_K": np.array([r[2] for r in self.runs], dtype=np.int64),
               "RUN_J": np.array([r[3] for r in self.runs], dtype=np.int64),
               "RUN_Z": np.array([r[4] for r in self.runs], dtype=np.int64),
               "RUN_KIND": np.array([r[5] for r in self.runs], dtype=np.int64),
               "RUN_FACTOR": np.array([r[6] for r in self.runs], dtype=np.int64)}
        if blocks:
            out["ELEMENTWISE_BLOCKS"] = np.array(blocks, dtype=np.int64)
        if self.plan is not None:
            tables = self._needed_tables()
            out.update({"NK": tables.pop("NK"), **self.plan, **tables})
        if self.feedback == "random":    # B (S x NOUT), a row per state entry
            S, nout = self.lay.n_state, self.nout
            B = np.random.default_rng(self.feedback_seed).standard_normal(
                (S, nout)) / np.sqrt(nout)
            B[~self._read_rows()] = 0.0
            out["FEEDBACK"] = B
        return out

    def choices(self):
        return {"RANDOM_FEEDBACK": self.feedback == "random",
                "BYPASS": self.bypass,
                "COMPRESSED_D": self.plan is not None,
                "LAYERED": False,
                "ELEMENTWISE_PARAMS": any(t.kind == "elementwise" for t in self.terms)}

    def state_layout(self):
        return {"J": (self.nj,)}

    def scratch_layout(self):
        lay = self.lay
        S = lay.n_state
        width = max((len(r[0]) * r[2] for r in self.runs), default=1)
        cols = S if self.plan is None else max(self.plan["NCOLORS"], 1)
        return {**self.base_scratch(), "vd": (lay.n_values, cols), "Dm": (S, S),
                "Dc": (S, cols), "seed": (S, cols), "vz": (lay.n_values, self.nz),
                "DZ": (S, self.nz),
                "thd": (lay.n_rec,), "vf": (lay.n_values + S,), "Ls": (S,),
                "T": (width,), "gb": (lay.n_params,), "vs": (lay.n_values,)}

    def templates(self):
        return [Template(common.forward_and_backprop, "forward_and_backprop"),
                Template(sparse_update, "sparse_update"),
                Template(needed_D, "needed_D"),
                Template(sparse_step, "est_step", "step")]


class SnAp(SparseInfluence):
    name = "snap"
    options = (Option("level", "the level n (also written snap-N)", read=None),
               *SparseInfluence.options)
    argument = Argument("(", "level", parse_level, "snap(N) or snap-N, N the level")
    aliases = ("snap-n",)
    shown = ("snap-1", "snap-2")

    def __init__(self, lay, sched, analysis, level=1, **opts):
        self.level = positive_int(level, "snap: level n")
        super().__init__(lay, sched, analysis, **opts)

    def make_mask(self, D, I):
        return sparsity.snap_mask(D, I, self.level,
                                  unit_coupling(self.lay, self.analysis, self.products))

    @property
    def label(self) -> str:
        return f"snap-{self.level}"


class EProp(SparseInfluence):
    name = "e-prop"
    aliases = ("eprop",)
    cut_products = True

    def make_mask(self, D, I):
        return sparsity.closure(D, I)


class RFLO(EProp):
    name = "rflo"
    aliases = ()


class LayerRTRL(SparseInfluence):
    """Exact RTRL inside each recurrent component (``Analysis.components``: a stacked
    cell's layers), the same-step error between them (Zucchet et al. 2023's exact
    learning per layer). A parameter keeps its influence on the states of the
    components it enters directly, J_K,t = D_KK,t J_K,t-1 + I_K,t, where the mask is I
    closed under D's diagonal blocks; the gradient is ∂l_t/∂θ (immediate) plus
    L_K,t · (J_K,t - I_K,t), with L_K,t = ∂l_t/∂s_K,t the loss's backprop through the
    components above at step t, K's own new states held apart (one backprop per
    component). On a cell of one component it is RTRL; on diagonal components (an LRU,
    IndRNN) its memory and time are O(P)."""

    name = "layer-rtrl"
    aliases = ("layer-local",)
    options = ()
    shown = ("layer-rtrl",)

    def __init__(self, lay, sched, analysis, **opts):
        self.components = analysis.components
        super().__init__(lay, sched, analysis, **opts)

    @property
    def layered(self) -> bool:
        return len(self.components) > 1

    def make_mask(self, D, I):
        return layer_mask(self.analysis, D, I, self.sums, self.zcol)

    def _bypass(self) -> bool:
        """Whether the loss reads a component's s_{t-1} along a path that avoids the
        component's new states."""
        lay = self.lay
        out = lay.loss_output_id
        if not self.layered:
            return super()._bypass()
        return any(st in lay.needed_for([out], [lay.cell.updates[m] for m in c.state_ids])
                   for c in self.components for st in c.state_ids)

    def kernels(self):
        if not self.layered:
            return super().kernels()
        ks = [k for k in super().kernels() if k.name != "vjp_signal"]
        return ks + [k for k in self._signal_kernels() if k is not None]

    def _signal_kernels(self) -> list:
        """Per component, its learning signal's backprop, or None where step t's loss
        does not read the component (its signal is zero)."""
        if not hasattr(self, "_signals"):
            lay = self.lay
            self._signals = []
            for c in self.components:
                k = self.vjp(f"vjp_signal_{c.index}", [lay.loss_output_id],
                             wrt=("state",) if self.bypass else (),
                             stop=[lay.cell.updates[m] for m in c.state_ids])
                self._signals.append(k if k.body else None)
        return self._signals

    def choices(self):
        return {**super().choices(), "LAYERED": self.layered}

    def scratch_layout(self):
        out = super().scratch_layout()
        if self.layered:
            S = self.lay.n_state
            out.update({"Lt": (S,), "Lb": (S if self.bypass else 1,)})
        return out

    def flops(self):
        """SnAp's model on the layer-local mask, plus a backprop per component beyond
        the first (the learning signals)."""
        return super().flops() + 2 * self.lay.flops() * (len(self.components) - 1)

    def templates(self):
        ts = super().templates()
        if self.layered:
            ts.append(Template(self._signals_source(), "layer_signals"))
        return ts

    def _signals_source(self) -> str:
        """``layer_signals``, one backprop per component, written out for this cell."""
        lines = ["def layer_signals(th, v, vb, vs, g, Ls, Lt, Lb):",
                 '    """The learning signal ∂l_t/∂s_K,t of each recurrent component K: the '
                 "loss's\n    backprop with K's own new states held apart (vjp_signal_K), "
                 'through the\n    components above; Lb keeps each component\'s '
                 '∂l_t/∂s_K,t-1 along the paths\n    that bypass its new states."""']
        for c, k in zip(self.components, self._signal_kernels(), strict=True):
            if k is None:
                lines.append(f"    # component {c.index}: {', '.join(c.states)}: step t's "
                             f"loss does not read it")
                for off, n in c.rows:
                    lines.append(f"    rg_zero(Ls[{off}:{off + n}])")
                    if self.bypass:
                        lines.append(f"    rg_zero(Lb[{off}:{off + n}])")
                continue
            lines += [f"    # component {c.index}: {', '.join(c.states)}",
                      "    rg_zero(vs)",
                      "    rg_copy(vs[OUT_OFF:OUT_OFF + NOUT], vb[OUT_OFF:OUT_OFF + NOUT])",
                      f"    vjp_signal_{c.index}(th, v, vs, g)",
                      "    gather_new(vs, Lt)"]
            for off, n in c.rows:
                lines.append(f"    rg_copy(Ls[{off}:{off + n}], Lt[{off}:{off + n}])")
                if self.bypass:
                    lines.append(f"    rg_copy(Lb[{off}:{off + n}], vs[{off}:{off + n}])")
        if self.bypass:
            lines.append("    rg_copy(vs[0:S], Lb)")
        return "\n".join(lines) + "\n"


def influence_patterns(lay, terms, cut=()) -> tuple:
    """(D, I, sums, zcol, weights) for the masks, on the structure (``sparsity.Pattern``):
    D = ∂s_t/∂s_{t-1} (``cut``: without the paths through those products, e-prop's D̂)
    and I = ∂s_t/∂z with a column per entry of the sums the recurrent parameters enter.
    Every parameter entering z_q has column q of I as its own column of ∂s_t/∂θ (a
    product's row W[q, :] times its input, a bias, an elementwise vector), so the masks
    are computed on |z| columns, not P; ``weights[q]``: how many parameters share
    column q, zcol: each sum's first column."""
    sums = sorted({t.sum for t in terms}, key=lay.pos.get)
    zcol, col = {}, 0
    for z in sums:
        zcol[z] = col
        col += lay.nodes[z].size
    weights = np.zeros(col, dtype=np.int64)
    for t in terms:
        m = lay.nodes[t.param_id].shape[0]
        weights[zcol[t.sum]:zcol[t.sum] + m] += \
            lay.block_of(t.param_id).size // m if t.kind == "matrix" else 1
    D = sparsity.patterns(lay, lay.state_ids, lay.new_state, cut)
    I = sparsity.patterns(lay, sums, lay.new_state)
    return D, I, sums, zcol, weights


def unit_coupling(lay, analysis, products):
    """The couplings inside units that SnAp-n's immediate pattern takes in: entries of
    D̂ (the paths from s_{t-1} to s_t through no recurrent product) between states of
    one unit (``Analysis.units``: entry i of every state of a component). An LRU's
    (h_re_i, h_im_i) rotate into each other, so SnAp-1 keeps a parameter of unit i on
    both, as on the complex h_i; an LSTM's c_i reaches h_i only through the output gate's
    product, so SnAp-1 keeps the output gate's weights on h_i alone (Menick et al.)."""
    hat = sparsity.patterns(lay, lay.state_ids, lay.new_state, products)
    return hat.within(analysis.units)


def layer_mask(analysis, D, I, sums, zcol):
    """layer-rtrl's mask: I on the rows of the components each sum's column enters
    (``Analysis.enters``), closed under D's diagonal blocks (one per component)."""
    lay = analysis.layout
    blocks_D, blocks_I = [], []
    for comp in analysis.components:
        rows = np.zeros(lay.n_state, dtype=bool)
        for off, n in comp.rows:
            rows[off:off + n] = True
        cols = np.zeros(I.shape[1], dtype=bool)
        for z in sums:
            if comp.index in analysis.enters(z):
                cols[zcol[z]:zcol[z] + lay.nodes[z].size] = True
        blocks_D.append((rows, rows))
        blocks_I.append((rows, cols))
    return sparsity.closure(D.restrict(blocks_D), I.restrict(blocks_I))


def entry_terms(lay, analysis, who) -> list:
    """The analysis' entries of the recurrent parameters (``Analysis.entries``), one
    per parameter, for the sparse estimators. Refuses, naming the node, a parameter
    that enters otherwise than once, as a product's matrix, a bias or an elementwise
    vector of its node's size."""
    nodes = lay.nodes
    rec = set(lay.rec_ids)
    out = []

    def refuse(why):
        raise NotApplicable(f"{who} does not apply to cell '{lay.cell.name}': {why}. It "
                            f"needs every recurrent parameter to enter once, as the matrix "
                            f"of a product W @ a, as a bias or as an elementwise vector of "
                            f"the preactivation's size; use rtrl, uoro or kf-rtrl")

    for p in lay.rec_ids:
        name = nodes[p].name
        es = analysis.entries_of(p)
        if len(es) != 1:
            refuse(f"parameter '{name}' is used by {len(es)} nodes "
                   f"({', '.join(nodes[e.node].name for e in es)})")
        e = es[0]
        n = nodes[e.node]
        if e.kind == "matrix":
            if lay.loc[e.input_id].buf != "v":
                refuse(f"the input of the product '{n.name}' is a {nodes[e.input_id].kind}")
            if n.args.count(p) != 1:
                refuse(f"parameter '{name}' is both operands of '{n.name}'")
        elif e.kind in ("bias", "elementwise"):
            others = [a for a in n.args if a != p and a in rec]
            if others:
                refuse(f"node '{n.name}' combines parameters '{name}' and "
                       f"'{nodes[others[0]].name}' elementwise")
        else:
            refuse(f"parameter '{name}' enters at node '{n.name}' "
                   f"({lay.cell.describe(n)})")
        out.append(e)
    return out
