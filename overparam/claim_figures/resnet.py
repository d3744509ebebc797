"""resnet_convergence (Du et al. 2019): the train loss against the GD step of the residual net (α = 1/L) and the
plain deep net at every swept depth, with He's gain and with the parameterization's own init; the kernel drift
‖K_t − K_0‖_F / ‖K_0‖_F during training, and its final value against the width. Each run's net (class, depth, width, init_scale) is read
from its own summary.json, so rows of several sweeps into one folder (different swept keys) combine."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from overparam.claim_figures import figure, save_figure
from overparam.report import draw, experiment_title, power_law_slope, read_scalars

#: Curves of the loss panels are drawn at this width (the config's); the drift panel at this depth.
LOSS_WIDTH, DRIFT_DEPTH = 256, 16
HE_GAIN = math.sqrt(2.0)


def net_of(row: dict) -> Optional[tuple[str, int, int, float]]:
    """``(class name, depth, width, init_scale)`` of a row's run, from the config in its summary.json."""
    summary = Path(row.get("log_dir") or "") / "summary.json"
    if not summary.is_file():
        return None
    net = json.loads(summary.read_text())["config"]["model"]["init_args"]["net"]
    args = net.get("init_args") or {}
    return net["class_path"].rsplit(".", 1)[-1], int(args["depth"]), int(args["width"]), float(args.get("init_scale", 1.0))


def loss_curve(runs: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Steps and the geometric mean over seeds of train/loss divided by its initial value."""
    curves = [read_scalars(run)["train/loss"] for run in runs]
    steps = curves[0][0]
    length = min(len(values) for _, values in curves)
    logs = np.mean([np.log10(np.maximum(values[:length], 1e-300) / values[0]) for _, values in curves], axis=0)
    return steps[:length], 10**logs


@figure("resnet_convergence")
def resnet_convergence(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    runs = defaultdict(list)  # (net, depth, width, init_scale) -> run folders of its seeds
    drift = defaultdict(list)  # same key -> final kernel/drift of each seed
    for row in rows:
        key = net_of(row)
        if key is None:
            continue
        runs[key].append(Path(row["log_dir"]))
        if row.get("kernel/drift"):
            drift[key].append(float(row["kernel/drift"]))
    if not runs:
        return []
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    depths = sorted({depth for _, depth, width, _ in runs if width == LOSS_WIDTH})
    colors = {depth: f"C{i}" for i, depth in enumerate(depths)}
    panels = [
        (axes[0, 0], HE_GAIN, "train/loss", "train loss, init_scale √2 (He gain, Du et al.'s c_σ = 2)"),
        (axes[0, 1], 1.0, "train/loss", "train loss, init_scale 1 (the parameterization's N(0, 1) init)"),
        (axes[1, 0], HE_GAIN, "kernel/drift", "Gram (NTK) drift during training, init_scale √2"),
    ]
    for ax, gain, tag, title in panels:
        for (net, depth, width, scale), folders in sorted(runs.items()):
            if width != LOSS_WIDTH or not math.isclose(scale, gain, rel_tol=1e-3):
                continue
            if tag == "train/loss":
                steps, values = loss_curve(folders)
            else:
                steps, values = read_scalars(folders[0])[tag]
            residual = net == "ResidualMLP"
            line = draw(ax, steps, values, f"{'residual' if residual else 'plain'} L={depth}", "-" if residual else "--")
            line.set_color(colors[depth])
        ax.set_yscale("log" if tag == "train/loss" else "linear")
        ax.set_xlabel("GD step")
        ax.set_ylabel("train loss / initial train loss" if tag == "train/loss" else "||K_t - K_0||_F / ||K_0||_F")
        ax.set_title(f"width {LOSS_WIDTH}: {title}", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    ax = axes[1, 1]
    for net, style in (("ResidualMLP", "-"), ("DeepMLP", "--")):
        points = sorted(
            (width, float(np.mean(values)))
            for (name, depth, width, scale), values in drift.items()
            if name == net and depth == DRIFT_DEPTH and math.isclose(scale, HE_GAIN, rel_tol=1e-3)
        )
        if len(points) < 2:
            continue
        widths, values = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        label = f"{'residual' if net == 'ResidualMLP' else 'plain'} L={DRIFT_DEPTH} (slope {power_law_slope(widths, values):.2f})"
        draw(ax, widths, values, label, style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width m")
    ax.set_ylabel("final ||K_T - K_0||_F / ||K_0||_F")
    ax.set_title(f"final Gram (NTK) drift vs width, depth {DRIFT_DEPTH}, init_scale √2", fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{experiment_title('resnet_convergence')}\nsolid: ResidualMLP (α = 1/L), dashed: DeepMLP; NTK parameterization, "
        f"full-batch GD on random labels — {csv_path}",
        fontsize=8,
    )
    return save_figure(fig, out, "resnet_convergence.png")
