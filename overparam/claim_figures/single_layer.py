"""gaussian_mixture_single_layer: the train/test gap of a linear classifier trained by SGD to interpolation.

Three panels over a sweep of batch size B × learning rate η (configs/experiments/gaussian_mixture_single_layer.yaml):
the gap ``gap/acc`` = train/acc − test/acc against the stochastic-gradient-flow time t = η · steps (the time
of the seed's continuous limit, in which small-η runs of every B follow one curve), the final gap
against B, and the time t at which the training accuracy first reaches 1 (interpolation) against B.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np

from overparam.claim_figures import figure, run_config, save_figure
from overparam.report import CLAIMS, read_scalars

NAME = "gaussian_mixture_single_layer"
#: the one-line claim (report.py's CLAIMS gets it from the lead; until then "gaussian_mixture"'s line would match).
CLAIM = "SGD interpolates with a large train/test gap"


def batch_and_lr(row: dict) -> Optional[tuple[int, float]]:
    """(B, η) of a run from its config (B = n_train for full batch); None when the config is gone."""
    config = run_config(row)
    data = config.get("data", {}).get("init_args", {})
    model = config.get("model", {}).get("init_args", {})
    if not data or "lr" not in model:
        return None
    return int(data.get("batch_size") or data["n_train"]), float(model["lr"])


def interpolation_time(steps: np.ndarray, train_acc: np.ndarray, lr: float) -> float:
    """t = η · step at the first whole-set evaluation with train/acc = 1; NaN when it never reaches 1.

    >>> interpolation_time(np.array([0, 10, 20]), np.array([0.5, 1.0, 1.0]), 0.1)
    1.0
    """
    hit = np.flatnonzero(train_acc >= 1.0)
    return float(lr * steps[hit[0]]) if len(hit) else float("nan")


@figure(NAME)
def gap_by_batch_and_lr(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    curves: dict[tuple[int, float], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    final: dict[float, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    t_fit: dict[float, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = batch_and_lr(row)
        scalars = read_scalars(Path(row.get("log_dir") or "")) if key else {}
        if not key or "gap/acc" not in scalars or "train/acc" not in scalars:
            continue
        (batch, lr), (steps, gap) = key, scalars["gap/acc"]
        curves[key].append((lr * steps, gap))
        final[lr][batch].append(float(gap[-1]))
        t_fit[lr][batch].append(interpolation_time(*scalars["train/acc"], lr))
    if not curves:
        return []
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(14, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len({b for b, _ in curves})))
    color = dict(zip(sorted({b for b, _ in curves}), colors))
    for (batch, lr), runs in sorted(curves.items()):
        for i, (t, gap) in enumerate(runs):
            keep = t > 0  # log axis: the initialization (t = 0, gap 0) is left out
            ax.plot(
                t[keep], gap[keep], color=color[batch], ls="-" if lr == max(final) else "--", lw=1.0,
                label=f"B {batch}, lr {lr:g}" if i == 0 else None,
            )  # fmt: skip
    for lr in sorted(final):
        batches = np.array(sorted(final[lr]))
        seeds = max(len(v) for v in final[lr].values())
        for axis, values in ((bx, final[lr]), (cx, t_fit[lr])):
            mean = np.array([np.nanmean(values[b]) for b in batches])
            std = np.array([np.nanstd(values[b]) for b in batches]) if seeds > 1 else None
            axis.errorbar(batches, mean, yerr=std, marker="o", ms=4, capsize=3, label=f"lr {lr:g} ({seeds} seeds)")
    ax.set_xscale("log")
    ax.set_xlabel("SGF time t = lr x SGD steps")
    ax.set_ylabel("gap/acc = train acc - test acc")
    ax.set_title("gap during training (every seed)", fontsize=9)
    bx.set_ylabel("final gap/acc (mean ± std over seeds)")
    bx.set_title("gap at the end (train acc = 1 in every run that interpolated)", fontsize=9)
    bx.set_ylim(bottom=0)
    cx.set_ylabel("t = lr x steps when train acc first = 1")
    cx.set_title("time to interpolation", fontsize=9)
    cx.set_yscale("log")
    for axis in (bx, cx):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size B")
    for axis in (ax, bx, cx):
        axis.legend(fontsize=7)
    fig.suptitle(f"{NAME}: {CLAIMS.get(NAME, CLAIM)}\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "gaussian_mixture_single_layer_gap.png")
