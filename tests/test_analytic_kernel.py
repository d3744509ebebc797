"""The infinite-width kernels of callbacks/infinite_width.py against brute-force references: Monte Carlo over inits
of the empirical NTK and of f(x) f(x'), closed forms against quadrature, kernel ridge against a dense solve,
polynomial ridge against explicit polynomial features. All in float64."""

import math
from types import SimpleNamespace

import pytest
import torch

import callbacks.infinite_width as kernel_module
import callbacks.kernel
from callbacks.infinite_width import (
    CLOSED_FORMS,
    KernelRidgeBaseline,
    analytic_distance,
    analytic_nngp,
    analytic_ntk,
    analytic_ntk_diagonal,
    closed_form_moments,
    gaussian_derivative_moments,
    gaussian_moments,
    kernel_ridge,
    polynomial_ridge,
    quadrature_moments,
    truncated_ntk,
)
from callbacks.kernel import empirical_ntk
from lightning_modules.checks import ConfigError
from lightning_modules.nets.mlp import ACTIVATIONS, TwoLayerMLP


@pytest.fixture
def float64():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def points(n: int = 6, d: int = 5, seed: int = 0) -> torch.Tensor:
    """Gaussian inputs with a near-parallel pair (ρ ≈ 1) and an antiparallel one of another norm (ρ = −1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[1] = 0.5 * x[0] + 0.05 * torch.randn(d, generator=g, dtype=torch.float64)
    x[2] = -1.3 * x[0]
    return x


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("bias", [False, True])
def test_analytic_ntk_is_the_mean_of_the_empirical_ntk_over_inits(float64, activation, bias):
    """E over 200 inits of width 512 (102,400 neurons): each entry within 5 Monte-Carlo standard errors.
    A wrong constant (c1 = 1 instead of 1/√d, a missing bias term, a factor 2) is off by tens of them.
    The 1e-7 is rounding: at ρ = −1 (an antiparallel pair, where the Monte-Carlo error is 0) relu's
    arc-cosine kernel has an infinite slope, so a rounded ρ = −1 + 1e-16 moves it by √(2e-16)."""
    torch.manual_seed(1)
    x, inits = points(), 200
    kernels = torch.stack([empirical_ntk(TwoLayerMLP(5, 512, 1, activation, bias=bias, parameterization="ntk"), x) for _ in range(inits)])
    mean, error = kernels.mean(0), kernels.std(0) / math.sqrt(inits)
    assert ((mean - analytic_ntk(x, activation, bias)).abs() <= 5 * error + 1e-7).all()


def test_analytic_ntk_sums_over_outputs_and_holds_under_paired_init(float64):
    """k outputs give k Θ; symmetric_init (neurons in equal pairs) keeps the mean."""
    torch.manual_seed(2)
    x, inits = points(), 200
    nets = [TwoLayerMLP(5, 512, 2, "tanh", bias=False, parameterization="ntk", symmetric_init=True) for _ in range(inits)]
    kernels = torch.stack([empirical_ntk(net, x) for net in nets])
    mean, error = kernels.mean(0), kernels.std(0) / math.sqrt(inits)
    assert ((mean - 2 * analytic_ntk(x, "tanh")).abs() <= 5 * error).all()


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_analytic_nngp_is_the_output_covariance_at_init(float64, activation):
    """E[f(x) f(x')] over 4,000 one-output nets of width 8 (the NNGP holds at every width), 5 standard errors."""
    torch.manual_seed(3)
    x, inits = points(), 4000
    outputs = torch.stack([TwoLayerMLP(5, 8, 1, activation, bias=False, parameterization="ntk")(x)[:, 0] for _ in range(inits)])
    products = outputs[:, :, None] * outputs[:, None, :]
    mean, error = products.mean(0), products.std(0) / math.sqrt(inits)
    assert ((mean.detach() - analytic_nngp(x, activation)).abs() <= 5 * error.detach()).all()


@pytest.mark.parametrize("activation", ["erf", "quadratic", "linear"])
def test_closed_forms_match_the_quadrature(activation):
    """Where both exist (relu is left out: its σ' jumps, so the rule converges only like the node spacing)."""
    a, b, c = gaussian_moments(points())
    for closed, quadrature in zip(closed_form_moments(activation, a, b, c), quadrature_moments(activation, a, b, c)):
        assert torch.allclose(quadrature, closed, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_quadrature_has_converged(monkeypatch, activation):
    """Activations without a closed form: the 81-node rule against a 161-node one. Measured on these points
    (|x|²/d up to 2.8): gelu 1e-14; tanh 4e-10 for E[σσ] and 2e-8 for E[σ'σ'] (steeper: poles at ±iπ/(2√a))."""
    a, b, c = gaussian_moments(points())
    coarse = quadrature_moments(activation, a, b, c)
    monkeypatch.setattr(kernel_module, "QUADRATURE_NODES", 161)
    for low, high in zip(coarse, quadrature_moments(activation, a, b, c)):
        assert torch.allclose(low, high, rtol=0, atol=1e-7)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_cross_kernel_and_diagonal_are_blocks_of_the_kernel(activation):
    x = points(8)
    full = analytic_ntk(x, activation, bias=True)
    assert torch.allclose(analytic_ntk(x[:5], activation, bias=True, x2=x[5:]), full[:5, 5:], atol=1e-12)
    assert torch.allclose(analytic_ntk_diagonal(x, activation, bias=True), torch.diagonal(full), atol=1e-12)


def test_analytic_ntk_rejects_unknown_activation():
    with pytest.raises(ConfigError, match="`activation`"):
        analytic_ntk(points(), "sigmoid")
    assert set(CLOSED_FORMS) <= set(ACTIVATIONS)


def test_kernel_ridge_matches_a_dense_solve():
    g = torch.Generator().manual_seed(4)
    features = torch.randn(10, 4, generator=g, dtype=torch.float64)
    kernel, cross = features @ features.T, torch.randn(3, 4, generator=g, dtype=torch.float64) @ features.T  # rank 4 < n = 10
    y = torch.randn(10, 2, generator=g, dtype=torch.float64)
    ridge = torch.rand(10, generator=g, dtype=torch.float64) + 0.1
    assert torch.allclose(kernel_ridge(kernel, y, cross, 0.3), cross @ torch.linalg.solve(kernel + 0.3 * torch.eye(10), y), atol=1e-10)
    assert torch.allclose(kernel_ridge(kernel, y, cross, ridge), cross @ torch.linalg.solve(kernel + torch.diag(ridge), y), atol=1e-10)
    # ridgeless on a singular kernel: the minimum-norm least-squares solution
    min_norm = torch.linalg.lstsq(kernel, y, driver="gelsd").solution
    assert torch.allclose(kernel_ridge(kernel, y, cross, 0.0), cross @ min_norm, atol=1e-8)
    assert kernel_ridge(kernel, y[:, 0], cross, 0.3).shape == (3, 1)
    with pytest.raises(ConfigError, match="`ridge`"):
        kernel_ridge(kernel, y, cross, -1.0)


def test_gaussian_derivative_moments_of_relu():
    """μ_k(a) = E[relu^(k)(√a g)]: closed form against a fine trapezoidal rule of a^(−k/2) E[relu(√a g) He_k(g)]."""
    a = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    t = torch.linspace(-14, 14, 200_001, dtype=torch.float64)
    w = (t[1] - t[0]) * torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    hermite = [torch.ones_like(t), t]
    for j in range(1, 7):
        hermite.append(t * hermite[j] - j * hermite[j - 1])
    brute = torch.stack([(torch.relu(a[:, None].sqrt() * t) * w * h).sum(1) * a ** (-k / 2) for k, h in enumerate(hermite)], 1)
    assert torch.allclose(gaussian_derivative_moments("relu", a, 7), brute, atol=1e-8)


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
@pytest.mark.parametrize("bias", [False, True])
def test_truncated_ntk_converges_to_the_kernel(activation, bias):
    """Θ_≤L → Θ as L grows, off the diagonal (the series is in c = ρ √(ab); here |ρ| < 0.5)."""
    x = points(8, d=10)[3:]  # no (anti)parallel pairs
    a, b, c = gaussian_moments(x)
    assert (c / (a * b).sqrt() - torch.eye(len(x))).abs().max() < 0.5
    off = ~torch.eye(len(x), dtype=torch.bool)
    error = (truncated_ntk(x, x, activation, 24, bias) - analytic_ntk(x, activation, bias))[off].abs().max()
    assert error < 1e-3


def test_polynomial_ridge_is_ridge_on_explicit_polynomial_features():
    """Degree 2, relu, no bias: Θ_≤2(x, x') = Σ_{k≤2} (1 + k)/k! μ_k(a) μ_k(b) (x·x'/d)^k with μ_0 = √(a/2π),
    μ_1 = ½, μ_2 = 1/√(2πa); features φ_k(x) = √((1 + k)/k!) μ_k(a) x^⊗k / d^(k/2); self-induced ridge
    γ = Θ(x, x) − Θ_≤2(x, x) = a (½ − 5/(4π)). Primal ridge (ΦᵀΛ⁻¹Φ + I)⁻¹ΦᵀΛ⁻¹y against the dual predictor."""
    g = torch.Generator().manual_seed(5)
    n, d = 40, 3
    x, x_test = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(7, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)

    def features(z):
        a = (z * z).sum(1, keepdim=True) / d
        mu = [(a / (2 * math.pi)).sqrt(), torch.full_like(a, 0.5), 1 / (2 * math.pi * a).sqrt()]
        outer = (z[:, :, None] * z[:, None, :]).reshape(len(z), -1)
        return torch.cat([mu[0], math.sqrt(2) * mu[1] * z / math.sqrt(d), math.sqrt(1.5) * mu[2] * outer / d], 1)

    phi, phi_test = features(x), features(x_test)
    a = (x * x).sum(1) / d
    ridge = 0.05 + a * (0.5 - 5 / (4 * math.pi))
    weights = torch.linalg.solve(phi.T @ (phi / ridge[:, None]) + torch.eye(phi.shape[1]), phi.T @ (y / ridge))
    assert torch.allclose(polynomial_ridge(x, y, x_test, "relu", 2, ridge=0.05)[:, 0], phi_test @ weights, atol=1e-9)


def test_analytic_distance_falls_like_width_to_the_minus_half():
    """At init, ‖K − Θ‖_F/‖Θ‖_F over 16x the width: about 4x smaller (slope −½), mean of 8 inits each."""
    torch.manual_seed(6)
    x = torch.randn(32, 8)
    small = sum(analytic_distance(TwoLayerMLP(8, 64, 1, "relu", bias=False, parameterization="ntk"), x) for _ in range(8))
    large = sum(analytic_distance(TwoLayerMLP(8, 1024, 1, "relu", bias=False, parameterization="ntk"), x) for _ in range(8))
    assert -0.6 < math.log(large / small) / math.log(16) < -0.4


def test_kernel_ridge_baseline_checks_the_net():
    data = None
    standard = SimpleNamespace(net=TwoLayerMLP(4, 8, 1, "relu", parameterization="standard"))
    with pytest.raises(ConfigError, match="parameterization='ntk'"):
        KernelRidgeBaseline().check_fit(standard, data)
    frozen = SimpleNamespace(net=TwoLayerMLP(4, 8, 1, "relu", parameterization="ntk", train_first_layer=False))
    with pytest.raises(ConfigError, match="frozen fc1"):
        KernelRidgeBaseline().check_fit(frozen, data)
    KernelRidgeBaseline().check_fit(SimpleNamespace(net=TwoLayerMLP(4, 8, 1, "tanh", parameterization="ntk")), data)
    with pytest.raises(ConfigError, match="`ridge`"):
        KernelRidgeBaseline(ridge=-0.1)


def test_the_design_names_in_callbacks_kernel_are_the_infinite_width_functions():
    assert callbacks.kernel.analytic_ntk is analytic_ntk and callbacks.kernel.analytic_nngp is analytic_nngp
    assert callbacks.kernel.kernel_ridge is kernel_ridge
    with pytest.raises(AttributeError):
        callbacks.kernel.no_such_kernel  # noqa: B018
