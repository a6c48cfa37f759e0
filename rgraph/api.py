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
from .autodiff import Program
from .backends import get_backend
from .errors import DataError
from .estimators import make_spec
from .estimators.base import layout_size
from .graph import Cell, init_param
from .training import loop
from .training.optim import SGD
from .training.trainer import Trainer, raise_if_bad

LOSSES = {name: loss.helper for name, loss in losses.LOSSES.items()}  # name -> helper
_BLAS = None


def blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries (numba's np.dot calls scipy's)."""
    global _BLAS
    if _BLAS is None:
        import scipy.linalg  # noqa: F401  (load the OpenBLAS numba's np.dot calls)
        from threadpoolctl import ThreadpoolController
        _BLAS = ThreadpoolController()
    return _BLAS
DTYPES = {"float64": np.float64, "float32": np.float32}


class Estimator:
    """One estimator compiled for one cell (see ``rg.compile``)."""

    def __init__(self, cell: Cell, estimator: str = "uoro", *, loss: str = "softmax_xent",
                 backend: str = "numba", dtype="float64", output: str | None = None,
                 blas_threads: int | None = 1, **options):
        if not isinstance(cell, Cell):
            raise TypeError(f"compile: expected an rgraph Cell, got {type(cell).__name__}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        dtype = np.dtype(dtype).name
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
        self.cell = cell
        self.loss_name = loss
        # the GEMMs of a step are small: one BLAS thread is faster, and spinning BLAS
        # threads slow everything down 10-100x when another process wants the cores
        self.blas_threads = blas_threads
        self.dtype = np.dtype(dtype)
        self.program = Program(cell, output)
        self.program.output_ids_loss[0]     # an ambiguous output fails here, by name
        self.analysis = Analysis(cell)
        self.spec = make_spec(estimator, self.program, self.analysis, **options)
        self.name = self.spec.describe()
        self.backend = get_backend(backend)
        consts, kernels, funcs = self.spec.module_parts()
        title = (f"cell '{cell.name}', estimator {self.name}, loss {loss}, {dtype}\n# "
                 + "\n# ".join(str(cell).splitlines()))
        src = codegen.assemble(title, self.backend, consts, kernels, funcs + loop.TEMPLATES,
                               aliases={"rg_loss": LOSSES[loss]}, dtype=str(self.dtype))
        stem = re.sub(r"\W", "_", f"{cell.name}_{self.name}")
        self.module, self.path = codegen.load(src, self.backend, stem)
        p = self.program
        self.n_state, self.n_in, self.n_params = p.n_state, p.n_in, p.n_params
        self.n_out = self.spec.nout
        self.blocks = p.param_blocks

    def __repr__(self):
        return (f"Estimator({self.name} on cell '{self.cell.name}', loss={self.loss_name}, "
                f"backend={self.backend.name}, {self.n_params:,} params)")

    @property
    def source(self) -> str:
        """The generated module, as written to disk."""
        return self.path.read_text()

    # ------------------------------------------------------------- parameters
    def init_params(self, seed: int = 0) -> dict:
        """Fresh parameters from each param's init scheme (same seed, same numbers)."""
        rng = np.random.default_rng(seed)
        return {b.name: init_param(self.cell.nodes[b.node], rng) for b in self.blocks}

    def pack(self, params: dict) -> np.ndarray:
        if not isinstance(params, dict):
            raise DataError(f"params must be a dict name -> array (see init_params), got "
                            f"{type(params).__name__}")
        names = [b.name for b in self.blocks]
        missing = [n for n in names if n not in params]
        extra = [n for n in params if n not in names]
        if missing or extra:
            raise DataError(f"params for cell '{self.cell.name}': missing {missing}, "
                            f"unknown {extra}; expected exactly {names}")
        th = np.empty(self.n_params, dtype=self.dtype)
        for b in self.blocks:
            a = np.asarray(params[b.name])
            if a.shape != tuple(b.shape):
                raise DataError(f"param '{b.name}' has shape {a.shape}, expected "
                                f"{tuple(b.shape)}")
            if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
                raise DataError(f"param '{b.name}' has dtype {a.dtype}; pass real numbers")
            if not np.all(np.isfinite(a)):
                raise DataError(f"param '{b.name}' has non-finite entries")
            th[b.off:b.off + b.size] = a.ravel()
        return th

    def unpack(self, flat: np.ndarray) -> dict:
        return {b.name: np.array(flat[b.off:b.off + b.size], dtype=np.float64)
                .reshape(b.shape) for b in self.blocks}

    # ------------------------------------------------------------------ data
    def check_data(self, xs, ys, weights=None, resets=None, batch_axis=False):
        """Validated (T, B, X) inputs, targets, weights and resets for the compiled loop.

        xs: (T, X) or, with batch_axis, (T, B, X); ys: class ids (T[, B]) for
        softmax_xent or vectors (T[, B], n_out) for mse."""
        xs = np.asarray(xs)
        want = "(T, B, n_in)" if batch_axis else "(T, n_in)"
        nd = 3 if batch_axis else 2
        if xs.ndim != nd or xs.shape[-1] != self.n_in or xs.shape[0] == 0:
            raise DataError(f"xs has shape {xs.shape}; expected {want} with n_in = "
                            f"{self.n_in} for cell '{self.cell.name}'")
        if not np.issubdtype(xs.dtype, np.number) or np.iscomplexobj(xs):
            raise DataError(f"xs has dtype {xs.dtype}; pass real numbers")
        if not np.all(np.isfinite(xs)):
            t = int(np.argwhere(~np.isfinite(xs))[0][0])
            raise DataError(f"xs has a non-finite value (first at step {t}); clean the data "
                            f"before training")
        lead = xs.shape[:-1]
        ys = np.asarray(ys)
        if self.loss_name == "softmax_xent":
            if ys.shape != lead:
                raise DataError(f"ys has shape {ys.shape}; softmax_xent wants integer class "
                                f"ids of shape {lead} (one per step)")
            if not np.issubdtype(ys.dtype, np.integer):
                if np.issubdtype(ys.dtype, np.floating) and np.all(np.isfinite(ys)) and \
                        np.all(ys == np.round(ys)):
                    ys = ys.astype(np.int64)
                else:
                    raise DataError(f"ys has dtype {ys.dtype}; softmax_xent wants integer "
                                    f"class ids in [0, {self.n_out})")
            if ys.size and (ys.min() < 0 or ys.max() >= self.n_out):
                raise DataError(f"ys has class ids in [{ys.min()}, {ys.max()}] but the output "
                                f"has {self.n_out} classes")
            ys = ys.astype(np.int64)
        else:
            if ys.shape != lead + (self.n_out,):
                raise DataError(f"ys has shape {ys.shape}; mse wants targets of shape "
                                f"{lead + (self.n_out,)}")
            if not np.all(np.isfinite(ys)):
                raise DataError("ys has non-finite values; mse targets must be finite")
            ys = ys.astype(self.dtype)
        if weights is None:
            ws = np.ones(lead, dtype=self.dtype)
        else:
            ws = np.asarray(weights, dtype=np.float64)
            if ws.shape != lead or not np.all(np.isfinite(ws)) or np.any(ws < 0):
                raise DataError(f"weights must be finite, >= 0 and of shape {lead}; got "
                                f"shape {ws.shape}")
            ws = ws.astype(self.dtype)
        if resets is None:
            rs = np.zeros(lead, dtype=np.bool_)
        else:
            rs = np.asarray(resets, dtype=np.bool_)
            if rs.shape != lead:
                raise DataError(f"resets must have shape {lead}, got {rs.shape}")
        if not batch_axis:
            xs, ys, ws, rs = xs[:, None], ys[:, None], ws[:, None], rs[:, None]
        return (np.ascontiguousarray(xs, dtype=self.dtype), np.ascontiguousarray(ys),
                np.ascontiguousarray(ws), np.ascontiguousarray(rs))

    def call(self, fn: str, *args):
        """Call a generated function, with the BLAS thread limit (non-finite values are
        checked, not warned about)."""
        with np.errstate(all="ignore"):
            if self.blas_threads is None:
                return getattr(self.module, fn)(*args)
            with blas_controller().limit(limits=self.blas_threads):
                return getattr(self.module, fn)(*args)

    # ------------------------------------------------------------- gradients
    def new_state(self, batch: int, T: int | None = None):
        """Zeroed (states, estimator state) for ``batch`` streams."""
        K = self.spec.segment_length(T)
        E = np.zeros((batch, layout_size(self.spec.state_layout(), K)), dtype=self.dtype)
        return np.zeros((batch, self.n_state), dtype=self.dtype), E

    def total_gradient(self, params, xs, ys, seed: int = 0, weights=None, resets=None,
                       return_loss: bool = False):
        """The sum over a sequence of this estimator's per-step gradient estimates at fixed
        parameters, states starting at zero (loss Σ_t l_t). Exact for rtrl and bptt; for
        the stochastic estimators its mean over seeds is the exact gradient."""
        th = self.pack(params)
        xs, ys, ws, rs = self.check_data(xs, ys, weights, resets)
        T = xs.shape[0]
        states, E = self.new_state(1, T)
        g = np.zeros(self.n_params, dtype=self.dtype)
        losses = np.zeros((T, 1), dtype=self.dtype)
        rng = np.random.default_rng(seed)
        opt, hp = np.zeros(1 + 2 * self.n_params, dtype=self.dtype), SGD(0.0).hyper()
        bad = self.call("run", th, states, E, xs, ys, ws, rs, rng, g, opt, hp, losses, 0,
                        self.spec.update_every(T), False)
        raise_if_bad(bad, losses, 0, "total_gradient")
        self.call("flush_all", th, E, g, rng)
        if not np.all(np.isfinite(g)):
            raise_if_bad(-T, losses, 0, "total_gradient")
        grad = self.unpack(g)
        return (grad, float(losses.sum())) if return_loss else grad

    def loss(self, params, xs, ys, weights=None, resets=None) -> float:
        """Mean per-step loss of a forward pass from zero state (no learning)."""
        th = self.pack(params)
        xs, ys, ws, rs = self.check_data(xs, ys, weights, resets)
        states = np.zeros((1, self.n_state), dtype=self.dtype)
        losses = np.zeros((xs.shape[0], 1), dtype=self.dtype)
        self.call("evaluate", th, states, xs, ys, ws, rs, losses)
        return float(losses.sum() / max(float(ws.sum()), 1e-300))

    # --------------------------------------------------------------- training
    def trainer(self, params, optimizer=None, batch: int = 1, seed: int = 0,
                reset_prob: float = 0.0, chunk: int = 1000):
        """A resumable online training run (see ``rgraph.training.trainer.Trainer``)."""
        return Trainer(self, params, optimizer, batch, seed, reset_prob, chunk)

    def train(self, params, xs, ys, optimizer=None, batch: int = 1, seed: int = 0,
              weights=None, resets=None, reset_prob: float = 0.0, chunk: int | None = None,
              progress: bool = False, callback=None, record: str = "step"):
        """Online training on a sequence: every step advances the cell, forms the gradient
        estimate and (every ``update_every`` steps) updates the parameters.

        xs: (T, n_in) split into ``batch`` contiguous streams of T // batch steps, or
        (T, B, n_in) streams given explicitly. ``chunk``: steps per compiled call
        (default 1000; for ``bptt``, the whole sequence: one exact update per call)."""
        if chunk is None:
            T = np.shape(xs)[0] // batch if np.ndim(xs) == 2 else np.shape(xs)[0]
            whole = self.spec.segment and getattr(self.spec, "k", 0) is None
            chunk = max(1, T) if whole else 1000
        tr = self.trainer(params, optimizer, batch, seed, reset_prob, chunk)
        return tr.run(xs, ys, weights=weights, resets=resets, progress=progress,
                      callback=callback, record=record)

    def export(self, path):
        """Write this estimator and its training loop as one standalone Python module
        (imports only math, numpy and numba): ``init_params``, ``total_gradient``,
        ``loss`` and ``train`` give the same numbers as rgraph (see ``rgraph.export``)."""
        from .export import export
        return export(self, path)


def compile(cell: Cell, estimator: str = "uoro", **kwargs) -> Estimator:  # noqa: A001
    """Compile ``estimator`` for ``cell``: ``rg.compile(cell, "kf-rtrl", loss="mse")``.

    Options: loss ("softmax_xent" | "mse"), backend ("numba" | "numpy"), dtype, output
    (which output the loss sees), blas_threads (default 1; None leaves BLAS alone), and
    the estimator's own options (see ``rg.estimators.ESTIMATORS``). Estimators that cannot
    apply to the cell raise ``NotApplicable`` with the analysis's reason.
    """
    return Estimator(cell, estimator, **kwargs)


__all__ = ["Estimator", "compile"]
