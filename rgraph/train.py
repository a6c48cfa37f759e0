"""Deprecated: the trainer lives in ``rgraph.training.trainer`` (also ``rg.Trainer``)."""
import warnings

from .training.trainer import Trainer, TrainResult

warnings.warn("rgraph.train is deprecated: use rg.Trainer / rg.TrainResult or "
              "rgraph.training.trainer", DeprecationWarning, stacklevel=2)

__all__ = ["Trainer", "TrainResult"]
