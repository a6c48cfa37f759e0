"""Training: the optimizers and the online-loop templates compiled into every module."""
