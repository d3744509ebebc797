"""Convolutional nets: the two-layer patch CNN of benign overfitting and a small conv net.

ShallowCNN (Cao et al. 2022; Kou et al. 2023). The input x ∈ R^d is split into P patches
x⁽¹⁾, …, x⁽ᴾ⁾ ∈ R^(d/P); each of m filters per class is applied to every patch (a convolution
with stride = patch size), followed by σ(z) = max(0, z)^q and a pool over patches and filters:

    binary (output_dim = 1):  f(x) = 1/m Σ_r Σ_p [σ(⟨w₊,r, x⁽ᵖ⁾⟩) − σ(⟨w₋,r, x⁽ᵖ⁾⟩)]
    C classes:                f_c(x) = 1/m Σ_r Σ_p σ(⟨w_c,r, x⁽ᵖ⁾⟩)

(the pool over patches is a mean, 1/P Σ_p, with ``pooling="mean"``). The ±1 / class-block second
layer is a bias-free nn.Linear, fixed unless ``train_second_layer``.

Image nets take flat input (n, input_dim) or images (n, C, H, W); :func:`image_shape` gives the
(C, H, W) they reshape to.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch import nn

from lightning_modules.checks import ConfigError, check_bool, check_choice, check_number, check_sizes, is_integer


def image_shape(input_dim: int, input_shape: Optional[tuple[int, int, int]] = None) -> tuple[int, int, int]:
    """(C, H, W) of the images: ``input_shape`` when given, else square images with C = 1 when
    input_dim is a square (MNIST: 784 → (1, 28, 28)), C = 3 when input_dim/3 is (CIFAR: 3072 → (3, 32, 32)).

    >>> image_shape(784), image_shape(3072), image_shape(12, (3, 2, 2))
    ((1, 28, 28), (3, 32, 32), (3, 2, 2))

    Raises:
        ConfigError: when ``input_shape`` does not hold input_dim features or none can be inferred.
    """
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) != 3 or not all(is_integer(n) and n > 0 for n in shape) or math.prod(shape) != input_dim:
            raise ConfigError(
                f"Expected argument `input_shape` to be positive integers (C, H, W) with C·H·W = input_dim = {input_dim} but got {input_shape!r}"
            )
        return shape
    for channels in (1, 3):
        side = math.isqrt(input_dim // channels)
        if channels * side * side == input_dim:
            return (channels, side, side)
    raise ConfigError(f"Expected argument `input_shape` to be given: input_dim = {input_dim} is not C·H·H for C = 1 or 3")


class ShallowCNN(nn.Module):
    """Two-layer CNN on P patches with m filters per class (formula in the module docstring).

    Args:
        input_dim: d, split into ``num_patches`` patches of d/P consecutive features.
        output_dim: 1 (binary: + and − filter sets) or the number of classes C.
        width: m, filters per class.
        num_patches: P.
        relu_power: q in σ(z) = max(0, z)^q; 1 is ReLU (Kou et al.), q > 2 polynomial ReLU (Cao et al.).
        pooling: ``sum`` (the papers) or ``mean`` over patches.
        init_std: σ₀, filters w ~ N(0, σ₀² I); default 1/√(d/P).
        train_second_layer: train the ±1 second layer (fixed in the papers).

    Raises:
        ConfigError: on sizes that are no positive integers, d not divisible by P, relu_power < 1 or an unknown pooling.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        width: int = 10,
        num_patches: int = 2,
        relu_power: float = 1.0,
        pooling: Literal["sum", "mean"] = "sum",
        init_std: Optional[float] = None,
        train_second_layer: bool = False,
    ) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, output_dim=output_dim, width=width, num_patches=num_patches)
        if input_dim % num_patches:
            raise ConfigError(f"Expected argument `num_patches` to divide input_dim = {input_dim} but got {num_patches}")
        check_number("relu_power", relu_power, 1.0)
        check_choice("pooling", pooling, ("sum", "mean"))
        check_number("init_std", init_std, 0.0, strict_minimum=True, allow_none=True)
        check_bool("train_second_layer", train_second_layer)
        self.input_dim, self.output_dim, self.width, self.num_patches = input_dim, output_dim, width, num_patches
        self.relu_power, self.pooling = relu_power, pooling
        self.patch_dim = input_dim // num_patches
        self.init_std = init_std if init_std is not None else 1.0 / math.sqrt(self.patch_dim)
        n_sets = 2 if output_dim == 1 else output_dim
        self.filters = nn.Linear(self.patch_dim, n_sets * width, bias=False)  # a conv with stride = patch
        self.readout = nn.Linear(n_sets * width, output_dim, bias=False)
        self.reset_parameters()
        self.readout.requires_grad_(train_second_layer)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Filters ~ N(0, σ₀²); second layer +1 / −1 on the +/− filter sets (binary) or one-hot class blocks."""
        self.filters.weight.normal_(0.0, self.init_std)
        if self.output_dim == 1:
            signs = torch.cat([torch.ones(self.width), -torch.ones(self.width)])
            self.readout.weight.copy_(signs[None, :])
        else:
            self.readout.weight.copy_(torch.eye(self.output_dim).repeat_interleave(self.width, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = x.reshape(len(x), self.num_patches, self.patch_dim)  # (n, P, d/P)
        act = torch.relu(self.filters(patches)) ** self.relu_power  # (n, P, sets·m)
        pooled = act.sum(1) if self.pooling == "sum" else act.mean(1)  # (n, sets·m)
        return self.readout(pooled / self.width)  # (n, output_dim)

    def extra_repr(self) -> str:
        return f"num_patches={self.num_patches}, relu_power={self.relu_power}, pooling={self.pooling}"


class SmallConvNet(nn.Module):
    """A small conventional CNN for MNIST / CIFAR-10:

    conv3×3(C→w) → ReLU → maxpool2 → conv3×3(w→2w) → ReLU → maxpool2 → fc(2w·H/4·W/4 → 4w) → ReLU → fc(→ k)

    PyTorch's default initialization (uniform, fan-in scaled).

    Args:
        input_dim: C·H·W; flat input is reshaped to ``image_shape(input_dim, input_shape)``.
        output_dim: k, number of classes (1 for binary).
        width: w, channels of the first conv layer.
        input_shape: (C, H, W); inferred for square grayscale / RGB images when ``None``.

    Raises:
        ConfigError: on sizes that are no positive integers, an inconsistent input_shape, or images smaller than 4×4.
    """

    def __init__(self, input_dim: int, output_dim: int = 10, width: int = 32, input_shape: Optional[tuple[int, int, int]] = None) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, output_dim=output_dim, width=width)
        self.input_dim, self.output_dim, self.width = input_dim, output_dim, width
        self.input_shape = image_shape(input_dim, input_shape)
        channels, height, wide = self.input_shape
        if height < 4 or wide < 4:
            raise ConfigError(f"Expected argument `input_shape` to have H, W >= 4 but got {self.input_shape}")
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * (height // 4) * (wide // 4), 4 * width)
        self.fc2 = nn.Linear(4 * width, output_dim)
        self.pool = nn.MaxPool2d(2)

    def reset_parameters(self) -> None:
        """Redraw every layer with PyTorch's default initialization."""
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            layer.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), *self.input_shape)  # (n, C, H, W)
        x = self.pool(torch.relu(self.conv1(x)))  # (n, w, H/2, W/2)
        x = self.pool(torch.relu(self.conv2(x)))  # (n, 2w, H/4, W/4)
        x = torch.relu(self.fc1(x.flatten(1)))  # (n, 4w)
        return self.fc2(x)  # (n, k)
