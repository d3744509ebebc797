"""Closed-form readouts of random-features models (lightning_modules/nets/random_features.py): against
torch.linalg.lstsq, the normal equations, the stationarity of the ridge objective, and the limit of
gradient descent from a = 0 (with weight decay λ for ridge λ)."""

import math

import pytest
import torch
from experiment_runner import ROOT, run_config

from lightning_modules import losses
from lightning_modules.checks import ConfigError
from lightning_modules.nets.random_features import RandomFeatures, ridge_readout
from overparam.cli import main
from overparam.status import EXIT_BAD_CONFIG

SHAPES = [(40, 12), (12, 40), (20, 20)]  # (n, m): under-, over- and exactly parameterized


def problem(n: int, m: int, k: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, m, generator=g, dtype=torch.float64), torch.randn(n, k, generator=g, dtype=torch.float64)


def objective_gradient(z: torch.Tensor, y: torch.Tensor, a: torch.Tensor, ridge: float) -> torch.Tensor:
    """∇_a of 1/(2n) ‖z aᵀ − y‖² + λ/2 ‖a‖², shape (k, m)."""
    return (z @ a.T - y).T @ z / len(z) + ridge * a


@pytest.mark.parametrize("n, m", SHAPES)
def test_min_norm_readout_is_the_least_squares_solution_of_least_norm(n, m):
    z, y = problem(n, m)
    a = ridge_readout(z, y, 0.0)
    reference = torch.linalg.lstsq(z, y, driver="gelsd").solution.T  # minimum norm for rank-deficient systems too
    torch.testing.assert_close(a, reference, rtol=1e-8, atol=1e-10)
    if m >= n:  # interpolates, and lies in the row space of z (no component a GD from 0 could not reach)
        torch.testing.assert_close(z @ a.T, y, rtol=1e-8, atol=1e-9)
        projector = z.T @ torch.linalg.solve(z @ z.T, z)
        torch.testing.assert_close(a @ projector, a, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n, m", SHAPES)
@pytest.mark.parametrize("ridge", [1e-3, 0.5])
def test_ridge_readout_solves_the_normal_equations(n, m, ridge):
    z, y = problem(n, m)
    a = ridge_readout(z, y, ridge)
    normal = torch.linalg.solve(z.T @ z + n * ridge * torch.eye(m, dtype=z.dtype), z.T @ y).T  # (zᵀz + nλ) aᵀ = zᵀ y
    torch.testing.assert_close(a, normal, rtol=1e-7, atol=1e-10)
    assert objective_gradient(z, y, a, ridge).abs().max() < 1e-10


@pytest.mark.parametrize("n, m", SHAPES)
def test_negative_ridge_is_a_stationary_point_and_refused_past_the_bound(n, m):
    z, y = problem(n, m)
    bound = -(torch.linalg.svdvals(z).min().item() ** 2) / n  # −σ_min(z)²/n
    a = ridge_readout(z, y, 0.5 * bound)
    assert objective_gradient(z, y, a, 0.5 * bound).abs().max() < 1e-9
    if m >= n:  # in the row space of z, as the kernel form puts it
        projector = z.T @ torch.linalg.solve(z @ z.T, z)
        torch.testing.assert_close(a @ projector, a, rtol=1e-7, atol=1e-9)
    with pytest.raises(ConfigError, match=r"`ridge` to be > -"):
        ridge_readout(z, y, 1.5 * bound)


@pytest.mark.parametrize("n, m, weight_decay", [(12, 40, 0.0), (40, 12, 0.0), (12, 40, 0.05)])
def test_gradient_descent_from_zero_converges_to_the_closed_form(n, m, weight_decay):
    """The readout the closed form promises is where GD on the suite's MSE loss (+ weight decay λ) goes from a = 0."""
    z, y = problem(n, m, k=1, seed=1)
    a = torch.zeros(1, m, dtype=z.dtype, requires_grad=True)
    opt = torch.optim.SGD([a], lr=1.0 / torch.linalg.eigvalsh(z.T @ z / n).max().item(), weight_decay=weight_decay)
    for _ in range(20_000):
        opt.zero_grad()
        (0.5 * ((z @ a.T - y) ** 2).sum() / n).backward()
        opt.step()
    torch.testing.assert_close(a.detach(), ridge_readout(z, y, weight_decay), rtol=1e-5, atol=1e-6)


def test_fit_readout_uses_the_nets_own_features_and_scaling():
    net = RandomFeatures(6, width=30, output_dim=1, closed_form=True, ridge=0.0).double()
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    net.fit_readout(x, y)
    torch.testing.assert_close(net(x), y, rtol=1e-8, atol=1e-9)  # m = 30 ≥ n = 10: the net interpolates
    features = net.features(x) / math.sqrt(net.width)
    torch.testing.assert_close(net.readout.weight, (torch.linalg.pinv(features) @ y).T)


def test_mse_targets_are_what_the_mse_loss_fits():
    out = torch.randn(5, 3)
    for y, k in ((torch.tensor([0, 1, 1, 0, 1]), 1), (torch.tensor([2, 0, 1, 1, 2]), 3), (torch.randn(5, 3), 3)):
        o = out[:, :k]
        direct = losses.mean_loss("mse", o, y)
        torch.testing.assert_close(direct, 0.5 * ((o - losses.mse_targets(y, k)) ** 2).sum(1).mean())


def test_closed_form_run_starts_at_the_solution_and_refuses_other_losses(tmp_path, capsys):
    """Through the command line: with lr 0 the whole run evaluates the closed-form readout; at width 4n
    and ridge 0 it interpolates the noisy training set (train loss ~ 0, where the trained readout at step 0
    is a = 0 with loss ½ E y²)."""
    config = "configs/ci/double_descent.yaml"
    args = ("--model.net.width", "256", "--model.net.closed_form", "true", "--model.lr", "0", "--trainer.max_epochs", "1")
    summary = run_config(config, tmp_path / "min_norm", *args)
    assert summary["metrics"]["train/loss"] < 1e-8
    ridge = run_config(config, tmp_path / "ridge", *args, "--model.net.ridge", "0.1")["metrics"]
    assert ridge["train/loss"] > 1e-3  # a ridge does not interpolate
    bad = [*args, "--data", "GaussianMixture", "--model.loss", "hinge", "--trainer.default_root_dir", str(tmp_path / "bad")]
    assert main(["--config", str(ROOT / config), *bad]) == EXIT_BAD_CONFIG
    assert "`net.closed_form` true" in capsys.readouterr().err
