"""``scripts/train.py ARGS`` as a separate process, forked from the preloaded server of
overparam/workers.py (the one scripts/sweep.py uses), so a test pays Lightning's import once per
session instead of once per run. The run is still a process of its own: its own exit code, signal
handlers, globals and stdout/stderr. Tests of what a user sees at start-up (import-time notices on
stderr) start a real ``python scripts/train.py`` instead."""

import subprocess
import tempfile
from pathlib import Path

from overparam import workers
from overparam.paths import TRAIN_SCRIPT


def train_process(args: list[str], timeout: float = 300, threads: int = 1) -> subprocess.CompletedProcess:
    """Run ``scripts/train.py args`` in a forked process; its exit code, stdout and stderr."""
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        code = workers.train(list(args), out, threads, err_log=err, timeout=timeout)
        return subprocess.CompletedProcess([str(TRAIN_SCRIPT), *args], code, out.read_text(), err.read_text())
