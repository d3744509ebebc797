"""The sweep table ``results.csv``: one row per run; overparam/sweep.py writes it, overparam/report.py reads it.

Columns, in this order::

    config_hash, config, run_id, <swept keys>, seed, status, wall_time_s, returncode, log_dir, <metrics>

``config_hash`` names everything that determined the run besides its grid point and seed (the
config file's content, the configs always loaded and the extra arguments; see overparam/sweep.py),
``config`` is the config file as given, so rows of different configurations never pass for one
another: a row's key is ``(config_hash, run_id)``. The metrics are the final value of every scalar
in the run's summary.json, sorted by name. The file is rewritten whole through a temporary file and
a rename, so it never holds a half-written row.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from overparam.status import EXIT_CODES, FINISHED  # noqa: F401  (FINISHED: re-exported for the readers of the table)

IDENTITY = ("config_hash", "config")
RUN_ID = "run_id"
RUN = ("seed", "status", "wall_time_s", "returncode", "log_dir")
FIXED = frozenset((*IDENTITY, RUN_ID, *RUN))

Key = tuple[str, str]


def row_key(row: Mapping[str, object]) -> Key:
    """``(config_hash, run_id)``; rows written before the hash existed have ``""`` for it."""
    return str(row.get("config_hash") or ""), str(row[RUN_ID])


def swept_columns(header: Sequence[str]) -> list[str]:
    """The swept keys of a CSV header: the columns between ``run_id`` and ``seed``.

    >>> swept_columns(["config_hash", "config", "run_id", "model.lr", "seed", "status", "train/loss"])
    ['model.lr']
    """
    if RUN_ID not in header or "seed" not in header:
        return []
    return list(header[header.index(RUN_ID) + 1 : header.index("seed")])


def metric_columns(header: Sequence[str]) -> list[str]:
    """The metric columns of a CSV header: neither fixed nor swept."""
    swept = set(swept_columns(header))
    return [c for c in header if c not in FIXED and c not in swept]


def read_rows(path: Path) -> tuple[dict[Key, dict], list[str]]:
    """The rows of ``path`` by :func:`row_key`, and its swept columns (empty when there is no file)."""
    if not path.exists():
        return {}, []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = {row_key(row): row for row in reader}
        return rows, swept_columns(reader.fieldnames or [])


def write_rows(path: Path, rows: Iterable[Mapping[str, object]], swept: Sequence[str]) -> None:
    """Rewrite the whole CSV, columns in the order of the module docstring."""
    rows = list(rows)
    metrics = sorted({k for row in rows for k in row} - FIXED - set(swept))
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*IDENTITY, RUN_ID, *swept, *RUN, *metrics], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def summary_row(summary_path: Path) -> dict:
    """The run's columns from its own summary.json: status, wall time, log folder, final metrics, and the
    exit code its status implies (a finished run's row can be rebuilt from this alone)."""
    summary = json.loads(summary_path.read_text())
    row = {
        **summary.get("metrics", {}),
        "status": summary["status"],
        "wall_time_s": summary["wall_time_s"],
        "log_dir": str(summary_path.parent),
    }
    if summary["status"] in EXIT_CODES:
        row["returncode"] = EXIT_CODES[summary["status"]]
    return row
