"""A single neuron with a symmetric door output: the single-layer net of the three-cluster mixture.

    h = w·x,    f(x) = h² − κ,    predicted class 1  ⇔  f(x) > 0  ⇔  |w·x| > √κ,

x ∈ R^d, w ∈ R^d (``weight``), κ > 0 a fixed threshold. The decision sign(|h| − √κ) is the symmetric door
that separates the clusters ±μ (class 1) from the cluster at the origin (class 0) of
``GaussianMixture(three_clusters=True)`` (Mignacco, Krzakala, Urbani & Zdeborová 2020), which no linear
classifier separates. Trained through the smooth score f with the repository's binary losses
(label t = 2y − 1), e.g. logistic: ℓ = log(1 + e^(−t (h² − κ))). The loss is non-convex in w: it is even
in w, so w = 0 is a stationary point between the two equivalent solutions ±w*.

w starts at N(0, init_scale² I_d / d) (standard parameterization: h = O(‖x‖/√d) at the start), so a step of
size η changes h by O(η) on inputs with ‖x‖² = O(d), as in the seed's SGD on w·x/√d with w = O(1) per
coordinate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_modules.checks import ConfigError, check_number, check_positive, check_sizes


class SymmetricDoor(nn.Module):
    """f(x) = (w·x)² − κ, one output; class 1 where |w·x| > √κ (see the module docstring).

    Args:
        input_dim: d.
        output_dim: must be 1 (a binary classifier's score; the CLI links it from the data).
        kappa: κ > 0, the squared half-width of the door.
        init_scale: w ~ N(0, init_scale² I_d / d) at the start.

    Raises:
        ConfigError: on a size that is no positive integer, ``output_dim`` ≠ 1, κ ≤ 0 or ``init_scale`` < 0.
    """

    def __init__(self, input_dim: int, output_dim: int = 1, kappa: float = 1.0, init_scale: float = 1.0) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, output_dim=output_dim)
        if output_dim != 1:
            raise ConfigError(f"Expected argument `output_dim` to be 1 (a binary score) for SymmetricDoor but got {output_dim!r}")
        check_positive("kappa", kappa)
        check_number("init_scale", init_scale, 0.0)
        self.input_dim, self.output_dim, self.kappa, self.init_scale = input_dim, output_dim, float(kappa), float(init_scale)
        self.weight = nn.Parameter(torch.empty(input_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """w ~ N(0, init_scale² I_d / d)."""
        self.weight.normal_(0.0, self.init_scale / math.sqrt(self.input_dim))

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """h = w·x, (n,) for x of shape (n, d) (flattened from the second axis)."""
        return x.flatten(1) @ self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = h² − κ, shape (n, 1)."""
        return (self.preactivation(x) ** 2 - self.kappa)[:, None]

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, kappa={self.kappa:g}, init_scale={self.init_scale:g}"
