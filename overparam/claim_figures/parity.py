"""sparse_parity_scaling: steps to learn (n, k)-sparse parity against n on log-log axes, one line per k with
the fitted exponent of steps ∝ n^a in the legend; and, for the largest n of each k, the support weight
ratio beside test accuracy against the step (the ratio moves on the plateau, before the accuracy does)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from overparam.claim_figures import figure, run_config, save_figure
from overparam.report import power_law_slope, read_scalars

#: Steps to learn: the first evaluated step with test accuracy at least this (the config's EarlyStopping threshold).
LEARNED = 0.95
CLAIM = "online SGD learns (n, k)-parity in n^O(k) steps; progress is hidden under the loss plateau"


def steps_to_learn(steps: np.ndarray, acc: np.ndarray, threshold: float = LEARNED) -> Optional[int]:
    """The first step whose test accuracy is ≥ ``threshold``; None when the run never got there.

    >>> steps_to_learn(np.array([0, 16, 32, 48]), np.array([0.5, 0.52, 0.97, 0.99]))
    32
    """
    hits = np.flatnonzero(acc >= threshold)
    return int(steps[hits[0]]) if len(hits) else None


def parity_size(row: dict) -> Optional[tuple[int, int]]:
    """(k, n) of the run behind a CSV row, from its resolved config; None when it is gone."""
    data = run_config(row).get("data", {}).get("init_args", {})
    return (int(data["k"]), int(data["n"])) if "k" in data and "n" in data else None


@figure("sparse_parity_scaling")
def steps_to_learn_against_n(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    learned: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    censored: dict[int, dict[int, int]] = defaultdict(dict)  # k -> n -> runs that never learned
    curves: dict[int, tuple[int, dict]] = {}  # k -> (n, scalars) of the first run at the largest n
    for row in rows:
        size = parity_size(row)
        if size is None:
            continue
        k, n = size
        scalars = read_scalars(Path(row.get("log_dir") or ""))
        if "test/acc" not in scalars:
            continue
        steps = steps_to_learn(*scalars["test/acc"])
        if steps is None:
            censored[k][n] = censored[k].get(n, 0) + 1
        else:
            learned[k][n].append(steps)
        if "parity/support_weight_ratio" in scalars and (k not in curves or n > curves[k][0]):
            curves[k] = (n, scalars)
    if not learned:
        return []
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (k, by_n), color in zip(sorted(learned.items()), ("C0", "C3", "C2", "C1")):
        ns = np.array(sorted(by_n))
        mean = np.array([np.mean(by_n[n]) for n in ns])
        for n in ns:
            ax.plot([n] * len(by_n[n]), by_n[n], "o", color=color, ms=3, alpha=0.4)
        slope = f", steps ∝ n^{power_law_slope(ns, mean):.2f}" if len(ns) > 1 else ""
        ax.loglog(ns, mean, "s-", color=color, ms=6, label=f"k = {k} (mean over seeds{slope})")
        if len(ns) > 1:
            fit = np.exp(np.polyval(np.polyfit(np.log(ns), np.log(mean), 1), np.log(ns)))
            ax.plot(ns, fit, ":", color=color, lw=1)
        for n, count in censored[k].items():
            ax.annotate(f"{count} not learned", (n, mean.max()), fontsize=7, color=color)
    ax.set_xlabel("n (input bits)")
    ax.set_ylabel(f"steps to learn (first test accuracy ≥ {LEARNED:g})")
    ax.set_title("steps to learn vs n (dots: seeds; dotted: fit)", fontsize=9)
    ax.legend(fontsize=7)
    ax.set_xticks(sorted({n for by_n in learned.values() for n in by_n}))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    twin = bx.twinx()
    for (k, (n, scalars)), color in zip(sorted(curves.items()), ("C0", "C3", "C2", "C1")):
        steps, acc = scalars["test/acc"]
        scale = steps_to_learn(steps, acc) or steps.max()
        ratio_steps, ratio = scalars["parity/support_weight_ratio"]
        bx.plot(ratio_steps / scale, ratio, "-", color=color, lw=1.8, label=f"support weight ratio, k = {k}, n = {n}")
        if "test/loss" in scalars:
            twin.plot(scalars["test/loss"][0] / scale, scalars["test/loss"][1], "--", color=color, lw=1, label=f"test loss, k = {k}")
        twin.plot(steps / scale, acc, ":", color=color, lw=1, label=f"test accuracy, k = {k}")
    bx.set_xlabel("SGD step / steps to learn (one fresh minibatch per step)")
    bx.set_ylabel("mean |W1| on S / mean |W1| off S (solid)")
    twin.set_ylabel("test hinge loss (dashed), test accuracy (dotted)")
    bx.set_title("hidden progress? the ratio against the loss plateau (first seed, largest n)", fontsize=9)
    lines = bx.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    bx.legend(lines[0] + more[0], lines[1] + more[1], fontsize=6, loc="center left")
    fig.suptitle(f"sparse_parity_scaling: {CLAIM}\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "sparse_parity_scaling.png")
