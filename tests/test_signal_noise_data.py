"""SignalNoisePatches (benign overfitting data): x = [ỹ·μ, ξ] against its definition — the noise
patch is orthogonal to μ with covariance σ_p²(I − μμᵀ/‖μ‖²), the signal patch is the clean label
times μ, label noise flips an exact fraction of train labels, and SNR = ‖μ‖/(σ_p √d)."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.synthetic import SignalNoisePatches


def make(**kwargs) -> SignalNoisePatches:
    args = dict(dim=50, signal_norm=3.0, noise_std=0.7, n_train=200, n_test=100, seed=5, label_noise=0.1) | kwargs
    dm = SignalNoisePatches(**args)
    dm.prepare_splits()
    return dm


def test_shapes_and_sizes():
    dm = make()
    assert dm.train.x.shape == (200, 100) and dm.test.x.shape == (100, 100) and dm.train.y.dtype == torch.long
    assert (dm.input_dim, dm.output_dim, dm.num_classes) == (100, 1, 2)
    assert dm.mu.shape == (50,) and math.isclose(dm.mu.norm().item(), 3.0, rel_tol=1e-6)


def test_noise_patch_is_orthogonal_to_the_signal():
    dm = make()
    for split in (dm.train, dm.test):
        xi = split.x[:, 50:]  # (n, d)
        cosine = (xi @ dm.mu) / (xi.norm(dim=1) * dm.mu.norm())
        assert cosine.abs().max() < 1e-6  # float32 rounding of an exact projection


def test_noise_covariance_is_the_projected_isotropic_one():
    dm = make(dim=6, noise_std=2.0, n_train=40_000, n_test=1, label_noise=0.0)
    xi = dm.train.x[:, 6:].double()
    u = (dm.mu / dm.mu.norm()).double()
    expected = 4.0 * (torch.eye(6, dtype=torch.float64) - torch.outer(u, u))
    assert torch.allclose(xi.mean(0), torch.zeros(6, dtype=torch.float64), atol=0.05)
    assert torch.allclose(xi.T @ xi / len(xi), expected, atol=0.1)  # entries of 4·(I − uuᵀ); std of the estimate ≈ 0.03


def test_signal_patch_is_the_clean_label_times_mu_and_label_noise_is_exact():
    dm = make(n_train=301, label_noise=0.2)
    signal, y = dm.train.x[:, :50], dm.train.y
    flipped = torch.zeros(301, dtype=torch.bool)
    flipped[dm.corrupted_indices] = True
    assert flipped.sum() == round(0.2 * 301)
    clean = torch.where(flipped, 1 - y, y)  # binary: a corrupted label is the other class
    assert torch.equal(signal, (2 * clean - 1).float()[:, None] * dm.mu)  # exact: a sign times μ
    # The test set is clean: its signal patch carries its own label.
    assert torch.equal(dm.test.x[:, :50], (2 * dm.test.y - 1).float()[:, None] * dm.mu)
    # Noise-free labels are balanced Rademacher draws.
    assert abs(clean.float().mean().item() - 0.5) < 0.1


def test_snr_property_matches_its_formula():
    dm = make(dim=400, signal_norm=2.0, noise_std=0.5)
    assert dm.snr == pytest.approx(2.0 / (0.5 * math.sqrt(400)))  # = 0.2
    assert dm.snr == pytest.approx(dm.mu.norm().item() / (dm.noise_std * math.sqrt(dm.dim)), rel=1e-6)
    # σ_p √d is the typical noise-patch norm: E‖ξ‖² = σ_p² (d − 1).
    mean_sq = dm.train.x[:, 400:].pow(2).sum(1).mean().item()
    assert mean_sq == pytest.approx(0.25 * 399, rel=0.02)


def test_seed_fixes_data_and_direction():
    a, b, c = make(), make(), make(seed=6)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.mu, b.mu)
    assert not torch.equal(a.mu, c.mu)
    assert torch.allclose(3.0 * make(signal_norm=1.0).mu, a.mu)  # the direction depends on the seed only


def test_zero_signal_gives_pure_noise():
    dm = make(signal_norm=0.0)
    assert dm.snr == 0.0 and torch.equal(dm.train.x[:, :50], torch.zeros(200, 50))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=1), r"`dim` to be an integer >= 2"),
        (dict(signal_norm=-1.0), r"`signal_norm` to be a finite number >= 0"),
        (dict(noise_std=0.0), r"`noise_std` to be a finite number > 0"),
        (dict(label_noise=1.5), r"`label_noise` to be a probability in \[0, 1\]"),
        (dict(n_train=0), r"`n_train` to be a positive integer"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SignalNoisePatches(**kwargs)
