"""Perturbed-loss flatness: exactly 0 at σ = 0, the closed form of a linear model, state restored bit for bit."""

import pytest
import torch
from torch import nn

from callbacks.flatness import Flatness, perturbed_loss_increase
from tests.diag_cases import CASES, mse

pytestmark = pytest.mark.usefixtures("one_thread")


def test_zero_at_sigma_zero_and_state_restored_bit_for_bit():
    net, loss_fn, x, y = CASES["resnet"]()  # BatchNorm: running statistics must come back too
    net.eval()
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    assert perturbed_loss_increase(net, loss_fn, x, y, sigma=0.0, n_samples=3) == 0.0
    values = Flatness(sigma=0.05, n_samples=3).measure(net, loss_fn, x, y)
    assert values["flatness/perturbed_loss_increase"] != 0.0 and values["diag/flatness_seconds"] >= 0
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in net.parameters())
    assert not any(m.training for m in net.modules())
    assert torch.equal(torch.get_rng_state(), rng)


def test_grows_with_sigma_at_a_minimum():
    net, loss_fn, x, _ = CASES["mlp"]()
    y = net(x).detach()  # the current weights are a global minimum (loss 0)
    increases = [perturbed_loss_increase(net, loss_fn, x, y, s, 5) for s in (1e-3, 1e-2, 1e-1)]
    assert 0 < increases[0] < increases[1] < increases[2]
    assert increases[1] / increases[0] == pytest.approx(100, rel=0.05)  # quadratic in σ near a minimum


def test_matches_the_closed_form_of_a_linear_model():
    # f = Wx + b at a minimum y = f(x): ΔL = 1/(2n) Σᵢ ‖ΔW xᵢ + Δb‖², so E ΔL = k/2 (s_W² mean‖xᵢ‖² + s_b²),
    # s = σ‖·‖_F/√numel per tensor.
    torch.manual_seed(0)
    net = nn.Linear(6, 3).double()
    nn.init.normal_(net.bias)
    x = torch.randn(20, 6, dtype=torch.float64) * torch.tensor([0.2, 0.5, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)  # anisotropic
    y = net(x).detach()
    sigma, k = 0.1, 3
    s_w = sigma * float(net.weight.detach().norm()) / 18**0.5
    s_b = sigma * float(net.bias.detach().norm()) / 3**0.5
    expected = k / 2 * (s_w**2 * float((x**2).sum(1).mean()) + s_b**2)
    value = perturbed_loss_increase(net, mse, x, y, sigma, n_samples=3000, generator=torch.Generator().manual_seed(1))
    assert value == pytest.approx(expected, rel=0.05)  # relative standard error about 1 %


def test_bad_arguments_name_the_argument():
    net, loss_fn, x, y = CASES["mlp"]()
    with pytest.raises(ValueError, match="`sigma` to be a finite number >= 0 but got -0.1"):
        perturbed_loss_increase(net, loss_fn, x, y, sigma=-0.1)
    with pytest.raises(ValueError, match="`n_samples`"):
        Flatness(n_samples=0)


@pytest.mark.parametrize("case", ["mlp", "cnn"])
def test_loss_profile_is_half_lambda_max_t_squared_near_zero_along_the_dense_top_eigenvector(case):
    """Against the dense float64 Hessian: the eigenpair matches eigh's (up to sign), and P(t)/(½λt²) → 1 as
    t → 0 with an O(t²) error; the state comes back bit for bit."""
    from callbacks.flatness import LossProfile, loss_profile
    from callbacks.sharpness import hessian_top_eigenpairs
    from tests.diag_cases import dense_hessian

    net, loss_fn, x, y = CASES[case]()
    hessian = dense_hessian(net, loss_fn, x, y)
    eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
    pair = hessian_top_eigenpairs(net, loss_fn, x, y, 1, tol=1e-10)
    assert float(pair.values[0]) == pytest.approx(eigenvalues[-1].item(), rel=1e-8)
    assert abs(float(pair.vectors[:, 0] @ eigenvectors[:, -1])) == pytest.approx(1.0, abs=1e-6)
    state, rng = {k: v.clone() for k, v in net.state_dict().items()}, torch.get_rng_state()
    lam, v = eigenvalues[-1].item(), eigenvectors[:, -1]
    steps = [1e-3, 1e-2]
    ratios = [p / (0.5 * lam * t * t) for p, t in zip(loss_profile(net, loss_fn, x, y, v, steps), steps)]
    assert abs(ratios[0] - 1) < 1e-4 and abs(ratios[1] - 1) < 1e-2
    assert abs(ratios[1] - 1) > 10 * abs(ratios[0] - 1) or abs(ratios[0] - 1) < 1e-8  # the error is higher order in t
    values = LossProfile(steps=[1e-3], tol=1e-10).measure(net, loss_fn, x, y)
    assert values["flatness/profile_over_quadratic/0.001"] == pytest.approx(1.0, abs=1e-4)
    assert values["flatness/profile_lambda_max"] == pytest.approx(lam, rel=1e-8)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items()) and torch.equal(torch.get_rng_state(), rng)


def test_loss_profile_of_a_quadratic_loss_is_exactly_quadratic_at_every_distance():
    """A linear model with MSE: L is quadratic in θ, so P(t) = ½ λ_max t² at t = 0.1 and at t = 10 alike."""
    from callbacks.flatness import LossProfile

    torch.manual_seed(0)
    net = nn.Linear(4, 2).double()
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    values = LossProfile(steps=[0.1, 10.0], tol=1e-10).measure(net, mse, x, y)
    assert values["flatness/profile_over_quadratic/0.1"] == pytest.approx(1.0, rel=1e-9)
    assert values["flatness/profile_over_quadratic/10"] == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(Exception, match="steps"):
        LossProfile(steps=[0.1, -1.0])
