"""overparam/report.py: non-empty PNGs from event files and from a sweep CSV (both written here)."""

import csv

import numpy as np

from overparam import report


def test_run_and_sweep_figures_are_written(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "lightning_logs" / "version_0"
    writer = SummaryWriter(str(run))
    for step in range(20):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        writer.add_scalar("test/loss", 1.2 / (step + 1), step)
        writer.add_scalar("sharpness/lambda_max", min(step, 10.0), step)
        writer.add_scalar("sharpness/two_over_lr", 10.0, step)
    writer.close()
    assert report.main([str(tmp_path), "--out", str(tmp_path / "figs")]) == 0
    (png,) = (tmp_path / "figs").glob("*_curves.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(report.read_scalars(run)) == {"train/loss", "test/loss", "sharpness/lambda_max", "sharpness/two_over_lr"}

    csv_path = tmp_path / "results.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "model.net.width", "seed", "status", "wall_time_s", "returncode", "log_dir", "kernel/drift", "test/acc"])
        for width in (64, 256, 1024):
            for seed in (0, 1):
                w.writerow([f"w{width}s{seed}", width, seed, "completed", 1.0, 0, "", width**-0.5 * (1 + 0.01 * seed), 0.9])
    (png,) = report.sweep_figures(csv_path, tmp_path)
    assert png.stat().st_size > 10_000
    drift = np.array([64, 256, 1024]) ** -0.5
    assert abs(report.power_law_slope(np.array([64.0, 256, 1024]), drift) + 0.5) < 1e-9


def test_a_one_point_series_gets_a_visible_marker():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    line = report.draw(ax, np.array([3.0]), np.array([0.5]), "one point")
    assert line.get_marker() not in (None, "None", "", " ") and line.get_markersize() > 0  # a line alone would be invisible
    long = report.draw(ax, np.arange(500.0), np.ones(500), "curve")
    assert long.get_marker() in (None, "None", "")  # a long curve shows every point by itself
    plt.close(fig)


def sweep_titles(tmp_path, monkeypatch, seeds):
    shown = []
    monkeypatch.setattr(report.plt, "close", lambda fig: shown.append(fig))
    csv_path = tmp_path / "results.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["config_hash", "config", "run_id", "model.net.width", "seed", "status", "wall_time_s", "returncode", "log_dir", "kernel/drift"]
        )
        for width in (64, 128):
            for seed in seeds:
                w.writerow(["h", "configs/experiments/ntk_drift.yaml", f"w{width}s{seed}", width, seed, "completed", 1, 0, "", width**-0.5])
    report.sweep_figures(csv_path, tmp_path)
    (fig,) = shown
    ax = fig.axes[0]
    return fig._suptitle.get_text(), ax


def test_sweep_figure_names_the_experiment_and_its_spread_honestly(tmp_path, monkeypatch):
    title, ax = sweep_titles(tmp_path, monkeypatch, seeds=[0])
    assert "ntk_drift: kernel drift -> 0 with width" in title and "one seed per point" in title and "±" not in title
    assert ax.get_xscale() == "log"  # a width is a size, even when the sweep spans only 2x
    assert ax.get_ylabel() and ax.get_xlabel() == "model.net.width"
    (tmp_path / "two").mkdir()
    title, _ = sweep_titles(tmp_path / "two", monkeypatch, seeds=[0, 1])
    assert "mean ± std over 2 seeds" in title


def test_double_descent_figure_draws_one_line_per_solver_from_the_runs_configs(tmp_path, monkeypatch):
    """Rows of three sweeps in one CSV (closed form, GD, Adam): each run's summary.json names its solver."""
    import json

    from overparam.claim_figures import double_descent

    shown = []
    monkeypatch.setattr(double_descent.plt, "close", lambda fig: shown.append(fig))
    solvers = {
        "a": {"net": {"init_args": {"closed_form": True, "ridge": 0.0}}, "optimizer": "sgd", "lr": 0.0},
        "b": {"net": {"init_args": {"closed_form": False}}, "optimizer": "adam", "lr": 0.3},
    }
    csv_path = tmp_path / "results.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["config_hash", "config", "run_id", "model.net.width", "seed", "status", "wall_time_s", "returncode", "log_dir", "test/loss"]
        )
        for hash_, model in solvers.items():
            for width in (16, 64, 256):
                run = tmp_path / f"{hash_}{width}"
                run.mkdir()
                config = {"model": {"init_args": model}, "trainer": {"max_epochs": 500}, "data": {"init_args": {"n_train": 64}}}
                (run / "summary.json").write_text(json.dumps({"config": config}))
                w.writerow([hash_, "configs/experiments/double_descent.yaml", f"w{width}", width, 0, "completed", 1, 0, run, 1.0 / width])
    paths = report.sweep_figures(csv_path, tmp_path)
    assert tmp_path / "double_descent_by_solver.png" in paths
    ax = shown[-1].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "min-norm (closed form) (one seed)" in labels and "adam from a = 0, lr 0.3, 500 epochs (one seed)" in labels
    assert "width = n = 64" in labels
    assert ax.get_xscale() == "log" and "double_descent" in ax.get_title()


def test_an_experiment_is_titled_by_its_own_claim_not_by_a_shorter_name_it_contains():
    assert report.experiment_title("feedback_alignment_ntk").startswith("feedback_alignment_ntk: weight decay")
    assert report.experiment_title("configs/ci/feedback_alignment").startswith("feedback_alignment: FA's update")
    assert report.experiment_title("something_else") == "something_else"


def test_axis_labels_name_what_the_tag_measures():
    assert report.y_label("kernel/alignment") == "centered kernel-target alignment"  # not an angle
    assert report.y_label("alignment/weight_vs_feedback_deg") == "angle (degrees)"
    assert report.y_label("kernel/drift").startswith("||K_t - K_0||")
