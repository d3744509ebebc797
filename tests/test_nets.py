"""The nets of nets/: forward passes against their formulas written out, parameter counts,
initial output scale of deep residual MLPs, frozen random features, seeded re-initialization."""

import math

import pytest
import torch

from lightning_modules.module import reset_parameters
from lightning_modules.nets.cnn import ShallowCNN, SmallConvNet, image_shape
from lightning_modules.nets.factorization import LowRankFactorization
from lightning_modules.nets.random_features import RandomFeatures
from lightning_modules.nets.resnet import ResidualMLP, ResNet

TOL = dict(rtol=1e-10, atol=1e-12)


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("output_dim", [1, 3])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_shallow_cnn_matches_the_patch_formula(output_dim, pooling):
    """f_c = 1/m Σ_r Σ_p σ(⟨w_c,r, x⁽ᵖ⁾⟩) with σ = relu³; binary: F₊ − F₋."""
    torch.manual_seed(0)
    net = ShallowCNN(12, output_dim, width=4, num_patches=3, relu_power=3.0, pooling=pooling).double()
    x = torch.randn(5, 12, dtype=torch.float64)
    w = net.filters.weight.reshape(-1, 4, 4)  # (sets, m, d/P)
    pool = 1.0 if pooling == "sum" else 1.0 / 3
    F = torch.stack([sum(pool * torch.relu(x[:, 4 * p : 4 * p + 4] @ w[j].T) ** 3 for p in range(3)).sum(1) / 4 for j in range(len(w))], 1)
    expected = F[:, :1] - F[:, 1:] if output_dim == 1 else F
    torch.testing.assert_close(net(x), expected, **TOL)
    assert not net.readout.weight.requires_grad and net.filters.weight.requires_grad


def test_shallow_cnn_rejects_bad_sizes():
    with pytest.raises(ValueError, match="`num_patches`"):
        ShallowCNN(10, num_patches=3)
    with pytest.raises(ValueError, match="`relu_power`"):
        ShallowCNN(10, relu_power=0.5)
    with pytest.raises(ValueError, match="`width` to be a positive integer"):
        ShallowCNN(10, width=0)


def test_image_nets_take_flat_or_image_input():
    assert image_shape(784) == (1, 28, 28) and image_shape(3072) == (3, 32, 32)
    net = SmallConvNet(3 * 8 * 8, 4, width=4, input_shape=(3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(net(x), net(x.flatten(1)))
    assert SmallConvNet(784, 10, width=4)(torch.randn(2, 784)).shape == (2, 10)
    with pytest.raises(ValueError, match="`input_shape`"):
        SmallConvNet(100 * 3 + 1)
    with pytest.raises(ValueError, match="`input_shape`"):
        SmallConvNet(48, input_shape=(3, 4, 5))


def test_resnet20_has_the_papers_parameter_count():
    net = ResNet()  # ResNet-20 on CIFAR-10: 0.27M parameters (He et al. 2016, Table 6)
    assert abs(n_params(net) - 0.27e6) < 0.005e6
    assert net(torch.randn(2, 3072)).shape == (2, 10)
    assert 3.5 < n_params(ResNet(width_multiplier=2)) / n_params(net) < 4.1
    plain = ResNet(depth=8, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert plain(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="`depth` to be 6n \\+ 2"):
        ResNet(depth=21)


def test_residual_mlp_output_stays_bounded_with_1_over_L_scaling():
    """Depth 50: with α = 1/L the init output variance stays O(1); with α = 1 it explodes."""
    x = torch.randn(512, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def output_var(depth, scaling):
        torch.manual_seed(1)
        with torch.no_grad():
            return ResidualMLP(20, depth, 64, 1, scaling).double()(x).var().item()

    shallow, deep = output_var(1, "1/L"), output_var(50, "1/L")
    assert 0.1 < deep / shallow < 10
    assert output_var(50, "1") > 1e6 * shallow


def test_residual_mlp_matches_its_recursion():
    torch.manual_seed(0)
    net = ResidualMLP(3, depth=4, width=5, output_dim=2, scaling="1/sqrt(L)", activation="tanh").double()
    x = torch.randn(6, 3, dtype=torch.float64)
    h = x @ net.input_layer.weight.T
    for block in net.blocks:
        h = h + 0.5 * torch.tanh(h @ block.weight.T)  # α = 1/√4
    torch.testing.assert_close(net(x), h @ net.output_layer.weight.T, **TOL)


@pytest.mark.parametrize("double", [False, True])
def test_random_features_train_only_the_readout(double):
    torch.manual_seed(0)
    net = RandomFeatures(6, 16, 2, activation="relu", double=double).double()
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["readout.weight"]
    x = torch.randn(8, 6, dtype=torch.float64)
    h = torch.relu(x @ net.random_layers[0].weight.T / math.sqrt(6))
    if double:
        h = torch.relu(h @ net.random_layers[1].weight.T / 4.0)  # / √m, m = 16
    torch.testing.assert_close(net.features(x), h, **TOL)
    frozen = [layer.weight.clone() for layer in net.random_layers]
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    (net(x) - 1).square().sum().backward()
    opt.step()
    assert all(torch.equal(layer.weight, w) for layer, w in zip(net.random_layers, frozen))
    assert net.readout.weight.abs().sum() > 0  # it starts at 0 and moved
    assert len(net.random_layers) == (2 if double else 1)


def test_factorization_has_rank_at_most_r_and_rejects_bad_rank():
    torch.manual_seed(0)
    net = LowRankFactorization(7, 6, rank=2, depth=3).double()
    x = torch.randn(4, 7, dtype=torch.float64)
    torch.testing.assert_close(net(x), x @ net.end_to_end().T, **TOL)
    assert torch.linalg.matrix_rank(net.end_to_end()) == 2
    assert all(layer.bias is None for layer in net.factors)
    with pytest.raises(ValueError, match="^Expected argument `rank` to be a positive integer but got 0$"):
        LowRankFactorization(7, 6, rank=0)
    with pytest.raises(ValueError, match="`depth` to be an integer >= 2"):
        LowRankFactorization(7, 6, rank=2, depth=1)


NETS = [
    lambda: ShallowCNN(12, 2, width=3, num_patches=2),
    lambda: SmallConvNet(64, 3, width=2),
    lambda: ResNet(3 * 8 * 8, 3, depth=8),
    lambda: ResidualMLP(5, 3, 8, 2),
    lambda: LowRankFactorization(5, 4, rank=2),
    lambda: RandomFeatures(5, 8, 2, double=True),
]


@pytest.mark.parametrize("make", NETS, ids=["shallow_cnn", "small_conv", "resnet", "residual_mlp", "factorization", "random_features"])
def test_reset_parameters_redraws_every_weight_from_the_seed(make):
    net, other = make(), make()
    reset_parameters(net, 0)
    reset_parameters(other, 0)
    for (name, a), b in zip(net.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    reset_parameters(other, 1)
    for name, w in net.named_parameters():
        if name.endswith("weight") and w.dim() > 1 and w.abs().sum() > 0 and name != "readout.weight":
            assert not torch.equal(w, other.get_parameter(name)), name
