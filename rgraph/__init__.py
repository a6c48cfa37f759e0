"""rgraph: a compiler for online gradient estimators of recurrent networks."""
__version__ = "0.1.0"

from .errors import (DataError, GraphError, NameError_, NotApplicable, RGraphError,  # noqa: E402
                     ShapeError)
from .graph import (Cell, concat, const, exp, log, matmul, pointwise, relu, sigmoid,  # noqa: E402
                    softplus, split, tanh)
