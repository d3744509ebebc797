"""Checkpoints that keep finished work: ``last.ckpt`` every few epochs, never a diverged state,
and one more on SIGTERM / Ctrl-C (once the batch in progress is done, see :class:`CtrlCAsSigterm`) so a
preempted or interrupted run resumes where it stopped.

Each checkpoint also carries a :class:`RunRecord`: the hash of the config that wrote it (so a
resume under another config is refused) and the last value of every scalar logged so far (so a
resumed run's ``summary.json`` keeps what was measured before the interruption).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lightning_modules.divergence import has_diverged
from overparam.paths import version_folders


class LastCheckpoint(pl.Callback):
    """Saves ``<log_dir>/checkpoints/last.ckpt`` every ``every_n_epochs`` epochs and at the end of fit.

    Skips any save once the module reports divergence (a non-finite loss), so ``last.ckpt`` is
    the last finite state. On SIGTERM or KeyboardInterrupt it saves the current state (mid-epoch
    included; the tensor loaders resume at the same batch). Each save is written to a temporary
    file and renamed, so a kill during a save never leaves a broken ``last.ckpt``.

    Raises:
        ValueError: if ``every_n_epochs`` is not an integer >= 0 (0 = only at the end and on signals).
    """

    FILENAME = "last.ckpt"

    def __init__(self, every_n_epochs: int = 1) -> None:
        if not isinstance(every_n_epochs, int) or every_n_epochs < 0:
            raise ValueError(f"Expected argument `every_n_epochs` to be an integer >= 0 but got {every_n_epochs!r}")
        self.every_n_epochs = every_n_epochs
        self.path: Optional[Path] = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.path = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / self.FILENAME

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.save(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer, pl_module)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            self.save(trainer, pl_module)

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if has_diverged(pl_module) or self.path is None:
            return
        tmp = self.path.with_suffix(".ckpt.tmp")
        trainer.save_checkpoint(str(tmp))
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class CtrlCAsSigterm:
    """Context manager around ``trainer.fit``: the first Ctrl-C (SIGINT) stops training the way SIGTERM
    does, at the end of the current batch, so that the checkpoint saved then is a consistent state.

    Python turns SIGINT into a KeyboardInterrupt at whatever line runs: after an update but before the
    loop has counted its batch, last.ckpt would make the resumed run train that batch twice. Here the
    handler sends SIGTERM to its own process instead, and Lightning's SIGTERM handler finishes the
    batch and raises ``SIGTERMException``; ``received`` tells the caller that it was a Ctrl-C. A second
    Ctrl-C, or one before Lightning listens for SIGTERM, raises KeyboardInterrupt at once as usual.
    Outside the main thread (where no signal handler can be set) it does nothing.
    """

    def __init__(self) -> None:
        self.received = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.received or signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise KeyboardInterrupt
        self.received = True
        os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self) -> "CtrlCAsSigterm":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def find_last_checkpoint(root: Path) -> Optional[Path]:
    """The ``last.ckpt`` of the highest ``version_K`` under ``root/lightning_logs`` that has one."""
    checkpoints = [v / "checkpoints" / LastCheckpoint.FILENAME for v in version_folders(root)]
    return next((c for c in reversed(checkpoints) if c.is_file()), None)


class RunRecord(pl.Callback):
    """Stores ``{"config_hash", "last", "last_step"}`` in every checkpoint under ``checkpoint["run_record"]``.

    ``last``/``last_step`` are the logger's final value and step of every scalar (a logger with
    ``last`` and ``last_step`` dicts, e.g. the CLI's SummaryLogger); on resume they are restored
    into the logger before training continues, so nothing measured before the checkpoint is lost.
    """

    KEY = "run_record"

    def __init__(self, config_hash: Optional[str] = None) -> None:
        self.config_hash = config_hash

    @override
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        logger = trainer.logger
        checkpoint[self.KEY] = {
            "config_hash": self.config_hash,
            "last": dict(getattr(logger, "last", {})),
            "last_step": dict(getattr(logger, "last_step", {})),
        }

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get(self.KEY) or {}
        logger = trainer.logger
        for name in ("last", "last_step"):
            if isinstance(getattr(logger, name, None), dict):
                getattr(logger, name).update(record.get(name, {}))


def stored_config_hash(ckpt: Path) -> Optional[str]:
    """The config hash a checkpoint was written under (``None`` for a checkpoint without a RunRecord)."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
    return (checkpoint.get(RunRecord.KEY) or {}).get("config_hash")
