"""How noisy is each estimator? Cosine to the exact gradient and variance over seeds.

For a cell, a sequence and fixed parameters, each estimator's ``total_gradient`` is
drawn with many seeds and compared with the exact one (BPTT): the cosine of the angle
between estimate and truth (Mujika et al., Fig. 3), the relative variance
E|g - g*|² / |g*|², and the relative bias |E g - g*| / |g*| (which should vanish for
the unbiased estimators, up to the sampling error reported next to it). Only the
recurrent parameters count: the readout's gradient is exact for every estimator.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import plots
from .api import compile as rg_compile
from .api import precompile
from .estimators import known
from .estimators.names import parse_estimator


@dataclass
class VarianceRow:
    label: str
    estimator: str
    size: int | None
    cos_mean: float
    cos_std: float
    rel_var: float
    rel_bias: float
    bias_se: float            # the relative bias pure sampling noise would show
    seeds: int
    seconds: float

    def as_dict(self):
        return dict(vars(self))


@dataclass
class VarianceResult:
    rows: list = field(default_factory=list)

    def table(self) -> str:
        head = (f"{'cell':<14}{'size':>6}  {'estimator':<32}{'cos mean':>9}{'± sd':>7}"
                f"{'rel var':>10}{'rel bias':>10}{'(noise)':>9}{'seeds':>7}")
        lines = [head]
        for r in self.rows:
            lines.append(f"{r.label:<14}{'' if r.size is None else r.size:>6}  "
                         f"{r.estimator:<32}{r.cos_mean:>9.3f}{r.cos_std:>7.3f}"
                         f"{r.rel_var:>10.3g}{r.rel_bias:>10.3g}{r.bias_se:>9.3g}"
                         f"{r.seeds:>7}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def plot(self, path, title=""):
        """Cosine (mean ± sd) against size, one line per estimator."""
        return plots.cosine_vs_size(self.rows, path, title)


def _spec(e):
    """(name, options, label) of an estimator given as a name ("uoro", "tbptt(16)",
    "projected-uoro[preactivation]": ``rgraph.estimators.names``) or as a
    ("name", {options}[, label]) tuple. A name with an argument labels its rows as
    written."""
    if isinstance(e, tuple):
        return e[0], dict(e[1]), e[2] if len(e) > 2 else None
    key = known(e)
    _, opts = parse_estimator(e)
    return key, opts, e if opts else None


def _gradients(cell, name, opts, loss, backend, params, xs, ys, seeds, rec):
    """The recurrent parameters' total gradients of one estimator for ``seeds``, one
    row each (a task of a distributed ``variance``: compiled, or loaded from rgraph's
    cache, once per worker process)."""
    from .sweeps.engine import _BUILD_LOCK  # builds take turns in a threaded worker
    key = (str(cell), name, repr(sorted(opts.items(), key=str)), loss, backend)
    with _BUILD_LOCK:
        est = _WORKER_ESTIMATORS.get(key)
        if est is None:
            est = _WORKER_ESTIMATORS[key] = rg_compile(cell, name, loss=loss,
                                                       backend=backend, **opts)
    return _stack(est, params, xs, ys, seeds, rec)


def _stack(est, params, xs, ys, seeds, rec):
    return np.array([np.concatenate([np.ravel(g[k]) for k in rec])
                     for g in (est.total_gradient(params, xs, ys, seed=s) for s in seeds)])


_WORKER_ESTIMATORS: dict = {}


def _draws(est, cell, name, opts, loss, backend, p, xs, ys, seeds, rec, client):
    """G: one row per seed 0..seeds-1, here or (``client``) spread over Dask workers in
    blocks of seeds, reassembled in seed order (the same numbers either way)."""
    if client is None:
        return _stack(est, p, xs, ys, range(seeds), rec)
    # compile the module's functions here first, so that workers load them from the
    # cache instead of all compiling the same module at once
    est.total_gradient(p, xs[:1], ys[:1], seed=0)
    n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    blocks = np.array_split(np.arange(seeds), min(seeds, 4 * n_workers))
    futures = [client.submit(_gradients, cell, name, opts, loss, backend, p, xs, ys,
                             [int(s) for s in b], rec, pure=False) for b in blocks if len(b)]
    return np.concatenate(client.gather(futures))


def variance(cell, estimators, xs, ys, params=None, seeds: int = 100, loss=None,
             backend="numba", size=None, label=None, params_seed=0, result=None,
             progress=None, client=None) -> VarianceResult:
    """Cosine and variance of each estimator's total gradient over ``seeds`` draws.

    estimators: names ("uoro", "kf-rtrl", "tbptt(16)", "projected-uoro[preactivation]")
    or ("name", {options}[, label]) tuples. Estimators that do not apply to the cell are
    reported with nan and their reason. Returns a ``VarianceResult`` (``.table()``,
    ``.plot(path)``); pass ``result`` to append rows to an existing one. ``client``: a
    ``dask.distributed.Client`` to draw the seeds on (``rgraph.sweeps.dask_client``
    makes one), with the same numbers as drawing them here. Every module is compiled
    first, several at once (``rg.precompile``)."""
    specs = [_spec(e) for e in estimators]      # a malformed name fails before any work
    built = _build(cell, specs, loss or _loss_of(ys), backend)
    precompile(_compiled(built))
    return _measure(built, estimators, specs, xs, ys, params, seeds, size, label,
                    params_seed, result, progress, client)


def _loss_of(ys) -> str:
    """The default loss: mse for vector targets, else softmax_xent."""
    return "mse" if np.asarray(ys).ndim == 2 else "softmax_xent"


@dataclass
class _Built:
    """A cell's exact estimator (BPTT) and each estimator compiled for it (or the error
    that says why it does not apply), not yet prepared."""
    cell: object
    loss: str
    backend: str
    exact: object
    estimators: list


def _build(cell, specs, loss, backend) -> _Built:
    exact = rg_compile(cell, "bptt", loss=loss, backend=backend)
    ests = []
    for name, opts, _ in specs:
        try:
            ests.append(rg_compile(cell, name, loss=loss, backend=backend, **opts))
        except Exception as err:   # NotApplicable and friends: reported, not raised
            ests.append(err)
    return _Built(cell, loss, backend, exact, ests)


def _compiled(built: _Built) -> list:
    """The estimators of ``built`` that compiled (their one-stream path: what
    ``total_gradient`` calls)."""
    return [built.exact] + [e for e in built.estimators if not isinstance(e, Exception)]


def _measure(built, estimators, specs, xs, ys, params, seeds, size, label, params_seed,
             result, progress, client) -> VarianceResult:
    """``variance``'s rows, from the estimators ``_build`` made."""
    result = result if result is not None else VarianceResult()
    cell, loss, backend, exact_est = built.cell, built.loss, built.backend, built.exact
    p = params if params is not None else exact_est.init_params(params_seed)
    rec = [b.name for b in exact_est.blocks if b.recurrent]
    flat = lambda g: np.concatenate([np.ravel(g[k]) for k in rec])  # noqa: E731
    g0 = flat(exact_est.total_gradient(p, xs, ys))
    n0 = np.linalg.norm(g0)
    for e, (name, opts, lab), est in zip(estimators, specs, built.estimators, strict=True):
        t = time.perf_counter()
        if isinstance(est, Exception):
            if progress:
                progress(f"{lab or name}: not applicable ({est})")
            result.rows.append(VarianceRow(label or cell.name, lab or str(e), size, np.nan,
                                           np.nan, np.nan, np.nan, np.nan, 0, 0.0))
            continue
        draws = seeds if est.spec.stochastic else 1     # a deterministic one: one draw
        G = _draws(est, cell, name, opts, loss, backend, p, xs, ys, draws, rec, client)
        norms = np.linalg.norm(G, axis=1)
        cos = G @ g0 / np.maximum(norms * n0, 1e-300)
        rel_var = float(np.mean(np.sum((G - g0) ** 2, axis=1)) / n0 ** 2)
        bias = float(np.linalg.norm(G.mean(0) - g0) / n0)
        bias_se = float(np.sqrt(rel_var / draws))
        row = VarianceRow(label or cell.name, lab or est.name, size, float(cos.mean()),
                          float(cos.std()), rel_var, bias, bias_se, draws,
                          time.perf_counter() - t)
        result.rows.append(row)
        if progress:
            progress(f"{row.label} {size or ''} {row.estimator}: cos {row.cos_mean:.3f} "
                     f"± {row.cos_std:.3f}")
    return result


def variance_vs_size(make_cell, sizes, estimators, data, seeds=100, backend="numba",
                     label=None, progress=None, client=None) -> VarianceResult:
    """``variance`` for cells of several sizes: make_cell(n) -> Cell, data(cell) ->
    (xs, ys); an estimator may be a function of n returning its spec (e.g. rank n).
    Mujika et al. Fig. 3b: RHNs of 16..256 units, 100 steps of text. ``client``: see
    ``variance``. The modules of every size are compiled first, several at once."""
    result = VarianceResult()
    todo = []
    for n in sizes:
        cell = make_cell(n)
        xs, ys = data(cell)
        ests = [e(n) if callable(e) else e for e in estimators]
        specs = [_spec(e) for e in ests]
        todo.append((n, ests, specs, xs, ys, _build(cell, specs, _loss_of(ys), backend)))
    precompile([est for *_, built in todo for est in _compiled(built)])
    for n, ests, specs, xs, ys, built in todo:
        _measure(built, ests, specs, xs, ys, None, seeds, n, label or built.cell.name, 0,
                 result, progress, client)
    return result
