"""What every diagnostic needs around a net, with no Lightning: the loss signature, a context that
restores everything a measurement touches, exact backprop through converted layers, the trainable
parameters, and seeded probe indices."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from lightning_modules.checks import ConfigError
from lightning_modules.learning_rules import backprop_mode

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def preserved_state(net: nn.Module, train: bool) -> Iterator[None]:
    """Run the body with ``net`` in train (or eval) mode; restore modes, buffers, ``.grad`` and RNG after.

    ``.grad`` is set to ``None`` on entry, so a ``backward()`` in the body cannot add into the saved one.
    """
    modes = [(m, m.training) for m in net.modules()]
    buffers = [(b, b.detach().clone()) for b in net.buffers()]
    grads = [(p, p.grad) for p in net.parameters()]
    cuda = sorted({t.device.index or 0 for t in net.parameters() if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        for p, _ in grads:
            p.grad = None
        net.train(train)
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            for p, grad in grads:
                p.grad = grad


@contextmanager
def exact_backprop(net: nn.Module) -> Iterator[None]:
    """Exact backprop through layers a learning rule converted (lightning_modules.learning_rules),
    so Hessians and Jacobians are those of the loss and the net, whatever rule trains them."""
    with backprop_mode(net):
        yield


def trainable_parameters(net: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every parameter with ``requires_grad``.

    Raises:
        ConfigError: when there is none.
    """
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError(f"Expected argument `net` to have trainable parameters (requires_grad) but got none in {type(net).__name__}")
    return named


def probe_indices(n: int, size: Optional[int], seed: int) -> torch.Tensor:
    """``size`` distinct indices of ``range(n)`` drawn from ``seed`` alone (all of them when ``size`` is None or ≥ n).

    >>> probe_indices(5, None, 0).tolist()
    [0, 1, 2, 3, 4]
    """
    if size is None or size >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values
