"""Write epoch-level scalars straight to the loggers and to ``trainer.callback_metrics``.

``LightningModule.log`` costs about 0.3–0.7 ms per value on a CPU (it moves its whole result
record between devices on every call); at one whole-set evaluation per full-batch GD step that
overhead alone exceeded the cost of the step. Values written here are exactly what ``self.log``
would write at epoch level, at step ``global_step`` (the number of updates done so far), and
callbacks such as EarlyStopping or ModelCheckpoint(monitor=...) still find them in
``trainer.callback_metrics``.
"""

from __future__ import annotations

from typing import Mapping

import pytorch_lightning as pl
import torch


def publish(trainer: pl.Trainer, values: Mapping[str, torch.Tensor | float]) -> None:
    """Log ``values`` (already reduced across processes) at ``trainer.global_step``; skipped in the sanity check."""
    if not values or trainer.sanity_checking:
        return
    tensors = {k: v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v)) for k, v in values.items()}
    trainer.callback_metrics.update(tensors)
    if trainer.is_global_zero:
        floats = {k: float(v) for k, v in tensors.items()}
        for logger in trainer.loggers:
            logger.log_metrics(floats, step=trainer.global_step)
