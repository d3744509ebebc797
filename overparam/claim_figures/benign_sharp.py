"""benign_overfitting: clean test accuracy against the scaled signal-to-noise variable of the theory,
one curve per size (n, d), one panel per activation σ(z) = max(0, z)^q.

The variable is the one whose order of magnitude decides benign vs harmful overfitting:

    ReLU (q = 1, Kou et al. 2023):        x = n‖μ‖⁴ / (σ_p⁴ d)
    polynomial ReLU (q > 2, Cao et al.):   x = n·SNR^q = n‖μ‖^q / (σ_p^q d^(q/2)),   SNR = ‖μ‖ / (σ_p √d)

A sharp transition shows as curves of different sizes that collapse onto one another and steepen as
(n, d) grows; the legend gives each curve's width log₁₀(x₀.₉ / x₀.₆) (x where the mean test accuracy
first reaches 0.6 and 0.9, interpolated in log x).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np

from overparam.claim_figures import figure, run_config


def scaled_snr(n: int, dim: int, signal_norm: float, noise_std: float, q: float) -> float:
    """The threshold variable x of the theory: n‖μ‖⁴/(σ_p⁴ d) for ReLU (q = 1), n·(‖μ‖/(σ_p √d))^q for q > 1.

    >>> scaled_snr(100, 1000, 2.0, 1.0, 1.0), round(scaled_snr(50, 500, 11.03, 1.0, 3.0), 2)
    (1.6, 6.0)
    """
    if q == 1:
        return n * signal_norm**4 / (noise_std**4 * dim)
    return n * (signal_norm / (noise_std * math.sqrt(dim))) ** q


def crossing(x: np.ndarray, acc: np.ndarray, level: float) -> Optional[float]:
    """First x (sorted, > 0) where ``acc`` reaches ``level``, interpolated linearly in log x; None if never.

    >>> crossing(np.array([1.0, 100.0]), np.array([0.5, 1.0]), 0.75)
    10.0
    """
    for i, a in enumerate(acc):
        if a >= level:
            if i == 0:
                return None  # already above at the smallest x: the crossing is off the grid
            t = (level - acc[i - 1]) / (a - acc[i - 1])
            return float(10 ** ((1 - t) * np.log10(x[i - 1]) + t * np.log10(x[i])))
    return None


def transition_width(x: np.ndarray, acc: np.ndarray, low: float = 0.6, high: float = 0.9) -> Optional[float]:
    """log₁₀(x_high / x_low): decades of x over which the test accuracy climbs from ``low`` to ``high``.

    >>> transition_width(np.array([0.1, 1.0, 10.0]), np.array([0.5, 0.7, 1.0]))  # 10^-0.5 to 10^(2/3)
    1.166667
    """
    lo, hi = crossing(x, acc, low), crossing(x, acc, high)
    return None if lo is None or hi is None else round(math.log10(hi / lo), 6)


def run_point(row: dict) -> Optional[tuple[float, tuple[int, int, bool], float, float]]:
    """(q, (n, d, trained second layer), x, test acc) of a finished row; None without config or metric."""
    config = run_config(row)
    if not config or not row.get("test/acc"):
        return None
    data = config.get("data", {}).get("init_args", {})
    net = config.get("model", {}).get("init_args", {}).get("net", {}).get("init_args", {})
    q = float(net.get("relu_power", 1.0))
    n, dim = int(data["n_train"]), int(data["dim"])
    x = scaled_snr(n, dim, float(data["signal_norm"]), float(data.get("noise_std", 1.0)), q)
    return q, (n, dim, bool(net.get("train_second_layer", False))), x, float(row["test/acc"])


@figure("benign_overfitting")
def accuracy_against_scaled_snr(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    curves: dict[float, dict[tuple, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        point = run_point(row)
        if point is not None:
            q, size, x, acc = point
            curves[q][size][round(x, 6)].append(acc)
    if not curves:
        return []
    fig, axes = plt.subplots(1, len(curves), figsize=(6.0 * len(curves), 4.4), squeeze=False)
    for ax, q in zip(axes[0], sorted(curves)):
        for (n, dim, trained), points in sorted(curves[q].items()):
            x = np.array(sorted(points))
            mean = np.array([np.mean(points[v]) for v in x])
            std = np.array([np.std(points[v]) for v in x])
            seeds = max(len(v) for v in points.values())
            width = transition_width(x, mean)
            width_text = f"width {width:.2f} dec" if width is not None else "width off grid"
            label = f"n={n}, d={dim}{', 2nd layer trained' if trained else ''} ({seeds} seeds; {width_text})"
            line = ax.errorbar(x, mean, yerr=std, marker="o", ms=4, capsize=3, ls="--" if trained else "-", label=label)
            runs = [(v, a) for v in x for a in points[v]]  # each run: its own jump is sharper than the mean's
            ax.scatter(*zip(*runs), s=8, alpha=0.35, color=line[0].get_color())
        for level in (0.6, 0.9):
            ax.axhline(level, color="gray", ls=":", lw=0.8)
        ax.axvline(1.0, color="black", ls=":", lw=0.8)
        ax.set_xscale("log")
        name = "ReLU (Kou et al. 2023)" if q == 1 else f"ReLU^{q:g} (Cao et al. 2022)"
        ax.set_xlabel("n‖μ‖⁴ / (σ_p⁴ d)" if q == 1 else f"n·SNR^{q:g} = n‖μ‖^{q:g} / (σ_p √d)^{q:g}")
        ax.set_ylabel("clean test accuracy (mean ± std; dots: runs)")
        ax.set_title(f"{name}; every run fits its 10%-flipped train labels", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.set_ylim(0.4, 1.02)
    fig.suptitle(f"benign_overfitting: benign above the SNR threshold, harmful below\n{csv_path}", fontsize=8)
    fig.tight_layout()
    path = out / "benign_overfitting_sharp.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]
