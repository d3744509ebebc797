"""Callbacks that interrupt their own run at a chosen (epoch, batch): preemption and hard kills in tests."""

import os
import signal
from pathlib import Path

import pytorch_lightning as pl


class SignalAt(pl.Callback):
    """Sends ``signal_name`` (SIGTERM, SIGINT, ...) to its own process after batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int, signal_name: str = "SIGTERM") -> None:
        self.epoch, self.batch, self.signum = epoch, batch, getattr(signal, signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signum)


class KillGroupOnce(pl.Callback):
    """SIGKILLs its whole process group (a sweep and the run in flight, as a node failure would) after batch
    ``batch`` of epoch ``epoch`` of the run whose log folder contains ``run``, once: the folder ``marker`` is
    made first, and while it exists nothing happens (so the resumed run passes the same batch unharmed). A
    folder, not a file: a sweep hashes the content of every file its extra arguments name."""

    def __init__(self, epoch: int, batch: int, run: str, marker: str) -> None:
        self.epoch, self.batch, self.run, self.marker = epoch, batch, run, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        here = (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and self.run in str(trainer.default_root_dir)
        if here and not self.marker.exists():
            self.marker.mkdir()
            os.killpg(os.getpgid(0), signal.SIGKILL)
