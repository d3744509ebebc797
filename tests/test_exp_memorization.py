"""Memorization experiments (configs/ci/{interpolation_threshold,paired_init,wide_input}.yaml) in the
direction the theory predicts, the RandomLabels data set against its closed-form statistics, and the
measures the claim figures use (``kernel/mean_eigenvalue``, parameter count, needed width)."""

from __future__ import annotations

import math

import pytest
import torch
from experiment_runner import run_config, scalars

from callbacks.kernel import KernelDrift, jacobian_ntk
from datamodules.synthetic import RandomLabels
from lightning_modules.checks import ConfigError
from lightning_modules.nets.mlp import TwoLayerMLP
from overparam.claim_figures.memorization import needed_width, two_layer_parameters


# ---- RandomLabels: closed-form statistics ----------------------------------------------------------
def splits(dm: RandomLabels):
    dm.prepare_splits()
    return dm.train, dm.test


def test_random_labels_gaussian_statistics():
    """x ~ N(0, I_d), y ~ N(0, I_k) independent of x. With n = 20000 every sample moment below is within
    5 standard errors of its closed form: mean 0 (se 1/√n), variance 1 (se √(2/n)), cross-covariance
    E[x_i y_c] = 0 (se 1/√n), input covariance I (off-diagonal se 1/√n)."""
    n, d, k = 20000, 6, 2
    train, test = splits(RandomLabels(dim=d, output_dim=k, n_train=n, n_test=100, seed=3))
    assert train.x.shape == (n, d) and train.y.shape == (n, k) and test.x.shape == (100, d) and test.y.shape == (100, k)
    assert train.y.dtype == torch.float32
    x, y = train.x.double(), train.y.double()
    se = 1 / math.sqrt(n)
    assert y.mean(0).abs().max() < 5 * se
    assert (y.var(0) - 1).abs().max() < 5 * math.sqrt(2 / n)
    assert (x.T @ y / n).abs().max() < 5 * se  # independence: no linear dependence of y on x
    assert ((x**2).T @ y / n).abs().max() < 5 * math.sqrt(3 / n)  # nor on x_i² (E[x⁴] = 3)
    assert (x.T @ x / n - torch.eye(d, dtype=torch.float64)).abs().max() < 5 * math.sqrt(2 / n)
    assert x.mean(0).abs().max() < 5 * se


def test_random_labels_classes_statistics():
    """labels="classes": y ∈ {0, 1} with P(y = 1) = ½ (se ½/√n), independent of x: the class-conditional
    means of x agree (their difference has se 2/√n per coordinate)."""
    n, d = 20000, 5
    dm = RandomLabels(dim=d, labels="classes", n_train=n, n_test=50, seed=1)
    train, _ = splits(dm)
    assert train.y.dtype == torch.long and set(train.y.unique().tolist()) == {0, 1} and train.y.shape == (n,)
    assert abs(train.y.double().mean() - 0.5) < 5 * 0.5 / math.sqrt(n)
    x = train.x.double()
    gap = x[train.y == 1].mean(0) - x[train.y == 0].mean(0)
    assert gap.abs().max() < 5 * 2 / math.sqrt(n)
    assert dm.input_dim == d and dm.output_dim == 1 and dm.num_classes == 2 and dm.classification


def test_random_labels_seeding_and_errors():
    a, b, c = (splits(RandomLabels(dim=4, n_train=16, n_test=8, seed=s)) for s in (0, 0, 1))
    assert torch.equal(a[0].x, b[0].x) and torch.equal(a[0].y, b[0].y)
    assert not torch.equal(a[0].x, c[0].x) and not torch.equal(a[0].y, c[0].y)
    assert not torch.equal(a[0].x[:8], a[1].x)  # train and test are separate draws
    with pytest.raises(ConfigError, match="labels"):
        RandomLabels(labels="binary")
    with pytest.raises(ConfigError, match="output_dim"):
        RandomLabels(labels="classes", output_dim=2)
    with pytest.raises(ConfigError, match="label_noise"):
        RandomLabels(labels="gaussian", label_noise=0.1)  # regression: no classes to flip
    with pytest.raises(ConfigError, match="dim"):
        RandomLabels(dim=0)


# ---- measures of the claim figures -------------------------------------------------------------------
def test_mean_eigenvalue_matches_the_jacobian_kernel():
    """``kernel/mean_eigenvalue`` = tr K / n = the mean of the eigenvalues of the per-sample-Jacobian kernel."""
    torch.manual_seed(0)
    net = TwoLayerMLP(5, 7, 1, "relu", bias=False, parameterization="ntk").double()
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randn(12, 1, dtype=torch.float64)
    values = KernelDrift(probe_size=None).measure(net, x, y)
    eigs = torch.linalg.eigvalsh(jacobian_ntk(net, x))
    assert values["kernel/mean_eigenvalue"] == pytest.approx(float(eigs.mean()), rel=1e-10)
    assert values["kernel/lambda_min"] == pytest.approx(float(eigs[0]), abs=1e-10)


@pytest.mark.parametrize("bias, first, second", [(True, True, True), (False, True, True), (True, True, False), (False, False, True)])
def test_parameter_count_matches_the_net(bias, first, second):
    net = TwoLayerMLP(7, 5, 3, bias=bias, train_first_layer=first, train_second_layer=second)
    config = {
        "data": {"init_args": {"dim": 7}},
        "model": {
            "init_args": {
                "net": {"init_args": {"width": 5, "output_dim": 3, "bias": bias, "train_first_layer": first, "train_second_layer": second}}
            }
        },
    }
    assert two_layer_parameters(config) == sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_needed_width_is_where_every_larger_width_reaches_eps():
    assert needed_width({8: 1.0, 16: 1e-9, 32: 1e-6, 64: 1e-9, 128: 1e-8}, 1e-7) == 64
    assert needed_width({8: 1e-9, 16: 1e-9}, 1e-7) == 8
    assert needed_width({8: 1e-9, 16: math.nan}, 1e-7) is None


# ---- the experiments at CI size -----------------------------------------------------------------------
def test_interpolation_threshold_kernel_and_fit(tmp_path):
    """n = 64 random labels, d = 16. Width 2 (P = 34 ≈ n/2): K_0 = J Jᵀ has rank ≤ P < n, so λ_min(K_0) is 0
    up to float32 round-off (seeds 0-5: |ratio| ≤ 4e-7) and the loss stalls (final/initial 0.28-0.54). Width 30
    (P = 510 ≈ 8n): λ_min(K_0)/mean eigenvalue 0.020-0.045 and final/initial loss ≤ 2e-7 after 1500 steps.
    Two runs, ~3 s each."""
    below, above = tmp_path / "below", tmp_path / "above"
    run_config("configs/ci/interpolation_threshold.yaml", below, "--model.net.width", "2")
    run_config("configs/ci/interpolation_threshold.yaml", above, "--model.net.width", "30")

    def kernel_ratio(root):
        return scalars(root, "kernel/lambda_min")[0][1] / scalars(root, "kernel/mean_eigenvalue")[0][1]

    def fit(root):
        loss = [v for _, v in scalars(root, "train/loss")]
        return loss[-1] / loss[0]

    assert abs(kernel_ratio(below)) < 1e-5  # singular kernel at init
    assert kernel_ratio(above) > 5e-3  # bounded away from zero
    assert fit(below) > 0.1  # random labels not fitted below P = n
    assert fit(above) < 1e-4  # fitted above


def test_paired_init_reaches_a_lower_loss(tmp_path):
    """Width 256, 600 GD steps on the first layer: the paired init (f = 0 at init) ends several times lower
    than the independent one on each seed (seeds 0-3: 7-400x). Four runs, ~3 s each."""
    for seed in ("0", "1"):
        losses = {}
        for paired in ("true", "false"):
            root = tmp_path / f"{seed}_{paired}"
            seeds = ("--seed_everything", seed, "--model.seed", seed, "--data.seed", seed)
            summary = run_config("configs/ci/paired_init.yaml", root, "--model.net.symmetric_init", paired, *seeds)
            losses[paired] = summary["metrics"]["train/loss"]
        assert losses["true"] < losses["false"] / 3, (seed, losses)


def test_wide_input_fits_random_labels_at_width_4(tmp_path):
    """d = 64 ≥ n = 32, tanh, 4 hidden neurons, 1000 GD steps: the loss falls below 1e-6 of its initial
    value (a plain-PyTorch calibration, seeds 0-3: 1e-12 to 1e-15). Two runs, ~2 s each."""
    for seed in ("0", "1"):
        root = tmp_path / seed
        run_config("configs/ci/wide_input.yaml", root, "--seed_everything", seed, "--model.seed", seed, "--data.seed", seed)
        loss = [v for _, v in scalars(root, "train/loss")]
        assert loss[-1] < 1e-6 * loss[0], (seed, loss)
