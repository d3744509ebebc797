"""The measures and options of the inductive-bias experiments against brute-force references (float64):
transversal sensitivity (callbacks/sensitivity.py) against finite differences and a linear net's closed
form; the least-squares-line comparison and kink count (callbacks/linear_fit.py) against numpy.polyfit
and a dense grid; TwoLayerMLP's ``bias_init``; LowDimManifold's ``normal_noise_std``."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from callbacks.linear_fit import affine_least_squares, affine_predict, kinks_inside, linear_fit_ratios
from callbacks.sensitivity import data_basis, gradient_split, input_jacobian, transversal_ratio
from datamodules.synthetic import LowDimManifold
from lightning_modules.checks import ConfigError
from lightning_modules.nets.mlp import DeepMLP, TwoLayerMLP


def basis(d: int, d0: int, seed: int = 0) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, d0, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)).Q


# ---- transversal sensitivity -------------------------------------------------------------------------


@pytest.mark.parametrize("net_fn", [lambda: TwoLayerMLP(5, 7, 2, "tanh"), lambda: DeepMLP(5, 2, 6, 1, "gelu", bias=True)])
def test_input_jacobian_matches_central_differences(net_fn):
    torch.manual_seed(0)
    net = net_fn().double()
    x = torch.randn(4, 5, dtype=torch.float64)
    jac = input_jacobian(net, x)  # (n, k, d)
    h = 1e-6
    with torch.no_grad():
        fd = torch.stack([(net(x + h * e) - net(x - h * e)) / (2 * h) for e in torch.eye(5, dtype=torch.float64)], dim=-1)
    assert jac.shape == fd.shape
    torch.testing.assert_close(jac, fd, rtol=1e-6, atol=1e-8)


def test_gradient_split_of_a_linear_net_is_the_norms_of_the_projected_weight():
    """f(x) = a·x: ∇ₓf = a at every x, so E‖P∇f‖ = ‖UᵀA‖ and E‖P⊥∇f‖ = ‖a − UUᵀa‖ exactly."""
    torch.manual_seed(1)
    net = TwoLayerMLP(6, 3, 1, "linear").double()
    a = ((net.fc2.weight * net.c2) @ (net.fc1.weight * net.c1)).detach()  # (1, 6)
    u = basis(6, 2)
    along, across = gradient_split(net, torch.randn(9, 6, dtype=torch.float64), u)
    assert along == pytest.approx(float((a @ u).norm()), rel=1e-12)
    assert across == pytest.approx(float((a - a @ u @ u.T).norm()), rel=1e-12)
    assert transversal_ratio(net, torch.randn(3, 6, dtype=torch.float64), u) == pytest.approx(across / along, rel=1e-12)


def test_gradient_split_averages_per_sample_norms_over_the_probe_points():
    torch.manual_seed(2)
    net = TwoLayerMLP(4, 8, 1, "tanh").double()
    x, u = torch.randn(5, 4, dtype=torch.float64), basis(4, 1)
    rows = [torch.func.jacrev(lambda v: net(v[None])[0])(xi)[0].detach() for xi in x]  # (d,) each, brute force
    along = np.mean([float((g @ u).norm()) for g in rows])
    across = np.mean([float((g - u @ (u.T @ g)).norm()) for g in rows])
    assert gradient_split(net, x, u) == pytest.approx((along, across), rel=1e-10)
    with pytest.raises(ValueError, match="basis"):
        gradient_split(net, x, basis(3, 1))


def test_gradient_descent_never_moves_the_first_layer_across_the_data_subspace():
    """∂L/∂W1 = Σ δ xᵀ: with every x in span(U), W1 P⊥ stays at its init (why a two-layer net's transversal
    sensitivity is set by the initialization); noise across the subspace moves it."""
    data = LowDimManifold(d0=2, d=8, manifold="subspace", n_train=64, n_test=8)
    noisy = LowDimManifold(d0=2, d=8, manifold="subspace", n_train=64, n_test=8, normal_noise_std=0.5)
    u = data.embedding.double()
    perp = torch.eye(8, dtype=torch.float64) - u @ u.T
    moved = []
    for source in (data, noisy):
        source.prepare_splits()
        torch.manual_seed(0)
        net = TwoLayerMLP(8, 16, parameterization="ntk").double()
        start = net.fc1.weight.detach() @ perp
        opt = torch.optim.SGD(net.parameters(), lr=0.2)
        for _ in range(50):
            opt.zero_grad()
            ((net(source.train.x.double()) - source.train.y.double()) ** 2).mean().backward()
            opt.step()
        moved.append(float((net.fc1.weight.detach() @ perp - start).norm() / start.norm()))
    assert moved[0] < 1e-6 and moved[1] > 1e-3, moved  # float32 data: P⊥x is rounding, ~1e-7


# ---- least-squares line and kinks --------------------------------------------------------------------


def test_affine_least_squares_matches_polyfit_and_the_ratios_their_definition():
    gen = torch.Generator().manual_seed(0)
    x = 1 + 2 * torch.rand(20, 1, generator=gen, dtype=torch.float64)
    y = torch.sin(math.pi * x)
    beta = affine_least_squares(x, y)
    slope, intercept = np.polyfit(x[:, 0].numpy(), y[:, 0].numpy(), 1)
    assert beta[:, 0].tolist() == pytest.approx([intercept, slope], rel=1e-10)
    # A net equal to the line: distance 0, mse_ratio 1; the zero net: mse_ratio = mean y²/mean (ℓ − y)².
    line_net = nn.Linear(1, 1).double()
    with torch.no_grad():
        line_net.weight.fill_(float(slope))
        line_net.bias.fill_(float(intercept))
    xt = torch.linspace(1, 3, 50, dtype=torch.float64)[:, None]
    yt = torch.sin(math.pi * xt)
    ratios = linear_fit_ratios(line_net, (x, y), (xt, yt))
    assert ratios["distance"] == pytest.approx(0, abs=1e-20) and ratios["mse_ratio"] == pytest.approx(1, rel=1e-12)
    zero = nn.Linear(1, 1).double()
    nn.init.zeros_(zero.weight), nn.init.zeros_(zero.bias)
    line_mse = float(((affine_predict(beta, xt) - yt) ** 2).mean())
    assert linear_fit_ratios(zero, (x, y), (xt, yt))["mse_ratio"] == pytest.approx(float((yt**2).mean()) / line_mse, rel=1e-12)


def test_kinks_inside_counts_units_whose_preactivation_changes_sign_on_a_dense_grid():
    torch.manual_seed(3)
    net = TwoLayerMLP(1, 40, bias_init="uniform", bias_scale=3.0, parameterization="ntk", init_scale=1.4).double()
    grid = torch.linspace(0.5, 2.5, 20_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        pre = net.fc1(grid * net.c1)  # (G, m)
    changes = ((pre[:-1] > 0) != (pre[1:] > 0)).any(dim=0).double().mean()
    assert 0 < kinks_inside(net, 0.5, 2.5) == pytest.approx(float(changes), abs=1e-12)
    assert kinks_inside(TwoLayerMLP(1, 40), 0.5, 2.5) == 0.0  # zero biases: every kink at the origin
    with pytest.raises(ValueError, match="input_dim 1"):
        kinks_inside(TwoLayerMLP(2, 4), 0.0, 1.0)


# ---- TwoLayerMLP(bias_init=...) ----------------------------------------------------------------------


@pytest.mark.parametrize("parameterization", ["standard", "ntk", "mean_field"])
def test_bias_init_draws_biases_after_the_weights_and_zero_keeps_the_default(parameterization):
    nets = {}
    for kind in ("default", "zero", "constant", "uniform"):
        torch.manual_seed(0)
        kwargs = {} if kind == "default" else {"bias_init": kind, "bias_scale": 2.0}
        nets[kind] = TwoLayerMLP(3, 500, parameterization=parameterization, **kwargs)
    state = nets["default"].state_dict()
    assert not state["fc1.bias"].any() and not state["fc2.bias"].any()
    for kind, net in nets.items():
        for name, value in net.state_dict().items():
            if kind in ("default", "zero") or name != "fc1.bias":
                assert torch.equal(value, state[name]), (kind, name)
    assert torch.equal(nets["constant"].fc1.bias, torch.full((500,), 2.0))
    b = nets["uniform"].fc1.bias.detach()
    assert b.abs().max() <= 2.0 and float(b.mean()) == pytest.approx(0, abs=0.2) and float(b.var()) == pytest.approx(4 / 3, rel=0.2)


def test_uniform_bias_init_keeps_paired_neurons_paired_and_needs_a_bias():
    torch.manual_seed(0)
    net = TwoLayerMLP(3, 10, symmetric_init=True, bias_init="uniform")
    assert torch.equal(net.fc1.bias[:5], net.fc1.bias[5:]) and net.fc1.bias.any()
    assert float(net(torch.randn(4, 3)).detach().abs().max()) < 1e-6
    with pytest.raises(ConfigError, match="bias"):
        TwoLayerMLP(3, 10, bias=False, bias_init="constant")
    with pytest.raises(ConfigError, match="bias_init"):
        TwoLayerMLP(3, 10, bias_init="normal")


# ---- LowDimManifold(normal_noise_std=...) ------------------------------------------------------------


def test_normal_noise_lies_across_the_subspace_on_the_training_inputs_only():
    kwargs = dict(d0=3, d=12, manifold="subspace", n_train=4000, n_test=50, seed=5)
    plain, zero, noisy = (
        LowDimManifold(**kwargs),
        LowDimManifold(**kwargs, normal_noise_std=0.0),
        LowDimManifold(**kwargs, normal_noise_std=0.3),
    )
    for data in (plain, zero, noisy):
        data.prepare_splits()
    for split in ("train", "test"):  # s = 0 is today's data, bit for bit
        assert torch.equal(getattr(plain, split).x, getattr(zero, split).x) and torch.equal(getattr(plain, split).y, getattr(zero, split).y)
    assert torch.equal(noisy.test.x, plain.test.x) and torch.equal(noisy.train.y, plain.train.y)
    u = noisy.embedding
    noise = noisy.train.x - plain.train.x  # (n, d)
    torch.testing.assert_close(noise @ u, torch.zeros(4000, 3), atol=1e-5, rtol=0)  # P(noise) = 0
    # E‖(I − UUᵀ)ξ‖² s² = (d − d0) s²  (4000 draws: a few-percent tolerance)
    assert float((noise**2).sum(1).mean()) == pytest.approx(9 * 0.09, rel=0.03)
    with pytest.raises(ConfigError, match="normal_noise_std"):
        LowDimManifold(normal_noise_std=-0.1)


def test_data_basis_spans_the_subspace_that_holds_the_inputs():
    """Inputs on a 3-dim subspace of R^10 (float32, as the DataModules hold them): the same projector as U's."""
    u = basis(10, 3, seed=4)
    x = (torch.randn(50, 3, dtype=torch.float64) @ u.T).float()
    found = data_basis(x)
    assert found.shape == (10, 3)
    torch.testing.assert_close(found @ found.T, u @ u.T, atol=1e-6, rtol=0)
    assert data_basis(torch.randn(50, 10)).shape == (10, 10)  # general position, n ≥ d: all of R^d
