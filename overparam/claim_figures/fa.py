"""Claim figures of the feedback-alignment experiments (configs/experiments/{feedback_alignment_ntk,fa_matrix_factorization}.yaml).

* ``feedback_alignment_ntk``: the angle between W2 and the feedback B (``alignment/weight_vs_feedback_deg``)
  and the training loss against step, one colour per width, solid without and dashed with weight decay
  (mean over seeds). The claim (Song, Xu & Lafferty, 2021): in the overparameterized regime the error
  converges to zero, and regularization is necessary for the weights to align with B.
* ``fa_matrix_factorization``: for every (rank, seed) with both an FA and a backprop (GD) run, the angle
  between the two runs' final inner representations X W1ᵀ (:func:`callbacks.alignment.representation_angles`:
  as flattened matrices, and the largest principal angle between their column spans), and the W2–B angle
  against step. The claims (Garg & Vempala): forward and feedback matrices come closer during FA, and at
  about equal error FA's and GD's representations can be almost orthogonal.

Sizes, rules and seeds come from the resolved config in each run's summary.json (the row's ``log_dir``).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from callbacks.alignment import representation_angles
from overparam.claim_figures import figure, run_config, save_figure
from overparam.report import experiment_title, read_scalars

ANGLE = "alignment/weight_vs_feedback_deg"
#: The title claim (report.CLAIMS["feedback_alignment"] would otherwise match this name as a substring).
#: Both runs of a pair below this train loss count as "equal error" (filled markers).
EQUAL_ERROR = 1e-6
NTK_CLAIM = "without weight decay W2 stays ~90° from B at large width; with it W2 aligns"


def final_representation(log_dir: Path) -> torch.Tensor:
    """H = X W1ᵀ, shape (n, r): the first layer's output on the run's training inputs X (n, d), from the
    run's final ``checkpoints/last.ckpt`` and its data module rebuilt from summary.json (float64)."""
    log_dir = Path(log_dir)
    config = run_config({"log_dir": str(log_dir)})
    module, _, name = config["data"]["class_path"].rpartition(".")
    data = getattr(importlib.import_module(module), name)(**config["data"]["init_args"])
    data.prepare_splits()
    state = torch.load(log_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    first = next(key for key in state if key.endswith("weight") and not key.endswith("feedback_weight"))  # W1 (r, d)
    return data.train.x.flatten(1).double() @ state[first].double().T


def _width_decay_seed(row: dict) -> tuple[int, float, int]:
    model = run_config(row)["model"]["init_args"]
    return int(model["net"]["init_args"]["width"]), float(model.get("weight_decay") or 0.0), int(row.get("seed") or 0)


@figure("feedback_alignment_ntk")
def angle_and_loss_by_weight_decay(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    curves: dict[tuple[int, float], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if not run_config(row):
            continue
        width, decay, _ = _width_decay_seed(row)
        scalars = read_scalars(Path(row["log_dir"]))
        for tag in (ANGLE, "train/loss"):
            if tag in scalars:
                curves[(width, decay)][tag].append(scalars[tag])
    if not curves:
        return []
    widths = sorted({w for w, _ in curves})
    colours = dict(zip(widths, plt.cm.viridis(np.linspace(0.0, 0.85, len(widths)))))
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for (width, decay), tags in sorted(curves.items()):
        for ax, tag in zip(axes, (ANGLE, "train/loss")):
            series = tags.get(tag)
            if not series:
                continue
            length = min(len(s) for s, _ in series)
            steps = series[0][0][:length]
            mean = np.mean([v[:length] for _, v in series], axis=0)
            label = f"width {width}, " + (f"weight decay {decay:g}" if decay else "no weight decay") + f" ({len(series)} seeds)"
            ax.plot(steps, mean, "--" if decay else "-", color=colours[width], lw=1.4, label=label)
    axes[0].axhline(90, color="gray", ls=":", lw=0.8)
    axes[0].set_ylabel("∠(W2, B) in degrees (mean over seeds)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("train loss (MSE, ½ E(f - y)²)")
    for ax in axes:
        ax.set_xlabel("step (full-batch GD)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"feedback_alignment_ntk: {NTK_CLAIM}\nNTK parameterization, rule fa; {csv_path}", fontsize=8)
    return save_figure(fig, out, "feedback_alignment_ntk_angle.png")


@figure("fa_matrix_factorization")
def fa_vs_gd_representations(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    runs: dict[tuple[int, int], dict[str, dict]] = defaultdict(dict)
    for row in rows:
        config = run_config(row)
        if not config or not (Path(row["log_dir"]) / "checkpoints" / "last.ckpt").is_file():
            continue
        model = config["model"]["init_args"]
        runs[(int(model["net"]["init_args"]["rank"]), int(row.get("seed") or 0))][model.get("rule", "backprop")] = row
    pairs = {key: rules for key, rules in runs.items() if {"fa", "backprop"} <= set(rules)}
    if not pairs:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for (rank, seed), rules in sorted(pairs.items()):
        h_fa, h_gd = (final_representation(Path(rules[r]["log_dir"])) for r in ("fa", "backprop"))
        angles = representation_angles(h_fa, h_gd)
        losses = [float(rules[r].get("train/loss") or "nan") for r in ("fa", "backprop")]
        fill = "full" if max(losses) < EQUAL_ERROR else "none"  # filled: both at ~zero error
        for shift, key, marker, colour in ((-0.08, "flat_deg", "o", "C0"), (0.08, "max_principal_deg", "s", "C1")):
            axes[0].plot(rank + shift, angles[key], marker, color=colour, fillstyle=fill, ms=6)
        for rule, style in (("fa", "-"), ("backprop", ":")):
            scalars = read_scalars(Path(rules[rule]["log_dir"]))
            if ANGLE in scalars:
                label = (
                    f"r = {rank}, " + ("FA: W2 vs its B" if rule == "fa" else "GD: W2 vs a random B")
                    if seed == min(s for r, s in pairs if r == rank)
                    else None
                )
                axes[1].plot(*scalars[ANGLE], style, color=f"C{rank % 10}", lw=1.1, label=label)
    for marker, colour, label in (("o", "C0", "∠(X W1ᵀ of FA, of GD), flattened"), ("s", "C1", "largest principal angle of their spans")):
        axes[0].plot([], [], marker, color=colour, label=label)
    axes[0].plot([], [], "o", color="gray", fillstyle="none", label=f"open: FA or GD train loss ≥ {EQUAL_ERROR:g}")
    axes[0].axhline(90, color="gray", ls=":", lw=0.8)
    axes[0].set_xlabel("inner dimension r (rank of Y = 4); one point per seed")
    axes[0].set_ylabel("angle between FA's and GD's final representations (°)")
    axes[0].set_ylim(-5, 185)
    axes[1].axhline(90, color="gray", ls=":", lw=0.8)
    axes[1].set_xscale("symlog", linthresh=10)
    axes[1].set_xlim(left=0)
    axes[1].set_xlabel("step (full-batch GD; linear below 10)")
    axes[1].set_ylabel("∠(W2, B) in degrees")
    for ax in axes:
        ax.legend(fontsize=6)
    fig.suptitle(f"{experiment_title('fa_matrix_factorization')}: FA vs GD representations, same init\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "fa_matrix_factorization_representations.png")
