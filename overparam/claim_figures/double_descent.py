"""double_descent: test loss against the number of random features, one line per readout solver."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from overparam.claim_figures import figure, run_config, save_figure


def solver_label(config: dict) -> str:
    """``"min-norm (closed form)"``, ``"ridge 0.1 (closed form)"`` or ``"adam, 1000 steps"`` from a run's config."""
    model = config.get("model", {}).get("init_args", {})
    net = model.get("net", {}).get("init_args", {})
    if net.get("closed_form"):
        ridge = net.get("ridge", 0.0)
        return "min-norm (closed form)" if not ridge else f"ridge {ridge:g} (closed form)"
    steps = config.get("trainer", {}).get("max_epochs")
    decay = f", weight decay {model['weight_decay']:g}" if model.get("weight_decay") else ""
    return f"{model.get('optimizer', 'sgd')} from a = 0, lr {model.get('lr')}, {steps} epochs{decay}"


@figure("double_descent")
def test_loss_by_solver(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    n_train = set()
    for row in rows:
        config = run_config(row)
        if not config or not row.get("model.net.width") or not row.get("test/loss"):
            continue
        series[solver_label(config)][float(row["model.net.width"])].append(float(row["test/loss"]))
        n_train.add(config.get("data", {}).get("init_args", {}).get("n_train"))
    if not series:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, points in sorted(series.items()):
        widths = np.array(sorted(points))
        mean = np.array([np.mean(points[w]) for w in widths])
        seeds = max(len(v) for v in points.values())
        std = np.array([np.std(points[w]) for w in widths]) if seeds > 1 else None
        spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
        ax.errorbar(widths, mean, yerr=std, marker="o", ms=4, capsize=3, label=f"{label} ({spread})")
    for n in n_train - {None}:
        ax.axvline(n, color="gray", ls=":", label=f"width = n = {n}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of random features m (model.net.width)")
    ax.set_ylabel("final test loss (MSE, ½ E(f - y)²)")
    ax.legend(fontsize=7)
    ax.set_title(f"double_descent: test error peaks near width = n\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "double_descent_by_solver.png")
