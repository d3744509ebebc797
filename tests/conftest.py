"""Tests import their shared helpers (experiment_runner, diag_cases, ...) from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
