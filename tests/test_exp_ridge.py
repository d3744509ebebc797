"""triple_descent and benign_ridge: MixedRandomFeatures, LinearModel, LinearGaussian and risk/excess against
closed forms and brute force, and the CI twins' predicted directions (not exact numbers)."""

import math

import pytest
import torch
from experiment_runner import ROOT, run_config

from callbacks.risk import excess_risk
from datamodules.synthetic import LinearGaussian
from lightning_modules.checks import ConfigError
from lightning_modules.nets.mlp import ACTIVATIONS
from lightning_modules.nets.random_features import LinearModel, MixedRandomFeatures, kind_widths, ridge_readout
from overparam.cli import main
from overparam.status import EXIT_BAD_CONFIG

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = [("relu", 1.0, 0.25), ("tanh", 0.1, 0.5), ("linear", 2.0, 0.25)]


def test_kind_widths_sum_to_the_width_and_follow_the_fractions():
    for width in (1, 3, 7, 64, 101):
        widths = kind_widths(width, [0.25, 0.5, 0.25])
        assert sum(widths) == width
        assert all(abs(m - width * f) <= 1 for m, f in zip(widths, [0.25, 0.5, 0.25]))


def test_mixed_random_features_are_the_kinds_side_by_side():
    """Brute force: each kind's block s_k σ_k(F_k x / √d) from its own rows of the random layer, then / √m."""
    torch.manual_seed(0)
    net = MixedRandomFeatures(6, width=20, output_dim=2, kinds=KINDS).double()
    assert net.widths == [5, 10, 5]
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["readout.weight"]
    x = torch.randn(9, 6, dtype=torch.float64)
    rows = net.random_layer.weight.split(net.widths)  # F_k: (m_k, d)
    blocks = [s * ACTIVATIONS[act](x @ f.T / math.sqrt(6)) for (act, s, _), f in zip(KINDS, rows)]
    torch.testing.assert_close(net.readout_inputs(x), torch.cat(blocks, dim=1) / math.sqrt(20), rtol=1e-12, atol=1e-12)
    assert torch.equal(net(x), torch.zeros(9, 2, dtype=torch.float64))  # a = 0 at init


def test_closed_form_readouts_of_the_new_nets_are_ridge_readout_on_their_features():
    """Shared machinery: fit_readout is ridge_readout on readout_inputs; the linear model's min-norm θ is lstsq's."""
    torch.manual_seed(1)
    x, y = torch.randn(12, 30, dtype=torch.float64), torch.randn(12, 1, dtype=torch.float64)
    mixed = MixedRandomFeatures(30, width=40, kinds=KINDS, closed_form=True, ridge=1e-3).double()
    mixed.fit_readout(x, y)
    torch.testing.assert_close(mixed.readout.weight, ridge_readout(mixed.readout_inputs(x), y, 1e-3))
    linear = LinearModel(30, closed_form=True).double()
    linear.fit_readout(x, y)
    torch.testing.assert_close(linear(x), y, rtol=1e-8, atol=1e-9)  # d = 30 ≥ n = 12: interpolates
    torch.testing.assert_close(linear.readout.weight, torch.linalg.lstsq(x, y, driver="gelsd").solution.T, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "kinds, match",
    [
        ([], "non-empty"),
        ([("relu", 1.0, 0.5)], "sum to 1"),
        ([("relu", 0.0, 1.0)], "kinds.scale"),
        ([("cube", 1.0, 1.0)], "kinds.activation"),
    ],
)
def test_mixed_random_features_reject_bad_kinds(kinds, match):
    with pytest.raises(ConfigError, match=match):
        MixedRandomFeatures(4, width=8, kinds=kinds)


def test_linear_gaussian_spectra_target_and_effective_ranks_are_the_closed_forms():
    flat = LinearGaussian(dim=100, spectrum="spiked", n_spikes=4, spike=3.0, tail_trace=8.0)
    torch.testing.assert_close(flat.eigenvalues, torch.cat([torch.full((4,), 3.0), torch.full((96,), 8.0 / 96)]).double())
    assert flat.effective_ranks() == pytest.approx((96.0, 96.0))
    power = LinearGaussian(dim=100, spectrum="power_law", n_spikes=4, tail_trace=8.0, tail_decay=2.0)
    j = torch.arange(1, 97, dtype=torch.float64)
    torch.testing.assert_close(power.eigenvalues[4:], 8.0 * j**-2 / (j**-2).sum())
    r, big_r = power.effective_ranks()
    assert r == pytest.approx(float((j**-2).sum())) and big_r == pytest.approx(float((j**-2).sum() ** 2 / (j**-4).sum()))
    assert torch.equal(LinearGaussian(dim=10, spectrum="isotropic").eigenvalues, torch.ones(10, dtype=torch.float64))
    torch.testing.assert_close(flat.beta.squeeze(1), torch.tensor([0.5] * 4 + [0.0] * 96, dtype=torch.float64))  # ‖β‖ = 1 on the spikes
    with pytest.raises(ConfigError, match="n_spikes"):
        LinearGaussian(dim=10, spectrum="spiked", n_spikes=10)


def test_linear_gaussian_samples_have_the_covariance_target_and_noise():
    """20 000 samples: per-coordinate variance within 5% of λ_i (5σ of the sampling error √(2/n) = 1%), the
    off-diagonal covariance within 5σ of 0, and the residual y − β·x of variance σ² (within 5%)."""
    data = LinearGaussian(
        dim=20, spectrum="power_law", n_spikes=2, spike=4.0, tail_trace=3.0, tail_decay=1.0, noise_std=0.3, n_train=20_000, n_test=10
    )
    data.prepare_splits()
    x, y = data.train.x.double(), data.train.y.double()
    lam = data.eigenvalues
    cov = x.T @ x / len(x)
    torch.testing.assert_close(torch.diagonal(cov), lam, rtol=0.05, atol=0.0)
    off = (cov - torch.diag(torch.diagonal(cov))) / torch.sqrt(lam[:, None] * lam[None, :])  # correlations, sd 1/√n
    assert off.abs().max() < 5 / math.sqrt(len(x))
    residual = y - x @ data.beta
    assert residual.var().item() == pytest.approx(0.09, rel=0.05)


def test_excess_risk_is_the_expected_squared_error_on_fresh_samples():
    """Monte Carlo: the mean of (x·(θ − β))² over 200 000 samples of x ~ N(0, Σ), within 2%."""
    data = LinearGaussian(dim=30, spectrum="power_law", n_spikes=3, tail_trace=5.0, tail_decay=1.5)
    theta = torch.randn(1, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(200_000, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * data.eigenvalues.sqrt()
    monte_carlo = ((x @ (theta.T - data.beta)) ** 2).mean().item()
    assert excess_risk(theta, data.beta, data.eigenvalues) == pytest.approx(monte_carlo, rel=0.02)


def test_triple_descent_ci_twin_has_two_peaks_that_a_larger_ridge_flattens(tmp_path):
    """n = 64, a quarter of the features at scale 1, the rest at 0.01. Seeds 0-4 through the CLI, min-norm
    test loss at widths 32/64/128/256/512: peaks at 64 (2.5-1000) and 256 (2.3-5.3) over a valley at 128
    (0.39-0.76) and ends 0.26-0.54; ridge 1e-4 brings both peaks to 0.23-0.33. The test runs seed 0 (~7 s)."""

    def test_loss(width: int, ridge: float = 0.0) -> float:
        root = tmp_path / f"{width}_{ridge}"
        args = ("--model.net.width", str(width), "--model.net.ridge", str(ridge))
        return run_config("configs/ci/triple_descent.yaml", root, *args)["metrics"]["test/loss"]

    loss = {width: test_loss(width) for width in (32, 64, 128, 256, 512)}
    assert loss[64] > 2 * max(loss[32], loss[128])  # the peak where all m features number n
    assert loss[256] > 2 * max(loss[128], loss[512])  # the peak where the scale-1 kind alone numbers n
    assert test_loss(64, 1e-4) < 0.5 * loss[64]
    assert test_loss(256, 1e-4) < 0.5 * loss[256]


def test_benign_ridge_ci_twin_min_norm_is_benign_only_for_the_high_rank_tail_and_negative_ridge_helps_there(tmp_path):
    """n = 50, d = 1000, 3 spikes carrying β, tail trace 12. Seeds 0-4 (closed form, plain PyTorch): min-norm
    risk/excess 0.029-0.058 for the flat tail (r = 997) against 0.26-0.47 for the j^(−2) tail (r ≈ 1.6). At noise
    0.25, ridge −0.05 beats the interpolator for the flat tail (0.019-0.030 vs 0.022-0.040) and +0.05 beats it
    for the j^(−2) tail (0.013-0.026 vs 0.066-0.118). The test runs seed 0 (6 runs, ~6 s)."""

    def risk(decay: float, ridge: float = 0.0, noise: float = 0.5) -> float:
        root = tmp_path / f"{decay}_{ridge}_{noise}"
        args = ("--data.tail_decay", str(decay), "--model.net.ridge", str(ridge), "--data.noise_std", str(noise))
        return run_config("configs/ci/benign_ridge.yaml", root, *args)["metrics"]["risk/excess"]

    assert risk(0.0) < 0.5 * risk(2.0)  # benign: the high-effective-rank tail
    assert risk(0.0, -0.05, 0.25) < risk(0.0, 0.0, 0.25)  # the flat tail over-regularizes: a negative ridge is better
    assert risk(2.0, 0.05, 0.25) < risk(2.0, 0.0, 0.25)  # the low-rank tail does not: a positive ridge is better


def test_excess_risk_callback_refuses_other_nets(tmp_path, capsys):
    args = ["--config", str(ROOT / "configs/ci/benign_ridge.yaml"), "--trainer.default_root_dir", str(tmp_path)]
    args += ["--model.net", "lightning_modules.nets.random_features.RandomFeatures", "--model.net.width", "8"]
    assert main(args) == EXIT_BAD_CONFIG
    assert "LinearModel net for ExcessRisk" in capsys.readouterr().err


def test_claim_figures_draw_from_sweep_rows(tmp_path):
    """Both figures from CSV-like rows (strings; no run folders, so the configs' defaults fill in)."""
    from overparam.claim_figures import figures_for

    triple = [
        {"model.net.width": str(w), "model.net.ridge": str(r), "seed": str(s), "test/loss": str(1 + 1 / abs(w - 64.5) / (1 + 1e4 * r))}
        for w in (32, 64, 128, 256)
        for r in (0.0, 1e-4)
        for s in (0, 1)
    ]
    benign = [
        {"data.tail_decay": str(a), "data.noise_std": "0.5", "model.net.ridge": str(r), "seed": "0", "risk/excess": str(0.1 + a + r**2)}
        for a in (0.0, 2.0)
        for r in (-0.05, 0.0, 0.05)
    ]
    (draw_triple,), (draw_benign,) = figures_for(["triple_descent"]), figures_for(["benign_ridge"])
    assert [p.name for p in draw_triple(triple, tmp_path / "t.csv", tmp_path)] == ["triple_descent.png"]
    assert [p.name for p in draw_benign(benign, tmp_path / "b.csv", tmp_path)] == ["benign_ridge.png"]
    assert draw_triple([], tmp_path / "t.csv", tmp_path) == [] and draw_benign([], tmp_path / "b.csv", tmp_path) == []
