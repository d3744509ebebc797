"""The schedule every diagnostics callback shares: when to measure, and at which step to log.

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

from typing import Literal, Optional

import pytorch_lightning as pl
from typing_extensions import override

from lightning_modules.checks import check_positive_int
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
        if getattr(trainer.lightning_module, "diverged_at_step", None) is not None:
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
