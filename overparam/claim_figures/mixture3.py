"""gaussian_mixture_three_clusters: SGD on the non-convex three-cluster mixture overfits, and more so with more SGD noise.

Three panels over a sweep of batch size B × learning rate η at one SGF time η·steps
(configs/experiments/gaussian_mixture_three_clusters.yaml): the test error against t = η·steps for every
run, with the error of the oracle door |μ·x| > 1/2 (the Bayes error up to a negligible shift of the
threshold) as a reference; the test error at the end and its minimum during training against B; and the
test error at the end against the SGD noise scale η/B.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np

from overparam.claim_figures import figure, run_config, save_figure
from overparam.report import CLAIMS, read_scalars

NAME = "gaussian_mixture_three_clusters"
#: the one-line claim (report.py's CLAIMS gets it from the lead; until then "gaussian_mixture"'s line would match).
CLAIM = "SGD interpolates with a large gap; noisier SGD (larger lr/B) ends with a higher test error"


def oracle_door_error(sigma: float) -> float:
    """Test error of the door |μ·x| > 1/2 on the three-cluster mixture (clusters 0, ±μ, |μ| = 1, equal weights,
    per-coordinate std σ): 1 − [(2Φ(a) − 1) + 2(Φ(a) + Φ(−3a))]/3 with a = 1/(2σ).

    >>> round(oracle_door_error(0.2236), 4)
    0.0169
    """
    phi = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))  # noqa: E731
    a = 0.5 / sigma
    return 1.0 - ((2 * phi(a) - 1) + 2 * (phi(a) + phi(-3 * a))) / 3


def batch_lr_sigma(row: dict) -> Optional[tuple[int, float, float]]:
    """(B, η, σ) of a run from its config (B = n_train for full batch); None when the config is gone."""
    config = run_config(row)
    data = config.get("data", {}).get("init_args", {})
    model = config.get("model", {}).get("init_args", {})
    if not data or "lr" not in model:
        return None
    return int(data.get("batch_size") or data["n_train"]), float(model["lr"]), float(data["cluster_std"])


@figure(NAME)
def error_by_batch_and_lr(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    curves: dict[tuple[int, float], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    final: dict[float, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    lowest: dict[float, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    sigmas = set()
    for row in rows:
        key = batch_lr_sigma(row)
        scalars = read_scalars(Path(row.get("log_dir") or "")) if key else {}
        if not key or "test/acc" not in scalars:
            continue
        batch, lr, sigma = key
        steps, acc = scalars["test/acc"]
        err = 1.0 - acc
        curves[batch, lr].append((lr * steps, err))
        final[lr][batch].append(float(err[-1]))
        lowest[lr][batch].append(float(err.min()))
        sigmas.add(sigma)
    if not curves:
        return []
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(15, 4.4))
    batches = sorted({b for b, _ in curves})
    color = dict(zip(batches, plt.cm.viridis(np.linspace(0, 0.85, len(batches)))))
    style = dict(zip(sorted(final), ("-", "--", ":", "-.")))
    for (batch, lr), runs in sorted(curves.items()):
        for i, (t, err) in enumerate(runs):
            keep = t > 0  # log axis: the initialization (t = 0, chance) is left out
            ax.plot(
                t[keep], err[keep], color=color[batch], ls=style.get(lr, "-"), lw=1.0, marker="o", ms=2,
                label=f"B {batch}, lr {lr:g}" if i == 0 else None,
            )  # fmt: skip
    lr_colors = dict(zip(sorted(final), plt.cm.plasma(np.linspace(0, 0.8, len(final)))))
    for lr in sorted(final):
        bs = np.array(sorted(final[lr]))
        seeds = max(len(v) for v in final[lr].values())
        for values, marker, fill, what in ((final[lr], "o", None, "at the end"), (lowest[lr], "s", "none", "minimum in training")):
            mean = np.array([np.mean(values[b]) for b in bs])
            std = np.array([np.std(values[b]) for b in bs]) if seeds > 1 else None
            bx.errorbar(
                bs, mean, yerr=std, marker=marker, mfc=fill, ms=5, capsize=3, color=lr_colors[lr],
                ls="-" if fill is None else "--", label=f"lr {lr:g}, {what} ({seeds} seeds)",
            )  # fmt: skip
        mean = np.array([np.mean(final[lr][b]) for b in bs])
        cx.plot(lr / bs, mean, marker="o", ms=5, color=lr_colors[lr], label=f"lr {lr:g} (B = {', '.join(map(str, bs))})")
    if len(sigmas) == 1:  # one data set: its oracle error as a floor on every panel
        bayes = oracle_door_error(next(iter(sigmas)))
        for axis in (ax, bx, cx):
            axis.axhline(bayes, color="gray", lw=0.8, ls=":", label=f"oracle door |μ·x| > 1/2 (≈ Bayes), {bayes:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("SGF time t = lr x SGD steps")
    ax.set_ylabel("test error = 1 - test acc")
    ax.set_title("test error during training (every seed)", fontsize=9)
    bx.set_xscale("log", base=2)
    bx.set_yscale("log")
    bx.set_xlabel("batch size B")
    bx.set_ylabel("test error (mean ± std over seeds)")
    bx.set_title("test error at the end (filled) and its minimum (hollow)", fontsize=9)
    cx.set_xscale("log")
    cx.set_yscale("log")
    cx.set_xlabel("SGD noise scale lr / B")
    cx.set_ylabel("test error at the end (mean over seeds)")
    cx.set_title("test error at the end against lr / B", fontsize=9)
    for axis in (ax, bx, cx):
        axis.legend(fontsize=6)
    fig.suptitle(f"{NAME}: {CLAIMS.get(NAME, CLAIM)}\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "gaussian_mixture_three_clusters_test_error.png")
