"""The user-facing objects: ``compile`` -> ``Estimator`` -> ``Trainer``.

``rg.compile(cell, estimator=..., loss=..., backend=...)`` analyses the cell, builds the
estimator's kernels, writes one generated module and imports it. The ``Estimator`` holds
the module and the parameter layout and offers ``total_gradient`` (the yardstick the
estimators are tested against), ``loss``, ``trainer`` and ``train``. All checking of user
data happens here, before anything reaches compiled code.
"""
from __future__ import annotations

import re

import numpy as np

from . import codegen, losses
from .analysis import Analysis
from .build import build_module
from .backends import get_backend
from .estimators import make_spec
from .codegen import layout_size
from .export import export, reserved_names
from .graph import Cell, init_param
from .layout import Layout
from .resources import check_fits, memory
from .runtime import Model
from .schedule import schedule
from .training.optim import state_size
from .training.trainer import Trainer

LOSSES = {name: loss.helper for name, loss in losses.LOSSES.items()}  # name -> helper
_BLAS = None


def blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries: numpy's, which the generated
    modules' GEMMs call, and scipy's, which numba's np.dot (in the templates of KF-RTRL
    and OK) calls, loaded here so that the view, taken once, covers it."""
    global _BLAS
    if _BLAS is None:
        import scipy.linalg  # noqa: F401  (load the OpenBLAS numba's np.dot calls)
        from threadpoolctl import ThreadpoolController
        _BLAS = ThreadpoolController()
    return _BLAS


def state_form(spec):
    """(base, per_k, k_fixed): a stream's estimator state holds base + per_k * K numbers
    for the segment length K, which is k_fixed or, when that is None, the number of
    steps of a call (the form ``runtime.Model`` sizes states by). Read from the
    estimator's state layout and checked at several lengths, with the update period."""
    try:
        k_fixed = int(spec.segment_length(None))
    except (ValueError, TypeError):
        k_fixed = None

    def size(T):
        return layout_size(spec.state_layout(), spec.segment_length(T))
    probes = (1, 2, 7, 100)
    ks = [spec.segment_length(T) for T in probes]
    if k_fixed is None:
        base, per_k = size(1) - (size(2) - size(1)), size(2) - size(1)
    else:
        base, per_k = size(1), 0
    for T, K in zip(probes, ks, strict=True):
        want_k = T if k_fixed is None else k_fixed
        want_update = K if spec.segment else 1
        if K != want_k or size(T) != base + per_k * K or spec.update_every(T) != want_update:
            raise RuntimeError(f"{spec.describe()}'s segment length, state size or update "
                               f"period at T = {T} is not of the form runtime.Model sizes "
                               f"states by")
    return base, per_k, k_fixed


DTYPES = {"float64": np.float64, "float32": np.float32}


class Estimator:
    """One estimator compiled for one cell (see ``rg.compile``)."""

    def __init__(self, cell: Cell, estimator: str = "uoro", *, loss: str = "softmax_xent",
                 backend: str = "numba", dtype="float64", output: str | None = None,
                 blas_threads: int | None = 1, force_memory: bool = False, **options):
        if not isinstance(cell, Cell):
            raise TypeError(f"compile: expected an rgraph Cell, got {type(cell).__name__}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        dtype = np.dtype(dtype).name
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
        self.backend = get_backend(backend)
        self.backend.check_dtype(dtype)
        self.cell = cell
        self.loss_name = loss
        # the GEMMs of a step are small: one BLAS thread is faster, and spinning BLAS
        # threads slow everything down 10-100x when another process wants the cores
        self.blas_threads = blas_threads
        self.dtype = np.dtype(dtype)
        self.layout = lay = Layout(cell, output)
        lay.loss_output_id     # an ambiguous output fails here, by name
        self.analysis = Analysis(cell, lay)
        self.spec = make_spec(estimator, lay, schedule(lay), self.analysis, **options)
        self.name = self.spec.describe()
        # refuse, with the figure, what could never be allocated (one stream)
        self.memory = memory(self.spec, self.dtype, batch_step=self.backend.batch_step)
        check_fits(self.memory, 1, cell.name, force=force_memory,
                   fix="force_memory=True (rgraph train --force-memory)")
        flush = ", flush_all (pending segments)" if self.spec.flushes else ""
        src, self.entry_points = build_module(
            self.spec, self.backend, LOSSES[loss], str(self.dtype),
            f"{self.name} for cell '{cell.name}' (loss {loss}, {dtype}), generated by "
            f"rgraph.\nEntry points: run (online training steps), evaluate (the loss){flush}.",
            reserved=reserved_names())
        stem = re.sub(r"\W", "_", f"{cell.name}_{self.name}", flags=re.ASCII)
        self.code = codegen.load(src, self.backend, stem)
        self.module, self.path = self.code.module, self.code.path
        self._prepared = False
        self.n_state, self.n_in, self.n_params = lay.n_state, lay.n_in, lay.n_params
        self.n_out = self.spec.nout
        if loss == "softmax_xent" and self.n_out == 1:
            raise ValueError(f"compile: softmax_xent over the 1-unit output of cell "
                             f"'{cell.name}' is constant (loss 0 whatever the parameters); "
                             f"give the output one unit per class, or use loss='mse'")
        self.blocks = lay.param_blocks
        self.model = Model(
            self._invoke, cell=cell.name, loss=loss, dtype=self.dtype, n_in=self.n_in,
            n_out=self.n_out, n_state=self.n_state,
            blocks=[(b.name, int(b.off), tuple(int(d) for d in b.shape), int(b.size))
                    for b in self.blocks],
            state=state_form(self.spec), segmented=self.spec.segment,
            whole=self.spec.whole_sequence, flushes=self.spec.flushes,
            batched="run_batch" in self.entry_points, opt_size=state_size(self.n_params))

    def __repr__(self):
        return (f"Estimator({self.name} on cell '{self.cell.name}', loss={self.loss_name}, "
                f"backend={self.backend.name}, {self.n_params:,} params)")

    @property
    def source(self) -> str:
        """The generated module, as written to disk."""
        return self.code.text

    # ------------------------------------------------------------- parameters
    def init_params(self, seed: int = 0) -> dict:
        """Fresh parameters from each param's init scheme (same seed, same numbers)."""
        rng = np.random.default_rng(seed)
        return {b.name: init_param(self.cell.nodes[b.node], rng) for b in self.blocks}

    def pack(self, params: dict) -> np.ndarray:
        """The flat parameter vector of a dict name -> array (checked: ``DataError``)."""
        return self.model.pack(params)

    def unpack(self, flat: np.ndarray) -> dict:
        """The dict name -> float64 array of a flat parameter vector."""
        return self.model.unpack(flat)

    # ------------------------------------------------------------------ data
    def check_data(self, xs, ys, weights=None, resets=None, batch_axis=False):
        """Validated (T, B, X) inputs, targets, weights and resets for the compiled loop
        (``runtime.Model.check_data``)."""
        return self.model.check_data(xs, ys, weights, resets, batch_axis)

    def call(self, fn: str, *args):
        """Call a generated function, with the BLAS thread limit (non-finite values are
        checked, not warned about); ``run`` on several streams is ``run_batch`` where the
        module has it (see ``rgraph.build``)."""
        return self.model.call(fn, *args)

    def _invoke(self, fn: str, *args):
        """``runtime.Model``'s way into the generated module: prepare, then call."""
        if not self._prepared:
            self.prepare(fn)
        name = self.entry_points[fn]
        if self.blas_threads is None:
            return self.code.call(name, *args)
        with blas_controller().limit(limits=self.blas_threads):
            return self.code.call(name, *args)

    def prepare(self, loop: str = "run"):
        """Compile the entry points (in a child process, if the cache lacks them) and
        load them from the cache, always in the same order, so that every process runs
        the same machine code (see ``rgraph.cache``). Runs on the first call; ``loop``
        is the loop entry point that call needs (``run``, or ``run_batch`` for several
        streams), and the other is compiled when first used."""
        calls = self.model.example_calls(loop)
        self.code.prepare([(self.entry_points[f], args) for f, args in calls])
        self._prepared = True

    # ------------------------------------------------------------- gradients
    def new_state(self, batch: int, T: int | None = None):
        """Zeroed (states, estimator state) for ``batch`` streams."""
        return self.model.new_state(batch, T)

    def check_memory(self, batch: int, T: int | None = None, force: bool = False):
        """Refuse (``MemoryRefused``, with the figures) ``batch`` streams whose buffers,
        for runs of T steps per call, exceed the memory available (``rgraph.resources``);
        ``force`` skips the check."""
        check_fits(self.memory, batch, self.cell.name, self.spec.segment_length(T),
                   force=force, fix="force_memory=True (rgraph train --force-memory)")

    def total_gradient(self, params, xs, ys, seed: int = 0, weights=None, resets=None,
                       return_loss: bool = False):
        """The sum over a sequence of this estimator's per-step gradient estimates at fixed
        parameters, states starting at zero (loss Σ_t l_t). Exact for rtrl and bptt; for
        the stochastic estimators its mean over seeds is the exact gradient."""
        return self.model.total_gradient(params, xs, ys, seed, weights, resets, return_loss)

    def loss(self, params, xs, ys, weights=None, resets=None) -> float:
        """Mean per-step loss of a forward pass from zero state (no learning)."""
        return self.model.loss(params, xs, ys, weights, resets)

    # --------------------------------------------------------------- training
    def trainer(self, params, optimizer=None, batch: int = 1, seed: int = 0,
                reset_prob: float = 0.0, chunk: int = 1000, *,
                halt_on_divergence: bool = False, force_memory: bool = False):
        """A resumable online training run (see ``rgraph.training.trainer.Trainer``)."""
        return Trainer(self, params, optimizer, batch, seed, reset_prob, chunk,
                       halt_on_divergence=halt_on_divergence, force_memory=force_memory)

    def train(self, params, xs, ys, optimizer=None, batch: int = 1, seed: int = 0,
              weights=None, resets=None, reset_prob: float = 0.0, chunk: int | None = None,
              progress: bool = False, callback=None, record: str = "step",
              halt_on_divergence: bool = False, force_memory: bool = False):
        """Online training on a sequence: every step advances the cell, forms the gradient
        estimate and (every ``update_every`` steps) updates the parameters.

        xs: (T, n_in) split into ``batch`` contiguous streams of T // batch steps, or
        (T, B, n_in) streams given explicitly. ``chunk``: steps per compiled call
        (default 1000; for ``bptt``, the whole sequence: one exact update per call).
        ``halt_on_divergence``: stop when the loss diverges (``training.health``);
        ``force_memory``: skip the check that the batch's buffers fit in memory."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"train: batch must be an integer >= 1, got {batch!r}")
        if chunk is None:
            T = np.shape(xs)[0] // batch if np.ndim(xs) == 2 else np.shape(xs)[0]
            whole = self.spec.whole_sequence
            chunk = max(1, T) if whole else 1000
        tr = self.trainer(params, optimizer, batch, seed, reset_prob, chunk,
                          halt_on_divergence=halt_on_divergence, force_memory=force_memory)
        return tr.run(xs, ys, weights=weights, resets=resets, progress=progress,
                      callback=callback, record=record)

    def export(self, path):
        """Write this estimator and its training loop as one standalone Python module
        (imports only math, numpy and numba): ``init_params``, ``total_gradient``,
        ``loss`` and ``train`` give the same numbers as rgraph (see ``rgraph.export``)."""
        return export(self, path)


def compile(cell: Cell, estimator: str = "uoro", **kwargs) -> Estimator:  # noqa: A001
    """Compile ``estimator`` for ``cell``: ``rg.compile(cell, "kf-rtrl", loss="mse")``.

    Options: loss ("softmax_xent" | "mse"), backend ("numba" | "numpy"), dtype, output
    (which output the loss sees), blas_threads (default 1; None leaves BLAS alone),
    force_memory (compile even where one stream's buffers exceed the memory available:
    ``MemoryRefused`` otherwise, see ``rgraph.resources``), and
    the estimator's own options (see ``rg.estimators.ESTIMATORS``). Estimators that cannot
    apply to the cell raise ``NotApplicable`` with the analysis's reason.
    """
    return Estimator(cell, estimator, **kwargs)


__all__ = ["Estimator", "compile"]
