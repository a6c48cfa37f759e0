"""Deprecated: the optimizers live in ``rgraph.training.optim`` (also ``rg.SGD``, ``rg.Adam``)."""
import warnings

from .training.optim import SGD, Adam

warnings.warn("rgraph.optim is deprecated: use rg.SGD / rg.Adam or rgraph.training.optim",
              DeprecationWarning, stacklevel=2)

__all__ = ["SGD", "Adam"]
