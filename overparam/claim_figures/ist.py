"""ist_local_steps: the plateau of the training loss against the number of surrogate subnetworks p, one line
per number of local steps τ (Liao & Kyrillidis 2022: the error term falls with p and rises with τ), and the
training-loss curves of the extreme (p, τ): a geometric decrease, then the plateau."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from overparam.claim_figures import figure, save_figure
from overparam.report import read_scalars

TITLE = "ist_local_steps: loss falls geometrically to a plateau that falls with surrogates p, rises with local steps τ"
PARTS, STEPS = "model.ist_parts", "model.ist_local_steps"


def loss_curve(row: dict) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, whole-set train/loss) of the run behind a CSV row; empty when its logs are gone."""
    log_dir = row.get("log_dir") or ""
    empty = (np.array([]), np.array([]))
    return read_scalars(Path(log_dir)).get("train/loss", empty) if log_dir and Path(log_dir).is_dir() else empty


def plateau(row: dict) -> float:
    """Mean train/loss over the second half of the run's evaluations (the final value when no logs remain)."""
    _, values = loss_curve(row)
    return float(np.mean(values[len(values) // 2 :])) if len(values) else float(row["train/loss"])


@figure("ist_local_steps")
def plateau_figure(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    runs = [row for row in rows if row.get(PARTS) and row.get(STEPS) and row.get("train/loss")]
    if not runs:
        return []
    by_steps: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in runs:
        by_steps[int(float(row[STEPS]))][int(float(row[PARTS]))].append(plateau(row))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for steps, by_parts in sorted(by_steps.items()):
        parts = np.array(sorted(by_parts))
        mean = np.array([np.mean(by_parts[p]) for p in parts])
        std = np.array([np.std(by_parts[p]) for p in parts])
        ax.errorbar(parts, mean, yerr=std, marker="o", ms=4, capsize=3, label=f"τ = {steps} local steps")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("surrogate subnetworks p")
    ax.set_ylabel("plateau train loss (mean over the 2nd half)")
    ax.set_title("plateau vs p (mean ± std over seeds)", fontsize=9)
    first_seed = min(row.get("seed", "0") for row in runs)
    all_parts = sorted({int(float(r[PARTS])) for r in runs})
    extremes = [(p, t) for t in (min(by_steps), max(by_steps)) for p in (all_parts[0], all_parts[-1])]
    for row in runs:
        key = (int(float(row[PARTS])), int(float(row[STEPS])))
        rounds, values = loss_curve(row)
        if row.get("seed", "0") == first_seed and key in extremes and len(rounds):
            bx.semilogy(rounds, values, lw=1.2, label=f"p = {key[0]}, τ = {key[1]}")
    bx.set_xlabel("round (optimizer step: τ local steps, then the merge)")
    bx.set_ylabel("train loss (whole set, full net)")
    bx.set_title(f"training curves (seed {first_seed})", fontsize=9)
    for a in (ax, bx):
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.suptitle(f"{TITLE}\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "ist_local_steps.png")
