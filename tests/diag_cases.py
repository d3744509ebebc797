"""Tiny float64 problems and brute-force references shared by the diagnostics tests.

Each case is ``(net, loss_fn, x, y)``: a two-layer MLP on MSE, a small conv net on cross-entropy,
and a ResNet-ish conv net with BatchNorm (batch statistics in training mode) on cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from lightning_modules import losses
from lightning_modules.nets.mlp import TwoLayerMLP


def mse(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return losses.mean_loss("mse", output, y)


def cross_entropy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return losses.mean_loss("cross_entropy", output, y)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.bn(self.conv(x)))


def mlp_case(seed: int = 0):
    """TwoLayerMLP(5, 8, 2, tanh): 66 parameters, 12 samples, MSE on real targets."""
    torch.manual_seed(seed)
    net = TwoLayerMLP(5, 8, 2, "tanh", parameterization="standard").double()
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64)
    return net, mse, x, y


def cnn_case(seed: int = 0):
    """conv(1→3, 3×3) → tanh → linear(48→3): 177 parameters, 10 images 6×6, cross-entropy."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 3)).double()
    x, y = torch.randn(10, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (10,))
    return net, cross_entropy, x, y


def resnet_case(seed: int = 0):
    """conv → BN → relu → residual block (conv, BN) → average pool → linear: 219 parameters."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        ResidualBlock(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).double()
    with torch.no_grad():  # non-trivial BatchNorm affine parameters and running statistics
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-1, 1)
    x, y = torch.randn(10, 1, 5, 5, dtype=torch.float64), torch.randint(0, 3, (10,))
    return net, cross_entropy, x, y


CASES = {"mlp": mlp_case, "cnn": cnn_case, "resnet": resnet_case}


def dense_hessian(net: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(P, P) Hessian over the trainable parameters by torch.autograd.functional.hessian, in training mode."""
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    frozen = {n: p.detach() for n, p in net.named_parameters() if not p.requires_grad}
    buffers = {n: b.detach() for n, b in net.named_buffers()}
    sizes = [p.numel() for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {n: c.view_as(p) for (n, p), c in zip(named, theta.split(sizes))}
        state = {**params, **frozen, **{n: b.clone() for n, b in buffers.items()}}
        return loss_fn(functional_call(net, state, (x,)), y)

    was_training = net.training
    net.train()
    try:
        return torch.autograd.functional.hessian(loss, flat)
    finally:
        net.train(was_training)


def per_sample_jacobian_ntk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """K = J Jᵀ with J the (n·k, P) Jacobian built one sample and one output at a time (eval mode)."""
    params = [p for p in net.parameters() if p.requires_grad]
    was_training = net.training
    net.eval()
    rows = []
    for i in range(len(x)):
        out = net(x[i : i + 1]).reshape(-1)
        for k in range(len(out)):
            grads = torch.autograd.grad(out[k], params, retain_graph=True, allow_unused=True, materialize_grads=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    net.train(was_training)
    jac = torch.stack(rows).reshape(len(x), -1, rows[0].numel())  # (n, k, P)
    return torch.einsum("akp,bkp->ab", jac, jac)
