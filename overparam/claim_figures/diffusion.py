"""sgd_diffusion: ‖θ_t − θ_{t₀}‖² against t − t₀ on log-log axes, one line per (lr, weight decay), and the
fitted diffusion exponent c of ‖θ_t − θ_{t₀}‖² ∝ (t − t₀)^c against the weight decay, one line per lr."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from overparam.claim_figures import figure, run_config, save_figure
from overparam.report import experiment_title, power_law_slope, read_scalars

TAG = "weights/displacement"


def displacement_curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(t − t₀, ‖θ_t − θ_{t₀}‖²) after the reference step t₀ (where the logged value is 0)."""
    steps, values = read_scalars(run).get(TAG, (np.array([]), np.array([])))
    if not len(steps):
        return steps, values
    t0 = steps[np.argmin(values)]  # the 0 logged at the reference step
    after = steps > t0
    return steps[after] - t0, values[after]


@figure("sgd_diffusion")
def displacement_power_law(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    curves: dict[tuple[float, float], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for row in rows:
        model = run_config(row).get("model", {}).get("init_args", {})
        t, d = displacement_curve(Path(row.get("log_dir") or ""))
        if len(t) >= 2 and model:
            curves[(float(model["lr"]), float(model.get("weight_decay", 0.0)))].append((t, d))
    if not curves:
        return []
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    exponents: dict[float, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (lr, wd), runs in sorted(curves.items()):
        for t, d in runs:
            exponents[lr][wd].append(power_law_slope(t, d))
        t, d = runs[0]
        ax.loglog(t, d, lw=1.2, label=f"lr {lr:g}, wd {wd:g} (c = {np.mean(exponents[lr][wd]):.2f})")
    for lr, by_wd in sorted(exponents.items()):
        wds = np.array(sorted(by_wd))
        mean = np.array([np.mean(by_wd[w]) for w in wds])
        std = np.array([np.std(by_wd[w]) for w in wds])
        bx.errorbar(
            wds, mean, yerr=std if max(len(v) for v in by_wd.values()) > 1 else None, marker="o", ms=4, capsize=3, label=f"lr {lr:g}"
        )
    bx.axhline(1.0, color="gray", ls=":", label="c = 1: Brownian")
    bx.axhline(0.0, color="gray", ls="--", lw=0.8, label="c = 0: at rest")
    if len({w for by in exponents.values() for w in by}) > 1 and min(w for by in exponents.values() for w in by) > 0:
        bx.set_xscale("log")
    ax.set_xlabel("t - t0 (SGD steps after the reference step)")
    ax.set_ylabel("||theta_t - theta_t0||^2")
    ax.set_title("distance travelled on the loss plateau (first seed)", fontsize=9)
    bx.set_xlabel("weight decay")
    bx.set_ylabel("fitted exponent c")
    bx.set_title("diffusion exponent (mean ± std over seeds)", fontsize=9)
    for a in (ax, bx):
        a.legend(fontsize=7)
    fig.suptitle(f"{experiment_title('sgd_diffusion')}\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "sgd_diffusion_exponents.png")
