"""Random-features regression: a frozen random first layer, a trained linear readout.

    single (double=False):  f(x) = 1/√m · a · σ(F₁ x / √d)
    double (double=True):   f(x) = 1/√m · a · σ(F₂ σ(F₁ x / √d) / √m)

F₁ ∈ R^(m×d), F₂ ∈ R^(m×m) have i.i.d. N(0, 1) entries and are never trained (``requires_grad``
False); only a ∈ R^(k×m) is, from a = 0, so gradient descent converges to the min-norm
interpolator and the test error peaks at m = n (double descent; Mei & Montanari 2019). ``double``
stacks a second, independent frozen random layer of the same width m (two random layers before the
readout), as in the deep random-features models of d'Ascoli et al. 2020, "Triple descent and the
two kinds of overfitting".
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_modules.checks import check_bool, check_choice, check_sizes
from lightning_modules.nets.mlp import ACTIVATIONS, Activation


class RandomFeatures(nn.Module):
    """f(x) = 1/√m · a · φ(x) with frozen random features φ (formulas in the module docstring).

    Args:
        input_dim: d.
        width: m, the number of random features.
        output_dim: k.
        activation: σ.
        double: two frozen random layers F₁, F₂ instead of one.

    Raises:
        ConfigError: on sizes that are no positive integers, an unknown activation or a non-boolean ``double``.
    """

    def __init__(
        self, input_dim: int, width: int = 256, output_dim: int = 1, activation: Activation = "relu", double: bool = False
    ) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, width=width, output_dim=output_dim)
        check_choice("activation", activation, ACTIVATIONS)
        check_bool("double", double)
        self.input_dim, self.width, self.output_dim, self.activation = input_dim, width, output_dim, activation
        self.two_random_layers = double  # not `self.double`: that would hide nn.Module.double()
        self.sigma = ACTIVATIONS[activation]
        layers = [nn.Linear(input_dim, width, bias=False)] + ([nn.Linear(width, width, bias=False)] if double else [])
        self.random_layers = nn.ModuleList(layers).requires_grad_(False)
        self.readout = nn.Linear(width, output_dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """F ~ N(0, 1) entries; a = 0."""
        for layer in self.random_layers:
            layer.weight.normal_(0.0, 1.0)
        self.readout.weight.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): σ(F₁ x / √d), then σ(F₂ φ / √m) with ``double``; shape (n, m)."""
        h = x.flatten(1)  # (n, d)
        for layer in self.random_layers:
            h = self.sigma(layer(h / math.sqrt(layer.in_features)))  # (n, m)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x) / math.sqrt(self.width))  # (n, k)

    def extra_repr(self) -> str:
        return f"activation={self.activation}, double={self.two_random_layers}"
