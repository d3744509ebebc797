"""Two-layer MLP (and the plain deep MLP, DeepMLP, at the end) in the standard, NTK and mean-field parameterizations.

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

from lightning_modules.checks import ConfigError, check_bool, check_choice, check_number, check_positive, check_probability, check_sizes

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
        bias_init: initial hidden biases b1: ``zero`` (the default; every ReLU kink −b1_j/(c1 w_j) at the
            origin), ``constant`` (b1_j = bias_scale) or ``uniform`` (b1_j ~ U(−bias_scale, bias_scale),
            drawn after the weights, so the weights equal the default's). b2 starts at zero always. The
            alternatives to zero biases of Holzmüller & Steinwart (2020), whose He-init ReLU net with zero
            biases stays close to a linear regression on 1-D data away from the origin.
        bias_scale: the constant, or the half-width of the uniform interval, of ``bias_init``.

    Raises:
        ConfigError: on a size that is no positive integer, an unknown choice, a flag that is no boolean, odd
            width with symmetric_init, or a bias_init other than zero on a net without bias.
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
        bias_init: Literal["zero", "constant", "uniform"] = "zero",
        bias_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, width=width, output_dim=output_dim)
        check_choice("bias_init", bias_init, ("zero", "constant", "uniform"))
        check_number("bias_scale", bias_scale)
        if bias_init != "zero" and not bias:
            raise ConfigError(f"Expected argument `bias` to be True with bias_init={bias_init!r} but got {bias!r}")
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
        self.bias_init, self.bias_scale = bias_init, float(bias_scale)
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
        b1 = self.fc1.bias
        if self.bias_init == "constant":
            b1.fill_(self.bias_scale)
        elif self.bias_init == "uniform":  # drawn last: the weights stay those of bias_init="zero"
            half = self.width // 2 if self.symmetric_init else self.width
            b1[:half].uniform_(-self.bias_scale, self.bias_scale)
            b1[half:] = b1[: self.width - half]  # paired neurons share their bias too (f = 0 at init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden activations σ(c1 · W1 x + b1)."""
        return self.sigma(self.fc1(x * self.c1))  # (n, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (n, d)
        return self.fc2(self.dropout(self.features(x)) * self.c2)  # (n, output_dim)

    def extra_repr(self) -> str:
        return f"activation={self.activation}, parameterization={self.parameterization}, c1={self.c1:.4g}, c2={self.c2:.4g}"


class DeepMLP(nn.Module):
    """Plain deep MLP with L hidden layers (no skip connections), in the parameterizations of TwoLayerMLP:

        h₁ = σ(c₁ · W₁ x + b₁),   h_l = σ(c_h · W_l h_{l−1} + b_l)  (l = 2..L),   f(x) = c_out · W_out h_L + b_out

    | parameterization | c₁   | c_h  | c_out | init of every W                  | f at init    |
    |------------------|------|------|-------|----------------------------------|--------------|
    | standard         | 1    | 1    | 1     | N(0, 1/fan_in)                   | O(1)         |
    | ntk              | 1/√d | 1/√m | 1/√m  | N(0, 1)                          | O(1)         |
    | mean_field       | 1/√d | 1/√m | 1/m   | N(0, 1)                          | O(1/√m)      |

    With L = 1 this is TwoLayerMLP's table. For L > 1 mean_field puts 1/m on the output layer only
    (the hidden layers keep 1/√m, as in the maximal-update parameterization of Yang & Hu 2021).
    ``init_scale`` s multiplies every initial weight; with σ = relu, s = √2 is He's gain (Du et al.'s
    c_σ = 2): E‖h_l‖²/m = ‖x‖²/d at every depth and E f(x)² = 2‖x‖²/d (× 1/m for mean_field), exactly
    at any width; with s = 1 the signal halves at each ReLU layer. Biases start at zero. The contrast
    to ResidualMLP: without skips the gradient of layer 1 is a product of L layer Jacobians, and Du et
    al. (2019) need a width exponential in L for GD to provably converge, polynomial with skips.

    Args:
        input_dim: d.
        depth: L, the number of hidden layers.
        width: m.
        output_dim: number of outputs.
        activation: σ.
        bias: whether every layer has a bias (off by default, as in ResidualMLP and Du et al.'s nets).
        parameterization: ``standard``, ``ntk`` or ``mean_field`` (table above).
        init_scale: s, multiplies every initial weight.

    Raises:
        ConfigError: on a size that is no positive integer, an unknown choice, a flag that is no boolean
            or an init_scale that is no number > 0.
    """

    def __init__(
        self,
        input_dim: int,
        depth: int = 4,
        width: int = 256,
        output_dim: int = 1,
        activation: Activation = "relu",
        bias: bool = False,
        parameterization: Parameterization = "standard",
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, depth=depth, width=width, output_dim=output_dim)
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("parameterization", parameterization, ("standard", "ntk", "mean_field"))
        check_positive("init_scale", init_scale)
        check_bool("bias", bias)
        self.input_dim, self.depth, self.width, self.output_dim = input_dim, depth, width, output_dim
        self.activation, self.parameterization, self.init_scale = activation, parameterization, init_scale
        self.sigma = ACTIVATIONS[activation]
        # Multipliers on each layer's input (see the table): c₁ on x, c_h on h_1..h_{L−1}, c_out on h_L.
        standard = parameterization == "standard"
        c_hidden = 1.0 if standard else 1.0 / math.sqrt(width)
        self.multipliers = [1.0 if standard else 1.0 / math.sqrt(input_dim)] + [c_hidden] * (depth - 1)
        self.c_out = {"standard": 1.0, "ntk": 1.0 / math.sqrt(width), "mean_field": 1.0 / width}[parameterization]
        self.hidden = nn.ModuleList(nn.Linear(input_dim if i == 0 else width, width, bias=bias) for i in range(depth))
        self.output_layer = nn.Linear(width, output_dim, bias=bias)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """W ~ N(0, s²/fan_in) (standard) or N(0, s²) (ntk, mean_field) from the global torch RNG; biases 0."""
        for layer in (*self.hidden, self.output_layer):
            fan_in = layer.in_features if self.parameterization == "standard" else 1
            layer.weight.normal_(0.0, self.init_scale / math.sqrt(fan_in))
            if layer.bias is not None:
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (n, d)
        for c, layer in zip(self.multipliers, self.hidden):
            h = self.sigma(layer(h * c))  # (n, m)
        return self.output_layer(h * self.c_out)  # (n, output_dim)

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, activation={self.activation}, parameterization={self.parameterization}, "
            f"c1={self.multipliers[0]:.4g}, c_hidden={self.multipliers[-1]:.4g}, c_out={self.c_out:.4g}"
        )
