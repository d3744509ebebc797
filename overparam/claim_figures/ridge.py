"""triple_descent and benign_ridge: closed-form readouts against the number of features and the ridge.

``triple_descent.png``: final test loss against the total number of random features m, one line per ridge
(median over seeds, the band from the lowest to the highest seed), with the predicted peaks m = n and
m = n / f₁ (where the first kind alone numbers n features) marked.

``benign_ridge.png``: left, the min-norm interpolator's ``risk/excess`` against the tail's effective rank
r_k(Σ) (k = the spikes; computed from the run's LinearGaussian), one line per noise level; right,
``risk/excess`` against the ridge λ for each tail, at each noise level, the best λ of each curve starred.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter

from overparam.claim_figures import figure, run_config, save_figure

WIDTH, RIDGE, DECAY, NOISE, RISK = "model.net.width", "model.net.ridge", "data.tail_decay", "data.noise_std", "risk/excess"


def _number(row: dict, key: str) -> float:
    try:
        return float(row.get(key))
    except (TypeError, ValueError):
        return math.nan


def _data_args(rows: list[dict]) -> dict:
    """The data init_args of the first run whose summary.json is still there ({} if none)."""
    for row in rows:
        config = run_config(row)
        if config:
            return config.get("data", {}).get("init_args", {}), config.get("model", {}).get("init_args", {}).get("net", {}).get(
                "init_args", {}
            )
    return {}, {}


@figure("triple_descent")
def triple_descent_figure(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    groups: dict[float, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        width, loss = _number(row, WIDTH), _number(row, "test/loss")
        if math.isfinite(width) and math.isfinite(loss):
            groups[_number(row, RIDGE) if RIDGE in row else 0.0][width].append(loss)
    if not groups:
        return []
    data, net = _data_args(rows)
    fig, ax = plt.subplots(figsize=(6.6, 4.3))
    for ridge, points in sorted(groups.items()):
        widths = np.array(sorted(points))
        values = [np.array(points[w]) for w in widths]
        median = np.array([np.median(v) for v in values])
        line = ax.plot(widths, median, marker="o", ms=3, lw=1.2, label="min-norm (ridge 0)" if ridge == 0 else f"ridge {ridge:g}")[0]
        ax.fill_between(widths, [v.min() for v in values], [v.max() for v in values], color=line.get_color(), alpha=0.15)
    n, kinds = data.get("n_train"), net.get("kinds")
    if n:
        ax.axvline(n, color="gray", ls=":", label=f"m = n = {n}")
        if kinds:
            fraction = float(kinds[0][2])
            ax.axvline(n / fraction, color="gray", ls="--", label=f"m = n / f₁ = {n / fraction:g} (first kind: n features)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    all_widths = sorted({w for p in groups.values() for w in p})
    ax.set_xticks([w for w in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if all_widths[0] <= w <= all_widths[-1]])
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("total number of random features m (model.net.width)")
    ax.set_ylabel("final test loss (MSE, ½ E(f - y)²)")
    ax.legend(fontsize=7)
    seeds = max(len(v) for p in groups.values() for v in p.values())
    kinds_text = ", ".join(f"{f:g}·m {a} × {s:g}" for a, s, f in kinds) if kinds else ""
    ax.set_title(f"triple_descent: two kinds ({kinds_text}) — median, band = range over {seeds} seeds\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "triple_descent.png")


@figure("benign_ridge")
def benign_ridge_figure(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    from datamodules.synthetic import LinearGaussian

    # (noise, decay) -> ridge -> risks over seeds
    curves: dict[tuple[float, float], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        risk = _number(row, RISK)
        if math.isfinite(risk):
            curves[(_number(row, NOISE), _number(row, DECAY))][_number(row, RIDGE) if RIDGE in row else 0.0].append(risk)
    if not curves:
        return []
    data, _ = _data_args(rows)
    fixed = {k: v for k, v in data.items() if k in ("dim", "spectrum", "n_spikes", "spike", "tail_trace")}

    def tail_rank(decay: float) -> float:
        return LinearGaussian(**fixed, tail_decay=0.0 if math.isnan(decay) else decay).effective_ranks()[0]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    noises = sorted({noise for noise, _ in curves})
    styles = dict(zip(noises, ["-", "--", ":", "-."]))
    for noise in noises:
        decays = sorted(d for s, d in curves if s == noise and 0.0 in curves[(s, d)])
        ranks = [tail_rank(d) for d in decays]
        means = [np.mean(curves[(noise, d)][0.0]) for d in decays]
        left.plot(ranks, means, styles[noise], marker="o", ms=4, label=f"noise σ = {noise:g}")
        for r, m, d in zip(ranks, means, decays):
            left.annotate(f"α={d:g}", (r, m), fontsize=6, xytext=(3, 3), textcoords="offset points")
    n = data.get("n_train")
    if n:
        left.axvline(n, color="gray", ls=":", label=f"r_k = n = {n}")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("tail effective rank r_k(Σ) = Σ_{i>k} λ_i / λ_{k+1} (k = spikes)")
    left.set_ylabel("excess risk E(x·(θ̂ − β))² (risk/excess)")
    left.set_title("min-norm interpolator (ridge 0): benign iff the tail rank is high", fontsize=8)
    left.legend(fontsize=7)
    decays = sorted({decay for _, decay in curves})
    colors = dict(zip(decays, plt.cm.viridis(np.linspace(0.0, 0.9, len(decays)))))  # one colour per tail, one style per noise
    for (noise, decay), points in sorted(curves.items()):
        ridges = np.array(sorted(points))
        means = np.array([np.mean(points[r]) for r in ridges])
        right.plot(ridges, means, styles[noise], color=colors[decay], marker="o", ms=3, label=f"α = {decay:g}, σ = {noise:g}")
        best = int(np.argmin(means))
        right.plot(ridges[best], means[best], "*", ms=11, color=colors[decay])
    right.axvline(0.0, color="gray", ls=":")
    right.set_yscale("log")
    right.set_xlabel("ridge λ (model.net.ridge; λ < −σ_min(X)²/n refused)")
    right.set_ylabel("excess risk (risk/excess)")
    right.set_title("ridge: ★ = best λ of each curve (mean over seeds)", fontsize=8)
    right.legend(fontsize=6, ncol=2)
    seeds = max(len(v) for p in curves.values() for v in p.values())
    fig.suptitle(f"benign_ridge: {fixed}, n = {n}, {seeds} seeds — {csv_path}", fontsize=8)
    return save_figure(fig, out, "benign_ridge.png")
