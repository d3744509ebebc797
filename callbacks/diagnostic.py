"""The base of every diagnostics callback: the schedule it shares (when to measure, and at which step
to log), the probe subset of the training set, and the module's net, loss and learning rate.

A diagnostic measures the weights at three moments, each logged at ``trainer.global_step``, the
number of updates that produced those weights:

- ``start``: before the first update of a fresh run (step 0: the initialization; a resumed run
  has measured it already);
- ``epoch_end``: after every ``every_n_epochs``-th training epoch (epochs n, 2n, ... counted from 1),
  so a resumed run keeps the steps of an uninterrupted one;
- ``end``: once more when training ends, unless the last measurement was already at that step.

Never during the sanity check, never twice at one step, and no more once the module reports
divergence (``diverged_at_step``: the weights may hold inf, and the run must end with its status,
not a diagnostic's error). The step of the last measurement is checkpointed with the callback's state.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import pytorch_lightning as pl
import torch
from torch import nn
from typing_extensions import override

from callbacks.net_state import LossFn, probe_indices
from datamodules.tensor import Split, precision_dtype
from lightning_modules.checks import ConfigError, check_int, check_positive_int
from lightning_modules.divergence import has_diverged
from lightning_modules.publish import publish

Moment = Literal["start", "epoch_end", "end"]


class Diagnostic(pl.Callback):
    """Base of the diagnostics callbacks: subclasses write :meth:`compute`; the hooks here decide
    when (:meth:`is_due`) and log its values at the step of the weights they measured.

    Args:
        every_n_epochs: measure after every n-th training epoch (and at the start and end of training).

    Raises:
        ConfigError: on an ``every_n_epochs`` that is no positive integer.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        check_positive_int("every_n_epochs", every_n_epochs)
        self.every_n_epochs = every_n_epochs
        self.last_step: Optional[int] = None  # global step of the latest measurement

    def is_due(self, trainer: pl.Trainer, moment: Moment) -> bool:
        """Whether to measure now, at ``moment`` of training (module docstring)."""
        if trainer.sanity_checking or trainer.global_step == self.last_step:
            return False
        if has_diverged(trainer.lightning_module):
            return False
        if moment == "start":
            return trainer.global_step == 0
        if moment == "epoch_end":
            return (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return True

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """The values to log for the module's current weights."""
        raise NotImplementedError

    def record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, moment: Moment) -> None:
        """Measure and log at ``trainer.global_step`` if :meth:`is_due`."""
        if self.is_due(trainer, moment):
            values = self.compute(trainer, pl_module)
            self.last_step = trainer.global_step
            publish(trainer, values)

    def check_fit(self, pl_module: pl.LightningModule, data) -> None:
        """What a diagnostic needs of the module and the data, checked before training (the CLI calls it
        before any log is written): here, no seed ensemble (``model.ensemble`` > 1), since a diagnostic
        measures one net, not a stack of them. Subclasses add their own needs and call this.

        Raises:
            ConfigError: when the module trains an ensemble.
        """
        size = getattr(pl_module, "hparams", {}).get("ensemble", 1)
        if size > 1:
            raise ConfigError(
                f"Expected no diagnostics callback with `model.ensemble` = {size} (they measure one net) but got {type(self).__name__}"
            )

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.check_fit(pl_module, trainer.datamodule)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module, "start")

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module, "epoch_end")

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module, "end")

    @override
    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.last_step = state_dict.get("last_step")


class ProbeCallback(Diagnostic):
    """Base of the diagnostics callbacks that measure on a fixed probe subset of the training set, drawn
    once from ``seed``; measured on the schedule of :class:`callbacks.diagnostic.Diagnostic` (at the start,
    every ``every_n_epochs`` epochs and at the end of training, logged at the step of the weights measured)."""

    def __init__(self, every_n_epochs: int = 1, probe_size: Optional[int] = 256, seed: int = 0) -> None:
        super().__init__(every_n_epochs)
        check_positive_int("probe_size", probe_size, allow_none=True)
        check_int("seed", seed)
        self.probe_size, self.seed = probe_size, seed
        self.indices: Optional[torch.Tensor] = None  # probe indices into the training set
        self._probe: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, probe_size=self.probe_size, seed=self.seed)

    def measure(self, net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The logged values of ``net`` with the training loss ``loss_fn`` on the probe batch (no Lightning
        involved); subclasses whose measurement needs the net, the loss and the probe write this."""
        raise NotImplementedError

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """:meth:`measure` of the module's net and loss on the probe batch; subclasses that need something
        else (the data's subspace, the whole data set) override this instead."""
        x, y = self.probe(trainer, pl_module.device)
        return self.measure(module_net(pl_module), module_loss(pl_module), x, y)

    def probe(self, trainer: pl.Trainer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe batch ``(x, y)`` on ``device``, from the DataModule's public ``train`` split.

        Raises:
            ConfigError: when the DataModule holds no ``train`` split.
        """
        if self._probe is None or self._probe[0].device != device:
            data = trainer.datamodule
            if data is not None and getattr(data, "train", None) is None and hasattr(data, "prepare_splits"):
                data.prepare_splits()
            train = getattr(data, "train", None)
            if train is None:
                raise ConfigError(
                    f"Expected the DataModule to hold a `train` split (a TensorDataModule) for {type(self).__name__} but got {type(data).__name__}"
                )
            if self.indices is None:
                self.indices = probe_indices(len(train.x), self.probe_size, self.seed)
            dtype = precision_dtype(trainer.precision)  # the weights' dtype under a *-true precision (64-true: float64)
            probe = Split(train.x[self.indices], train.y[self.indices]).to(device, dtype)
            self._probe = (probe.x, probe.y)
        return self._probe

    @override
    def state_dict(self) -> dict:
        return {**super().state_dict(), "indices": self.indices}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.indices = state_dict.get("indices")
        self._probe = None


def module_net(pl_module: pl.LightningModule) -> nn.Module:
    """The bare network of a LightningModule (``pl_module.net`` when it has one)."""
    return getattr(pl_module, "net", pl_module)


def module_loss(pl_module: pl.LightningModule) -> LossFn:
    """``pl_module.loss_fn(output, y)``, the mean training loss.

    Raises:
        ConfigError: when the module has no ``loss_fn``.
    """
    loss_fn = getattr(pl_module, "loss_fn", None)
    if not callable(loss_fn):
        raise ConfigError(f"Expected the LightningModule to define `loss_fn(output, y)` but {type(pl_module).__name__} has none")
    return loss_fn


def optimizer_lr(trainer: pl.Trainer) -> float:
    """η of the first parameter group of the first optimizer (nan before the optimizers exist)."""
    return trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan
