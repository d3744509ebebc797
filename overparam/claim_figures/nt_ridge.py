"""nt_ridge: the trained net against its infinite-width baselines (Montanari & Zhong, 2020).

Left: test loss against width, the trained net (mean ± std over seeds) beside ridgeless NT regression on
the analytic kernel and polynomial ridge of degree ℓ = ⌊log n / log d⌋ and ℓ − 1 (lines: they do not depend
on the width). Middle: test loss of polynomial ridge against its degree, with NT ridge as a line: the curve
meets it at ℓ. Right: ‖K_0 − Θ‖_F/‖Θ‖_F at init against width, log-log, with the fitted slope and a −½ guide.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from overparam.claim_figures import figure, save_figure

WIDTH = "model.net.width"
NT, POLY, DEGREE, DISTANCE = (
    "baseline/nt_ridge_test_loss",
    "baseline/poly_ridge_test_loss",
    "baseline/poly_degree",
    "kernel/analytic_distance",
)


def _number(row: dict, key: str) -> float:
    try:
        value = float(row.get(key))
    except (TypeError, ValueError):
        return math.nan
    return value


def _by_width(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Widths (sorted) and the mean and std over seeds of ``key`` at each."""
    groups = defaultdict(list)
    for row in rows:
        width, value = _number(row, WIDTH), _number(row, key)
        if math.isfinite(width) and math.isfinite(value):
            groups[width].append(value)
    widths = np.array(sorted(groups))
    return widths, np.array([np.mean(groups[w]) for w in widths]), np.array([np.std(groups[w]) for w in widths])


def _mean(rows: list[dict], key: str) -> float:
    values = [v for v in (_number(r, key) for r in rows) if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


@figure("nt_ridge")
def nt_ridge_figure(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    """``nt_ridge.png``: the three panels of the module docstring (the width panels need a width sweep)."""
    rows = [r for r in rows if math.isfinite(_number(r, NT))]
    if not rows:
        return []
    degree = int(round(_mean(rows, DEGREE)))
    nt = _mean(rows, NT)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8))
    loss_ax, degree_ax, distance_ax = axes

    widths, net, net_std = _by_width(rows, "test/loss")
    if len(widths):
        loss_ax.errorbar(widths, net, yerr=net_std, fmt="-o", ms=4, capsize=3, label="trained net (test/loss)")
    for value, style, label in (
        (nt, "-", "NT ridge (analytic NTK, ridgeless)"),
        (_mean(rows, POLY), "--", f"polynomial ridge, degree ℓ = {degree}"),
        (_mean(rows, f"{POLY}/degree_{degree - 1}"), ":", f"polynomial ridge, degree {degree - 1}"),
    ):
        if math.isfinite(value):
            loss_ax.axhline(value, ls=style, color="gray" if style != "-" else "black", lw=1.2, label=label)
    loss_ax.set(xscale="log", yscale="log", xlabel="width m", ylabel="test loss (½ MSE)", title="trained net vs infinite-width baselines")
    loss_ax.legend(fontsize=7)

    degrees = sorted(int(k.rsplit("_", 1)[1]) for k in rows[0] if k.startswith(f"{POLY}/degree_"))
    poly = [_mean(rows, f"{POLY}/degree_{k}") for k in degrees]
    degree_ax.plot(degrees, poly, "-o", ms=4, label="polynomial ridge (self-induced ridge)")
    degree_ax.axhline(nt, color="black", lw=1.2, label="NT ridge")
    degree_ax.axvline(degree, color="gray", ls=":", label="ℓ = ⌊log n / log d⌋")
    degree_ax.set(yscale="log", xlabel="polynomial degree", ylabel="test loss (½ MSE)", title="NT ridge ≈ polynomial ridge of degree ℓ")
    degree_ax.set_xticks(degrees)
    degree_ax.legend(fontsize=7)

    widths, distance, distance_std = _by_width(rows, DISTANCE)
    if len(widths) >= 2:
        slope = float(np.polyfit(np.log(widths), np.log(distance), 1)[0])
        distance_ax.errorbar(widths, distance, yerr=distance_std, fmt="-o", ms=4, capsize=3, label=f"‖K₀ − Θ‖/‖Θ‖ (slope {slope:.2f})")
        distance_ax.plot(widths, distance[0] * (widths / widths[0]) ** -0.5, ":", color="gray", label="slope −½ guide")
        distance_ax.set(xscale="log", yscale="log")
        distance_ax.legend(fontsize=7)
    distance_ax.set(xlabel="width m", ylabel="relative Frobenius distance", title="empirical NTK at init → analytic NTK")

    fig.suptitle(f"nt_ridge: NT ridge ~ polynomial ridge of degree log n / log d; empirical NTK -> analytic — {csv_path}", fontsize=8)
    return save_figure(fig, out, "nt_ridge.png")
