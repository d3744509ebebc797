"""Benchmarks as side-by-side ratios: ``python scripts/benchmark.py [--quick] [--only GROUPS] [--out results.json]``.

See overparam/benchmark.py (training loop, sweeps, ensembles) and overparam/bench_diagnostics.py.
"""

import sys

from overparam.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
