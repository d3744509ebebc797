"""Fit then test a config: ``python scripts/train.py [--config X.yaml] [--model.lr 0.05 ...]``.

With no ``--config`` it runs configs/default.yaml. ``--help`` lists every option. See overparam/cli.py.
"""

import sys

from overparam.cli import main

if __name__ == "__main__":
    sys.exit(main())
