"""Three training-dynamics phenomena reproduced end to end through the real command line, at CI
size: feedback alignment (Lillicrap et al. 2016), the SGD temperature η/B setting how far replicas
drift apart (Mignacco et al. 2020; Jastrzębski et al. 2017), and flat minima of SAM (Foret et al.
2021) and Entropy-SGD (Chaudhari et al. 2017). Settings were checked on seeds 0-4; the tests run seed 0 (flat minima: 0 and 1)."""

from __future__ import annotations

import pytest
from experiment_runner import run_config, scalars

pytestmark = pytest.mark.usefixtures("one_thread")


def test_feedback_alignment_update_angle_falls_and_weight_decay_lowers_it(tmp_path):
    config = "configs/ci/feedback_alignment.yaml"
    fa = run_config(config, tmp_path / "fa")["metrics"]
    angles = [a for _, a in scalars(tmp_path / "fa", "alignment/update_vs_bp_deg/fc1")]
    decayed = run_config(config, tmp_path / "wd", "--model.weight_decay", "3e-5")["metrics"]
    control = run_config(config, tmp_path / "bp", "--model.rule", "backprop", "--trainer.max_epochs", "100")["metrics"]
    key = "alignment/update_vs_bp_deg/fc1"
    # FA learns (train loss ~0.2 -> 0.003) while its update of W1 turns towards backprop's: seeds
    # 0-4 start at 82-98° and end at 51-59° after 300 steps.
    assert fa["train/loss"] < 0.02, fa
    assert angles[0] > 75, angles
    assert fa[key] < 70 and fa[key] < angles[0] - 20, angles
    # Weight decay shrinks the random part of W2 and aligns it further (seeds 0-4: 14-28°).
    assert decayed[key] < fa[key] - 10, (decayed[key], fa[key])
    # Backprop has no feedback; W2ᵀ against a fixed random B stays near 90° (seeds 0-4: 84-90°).
    assert abs(control["alignment/weight_vs_feedback_deg"] - 90) < 10, control


def test_replica_distance_grows_with_the_sgd_temperature(tmp_path):
    config = "configs/ci/sgd_temperature.yaml"
    runs = {lr: run_config(config, tmp_path / str(lr), "--model.lr", str(lr))["metrics"] for lr in (0.05, 0.2)}
    cold, hot = runs[0.05], runs[0.2]
    assert cold["sgd/temperature"] == pytest.approx(0.05 / 32) and hot["sgd/temperature"] == pytest.approx(0.2 / 32)
    # η/B 4x higher: the two replicas end ~100x farther apart (seeds 0-4: 0.5-2.8e-6 vs 0.9-1.6e-4).
    assert cold["replica/distance"] > 0, cold
    assert hot["replica/distance"] > 10 * cold["replica/distance"], (cold, hot)


def test_sam_and_entropy_sgd_end_flatter_than_sgd(tmp_path):
    """Paired by seed (same data, init and minibatch order), the ratio of each flat-minima optimizer's final
    λmax and loss increase under 5% weight noise to SGD's. Seeds 0-4 (flatness from 500 noise draws):
    λmax SAM/SGD 0.50-0.51, Entropy-SGD/SGD 0.37-0.39; loss increase SAM/SGD 0.56-0.64, Entropy-SGD/SGD
    0.51-0.58 (SGD itself 5.4-6.1e-3). Two seeds, bounds well above the largest ratio seen."""
    config = "configs/ci/flat_minima.yaml"
    for seed in (0, 1):
        seeds = ["--model.seed", str(seed), "--data.seed", str(seed), "--seed_everything", str(seed)]
        runs = {
            opt: run_config(config, tmp_path / f"{opt}{seed}", "--model.optimizer", opt, *seeds)["metrics"]
            for opt in ("sgd", "sam", "entropy_sgd")
        }
        # All three fit the training set, the 20% flipped labels included.
        assert all(r["train/acc"] > 0.95 for r in runs.values()), (seed, runs)
        for opt in ("sam", "entropy_sgd"):
            sharp = runs[opt]["sharpness/lambda_max"] / runs["sgd"]["sharpness/lambda_max"]
            flat = runs[opt]["flatness/perturbed_loss_increase"] / runs["sgd"]["flatness/perturbed_loss_increase"]
            assert sharp < 0.65, (seed, opt, sharp)
            assert flat < 0.8, (seed, opt, flat)
