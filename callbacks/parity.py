"""Hidden progress on sparse parity: how much of the first layer's weight sits on the k relevant bits.

For a first layer W (m, n) and the hidden support S ⊂ {0..n−1}, |S| = k < n,

    support_weight_ratio = mean_{j, i∈S} |W_ji| / mean_{j, i∉S} |W_ji|

(1 in expectation at an i.i.d. initialization; it grows as SGD moves weight onto the support). Barak
et al. (2022), "Hidden progress in deep learning: SGD learns parities near the computational limit":
the loss sits on a plateau for about n^O(k) steps, but SGD is not stumbling in the dark until it finds
S; the progress is continuous and hidden, and measures like this one move before the loss drops.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from torch import nn
from typing_extensions import override

from callbacks.diagnostic import Diagnostic, module_net
from lightning_modules.checks import ConfigError


def support_weight_ratio(weight: torch.Tensor, support: torch.Tensor) -> float:
    """mean |W[:, S]| / mean |W[:, S^c]| for a first-layer weight W (m, n) and support indices S (k,), 0 < k < n.

    >>> support_weight_ratio(torch.tensor([[2.0, -1.0, 1.0], [-2.0, 1.0, -1.0]]), torch.tensor([0]))
    2.0

    Raises:
        ValueError: unless ``weight`` is a matrix and ``support`` holds 1 to n − 1 distinct indices into its columns.
    """
    if weight.dim() != 2:
        raise ValueError(f"Expected argument `weight` to be a matrix (m, n) but got shape {tuple(weight.shape)}")
    n = weight.shape[1]
    support = torch.as_tensor(support, dtype=torch.long).flatten().cpu()
    inside = torch.zeros(n, dtype=torch.bool)
    if len(support) and (support.min() < 0 or support.max() >= n):
        raise ValueError(f"Expected argument `support` to index the {n} input coordinates but got {support.tolist()}")
    inside[support] = True
    if not 0 < int(inside.sum()) < n or int(inside.sum()) != len(support):
        raise ValueError(f"Expected argument `support` to hold 1 to {n - 1} distinct coordinates but got {support.tolist()}")
    magnitude = weight.detach().abs().double()  # (m, n)
    inside = inside.to(weight.device)
    return float(magnitude[:, inside].mean() / magnitude[:, ~inside].mean())


def first_layer(net: nn.Module) -> nn.Linear:
    """The first ``nn.Linear`` of ``net`` in module order (``fc1`` of a TwoLayerMLP).

    Raises:
        ValueError: when ``net`` has none.
    """
    layer = next((m for m in net.modules() if isinstance(m, nn.Linear)), None)
    if layer is None:
        raise ValueError(f"Expected argument `net` to contain an nn.Linear but got {type(net).__name__}")
    return layer


class SupportWeight(Diagnostic):
    """Logs ``parity/support_weight_ratio`` (module docstring) of the net's first linear layer for the
    DataModule's hidden ``support``, plus ``diag/parity_seconds``; at the start, every ``every_n_epochs``
    epochs and at the end of training (see :class:`callbacks.diagnostic.Diagnostic`).

    Args:
        every_n_epochs: how often to measure.

    Raises:
        ConfigError: on a non-positive ``every_n_epochs``; before training, when the DataModule has no
            ``support`` of 1 to n − 1 coordinates (a SparseParity with k < n) or the net no linear layer on n inputs.
    """

    @override
    def check_fit(self, pl_module: pl.LightningModule, data) -> None:
        super().check_fit(pl_module, data)
        support, n = getattr(data, "support", None), getattr(data, "input_dim", None)
        if support is None or not 0 < len(support) < n:
            raise ConfigError(
                f"Expected a DataModule with a hidden `support` of 1 to n - 1 coordinates (SparseParity, k < n) for SupportWeight but got {type(data).__name__}"
            )
        try:
            layer = first_layer(module_net(pl_module))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if layer.in_features != n:
            raise ConfigError(f"Expected the net's first linear layer to take the {n} input bits but got in_features = {layer.in_features}")

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        start = time.perf_counter()
        ratio = support_weight_ratio(first_layer(module_net(pl_module)).weight, trainer.datamodule.support)
        return {"parity/support_weight_ratio": ratio, "diag/parity_seconds": time.perf_counter() - start}
