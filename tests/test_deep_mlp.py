"""DeepMLP (plain L-hidden-layer MLP) and ResidualMLP's NTK parameterization: forward passes against their
formulas written out with the constants of each parameterization, the initial output scale (closed form,
Monte Carlo over inits), the NTK against per-sample Jacobians, and the suite's machinery (rules, ensemble,
layer_lr, the CLI's --list and short names)."""

import math

import pytest
import torch

from callbacks.kernel import KernelDrift, empirical_ntk
from lightning_modules.checks import ConfigError
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import DeepMLP, TwoLayerMLP
from lightning_modules.nets.resnet import ResidualMLP

TOL = dict(rtol=1e-10, atol=1e-12)
pytestmark = pytest.mark.usefixtures("one_thread")


def randomize_biases(net: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.normal_()


@pytest.mark.parametrize("parameterization", ["standard", "ntk", "mean_field"])
def test_deep_mlp_matches_its_formula(parameterization):
    """h₁ = σ(c₁ W₁ x + b₁), h_l = σ(c_h W_l h_{l−1} + b_l), f = c_out W_out h_L + b_out, with the
    table's constants written out: d = 5, m = 4 (c₁ = 1/√5, c_h = 1/2, c_out = 1/2 or 1/4)."""
    torch.manual_seed(0)
    net = DeepMLP(5, depth=3, width=4, output_dim=2, activation="tanh", bias=True, parameterization=parameterization).double()
    randomize_biases(net)
    c1, ch, cout = {"standard": (1, 1, 1), "ntk": (1 / math.sqrt(5), 0.5, 0.5), "mean_field": (1 / math.sqrt(5), 0.5, 0.25)}[
        parameterization
    ]
    x = torch.randn(7, 5, dtype=torch.float64)
    (w1, b1), (w2, b2), (w3, b3) = [(layer.weight, layer.bias) for layer in net.hidden]
    h = torch.tanh(c1 * x @ w1.T + b1)
    h = torch.tanh(ch * h @ w2.T + b2)
    h = torch.tanh(ch * h @ w3.T + b3)
    torch.testing.assert_close(net(x), cout * h @ net.output_layer.weight.T + net.output_layer.bias, **TOL)
    assert net(x.reshape(7, 5, 1)).shape == (7, 2)  # input is flattened


@pytest.mark.parametrize("parameterization", ["standard", "ntk", "mean_field"])
def test_deep_mlp_of_depth_one_is_the_two_layer_mlp(parameterization):
    torch.manual_seed(0)
    deep = DeepMLP(6, depth=1, width=8, output_dim=3, activation="relu", bias=True, parameterization=parameterization).double()
    randomize_biases(deep)
    two = TwoLayerMLP(6, 8, 3, "relu", bias=True, parameterization=parameterization).double()
    two.load_state_dict(
        {
            "fc1.weight": deep.hidden[0].weight,
            "fc1.bias": deep.hidden[0].bias,
            **{f"fc2.{k}": v for k, v in deep.output_layer.state_dict().items()},
        }
    )
    x = torch.randn(9, 6, dtype=torch.float64)
    torch.testing.assert_close(deep(x), two(x), **TOL)


def test_parameterizations_are_one_function_at_init_scaled_by_their_output_factor():
    """The same N(0, 1) weights: standard with W/√fan_in is the ntk net exactly; mean_field is ntk × 1/√m."""
    torch.manual_seed(0)
    ntk = DeepMLP(5, depth=3, width=16, parameterization="ntk").double()
    standard, mean_field = (
        DeepMLP(5, 3, 16, parameterization="standard").double(),
        DeepMLP(5, 3, 16, parameterization="mean_field").double(),
    )
    mean_field.load_state_dict(ntk.state_dict())
    standard.load_state_dict({k: v / math.sqrt(v.shape[1]) for k, v in ntk.state_dict().items()})
    x = torch.randn(8, 5, dtype=torch.float64)
    torch.testing.assert_close(standard(x), ntk(x), **TOL)
    torch.testing.assert_close(mean_field(x), ntk(x) / 4, **TOL)


@pytest.mark.parametrize(
    "parameterization, width_factor, init_scale",
    [("ntk", 1.0, 1.0), ("ntk", 1.0, math.sqrt(2.0)), ("standard", 1.0, math.sqrt(2.0)), ("mean_field", 1 / 8, math.sqrt(2.0))],
)
def test_initial_output_scale_matches_closed_form(parameterization, width_factor, init_scale):
    """ReLU, no bias, depth L, init_scale s: each layer's pre-activation has variance s²‖h‖²/fan_in given the
    layer below and relu halves the second moment, so E f(x)² = s^(2(L+1)) ‖x‖²/(d 2^L) (× 1/m for mean field),
    exactly at any width: 1/2^L of the input scale for s = 1, ‖x‖²/d · 2 for He's gain s = √2. Monte Carlo over
    4000 inits (width 8, depth 3) at one input with ‖x‖²/d = 1; tolerance 12% (about 4 standard errors)."""
    depth, d = 3, 6
    x = torch.ones(1, d, dtype=torch.float64)
    torch.manual_seed(0)
    net = DeepMLP(d, depth, 8, 1, parameterization=parameterization, init_scale=init_scale).double()
    second_moments = []
    with torch.no_grad():
        for _ in range(4000):
            net.reset_parameters()
            second_moments.append(net(x).item() ** 2)
    expected = init_scale ** (2 * (depth + 1)) / 2**depth * width_factor
    assert sum(second_moments) / len(second_moments) == pytest.approx(expected, rel=0.12)


def test_ntk_equals_per_sample_jacobians_and_kernel_drift_starts_at_zero():
    torch.manual_seed(0)
    net = DeepMLP(4, depth=3, width=6, output_dim=2, bias=True, parameterization="ntk").double()
    randomize_biases(net)
    x = torch.randn(5, 4, dtype=torch.float64)
    params = dict(net.named_parameters())
    jac = torch.autograd.functional.jacobian(
        lambda *ps: torch.func.functional_call(net, dict(zip(params, ps)), (x,)), tuple(params.values())
    )
    j = torch.cat([g.reshape(5, 2, -1) for g in jac], dim=2)  # (n, k, p)
    reference = torch.einsum("akp,bkp->ab", j, j)  # Σ_k ⟨∂f_k(x_a), ∂f_k(x_b)⟩
    torch.testing.assert_close(empirical_ntk(net, x).double(), reference, rtol=1e-8, atol=1e-10)
    values = KernelDrift(probe_size=5).measure(net, x, torch.randn(5, 2, dtype=torch.float64))
    assert values["kernel/drift"] == 0.0 and values["kernel/lambda_min"] > 0


def test_residual_mlp_ntk_parameterization_matches_its_recursion():
    """h₀ = W_in x/√d, h_l = h_{l−1} + σ(W_l h_{l−1}/√m)/L, f = W_out h_L/√m with W ~ N(0, s²); d = 4, m = 9."""
    torch.manual_seed(0)
    net = ResidualMLP(4, depth=3, width=9, output_dim=2, parameterization="ntk", init_scale=2.0).double()
    assert net.blocks[0].weight.std().item() == pytest.approx(2.0, rel=0.3)  # N(0, s²), not N(0, s²/m)
    x = torch.randn(6, 4, dtype=torch.float64)
    h = x @ net.input_layer.weight.T / 2
    for block in net.blocks:
        h = h + torch.relu(h @ block.weight.T / 3) / 3
    torch.testing.assert_close(net(x), h @ net.output_layer.weight.T / 3, **TOL)


@pytest.mark.parametrize("rule", ["fa", "dfa", "sign_symmetry"])
def test_deep_mlp_trains_under_every_layerwise_rule(rule):
    """Every layer is an nn.Linear, so the rules of learning_rules.py convert them; one step lowers the loss."""
    x, y = torch.randn(16, 5), torch.randn(16, 1)
    module = SupervisedModule(DeepMLP(5, 3, 32, parameterization="ntk"), rule=rule, lr=0.05, layer_lr={"output_layer": 2.0}, seed=0)
    optimizer = module.configure_optimizers_now()
    losses = []
    for _ in range(2):
        loss = module.loss_fn(module(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]


def test_deep_mlp_ensemble_and_clear_refusals():
    module = SupervisedModule(DeepMLP(5, 2, 8), ensemble=3, seed=0)
    assert module(torch.randn(4, 5)).shape == (3, 4, 1)
    with pytest.raises(ConfigError, match="two-layer net"):
        SupervisedModule(DeepMLP(5, 2, 8), rule="ist")
    for kwargs, name in [
        ({"depth": 0}, "depth"),
        ({"width": 2.5}, "width"),
        ({"parameterization": "mup"}, "parameterization"),
        ({"activation": "sigmoid"}, "activation"),
        ({"bias": 1}, "bias"),
        ({"init_scale": 0.0}, "init_scale"),
    ]:
        with pytest.raises(ConfigError, match=f"`{name}`"):
            DeepMLP(5, **kwargs)
    with pytest.raises(ConfigError, match="`parameterization`"):
        ResidualMLP(5, parameterization="mean_field")


def test_deep_mlp_is_listed_and_its_short_name_resolves():
    from overparam.cli import catalog, expand_short_names, import_suite

    assert any(line.split()[:2] == ["DeepMLP", "lightning_modules.nets.mlp.DeepMLP"] for line in catalog().splitlines())
    assert expand_short_names(["--model.net", "DeepMLP"], import_suite())[1] == "lightning_modules.nets.mlp.DeepMLP"
