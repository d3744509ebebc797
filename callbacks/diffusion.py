"""SGD diffusion: the weights keep moving after the loss has plateaued.

    weights/displacement(t) = ‖θ_t − θ_{t₀}‖²    (sum of squares over every trainable parameter)

t₀ is the reference step: the initialization (``reference_epoch = 0``) or the end of training epoch
``reference_epoch``, chosen after the training loss has plateaued. Kunin et al. 2021 ("Limiting
dynamics of SGD: modified loss, phase space oscillations, and anomalous diffusion") find that, long
after the performance has converged, SGD keeps travelling through parameter space as an anomalous
diffusion, ‖θ_t − θ_{t₀}‖² ∝ (t − t₀)^c with an exponent c ≠ 1 set by the learning rate, the batch
size, momentum and weight decay. Full-batch GD at a minimum stops (c = 0); a Brownian walk gives c = 1.
The exponent is the slope of log displacement against log (t − t₀): ``scripts/report.py`` fits it.

The value 0 is logged at t₀ itself, so the reference step is in the log.
"""

from __future__ import annotations

import time
from typing import Optional

import pytorch_lightning as pl
import torch
from typing_extensions import override

from callbacks.diagnostic import Diagnostic, module_net
from callbacks.net_state import trainable_parameters
from lightning_modules.checks import check_int
from lightning_modules.divergence import has_diverged
from lightning_modules.publish import publish


def squared_displacement(now: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """Σ_p ‖θ_p − θ_p^ref‖² over the parameters named in ``reference`` (computed in float64).

    >>> squared_displacement({"w": torch.tensor([3.0, 4.0])}, {"w": torch.zeros(2)})
    25.0
    """
    return float(sum(((now[n].detach().double() - w.to(now[n].device, torch.float64)) ** 2).sum() for n, w in reference.items()))


class Displacement(Diagnostic):
    """Logs ``weights/displacement`` = ‖θ_t − θ_{t₀}‖² (module docstring) and ``diag/displacement_seconds`` on
    the Diagnostic schedule, from the reference step t₀ on.

    Args:
        every_n_epochs: measure after every n-th training epoch (and at the end of training).
        reference_epoch: t₀ is the end of this training epoch (counted from 1); 0 is the initialization.
            Nothing is logged before it.

    Raises:
        ConfigError: on an ``every_n_epochs`` that is no positive integer or a negative ``reference_epoch``.
    """

    def __init__(self, every_n_epochs: int = 1, reference_epoch: int = 0) -> None:
        super().__init__(every_n_epochs)
        check_int("reference_epoch", reference_epoch, minimum=0)
        self.reference_epoch = reference_epoch
        self.reference: Optional[dict[str, torch.Tensor]] = None  # θ_{t₀}, name -> CPU tensor
        self.reference_step: Optional[int] = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, reference_epoch=self.reference_epoch)

    def at_reference(self, trainer: pl.Trainer, moment: str) -> bool:
        """Whether the weights now are θ_{t₀}: step 0 for reference epoch 0, else the end of that epoch."""
        if self.reference_epoch == 0:
            return moment == "start" and trainer.global_step == 0
        return moment == "epoch_end" and trainer.current_epoch + 1 == self.reference_epoch

    @override
    def record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, moment: str) -> None:
        if self.reference is None:
            diverged = has_diverged(pl_module)
            if self.at_reference(trainer, moment) and not trainer.sanity_checking and not diverged:
                self.reference = {n: p.detach().to("cpu", copy=True) for n, p in trainable_parameters(module_net(pl_module))}
                self.reference_step = self.last_step = trainer.global_step
                publish(trainer, {"weights/displacement": 0.0, "diag/displacement_seconds": 0.0})
            return
        super().record(trainer, pl_module, moment)

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        start = time.perf_counter()
        now = dict(trainable_parameters(module_net(pl_module)))
        return {"weights/displacement": squared_displacement(now, self.reference), "diag/displacement_seconds": time.perf_counter() - start}

    @override
    def state_dict(self) -> dict:
        return {**super().state_dict(), "reference": self.reference, "reference_step": self.reference_step}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.reference, self.reference_step = state_dict.get("reference"), state_dict.get("reference_step")
