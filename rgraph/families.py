"""Which estimator families apply to a cell, and what each costs per stream and step.

For every family the table builds the estimator's spec on the cell (nothing is
compiled): a family that does not apply says why (the spec's own refusal), one that
does gives its memory (``resources.memory``: per stream and once, from the buffers the
spec declares, the same declarations the generated code allocates) and its flops per
online step (the spec's ``flops()``, its cost model: see each estimator). The families
are the registry's (``rgraph.estimators``), each spec's ``shown`` instances in registry
order, so a registered estimator appears here without a line in this file.

This module adds the table to ``Analysis.report`` (``analysis.REPORT_SECTIONS``): the
analysis cannot import it, since the estimators it builds import the analysis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .analysis import REPORT_SECTIONS
from .errors import GraphError, NotApplicable
from .estimators import make_spec, shown
from .estimators.snap import entry_terms, influence_patterns, layer_mask, unit_coupling
from .resources import Memory, memory, nbytes
from .schedule import schedule
from . import sparsity

SNAP_LEVELS = (1, 2, 3)


@dataclass(frozen=True)
class Family:
    key: str                          # the name it is built from ("snap-1")
    name: str                         # its spec's description, or the key
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


def families(analysis, dtype="float64") -> list[Family]:
    """Every registered family on the analysed cell, in registry order."""
    lay = analysis.layout
    sched = schedule(lay)
    out = []
    for key in shown():
        try:
            spec = make_spec(key, lay, sched, analysis)
        except (NotApplicable, GraphError) as e:
            out.append(Family(key, key, False, _why(str(e))))
            continue
        out.append(Family(key, spec.describe(), True, "", memory(spec, dtype),
                          int(spec.flops()), _batch(spec)))
    return out


def _why(message: str) -> str:
    """A refusal without its 'X does not apply to cell Y:' preamble."""
    head, sep, rest = message.partition(": ")
    return rest if sep and "apply" in head else message


def _snap_masks(analysis):
    """(terms, D, I, sums, zcol, weights, {level: SnAp-n's mask}) on the masks'
    structure (``snap.influence_patterns``), or None where SnAp does not apply."""
    lay = analysis.layout
    if not lay.rec_blocks:
        return None
    try:
        terms = entry_terms(lay, analysis, "snap")
    except NotApplicable:
        return None
    D, I, sums, zcol, weights = influence_patterns(lay, terms)
    inside = unit_coupling(lay, analysis, [t.node for t in terms if t.kind == "matrix"])
    masks = {n: sparsity.snap_mask(D, I, n, inside) for n in SNAP_LEVELS}
    return terms, D, I, sums, zcol, weights, masks


def snap_levels(analysis) -> list[tuple]:
    """(level n, kept entries, RTRL's reachable entries, saturates) for SnAp-n; none
    where SnAp does not apply."""
    got = _snap_masks(analysis)
    if got is None:
        return []
    _, D, I, _, _, weights, masks = got
    full = sparsity.closure(D, I).count(weights)
    kept = [masks[n].count(weights) for n in SNAP_LEVELS]
    return [(n, k, full, k == full) for n, k in zip(SNAP_LEVELS, kept, strict=True)]


def component_counts(analysis) -> list[tuple]:
    """Per recurrent component (``Analysis.components``), when there are several: (the
    component, RTRL's influence entries for its parameters, and per mask family
    ``{label: entries}``), counted on the masks' structure; [] for one component or
    where the masks do not apply. A family keeping all of RTRL's entries for a
    component's parameters gives them RTRL's gradient."""
    lay = analysis.layout
    comps = analysis.components
    got = _snap_masks(analysis) if len(comps) > 1 else None
    if got is None:
        return []
    terms, D, I, sums, zcol, weights, snap = got
    masks = {f"snap-{n}": M for n, M in snap.items()}
    masks["layer-rtrl"] = layer_mask(analysis, D, I, sums, zcol)
    full = sparsity.closure(D, I)
    out = []
    for c in comps:
        w = np.zeros_like(weights)
        for t in terms:
            if t.param_id in c.param_ids:
                m = lay.nodes[t.param_id].shape[0]
                w[zcol[t.sum]:zcol[t.sum] + m] += \
                    lay.block_of(t.param_id).size // m if t.kind == "matrix" else 1
        out.append((c, full.count(w), {k: M.count(w) for k, M in masks.items()}))
    return out


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
    levels = snap_levels(analysis) if any(f.applies and f.key.startswith("snap")
                                          for f in fams) else []
    if levels:
        lines += ["", "SnAp-n masks (influence entries kept, of those RTRL keeps):"]
        for n, kept, full, sat in levels:
            note = "saturates: equals RTRL" if sat else f"{kept / full:.1%}"
            lines.append(f"  snap-{n}: {kept:,} of {full:,} ({note})")
    counts = component_counts(analysis)
    lay = analysis.layout
    if counts:
        labels = list(counts[0][2])
        lines += ["", "parameters per component and the influence entries kept for them, "
                      "of those RTRL keeps (= : all of them, the gradient of RTRL for those "
                      "parameters; layer-rtrl's signal is the whole step's backprop):",
                  f"  {'component':<24}{'params':>10}{'rtrl':>12}"
                  + "".join(f"{k:>14}" for k in labels)]
        for c, full, kept in counts:
            name = f"{c.index}: {', '.join(c.states)}"
            P = sum(lay.nodes[p].size for p in c.param_ids)
            cells = "".join(f"{('= ' if kept[k] == full else '') + f'{kept[k]:,}':>14}"
                            for k in labels)
            lines.append(f"  {name:<24}{P:>10,}{full:>12,}{cells}")
    return lines


REPORT_SECTIONS.append(report_lines)
