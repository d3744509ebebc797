"""Residual nets: the deep residual MLP of Du et al. (2019) and the CIFAR ResNet of He et al. (2016).

ResidualMLP, with depth L, width m and branch scaling α ∈ {1/L, 1/√L, 1}:

    h₀ = c_in · W_in x,   h_l = h_{l−1} + α · σ(c · W_l h_{l−1})  (l = 1..L),   f(x) = c · W_out h_L

no biases, in the standard or NTK parameterization (as TwoLayerMLP and DeepMLP in mlp.py):

| parameterization | c_in | c    | init of every W            |
|------------------|------|------|----------------------------|
| standard         | 1    | 1    | N(0, s²/fan_in)            |
| ntk              | 1/√d | 1/√m | N(0, s²)                   |

(s = ``init_scale``, 1 by default). α = 1/L keeps ‖h_L‖ = O(‖h₀‖) at init for any depth (the
scaling of Du et al. 2019, "Gradient descent finds global minima of deep neural networks", whose
ResNet is the ntk row: x^(l) = x^(l−1) + c_res/(L√m) σ(W^(l) x^(l−1))); with α = 1 the forward
signal grows geometrically in L.

ResNet (He et al. 2016, "Deep residual learning for image recognition", §4.2): depth = 6n + 2,
conv3×3(16) then three stages of n basic blocks with 16, 32, 64 channels (× width_multiplier),
stride 2 at the start of stages 2 and 3, parameter-free shortcuts (subsample + zero channels,
"option A"), global average pool, linear classifier. ResNet-20 (n = 3) has 0.27M parameters.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.checks import ConfigError, check_bool, check_choice, check_positive, check_sizes
from lightning_modules.nets.cnn import image_shape
from lightning_modules.nets.mlp import ACTIVATIONS, Activation

Scaling = Literal["1/L", "1/sqrt(L)", "1"]


class ResidualMLP(nn.Module):
    """h_l = h_{l−1} + α σ(W_l h_{l−1}) (formula in the module docstring).

    Args:
        input_dim: d.
        depth: L, the number of residual blocks.
        width: m.
        output_dim: number of outputs.
        scaling: α = ``1/L``, ``1/sqrt(L)`` or ``1``.
        activation: σ.
        parameterization: ``standard`` or ``ntk`` (table in the module docstring).
        init_scale: s, multiplies every initial weight.

    Raises:
        ConfigError: on sizes that are no positive integers, an unknown choice or an init_scale that is no number > 0.
    """

    def __init__(
        self,
        input_dim: int,
        depth: int = 10,
        width: int = 128,
        output_dim: int = 1,
        scaling: Scaling = "1/L",
        activation: Activation = "relu",
        parameterization: Literal["standard", "ntk"] = "standard",
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, depth=depth, width=width, output_dim=output_dim)
        check_choice("scaling", scaling, ("1/L", "1/sqrt(L)", "1"))
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("parameterization", parameterization, ("standard", "ntk"))
        check_positive("init_scale", init_scale)
        self.input_dim, self.depth, self.width, self.output_dim = input_dim, depth, width, output_dim
        self.scaling, self.activation, self.sigma = scaling, activation, ACTIVATIONS[activation]
        self.parameterization, self.init_scale = parameterization, init_scale
        self.alpha = {"1/L": 1.0 / depth, "1/sqrt(L)": 1.0 / math.sqrt(depth), "1": 1.0}[scaling]
        ntk = parameterization == "ntk"
        self.c_in, self.c = (1.0 / math.sqrt(input_dim), 1.0 / math.sqrt(width)) if ntk else (1.0, 1.0)
        self.input_layer = nn.Linear(input_dim, width, bias=False)
        self.blocks = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))
        self.output_layer = nn.Linear(width, output_dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """W ~ N(0, s²/fan_in) (standard) or N(0, s²) (ntk) for every layer."""
        for layer in (self.input_layer, *self.blocks, self.output_layer):
            fan_in = layer.in_features if self.parameterization == "standard" else 1
            layer.weight.normal_(0.0, self.init_scale / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x.flatten(1) * self.c_in)  # (n, m)
        for block in self.blocks:
            h = h + self.alpha * self.sigma(block(h * self.c))  # (n, m)
        return self.output_layer(h * self.c)  # (n, output_dim)

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, scaling={self.scaling}, alpha={self.alpha:.4g}, activation={self.activation}, "
            f"parameterization={self.parameterization}"
        )


class BasicBlock(nn.Module):
    """y = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)); shortcut subsamples and zero-pads channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.stride, self.extra_channels = stride, out_channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (n, C_in, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # (n, C_out, H/s, W/s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet-(6n+2) (architecture in the module docstring).

    Args:
        input_dim: C·H·W; flat input is reshaped to ``image_shape(input_dim, input_shape)``.
        output_dim: number of classes.
        depth: 6n + 2 (20, 32, 44, 56, 110).
        width_multiplier: stage widths are 16k, 32k, 64k.
        batch_norm: BatchNorm after every conv; without it convs get biases and the activations
            grow with depth at init (Kaiming init), so use a smaller learning rate.
        input_shape: (C, H, W); inferred for square grayscale / RGB images when ``None``.

    Raises:
        ConfigError: on sizes that are no positive integers, depth not of the form 6n + 2, or a bad input_shape.
    """

    def __init__(
        self,
        input_dim: int = 3072,
        output_dim: int = 10,
        depth: int = 20,
        width_multiplier: int = 1,
        batch_norm: bool = True,
        input_shape: Optional[tuple[int, int, int]] = None,
    ) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, output_dim=output_dim, depth=depth, width_multiplier=width_multiplier)
        check_bool("batch_norm", batch_norm)
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"Expected argument `depth` to be 6n + 2 with n >= 1 (e.g. 20, 32, 56) but got {depth}")
        self.input_dim, self.output_dim, self.depth = input_dim, output_dim, depth
        self.input_shape = image_shape(input_dim, input_shape)
        n, widths = (depth - 2) // 6, [16 * width_multiplier, 32 * width_multiplier, 64 * width_multiplier]
        self.conv = nn.Conv2d(self.input_shape[0], widths[0], 3, padding=1, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(widths[0]) if batch_norm else nn.Identity()
        blocks, channels = [], widths[0]
        for stage, out_channels in enumerate(widths):
            for i in range(n):
                blocks.append(BasicBlock(channels, out_channels, 2 if stage > 0 and i == 0 else 1, batch_norm))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, output_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Convs: Kaiming normal N(0, 2/fan_in), bias 0; BatchNorm: γ = 1, β = 0, fresh statistics; fc: PyTorch default."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.BatchNorm2d, nn.Linear)):
                module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), *self.input_shape)  # (n, C, H, W)
        x = torch.relu(self.bn(self.conv(x)))  # (n, 16k, H, W)
        x = self.blocks(x)  # (n, 64k, H/4, W/4)
        return self.fc(x.mean((2, 3)))  # (n, output_dim)
