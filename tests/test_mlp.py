"""TwoLayerMLP: shapes, the output scale of each parameterization (closed form), symmetric init."""

import math

import pytest
import torch

from lightning_modules.nets.mlp import TwoLayerMLP


def sphere(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """n points on the sphere of radius √d, so that |x|²/d = 1."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True) * math.sqrt(d)


def test_forward_shapes_and_flatten():
    net = TwoLayerMLP(input_dim=12, width=7, output_dim=3)
    assert net(torch.randn(5, 12)).shape == (5, 3)
    assert net(torch.randn(5, 3, 2, 2)).shape == (5, 3)  # image-shaped input is flattened
    assert net.features(torch.randn(5, 12)).shape == (5, 7)


@pytest.mark.parametrize("parameterization, width_power", [("standard", 0.0), ("ntk", 0.0), ("mean_field", -1.0)])
@pytest.mark.parametrize("width", [64, 4096])
def test_output_variance_matches_closed_form(parameterization, width_power, width):
    """With |x|²/d = 1 and ReLU, Var_init f(x) = E[relu(z)²] · m^(1 + 2p) with z ~ N(0,1), where the
    output factor is m^p (p = 0 for standard and NTK once the 1/√m is counted, −1/2 extra for mean field):
    Var = 1/2 for standard and NTK, 1/(2m) for mean field. Estimated over 2048 independent output units."""
    torch.manual_seed(1)
    net = TwoLayerMLP(32, width, 2048, parameterization=parameterization).double()
    out = net(sphere(128, 32))  # (128, 2048): each column is an independent draw of the second layer
    var = out.var(dim=1).mean().item()
    expected = 0.5 * width**width_power
    assert var == pytest.approx(expected, rel=0.15)


def test_mean_field_output_shrinks_with_width_and_ntk_does_not():
    x = sphere(64, 16)
    stds = {}
    for param in ("ntk", "mean_field"):
        for width in (64, 4096):
            torch.manual_seed(0)
            stds[param, width] = TwoLayerMLP(16, width, 512, parameterization=param).double()(x).std().item()
    assert stds["ntk", 4096] / stds["ntk", 64] == pytest.approx(1.0, rel=0.2)
    assert stds["mean_field", 64] / stds["mean_field", 4096] == pytest.approx(8.0, rel=0.2)  # √(4096/64)


@pytest.mark.parametrize("activation", ["relu", "tanh", "erf", "quadratic", "gelu", "linear"])
def test_symmetric_init_gives_zero_output_and_nonzero_gradient(activation):
    torch.manual_seed(0)
    x = torch.randn(50, 10, dtype=torch.float64)
    net = TwoLayerMLP(10, 256, 3, activation=activation, symmetric_init=True).double()
    out = net(x)
    plain = TwoLayerMLP(10, 256, 3, activation=activation).double()(x)
    # Paired neurons cancel; only the rounding of the readout sum remains (~1e-15 of the O(1) scale).
    assert out.abs().max() <= 1e-12 * plain.abs().max()
    out.sum().backward()
    assert net.fc2.weight.grad.abs().max() > 0.1


def test_symmetric_init_needs_even_width():
    with pytest.raises(ValueError, match="width"):
        TwoLayerMLP(4, 5, symmetric_init=True)


def test_layer_freezing_and_bias():
    net = TwoLayerMLP(4, 8, train_first_layer=False, bias=False)
    assert not net.fc1.weight.requires_grad and net.fc2.weight.requires_grad
    assert net.fc1.bias is None and net.fc2.bias is None


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"activation": "softsign"}, "activation"),
        ({"parameterization": "muP"}, "parameterization"),
        ({"width": 0}, "width"),
        ({"init_scale": -1.0}, "init_scale"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        TwoLayerMLP(4, **{"width": 8, **kwargs})


def test_dropout_is_inverted_in_training_and_off_in_eval():
    torch.manual_seed(0)
    net = TwoLayerMLP(8, 4000, 1, dropout=0.5).double()
    plain = TwoLayerMLP(8, 4000, 1).double()
    plain.load_state_dict(net.state_dict())
    x = torch.randn(16, 8, dtype=torch.float64)
    net.eval()
    assert torch.equal(net(x), plain(x))
    net.train()
    h = net.features(x)
    dropped = net.dropout(h)
    kept = dropped != 0
    assert torch.allclose(dropped[kept], 2.0 * h[kept])  # kept units scaled by 1/(1-p)
    assert abs(kept[h != 0].double().mean().item() - 0.5) < 0.03
    with pytest.raises(ValueError, match="`dropout`"):
        TwoLayerMLP(8, 4, dropout=1.0)
