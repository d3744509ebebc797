"""How a run ends: its ``status`` in summary.json and the exit code of ``scripts/train.py``.

| status        | exit code | meaning                                                             |
|---------------|-----------|---------------------------------------------------------------------|
| completed     | 0         | fit and test ran to the end                                         |
| failed        | 2         | a bad configuration (one line on stderr; ``EXIT_BAD_CONFIG``)       |
| diverged      | 3         | a non-finite loss stopped training; last.ckpt is the last finite state |
| interrupted   | 130 / 143 | Ctrl-C / SIGTERM (128 + signal number); last.ckpt saved, resumable  |
"""

import json
from pathlib import Path
from typing import Optional

EXIT_OK, EXIT_BAD_CONFIG, EXIT_DIVERGED, EXIT_SIGINT, EXIT_SIGTERM = 0, 2, 3, 130, 143
#: Statuses of a run that is over for good: never resumed, never run again by a sweep.
FINISHED = ("completed", "diverged")
#: The exit code of each finished status.
EXIT_CODES = {"completed": EXIT_OK, "diverged": EXIT_DIVERGED}


def run_status(version_dir: Path) -> Optional[str]:
    """The ``status`` in ``version_dir/summary.json`` (``None`` when there is no readable summary yet)."""
    try:
        return json.loads((version_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
