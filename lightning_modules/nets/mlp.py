"""Two-layer MLP in the standard, NTK and mean-field parameterizations.

    f(x) = c2 · W2 σ(c1 · W1 x + b1) + b2,        x ∈ R^d, hidden width m

| parameterization | c1     | c2     | init of W1, W2                 | output at init      |
|------------------|--------|--------|--------------------------------|---------------------|
| standard         | 1      | 1      | N(0, 1/d), N(0, 1/m)           | O(1)                |
| ntk              | 1/√d   | 1/√m   | N(0, 1)                        | O(1) (Jacot et al.) |
| mean_field       | 1/√d   | 1/m    | N(0, 1)                        | O(1/√m) (Mei et al.)|

The factors c1, c2 multiply the *input* of each nn.Linear, so biases are not scaled and the
layers stay plain nn.Linear modules (learning rules swap them; see learning_rules.py).
Biases start at zero. ``init_scale`` multiplies every initial weight.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from lightning_modules.checks import ConfigError, check_bool, check_choice, check_positive, check_probability, check_sizes

Activation = Literal["relu", "tanh", "erf", "quadratic", "gelu", "linear"]
Parameterization = Literal["standard", "ntk", "mean_field"]

ACTIVATIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "erf": torch.erf,
    "quadratic": torch.square,
    "gelu": nn.functional.gelu,
    "linear": lambda z: z,
}


class TwoLayerMLP(nn.Module):
    """f(x) = c2 · W2 σ(c1 · W1 x + b1) + b2 with the parameterization table of this module.

    Args:
        input_dim: d, the input dimension.
        width: m, the number of hidden neurons.
        output_dim: number of outputs (1 for a scalar output).
        activation: σ.
        bias: whether both layers have a bias.
        parameterization: ``standard`` (the default, LeCun-normal init as in most code), ``ntk`` or
            ``mean_field``; a config that studies the NTK or mean-field limit names it.
        init_scale: multiplies every initial weight.
        symmetric_init: neurons j and j + m/2 share first-layer weights and have opposite output
            weights, so f(x) = 0 at init (up to float rounding of the readout sum); needs even m.
        train_first_layer, train_second_layer: ``requires_grad`` of each layer.
        dropout: probability p of zeroing each hidden unit in training (inverted dropout: the kept
            units are scaled by 1/(1 − p)); off in ``eval()`` mode.

    Raises:
        ConfigError: on a size that is no positive integer, an unknown choice, a flag that is no boolean, or odd
            width with symmetric_init.
    """

    def __init__(
        self,
        input_dim: int,
        width: int = 512,
        output_dim: int = 1,
        activation: Activation = "relu",
        bias: bool = True,
        parameterization: Parameterization = "standard",
        init_scale: float = 1.0,
        symmetric_init: bool = False,
        train_first_layer: bool = True,
        train_second_layer: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, width=width, output_dim=output_dim)
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("parameterization", parameterization, ("standard", "ntk", "mean_field"))
        check_positive("init_scale", init_scale)
        check_probability("dropout", dropout, allow_one=False)
        for name, flag in (
            ("bias", bias),
            ("symmetric_init", symmetric_init),
            ("train_first_layer", train_first_layer),
            ("train_second_layer", train_second_layer),
        ):
            check_bool(name, flag)
        if symmetric_init and width % 2:
            raise ConfigError(f"Expected argument `width` to be even with symmetric_init=True but got {width}")
        self.input_dim, self.width, self.output_dim = input_dim, width, output_dim
        self.activation, self.parameterization = activation, parameterization
        self.init_scale, self.symmetric_init = init_scale, symmetric_init
        self.sigma = ACTIVATIONS[activation]
        # Multipliers on each layer's input (see the module docstring).
        self.c1 = 1.0 if parameterization == "standard" else 1.0 / math.sqrt(input_dim)
        self.c2 = {"standard": 1.0, "ntk": 1.0 / math.sqrt(width), "mean_field": 1.0 / width}[parameterization]
        self.fc1 = nn.Linear(input_dim, width, bias=bias)
        self.fc2 = nn.Linear(width, output_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()
        self.fc1.requires_grad_(train_first_layer)
        self.fc2.requires_grad_(train_second_layer)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw the initial weights from the global torch RNG (see the table above)."""
        standard = self.parameterization == "standard"
        std1 = self.init_scale * (1.0 / math.sqrt(self.input_dim) if standard else 1.0)
        std2 = self.init_scale * (1.0 / math.sqrt(self.width) if standard else 1.0)
        w1, w2 = self.fc1.weight, self.fc2.weight
        if self.symmetric_init:
            half = self.width // 2
            w1[:half].normal_(0.0, std1)
            w1[half:] = w1[:half]
            w2[:, :half].normal_(0.0, std2)
            w2[:, half:] = -w2[:, :half]
        else:
            w1.normal_(0.0, std1)
            w2.normal_(0.0, std2)
        for layer in (self.fc1, self.fc2):
            if layer.bias is not None:
                layer.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden activations σ(c1 · W1 x + b1)."""
        return self.sigma(self.fc1(x * self.c1))  # (n, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (n, d)
        return self.fc2(self.dropout(self.features(x)) * self.c2)  # (n, output_dim)

    def extra_repr(self) -> str:
        return f"activation={self.activation}, parameterization={self.parameterization}, c1={self.c1:.4g}, c2={self.c2:.4g}"
