"""PNG figures from training logs or a sweep CSV: ``python scripts/report.py PATH [--out DIR]``.

PATH is a run folder (``.../lightning_logs/version_K``), a folder holding such runs (all are
drawn), or a ``results.csv`` from scripts/sweep.py (overparam/sweep.py).

* Runs: one ``<run>_curves.png`` each — loss and accuracy (train vs test), gap, sharpness λmax
  against the optimizer's stability threshold ((2 + 2β)/η for SGD with momentum β; none for
  Adam, SAM, Entropy-SGD), kernel drift / λmin / alignment, relative weight change, alignment angles,
  teacher recovery, whichever the run logged; and ``<run>_density.png`` where HessianSharpness logged
  the Hessian eigenvalue density (``density: true``): the first and the last one logged (start and end
  of training), log density against eigenvalue over the whole spectrum (the outliers) and over the
  bulk (the central 98% of the mass).
* Sweeps: for each swept key, every final metric against it (mean ± std over seeds); keys that
  look like sizes (width, n_train, ...) on log axes. ``kernel/drift`` and ``weights/rel_change``
  get log-log axes and the fitted power law in the legend; ``test/acc`` also as test error, for
  double descent, with a line at the training-set size when the sweep fixed one.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from overparam.claim_figures import figures_for  # noqa: E402
from overparam.sweep_results import FINISHED, metric_columns, swept_columns  # noqa: E402

POWER_LAW = ("kernel/drift", "weights/rel_change", "kernel/analytic_distance")
#: Swept keys whose last part names a size: drawn on log axes.
SIZE_KEYS = ("width", "n_train", "n_test", "dim", "d", "n", "rank", "depth", "batch_size", "teacher_width", "probe_size")
#: The claim of each experiment (DESIGN.md), for figure titles; a run or sweep is matched by its folder or config name.
CLAIMS = {
    "ntk_drift": "kernel drift -> 0 with width (NTK parameterization)",
    "edge_of_stability": "sharpness rises to the stability threshold and hovers there",
    "feedback_alignment": "FA's update aligns with backprop's; weight decay aligns it further",
    "fa_matrix_factorization": "FA converges iff the rank suffices; FA and GD representations ~orthogonal",
    "sparse_parity": "a plateau, then a sudden drop of the test error",
    "teacher_student": "every teacher neuron is recovered, loss -> 0",
    "double_descent": "test error peaks near width = n",
    "benign_overfitting": "low test error above the SNR threshold, high below",
    "gaussian_mixture": "learned, with a small train/test gap",
    "sgd_temperature": "replica distance grows with lr / batch size",
    "flat_minima": "SAM and Entropy-SGD end flatter than SGD",
    "interpolation_threshold": "lambda_min(NTK) > 0 and random labels fitted only above parameters ~ n",
    "beyond_ntk": "near-zero loss even where the kernel moves O(1)",
    "paired_init": "paired (symmetric) init reaches loss eps at a smaller width",
    "wide_input": "d >= n: loss -> 0 at a small fixed width (tanh)",
    "mean_field_consistency": "mean field: consistent across widths, O(1) drift; NTK: drift -> 0",
    "resnet_convergence": "residual nets converge geometrically at every depth; plain nets slow with depth",
    "student_recovery": "every non-negligible student neuron matches a teacher neuron",
    "nt_ridge": "NT ridge ~ polynomial ridge of degree log n / log d; empirical NTK -> analytic",
    "triple_descent": "two kinds of random features: peaks at m = n and where the larger-scale kind alone numbers n; a ridge flattens them",
    "benign_ridge": "min-norm interpolation is benign iff the covariance tail has a high effective rank; the best ridge can be negative",
    "one_dimensional_he_init": "He-init ReLU net, GD, 1-D data off the origin: kinks never enter the data, fit = least-squares line",
    "manifold_sensitivity": "noise across the data subspace lowers the transversal sensitivity; depth only through the init",
    "gaussian_mixture_single_layer": "SGD interpolates with a large train/test gap",
    "gaussian_mixture_three_clusters": "SGD interpolates with a large gap; noisier SGD (larger lr/B) ends with a higher test error",
    "effective_temperature": "FDT temperature and replica distance both grow with lr / batch size",
    "replicated_sgd": "flatness measures correlate with test accuracy (Entropy-/Replicated-SGD, SAM, SGD)",
    "sparse_parity_scaling": "online SGD learns (n, k)-parity in n^O(k) steps; progress is hidden under the loss plateau",
    "ist_local_steps": "loss falls geometrically to a plateau that falls with surrogates p and rises with local steps tau",
    "feedback_alignment_ntk": "weight decay is needed for W2 to align with B (NTK parameterization)",
    "sgd_diffusion": "after the loss plateaus, SGD keeps moving: ||theta_t - theta_t0||^2 ~ (t - t0)^c",
}
#: What each tag's y axis measures.
Y_LABELS = {
    "loss": "loss (whole set)",
    "acc": "accuracy",
    "sharpness": "Hessian eigenvalue",
    "kernel/drift": "||K_t - K_0||_F / ||K_0||_F",
    "kernel/alignment": "centered kernel-target alignment",
    "kernel/lambda_min": "smallest NTK eigenvalue",
    "kernel/mean_eigenvalue": "mean NTK eigenvalue (tr K / n)",
    "weights/rel_change": "||W_t - W_0||_F / ||W_0||_F",
    "alignment": "angle (degrees)",
    "teacher": "cosine (stray_mass: share of output weight)",
    "replica": "relative squared distance",
    "gap": "test - train (loss), train - test (acc)",
}
# Panels of a run figure: (title, tags drawn together, y log scale).
PANELS = [
    ("loss", ["train/loss", "test/loss"], True),
    ("accuracy", ["train/acc", "test/acc"], False),
    ("generalization gap", ["gap/loss", "gap/acc"], False),
    ("sharpness", ["sharpness/lambda_max", "sharpness/stability_threshold", "sharpness/lambda_max/"], False),
    ("kernel drift", ["kernel/drift"], False),
    ("kernel", ["kernel/lambda_min", "kernel/alignment"], False),
    ("weights: relative change", ["weights/rel_change/"], False),
    ("alignment angles (deg)", ["alignment/"], False),
    ("teacher recovery", ["teacher/"], False),
    ("replicas", ["replica/"], False),
    ("SGD noise", ["sgd/"], False),
    ("flatness", ["flatness/"], False),
]


def experiment_title(name: str) -> str:
    """``"ntk_drift"`` -> ``"ntk_drift: kernel drift -> 0 with width (NTK parameterization)"``; other names as they are."""
    matches = [key for key in CLAIMS if key in name]
    if not matches:
        return name
    key = max(matches, key=len)  # feedback_alignment_ntk, not feedback_alignment
    return f"{key}: {CLAIMS[key]}"


def y_label(tag: str) -> str:
    for key, label in Y_LABELS.items():
        if tag.startswith(key) or tag.endswith(key):
            return label
    return tag


def draw(ax, x: np.ndarray, y: np.ndarray, label: str, style: str = "-", yerr: Optional[np.ndarray] = None):
    """One series: a line through markers (every point visible, a one-point series too); markers are
    dropped only on long curves (> 60 points), where the line itself shows every point."""
    marker = "o" if len(x) <= 60 else None
    if yerr is not None:
        return ax.errorbar(x, y, yerr=yerr, fmt=style, marker=marker, ms=4, capsize=3, label=label)
    return ax.plot(x, y, style, marker=marker, ms=3, lw=1.2, label=label)[0]


def read_scalars(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``tag -> (steps, values)`` from the TensorBoard events of one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    out = {}
    for tag in events.Tags()["scalars"]:
        if tag.startswith("hparam/") or tag == "epoch":
            continue
        points = events.Scalars(tag)
        out[tag] = (np.array([p.step for p in points]), np.array([p.value for p in points]))
    return out


def run_figure(run: Path, out: Path) -> Optional[Path]:
    scalars = read_scalars(run)
    panels = []
    for title, prefixes, log in PANELS:
        tags = [t for t in sorted(scalars) if any(t == p or (p.endswith("/") and t.startswith(p)) for p in prefixes)]
        if tags:
            panels.append((title, tags, log))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, tags, log) in zip(axes.flat, panels):
        for tag in tags:
            steps, values = scalars[tag]
            style = "--" if tag.endswith("stability_threshold") else "-"
            draw(ax, steps, values, tag, style)
        if log and all((scalars[t][1] > 0).all() for t in tags):
            ax.set_yscale("log")
        if title == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.set_xlabel("step (updates)")
        ax.set_ylabel(y_label(tags[0]), fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    name = "_".join(run.parts[-3:]).replace("lightning_logs_", "")
    fig.suptitle(f"{experiment_title(name)}\n{run}", fontsize=8)
    fig.tight_layout()
    path = out / f"{name}_curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def power_law_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x.

    >>> round(power_law_slope(np.array([1.0, 10, 100]), np.array([1.0, 0.1, 0.01])), 6)
    -1.0
    """
    keep = (x > 0) & (y > 0)
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def as_number(value: str) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def sweep_figures(csv_path: Path, out: Path, only: Optional[list[str]] = None) -> list[Path]:
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = [r for r in reader if r.get("status") in FINISHED]
    swept = swept_columns(header)
    metrics = [c for c in metric_columns(header) if c != "epoch" and not c.startswith("diag/")]
    if only:
        metrics = [m for m in metrics if any(m == o or m.startswith(o.rstrip("*")) and o.endswith("*") for o in only)]
    paths = []
    for key in swept:
        xs = sorted({as_number(r[key]) for r in rows if as_number(r[key]) is not None})
        if not xs:
            continue
        shown = [m for m in metrics if any(as_number(r.get(m)) is not None for r in rows)]
        cols = min(3, len(shown))
        nrows = math.ceil(len(shown) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
        log_x = min(xs) > 0 and (key.rsplit(".", 1)[-1] in SIZE_KEYS or max(xs) / min(xs) >= 8)
        seeds = max((len(g) for g in _groups(rows, key, swept).values()), default=1)
        others = [k for k in swept if k != key]  # one line per combination of the other swept keys
        if len({r.get("config_hash") for r in rows}) > 1:
            others.append("config_hash")  # and per configuration: rows of different configs never average together
        for ax, metric in zip(axes.flat, shown):
            series = defaultdict(lambda: defaultdict(list))
            for r in rows:
                x, y = as_number(r[key]), as_number(r.get(metric))
                if x is not None and y is not None and math.isfinite(y):
                    series[", ".join(f"{k}={r[k]}" for k in others)][x].append(y)
            for name, groups in sorted(series.items()):
                gx = np.array(sorted(groups))
                mean = np.array([np.mean(groups[x]) for x in gx])
                std = np.array([np.std(groups[x]) for x in gx])
                label = f"{metric} {name}".strip()
                if metric.startswith(POWER_LAW) and log_x and len(gx) >= 2 and (mean > 0).all():
                    label += f" (slope {power_law_slope(gx, mean):.2f})"
                    ax.set_yscale("log")
                    guide = mean[0] * (gx / gx[0]) ** -0.5
                    ax.plot(gx, guide, ":", color="gray", lw=1, label="slope -1/2 guide" if name == sorted(series)[0] else None)
                draw(ax, gx, mean, label, yerr=std if seeds > 1 else None)
                if metric == "test/acc":
                    draw(ax, gx, 1 - mean, f"test error {name}".strip(), "--", yerr=std if seeds > 1 else None)
            if metric == "test/acc":
                n_train = {as_number(r.get("data.n_train")) for r in rows} if "data.n_train" not in swept else set()
                if len(n_train) == 1 and None not in n_train:
                    ax.axvline(n_train.pop(), color="gray", ls=":", label="n_train")
            if metric.endswith("/loss") and all(v > 0 for g in series.values() for vs in g.values() for v in vs):
                ax.set_yscale("log")
            if log_x:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded minor labels
            ax.set_xlabel(key)
            ax.set_ylabel(f"final {y_label(metric)}", fontsize=8)
            ax.set_title(metric, fontsize=9)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(shown) :]:
            ax.axis("off")
        configs = sorted({Path(r.get("config") or "").stem for r in rows} - {""})
        spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed per point"
        fig.suptitle(
            f"{experiment_title(', '.join(configs) or str(csv_path.parent.name))}\nfinal values vs {key} ({spread}) — {csv_path}",
            fontsize=8,
        )
        fig.tight_layout()
        path = out / f"sweep_{key.replace('/', '_')}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    configs = sorted({Path(r.get("config") or "").stem for r in rows} - {""})
    for claim_figure in figures_for(configs):
        paths += claim_figure(rows, csv_path, out)
    return paths


def _groups(rows: list[dict], key: str, swept: list[str]) -> dict[tuple, list[dict]]:
    """Rows that share every swept value and the config: the seeds of one point."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r.get("config_hash"), *(r.get(k) for k in swept))].append(r)
    return groups


def read_densities(run: Path, tag: str = "sharpness/density") -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``step -> (grid, density)`` from the histograms callbacks.sharpness.log_density wrote (bucket i ends
    at grid[i] + h/2 and holds the mass density[i]·h); empty when the run logged none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"histograms": 0}).Reload()
    if tag not in events.Tags()["histograms"]:
        return {}
    out = {}
    for event in events.Histograms(tag):
        limits, mass = np.array(event.histogram_value.bucket_limit), np.array(event.histogram_value.bucket)
        step = limits[1] - limits[0]
        out[event.step] = (limits - step / 2, mass / step)
    return out


def density_figure(run: Path, out: Path) -> Optional[Path]:
    """The first and last logged Hessian eigenvalue densities of a run: whole spectrum and bulk, log density."""
    densities = read_densities(run)
    if not densities:
        return None
    steps = sorted({min(densities), max(densities)})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for step in steps:
        grid, density = densities[step]
        for ax in axes:
            ax.semilogy(grid, np.maximum(density, 1e-300), lw=1.2, label=f"step {step}")
    cdf = np.cumsum(densities[steps[-1]][1])
    grid = densities[steps[-1]][0]
    low, high = grid[np.searchsorted(cdf, 0.01 * cdf[-1])], grid[np.searchsorted(cdf, 0.99 * cdf[-1])]
    pad = 0.1 * (high - low) or 1e-3 * max(abs(low), 1.0)
    axes[1].set_xlim(low - pad, high + pad)
    for ax, title in zip(axes, ("whole spectrum: outliers", "bulk: central 98% of the mass")):
        peak = max(float(densities[s][1].max()) for s in steps)
        ax.set_ylim(peak * 1e-7, peak * 2)
        ax.set_xlabel("Hessian eigenvalue")
        ax.set_ylabel("density")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{run} — Hessian eigenvalue density (stochastic Lanczos quadrature)", fontsize=8)
    fig.tight_layout()
    path = out / ("_".join(run.parts[-3:]).replace("lightning_logs_", "") + "_density.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def find_runs(path: Path) -> list[Path]:
    if list(path.glob("events.out.tfevents.*")):
        return [path]
    return sorted({p.parent for p in path.rglob("events.out.tfevents.*")})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="PNG figures from run logs or a sweep CSV.")
    parser.add_argument("path", type=Path, help="a run folder, a folder of runs, or a sweep results.csv")
    parser.add_argument("--out", type=Path, default=None, help="where to write PNGs (default: next to PATH, in figures/)")
    parser.add_argument("--metrics", default=None, help="sweeps: comma-separated tags to draw (a trailing * matches a prefix); default all")
    args = parser.parse_args(argv)
    if not args.path.exists():
        parser.error(f"no such file or folder: {args.path}")
    out = args.out or ((args.path.parent if args.path.is_file() else args.path) / "figures")
    out.mkdir(parents=True, exist_ok=True)
    if args.path.suffix == ".csv":
        written = sweep_figures(args.path, out, args.metrics.split(",") if args.metrics else None)
    else:
        written = [p for run in find_runs(args.path) for draw in (run_figure, density_figure) if (p := draw(run, out)) is not None]
    if not written:
        print(f"error: nothing to plot in {args.path}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
