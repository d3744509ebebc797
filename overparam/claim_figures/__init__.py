"""Figures for one experiment's own claim, drawn by scripts/report.py beside its generic sweep figures.

Each module of this package registers functions with :func:`figure`; report.py calls those whose
experiment name is the stem of a config in the sweep's CSV (``configs/experiments/NAME.yaml`` and its
CI twin ``configs/ci/NAME.yaml`` alike). A function takes the finished rows of the CSV (dicts of
strings, as :mod:`csv` reads them; ``log_dir`` names each run's TensorBoard folder), the CSV's path
and the output folder, and returns the PNGs it wrote.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections import defaultdict
from pathlib import Path
from typing import Callable

FigureFn = Callable[[list[dict], Path, Path], list[Path]]
REGISTRY: dict[str, list[FigureFn]] = defaultdict(list)


def figure(experiment: str) -> Callable[[FigureFn], FigureFn]:
    """Register the decorated function as a figure of ``experiment`` (a config stem)."""

    def register(fn: FigureFn) -> FigureFn:
        REGISTRY[experiment].append(fn)
        return fn

    return register


def figures_for(experiments: list[str]) -> list[FigureFn]:
    """The registered figure functions of the named experiments (every module of the package imported first)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return [fn for name in experiments for fn in REGISTRY.get(name, [])]


def save_figure(fig, out: Path, name: str, dpi: int = 90) -> list[Path]:
    """Lay out ``fig``, write it to ``out/name`` and close it; the one-element list a figure function returns."""
    import matplotlib.pyplot as plt  # noqa: PLC0415  (report.py chose the backend before importing this package)

    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return [path]


def run_config(row: dict) -> dict:
    """The resolved config of the run behind a CSV row (from ``log_dir/summary.json``); {} when it is gone."""
    path = Path(row.get("log_dir") or "") / "summary.json"
    return json.loads(path.read_text()).get("config", {}) if path.is_file() else {}
