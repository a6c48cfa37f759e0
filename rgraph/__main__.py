"""``python -m rgraph`` is the ``rgraph`` command."""
import sys

from .cli import main

sys.exit(main())
