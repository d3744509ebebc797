"""Generalization gap: test − train loss and train − test accuracy, from whole-set metrics."""

from __future__ import annotations

from typing import Mapping

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
    """Logs ``gap/loss`` and ``gap/acc`` after every epoch whose whole-set metrics were computed."""

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The whole-set evaluation runs just before this hook; skip epochs without one.
        if getattr(pl_module, "last_eval_epoch", trainer.current_epoch) != trainer.current_epoch:
            return
        gaps = generalization_gaps(trainer.callback_metrics)
        if gaps:
            publish(trainer, gaps)
