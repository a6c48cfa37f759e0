"""rgraph: a compiler for online gradient estimators of recurrent networks."""
__version__ = "0.1.0"

from .errors import (DataError, GraphError, NameError_, NotApplicable, RGraphError,  # noqa: E402
                     ShapeError)
from .graph import (Cell, concat, const, exp, log, matmul, pointwise, relu, sigmoid,  # noqa: E402
                    softplus, split, tanh)
from . import cells  # noqa: E402
from .analysis import analyze  # noqa: E402
from .api import Estimator, Trainer, TrainResult, compile  # noqa: E402
from .optim import SGD, Adam  # noqa: E402
from .estimators import ESTIMATORS  # noqa: E402
