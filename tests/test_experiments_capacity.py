"""Two phenomena of the suite reproduced end to end through the real command line, at CI size:
benign overfitting (Cao et al. 2022; Kou et al. 2023) and double descent of random features
(Belkin et al. 2019; Mei & Montanari 2019). Settings were checked on seeds 0-4; the tests run seed 0."""

from __future__ import annotations

import pytest
import yaml
from experiment_runner import ROOT, run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_benign_overfitting_above_the_snr_threshold_and_harmful_below(tmp_path):
    # n = 50, d = 500, σ_p = 1, 10% flipped train labels; n‖μ‖⁴/(σ_p⁴ d) = 25.6 (high) vs 0.006 (low).
    high = run_config("configs/ci/benign_overfitting_high_snr.yaml", tmp_path / "high")["metrics"]
    low = run_config("configs/ci/benign_overfitting_low_snr.yaml", tmp_path / "low")["metrics"]
    # Both fit the training set, the 5 flipped labels included.
    assert high["train/acc"] >= 0.95 and low["train/acc"] >= 0.95, (high, low)
    # Above the threshold the fit is benign (test labels are clean); below it the test accuracy is
    # near chance (seeds 0-4: high 0.996-1.0, low 0.54-0.56).
    assert high["test/acc"] >= 0.9, high
    assert low["test/acc"] <= 0.7, low
    assert high["test/acc"] - low["test/acc"] >= 0.25


def test_double_descent_min_norm_peaks_at_width_n_and_a_finite_run_stays_below_it(tmp_path):
    """The minimum-norm readout (closed form) over widths n/4 ... 4n: the test loss is largest at m = n
    exactly (seeds 0-4: 1.1-9x the next largest width's), and every m > n interpolates. 500 Adam steps
    from a = 0 show the same peak at three widths, lower than the min-norm one at m = n."""
    config = "configs/ci/double_descent.yaml"
    n = yaml.safe_load((ROOT / config).read_text())["data"]["init_args"]["n_train"]
    widths = [n // 4, n // 2, 3 * n // 4, n, 5 * n // 4, 3 * n // 2, 2 * n, 4 * n]
    min_norm = {m: run_config(config, tmp_path / f"min_norm{m}", "--model.net.width", str(m))["metrics"] for m in widths}
    test = {m: r["test/loss"] for m, r in min_norm.items()}
    assert max(test, key=test.get) == n, test
    assert all(min_norm[m]["train/loss"] < 1e-4 for m in widths if m > n), min_norm
    assert test[4 * n] < test[n] / 2, test  # the second descent

    adam = ("--model.net.closed_form", "false", "--model.optimizer", "adam", "--model.lr", "0.3", "--trainer.max_epochs", "500")
    runs = {m: run_config(config, tmp_path / f"adam{m}", "--model.net.width", str(m), *adam)["metrics"] for m in (n // 4, n, 4 * n)}
    trained = {m: r["test/loss"] for m, r in runs.items()}
    # Past the threshold the readout interpolates; at m = n it nearly does (noise floor σ²/2 = 0.125).
    assert runs[4 * n]["train/loss"] < 1e-3 and runs[n]["train/loss"] < 0.03, runs
    # The peak: seeds 0-4 give test(n) / max(test(n/4), test(4n)) = 1.8-3.2, below the min-norm limit.
    assert trained[n] > 1.3 * max(trained[n // 4], trained[4 * n]), trained
    assert trained[n] < test[n], (trained, test)
