"""SGD's effective noise against the temperature η/B (Mignacco & Urbani 2022, arXiv:2112.10852).

* effective_temperature: the fluctuation–dissipation temperature ``sgd/fdt_temperature`` and the replica
  distance ``replica/distance`` against η/B, one line per width (under- and overparameterized), and the
  two measures against each other.
* sgd_temperature: the replica distance against η/B, one line per batch size.

η/B is each run's logged ``sgd/temperature``. A line is the mean over seeds; where a point has more than
one seed, each seed is drawn as a dot beside it (log axes: no ± bars that cross zero); the legend gives the
slope of a least-squares line through the means on log-log axes.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from overparam.claim_figures import figure, run_config, save_figure
from overparam.report import as_number, experiment_title, power_law_slope

ETA_OVER_B = "sgd/temperature"
FDT = "sgd/fdt_temperature"
REPLICA = "replica/distance"


def batch_size(row: dict) -> Optional[float]:
    """B of a run: the swept ``data.batch_size``, else lr / (η/B)."""
    swept, lr, eta_over_b = as_number(row.get("data.batch_size")), as_number(row.get("model.lr")), as_number(row.get(ETA_OVER_B))
    if swept is not None:
        return swept
    return float(round(lr / eta_over_b)) if lr is not None and eta_over_b else None


def series_by(rows: list[dict], group: Callable[[dict], Optional[float]], tag: str) -> dict[float, dict[float, list[float]]]:
    """``group(row) -> η/B -> [tag value per seed]`` over the rows that logged both (positive values only:
    the axes are logarithmic)."""
    out: dict[float, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key, x, y = group(row), as_number(row.get(ETA_OVER_B)), as_number(row.get(tag))
        if key is not None and x is not None and y is not None and x > 0 and y > 0:
            out[key][x].append(y)
    return out


def width(row: dict) -> Optional[float]:
    """The net's width: the swept ``model.net.width``, else the config's."""
    swept = as_number(row.get("model.net.width"))
    if swept is not None:
        return swept
    net = run_config(row).get("model", {}).get("init_args", {}).get("net", {})
    return as_number(net.get("init_args", {}).get("width"))


def seed_note(series: dict[float, dict[float, list[float]]]) -> str:
    seeds = max((len(v) for by_x in series.values() for v in by_x.values()), default=1)
    return f"line: mean over {seeds} seeds, dots: each seed" if seeds > 1 else "one seed per point"


def draw_lines(ax, series: dict[float, dict[float, list[float]]], label: str) -> None:
    """One line per group (mean over seeds, a marker on every point, the log-log slope in the legend) and a
    dot per seed."""
    for key, by_x in sorted(series.items()):
        xs = np.array(sorted(by_x))
        mean = np.array([np.mean(by_x[x]) for x in xs])
        slope = f" (log-log slope {power_law_slope(xs, mean):.1f})" if len(xs) >= 2 else ""
        (line,) = ax.plot(xs, mean, "-", marker="o", ms=5, lw=1.4, label=label.format(key=key) + slope)
        for x in xs:
            if len(by_x[x]) > 1:
                ax.plot([x] * len(by_x[x]), by_x[x], ".", ms=4, alpha=0.5, color=line.get_color())
    log_axes(ax)


def log_axes(ax) -> None:
    """Log-log axes without crowded minor tick labels."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


@figure("effective_temperature")
def temperature_and_replica_distance(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    fdt = series_by(rows, width, FDT)
    replica = series_by(rows, width, REPLICA)
    if not fdt and not replica:
        return []
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(14, 4.4))
    draw_lines(ax, fdt, "width {key:g}")
    draw_lines(bx, replica, "width {key:g}")
    for m in sorted(set(fdt) & set(replica)):
        pairs = [(np.mean(fdt[m][x]), np.mean(replica[m][x])) for x in sorted(set(fdt[m]) & set(replica[m]))]
        if pairs:
            t, d = np.array(pairs).T
            cx.plot(t, d, "-", marker="o", ms=5, lw=1.4, label=f"width {m:g} (η/B rising along the line)")
    log_axes(cx)
    ax.set_xlabel("η/B (lr / batch size)")
    ax.set_ylabel("FDT temperature  η tr Σ_B / (2P)")
    ax.set_title(f"fluctuation–dissipation temperature ({seed_note(fdt)})", fontsize=9)
    bx.set_xlabel("η/B (lr / batch size)")
    bx.set_ylabel("replica distance  ‖θ_a − θ_b‖² / ‖θ‖²")
    bx.set_title(f"replica distance ({seed_note(replica)})", fontsize=9)
    cx.set_xlabel("FDT temperature (mean over seeds)")
    cx.set_ylabel("replica distance (mean over seeds)")
    cx.set_title("the two measures against each other", fontsize=9)
    for a in (ax, bx, cx):
        a.legend(fontsize=7)
    fig.suptitle(
        "effective_temperature: the FDT temperature (underparameterized) and the replica distance (overparameterized) "
        f"both grow with η/B\n{csv_path}",
        fontsize=9,
    )
    return save_figure(fig, out, "effective_temperature.png")


@figure("sgd_temperature")
def replica_distance_vs_eta_over_b(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    replica = series_by(rows, batch_size, REPLICA)
    if not replica:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    draw_lines(ax, replica, "batch size {key:g}")
    ax.set_xlabel("η/B (lr / batch size)")
    ax.set_ylabel("final replica distance  ‖θ_a − θ_b‖² / ‖θ‖²")
    ax.set_title(seed_note(replica), fontsize=8)
    ax.legend(fontsize=8)
    fig.suptitle(f"{experiment_title('sgd_temperature')} (η/B)\n{csv_path}", fontsize=9)
    return save_figure(fig, out, "sgd_temperature.png")
