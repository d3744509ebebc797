"""A callback that sends a signal to its own process at a chosen (epoch, batch): preemption in tests."""

import os
import signal

import pytorch_lightning as pl


class SignalAt(pl.Callback):
    def __init__(self, epoch: int, batch: int, signal_name: str = "SIGTERM") -> None:
        self.epoch, self.batch, self.signum = epoch, batch, getattr(signal, signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signum)
