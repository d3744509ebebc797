"""Lazy vs rich regimes at CI size (configs/ci/{beyond_ntk,mean_field_consistency}.yaml): the direction the
theory predicts, not exact numbers, and the claim figures drawn from the runs."""

from pathlib import Path

from experiment_runner import run_config, scalars

from overparam.claim_figures.regimes import drift_vs_final_loss, trajectories_across_widths


def version_folder(root: Path) -> str:
    """The run's TensorBoard folder, as the sweep CSV's ``log_dir`` names it."""
    return str(sorted(root.glob("lightning_logs/version_*"))[-1])


def test_beyond_ntk_order_one_kernel_drift_with_near_zero_loss(tmp_path):
    """Razborov (2022): both layers trained at different rates (second layer 3× the first), random Gaussian
    labels on Gaussian inputs, width 16 (m·d = 8n). Seeds 0-4: the kernel drift ends at 0.76-1.09 (a lazy
    width-2048 run of the same config: 0.03-0.05) and the loss falls by 1.4·10²-1.5·10⁵ in 300 steps.
    A lazy run (drift < 0.5) or a stalled one (loss ratio > 10⁻²) fails."""
    rows = []
    for seed in (0, 1):
        root = tmp_path / str(seed)
        summary = run_config("configs/ci/beyond_ntk.yaml", root, "--model.seed", str(seed), "--data.seed", str(seed))
        initial = scalars(root, "train/loss")[0][1]
        drift = summary["metrics"]["kernel/drift"]
        assert drift > 0.5, (seed, drift)  # the kernel moved by half its norm or more: not the NTK regime
        assert summary["metrics"]["train/loss"] < 1e-2 * initial, (seed, summary["metrics"]["train/loss"], initial)
        rows.append({"log_dir": version_folder(root), "kernel/drift": str(drift)})
    (png,) = drift_vs_final_loss(rows, tmp_path / "results.csv", tmp_path)
    assert png.stat().st_size > 0


def test_mean_field_consistent_across_widths_while_ntk_drift_vanishes(tmp_path):
    """Widths 256 and 2048, 200 GD steps on a ReLU teacher. Mean field with lr = 0.1·width (seeds 0-2): the
    loss curves of the two widths differ by ≤ 13% at every logged step, final drifts 0.87-1.19 with a
    ratio 0.86-1.0 between widths. NTK with lr = 0.5 (ntk_drift's setting): drift 0.02-0.03 at width 256,
    ~3-6× less at 2048. Mean-field curves that split with width, a lazy mean-field run, or NTK drift that
    does not fall with width fails."""
    runs = {}
    for param, lr_per_width, lr in (("mean_field", 0.1, None), ("ntk", None, 0.5)):
        for width in (256, 2048):
            root = tmp_path / f"{param}_{width}"
            rate = lr if lr is not None else lr_per_width * width
            args = ("--model.net.parameterization", param, "--model.net.width", str(width), "--model.lr", str(rate))
            summary = run_config("configs/ci/mean_field_consistency.yaml", root, *args)
            runs[param, width] = (summary["metrics"], dict(scalars(root, "train/loss")), root)
    (mf_small, loss_small, _), (mf_large, loss_large, _) = runs["mean_field", 256], runs["mean_field", 2048]
    assert loss_small.keys() == loss_large.keys() and len(loss_small) >= 4
    for step in loss_small:  # one trajectory, whatever the width
        assert abs(loss_small[step] - loss_large[step]) < 0.25 * loss_large[step], (step, loss_small, loss_large)
    assert loss_large[max(loss_large)] < 0.5 * loss_large[0]  # and it learns
    assert mf_small["kernel/drift"] > 0.5 and mf_large["kernel/drift"] > 0.5  # the kernel moves O(1) ...
    assert 0.75 < mf_large["kernel/drift"] / mf_small["kernel/drift"] < 1.33  # ... by the same amount at both widths
    ntk_small, ntk_large = runs["ntk", 256][0], runs["ntk", 2048][0]
    assert ntk_large["kernel/drift"] < ntk_small["kernel/drift"] / 2.5  # lazy: drift falls with width (8×: √8 ≈ 2.8)
    assert ntk_large["kernel/drift"] < 0.1 * mf_large["kernel/drift"]
    rows = [{"log_dir": version_folder(root)} for _, _, root in runs.values()]
    (png,) = trajectories_across_widths(rows, tmp_path / "results.csv", tmp_path)
    assert png.stat().st_size > 0
