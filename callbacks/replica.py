"""Replica distance: how far copies of the net trained from one initialization with different
minibatch noise drift apart. This is the measure of SGD's noise in the overparameterized regime of
Mignacco & Urbani 2022, "The effective noise of stochastic gradient descent" (J. Stat. Mech. 083405,
arXiv:2112.10852): the mean distance between two replicas of the system with the same initialization
and two realizations of the SGD noise; in the underparameterized regime the same paper measures the
noise by an effective temperature from the fluctuation–dissipation theorem, and finds that the two
measures behave alike as functions of the problem's parameters.

    replica/distance        = mean_{a<b} ‖θ_a − θ_b‖² / mean_a ‖θ_a‖²
    replica/output_distance = mean_{a<b} Σ_i ‖f_a(x_i) − f_b(x_i)‖² / mean_a Σ_i ‖f_a(x_i)‖²   (probe set)

θ are the trainable parameters. The replicas are ``SupervisedModule(replicas=R)``'s ``net`` and
``replica_nets``; both numbers are exactly 0 when every replica sees the same batches.
"""

from __future__ import annotations

import itertools
import time
from typing import Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from typing_extensions import override

from callbacks.diagnostic import ProbeCallback
from callbacks.net_state import preserved_state
from lightning_modules.checks import ConfigError


def _flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters() if p.requires_grad])


def mean_pairwise_over_norm(vectors: Sequence[torch.Tensor]) -> float:
    """mean_{a<b} ‖v_a − v_b‖² / mean_a ‖v_a‖².

    Raises:
        ValueError: with fewer than two vectors.
    """
    if len(vectors) < 2:
        raise ValueError(f"Expected at least 2 replicas but got {len(vectors)}")
    pairs = [((a - b) ** 2).sum() for a, b in itertools.combinations(vectors, 2)]
    norm = torch.stack([(v**2).sum() for v in vectors]).mean()
    return (torch.stack(pairs).mean() / norm).item()


def replica_distance(nets: Sequence[nn.Module]) -> float:
    """``replica/distance`` over the trainable parameters (see the module docstring).

    >>> a, b = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False)
    >>> _ = a.weight.data.copy_(torch.tensor([[1.0, 0.0]])); _ = b.weight.data.copy_(torch.tensor([[0.0, 1.0]]))
    >>> replica_distance([a, b])
    2.0
    """
    return mean_pairwise_over_norm([_flat(n) for n in nets])


@torch.no_grad()
def replica_output_distance(nets: Sequence[nn.Module], x: torch.Tensor) -> float:
    """``replica/output_distance``: the same on the outputs on ``x``."""
    return mean_pairwise_over_norm([n(x) for n in nets])


class ReplicaDistance(ProbeCallback):
    """Logs ``replica/distance``, ``replica/output_distance`` and ``diag/replica_seconds``.

    Args:
        every_n_epochs: how often to measure.
        probe_size: probe samples for the output distance (``None`` = the whole training set).
        seed: draws the probe subset.

    Raises:
        ConfigError: at fit start, when the module trains fewer than two replicas.
    """

    def __init__(self, every_n_epochs: int = 1, probe_size: Optional[int] = 256, seed: int = 0) -> None:
        super().__init__(every_n_epochs, probe_size, seed)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(getattr(pl_module, "replica_nets", [])) < 1:
            raise ConfigError("Expected argument `replicas` of the model to be >= 2 for ReplicaDistance but got 1")

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        start = time.perf_counter()
        nets = [pl_module.net, *pl_module.replica_nets]
        x, _ = self.probe(trainer, pl_module.device)
        with preserved_state(pl_module, train=False):
            values = {"replica/distance": replica_distance(nets), "replica/output_distance": replica_output_distance(nets, x)}
        values["diag/replica_seconds"] = time.perf_counter() - start
        return values
