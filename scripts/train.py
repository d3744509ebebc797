"""Fit then test a config: ``python scripts/train.py [--config X.yaml] [--model.lr 0.05 ...]``.

With no ``--config`` it runs configs/default.yaml. ``--help`` lists every option, ``--list`` every net,
data set and diagnostic; both print from a cache when nothing changed (see overparam/help_cache.py).
See overparam/cli.py.
"""

import sys

from overparam.help_cache import main

if __name__ == "__main__":
    sys.exit(main())
