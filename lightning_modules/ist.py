"""Independent subnetwork training (IST) of a two-layer net (Yuan et al. 2022, "Distributed
learning of fully connected neural networks using independent subnet training").

Each step the m hidden units are split at random into K disjoint groups G_1..G_K and the batch
into K chunks (``tensor_split``: exactly K pieces, sizes ⌊·/K⌋ or ⌈·/K⌉, so m ≥ K and batch ≥ K are
required). Subnetwork k keeps only the units of G_k, rescaled by K as in inverted dropout:

    f_k(x) = c2 · W2[:, G_k] · K σ(c1 W1[G_k] x + b1[G_k]) + b2,

and is trained on chunk k alone (when K does not divide m the groups differ by one unit and the
scale stays K, the inverse of a unit's keep probability 1/K). Since the groups are disjoint, one
backward pass of Σ_k L_k(f_k) gives every unit the gradient of its own subnetwork; the parameters
all subnetworks share (the output bias b2) are merged by averaging, i.e. their gradient is divided
by K. With K = 1 this is ordinary training.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lightning_modules.checks import ConfigError, check_positive_int


def check_ist_net(net: nn.Module, parts: int = 1) -> None:
    """Raise :class:`ConfigError` unless ``net`` is a two-layer net with ``features``, ``fc2`` and ``c2``
    and at least ``parts`` (a positive integer) hidden units (one per subnetwork)."""
    check_positive_int("ist_parts", parts)
    if not all(hasattr(net, a) for a in ("features", "fc2", "c2", "width")):
        raise ConfigError(f"Expected a two-layer net (TwoLayerMLP) for rule `ist` but got {type(net).__name__}")
    if parts > net.width:
        raise ConfigError(
            f"Expected argument `ist_parts` to be <= the net's width {net.width} (a hidden unit per subnetwork) but got {parts}"
        )


def ist_loss(net: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, parts: int, generator: torch.Generator) -> torch.Tensor:
    """Σ_k L_k of the K subnetworks, each on its own chunk of the batch (see the module docstring).

    G_k = ``randperm(m).tensor_split(K)[k]`` and chunk k = ``x.tensor_split(K)[k]``: K non-empty pieces.

    Raises:
        ConfigError: when the width or the batch holds fewer than K units or samples.
    """
    check_ist_net(net, parts)
    if parts > len(x):
        raise ConfigError(f"Expected argument `ist_parts` to be <= the batch size {len(x)} (a sample per subnetwork) but got {parts}")
    perm = torch.randperm(net.width, generator=generator).to(x.device)
    total = x.new_zeros(())
    for units, xk, yk in zip(perm.tensor_split(parts), x.tensor_split(parts), y.tensor_split(parts)):
        mask = torch.zeros(net.width, device=x.device, dtype=x.dtype)
        mask[units] = float(parts)
        h = net.features(xk.flatten(1)) * mask  # (n_k, m): only the units of this group, scaled by K
        total = total + loss_fn(net.fc2(h * net.c2), yk)
    return total


def average_shared_gradients(net: nn.Module, parts: int) -> None:
    """Merge step for the shared output bias: the mean, not the sum, of the K subnetwork gradients."""
    bias = net.fc2.bias
    if bias is not None and bias.grad is not None:
        bias.grad.div_(parts)
