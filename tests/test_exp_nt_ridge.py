"""nt_ridge at CI size (configs/ci/nt_ridge.yaml): the directions Montanari & Zhong (2020) predict, not exact numbers."""

import math

from experiment_runner import run_config


def test_nt_ridge_is_polynomial_ridge_of_degree_log_n_over_log_d_and_the_wide_net_tracks_it(tmp_path):
    """d = 16, n = 512: ℓ = ⌊log 512 / log 16⌋ = 2. Data and net seeds 0-3 measured: degree-2 polynomial ridge
    within 5-6% of ridgeless NT regression (test loss 0.0062-0.0079), degree 1 at 6-8x; the width-1024 net
    after 400 GD steps (η = 6) at 1.3-1.5x NT ridge; the distance of the empirical NTK at init from the analytic one
    3.9-4.8x smaller at width 1024 than at 64 (16x: slope −0.49 … −0.57). The test runs seed 0 (~8 s)."""
    wide = run_config("configs/ci/nt_ridge.yaml", tmp_path / "1024")["metrics"]
    narrow = run_config("configs/ci/nt_ridge.yaml", tmp_path / "64", "--model.net.width", "64", "--trainer.max_epochs", "1")["metrics"]
    nt, poly = wide["baseline/nt_ridge_test_loss"], wide["baseline/poly_ridge_test_loss"]
    assert wide["baseline/poly_degree"] == 2
    assert abs(poly / nt - 1) < 0.15  # NT ridge behaves like polynomial ridge of degree ℓ ...
    assert wide["baseline/poly_ridge_test_loss/degree_1"] > 3 * nt  # ... not of a lower degree
    assert wide["baseline/poly_ridge_test_loss/degree_0"] > wide["baseline/poly_ridge_test_loss/degree_1"]
    assert wide["test/loss"] < 2 * nt  # the wide trained net is near its infinite-width limit
    assert wide["test/loss"] < 0.5 * wide["baseline/poly_ridge_test_loss/degree_1"]
    slope = math.log(wide["kernel/analytic_distance"] / narrow["kernel/analytic_distance"]) / math.log(1024 / 64)
    assert -0.7 < slope < -0.35  # empirical NTK at init → analytic NTK as width^(-1/2)


def test_nt_ridge_claim_figure_draws_from_sweep_rows(tmp_path):
    """The claim figure from CSV-like rows (strings, as csv.DictReader gives them): a width sweep, two seeds."""
    from overparam.claim_figures import REGISTRY
    from overparam.claim_figures.nt_ridge import nt_ridge_figure as draw

    rows = [
        {
            "model.net.width": str(width),
            "seed": str(seed),
            "test/loss": str(0.007 + 0.1 / width),
            "kernel/analytic_distance": str(4.0 / math.sqrt(width)),
            "baseline/nt_ridge_test_loss": "0.0067",
            "baseline/poly_degree": "2.0",
            "baseline/poly_ridge_test_loss": "0.0071",
            **{f"baseline/poly_ridge_test_loss/degree_{k}": str(v) for k, v in enumerate((0.15, 0.057, 0.0071, 0.0071))},
        }
        for width in (64, 256, 1024)
        for seed in (0, 1)
    ]
    assert draw in REGISTRY["nt_ridge"]  # report.py draws it for configs named nt_ridge
    (path,) = draw(rows, tmp_path / "results.csv", tmp_path)
    assert path.name == "nt_ridge.png" and path.stat().st_size > 10_000
    assert draw([{"test/loss": "0.1"}], tmp_path / "results.csv", tmp_path) == []  # no baselines logged: no figure
