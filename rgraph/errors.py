"""The errors rgraph raises. Every message names the node, the shapes and the fix.

``RGraphError`` and ``DataError`` are defined in ``rgraph.runtime`` (which an exported
module carries, and which raises them) and are the same classes here."""
from .runtime import DataError, RGraphError


class ShapeError(RGraphError):
    """Operands whose shapes do not fit the op."""


class GraphError(RGraphError):
    """A cell whose structure is wrong (missing update, cycle, unknown op...)."""


class NameError_(RGraphError):
    """A user name that is not a valid identifier, is reserved, or collides."""


class NotApplicable(RGraphError):
    """An estimator that cannot apply to a cell; the message gives the analysis's reason."""


class MemoryRefused(RGraphError):
    """A configuration whose buffers would not fit in the memory available (the message
    gives the figures; ``force_memory=True`` / ``--force-memory`` tries anyway)."""


class TrainingWarning(UserWarning):
    """Something in a training run that is likely wrong but does not stop it."""


class DivergenceWarning(TrainingWarning):
    """The smoothed loss has stayed far above its best (see ``training.health``)."""


class CollapseWarning(TrainingWarning):
    """The loss has left its best level, by a margin, for long (see
    ``training.health``)."""


class InitWarning(TrainingWarning):
    """The first loss is far above what predicting nothing would give (see
    ``training.health``)."""


__all__ = ["RGraphError", "ShapeError", "GraphError", "NameError_", "DataError",
           "NotApplicable", "MemoryRefused", "TrainingWarning", "DivergenceWarning",
           "CollapseWarning", "InitWarning"]
