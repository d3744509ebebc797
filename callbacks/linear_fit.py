"""How close a trained regression net is to the least-squares affine fit, and how far its ReLU kinks moved.

With ℓ(x) = β₀ + βᵀx the least-squares affine fit to the training set (x_i, y_i) and means over the
test set,

    mse_ratio = mean (f − y)² / mean (ℓ − y)²        (1: the net predicts no better than linear regression)
    distance  = mean (f − ℓ)² / mean (ℓ − y)²        (0: the net *is* the least-squares line on the test set)

For a two-layer ReLU net f = c2 W2 relu(c1 W1 x + b1) + b2 on 1-D inputs, hidden unit j has its kink at
x = −b1_j / (c1 w_j); ``kinks_inside`` is the fraction of the units whose kink lies inside the range of
the training inputs (f is affine on that range when it is 0), and ``bias_change`` the root mean square
‖b1 − b1(0)‖/√m of the hidden biases' movement from their initialization. Holzmüller & Steinwart (2020),
"Training two-layer ReLU networks with gradient descent is inconsistent": with He's initialization
(zero biases, every kink at the origin) and data away from the origin, GD cannot move the biases far
from zero, and the net essentially performs linear regression even when the target is nonlinear.
"""

from __future__ import annotations

import time
from typing import Optional

import pytorch_lightning as pl
import torch
from torch import nn
from typing_extensions import override

from callbacks.diagnostic import Diagnostic, module_net
from callbacks.net_state import preserved_state
from lightning_modules.checks import ConfigError
from lightning_modules.nets.mlp import TwoLayerMLP


def affine_least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """β ∈ R^((d+1)×k) minimizing Σ_i ‖β₀ + βᵀx_i − y_i‖² for x (n, d), y (n, k) (or (n,)); β[0] is the
    intercept. float64, minimum-norm when the design [1, x] is rank-deficient."""
    x, y = x.flatten(1).double(), y.double().reshape(len(y), -1)
    design = torch.cat([torch.ones_like(x[:, :1]), x], dim=1)  # (n, d + 1)
    return torch.linalg.pinv(design) @ y  # (d + 1, k)


def affine_predict(beta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ℓ(x) = β₀ + βᵀx, shape (n, k), float64."""
    x = x.flatten(1).to(beta.device, torch.float64)
    return beta[0] + x @ beta[1:]


@torch.no_grad()
def linear_fit_ratios(
    net: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, float]:
    """``{"mse_ratio", "distance"}`` of the module docstring: the least-squares line fitted on ``train``
    = (x, y), the means taken on ``test`` = (x, y); f in eval mode, in float64 after the forward pass."""
    beta = affine_least_squares(*train)
    x, y = test
    line = affine_predict(beta, x)  # (n, k)
    with preserved_state(net, train=False):
        f = net(x).double().reshape(line.shape)
    y = y.double().reshape(line.shape)
    line_mse = float(((line - y) ** 2).mean())
    return {"mse_ratio": float(((f - y) ** 2).mean()) / line_mse, "distance": float(((f - line) ** 2).mean()) / line_mse}


@torch.no_grad()
def kinks_inside(net: TwoLayerMLP, low: float, high: float) -> float:
    """Fraction of hidden units j of a 1-D-input TwoLayerMLP with a kink −b1_j/(c1 w_j) in (low, high)
    (a unit with w_j = 0 has none).

    Raises:
        ValueError: unless the net has input_dim 1 and a first-layer bias.
    """
    if net.fc1.in_features != 1 or net.fc1.bias is None:
        raise ValueError(f"Expected argument `net` to have input_dim 1 and a first-layer bias but got {net.fc1}")
    w, b = net.c1 * net.fc1.weight[:, 0].double(), net.fc1.bias.double()
    kink = -b / torch.where(w == 0, torch.ones_like(w), w)
    return float(((w != 0) & (kink > low) & (kink < high)).double().mean())


class LinearFit(Diagnostic):
    """Logs ``linear_fit/mse_ratio`` and ``linear_fit/distance`` (test set against the training set's
    least-squares line, module docstring) and, for a 1-D TwoLayerMLP with biases, ``linear_fit/bias_change``
    (RMS movement of b1 from the start of fit) and ``linear_fit/kinks_inside`` (fraction of kinks inside the
    training inputs' range), plus ``diag/linear_fit_seconds``; at the start, every ``every_n_epochs`` epochs
    and at the end of training (see :class:`callbacks.diagnostic.Diagnostic`). b1 at the start of fit is
    checkpointed, so a resumed run keeps measuring from the original init.

    Args:
        every_n_epochs: how often to measure.

    Raises:
        ConfigError: on a non-positive ``every_n_epochs``; before training, when the DataModule holds no
            ``train`` and ``test`` splits or its targets are classes.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        super().__init__(every_n_epochs)
        self.bias_0: Optional[torch.Tensor] = None  # (m,), CPU

    @override
    def check_fit(self, pl_module: pl.LightningModule, data) -> None:
        super().check_fit(pl_module, data)
        if getattr(data, "classification", True) or not hasattr(data, "prepare_splits"):
            raise ConfigError(f"Expected a regression TensorDataModule for LinearFit but got {type(data).__name__}")

    def measure(
        self, net: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]
    ) -> dict[str, float]:
        """The logged values (no Lightning involved); the first call records b1(0)."""
        start = time.perf_counter()
        values = {f"linear_fit/{k}": v for k, v in linear_fit_ratios(net, train, test).items()}
        if isinstance(net, TwoLayerMLP) and net.fc1.in_features == 1 and net.fc1.bias is not None:
            bias = net.fc1.bias.detach()
            if self.bias_0 is None:
                self.bias_0 = bias.to("cpu", copy=True)
            change = (bias - self.bias_0.to(bias.device)).double().norm() / len(bias) ** 0.5
            x = train[0].flatten()
            values["linear_fit/bias_change"] = float(change)
            values["linear_fit/kinks_inside"] = kinks_inside(net, float(x.min()), float(x.max()))
        values["diag/linear_fit_seconds"] = time.perf_counter() - start
        return values

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        data = trainer.datamodule
        data.prepare_splits()
        device = pl_module.device
        train, test = ((s.x.to(device), s.y.to(device)) for s in (data.train, data.test))
        return self.measure(module_net(pl_module), train, test)

    @override
    def state_dict(self) -> dict:
        return {**super().state_dict(), "bias_0": self.bias_0}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.bias_0 = state_dict.get("bias_0")
