"""Each phenomenon at CI size, through the real command line (configs/ci/*.yaml): the direction the
theory predicts, not exact numbers."""

import math

import pytest
import torch
from experiment_runner import run_config, scalars


def best_rank_r_loss(x: torch.Tensor, y: torch.Tensor, r: int) -> float:
    """min over rank-r M of 1/(2n) ‖X Mᵀ − Y‖²: reduced-rank regression (least squares, then the
    top-r singular directions of the fitted values)."""
    x, y = x.double(), y.double()
    fitted = x @ torch.linalg.lstsq(x, y).solution  # (n, k)
    u, s, vh = torch.linalg.svd(fitted, full_matrices=False)
    best = (u[:, :r] * s[:r]) @ vh[:r]
    return (0.5 * ((best - y) ** 2).sum() / len(y)).item()


def test_fa_matrix_factorization_converges_iff_rank_suffices(tmp_path):
    from datamodules.synthetic import TeacherStudent

    fa_full = run_config("configs/ci/fa_matrix_factorization.yaml", tmp_path / "r4")
    assert fa_full["metrics"]["train/loss"] < 1e-3
    fa_low = run_config("configs/ci/fa_matrix_factorization.yaml", tmp_path / "r2", "--model.net.rank", "2")
    gd_low = run_config("configs/ci/fa_matrix_factorization.yaml", tmp_path / "r2bp", "--model.net.rank", "2", "--model.rule", "backprop")
    data = TeacherStudent(**fa_low["config"]["data"]["init_args"])
    data.prepare_splits()
    floor = best_rank_r_loss(data.train.x, data.train.y, 2)
    assert gd_low["metrics"]["train/loss"] <= 1.02 * floor  # GD reaches the best rank-2 loss
    assert fa_low["metrics"]["train/loss"] >= 1.15 * floor  # FA stalls above it


def test_sparse_parity_plateau_then_sudden_drop(tmp_path):
    """Test accuracy per epoch (12 epochs of 32 SGD steps): at chance (< 0.6) for a plateau of several
    epochs, then from chance to > 0.8 within a few epochs, shorter than the plateau, then learned (> 0.9).
    Seeds 0-7: the plateau lasts 4-5 epochs after the initialization, the rise 1-2 epochs; gradual
    learning, or learning from the start, fails one of the two. Three seeds, ~2 s each."""
    for seed in (0, 1, 2):
        root = tmp_path / str(seed)
        summary = run_config(
            "configs/ci/sparse_parity.yaml", root, "--model.seed", str(seed), "--data.seed", str(seed), "--seed_everything", str(seed)
        )
        acc = [v for _, v in scalars(root, "test/acc")]  # index 0: the initialization; index e: after epoch e
        assert len(acc) == 13
        plateau = next(e for e, a in enumerate(acc) if a >= 0.6)  # epochs 0 .. plateau - 1 at chance
        rise = next(e for e, a in enumerate(acc) if a > 0.8) - (plateau - 1)  # epochs from the last one at chance to > 0.8
        assert plateau - 1 >= 3, (seed, acc)  # a quarter of the run or more at chance
        assert rise <= 3 and rise < plateau - 1, (seed, acc)  # then a sudden drop of the error
        assert summary["metrics"]["test/acc"] > 0.9, (seed, acc)  # learned


def test_gaussian_mixture_learned_with_small_gap(tmp_path):
    summary = run_config("configs/ci/gaussian_mixture.yaml", tmp_path)
    assert summary["metrics"]["test/acc"] > 0.9
    assert abs(summary["metrics"]["gap/acc"]) < 0.08


def test_teacher_neurons_recovered(tmp_path):
    summary = run_config("configs/ci/teacher_student.yaml", tmp_path)
    assert summary["metrics"]["teacher/min_max_cosine"] > 0.95
    assert summary["metrics"]["train/loss"] < 1e-3
    first = scalars(tmp_path, "teacher/min_max_cosine")[0][1]
    assert first < 0.9  # at initialization the student does not contain the teacher


def test_ntk_drift_shrinks_with_width(tmp_path):
    narrow = run_config("configs/ci/ntk_drift.yaml", tmp_path / "64", "--model.net.width", "64")["metrics"]
    wide = run_config("configs/ci/ntk_drift.yaml", tmp_path / "2048", "--model.net.width", "2048")["metrics"]
    # width^(-1/2) at least: 32x the width, at least ~5.7x less drift.
    assert wide["kernel/drift"] < narrow["kernel/drift"] / math.sqrt(32)
    assert wide["weights/rel_change/fc1.weight"] < narrow["weights/rel_change/fc1.weight"] / 3
    assert wide["kernel/lambda_min"] > 0 and narrow["kernel/lambda_min"] > 0


def test_edge_of_stability_sharpness_rises_to_two_over_lr_and_hovers_there(tmp_path):
    """λmax every 50 of 1000 GD steps, as a fraction r of 2/η. Seeds 0-4: after the initial drop λmax
    rises steadily from its low (r = 0.77-0.89), first reaches r ≥ 0.95 at steps 300-650 and from then
    on stays at r = 0.95-1.07 (mean 1.01; 8-15 measurements, 350-700 steps) while the training loss keeps
    falling. Seed 0 reaches the edge latest: the test runs it. A spike to 2/η, or a rise through it, fails."""
    summary = run_config("configs/ci/edge_of_stability.yaml", tmp_path)
    two_over_lr = summary["metrics"]["sharpness/two_over_lr"]
    assert two_over_lr == pytest.approx(16.0)
    ratio = [v / two_over_lr for _, v in scalars(tmp_path, "sharpness/lambda_max")]
    assert len(ratio) == 21
    reach = next(i for i in range(1, len(ratio)) if ratio[i] >= 0.95)  # λmax at the initialization may start there
    low = min(ratio[1:reach])  # after the first drop from the initialization
    assert low < 0.9 and max(ratio[reach:]) > 1.1 * low, ratio  # progressive sharpening from below
    hover = ratio[reach:]
    assert len(hover) >= 5, ratio  # on the edge for 250 steps or more, to the end of training
    assert all(0.9 <= r <= 1.15 for r in hover), ratio  # near 2/η, never far above or back below it
    assert 0.97 <= sum(hover) / len(hover) <= 1.08, ratio
    loss = dict(scalars(tmp_path, "train/loss"))  # every 100 steps
    at_edge = loss[max(s for s in loss if s <= 50 * reach)]
    assert min(v for s, v in loss.items() if s > 50 * reach) < at_edge  # the loss keeps falling on the edge
