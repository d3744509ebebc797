"""student_recovery (Zhou, Ge & Jin, 2021) at CI size, through the real command line, and the rate measure of its
claim figure (overparam/claim_figures/student_recovery.py) on closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from experiment_runner import run_config, scalars

from overparam.claim_figures import figures_for
from overparam.claim_figures.student_recovery import loss_rate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_non_negligible_student_neuron_converges_to_a_teacher_neuron(tmp_path):
    """Width 16 against a 4-neuron ReLU teacher, 2500 full-batch steps. Seeds 0-9: at the start no student neuron is
    within cosine 0.95 of a teacher neuron (stray mass 1, worst cosine -0.27..0.15); at the end the worst non-negligible
    student neuron is at cosine 0.977-1.0, the stray mass 0.00001-0.024, train loss ≤ 2e-5. Two seeds, ~8 s each."""
    for seed in ("0", "1"):
        root = tmp_path / seed
        summary = run_config("configs/ci/student_recovery.yaml", root, "--model.seed", seed, "--data.seed", seed, "--seed_everything", seed)
        final = summary["metrics"]
        (_, first_cosine), *_ = scalars(root, "teacher/student_min_max_cosine")
        (_, first_stray), *_ = scalars(root, "teacher/stray_mass")
        assert first_cosine < 0.5 and first_stray > 0.9, (seed, first_cosine, first_stray)  # a random student matches nothing
        assert final["teacher/student_min_max_cosine"] > 0.95, (seed, final)
        assert final["teacher/stray_mass"] < 0.05, (seed, final)
        assert final["teacher/min_max_cosine"] > 0.95, (seed, final)
        assert final["train/loss"] < 1e-4, (seed, final)
        steps, losses = (np.array(v) for v in zip(*scalars(root, "train/loss")))
        rate, reached = loss_rate(steps, losses)
        assert reached is not None and rate < 0, (seed, rate)  # below the threshold the loss keeps falling


def test_loss_rate_is_the_log_slope_between_threshold_and_floor():
    steps = np.arange(500.0)
    slope, first = loss_rate(steps, 2.0 * np.exp(-0.05 * steps), threshold=1e-3, floor=1e-9)
    assert slope == pytest.approx(-0.05, rel=1e-9) and first == math.ceil(math.log(2e3) / 0.05)
    floored = np.maximum(np.exp(-0.05 * steps), 1e-12)  # a float floor after step 553 is left out of the fit
    assert loss_rate(steps, floored)[0] == pytest.approx(-0.05, rel=1e-9)
    assert loss_rate(steps, np.full(500, 1e-2)) == (pytest.approx(math.nan, nan_ok=True), None)  # never below: no rate
    assert math.isnan(loss_rate(steps, np.full(500, 1e-12))[0])  # below the floor from the start: nothing to fit


def test_claim_figure_draws_the_rates_of_a_sweep(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    rows = []
    for width, rate in ((4, 0.02), (8, 0.01)):
        run = tmp_path / f"w{width}" / "lightning_logs" / "version_0"
        writer = SummaryWriter(str(run))
        for step in range(0, 1500, 5):
            writer.add_scalar("train/loss", math.exp(-rate * step), step)
        writer.close()
        rows.append(
            {"model.net.width": str(width), "log_dir": str(run), "teacher/student_min_max_cosine": "0.99", "teacher/stray_mass": "0.01"}
        )
    (draw,) = figures_for(["student_recovery"])
    (png,) = draw(rows, tmp_path / "results.csv", tmp_path)
    assert png.name == "student_recovery.png" and png.stat().st_size > 10_000
