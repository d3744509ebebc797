"""Fit then test a config: ``python scripts/train.py [--config X.yaml] [--model.lr 0.05 ...]``.

With no arguments it runs configs/default.yaml. ``--help`` lists every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightning_modules.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
