"""Generalization gap: test − train loss and train − test accuracy, from whole-set metrics."""

from __future__ import annotations

from typing import Mapping, Optional

import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_modules.publish import publish


def generalization_gaps(metrics: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """``gap/loss`` = test/loss − train/loss and ``gap/acc`` = train/acc − test/acc, where both are present.

    >>> generalization_gaps({"train/loss": 0.1, "test/loss": 0.5, "train/acc": 1.0, "test/acc": 0.75})
    {'gap/loss': 0.4, 'gap/acc': 0.25}
    """
    gaps = {}
    for what, sign in (("loss", 1.0), ("acc", -1.0)):
        train, test = metrics.get(f"train/{what}"), metrics.get(f"test/{what}")
        if train is not None and test is not None:
            gaps[f"gap/{what}"] = sign * (float(test) - float(train))
    return gaps


class TrainTestGap(pl.Callback):
    """Logs ``gap/loss`` and ``gap/acc`` at every step where the module evaluated the whole sets (its
    ``last_eval_step``): the initial weights, each validation epoch and the end of training.

    The module evaluates the initial and final weights in its own ``on_train_start`` / ``on_train_end``,
    which Lightning calls after the callbacks' hooks of the same name, so the gaps of those come at the
    next hooks: ``on_train_epoch_start`` and ``on_fit_end``.
    """

    def __init__(self) -> None:
        self.last_step: Optional[int] = None  # global step of the latest gaps logged

    def is_due(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Whether the latest whole-set metrics are of the current weights and their gaps are not logged yet."""
        evaluated = getattr(pl_module, "last_eval_step", trainer.global_step)
        return not trainer.sanity_checking and evaluated == trainer.global_step and self.last_step != trainer.global_step

    def record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.is_due(trainer, pl_module):
            gaps = generalization_gaps(trainer.callback_metrics)
            if gaps:
                publish(trainer, gaps)
                self.last_step = trainer.global_step

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module)  # the validation loop runs just before this hook

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module)
