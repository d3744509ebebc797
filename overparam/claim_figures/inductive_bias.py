"""Figures of the inductive-bias experiments. Each run's settings (optimizer, bias_init, depth, noise,
init_scale) are read from its own summary.json, so rows of several sweeps into one folder combine.

* one_dimensional_he_init (Holzmüller & Steinwart 2020): the learned functions of seed 0 beside the target
  and the least-squares line (from each run's last checkpoint, when it has one), and ``linear_fit/distance``,
  ``linear_fit/mse_ratio`` and ``linear_fit/bias_change`` during training, per variant (GD or Adam × bias_init).
* manifold_sensitivity (He, Tsai & Ward 2022): the final ``sensitivity/transversal_ratio`` against the depth
  with and without noise across the subspace, the ratio during training, and the final ratio of the two-layer
  net against init_scale.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from overparam.claim_figures import figure, save_figure
from overparam.report import draw, experiment_title, read_scalars

RATIO = "sensitivity/transversal_ratio"
HE_GAIN = math.sqrt(2.0)


def config_of(row: dict) -> Optional[dict]:
    """The resolved config of a row's run (its summary.json), or None."""
    summary = Path(row.get("log_dir") or "") / "summary.json"
    return json.loads(summary.read_text())["config"] if summary.is_file() else None


def seed_of(row: dict) -> int:
    try:
        return int(row.get("seed") or 0)
    except ValueError:
        return 0


# ---- one_dimensional_he_init -------------------------------------------------------------------------


def variant_of(config: dict) -> str:
    """``"GD, bias_init=zero"``-style label of a run."""
    model = config["model"]["init_args"]
    optimizer = {"sgd": "GD", "adam": "Adam"}.get(model.get("optimizer", "sgd"), model.get("optimizer"))
    return f"{optimizer}, bias_init={model['net']['init_args'].get('bias_init', 'zero')}"


def learned_function(config: dict, log_dir: Path, x):
    """f(x) of the run's net from its last checkpoint (None when it kept none)."""
    import torch

    from lightning_modules.nets.mlp import TwoLayerMLP

    ckpt = log_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return None
    args = dict(config["model"]["init_args"]["net"]["init_args"])
    args["input_dim"] = args.get("input_dim") or 1
    args["output_dim"] = args.get("output_dim") or 1
    net = TwoLayerMLP(**args)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    with torch.no_grad():
        return net(torch.as_tensor(x, dtype=torch.float32)[:, None])[:, 0].numpy()


@figure("one_dimensional_he_init")
def one_dimensional_he_init(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    import torch

    from datamodules.synthetic import TARGETS_1D

    runs = defaultdict(list)  # variant -> [(seed, log_dir, config)]
    for row in rows:
        config = config_of(row)
        if config is not None and config["model"]["init_args"]["net"]["class_path"].endswith("TwoLayerMLP"):
            runs[variant_of(config)].append((seed_of(row), Path(row["log_dir"]), config))
    if not runs:
        return []
    colors = {variant: f"C{i}" for i, variant in enumerate(sorted(runs))}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    data = next(iter(runs.values()))[0][2]["data"]["init_args"]
    a, b, target = float(data["a"]), float(data["b"]), data["target"]
    x_train = np.linspace(a, b, int(data["n_train"]))
    x = np.linspace(a, b, 400)
    f_star = TARGETS_1D[target]
    ax.plot(x, f_star(torch.as_tensor(x)).numpy(), "k-", lw=2, alpha=0.4, label=f"target {target}")
    slope, intercept = np.polyfit(x_train, f_star(torch.as_tensor(x_train)).numpy(), 1)
    ax.plot(x, intercept + slope * x, "k:", lw=1.5, label="least-squares line (train)")
    ax.plot(x_train, f_star(torch.as_tensor(x_train)).numpy(), "k.", ms=6)
    for variant, members in sorted(runs.items()):
        seed, log_dir, config = min(members, key=lambda m: m[0])
        f = learned_function(config, log_dir, x)
        if f is not None:
            ax.plot(x, f, "-", color=colors[variant], lw=1.2, label=f"{variant} (seed {seed})")
    ax.set_xlabel("x")
    ax.set_title("learned functions after training (seed 0)", fontsize=8)
    ax.legend(fontsize=7)
    panels = [
        (axes[0, 1], "linear_fit/distance", "mean (f - line)^2 / mean (line - y)^2 (test)", True),
        (axes[1, 0], "linear_fit/mse_ratio", "test MSE of the net / test MSE of the line", True),
        (axes[1, 1], "linear_fit/bias_change", "RMS movement of the hidden biases", True),
    ]
    for ax, tag, label, log in panels:
        for variant, members in sorted(runs.items()):
            for i, (seed, log_dir, _) in enumerate(sorted(members, key=lambda m: m[0])):
                scalars = read_scalars(log_dir)
                if tag not in scalars:
                    continue
                steps, values = scalars[tag]
                if log:
                    steps, values = steps[values > 0], values[values > 0]
                line = draw(ax, steps, values, variant if i == 0 else None)
                line.set_color(colors[variant])
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(label, fontsize=8)
        ax.set_title(tag + " (every seed)", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(
        f"{experiment_title('one_dimensional_he_init')}\n{target} on [{a:g}, {b:g}], kinks of zero biases at 0 — {csv_path}", fontsize=8
    )
    return save_figure(fig, out, "one_dimensional_he_init.png")


# ---- manifold_sensitivity ----------------------------------------------------------------------------


def sensitivity_key(config: dict) -> tuple[int, float, float]:
    """``(depth, normal_noise_std, init_scale)`` of a run (a TwoLayerMLP counts as depth 1)."""
    net = config["model"]["init_args"]["net"]["init_args"]
    noise = float(config["data"]["init_args"].get("normal_noise_std", 0.0) or 0.0)
    return int(net.get("depth", 1)), noise, float(net.get("init_scale", 1.0))


@figure("manifold_sensitivity")
def manifold_sensitivity(rows: list[dict], csv_path: Path, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    runs = defaultdict(list)  # (depth, noise, init_scale) -> [(seed, log_dir, final ratio, initial ratio)]
    for row in rows:
        config = config_of(row)
        if config is None or not row.get(RATIO):
            continue
        scalars = read_scalars(Path(row["log_dir"]))
        if RATIO not in scalars:
            continue
        runs[sensitivity_key(config)].append((seed_of(row), Path(row["log_dir"]), float(row[RATIO]), float(scalars[RATIO][1][0])))
    if not runs:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    he = {key[:2]: key for key in runs if math.isclose(key[2], HE_GAIN, rel_tol=1e-3)}  # (depth, noise) -> key
    ax = axes[0]
    for noise in sorted({noise for _, noise in he}):
        depths = sorted(depth for depth, n in he if n == noise)
        final = [np.array([m[2] for m in runs[he[(d, noise)]]]) for d in depths]
        initial = [np.mean([m[3] for m in runs[he[(d, noise)]]]) for d in depths]
        line = draw(
            ax,
            np.array(depths),
            np.array([v.mean() for v in final]),
            f"noise std {noise:g}, trained",
            yerr=np.array([v.std() for v in final]),
        )
        color = (line[0] if isinstance(line, tuple) else line).get_color()
        ax.plot(depths, initial, ":", color=color, marker="x", label=f"noise std {noise:g}, at init")
    ax.set_xlabel("hidden layers (1 = two-layer net)")
    ax.set_ylabel("E||P_perp grad f|| / E||P grad f||")
    ax.set_title("final transversal ratio vs depth (mean ± std over seeds), init_scale √2", fontsize=8)
    ax.legend(fontsize=7)
    ax = axes[1]
    depths = sorted({depth for depth, _ in he})
    for (depth, noise), key in sorted(he.items()):
        seed, log_dir, _, _ = min(runs[key], key=lambda m: m[0])
        steps, values = read_scalars(log_dir)[RATIO]
        draw(ax, steps, values, f"depth {depth}, noise {noise:g}", "-" if noise == 0 else "--").set_color(f"C{depths.index(depth)}")
    ax.set_xlabel("GD step")
    ax.set_ylabel("transversal ratio")
    ax.set_title("during training (seed 0); dashed: noise across the subspace", fontsize=8)
    ax.legend(fontsize=7)
    ax = axes[2]
    scales = sorted({scale for depth, noise, scale in runs if depth == 1 and noise == 0})
    if scales:
        final = [np.array([m[2] for m in runs[(1, 0.0, s)]]) for s in scales]
        initial = [np.mean([m[3] for m in runs[(1, 0.0, s)]]) for s in scales]
        draw(ax, np.array(scales), np.array([v.mean() for v in final]), "trained", yerr=np.array([v.std() for v in final]))
        draw(ax, np.array(scales), np.array(initial), "at init", ":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("init_scale (two-layer net, no noise)")
    ax.set_ylabel("transversal ratio")
    ax.set_title("two-layer net, no noise: W1 P_perp stays at init (one seed per scale)", fontsize=8)
    fig.suptitle(f"{experiment_title('manifold_sensitivity')}\n{csv_path}", fontsize=8)
    return save_figure(fig, out, "manifold_sensitivity.png")
