"""The diagnostics' benchmark rows alone, as JSON lines: ``python scripts/bench_diagnostics.py [--quick] [--only ...]``.

See overparam/bench_diagnostics.py.
"""

import sys

from overparam.bench_diagnostics import main

if __name__ == "__main__":
    sys.exit(main())
