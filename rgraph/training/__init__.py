"""Training a compiled estimator online.

* ``optim``: the optimizers (``SGD``, ``Adam``) as plain configurations;
* ``loop``: the online loop, as templates copied into every generated module;
* ``trainer``: the ``Trainer`` (a resumable run) and its ``TrainResult``;
* ``checkpoints``: a trainer's state on disk.

Nothing here imports the API: ``rgraph.api`` builds the loop into each module and offers
``Estimator.trainer`` on top of this package.
"""
from .optim import SGD, Adam
from .trainer import Trainer, TrainResult

__all__ = ["SGD", "Adam", "Trainer", "TrainResult"]
