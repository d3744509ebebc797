"""flat_minima and replicated_sgd: how flat each optimizer's minimum is, and whether flatness ranks test accuracy.

Flatness measures (final values of each run, all on the training set, of the net ``SupervisedModule.net``,
which under Replicated SGD is replica 0):

    ΔL(σ)        = E_ξ[L(θ + δ_ξ) − L(θ)], δ relative to each tensor's rms entry (``flatness/perturbed_loss_increase``;
                   the "local energy" of Pittorino et al. 2021 up to how δ is scaled)
    λ_max        = the top Hessian eigenvalue (``sharpness/lambda_max``)
    P(t)/(½λt²)  = the loss along the top eigenvector over its quadratic approximation (``flatness/profile_over_quadratic/<t>``)

The rank correlation over runs is Spearman's ρ (scipy.stats.spearmanr): "flatter minima generalize better"
predicts ρ(ΔL, test acc) < 0 and ρ(λ_max, test acc) < 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np

from overparam.claim_figures import figure, run_config, save_figure

DELTA_L = "flatness/perturbed_loss_increase"
LAMBDA = "sharpness/lambda_max"
PROFILE = "flatness/profile_over_quadratic/"
#: Marker and colour of each optimizer (Replicated SGD: sgd with replicas and a coupling).
STYLES = {"sgd": ("o", "C0"), "sam": ("s", "C1"), "entropy_sgd": ("^", "C2"), "replicated_sgd": ("D", "C3")}
CLAIMS = {
    "flat_minima": "SAM and Entropy-SGD end flatter than SGD",
    "replicated_sgd": "flatness measures correlate with test accuracy (Pittorino et al. 2021)",
}


def optimizer_name(optimizer: str, replicas: int = 1, coupling: float = 0.0) -> str:
    """The optimizer of a run, ``replicated_sgd`` for coupled replicas (``SupervisedModule(replicas=R, replica_coupling=γ > 0)``).

    >>> optimizer_name("sgd"), optimizer_name("sgd", 3, 0.3), optimizer_name("sam", 3, 0.0)
    ('sgd', 'replicated_sgd', 'sam')
    """
    return "replicated_sgd" if replicas > 1 and coupling > 0 else optimizer


def rank_correlation(x: list[float], y: list[float]) -> Optional[float]:
    """Spearman's ρ of paired values (the Pearson correlation of their ranks, ties averaged); None for fewer
    than three finite pairs or a constant side.

    >>> rank_correlation([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0])
    0.8
    """
    from scipy.stats import spearmanr  # noqa: PLC0415

    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return None
    return round(float(spearmanr(*zip(*pairs)).statistic), 12)


def number(row: dict, key: str) -> float:
    """A CSV cell as a float; nan when empty or missing."""
    try:
        return float(row.get(key) or "nan")
    except ValueError:
        return math.nan


def run_point(row: dict) -> dict:
    """Optimizer, lr and the final flatness measures and test accuracy of one finished CSV row."""
    model = run_config(row).get("model", {}).get("init_args", {})
    setting = {k: row.get(f"model.{k}") or model.get(k) for k in ("optimizer", "replicas", "replica_coupling", "lr")}
    name = optimizer_name(str(setting["optimizer"] or "sgd"), int(setting["replicas"] or 1), float(setting["replica_coupling"] or 0.0))
    profile = {float(k[len(PROFILE) :]): number(row, k) for k in row if k.startswith(PROFILE)}
    point = {"optimizer": name, "lr": float(setting["lr"] or "nan"), "profile": profile}
    return point | {k: number(row, k) for k in (DELTA_L, LAMBDA, "test/acc", "train/loss")}


def _scatter(ax, points: list[dict], measure: str, label: str) -> Optional[float]:
    """test accuracy against one flatness measure over all runs: a marker per optimizer, a colour per lr (when
    several), Spearman's ρ over all runs and within each lr in the title; returns the overall ρ."""
    rho = rank_correlation([p[measure] for p in points], [p["test/acc"] for p in points])
    lrs = sorted({p["lr"] for p in points if math.isfinite(p["lr"])})
    colours = {lr: f"C{i}" for i, lr in enumerate(lrs)} if len(lrs) > 1 else {}
    by_opt = defaultdict(list)
    for p in points:
        by_opt[p["optimizer"]].append(p)
    for opt, group in by_opt.items():
        marker, colour = STYLES.get(opt, ("x", "k"))
        name = f"{opt} ({len(group)} runs)"
        if colours:  # the colour is the lr; the legend shows the optimizer's marker in grey
            ax.scatter([], [], marker=marker, c="grey", s=28, label=name)
            colour, name = [colours[p["lr"]] for p in group], None
        ax.scatter([p[measure] for p in group], [p["test/acc"] for p in group], marker=marker, c=colour, s=28, label=name)
    for lr, colour in colours.items():
        ax.scatter([], [], marker="s", c=colour, s=28, label=f"lr {lr:g}")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("final test accuracy")
    within = [rank_correlation(*zip(*[(p[measure], p["test/acc"]) for p in points if p["lr"] == lr])) for lr in lrs] if colours else []
    fmt = lambda r: "n/a" if r is None else f"{r:+.2f}"  # noqa: E731
    title = f"Spearman ρ = {fmt(rho)} over {len(points)} runs (flat ↔ accurate: ρ < 0)"
    if within:
        title += "\nwithin one lr: " + ", ".join(f"{fmt(r)} (lr {lr:g})" for lr, r in zip(lrs, within))
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    return rho


def _profile(ax, points: list[dict]) -> None:
    """P(t)/(½ λ_max t²) against t for every run, a marker per optimizer (a colour per lr when several); 1 = quadratic."""
    lrs = sorted({p["lr"] for p in points if math.isfinite(p["lr"])})
    drawn = set()
    for p in points:
        ts = sorted(t for t, v in p["profile"].items() if math.isfinite(v))
        if not ts:
            continue
        marker, color = STYLES.get(p["optimizer"], ("x", "k"))
        key = f"{p['optimizer']}, lr {p['lr']:g}" if len(lrs) > 1 else p["optimizer"]
        color = f"C{lrs.index(p['lr'])}" if len(lrs) > 1 else color
        ax.plot(ts, [p["profile"][t] for t in ts], marker=marker, color=color, lw=0.8, ms=4, alpha=0.6, label=None if key in drawn else key)
        drawn.add(key)
    ax.axhline(1.0, color="gray", ls=":", label="quadratic: ½ λ_max t²")
    ax.set_xscale("log")
    ax.set_xlabel("t (distance along the top Hessian eigenvector)")
    ax.set_ylabel("P(t) / (½ λ_max t²)")
    ax.set_title("loss along the top eigenvector (< 1: slower than quadratic)", fontsize=8)
    ax.legend(fontsize=7)


def _by_optimizer(ax, points: list[dict], measure: str, label: str, order: list[str]) -> None:
    """One column per optimizer: every run a marker, the mean a bar (no error bar: the runs are shown)."""
    for i, opt in enumerate(order):
        values = [p[measure] for p in points if p["optimizer"] == opt and math.isfinite(p[measure])]
        marker, color = STYLES.get(opt, ("x", "k"))
        ax.scatter(i + np.linspace(-0.12, 0.12, len(values)), values, marker=marker, color=color, s=26, zorder=3)
        if values:
            ax.hlines(np.mean(values), i - 0.25, i + 0.25, color=color, lw=2)
    ax.set_xticks(range(len(order)), order, fontsize=8)
    ax.set_ylabel(label)


def _seeds_text(points: list[dict]) -> str:
    counts = defaultdict(int)
    for p in points:
        counts[(p["optimizer"], p["lr"])] += 1
    n = max(counts.values(), default=1)
    return "one run per setting" if n == 1 else f"{n} seeds per setting"


@figure("flat_minima")
def flat_minima_by_optimizer(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    points = [p for p in map(run_point, rows) if math.isfinite(p["test/acc"])]
    if not points:
        return []
    order = [o for o in STYLES if any(p["optimizer"] == o for p in points)]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.9))
    _by_optimizer(axes[0], points, LAMBDA, "final λ_max (top Hessian eigenvalue)", order)
    _by_optimizer(axes[1], points, DELTA_L, "final ΔL under 5% weight noise", order)
    _by_optimizer(axes[2], points, "test/acc", "final test accuracy", order)
    for ax, title in zip(axes[:3], ("sharpness", "loss increase under noise", "test accuracy")):
        ax.set_title(title, fontsize=9)
    _scatter(axes[3], points, DELTA_L, "final ΔL under 5% weight noise")
    fig.suptitle(f"flat_minima: {CLAIMS['flat_minima']} ({_seeds_text(points)}; bar: mean, markers: runs)\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "flat_minima_optimizers.png")


@figure("replicated_sgd")
def flatness_against_accuracy(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    points = [p for p in map(run_point, rows) if math.isfinite(p["test/acc"])]
    if not points:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    _scatter(axes[0], points, DELTA_L, "final ΔL under 5% weight noise (local energy)")
    _scatter(axes[1], points, LAMBDA, "final λ_max (top Hessian eigenvalue)")
    _profile(axes[2], points)
    lrs = sorted({p["lr"] for p in points if math.isfinite(p["lr"])})
    fig.suptitle(
        f"replicated_sgd: {CLAIMS['replicated_sgd']}; lr {', '.join(f'{v:g}' for v in lrs)} ({_seeds_text(points)})\n{csv_path}",
        fontsize=8,
    )
    return save_figure(fig, out, "replicated_sgd_flatness.png")
