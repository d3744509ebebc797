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
    summary = run_config("configs/ci/sparse_parity.yaml", tmp_path)
    acc = [v for _, v in scalars(tmp_path, "test/acc")]
    assert acc[0] < 0.6  # chance level after the first epoch
    assert summary["metrics"]["test/acc"] > 0.9  # then learned


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


def test_edge_of_stability_sharpness_rises_to_two_over_lr(tmp_path):
    summary = run_config("configs/ci/edge_of_stability.yaml", tmp_path)
    lam = [v for _, v in scalars(tmp_path, "sharpness/lambda_max")]
    two_over_lr = summary["metrics"]["sharpness/two_over_lr"]
    assert max(lam[len(lam) // 2:]) == pytest.approx(two_over_lr, rel=0.15)  # reaches 2/η, no further
    assert max(lam[len(lam) // 2:]) > 1.2 * min(lam)  # progressive sharpening from below
