"""Which estimator families apply to a cell, and what each costs per stream and step.

For every family the table builds the estimator's spec on the cell (nothing is
compiled): a family that does not apply says why (the spec's own refusal), one that
does gives its memory (``resources.memory``: per stream and once, from the buffers the
spec declares, the same declarations the generated code allocates) and a flop count
per online step from a cost model:

    F        the forward step (``Layout.flops``)
    base     3F: forward, loss and backprop through the step (every estimator)
    H X      a state tangent of K columns pushed through one step, by the cheaper
             association (``sparsity.association``: through the step's jvp, or H_t
             formed first)
    rtrl     base + H G (K = P) + 4 S P
    tbptt    base + 2F               (one backward step per step, at segment ends)
    uoro     the projection space's cost (``Analysis._cost``)
    kf-rtrl  base + H A (K = |z|) + 4 S |z|
    ok(r)    base + H A (K = r |z|) + 2 (r+1)(2r+1) S |z|   (Gram and recombination)
    snap, e-prop   base + H I (K = S) + Σ_runs 2 |R| k (|R| + 2)   (D_t, then the runs)
    dodge    base + 2F k
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import GraphError, NotApplicable
from .resources import Memory, memory, nbytes
from .schedule import schedule
from .sparsity import association

FAMILIES = ("rtrl", "bptt", "tbptt(16)", "uoro", "projected-uoro", "kf-rtrl", "ok(2)",
            "snap-1", "snap-2", "e-prop", "rflo", "dodge")
SNAP_LEVELS = (1, 2, 3)


@dataclass(frozen=True)
class Family:
    name: str
    applies: bool
    reason: str = ""                  # why not
    memory: Memory | None = None      # its buffers
    flops: int = 0                    # per online step (the cost model above)
    batch: str = ""                   # what runs as GEMMs over a batch of streams


def _batch(spec) -> str:
    """What of a step runs once for a batch of streams (compiled backends)."""
    batch = spec.batch_templates()
    if not batch:
        return "one by one"
    return "fwd + bwd" if any(t.name == "est_rest" for t in batch) else "fwd + bwd + jvp"


def _flops(spec, lay, analysis) -> int:
    from .estimators.exact import RTRL, TBPTT
    from .estimators.kfrtrl import KFRTRL
    from .estimators.ok import OK
    from .estimators.snap import SparseInfluence
    from .estimators.uoro import ProjectedUORO
    from .estimators.dodge import DODGE
    F, S, P = lay.flops(), lay.n_state, lay.n_rec
    base = 3 * F

    def push(K):        # H X for K columns, by the cheaper association
        return association(lay, K).flops

    if isinstance(spec, RTRL):
        return base + push(P) + 4 * S * P
    if isinstance(spec, TBPTT):
        return base + 2 * F
    if isinstance(spec, ProjectedUORO):
        return spec.space.cost["flops"]
    if isinstance(spec, OK):
        r = spec.rank
        return base + push(r * spec.nz) + 2 * (r + 1) * (2 * r + 1) * S * spec.nz
    if isinstance(spec, KFRTRL):
        return base + push(spec.nz) + 4 * S * spec.nz
    if isinstance(spec, SparseInfluence):
        return base + push(S) + sum(2 * len(r[0]) * r[2] * (len(r[0]) + 2)
                                      for r in spec.runs)
    if isinstance(spec, DODGE):
        return base + 2 * F * spec.k
    return base + 4 * F


def families(analysis, dtype="float64") -> list[Family]:
    """Every family on the analysed cell, in ``FAMILIES`` order."""
    from .estimators import make_spec
    lay = analysis.layout
    sched = schedule(lay)
    out = []
    for name in FAMILIES:
        try:
            spec = make_spec(name, lay, sched, analysis)
        except (NotApplicable, GraphError) as e:
            out.append(Family(name, False, _why(str(e))))
            continue
        out.append(Family(spec.describe(), True, "", memory(spec, dtype),
                          int(_flops(spec, lay, analysis)), _batch(spec)))
    return out


def _why(message: str) -> str:
    """A refusal without its 'X does not apply to cell Y:' preamble."""
    head, sep, rest = message.partition(": ")
    return rest if sep and "apply" in head else message


def snap_levels(analysis) -> list[tuple]:
    """(level n, kept entries, RTRL's reachable entries, saturates) for SnAp-n."""
    from . import sparsity
    lay = analysis.layout
    if not lay.rec_blocks:
        return []
    D, I = sparsity.step_patterns(lay)
    full = sparsity.closure(D, I).nnz
    kept = [sparsity.snap_mask(D, I, n).nnz for n in SNAP_LEVELS]
    return [(n, k, full, k == full) for n, k in zip(SNAP_LEVELS, kept, strict=True)]


def report_lines(analysis, dtype="float64") -> list[str]:
    """The families section of ``Analysis.report``."""
    lines = [f"estimator families: memory ({dtype}) per stream (x batch) and once "
             f"(scratch, parameters, optimizer), flop per online step, and what of a step "
             f"runs as GEMMs over a batch of streams (rgraph.families):",
             f"  {'estimator':<26}{'per stream':>22}{'once':>12}{'flop/step':>16}"
             f"  {'batch of streams'}"]
    fams = families(analysis, dtype)
    for f in fams:
        if f.applies:
            lines.append(f"  {f.name:<26}{f.memory.describe_stream():>22}"
                         f"{nbytes(f.memory.shared_bytes()):>12}{f.flops:>16,}  {f.batch}")
        else:
            lines.append(f"  {f.name:<26}  does not apply: {f.reason}")
    # the masks only where SnAp runs: "saturates: equals RTRL" is a claim about its code
    levels = snap_levels(analysis) if fams[FAMILIES.index("snap-1")].applies else []
    if levels:
        lines += ["", "SnAp-n masks (influence entries kept, of those RTRL keeps):"]
        for n, kept, full, sat in levels:
            note = "saturates: equals RTRL" if sat else f"{kept / full:.1%}"
            lines.append(f"  snap-{n}: {kept:,} of {full:,} ({note})")
    return lines
