"""Grid sweeps: ``python scripts/sweep.py --config X.yaml --grid model.net.width=64,256 --seeds 3 --out DIR``.

One scripts/train.py run per grid point and seed, one CSV row per run. See overparam/sweep.py.
"""

import sys

from overparam.sweep import main

if __name__ == "__main__":
    sys.exit(main())
