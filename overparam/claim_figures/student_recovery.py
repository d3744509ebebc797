"""student_recovery: below a loss threshold every non-negligible student neuron sits on a teacher neuron,
the loss goes to 0, and the rate does not depend on the student's width (Zhou, Ge & Jin, 2021).

The rate of one run is the least-squares slope s of ln L_t against the step t over the steps where the
training loss has fallen below ``THRESHOLD`` (from the first such step on) and is still above ``FLOOR``
(float32 rounding, where the curve stops carrying information): L_t ≈ C e^{s t}, s < 0. A run that never
falls below the threshold has no rate; the figure counts those per width.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from overparam.claim_figures import figure, save_figure

THRESHOLD = 1e-3  #: train/loss below which the local theory applies (the seed's "loss lower than a threshold")
FLOOR = 1e-9  #: train/loss below which float32 rounding dominates; left out of the fit
WIDTH_KEY = "model.net.width"


def loss_rate(steps: np.ndarray, losses: np.ndarray, threshold: float = THRESHOLD, floor: float = FLOOR) -> tuple[float, Optional[int]]:
    """Slope of ln L against the step once L < ``threshold`` (module docstring), and the step it first got there.

    Returns ``(nan, None)`` when the loss never falls below ``threshold``, ``(nan, t0)`` when fewer than
    three points lie between ``threshold`` and ``floor``.

    >>> t = np.arange(100.0)
    >>> slope, t0 = loss_rate(t, np.exp(-0.1 * t))
    >>> round(slope, 9), t0
    (-0.1, 70)
    """
    below = np.nonzero(losses < threshold)[0]
    if len(below) == 0:
        return math.nan, None
    first = below[0]
    keep = np.arange(first, len(losses))
    keep = keep[losses[keep] > floor]
    if len(keep) < 3:
        return math.nan, int(steps[first])
    return float(np.polyfit(steps[keep], np.log(losses[keep]), 1)[0]), int(steps[first])


def run_width(row: dict) -> Optional[int]:
    """The student's width: the swept column, else the run's own summary.json."""
    if row.get(WIDTH_KEY):
        return int(float(row[WIDTH_KEY]))
    summary = Path(row.get("log_dir") or "") / "summary.json"
    if summary.is_file():
        return int(json.loads(summary.read_text())["config"]["model"]["init_args"]["net"]["init_args"]["width"])
    return None


def number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def width_ticks(ax, widths: list[int]) -> None:
    """One labelled tick per width on a log x axis, no minor labels."""
    import matplotlib.ticker

    ax.set_xticks(widths, [str(w) for w in widths])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


@figure("student_recovery")
def student_recovery_figure(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    """``student_recovery.png``: loss curves by width, the rate after the threshold against width, and the
    final student-side recovery (student min-max cosine, stray mass, teacher min-max cosine) against width."""
    import matplotlib.pyplot as plt

    from overparam.report import draw, power_law_slope, read_scalars

    runs = []  # (width, steps, losses, rate, row)
    for row in rows:
        width, log_dir = run_width(row), Path(row.get("log_dir") or "")
        if width is None or not log_dir.is_dir():
            continue
        scalars = read_scalars(log_dir)
        if "train/loss" not in scalars:
            continue
        steps, losses = scalars["train/loss"]
        runs.append((width, steps, losses, loss_rate(steps, losses)[0], row))
    if not runs:
        return []
    widths = sorted({r[0] for r in runs})
    colors = {w: plt.cm.viridis(i / max(1, len(widths) - 1)) for i, w in enumerate(widths)}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))

    ax = axes[0]
    for width, steps, losses, _, _ in runs:
        ax.semilogy(steps, losses, color=colors[width], lw=0.9, alpha=0.8)
    for w in widths:
        ax.plot([], [], color=colors[w], label=f"width {w}")
    ax.axhline(THRESHOLD, color="gray", ls=":", label=f"threshold {THRESHOLD:g}")
    ax.set_xlabel("step (full-batch GD)")
    ax.set_ylabel("train loss")
    ax.set_title("training loss, every run", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[1]
    rates = defaultdict(list)
    missed = defaultdict(int)
    for width, _, _, rate, _ in runs:
        if math.isfinite(rate):
            rates[width].append(-rate)
            ax.plot(width, -rate, "o", color=colors[width], alpha=0.5, ms=5)
        else:
            missed[width] += 1
    reached = [w for w in widths if rates[w]]
    if reached:
        mean = np.array([np.mean(rates[w]) for w in reached])
        label = "mean over seeds"
        if len(reached) >= 2:
            label += f" (fit: rate ∝ width^{power_law_slope(np.array(reached, float), mean):.2f})"
        draw(ax, np.array(reached, float), mean, label, "-")
    for w in widths:
        if missed[w]:
            ax.annotate(f"{missed[w]} not below\nthreshold", (w, ax.get_ylim()[0]), fontsize=7, ha="center", va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    width_ticks(ax, widths)
    ax.set_xlabel("student width m")
    ax.set_ylabel("rate: −d ln(loss)/d step")
    ax.set_title(f"rate once train loss < {THRESHOLD:g} (fit down to {FLOOR:g})", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[2]
    for tag, style in (("teacher/student_min_max_cosine", "-"), ("teacher/stray_mass", "--"), ("teacher/min_max_cosine", ":")):
        values = defaultdict(list)
        for width, _, _, _, row in runs:
            value = number(row.get(tag))
            if math.isfinite(value):
                values[width].append(value)
        shown = [w for w in widths if values[w]]
        if shown:
            gx = np.array(shown, float)
            draw(ax, gx, np.array([np.mean(values[w]) for w in shown]), tag, style, yerr=np.array([np.std(values[w]) for w in shown]))
    ax.set_xscale("log")
    width_ticks(ax, widths)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("student width m")
    ax.set_ylabel("final value (mean ± std over seeds)")
    ax.set_title("student side: cosine → 1, stray mass → 0", fontsize=9)
    ax.legend(fontsize=7)

    seeds = max((len(rates[w]) + missed[w] for w in widths), default=1)
    fig.suptitle(
        "student_recovery: every non-negligible student neuron converges to a teacher neuron; rate independent of width\n"
        f"{len(runs)} runs ({seeds} seeds per width) — {csv_path}",
        fontsize=8,
    )
    return save_figure(fig, out, "student_recovery.png")
