"""Claim figures of the memorization experiments (configs/experiments/{interpolation_threshold,paired_init,wide_input}.yaml).

* ``interpolation_threshold``: against P/n (trainable parameters over training points), λ_min(K_0) / mean
  eigenvalue of the empirical NTK at init (the first logged ``kernel/lambda_min`` over
  ``kernel/mean_eigenvalue``) and the final / initial training loss on random labels; every run a point,
  the seed mean a line, P = n a vertical line. Values of λ_min below float32 round-off (the kernel is
  computed in the net's precision) are drawn at that floor. The claim (Montanari & Zhong, 2022): λ_min ≈ 0
  below the threshold, bounded away from 0 above it, where GD fits arbitrary labels.
* ``paired_init``: final training loss against width, paired (symmetric) vs independent init (geometric
  mean over seeds, min–max band), a line at ε and, per init, the width GD needs: the smallest width from
  which every larger width of the grid has a seed-mean loss ≤ ε (:func:`needed_width`). The claim
  (Munteanu et al., 2022): smaller with paired init.
* ``wide_input``: training loss / its initial value against step for each input dimension d (n fixed),
  and the final ratio against d/n with a line at d = n. The claim (Chatterjee, 2022): loss → 0 at a small
  fixed width once d ≥ n.

Sizes (width, d, n, which layers train) come from the resolved config in each run's summary.json (the
row's ``log_dir``), so the figures do not depend on which keys a sweep put in its grid.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from overparam.claim_figures import figure, save_figure
from overparam.report import experiment_title, read_scalars

#: λ_min / mean eigenvalue below this is float32 round-off of a singular kernel (measured: |ratio| ≤ 4e-7).
ROUND_OFF = 1e-6
#: The fixed loss ε of the paired_init figure (½ mean squared error on the training set).
PAIRED_EPS = 1e-7


def run_config(row: dict) -> dict:
    """The resolved config of the run behind a CSV row (its summary.json); {} when the folder is gone."""
    path = Path(row.get("log_dir") or "") / "summary.json"
    return json.loads(path.read_text()).get("config", {}) if path.is_file() else {}


def two_layer_parameters(config: dict) -> int:
    """Trainable parameters P of the run's TwoLayerMLP: m d + m (b1) + k m + k (b2), each term only where
    that layer trains and (for biases) has one; d and k from the net, else from the data.

    >>> two_layer_parameters({"data": {"init_args": {"dim": 16}}, "model": {"init_args": {"net": {"init_args": {"width": 30, "bias": False}}}}})
    510
    """
    data = config.get("data", {}).get("init_args", {})
    net = config["model"]["init_args"]["net"]["init_args"]
    m = int(net["width"])
    d = int(net.get("input_dim") or data.get("dim"))
    k = int(net.get("output_dim") or data.get("output_dim") or 1)
    bias = bool(net.get("bias", True))
    first = (m * d + (m if bias else 0)) if net.get("train_first_layer", True) else 0
    second = (k * m + (k if bias else 0)) if net.get("train_second_layer", True) else 0
    return first + second


def needed_width(loss_by_width: dict[float, float], eps: float) -> Optional[float]:
    """The smallest width w of the grid such that the loss is ≤ ``eps`` at w and at every larger width;
    None when the largest width is above ``eps``.

    >>> needed_width({16: 1e-3, 32: 1e-8, 64: 1e-6, 128: 1e-9}, 1e-7)
    128
    >>> needed_width({16: 1e-3, 32: 1e-8, 64: 1e-8}, 1e-7), needed_width({16: 1.0}, 1e-7)
    (32, None)
    """
    found = None
    for width in sorted(loss_by_width, reverse=True):
        if not loss_by_width[width] <= eps:
            break
        found = width
    return found


def first_and_last(run: dict[str, tuple[np.ndarray, np.ndarray]], tag: str) -> tuple[float, float]:
    """The first and last logged values of ``tag`` in a run's scalars (nan when it logged none)."""
    if tag not in run or not len(run[tag][1]):
        return math.nan, math.nan
    return float(run[tag][1][0]), float(run[tag][1][-1])


def seed_line(ax, points: dict[float, list[float]], label: str, color=None, band: bool = True) -> None:
    """Every seed as a faint dot, the geometric mean over seeds as a line, the min–max range as a band."""
    xs = np.array(sorted(points))
    values = [np.array(points[x]) for x in xs]
    for x, v in zip(xs, values):
        ax.plot(np.full(len(v), x), v, ".", color=color, alpha=0.35, ms=5)
    mean = np.array([np.exp(np.mean(np.log(v))) for v in values])
    line = ax.plot(xs, mean, "-o", ms=4, color=color, label=label)[0]
    if band and max(len(v) for v in values) > 1:
        ax.fill_between(xs, [v.min() for v in values], [v.max() for v in values], color=line.get_color(), alpha=0.12)


def save(fig, out: Path, name: str) -> Path:
    for ax in fig.axes:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded minor labels on log axes
    return save_figure(fig, out, f"{name}.png")[0]


@figure("interpolation_threshold")
def kernel_and_fit_vs_parameters(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    """λ_min(K_0)/mean eigenvalue and final/initial training loss against P/n."""
    ratio, fit = defaultdict(list), defaultdict(list)
    for row in rows:
        config = run_config(row)
        if not config:
            continue
        run = read_scalars(Path(row["log_dir"]))
        x = two_layer_parameters(config) / int(config["data"]["init_args"]["n_train"])
        lambda_min, mean_eig = first_and_last(run, "kernel/lambda_min")[0], first_and_last(run, "kernel/mean_eigenvalue")[0]
        loss_0, loss_t = first_and_last(run, "train/loss")
        if math.isfinite(lambda_min / mean_eig):
            ratio[x].append(max(lambda_min / mean_eig, ROUND_OFF))
        if math.isfinite(loss_t / loss_0):
            fit[x].append(loss_t / loss_0)
    if not ratio and not fit:
        return []
    seeds = max((len(v) for v in (*ratio.values(), *fit.values())), default=1)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
    seed_line(axes[0], ratio, "λ_min(K_0) / mean eigenvalue (geometric mean)")
    axes[0].axhline(ROUND_OFF, color="gray", ls="--", lw=1, label=f"float32 round-off ({ROUND_OFF:g}): singular K_0")
    axes[0].set_ylabel("λ_min / (tr K_0 / n)  at init")
    seed_line(axes[1], fit, "final / initial train loss (geometric mean)", color="C3")
    axes[1].set_ylabel("train loss after training / at init")
    for ax in axes:
        ax.axvline(1.0, color="gray", ls=":", label="P = n")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("trainable parameters P / training points n")
        ax.legend(fontsize=7)
    fig.suptitle(f"{experiment_title('interpolation_threshold')}\n(every seed a dot, {seeds} seeds) — {csv_path}", fontsize=8)
    return [save(fig, out, "interpolation_threshold")]


@figure("paired_init")
def loss_vs_width_by_init(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    """Final training loss against width, paired vs independent init, with ε and each init's needed width."""
    series: dict[bool, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    steps = set()
    for row in rows:
        config = run_config(row)
        if not config or not row.get("train/loss"):
            continue
        net = config["model"]["init_args"]["net"]["init_args"]
        series[bool(net.get("symmetric_init"))][float(net["width"])].append(float(row["train/loss"]))
        steps.add(config.get("trainer", {}).get("max_epochs"))
    if not series:
        return []
    seeds = max(len(v) for s in series.values() for v in s.values())
    fig, ax = plt.subplots(figsize=(6.6, 4.4))
    for paired, color in ((False, "C0"), (True, "C1")):
        if paired not in series:
            continue
        points = series[paired]
        mean = {w: float(np.exp(np.mean(np.log(v)))) for w, v in points.items()}
        width = needed_width(mean, PAIRED_EPS)
        name = "paired (symmetric_init)" if paired else "independent"
        seed_line(ax, points, f"{name}: needs width {width:g}" if width else f"{name}: ε not reached in the grid", color=color)
        if width:
            ax.axvline(width, color=color, ls="--", lw=1)
    ax.axhline(PAIRED_EPS, color="gray", ls=":", label=f"ε = {PAIRED_EPS:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width m")
    ax.set_ylabel(f"train loss after {'/'.join(str(s) for s in sorted(steps - {None}))} GD steps")
    ax.legend(fontsize=7)
    ax.set_title(f"{experiment_title('paired_init')}\n(geometric mean and range over {seeds} seeds) — {csv_path}", fontsize=8)
    return [save(fig, out, "paired_init")]


@figure("wide_input")
def loss_curves_by_input_dim(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    """Training loss / initial against step for each d, and the final ratio against d/n."""
    curves: dict[float, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    final: dict[float, list[float]] = defaultdict(list)
    widths = set()
    for row in rows:
        config = run_config(row)
        if not config:
            continue
        data = config["data"]["init_args"]
        run = read_scalars(Path(row["log_dir"]))
        if "train/loss" not in run:
            continue
        steps, loss = run["train/loss"]
        x = int(data["dim"]) / int(data["n_train"])
        curves[x].append((steps, loss / loss[0]))
        final[x].append(float(loss[-1] / loss[0]))
        widths.add(config["model"]["init_args"]["net"]["init_args"]["width"])
    if not curves:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(curves)))
    for color, x in zip(colors, sorted(curves)):
        for i, (steps, ratio) in enumerate(curves[x]):
            axes[0].plot(
                steps, ratio, color=color, lw=1.2 if x >= 1 else 0.8, ls="-" if x >= 1 else "--", label=f"d/n = {x:g}" if i == 0 else None
            )
    axes[0].set_xlabel("step (full-batch GD updates)")
    axes[0].set_ylabel("train loss / initial")
    seed_line(axes[1], final, "final / initial train loss (geometric mean)", color="C3")
    axes[1].axvline(1.0, color="gray", ls=":", label="d = n")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("input dimension d / training points n")
    axes[1].set_ylabel("train loss after training / at init")
    for ax in axes:
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    seeds = max(len(v) for v in final.values())
    fig.suptitle(
        f"{experiment_title('wide_input')}\nwidth {'/'.join(str(w) for w in sorted(widths))}, solid: d ≥ n ({seeds} seeds) — {csv_path}",
        fontsize=8,
    )
    return [save(fig, out, "wide_input")]
