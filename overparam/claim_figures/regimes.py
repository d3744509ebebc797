"""Claim figures of the lazy-vs-rich regime experiments (configs/experiments/{beyond_ntk,mean_field_consistency}.yaml).

* ``beyond_ntk``: every run as a point (final kernel drift ‖K_T − K_0‖_F/‖K_0‖_F, final / initial training
  loss), coloured by the second layer's rate multiplier r (``layer_lr: {fc2: r}``), one marker per width.
  The claim (Razborov 2022): points far right (O(1) drift, not lazy) still sit at the bottom (near-zero loss).
* ``mean_field_consistency``: training-loss and kernel-drift trajectories per width, mean field
  (lr ∝ width) beside NTK (fixed lr), and the final drift against width with its fitted power law.
  The claim: mean-field curves lie on top of each other with O(1) drift; NTK drift falls with width.

Each run's width, parameterization and rates are read from the resolved config in its summary.json
(the row's ``log_dir``), so the figures do not depend on which keys a sweep put in its grid.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from overparam.claim_figures import figure, save_figure
from overparam.report import experiment_title, power_law_slope, read_scalars

#: Drift from which a run counts as not lazy in the beyond_ntk figure (the kernel moved by half its norm).
NOT_LAZY_DRIFT = 0.5
#: Final / initial training loss below which the beyond_ntk figure calls a run converged (near-zero loss).
NEAR_ZERO = 1e-2


def run_settings(row: dict) -> dict:
    """Width, parameterization, base lr and second-layer rate multiplier of the run behind a CSV row,
    from the resolved config in ``log_dir/summary.json``."""
    config = json.loads((Path(row["log_dir"]) / "summary.json").read_text())["config"]
    model = config["model"]["init_args"]
    net = model["net"]["init_args"]
    return {
        "width": int(net["width"]),
        "parameterization": net["parameterization"],
        "lr": float(model["lr"]),
        "fc2_rate": float((model.get("layer_lr") or {}).get("fc2", 1.0)),
    }


def mean_curve(runs: list[dict[str, tuple[np.ndarray, np.ndarray]]], tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean over runs) of one tag, on the steps every run logged."""
    curves = [dict(zip(*(a.tolist() for a in run[tag]))) for run in runs if tag in run]
    if not curves:
        return np.array([]), np.array([])
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return np.array(steps), np.array([np.mean([c[s] for c in curves]) for s in steps])


@figure("beyond_ntk")
def drift_vs_final_loss(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    """Final kernel drift against final / initial training loss, one point per run."""
    points = []
    for row in rows:
        loss = read_scalars(Path(row["log_dir"])).get("train/loss")
        drift = float(row.get("kernel/drift") or "nan")
        if loss is None or len(loss[1]) < 2 or not math.isfinite(drift):
            continue
        points.append({**run_settings(row), "drift": drift, "ratio": float(loss[1][-1] / loss[1][0])})
    if not points:
        return []
    rates = sorted({p["fc2_rate"] for p in points})
    widths = sorted({p["width"] for p in points})
    colors = dict(zip(rates, plt.cm.viridis(np.linspace(0.0, 0.9, len(rates)))))
    markers = dict(zip(widths, "os^Dvp<>h*"))
    fig, ax = plt.subplots(figsize=(8.4, 4.8))
    for p in points:
        ax.scatter(p["drift"], p["ratio"], color=colors[p["fc2_rate"]], marker=markers.get(p["width"], "o"), s=40, edgecolor="k", lw=0.4)
    for rate in rates:
        ax.scatter([], [], color=colors[rate], marker="o", label=f"fc2 rate = {rate:g} × fc1's")
    for width in widths:
        ax.scatter([], [], color="gray", marker=markers.get(width, "o"), label=f"width {width}")
    ax.axvline(NOT_LAZY_DRIFT, color="gray", ls=":", label=f"drift {NOT_LAZY_DRIFT}: not lazy to the right")
    ax.axhline(NEAR_ZERO, color="gray", ls="--", lw=0.8, label=f"loss ratio {NEAR_ZERO:g}: near zero below")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("final kernel drift ||K_T - K_0||_F / ||K_0||_F")
    ax.set_ylabel("final / initial training loss")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the points, never over them
    lr = sorted({p["lr"] for p in points})
    ax.set_title(
        f"{experiment_title('beyond_ntk')}\nfirst-layer lr {', '.join(f'{v:g}' for v in lr)}; {len(points)} runs — {csv_path}", fontsize=8
    )
    return save_figure(fig, out, "beyond_ntk.png", dpi=100)


@figure("mean_field_consistency")
def trajectories_across_widths(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    """Loss and drift trajectories per width in both parameterizations, and final drift against width."""
    groups: dict[tuple[str, int], list] = defaultdict(list)  # (parameterization, width) -> runs' scalars
    eta0: dict[str, set] = defaultdict(set)  # lr / width (mean field) or lr (otherwise)
    for row in rows:
        settings = run_settings(row)
        param, width = settings["parameterization"], settings["width"]
        groups[param, width].append(read_scalars(Path(row["log_dir"])))
        eta0[param].add(round(settings["lr"] / width if param == "mean_field" else settings["lr"], 6))
    if not groups:
        return []
    params = [p for p in ("mean_field", "ntk", "standard") if any(k[0] == p for k in groups)]
    widths = sorted({w for _, w in groups})
    colors = dict(zip(widths, plt.cm.viridis(np.linspace(0.0, 0.9, len(widths)))))
    styles = {"mean_field": "-", "ntk": "--", "standard": ":"}
    rule = {
        p: (
            f"lr = {'/'.join(f'{v:g}' for v in sorted(eta0[p]))} × width"
            if p == "mean_field"
            else f"lr = {'/'.join(f'{v:g}' for v in sorted(eta0[p]))}"
        )
        for p in params
    }
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.6))
    axes[0, 1].sharey(axes[0, 0])  # the two parameterizations' losses on one scale
    for ax, param in zip(axes[0], params):  # a third parameterization only in the drift panels
        for width in widths:
            steps, loss = mean_curve(groups.get((param, width), []), "train/loss")
            if len(steps):
                ax.plot(steps, loss, styles[param], color=colors[width], lw=1.4, label=f"width {width}")
        ax.set_yscale("log")
        ax.set_title(f"train loss, {param} ({rule[param]})", fontsize=9)
        ax.set_xlabel("step (GD updates)")
        ax.set_ylabel("train loss (mean over seeds)")
        ax.legend(fontsize=7)
    ax = axes[1, 0]
    for param in params:
        for width in widths:
            steps, drift = mean_curve(groups.get((param, width), []), "kernel/drift")
            keep = drift > 0  # step 0 is 0 by definition
            if keep.any():
                ax.plot(
                    steps[keep],
                    drift[keep],
                    styles[param],
                    marker="o",
                    ms=2.5,
                    color=colors[width],
                    lw=1.2,
                    label=f"{param}, width {width}",
                )
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.set_title("kernel drift during training (solid: mean field, dashed: NTK)", fontsize=9)
    ax.set_xlabel("step (GD updates)")
    ax.set_ylabel("||K_t - K_0||_F / ||K_0||_F")
    ax.legend(fontsize=6, ncol=2)
    ax = axes[1, 1]
    for param in params:
        per_width = {
            w: [float(r["kernel/drift"][1][-1]) for r in groups[param, w] if "kernel/drift" in r] for (p, w) in groups if p == param
        }
        xs = np.array(sorted(w for w, v in per_width.items() if v))
        if not len(xs):
            continue
        mean = np.array([np.mean(per_width[w]) for w in xs])
        std = np.array([np.std(per_width[w]) for w in xs])
        label = param + (f" (slope {power_law_slope(xs, mean):.2f})" if len(xs) >= 2 else "")
        ax.errorbar(
            xs,
            mean,
            yerr=std,
            fmt=styles[param],
            marker="o",
            ms=4,
            capsize=3,
            color="k" if param == "mean_field" else "tab:red",
            label=label,
        )
    if len(widths) >= 2:
        ax.set_xscale("log")
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded minor labels
    ax.set_yscale("log")
    ax.set_title("final kernel drift vs width (mean ± std over seeds)", fontsize=9)
    ax.set_xlabel("width m")
    ax.set_ylabel("final ||K_T - K_0||_F / ||K_0||_F")
    ax.legend(fontsize=7)
    fig.suptitle(f"{experiment_title('mean_field_consistency')}\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "mean_field_consistency.png", dpi=100)
