"""Speed benchmarks of rgraph's compiled training loops, with the baselines they are
measured against (``handwritten``: UORO and KF-RTRL by hand in NumPy).

Not part of the installed package: this folder lives next to ``rgraph/`` in a source
checkout, where ``rgraph bench`` and ``examples/bench.py`` find it.
"""
