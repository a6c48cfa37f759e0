"""rgraph: a compiler for online gradient estimators of recurrent networks.

Write one step of a cell in the DSL, ``rg.analyze`` it (projection spaces, Kronecker
structure), and ``rg.compile`` it into RTRL, BPTT/TBPTT, UORO, projected UORO, KF-RTRL
or DODGE, with generated numba (or numpy) code you can read: ``est.source``.

The pipeline, one module per stage: graph (DSL, IR) -> analysis -> autodiff (forward,
jvp, vjp kernels) -> backends (printers) -> codegen (modules on disk) -> estimators ->
api (compile, total_gradient) -> training (optimizers, loop, Trainer, checkpoints);
``rg.sweep`` runs grids of training runs on Dask distributed (``rgraph.sweeps``).
"""
__version__ = "0.1.0"

from . import cells, families, plots      # families: the report's families table
from .analysis import analyze
from .api import Estimator, compile, precompile
from .checks import check_derivatives, compare_backends
from .errors import (CollapseWarning, DataError, DivergenceWarning, GraphError, InitWarning,
                     MemoryRefused, NameError_, NotApplicable, RGraphError, ShapeError,
                     TrainingWarning)
from .estimators import ESTIMATORS
from .graph import (SCALAR_FUNCTIONS, Cell, concat, const, matmul, pointwise,
                    register_surrogate, scalar_function, spike, split)
from .jaxio import from_jax, to_jax     # JAX is imported only when these run
from .training import SGD, Adam, Trainer, TrainResult
from .run import RunConfig
from .sweeps import sweep
from .variance import VarianceResult, variance, variance_vs_size

globals().update(SCALAR_FUNCTIONS)   # rg.tanh, rg.stop_gradient, ...: one per registry entry

__all__ = [
    "Cell", "concat", "const", "matmul", "pointwise", "scalar_function", "split", "spike",
    "register_surrogate", "from_jax", "to_jax",
    *SCALAR_FUNCTIONS, "cells", "analyze", "compile", "precompile", "Estimator", "Trainer",
    "TrainResult", "SGD", "Adam", "ESTIMATORS", "check_derivatives", "compare_backends",
    "variance", "variance_vs_size", "VarianceResult", "sweep", "RunConfig", "plots",
    "RGraphError", "ShapeError", "GraphError", "NameError_",
    "DataError", "NotApplicable", "MemoryRefused", "TrainingWarning", "DivergenceWarning",
    "CollapseWarning", "InitWarning",
]
