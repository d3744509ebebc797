"""PNG figures from training logs or a sweep CSV: ``python scripts/report.py PATH [--out DIR]``.

See overparam/report.py.
"""

import sys

from overparam.report import main

if __name__ == "__main__":
    sys.exit(main())
